//! The names WaitState accepts, one validator per kind: tags, custom metrics, orgs and
//! sites. The rule parser, the configuration, the tag registry, the policy and the control
//! plane all check names here, so a name that loads in one place loads in every other.
//!
//! | kind | rule | where |
//! |---|---|---|
//! | tag | 1..=[`MAX_TAG_LEN`] bytes, no control characters | `[tags]`, policies, pulses |
//! | tag written in a rule | the same, and only `[A-Za-z0-9_.:-]` (so it is one token) | `block free` |
//! | custom metric | 1..=[`MAX_METRIC_LEN`] of `[a-z0-9_]`, starting with a letter, not reserved | `report`, rules, pulses |
//! | org, site, instance | as a tag | the control plane's keys, `siteId`, `instanceId` |
//!
//! A request's tag is never refused: an empty one counts as [`DEFAULT_TAG`], one longer
//! than [`MAX_TAG_LEN`] as [`OVERFLOW_TAG`].
//!
//! ```
//! use waitstate_core::names;
//!
//! assert!(names::tag_problem("enterprise").is_none());
//! assert!(names::tag_problem("").is_some());
//! assert!(names::rule_tag_problem("tier/free").is_some()); // `/` cannot be written in a rule
//! assert!(names::metric_problem("queue_depth").is_none());
//! assert!(names::metric_problem("latency").is_some()); // reserved by v1
//! ```

use std::borrow::Cow;

/// The tag of a request that names none (v1: a missing tag is `__default__`). An empty tag
/// is counted as this tag too.
pub const DEFAULT_TAG: &str = "__default__";
/// The tag that counts every tag past the registry's cap, and every oversized tag.
pub const OVERFLOW_TAG: &str = "__overflow__";
/// The longest tag kept as itself, in bytes; a longer one is counted as [`OVERFLOW_TAG`].
pub const MAX_TAG_LEN: usize = 128;
/// The longest custom metric name, in bytes (v1's limit).
pub const MAX_METRIC_LEN: usize = 63;

/// Metric names the v1 protocol keeps for itself: no custom metric may take them.
pub const RESERVED_METRICS: [&str; 5] = [
    "latency",
    "errors",
    "p50_latency",
    "p95_latency",
    "p99_latency",
];

/// Why `tag` cannot name a tag in configuration, a policy or a pulse; `None` when it can.
pub fn tag_problem(tag: &str) -> Option<Cow<'static, str>> {
    if tag.is_empty() {
        return Some("a tag cannot be empty".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Some(format!("a tag is at most {MAX_TAG_LEN} bytes, got {}", tag.len()).into());
    }
    if tag.chars().any(char::is_control) {
        return Some("a tag cannot hold control characters".into());
    }
    None
}

/// Whether `tag` can name a tag (see [`tag_problem`]).
pub fn is_valid_tag(tag: &str) -> bool {
    tag_problem(tag).is_none()
}

/// Why `tag` cannot be written in a rule (`block <tag>`); `None` when it can. Stricter than
/// [`tag_problem`]: a rule's tag is one token of `[A-Za-z0-9_.:-]`.
pub fn rule_tag_problem(tag: &str) -> Option<Cow<'static, str>> {
    if let Some(bad) = tag
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Some(
            format!(
                "`{bad}` is not allowed; tags in rules use only ASCII letters, digits, `_`, `.`, `:` and `-`"
            )
            .into(),
        );
    }
    tag_problem(tag)
}

/// Why `name` cannot be a custom metric's name; `None` when it can.
pub fn metric_problem(name: &str) -> Option<Cow<'static, str>> {
    if name.is_empty() {
        return Some("a custom metric name cannot be empty".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("custom metric names start with a lowercase letter".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    {
        return Some(
            format!("`{bad}` is not allowed; custom metric names use only a-z, 0-9 and `_`").into(),
        );
    }
    if name.len() > MAX_METRIC_LEN {
        return Some(
            format!(
                "custom metric names are at most {MAX_METRIC_LEN} characters, this one has {}",
                name.len()
            )
            .into(),
        );
    }
    if RESERVED_METRICS.contains(&name) {
        return Some(format!("`{name}` is reserved and cannot be a custom metric name").into());
    }
    None
}

/// Whether `name` can be a custom metric's name (see [`metric_problem`]).
pub fn is_valid_metric(name: &str) -> bool {
    metric_problem(name).is_none()
}

/// Why `name` cannot name an org, a site (`siteId`) or an instance; `None` when it can.
/// The same rule as a tag: they are shard keys and labels, bounded and printable.
pub fn shard_name_problem(name: &str) -> Option<Cow<'static, str>> {
    tag_problem(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert!(is_valid_tag("free"));
        assert!(is_valid_tag("tier/free")); // any printable text in config
        assert!(is_valid_tag(&"a".repeat(MAX_TAG_LEN)));
        assert!(!is_valid_tag(&"a".repeat(MAX_TAG_LEN + 1)));
        assert!(!is_valid_tag(""));
        assert!(!is_valid_tag("a\nb"));
        // Multi-byte characters count in bytes.
        assert!(!is_valid_tag(&"é".repeat(65)));
    }

    #[test]
    fn rule_tags_are_a_subset_of_tags() {
        for t in ["free", "a.b:c-d_e", "tier/free", "", "a b", "é"] {
            if rule_tag_problem(t).is_none() {
                assert!(is_valid_tag(t), "{t}");
            }
        }
        assert!(rule_tag_problem("free-tier.v2:eu").is_none());
        assert!(rule_tag_problem("tier/free").is_some());
        assert!(rule_tag_problem(&"a".repeat(MAX_TAG_LEN + 1)).is_some());
    }

    #[test]
    fn metrics() {
        assert!(is_valid_metric("queue_depth"));
        assert!(is_valid_metric(&"a".repeat(MAX_METRIC_LEN)));
        for bad in ["", "Queue", "1q", "q-d", "latency", "errors", "p95_latency"] {
            assert!(!is_valid_metric(bad), "{bad}");
        }
        assert!(!is_valid_metric(&"a".repeat(MAX_METRIC_LEN + 1)));
    }
}
