//! What the Redis store writes: a tag's counters as hash fields (so that replicas add into
//! them with `HINCRBY`, bucket by bucket for the histogram), and the serde forms of the
//! documents it keeps (a fleet-rule window, an instance, the published fleet state).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use waitstate_core::histogram::{Histogram, SparseHistogram};
use waitstate_core::{Aggregate, Policy, Reason, RuleStatus, TagCounters};

#[cfg(test)]
use crate::fleet::merge_counters;
use crate::fleet::{FleetAnswer, RULE_FEED_CAP};

/// Separates a tag from a counter's name in a hash field, and an instance from a tag: a
/// control character, which no tag, site or instance name may hold.
pub(crate) const SEP: char = '\u{1f}';

/// The largest increment sent in one `HINCRBY` (a hostile pulse may say `u64::MAX`; Redis
/// counts in `i64`).
const MAX_INCREMENT: u64 = RULE_FEED_CAP;

fn clamp(n: u64) -> i64 {
    i64::try_from(n.min(MAX_INCREMENT)).unwrap_or(i64::MAX)
}

/// `HINCRBY` fields of a delta: `(field, increment)`, zeros left out; and the weight, for
/// `HINCRBYFLOAT`.
pub(crate) fn fields(tag: &str, c: &TagCounters) -> (Vec<(String, i64)>, f64) {
    let mut out = Vec::new();
    let mut put = |name: &str, n: u64| {
        if n > 0 {
            out.push((format!("{tag}{SEP}{name}"), clamp(n)));
        }
    };
    put("a", c.admitted);
    for (i, n) in c.rejected.iter().enumerate() {
        put(&format!("r{i}"), *n);
    }
    put("wr", c.would_reject);
    put("c", c.completed);
    put("e", c.errors);
    put("x", c.cancelled);
    put("p", c.panicked);
    put("ls", c.latency_sum_us);
    for (idx, n) in c.latency.to_sparse().buckets {
        put(&format!("h{idx}"), n);
    }
    let w = if c.admitted_weight.is_finite() {
        c.admitted_weight.clamp(0.0, 1e15)
    } else {
        0.0
    };
    (out, w)
}

/// The weight field of a tag.
pub(crate) fn weight_field(tag: &str) -> String {
    format!("{tag}{SEP}w")
}

/// Per tag, the counters of a hash written with [`fields`]. Fields that do not parse are
/// skipped (a key written by something else).
pub(crate) fn read_fields(hash: &[(String, String)]) -> BTreeMap<String, TagCounters> {
    let mut tags: BTreeMap<String, (TagCounters, Vec<(u32, u64)>)> = BTreeMap::new();
    for (field, value) in hash {
        let Some((tag, name)) = field.rsplit_once(SEP) else {
            continue;
        };
        let (c, buckets) = tags.entry(tag.to_owned()).or_default();
        if name == "w" {
            c.admitted_weight = value.parse::<f64>().unwrap_or(0.0).max(0.0);
            continue;
        }
        let Ok(n) = value.parse::<i64>() else {
            continue;
        };
        let n = u64::try_from(n).unwrap_or(0);
        match name {
            "a" => c.admitted = n,
            "wr" => c.would_reject = n,
            "c" => c.completed = n,
            "e" => c.errors = n,
            "x" => c.cancelled = n,
            "p" => c.panicked = n,
            "ls" => c.latency_sum_us = n,
            _ => {
                if let Some(i) = name.strip_prefix('r').and_then(|i| i.parse::<usize>().ok())
                    && i < Reason::ALL.len()
                {
                    c.rejected[i] = n;
                } else if let Some(idx) = name.strip_prefix('h').and_then(|i| i.parse().ok()) {
                    buckets.push((idx, n));
                }
            }
        }
    }
    tags.into_iter()
        .map(|(tag, (mut c, mut buckets))| {
            buckets.sort_unstable();
            c.latency = histogram(buckets);
            (tag, c)
        })
        .collect()
}

fn histogram(buckets: Vec<(u32, u64)>) -> Histogram {
    let sparse = SparseHistogram {
        layout: SparseHistogram::LAYOUT.to_owned(),
        buckets,
    };
    Histogram::from_sparse(&sparse).unwrap_or_default()
}

/// [`TagCounters`] as JSON: a window of the fleet rules keeps one per tag.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Counts {
    a: u64,
    w: f64,
    r: Vec<u64>,
    wr: u64,
    c: u64,
    e: u64,
    ls: u64,
    f: u64,
    h: Vec<(u32, u64)>,
}

impl Counts {
    pub(crate) fn of(c: &TagCounters) -> Self {
        Self {
            a: c.admitted,
            w: if c.admitted_weight.is_finite() {
                c.admitted_weight
            } else {
                0.0
            },
            r: c.rejected.to_vec(),
            wr: c.would_reject,
            c: c.completed,
            e: c.errors,
            ls: c.latency_sum_us,
            f: c.in_flight,
            h: c.latency.to_sparse().buckets,
        }
    }

    pub(crate) fn counters(&self) -> TagCounters {
        let mut c = TagCounters::default();
        c.admitted = self.a;
        c.admitted_weight = self.w;
        for (slot, n) in c.rejected.iter_mut().zip(&self.r) {
            *slot = *n;
        }
        c.would_reject = self.wr;
        c.completed = self.c;
        c.errors = self.e;
        c.latency_sum_us = self.ls;
        c.in_flight = self.f;
        let mut buckets = self.h.clone();
        buckets.sort_unstable();
        c.latency = histogram(buckets);
        c
    }
}

/// One window of the fleet rules, as the evaluator took it: replayed by a replica that
/// takes over (or restarts), fed to every replica's copy of the rules.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Sample {
    /// 1, 2, 3, ...: one per window, no gaps.
    pub(crate) seq: u64,
    /// When (epoch ms).
    pub(crate) at: u64,
    /// Per tag, the fleet's cumulative counters of single-window pulses, in-flight the
    /// gauge of the live instances.
    pub(crate) tags: Vec<(String, Counts)>,
    /// Custom metrics reported since the previous window.
    pub(crate) custom: Vec<(Option<String>, String, Aggregate)>,
}

/// One instance, as its last pulse left it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    /// Last pulse (epoch ms).
    pub(crate) s: u64,
    /// In flight per tag, at its last pulse.
    pub(crate) f: BTreeMap<String, u64>,
    /// The version of the fleet policy its last pulse was answered with
    /// (`fleet::policy_version`); absent in records of older replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) v: Option<u32>,
}

/// A rule's state, for replicas that read the fleet state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleRecord {
    pub(crate) rule: String,
    pub(crate) dry_run: bool,
    /// `Idle`, `Pending`, `Firing`, `Cooling`, `Releasing(n)`.
    pub(crate) phase: String,
    pub(crate) active: bool,
    pub(crate) value: Option<f64>,
    pub(crate) shed_level: usize,
}

impl RuleRecord {
    pub(crate) fn of(r: &RuleStatus) -> Self {
        Self {
            rule: r.rule.clone(),
            dry_run: r.dry_run,
            phase: format!("{:?}", r.phase),
            active: r.is_active(),
            value: r.value.filter(|v| v.is_finite()),
            shed_level: r.shed_level,
        }
    }
}

/// One tag's recent demand: per live instance, and in all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Demand {
    pub(crate) total: u64,
    pub(crate) by: BTreeMap<String, u64>,
}

/// What the evaluator publishes for a shard after each window: every replica answers
/// pulses from it (without a Redis call), and splits budgets from the same numbers.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct FleetState {
    /// The window ([`Sample::seq`]) it follows.
    pub(crate) seq: u64,
    /// The evaluator's fencing token: states from an older lease are never written.
    pub(crate) fence: u64,
    /// When (epoch ms).
    pub(crate) at: u64,
    /// The fleet policy the rules produced.
    pub(crate) policy: Policy,
    /// Each rule's state.
    pub(crate) rules: Vec<RuleRecord>,
    /// Every tag reported.
    pub(crate) tags: Vec<String>,
    /// Live instances.
    pub(crate) instances: usize,
    /// Pulses taken, by every replica.
    pub(crate) pulses: u64,
    /// For each tag with a fleet-wide budget: the demand it is split by.
    pub(crate) demand: BTreeMap<String, Demand>,
}

impl FleetAnswer for FleetState {
    fn enforce(&self) -> &Policy {
        &self.policy
    }

    fn known_tags(&self) -> Vec<&str> {
        self.tags.iter().map(String::as_str).collect()
    }

    /// `budget × (demand_i + ε) / (Σ demand + n·ε)`, as in memory (`fleet::split`), from
    /// the numbers every replica reads alike.
    fn share(&self, instance: Option<&str>, tag: &str, budget: f64) -> f64 {
        let n = self.instances.max(1) as f64;
        let Some(d) = self.demand.get(tag) else {
            return budget / n;
        };
        let Some(mine) = instance.and_then(|i| d.by.get(i)) else {
            return budget / n;
        };
        let total = d.total as f64;
        let eps = if total > 0.0 { total * 0.02 / n } else { 1.0 };
        ((budget * (*mine as f64 + eps)) / (total + eps * n)).max(0.0)
    }

    fn degraded(&self) -> bool {
        self.rules.iter().any(|r| r.active && !r.dry_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_go_through_hash_fields_and_add_up() {
        let mut c = TagCounters::default();
        c.admitted = 7;
        c.admitted_weight = 9.5;
        c.rejected[2] = 3;
        c.completed = 6;
        c.errors = 1;
        c.latency_sum_us = 1_200;
        c.latency.record_n_micros(20_000, 5);
        c.latency.record_n_micros(900_000, 1);
        // Two replicas add their deltas into one hash.
        let mut hash: BTreeMap<String, i64> = BTreeMap::new();
        let mut weight = 0.0;
        for _ in 0..2 {
            let (f, w) = fields("free", &c);
            for (k, n) in f {
                *hash.entry(k).or_default() += n;
            }
            weight += w;
        }
        let mut flat: Vec<(String, String)> =
            hash.into_iter().map(|(k, n)| (k, n.to_string())).collect();
        flat.push((weight_field("free"), weight.to_string()));
        let back = read_fields(&flat);
        let mut twice = c.clone();
        merge_counters(&mut twice, &c);
        assert_eq!(back["free"], twice);
        // The merged histogram is the fleet's: p95 of 12 requests, 2 at 900 ms.
        assert!(back["free"].latency.quantile_ms(0.95).unwrap() > 500.0);
    }

    #[test]
    fn hostile_counts_are_clamped_not_wrapped() {
        let mut c = TagCounters::default();
        c.admitted = u64::MAX;
        c.admitted_weight = f64::INFINITY;
        let (f, w) = fields("t", &c);
        assert_eq!(f, vec![("t\u{1f}a".to_owned(), 1i64 << 48)]);
        assert_eq!(w, 0.0);
        let odd = vec![
            ("t\u{1f}a".to_owned(), "-5".to_owned()),
            ("junk".to_owned(), "1".to_owned()),
            ("t\u{1f}zz".to_owned(), "1".to_owned()),
        ];
        assert_eq!(read_fields(&odd)["t"].admitted, 0);
    }

    #[test]
    fn counts_round_trip() {
        let mut c = TagCounters::default();
        c.admitted = 3;
        c.in_flight = 2;
        c.latency.record_n_micros(5_000, 3);
        let json = serde_json::to_string(&Counts::of(&c)).unwrap();
        let back: Counts = serde_json::from_str(&json).unwrap();
        assert_eq!(back.counters(), c);
    }
}
