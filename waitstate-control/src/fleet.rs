//! Fleet aggregation: per org and site (a shard), per tag, the telemetry of every instance
//! merged (counts add, histograms merge), the fleet rules evaluated on it with the SDK's own
//! [`Reflex`], and the answer each instance gets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use waitstate_core::histogram::Histogram;
use waitstate_core::names::{self, DEFAULT_TAG, OVERFLOW_TAG};
use waitstate_core::wire::{PulseBody, TagMetric, V1_BUCKET_REPRESENTATIVE_MS};
use waitstate_core::{
    Aggregate, Config, Policy, Reading, Reason, Reflex, RuleStatus, TagCounters, TagReading,
};

use crate::config::ServerConfig;
use crate::metrics::{FleetStats, ShardStats};

/// Most tag entries one pulse may carry.
const MAX_TAG_METRICS: usize = 1024;
/// Most pulses remembered per instance for its recent demand.
const MAX_DEMAND_SAMPLES: usize = 1024;
/// Most custom metrics per tag in one pulse.
const MAX_CUSTOM_PER_TAG: usize = 64;
/// Largest count the fleet rules are fed (2^48, about 2.8e14 requests in one window: no real
/// fleet comes near it). The reflex adds windows with plain sums (`TagCounters::merge`,
/// `Aggregate::merge` in waitstate-core), so counts that saturated at `u64::MAX` here are
/// capped before they reach it; 65 536 windows of the cap still fit in a `u64`.
pub(crate) const RULE_FEED_CAP: u64 = 1 << 48;

/// Why a pulse was refused: nothing of it was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IngestError {
    /// The body does not make sense (bad names, histogram, numbers).
    Malformed(&'static str),
    /// A cap on sites or instances is reached.
    Full(&'static str),
    /// The fleet rules could not be set up (a configuration validated at startup).
    Internal,
}

/// One instance's recent life.
#[derive(Debug)]
struct Instance {
    last_seen: Instant,
    /// The version ([`policy_version`]) of the fleet policy its last pulse was answered with.
    given: u32,
    /// Per tag, the in-flight gauge of its last pulse.
    in_flight: BTreeMap<String, u64>,
    /// Per pulse: when, and the offered count per tag (demand).
    demand: VecDeque<(Instant, BTreeMap<String, u64>)>,
    /// Per tag, the sum over `demand`, kept up to date as pulses come and age out.
    demand_sum: BTreeMap<String, u64>,
}

impl Instance {
    fn demand_of(&self, tag: &str) -> f64 {
        self.demand_sum.get(tag).copied().unwrap_or(0) as f64
    }
}

/// `sums[tag] += n` for every entry of `counts`, saturating.
fn add_counts(sums: &mut BTreeMap<String, u64>, counts: &BTreeMap<String, u64>) {
    for (tag, n) in counts {
        add_to(sums.entry(tag.clone()).or_insert(0), *n);
    }
}

/// `*sum += n`, saturating at `u64::MAX`. Every count here comes from the network: a
/// hostile pulse can send `u64::MAX`, and a plain `+=` would wrap in a release build and
/// panic in a debug one (issue 15, item 8).
pub(crate) fn add_to(sum: &mut u64, n: u64) {
    *sum = sum.saturating_add(n);
}

/// All of a tag's rejections, saturating ([`TagCounters::rejected_total`] is a plain sum).
pub(crate) fn rejected_total(c: &TagCounters) -> u64 {
    c.rejected.iter().fold(0, |a, &n| a.saturating_add(n))
}

/// Admitted plus rejected, saturating ([`TagCounters::offered`] is a plain sum).
fn offered(c: &TagCounters) -> u64 {
    c.admitted.saturating_add(rejected_total(c))
}

/// `into += from`, field by field, saturating: [`TagCounters::merge`] with no overflow on
/// hostile counts. Weights and latency sums are floats or already bounded.
pub(crate) fn merge_counters(into: &mut TagCounters, from: &TagCounters) {
    add_to(&mut into.admitted, from.admitted);
    into.admitted_weight = (into.admitted_weight + from.admitted_weight).min(f64::MAX);
    for (a, b) in into.rejected.iter_mut().zip(&from.rejected) {
        add_to(a, *b);
    }
    add_to(&mut into.would_reject, from.would_reject);
    add_to(&mut into.completed, from.completed);
    add_to(&mut into.errors, from.errors);
    add_to(&mut into.latency_sum_us, from.latency_sum_us);
    add_to(&mut into.in_flight, from.in_flight);
    into.latency.merge(&from.latency);
}

/// A tag's counters as the fleet rules get them: every count capped at [`RULE_FEED_CAP`].
fn for_rules(c: &TagCounters) -> TagCounters {
    let cap = |n: u64| n.min(RULE_FEED_CAP);
    let mut out = c.clone();
    out.admitted = cap(c.admitted);
    for n in &mut out.rejected {
        *n = cap(*n);
    }
    out.would_reject = cap(c.would_reject);
    out.completed = cap(c.completed);
    out.errors = cap(c.errors);
    out.latency_sum_us = cap(c.latency_sum_us);
    out.in_flight = cap(c.in_flight);
    out
}

/// [`for_rules`], with the in-flight gauge of the live instances (capped alike).
pub(crate) fn for_rules_now(c: &TagCounters, in_flight: Option<&u64>) -> TagCounters {
    let mut c = for_rules(c);
    c.in_flight = in_flight.copied().unwrap_or(0).min(RULE_FEED_CAP);
    c
}

/// `sums[tag] -= n` for every entry of `counts`; entries that reach 0 are removed.
fn sub_counts(sums: &mut BTreeMap<String, u64>, counts: &BTreeMap<String, u64>) {
    for (tag, n) in counts {
        if let Some(v) = sums.get_mut(tag) {
            *v = v.saturating_sub(*n);
            if *v == 0 {
                sums.remove(tag);
            }
        }
    }
}

/// An org's site: one fleet.
#[derive(Debug)]
pub(crate) struct Shard {
    reflex: Reflex,
    /// Everything received, per tag (in-flight kept at 0: it is a gauge, see `instances`).
    cumulative: BTreeMap<String, TagCounters>,
    /// The same, from pulses of one window only: what the fleet rules read. A pulse that
    /// carries several windows (sent after a failure) holds old telemetry: it is counted,
    /// but it must not make the rules act now on what happened minutes ago.
    fresh: BTreeMap<String, TagCounters>,
    custom: Vec<(Option<String>, String, Aggregate)>,
    instances: HashMap<String, Instance>,
    /// Per tag, the recent demand of every live instance, summed: kept up to date at ingest
    /// and expiry, so an answer's budget split costs O(1) per tag, not O(instances).
    demand_total: BTreeMap<String, u64>,
    enforce: Policy,
    /// [`policy_version`] of `enforce`.
    version: u32,
    status: Vec<RuleStatus>,
    pulses: u64,
    /// What `/metrics` shows of this shard, kept up to date here (see [`crate::metrics`]).
    stats: Arc<ShardStats>,
}

/// A read-only view of a shard, for tests, `/metrics` and operators.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ShardView {
    /// Live instances.
    pub instances: usize,
    /// Pulses accepted.
    pub pulses: u64,
    /// The fleet policy the rules produced (before the per-instance answer).
    pub policy: Policy,
    /// Each fleet rule's state.
    pub rules: Vec<RuleStatus>,
    /// Cumulative counters per tag, everything received.
    pub tags: BTreeMap<String, TagCounters>,
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl ShardView {
    pub(crate) fn new(
        instances: usize,
        pulses: u64,
        policy: Policy,
        rules: Vec<RuleStatus>,
        tags: BTreeMap<String, TagCounters>,
    ) -> Self {
        Self {
            instances,
            pulses,
            policy,
            rules,
            tags,
        }
    }
}

impl Shard {
    fn new(engine: &Config, stats: Arc<ShardStats>) -> Result<Self, IngestError> {
        // The configuration was validated at startup, so this does not fail.
        let reflex = Reflex::new(engine).map_err(|_| IngestError::Internal)?;
        Ok(Self {
            reflex,
            cumulative: BTreeMap::new(),
            fresh: BTreeMap::new(),
            custom: Vec::new(),
            instances: HashMap::new(),
            demand_total: BTreeMap::new(),
            enforce: Policy::default(),
            version: policy_version(&Policy::default()),
            status: Vec::new(),
            pulses: 0,
            stats,
        })
    }

    /// Every live instance at `now` (silent for at most `ttl`): id, time since its last
    /// pulse, the policy version that pulse was answered with.
    pub(crate) fn instance_rows(
        &self,
        now: Instant,
        ttl: Duration,
    ) -> Vec<(&str, Duration, Option<u32>)> {
        self.instances
            .iter()
            .map(|(id, i)| {
                (
                    id.as_str(),
                    now.saturating_duration_since(i.last_seen),
                    Some(i.given),
                )
            })
            .filter(|(_, ago, _)| *ago <= ttl)
            .collect()
    }

    pub(crate) fn view(&self) -> ShardView {
        ShardView {
            instances: self.instances.len(),
            pulses: self.pulses,
            policy: self.enforce.clone(),
            rules: self.status.clone(),
            tags: self.cumulative.clone(),
        }
    }
}

/// Every org's shards.
#[derive(Debug, Default)]
pub(crate) struct Fleets {
    orgs: HashMap<String, HashMap<String, Shard>>,
    /// What `/metrics` shows, read without the lock these fleets are behind.
    stats: Arc<FleetStats>,
}

/// One tag's delta, decoded and checked.
pub(crate) struct Delta {
    pub(crate) tag: String,
    pub(crate) counters: TagCounters,
    pub(crate) in_flight: u64,
    pub(crate) offered: u64,
    pub(crate) custom: Vec<(String, Aggregate)>,
}

fn finite(x: f64) -> bool {
    x.is_finite() && x >= 0.0
}

fn decode(m: &TagMetric) -> Result<Delta, IngestError> {
    if !names::is_valid_tag(&m.tag) {
        return Err(IngestError::Malformed("tag name"));
    }
    if !finite(m.latency) {
        return Err(IngestError::Malformed("latency"));
    }
    let mut c = TagCounters::default();
    let histogram = match (&m.histogram, &m.latency_buckets) {
        (Some(sparse), _) => {
            Histogram::from_sparse(sparse).map_err(|_| IngestError::Malformed("histogram"))?
        }
        (None, Some(buckets)) => {
            if buckets.len() != 8 {
                return Err(IngestError::Malformed("latencyBuckets"));
            }
            let mut h = Histogram::new();
            for (n, ms) in buckets.iter().zip(V1_BUCKET_REPRESENTATIVE_MS) {
                if *n > 0 {
                    h.record_n_micros((ms * 1000.0) as u64, *n);
                }
            }
            h
        }
        (None, None) => Histogram::new(),
    };
    if let Some(admitted) = m.admitted {
        // Our SDK: exact counts.
        c.admitted = admitted;
        c.admitted_weight = m.admitted_weight.unwrap_or(admitted as f64);
        if !finite(c.admitted_weight) {
            return Err(IngestError::Malformed("admittedWeight"));
        }
        for (name, n) in m.rejected.iter().flatten() {
            for (i, r) in Reason::ALL.iter().enumerate() {
                if r.as_str() == name {
                    c.rejected[i] = *n;
                }
            }
        }
        c.would_reject = m.would_reject.unwrap_or(0);
        c.completed = m.completed.unwrap_or_else(|| histogram.count());
        c.errors = m.errors.unwrap_or(0);
    } else {
        // A v1 SDK: `count` gate calls, latencies as the 8 buckets.
        c.admitted = m.count;
        c.admitted_weight = m.count as f64;
        c.completed = histogram.count();
    }
    c.latency_sum_us = (m.latency * 1000.0 * c.completed as f64).min(u64::MAX as f64 / 2.0) as u64;
    c.latency = histogram;
    let mut custom = Vec::new();
    if let Some(metrics) = &m.custom_metrics {
        if metrics.len() > MAX_CUSTOM_PER_TAG {
            return Err(IngestError::Malformed("customMetrics: too many"));
        }
        for (name, agg) in metrics {
            if !names::is_valid_metric(name) {
                return Err(IngestError::Malformed("customMetrics: name"));
            }
            if !(agg.min.is_finite() && agg.max.is_finite() && agg.sum.is_finite()) {
                return Err(IngestError::Malformed("customMetrics: value"));
            }
            let mut agg = *agg;
            agg.count = agg.count.min(RULE_FEED_CAP);
            custom.push((name.clone(), agg));
        }
    }
    Ok(Delta {
        tag: m.tag.clone(),
        offered: offered(&c).max(m.count),
        counters: c,
        in_flight: m.in_flight.unwrap_or(0),
        custom,
    })
}

/// A pulse checked and decoded: what [`Fleets::ingest`] (or the Redis store) merges.
pub(crate) struct Checked {
    /// The shard (`""` without a `siteId`).
    pub(crate) site: String,
    /// Every tag's delta, in the pulse's order.
    pub(crate) deltas: Vec<Delta>,
    /// Sent by a v1 SDK (no exact counts).
    pub(crate) v1: bool,
    /// One window only: it may drive the rules.
    pub(crate) fresh: bool,
    /// A v1 SDK's error count for the whole service (counted under the default tag).
    pub(crate) v1_errors: u64,
}

/// Check and decode a pulse; nothing of a refused pulse is kept.
pub(crate) fn check(body: &PulseBody) -> Result<Checked, IngestError> {
    if names::shard_name_problem(&body.instance_id).is_some() {
        return Err(IngestError::Malformed("instanceId"));
    }
    let site = body.site_id.clone().unwrap_or_default();
    if body.site_id.is_some() && names::shard_name_problem(&site).is_some() {
        return Err(IngestError::Malformed("siteId"));
    }
    if body.tag_metrics.len() > MAX_TAG_METRICS {
        return Err(IngestError::Malformed("tagMetrics: too many"));
    }
    if !finite(body.metrics.errors) || !finite(body.metrics.latency) {
        return Err(IngestError::Malformed("metrics"));
    }
    let deltas = body
        .tag_metrics
        .iter()
        .map(decode)
        .collect::<Result<Vec<_>, _>>()?;
    let v1 = body.tag_metrics.iter().all(|m| m.admitted.is_none());
    Ok(Checked {
        site,
        deltas,
        v1,
        fresh: body.windows.unwrap_or(1) <= 1,
        // A float: `as` saturates.
        v1_errors: if v1 { body.metrics.errors as u64 } else { 0 },
    })
}

impl Fleets {
    /// Merge one pulse into its shard. Everything is checked before anything is stored.
    pub(crate) fn ingest(
        &mut self,
        org: &str,
        body: &PulseBody,
        now: Instant,
        server: &ServerConfig,
        engine: &Config,
    ) -> Result<(), IngestError> {
        let Checked {
            site,
            deltas,
            v1,
            fresh,
            v1_errors,
        } = check(body)?;
        let shards = self.orgs.entry(org.to_owned()).or_default();
        if !shards.contains_key(&site) && shards.len() >= server.max_sites {
            return Err(IngestError::Full("sites"));
        }
        if !shards.contains_key(&site) {
            // Check the rules build before the shard is shown in `/metrics`.
            Reflex::new(engine).map_err(|_| IngestError::Internal)?;
            let stats = self.stats.add_shard(org, &site);
            shards.insert(site.clone(), Shard::new(engine, stats)?);
        }
        let Some(shard) = shards.get_mut(&site) else {
            return Err(IngestError::Internal);
        };
        if !shard.instances.contains_key(&body.instance_id) {
            expire(shard, now, server.instance_ttl);
            if shard.instances.len() >= server.max_instances {
                return Err(IngestError::Full("instances"));
            }
        }
        let mut demand = BTreeMap::new();
        let mut in_flight = BTreeMap::new();
        for d in deltas {
            // Past the tag cap, new tags count as the overflow tag.
            let tag = if shard.cumulative.contains_key(&d.tag)
                || shard.cumulative.len() + 1 < engine.tag_cap
            {
                d.tag
            } else {
                OVERFLOW_TAG.to_owned()
            };
            merge_counters(
                shard.cumulative.entry(tag.clone()).or_default(),
                &d.counters,
            );
            if fresh {
                merge_counters(shard.fresh.entry(tag.clone()).or_default(), &d.counters);
                for (name, agg) in d.custom {
                    shard.custom.push((Some(tag.clone()), name, agg));
                }
            }
            add_to(demand.entry(tag.clone()).or_insert(0), d.offered);
            add_to(in_flight.entry(tag).or_insert(0), d.in_flight);
        }
        if v1 && v1_errors > 0 {
            // v1 sends errors for the whole service only.
            let errors = v1_errors;
            add_to(
                &mut shard
                    .cumulative
                    .entry(DEFAULT_TAG.to_owned())
                    .or_default()
                    .errors,
                errors,
            );
            if fresh {
                add_to(
                    &mut shard
                        .fresh
                        .entry(DEFAULT_TAG.to_owned())
                        .or_default()
                        .errors,
                    errors,
                );
            }
        }
        let given = shard.version;
        let inst = shard
            .instances
            .entry(body.instance_id.clone())
            .or_insert_with(|| Instance {
                last_seen: now,
                given,
                in_flight: BTreeMap::new(),
                demand: VecDeque::new(),
                demand_sum: BTreeMap::new(),
            });
        inst.last_seen = now;
        inst.given = given;
        inst.in_flight = in_flight;
        add_counts(&mut inst.demand_sum, &demand);
        add_counts(&mut shard.demand_total, &demand);
        let touched: Vec<String> = demand.keys().cloned().collect();
        inst.demand.push_back((now, demand));
        // Age out what is older than the demand window; an instance pulsing abnormally fast
        // cannot grow its history without bound either.
        while inst
            .demand
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > server.demand_window)
            || inst.demand.len() > MAX_DEMAND_SAMPLES
        {
            if let Some((_, old)) = inst.demand.pop_front() {
                sub_counts(&mut inst.demand_sum, &old);
                sub_counts(&mut shard.demand_total, &old);
            }
        }
        add_to(&mut shard.pulses, 1);
        shard.stats.set_instances(shard.instances.len());
        for tag in &touched {
            if let Some(c) = shard.cumulative.get(tag) {
                shard.stats.set_tag(tag, c.admitted, rejected_total(c));
            }
        }
        Ok(())
    }

    /// Evaluate every shard's fleet rules at `now` (`since_origin` for the reflex).
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        since_origin: Duration,
        server: &ServerConfig,
        engine: &Config,
    ) {
        for shard in self.orgs.values_mut().flat_map(HashMap::values_mut) {
            expire(shard, now, server.instance_ttl);
            let mut gauge: BTreeMap<&str, u64> = BTreeMap::new();
            for inst in shard.instances.values() {
                for (tag, n) in &inst.in_flight {
                    add_to(gauge.entry(tag.as_str()).or_insert(0), *n);
                }
            }
            let mut reading = Reading::default();
            reading.tags = shard
                .fresh
                .iter()
                .map(|(tag, c)| {
                    let c = for_rules_now(c, gauge.get(tag.as_str()));
                    TagReading::new(tag.clone(), engine.priority_of(tag), c)
                })
                .collect();
            reading.custom = std::mem::take(&mut shard.custom);
            let (enforce, _dry) = shard.reflex.observe(since_origin, reading);
            if enforce != shard.enforce {
                shard.version = policy_version(&enforce);
            }
            shard.enforce = enforce;
            shard.status = shard.reflex.status();
            shard.stats.set_instances(shard.instances.len());
            shard
                .stats
                .set_rules_active(shard.status.iter().filter(|r| r.is_active()).count());
        }
    }

    /// What `/metrics` shows: shared, read without the lock these fleets are behind.
    pub(crate) fn stats(&self) -> Arc<FleetStats> {
        self.stats.clone()
    }

    pub(crate) fn shard(&self, org: &str, site: &str) -> Option<&Shard> {
        self.orgs.get(org)?.get(site)
    }
}

fn expire(shard: &mut Shard, now: Instant, ttl: Duration) {
    let total = &mut shard.demand_total;
    shard.instances.retain(|_, i| {
        let live = now.saturating_duration_since(i.last_seen) <= ttl;
        if !live {
            sub_counts(total, &i.demand_sum);
        }
        live
    });
}

/// A fleet policy's version: a fingerprint (FNV-1a over its JSON, whose maps are ordered,
/// the high 32 bits): equal policies, equal versions. The dashboard shows it in hex.
pub(crate) fn policy_version(policy: &Policy) -> u32 {
    /// FNV-1a fed as the JSON is written: no buffer.
    struct Fnv(u64);
    impl std::io::Write for Fnv {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for b in buf {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let _ = serde_json::to_writer(&mut h, policy);
    (h.0 >> 32) as u32
}

/// What an answer is made of: a shard held here (in memory), or a fleet state read from
/// Redis (`crate::store`).
pub(crate) trait FleetAnswer {
    /// The fleet policy the rules produced.
    fn enforce(&self) -> &Policy;
    /// Every tag the fleet has reported.
    fn known_tags(&self) -> Vec<&str>;
    /// An instance's share of a fleet-wide `budget` for `tag`.
    fn share(&self, instance: Option<&str>, tag: &str, budget: f64) -> f64;
    /// Whether an enforced rule is active.
    fn degraded(&self) -> bool;
}

impl FleetAnswer for Shard {
    fn enforce(&self) -> &Policy {
        &self.enforce
    }

    fn known_tags(&self) -> Vec<&str> {
        self.cumulative.keys().map(String::as_str).collect()
    }

    fn share(&self, instance: Option<&str>, tag: &str, budget: f64) -> f64 {
        split(Some(self), instance, tag, budget)
    }

    fn degraded(&self) -> bool {
        self.status.iter().any(|r| r.is_active() && !r.dry_run)
    }
}

/// The policy one instance gets: the fleet policy in v1 terms first (so v1 SDKs obey it),
/// then our extensions, with the rate budgets split by recent demand.
pub(crate) fn answer<F: FleetAnswer + ?Sized>(
    shard: Option<&F>,
    instance: Option<&str>,
    server: &ServerConfig,
    engine: &Config,
) -> Policy {
    let mut p = shard.map(|s| s.enforce().clone()).unwrap_or_default();
    // `shed`: the priority floor, as v1 blocks of every known tag below it.
    if let Some(floor) = p.priority_floor {
        let mut below: Vec<&str> = engine
            .tags
            .iter()
            .filter(|(_, prio)| **prio < floor)
            .map(|(t, _)| t.as_str())
            .collect();
        let known = shard.map(|s| s.known_tags()).unwrap_or_default();
        below.extend(known.into_iter().filter(|t| engine.priority_of(t) < floor));
        if engine.default_priority < floor {
            below.push(DEFAULT_TAG);
        }
        for t in below {
            p.tag_max_weights.insert(t.to_owned(), 0.0);
        }
    }
    // A throttle to 0% is a block in v1 terms.
    let zero: Vec<String> = p
        .tag_throttles
        .iter()
        .filter(|(_, share)| **share <= 0.0)
        .map(|(t, _)| t.clone())
        .collect();
    for t in zero {
        p.tag_max_weights.insert(t, 0.0);
    }
    // Fleet-wide budgets: this instance's share of recent demand.
    for (tag, budget) in p.tag_rate_limits.iter_mut() {
        *budget = match shard {
            Some(s) => s.share(instance, tag, *budget),
            None => *budget,
        };
    }
    p.lease_duration_seconds = Some(server.lease.as_secs().max(1));
    p.pulse_interval = u64::try_from(server.pulse_interval.as_millis()).unwrap_or(u64::MAX);
    let active = shard.is_some_and(FleetAnswer::degraded);
    p.status = Some(if active { "degraded" } else { "ok" }.to_owned());
    p
}

/// `budget × (demand_i + ε) / (Σ demand + n·ε)`: the shares add up to the budget; an idle
/// instance keeps a sliver so it is not starved when its traffic starts. An unknown instance
/// (a policy read without an instance id) gets an equal share.
fn split(shard: Option<&Shard>, instance: Option<&str>, tag: &str, budget: f64) -> f64 {
    let Some(shard) = shard else { return budget };
    let n = shard.instances.len();
    let mine = instance.and_then(|id| shard.instances.get(id));
    let Some(mine) = mine else {
        return budget / (n.max(1) as f64);
    };
    let total = shard.demand_total.get(tag).copied().unwrap_or(0) as f64;
    let eps = if total > 0.0 {
        total * 0.02 / n as f64
    } else {
        1.0
    };
    let share = (mine.demand_of(tag) + eps) / (total + eps * n as f64);
    (budget * share).max(0.0)
}

#[cfg(test)]
mod tests;
