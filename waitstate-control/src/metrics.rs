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
//! | `waitstate_connections_refused_total` | counter | (past `server.max_connections`) |
//! | `waitstate_requests_timed_out_total` | counter | (past `server.request_timeout`) |
//!
//! A scrape never waits for pulse handling, nor pulse handling for a scrape: the fleet's
//! numbers live apart from the fleets, in [`FleetStats`] (atomics, and lists swapped whole
//! when a shard or a tag is first seen), written by the pulse and the tick that already hold
//! the fleet lock, and read here without it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwap;

use crate::refusal::Refusal;

/// The `Content-Type` of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The control plane's own counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pulses: AtomicU64,
    tokens: AtomicU64,
    policy_reads: AtomicU64,
    refused: [AtomicU64; Refusal::COUNTED.len()],
    connections_refused: AtomicU64,
    timed_out: AtomicU64,
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

    /// A connection was closed at once: `max_connections` were open.
    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Relaxed);
    }

    /// A request ran past `request_timeout` (answered 408).
    pub(crate) fn timed_out(&self) {
        self.timed_out.fetch_add(1, Relaxed);
    }
}

/// One tag's numbers in a shard, as `/metrics` shows them.
#[derive(Debug, Default)]
pub(crate) struct TagStats {
    admitted: AtomicU64,
    shed: AtomicU64,
}

/// One shard's numbers, as `/metrics` shows them. Written under the fleet lock (one
/// writer), read without it.
#[derive(Debug)]
pub(crate) struct ShardStats {
    /// `org="..",site=".."`, escaped once.
    labels: String,
    instances: AtomicU64,
    rules_active: AtomicU64,
    tags: ArcSwap<BTreeMap<String, Arc<TagStats>>>,
}

impl ShardStats {
    /// Live instances now.
    pub(crate) fn set_instances(&self, n: usize) {
        self.instances
            .store(u64::try_from(n).unwrap_or(u64::MAX), Relaxed);
    }

    /// Fleet rules in force now.
    pub(crate) fn set_rules_active(&self, n: usize) {
        self.rules_active
            .store(u64::try_from(n).unwrap_or(u64::MAX), Relaxed);
    }

    /// A tag's cumulative admitted and shed counts. The first sight of a tag copies the
    /// (tag-capped) list and swaps it in; after that it is two stores.
    pub(crate) fn set_tag(&self, tag: &str, admitted: u64, shed: u64) {
        let tags = self.tags.load();
        let stats = match tags.get(tag) {
            Some(t) => t.clone(),
            None => {
                let t = Arc::new(TagStats::default());
                let mut grown = BTreeMap::clone(&tags);
                grown.insert(tag.to_owned(), t.clone());
                self.tags.store(Arc::new(grown));
                t
            }
        };
        stats.admitted.store(admitted, Relaxed);
        stats.shed.store(shed, Relaxed);
    }
}

/// Every shard's [`ShardStats`], in the order the shards were first seen.
#[derive(Debug, Default)]
pub(crate) struct FleetStats {
    shards: ArcSwap<Vec<Arc<ShardStats>>>,
}

impl FleetStats {
    /// The stats of a new shard (called once per shard, under the fleet lock).
    pub(crate) fn add_shard(&self, org: &str, site: &str) -> Arc<ShardStats> {
        let stats = Arc::new(ShardStats {
            labels: format!("org=\"{}\",site=\"{}\"", escape(org), escape(site)),
            instances: AtomicU64::new(0),
            rules_active: AtomicU64::new(0),
            tags: ArcSwap::default(),
        });
        self.shards.rcu(|shards| {
            let mut grown = Vec::clone(shards);
            grown.push(stats.clone());
            grown
        });
        stats
    }

    /// Forget a shard (one read back from a state file that Redis no longer holds).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn remove_shard(&self, stats: &Arc<ShardStats>) {
        self.shards.rcu(|shards| {
            let mut kept = Vec::clone(shards);
            kept.retain(|s| !Arc::ptr_eq(s, stats));
            kept
        });
    }
}

/// Escape a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text of `/metrics`; takes no lock.
pub(crate) fn render(c: &Counters, fleets: &FleetStats) -> String {
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
    let _ = writeln!(
        out,
        "# HELP waitstate_connections_refused_total Connections closed at once: max_connections were open.\n# TYPE waitstate_connections_refused_total counter\nwaitstate_connections_refused_total {}",
        c.connections_refused.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP waitstate_requests_timed_out_total Requests answered 408 after request_timeout.\n# TYPE waitstate_requests_timed_out_total counter\nwaitstate_requests_timed_out_total {}",
        c.timed_out.load(Relaxed)
    );
    let mut instances = String::new();
    let mut rules = String::new();
    let mut tags = String::new();
    for shard in fleets.shards.load().iter() {
        let labels = &shard.labels;
        let _ = writeln!(
            instances,
            "waitstate_instances{{{labels}}} {}",
            shard.instances.load(Relaxed)
        );
        let _ = writeln!(
            rules,
            "waitstate_rules_active{{{labels}}} {}",
            shard.rules_active.load(Relaxed)
        );
        for (tag, counts) in shard.tags.load().iter() {
            let t = escape(tag);
            let _ = writeln!(
                tags,
                "waitstate_tag_requests_total{{{labels},tag=\"{t}\",outcome=\"admitted\"}} {}",
                counts.admitted.load(Relaxed)
            );
            let _ = writeln!(
                tags,
                "waitstate_tag_requests_total{{{labels},tag=\"{t}\",outcome=\"shed\"}} {}",
                counts.shed.load(Relaxed)
            );
        }
    }
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
        c.connection_refused();
        let text = render(&c, &FleetStats::default());
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
             # HELP waitstate_connections_refused_total Connections closed at once: max_connections were open.\n\
             # TYPE waitstate_connections_refused_total counter\n\
             waitstate_connections_refused_total 1\n\
             # HELP waitstate_requests_timed_out_total Requests answered 408 after request_timeout.\n\
             # TYPE waitstate_requests_timed_out_total counter\n\
             waitstate_requests_timed_out_total 0\n\
             # HELP waitstate_instances Live instances per fleet.\n\
             # TYPE waitstate_instances gauge\n\
             # HELP waitstate_rules_active Fleet rules in force.\n\
             # TYPE waitstate_rules_active gauge\n\
             # HELP waitstate_tag_requests_total Requests per tag, admitted or shed, as reported by the fleet.\n\
             # TYPE waitstate_tag_requests_total counter\n"
        );
    }

    #[test]
    fn shard_and_tag_stats_render_in_order() {
        let f = FleetStats::default();
        let s = f.add_shard("acme", "e\"u");
        s.set_instances(2);
        s.set_rules_active(1);
        s.set_tag("pro", 5, 1);
        s.set_tag("free", 3, 4);
        s.set_tag("free", 7, 8);
        let text = render(&Counters::default(), &f);
        for line in [
            "waitstate_instances{org=\"acme\",site=\"e\\\"u\"} 2\n",
            "waitstate_rules_active{org=\"acme\",site=\"e\\\"u\"} 1\n",
            "tag=\"free\",outcome=\"admitted\"} 7\n\
             waitstate_tag_requests_total{org=\"acme\",site=\"e\\\"u\",tag=\"free\",outcome=\"shed\"} 8\n\
             waitstate_tag_requests_total{org=\"acme\",site=\"e\\\"u\",tag=\"pro\",outcome=\"admitted\"} 5\n",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }
}
