//! The [`Collector`]: what a scrape reads from the engine, and how it is named.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use waitstate_core::{Phase, Reason, Tag, TagCounters, WaitState};

use crate::buckets;

/// Reads one engine at each scrape.
#[derive(Debug)]
pub(crate) struct EngineCollector {
    ws: WaitState,
}

impl EngineCollector {
    pub(crate) fn new(ws: WaitState) -> Self {
        Self { ws }
    }
}

type Result = std::result::Result<(), fmt::Error>;

fn counter(m: &mut MetricEncoder<'_>, v: u64) -> Result {
    m.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn counter_f64(m: &mut MetricEncoder<'_>, v: f64) -> Result {
    m.encode_counter::<NoLabelSet, _, f64>(&v, None)
}

/// One metric family: its descriptor, then one sample per labelled row.
fn family<L: EncodeLabelSet, V>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    ty: MetricType,
    rows: impl IntoIterator<Item = (L, V)>,
    mut write: impl FnMut(&mut MetricEncoder<'_>, V) -> Result,
) -> Result {
    let mut m = e.encode_descriptor(name, help, unit, ty)?;
    for (labels, v) in rows {
        write(&mut m.encode_family(&labels)?, v)?;
    }
    Ok(())
}

/// One metric without labels.
fn single(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    ty: MetricType,
    write: impl FnOnce(&mut MetricEncoder<'_>) -> Result,
) -> Result {
    write(&mut e.encode_descriptor(name, help, unit, ty)?)
}

fn gauge(m: &mut MetricEncoder<'_>, v: f64) -> Result {
    m.encode_gauge(&v)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

const ENDINGS: [&str; 4] = ["success", "error", "cancelled", "panicked"];
const STATES: [&str; 5] = ["idle", "pending", "firing", "cooling", "releasing"];

fn ending_counts(c: &TagCounters) -> [u64; 4] {
    [
        c.completed.saturating_sub(c.errors),
        c.errors,
        c.cancelled,
        c.panicked,
    ]
}

fn state_of(phase: Phase) -> (&'static str, u32) {
    match phase {
        Phase::Idle => ("idle", 0),
        Phase::Pending => ("pending", 0),
        Phase::Firing => ("firing", 0),
        Phase::Cooling => ("cooling", 0),
        Phase::Releasing(k) => ("releasing", k),
        // A phase added later reads as the nearest one that exists now.
        _ => ("firing", 0),
    }
}

impl EngineCollector {
    fn tags(&self, e: &mut DescriptorEncoder<'_>) -> Result {
        let mut tags: Vec<(Tag, TagCounters)> = Vec::new();
        self.ws.engine().load_counters(&mut tags);
        let per_tag = |f: fn(&TagCounters) -> u64| {
            tags.iter().map(move |(t, c)| ([("tag", t.as_str())], f(c)))
        };
        family(
            e,
            "waitstate_requests_admitted",
            "Requests admitted, per tag.",
            None,
            MetricType::Counter,
            per_tag(|c| c.admitted),
            counter,
        )?;
        family(
            e,
            "waitstate_requests_rejected",
            "Requests rejected, per tag and reason.",
            None,
            MetricType::Counter,
            tags.iter().flat_map(|(t, c)| {
                Reason::ALL.iter().map(move |r| {
                    (
                        [("tag", t.as_str()), ("reason", r.as_str())],
                        c.rejected_for(*r),
                    )
                })
            }),
            counter,
        )?;
        family(
            e,
            "waitstate_requests_would_reject",
            "Requests a dry-run mode or rule would have rejected but let through, per tag.",
            None,
            MetricType::Counter,
            per_tag(|c| c.would_reject),
            counter,
        )?;
        family(
            e,
            "waitstate_admitted_weight",
            "Weight admitted, in weight units, per tag.",
            None,
            MetricType::Counter,
            tags.iter()
                .map(|(t, c)| ([("tag", t.as_str())], c.admitted_weight)),
            counter_f64,
        )?;
        family(
            e,
            "waitstate_requests_ended",
            "Admitted requests that ended, per tag and how they ended.",
            None,
            MetricType::Counter,
            tags.iter().flat_map(|(t, c)| {
                ENDINGS
                    .iter()
                    .zip(ending_counts(c))
                    .map(move |(ending, n)| ([("tag", t.as_str()), ("ending", *ending)], n))
            }),
            counter,
        )?;
        family(
            e,
            "waitstate_requests_in_flight",
            "Requests in flight now, per tag.",
            None,
            MetricType::Gauge,
            per_tag(|c| c.in_flight),
            |m, v| m.encode_gauge(&v),
        )?;
        family(
            e,
            "waitstate_request_duration",
            "Latency of requests that ended (success or error), per tag, on the engine's bucket edges.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            tags.iter().map(|(t, c)| ([("tag", t.as_str())], c)),
            |m, c| {
                let (pairs, count) = buckets::exported(&c.latency);
                m.encode_histogram::<NoLabelSet>(c.latency_sum_us as f64 / 1e6, count, &pairs, None)
            },
        )?;
        single(
            e,
            "waitstate_tags_tracked",
            "Tags the engine tracks (capped by tag_cap; the overflow tag included).",
            None,
            MetricType::Gauge,
            |m| m.encode_gauge(&(tags.len() as u64)),
        )
    }

    fn admission(&self, e: &mut DescriptorEncoder<'_>) -> Result {
        let a = self.ws.admission();
        let levels: Vec<(String, _)> = a
            .levels
            .iter()
            .map(|l| (l.priority.to_string(), l))
            .collect();
        let per_level = || levels.iter().map(|(p, l)| ([("priority", p.as_str())], *l));
        family(
            e,
            "waitstate_queue_waiting",
            "Requests waiting for an admission slot now, per priority level.",
            None,
            MetricType::Gauge,
            per_level(),
            |m, l| m.encode_gauge(&l.waiting),
        )?;
        family(
            e,
            "waitstate_queued",
            "Requests that had to wait for an admission slot, per priority level.",
            None,
            MetricType::Counter,
            per_level(),
            |m, l| counter(m, l.queued_total),
        )?;
        family(
            e,
            "waitstate_queue_timed_out",
            "Waiters turned away (deadline passed, or made late by higher levels), per priority level.",
            None,
            MetricType::Counter,
            per_level(),
            |m, l| counter(m, l.timed_out_total),
        )?;
        family(
            e,
            "waitstate_queue_wait",
            "Time granted waiters spent waiting for a slot, per priority level.",
            Some(&Unit::Seconds),
            MetricType::Counter,
            per_level(),
            |m, l| counter_f64(m, l.waited_total.as_secs_f64()),
        )?;
        family(
            e,
            "waitstate_level_in_flight",
            "Admission slots held, per priority level.",
            None,
            MetricType::Gauge,
            per_level(),
            |m, l| m.encode_gauge(&l.in_flight),
        )?;
        let limit = if a.limit == u64::MAX {
            f64::INFINITY
        } else {
            a.limit as f64
        };
        single(
            e,
            "waitstate_admission_limit",
            "The concurrency limit in force (+Inf when nothing binds).",
            None,
            MetricType::Gauge,
            |m| gauge(m, limit),
        )?;
        if let Some(b) = a.baseline {
            single(
                e,
                "waitstate_admission_baseline",
                "The learned no-load service time (median).",
                Some(&Unit::Seconds),
                MetricType::Gauge,
                |m| gauge(m, b.as_secs_f64()),
            )?;
        }
        if let Some(s) = a.service_time {
            single(
                e,
                "waitstate_admission_service_time",
                "The median service time of the last window that counted.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
                |m| gauge(m, s.as_secs_f64()),
            )?;
        }
        single(
            e,
            "waitstate_admission_in_flight",
            "Admission slots in use.",
            None,
            MetricType::Gauge,
            |m| m.encode_gauge(&a.in_flight),
        )?;
        single(
            e,
            "waitstate_admission_max_wait",
            "The longest a request of the lowest level waits for a slot now.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            |m| gauge(m, a.max_wait.as_secs_f64()),
        )?;
        single(
            e,
            "waitstate_admission_adaptive",
            "1 when the limit is learned, 0 when only a static cap binds.",
            None,
            MetricType::Gauge,
            |m| gauge(m, flag(a.adaptive)),
        )?;
        single(
            e,
            "waitstate_admission_probing",
            "1 while a probe holds the limit lower.",
            None,
            MetricType::Gauge,
            |m| gauge(m, flag(a.probing)),
        )
    }

    fn rules(&self, e: &mut DescriptorEncoder<'_>) -> Result {
        let rules = self.ws.rules();
        family(
            e,
            "waitstate_rule_state",
            "Each rule's state: 1 for the state it is in, 0 for the others.",
            None,
            MetricType::Gauge,
            rules.iter().flat_map(|r| {
                let (now, _) = state_of(r.phase);
                let dry = if r.dry_run { "true" } else { "false" };
                STATES.iter().map(move |s| {
                    (
                        [("rule", r.rule.as_str()), ("state", *s), ("dry_run", dry)],
                        flag(*s == now),
                    )
                })
            }),
            gauge,
        )?;
        family(
            e,
            "waitstate_rule_release_step",
            "While a rule releases, the step of its gradual release (1..=3); else 0.",
            None,
            MetricType::Gauge,
            rules
                .iter()
                .map(|r| ([("rule", r.rule.as_str())], f64::from(state_of(r.phase).1))),
            gauge,
        )?;
        family(
            e,
            "waitstate_rule_value",
            "The value of each rule's metric in the last window (absent without data).",
            None,
            MetricType::Gauge,
            rules
                .iter()
                .filter_map(|r| Some(([("rule", r.rule.as_str())], r.value?))),
            gauge,
        )?;
        family(
            e,
            "waitstate_rule_shed_levels",
            "For a shed rule, how many priority levels it sheds.",
            None,
            MetricType::Gauge,
            rules
                .iter()
                .map(|r| ([("rule", r.rule.as_str())], r.shed_level as f64)),
            gauge,
        )
    }

    #[cfg(not(feature = "control-plane"))]
    fn control(&self, _: &mut DescriptorEncoder<'_>) -> Result {
        Ok(())
    }

    #[cfg(feature = "control-plane")]
    fn control(&self, e: &mut DescriptorEncoder<'_>) -> Result {
        let Some(s) = self.ws.control_status() else {
            return Ok(());
        };
        for (name, help, v) in [
            (
                "waitstate_control_synced",
                "1 once a policy was received from the control plane.",
                s.synced,
            ),
            (
                "waitstate_control_lease_valid",
                "1 while the control plane's policy is within its lease.",
                s.lease_valid,
            ),
            (
                "waitstate_control_safe_mode",
                "1 while the lease has expired and safe mode is in force.",
                s.safe_mode,
            ),
        ] {
            single(e, name, help, None, MetricType::Gauge, |m| {
                gauge(m, flag(v))
            })?;
        }
        family(
            e,
            "waitstate_control_pulses",
            "Pulses sent to the control plane, by result.",
            None,
            MetricType::Counter,
            [
                ([("result", "ok")], s.pulses_ok),
                ([("result", "failed")], s.pulses_failed),
            ],
            counter,
        )?;
        family(
            e,
            "waitstate_control_syncs",
            "Policy syncs with the control plane, by result.",
            None,
            MetricType::Counter,
            [
                ([("result", "ok")], s.syncs_ok),
                ([("result", "failed")], s.syncs_failed),
            ],
            counter,
        )?;
        single(
            e,
            "waitstate_control_policies_rejected",
            "Policies from the control plane refused by validation (the last good one stayed).",
            None,
            MetricType::Counter,
            |m| counter(m, s.policies_rejected),
        )
    }
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result {
        self.tags(&mut encoder)?;
        self.admission(&mut encoder)?;
        self.rules(&mut encoder)?;
        self.control(&mut encoder)
    }
}
