//! What the gate answers: allowed, or rejected with a reason, the tag and a retry-after hint.

use std::fmt;
use std::time::Duration;

use crate::registry::Tag;

/// Why a request was rejected (or, in dry run, would have been).
///
/// The first six are the v1 protocol's reasons, spelled the same on the wire; the rest are
/// ours. [`Reason::as_str`] gives the snake_case wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The policy's kill switch is on: everything is rejected (v1).
    KillSignal,
    /// `globalMaxWeight <= 0`: everything is rejected (v1).
    GlobalBlock,
    /// The request's weight is over its tag's `tagMaxWeights` limit; a limit of 0 blocks the
    /// tag (v1). The `block <tag>` action produces it.
    TagBlocked,
    /// The weight is over `globalMaxWeight`, or is NaN, negative or infinite (v1).
    OverWeight,
    /// The control plane's lease expired and safe mode rejects (v1).
    LeaseExpired,
    /// The tag is throttled to a share of its traffic and this request is outside it.
    Throttled,
    /// The tag's rate budget (weight units per second) is spent.
    RateLimited,
    /// The in-flight cap is reached for this tag's priority.
    ConcurrencyLimited,
    /// Adaptive shedding has reached this tag's priority.
    PriorityShed,
}

impl Reason {
    /// Every reason, in the order used by counters.
    pub const ALL: [Reason; 9] = [
        Reason::KillSignal,
        Reason::GlobalBlock,
        Reason::TagBlocked,
        Reason::OverWeight,
        Reason::LeaseExpired,
        Reason::Throttled,
        Reason::RateLimited,
        Reason::ConcurrencyLimited,
        Reason::PriorityShed,
    ];

    /// The snake_case wire name (`"tag_blocked"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::KillSignal => "kill_signal",
            Reason::GlobalBlock => "global_block",
            Reason::TagBlocked => "tag_blocked",
            Reason::OverWeight => "over_weight",
            Reason::LeaseExpired => "lease_expired",
            Reason::Throttled => "throttled",
            Reason::RateLimited => "rate_limited",
            Reason::ConcurrencyLimited => "concurrency_limited",
            Reason::PriorityShed => "priority_shed",
        }
    }

    /// Whether the reason is a quota (the caller asked for too much) rather than overload
    /// shedding. gRPC maps quota to `RESOURCE_EXHAUSTED` and overload to `UNAVAILABLE`.
    pub const fn is_quota(self) -> bool {
        matches!(self, Reason::RateLimited | Reason::OverWeight)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rate a `rate_limited` rejection ran into, for `RateLimit-Policy` style headers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    /// Budget in weight units per second.
    pub per_second: f64,
    /// Burst in weight units (what may be spent at once).
    pub burst: f64,
}

/// A rejected request: why, which tag, its priority, and when to try again.
///
/// Cheap to clone (the tag is shared, not copied).
#[derive(Clone, Debug)]
pub struct Rejection {
    pub(crate) reason: Reason,
    pub(crate) tag: Tag,
    pub(crate) retry_after: Duration,
    pub(crate) quota: Option<Quota>,
}

impl Rejection {
    /// Why it was rejected.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The tag the request was counted under. Tags past the registry's cap, and oversized
    /// tags, are counted under [`OVERFLOW_TAG`](crate::OVERFLOW_TAG).
    pub fn tag(&self) -> &str {
        self.tag.as_str()
    }

    /// The tag's priority (higher is more important).
    pub fn priority(&self) -> i64 {
        self.tag.priority()
    }

    /// How long the client should wait before trying again (a hint; never zero).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, rounded up (a sub-second wait is `1`, never `0`).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        secs.max(1)
    }

    /// The rate budget that was spent, when the reason is [`Reason::RateLimited`].
    pub fn quota(&self) -> Option<Quota> {
        self.quota
    }

    /// The JSON deny body every adapter sends (the WaitState SDKs' body, extended):
    /// `{"error":"rate_limited","reason":"tag_blocked","retryAfter":2,"tag":"free"}`.
    pub fn deny_body(&self) -> String {
        // Written by hand into one buffer: the body's one allocation (a `json!` value made
        // a dozen). Exactly the length: a body handed to `Bytes` is not reallocated to fit.
        let mut out = String::with_capacity(self.deny_body_len());
        self.write_deny_body(&mut out);
        out
    }

    /// The length of [`Rejection::deny_body`].
    fn deny_body_len(&self) -> usize {
        let escaped = |c: char| match c {
            '"' | '\\' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        };
        r#"{"error":"rate_limited","reason":"","retryAfter":,"tag":""}"#.len()
            + self.reason.as_str().len()
            + (self.retry_after_secs().checked_ilog10().unwrap_or(0) as usize + 1)
            + self.tag().chars().map(escaped).sum::<usize>()
    }

    /// Append [`Rejection::deny_body`] to `out`: the tag escaped as JSON requires, the rest
    /// known ASCII.
    pub(crate) fn write_deny_body(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.push_str(r#"{"error":"rate_limited","reason":""#);
        out.push_str(self.reason.as_str());
        out.push_str(r#"","retryAfter":"#);
        let _ = write!(out, "{}", self.retry_after_secs());
        out.push_str(r#","tag":""#);
        for c in self.tag().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push_str("\"}");
    }

    /// The IETF `RateLimit-Policy` and `RateLimit` field values
    /// (draft-ietf-httpapi-ratelimit-headers), when a rate limit applies: the policy is
    /// named after the tag, its quota is the burst over a 1 s window, nothing remains.
    pub fn rate_limit_fields(&self) -> Option<(String, String)> {
        let q = self.quota?;
        let name = sf_string(self.tag());
        Some((
            format!("{name};q={};w=1", q.burst.round() as u64),
            format!("{name};r=0;t={}", self.retry_after_secs()),
        ))
    }

    /// The gRPC status code: `RESOURCE_EXHAUSTED` (8) for quota reasons, `UNAVAILABLE` (14)
    /// for overload shedding.
    pub fn grpc_code(&self) -> u8 {
        if self.reason.is_quota() { 8 } else { 14 }
    }

    /// The `grpc-message`, already percent-encoded as gRPC requires.
    pub fn grpc_message(&self) -> String {
        let message = format!(
            "waitstate: {} for tag {}, retry after {}s",
            self.reason,
            self.tag(),
            self.retry_after_secs()
        );
        let mut out = String::with_capacity(message.len());
        for b in message.bytes() {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// The `grpc-retry-pushback-ms` hint.
    pub fn retry_after_ms(&self) -> u64 {
        self.retry_after.as_millis().clamp(1, u128::from(u64::MAX)) as u64
    }
}

/// A structured-field string for a tag: quoted, `\` and `"` escaped; a tag that is not
/// printable ASCII is named `"tag"`.
fn sf_string(tag: &str) -> String {
    if !tag.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return "\"tag\"".to_owned();
    }
    let mut out = String::with_capacity(tag.len() + 2);
    out.push('"');
    for c in tag.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rejected `{}` ({}), retry after {}s",
            self.tag(),
            self.reason,
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for Rejection {}

/// The gate's answer for one request.
#[derive(Clone, Debug)]
#[must_use]
pub enum Decision {
    /// Let it through. In dry run, `would_reject` says what enforcement would have done.
    Allowed {
        /// The reason it would have been rejected, when a dry-run mode or rule caught it.
        would_reject: Option<Reason>,
    },
    /// Turn it away.
    Rejected(Rejection),
}

impl Decision {
    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The rejection's reason, if rejected.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Decision::Allowed { .. } => None,
            Decision::Rejected(r) => Some(r.reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deny_body_is_the_json_it_always_was_whatever_the_tag() {
        let engine = crate::Engine::new(&crate::Config::default()).unwrap();
        let mut p = crate::Policy::default();
        p.global_max_weight = -1.0;
        engine.set_remote_policy(Some(p)).unwrap();
        for tag in [
            "free",
            "a\"b",
            "back\\slash",
            "ctl\u{1}x",
            "ünï",
            "__default__",
        ] {
            let demand = crate::Demand::new(tag);
            let Decision::Rejected(r) = engine.decide(&demand, Duration::ZERO) else {
                panic!("{tag:?} allowed")
            };
            assert_eq!(r.tag(), tag);
            let expected = serde_json::json!({
                "error": "rate_limited",
                "reason": "global_block",
                "tag": tag,
                "retryAfter": r.retry_after_secs(),
            })
            .to_string();
            assert_eq!(r.deny_body(), expected, "{tag:?}");
        }
    }

    #[test]
    fn structured_field_strings_escape() {
        assert_eq!(sf_string("free"), "\"free\"");
        assert_eq!(sf_string("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(sf_string("é"), "\"tag\"");
    }

    #[test]
    fn rejection_renderings() {
        let engine = crate::Engine::new(&crate::Config::default()).unwrap();
        let mut p = crate::Policy::default();
        p.tag_max_weights.insert("é%".into(), 0.0);
        p.tag_rate_limits.insert("free".into(), 2.0);
        engine.set_remote_policy(Some(p)).unwrap();
        let now = std::time::Duration::ZERO;
        let Decision::Rejected(r) = engine.decide(&crate::Demand::new("é%"), now) else {
            panic!()
        };
        assert_eq!(r.grpc_code(), 14);
        assert!(
            r.grpc_message().contains("tag %C3%A9%25,"),
            "{}",
            r.grpc_message()
        );
        assert!(r.rate_limit_fields().is_none());
        let json: serde_json::Value = serde_json::from_str(&r.deny_body()).unwrap();
        assert_eq!(json["tag"], "é%");
        for _ in 0..2 {
            let _ = engine.decide(&crate::Demand::new("free"), now);
        }
        let Decision::Rejected(r) = engine.decide(&crate::Demand::new("free"), now) else {
            panic!()
        };
        assert_eq!(r.grpc_code(), 8);
        assert_eq!(r.retry_after_ms(), 500);
        assert_eq!(
            r.rate_limit_fields().unwrap(),
            ("\"free\";q=2;w=1".to_owned(), "\"free\";r=0;t=1".to_owned())
        );
    }
}
