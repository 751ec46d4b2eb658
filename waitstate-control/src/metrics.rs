//! `/metrics`: the control plane's counters and every fleet's state, in the Prometheus text
//! format (version 0.0.4).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `waitstate_pulses_total` | counter | |
//! | `waitstate_tokens_total` | counter | |
//! | `waitstate_policy_reads_total` | counter | |
//! | `waitstate_refused_total` | counter | `reason` |
//! | `waitstate_instances` | gauge | `org`, `site` |
//! | `waitstate_rules_active` | gauge | `org`, `site` |
//! | `waitstate_tag_requests_total` | counter | `org`, `site`, `tag`, `outcome` (`admitted`, `shed`) |

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::fleet::Fleets;
use crate::refusal::Refusal;
use crate::state::lock;

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The control plane's own counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pulses: AtomicU64,
    tokens: AtomicU64,
    policy_reads: AtomicU64,
    refused: [AtomicU64; Refusal::COUNTED.len()],
}

impl Counters {
    /// A pulse was accepted.
    pub(crate) fn pulse(&self) {
        self.pulses.fetch_add(1, Relaxed);
    }

    /// A token was issued.
    pub(crate) fn token(&self) {
        self.tokens.fetch_add(1, Relaxed);
    }

    /// A policy read was served.
    pub(crate) fn policy_read(&self) {
        self.policy_reads.fetch_add(1, Relaxed);
    }

    /// A request was refused.
    pub(crate) fn refuse(&self, refusal: Refusal) {
        self.refused[refusal.slot()].fetch_add(1, Relaxed);
    }
}

/// Escape a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text of `/metrics`. The fleets are locked only while their part is written.
pub(crate) fn render(c: &Counters, fleets: &Mutex<Fleets>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP waitstate_pulses_total Pulses accepted.\n# TYPE waitstate_pulses_total counter\nwaitstate_pulses_total {}",
        c.pulses.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP waitstate_tokens_total Tokens issued.\n# TYPE waitstate_tokens_total counter\nwaitstate_tokens_total {}",
        c.tokens.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP waitstate_policy_reads_total Policy reads served.\n# TYPE waitstate_policy_reads_total counter\nwaitstate_policy_reads_total {}",
        c.policy_reads.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP waitstate_refused_total Requests refused, by reason.\n# TYPE waitstate_refused_total counter"
    );
    for (refusal, n) in Refusal::COUNTED.iter().zip(&c.refused) {
        let _ = writeln!(
            out,
            "waitstate_refused_total{{reason=\"{}\"}} {}",
            refusal.reason(),
            n.load(Relaxed)
        );
    }
    let fleets = lock(fleets);
    let mut instances = String::new();
    let mut rules = String::new();
    let mut tags = String::new();
    for (org, site, shard) in fleets.shards() {
        let v = shard.view();
        let labels = format!("org=\"{}\",site=\"{}\"", escape(org), escape(site));
        let _ = writeln!(instances, "waitstate_instances{{{labels}}} {}", v.instances);
        let active = v.rules.iter().filter(|r| r.is_active()).count();
        let _ = writeln!(rules, "waitstate_rules_active{{{labels}}} {active}");
        for (tag, counters) in &v.tags {
            let t = escape(tag);
            let _ = writeln!(
                tags,
                "waitstate_tag_requests_total{{{labels},tag=\"{t}\",outcome=\"admitted\"}} {}",
                counters.admitted
            );
            let _ = writeln!(
                tags,
                "waitstate_tag_requests_total{{{labels},tag=\"{t}\",outcome=\"shed\"}} {}",
                crate::fleet::rejected_total(counters)
            );
        }
    }
    drop(fleets);
    let _ = write!(
        out,
        "# HELP waitstate_instances Live instances per fleet.\n# TYPE waitstate_instances gauge\n{instances}\
         # HELP waitstate_rules_active Fleet rules in force.\n# TYPE waitstate_rules_active gauge\n{rules}\
         # HELP waitstate_tag_requests_total Requests per tag, admitted or shed, as reported by the fleet.\n# TYPE waitstate_tag_requests_total counter\n{tags}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole text for counters and no fleet, byte for byte.
    #[test]
    fn counters_only() {
        let c = Counters::default();
        c.pulse();
        c.token();
        c.token();
        c.policy_read();
        c.refuse(Refusal::Replay);
        c.refuse(Refusal::WrongOrg);
        c.refuse(Refusal::Unauthorized);
        let text = render(&c, &Mutex::new(Fleets::default()));
        assert_eq!(
            text,
            "# HELP waitstate_pulses_total Pulses accepted.\n\
             # TYPE waitstate_pulses_total counter\n\
             waitstate_pulses_total 1\n\
             # HELP waitstate_tokens_total Tokens issued.\n\
             # TYPE waitstate_tokens_total counter\n\
             waitstate_tokens_total 2\n\
             # HELP waitstate_policy_reads_total Policy reads served.\n\
             # TYPE waitstate_policy_reads_total counter\n\
             waitstate_policy_reads_total 1\n\
             # HELP waitstate_refused_total Requests refused, by reason.\n\
             # TYPE waitstate_refused_total counter\n\
             waitstate_refused_total{reason=\"unauthorized\"} 2\n\
             waitstate_refused_total{reason=\"bad_signature\"} 0\n\
             waitstate_refused_total{reason=\"stale_timestamp\"} 0\n\
             waitstate_refused_total{reason=\"replay\"} 1\n\
             waitstate_refused_total{reason=\"malformed\"} 0\n\
             waitstate_refused_total{reason=\"full\"} 0\n\
             # HELP waitstate_instances Live instances per fleet.\n\
             # TYPE waitstate_instances gauge\n\
             # HELP waitstate_rules_active Fleet rules in force.\n\
             # TYPE waitstate_rules_active gauge\n\
             # HELP waitstate_tag_requests_total Requests per tag, admitted or shed, as reported by the fleet.\n\
             # TYPE waitstate_tag_requests_total counter\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }
}
