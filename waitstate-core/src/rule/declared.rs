//! Names a rule uses that the configuration must declare: a custom metric (in
//! `[metrics] custom`) and every tag (in `[tags]`). A typo then fails at load with a
//! did-you-mean instead of a rule that never fires (`when p95 > 500ms`, a metric nobody
//! reports) or guards nothing (`block fre`).

use super::suggest::did_you_mean;
use super::types::{Action, BUILTIN_METRICS, Metric, Rule, RuleError};
use crate::registry::DEFAULT_TAG;

impl Rule {
    /// Check the rule's names against what the configuration declares: `tags` (the
    /// configured tags; [`DEFAULT_TAG`] is always declared) and `custom` (the custom
    /// metrics). `text` is the rule's source, to point at the name.
    ///
    /// # Errors
    /// A [`RuleError`] at the undeclared name, with the closest declared one.
    pub fn check_declared(
        &self,
        text: &str,
        tags: &[&str],
        custom: &[&str],
    ) -> Result<(), RuleError> {
        if let Metric::Custom(name) = &self.condition.metric
            && !custom.contains(&name.as_str())
        {
            let mut known: Vec<&str> = BUILTIN_METRICS.to_vec();
            known.extend_from_slice(custom);
            let declared = if custom.is_empty() {
                "no custom metric is declared".to_owned()
            } else {
                format!("declared: {}", custom.join(", "))
            };
            return Err(RuleError::new(
                column_of(text, name),
                format!(
                    "`{name}` is neither a built-in metric nor a custom metric declared in `[metrics] custom` ({declared}){}",
                    suggestion(name, &known)
                ),
            ));
        }
        let mut named: Vec<&str> = Vec::new();
        if let Some(tag) = &self.condition.tag {
            named.push(tag);
        }
        match &self.action {
            Action::Block { tag } | Action::Throttle { tag, .. } | Action::Limit { tag, .. } => {
                named.push(tag);
            }
            _ => {}
        }
        for tag in named {
            if tag != DEFAULT_TAG && !tags.contains(&tag) {
                let declared = if tags.is_empty() {
                    "no tag is declared".to_owned()
                } else {
                    format!("declared: {}", tags.join(", "))
                };
                return Err(RuleError::new(
                    column_of(text, tag),
                    format!(
                        "tag `{tag}` is not declared in `[tags]` ({declared}){}",
                        suggestion(tag, tags)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The closest name, or the one `word` begins (`p95` for `p95_latency`).
fn suggestion(word: &str, known: &[&str]) -> String {
    let close = did_you_mean(word, known);
    if !close.is_empty() || word.len() < 2 {
        return close;
    }
    known
        .iter()
        .find(|k| k.starts_with(word))
        .map_or_else(String::new, |k| format!("; did you mean `{k}`?"))
}

/// The 1-based column (in characters) of `word` as a whole word in `text`, or 1.
fn column_of(text: &str, word: &str) -> usize {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let start = from + at;
        let end = start + word.len();
        let before = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_word(c));
        let after = text[end..].chars().next().is_none_or(|c| !is_word(c));
        if before && after {
            return text[..start].chars().count() + 1;
        }
        from = end;
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rule: &str, tags: &[&str], custom: &[&str]) -> Result<(), RuleError> {
        Rule::parse(rule)
            .unwrap()
            .check_declared(rule, tags, custom)
    }

    const TIERS: [&str; 3] = ["enterprise", "pro", "free"];

    #[test]
    fn an_undeclared_custom_metric_is_an_error_with_a_did_you_mean() {
        let e = check("when p95 > 500 then shed", &TIERS, &[]).unwrap_err();
        assert_eq!(e.column(), 6);
        assert!(e.message().contains("`p95` is neither"), "{e}");
        assert!(e.message().contains("did you mean `p95_latency`?"), "{e}");
        let e = check("when queue_dept > 5 then shed", &TIERS, &["queue_depth"]).unwrap_err();
        assert!(e.message().contains("did you mean `queue_depth`?"), "{e}");
        assert!(check("when queue_depth > 5 then shed", &TIERS, &["queue_depth"]).is_ok());
        assert!(check("when p95_latency > 5ms then shed", &TIERS, &[]).is_ok());
    }

    #[test]
    fn an_undeclared_tag_is_an_error_with_a_did_you_mean() {
        let e = check("when p95_latency > 500ms then block fre", &TIERS, &[]).unwrap_err();
        assert_eq!(e.column(), 37);
        assert!(e.message().contains("tag `fre` is not declared"), "{e}");
        assert!(e.message().contains("did you mean `free`?"), "{e}");
        let e = check("when error_rate of entreprise > 5% then kill", &TIERS, &[]).unwrap_err();
        assert!(e.message().contains("did you mean `enterprise`?"), "{e}");
        let e = check("when rps > 5 then limit fre to 5/s", &[], &[]).unwrap_err();
        assert!(e.message().contains("no tag is declared"), "{e}");
        assert!(check("when rps > 5 then throttle __default__ to 5%", &[], &[]).is_ok());
        assert!(check("when rps > 5 then limit concurrency to 5", &[], &[]).is_ok());
    }
}
