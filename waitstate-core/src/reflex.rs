//! The reflex evaluator: once per tick it closes the window, computes the metrics the rules
//! name, steps each rule's state machine and produces the local policy.
//!
//! Each rule moves through `idle → pending (condition held for less than its "for") →
//! firing → cooling (condition clear, for less than the cool-down) → releasing (gradual, one
//! step per `release_step`) → idle`. A condition that holds again while cooling goes
//! straight back to firing; while releasing, the ramp steps back (see below). Releases are
//! gradual:
//!
//! | action | while firing or cooling | release steps 1, 2, 3 |
//! |---|---|---|
//! | `block t` | `tagMaxWeights[t] = 0` | `t` throttled to 25%, 50%, 75% |
//! | `throttle t to p%` | `t` at p% | p + (100-p)·¼, ·½, ·¾ |
//! | `limit t to r/s` | r/s | 2r, 4r, 8r |
//! | `limit concurrency to n` | n | 2n, 4n, 8n |
//! | `kill` | `killSignal` | every tag throttled to 25%, 50%, 75% |
//! | `shed` | one more priority level per tick while the condition holds (levels without traffic are passed over; no step while the metric is clearly recovering; on a windowed metric, at most one step per window) | one level at a time, in reverse, each at 25%, 50%, 75%, then open (a step per `release_step`, and on a windowed metric at least a window); if the condition comes back while a level ramps, its ramp steps back one step (at most once per window) and resumes after a cool-down, and only back at 25% is the level shed again |
//!
//! `shed` never sheds the highest priority level.
//!
//! A condition that holds again while releasing steps the ramp back one step (at most once
//! per window) and resumes after a cool-down; only back at the first step does the rule
//! fire again. The same hysteresis for every action.
//!
//! Metrics are computed over the last `window` of ticks: latency percentiles from the
//! merged histograms of requests that ended, and of requests still in flight at the age
//! they have reached at least (so a backend that stops answering reads as slower and
//! slower, never as healthy; no request ended or in flight: no value, the condition does
//! not hold), `error_rate` = errors / ended (%), `rps` = offered (admitted +
//! rejected) per second, `reject_rate` = rejected / offered (%), `in_flight` the gauge now,
//! a custom metric the mean of its reports.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::ConfigError;
use crate::histogram::{Histogram, SparseHistogram};
use crate::policy::Policy;
use crate::registry::{Aggregate, Tag, TagCounters};
use crate::rule::{Action, Metric, Op, Rule};

/// Steps of a gradual release before the action is gone.
const RELEASE_STEPS: u32 = 3;

/// Where a rule is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The condition does not hold.
    Idle,
    /// The condition holds, for less than the rule's `for`.
    Pending,
    /// The action is in force.
    Firing,
    /// The condition cleared; the action stays in force until the cool-down ends.
    Cooling,
    /// The action is being released step by step (the step, 1..=3).
    Releasing(u32),
}

/// A rule's state after a tick, for display and metrics.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RuleStatus {
    /// The rule's canonical text.
    pub rule: String,
    /// Watched, not enforced.
    pub dry_run: bool,
    /// Where it is.
    pub phase: Phase,
    /// The metric's value in the last window (`None`: no data).
    pub value: Option<f64>,
    /// For `shed`: how many priority levels are shed.
    pub shed_level: usize,
}

impl RuleStatus {
    /// Whether the rule's action is in force (firing, cooling or releasing).
    pub fn is_active(&self) -> bool {
        matches!(
            self.phase,
            Phase::Firing | Phase::Cooling | Phase::Releasing(_)
        )
    }
}

#[derive(Debug)]
struct RuleState {
    rule: Rule,
    text: String,
    dry: bool,
    cooldown: Duration,
    phase: Phase,
    since: Duration,
    shed_level: usize,
    value: Option<f64>,
    /// When `shed` last moved up a level.
    escalated: Duration,
}

/// One tick's reading of a service (or of a whole fleet): every tag's cumulative counters
/// and the custom metrics reported since the previous reading.
///
/// [`Reflex::tick`] takes it from an [`Engine`]; a control plane builds it from the merged
/// telemetry of its instances and calls [`Reflex::observe`], so that the fleet's rules run
/// on the same code as an instance's.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Reading {
    /// Per tag: name, priority and cumulative counters (they only grow, but the gauge).
    pub tags: Vec<TagReading>,
    /// Custom metrics reported since the previous reading: tag (`None`: the service),
    /// metric name, aggregate.
    pub custom: Vec<(Option<String>, String, Aggregate)>,
}

/// One tag in a [`Reading`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TagReading {
    /// The tag's name.
    pub tag: String,
    /// Its priority.
    pub priority: i64,
    /// Cumulative counters.
    pub counters: TagCounters,
}

impl TagReading {
    /// A tag's reading.
    pub fn new(tag: impl Into<String>, priority: i64, counters: TagCounters) -> Self {
        Self {
            tag: tag.into(),
            priority,
            counters,
        }
    }
}

impl Reading {
    /// Read an engine: every tag's counters, and take its custom metrics' window.
    pub fn from_engine(engine: &Engine) -> Self {
        let mut counters = Vec::new();
        engine.load_counters(&mut counters);
        let mut custom = Vec::new();
        engine.take_custom(&mut custom);
        Self {
            tags: counters
                .into_iter()
                .map(|(t, c)| TagReading::new(t.as_str(), t.priority(), c))
                .collect(),
            custom: custom
                .into_iter()
                .map(|(t, n, a)| (t.map(|t| t.as_str().to_owned()), n, a))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Sample {
    at: Duration,
    /// Per tag: name, priority, cumulative counters (compact). A tag whose counters did not
    /// change since the previous sample shares that sample's copy, so a window of mostly
    /// idle tags (say, 256 tags seen once in a flood) costs one small copy each.
    tags: Vec<(Arc<str>, i64, Arc<Compact>)>,
    custom: Vec<(Option<String>, String, Aggregate)>,
}

/// [`TagCounters`] with the latency histogram kept sparse (its non-zero buckets): what the
/// window's history stores, a few hundred bytes per tag instead of the dense 4 KiB.
#[derive(Debug, PartialEq)]
struct Compact {
    /// The slot's generation ([`Tag::generation`]; 0 in readings from a fleet).
    generation: u64,
    admitted: u64,
    admitted_weight: f64,
    rejected: [u64; crate::Reason::ALL.len()],
    would_reject: u64,
    abandoned: u64,
    completed: u64,
    errors: u64,
    cancelled: u64,
    panicked: u64,
    latency_sum_us: u64,
    in_flight: u64,
    latency: Vec<(u32, u64)>,
}

impl Compact {
    fn of(generation: u64, c: &TagCounters) -> Self {
        Self {
            generation,
            admitted: c.admitted,
            admitted_weight: c.admitted_weight,
            rejected: c.rejected,
            would_reject: c.would_reject,
            abandoned: c.abandoned,
            completed: c.completed,
            errors: c.errors,
            cancelled: c.cancelled,
            panicked: c.panicked,
            latency_sum_us: c.latency_sum_us,
            in_flight: c.in_flight,
            latency: c.latency.to_sparse().buckets,
        }
    }

    fn expand(&self) -> TagCounters {
        let sparse = SparseHistogram {
            layout: SparseHistogram::LAYOUT.to_owned(),
            buckets: self.latency.clone(),
        };
        TagCounters {
            admitted: self.admitted,
            admitted_weight: self.admitted_weight,
            rejected: self.rejected,
            would_reject: self.would_reject,
            abandoned: self.abandoned,
            completed: self.completed,
            errors: self.errors,
            cancelled: self.cancelled,
            panicked: self.panicked,
            latency_sum_us: self.latency_sum_us,
            in_flight: self.in_flight,
            // Built from a histogram's own sparse form: it always reads back.
            latency: Histogram::from_sparse(&sparse).unwrap_or_default(),
        }
    }
}

impl Sample {
    /// A sample from `(tag, priority, counters)`, sharing unchanged tags with `previous`.
    fn new<'a>(
        at: Duration,
        tags: impl Iterator<Item = (&'a str, i64, u64, &'a TagCounters)>,
        custom: Vec<(Option<String>, String, Aggregate)>,
        previous: Option<&Sample>,
    ) -> Self {
        let before: HashMap<&str, &(Arc<str>, i64, Arc<Compact>)> = previous
            .map(|p| p.tags.iter().map(|t| (&*t.0, t)).collect())
            .unwrap_or_default();
        let tags = tags
            .map(|(tag, priority, generation, counters)| {
                let compact = Compact::of(generation, counters);
                match before.get(tag) {
                    Some((name, _, prev)) if **prev == compact => {
                        (name.clone(), priority, prev.clone())
                    }
                    Some((name, ..)) => (name.clone(), priority, Arc::new(compact)),
                    None => (Arc::from(tag), priority, Arc::new(compact)),
                }
            })
            .collect();
        Self { at, tags, custom }
    }
}

/// The window's view, by scope: `None` is the whole service.
#[derive(Debug, Default)]
struct WindowView {
    seconds: f64,
    by_tag: HashMap<String, (i64, TagCounters)>,
    service: TagCounters,
}

/// The evaluator. Owned by one task; no locks.
pub struct Reflex {
    rules: Vec<RuleState>,
    levels: Vec<i64>,
    /// The configuration's `[limits]`: the floor of every policy produced.
    limits: Policy,
    window: Duration,
    release_step: Duration,
    history: VecDeque<Sample>,
    /// Reused by [`Reflex::tick`] to read the engine without allocating every tag's counters
    /// anew each tick.
    scratch: Vec<(Tag, TagCounters)>,
}

impl fmt::Debug for Reflex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflex")
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.text).collect::<Vec<_>>(),
            )
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Reflex {
    /// The evaluator for a configuration (its rules, cool-downs, window and priorities).
    ///
    /// # Errors
    /// What [`Config::validate`] finds.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let parsed = config.parsed_rules()?;
        let mut levels: Vec<i64> = config.tags.values().copied().collect();
        levels.push(config.default_priority);
        levels.sort_unstable();
        levels.dedup();
        let rules = parsed
            .into_iter()
            .zip(&config.rules)
            .map(|(rule, rc)| RuleState {
                text: rule.to_string(),
                rule,
                dry: rc.dry_run,
                cooldown: rc.cooldown.unwrap_or(config.cooldown),
                phase: Phase::Idle,
                since: Duration::ZERO,
                shed_level: 0,
                value: None,
                escalated: Duration::ZERO,
            })
            .collect();
        Ok(Self {
            rules,
            levels,
            limits: config.limits.to_policy(),
            window: config.window,
            release_step: config.release_step,
            history: VecDeque::new(),
            scratch: Vec::new(),
        })
    }

    /// Close the window at `now`, evaluate every rule, and install the resulting local
    /// policy in `engine`. Returns each rule's status.
    pub fn tick(&mut self, now: Duration, engine: &Engine) -> Vec<RuleStatus> {
        let mut scratch = std::mem::take(&mut self.scratch);
        engine.load_counters(&mut scratch);
        let mut taken = Vec::new();
        engine.take_custom(&mut taken);
        let custom = taken
            .into_iter()
            .map(|(t, n, a)| (t.map(|t| t.as_str().to_owned()), n, a))
            .collect();
        let tags = scratch
            .iter()
            .map(|(t, c)| (t.as_str(), t.priority(), t.generation(), c));
        let sample = Sample::new(now, tags, custom, self.history.back());
        self.scratch = scratch;
        let (policy, dry) = self.push(now, sample);
        // The reflex policy is built from validated rules, so validation cannot fail; if it
        // ever did, the last good policy stays.
        let _ = engine.set_local_policy(policy, dry);
        self.status()
    }

    /// Take one reading at `now` and evaluate every rule: returns the enforced policy and
    /// the dry-run rules' policy. [`Reflex::status`] then tells each rule's state.
    pub fn observe(&mut self, now: Duration, reading: Reading) -> (Policy, Policy) {
        let tags = reading
            .tags
            .iter()
            .map(|t| (t.tag.as_str(), t.priority, 0, &t.counters));
        let sample = Sample::new(now, tags, reading.custom, self.history.back());
        self.push(now, sample)
    }

    fn push(&mut self, now: Duration, sample: Sample) -> (Policy, Policy) {
        self.history.push_back(sample);
        // Keep the samples of the window, plus the one at its start.
        while self.history.len() > 2
            && self
                .history
                .get(1)
                .is_some_and(|s| now.saturating_sub(s.at) >= self.window)
        {
            self.history.pop_front();
        }
        let view = self.view();
        self.evaluate(now, &view)
    }

    /// The custom metrics of the last reading (what the tick took from the engine).
    pub fn last_custom(&self) -> &[(Option<String>, String, Aggregate)] {
        self.history.back().map_or(&[], |s| &s.custom)
    }

    /// Each rule's status after the last tick.
    pub fn status(&self) -> Vec<RuleStatus> {
        self.rules
            .iter()
            .map(|r| RuleStatus {
                rule: r.text.clone(),
                dry_run: r.dry,
                phase: r.phase,
                value: r.value,
                shed_level: r.shed_level,
            })
            .collect()
    }

    fn view(&self) -> WindowView {
        let (Some(first), Some(last)) = (self.history.front(), self.history.back()) else {
            return WindowView::default();
        };
        let single = self.history.len() == 1;
        let mut view = WindowView {
            seconds: last.at.saturating_sub(first.at).as_secs_f64(),
            ..WindowView::default()
        };
        let earlier: HashMap<&str, &Compact> = first
            .tags
            .iter()
            .map(|(name, _, c)| (&**name, &**c))
            .collect();
        // Only when some tag has requests in flight: every sample's tags by name.
        let samples: Vec<(Duration, HashMap<&str, &Compact>)> =
            if !single && last.tags.iter().any(|(_, _, c)| c.in_flight > 0) {
                self.history
                    .iter()
                    .take(self.history.len() - 1)
                    .map(|s| (s.at, s.tags.iter().map(|(n, _, c)| (&**n, &**c)).collect()))
                    .collect()
            } else {
                Vec::new()
            };
        for (name, priority, counters) in &last.tags {
            let mut delta = counters.expand();
            if single {
                // No earlier reading: the window is everything so far.
            } else if let Some(before) = earlier.get(&**name)
                && before.generation == counters.generation
            {
                // (A new slot of a reclaimed tag: everything it counted is in the window.)
                delta.subtract(&before.expand());
            }
            if counters.in_flight > 0 {
                add_in_flight_ages(name, counters, last.at, &samples, &mut delta.latency);
            }
            view.service.merge(&delta);
            view.by_tag.insert(name.to_string(), (*priority, delta));
        }
        view
    }

    fn metric_value(&self, metric: &Metric, tag: Option<&str>, view: &WindowView) -> Option<f64> {
        let scope = match tag {
            None => Some(&view.service),
            Some(t) => view.by_tag.get(t).map(|(_, c)| c),
        };
        let c = scope?;
        let pct = |num: u64, den: u64| (den > 0).then(|| num as f64 * 100.0 / den as f64);
        match metric {
            Metric::P50Latency => c.latency.quantile_ms(0.50),
            Metric::P95Latency => c.latency.quantile_ms(0.95),
            Metric::P99Latency => c.latency.quantile_ms(0.99),
            Metric::ErrorRate => pct(c.errors, c.completed),
            Metric::RejectRate => pct(c.rejected_total(), c.offered()),
            Metric::Rps => (view.seconds > 0.0).then(|| c.offered() as f64 / view.seconds),
            Metric::InFlight => Some(c.in_flight as f64),
            Metric::Custom(name) => {
                let mut total: Option<Aggregate> = None;
                // Skip the first sample: its aggregates belong to the tick before the window.
                for s in self
                    .history
                    .iter()
                    .skip(usize::from(self.history.len() > 1))
                {
                    for (t, n, agg) in &s.custom {
                        let in_scope = match tag {
                            None => true,
                            Some(want) => t.as_deref() == Some(want),
                        };
                        if in_scope && n == name {
                            match &mut total {
                                Some(acc) => acc.merge(agg),
                                None => total = Some(*agg),
                            }
                        }
                    }
                }
                total.map(|a| a.mean())
            }
        }
    }

    fn evaluate(&mut self, now: Duration, view: &WindowView) -> (Policy, Policy) {
        let mut enforce = self.limits.clone();
        let mut dry = Policy::default();
        let values: Vec<Option<f64>> = self
            .rules
            .iter()
            .map(|r| {
                self.metric_value(
                    &r.rule.condition.metric,
                    r.rule.condition.tag.as_deref(),
                    view,
                )
            })
            .collect();
        let shed = ShedLevels {
            busy: self
                .levels
                .iter()
                .map(|level| {
                    view.by_tag
                        .values()
                        .any(|(priority, c)| priority == level && c.offered() > 0)
                })
                .collect(),
        };
        for (r, value) in self.rules.iter_mut().zip(values) {
            let previous = std::mem::replace(&mut r.value, value);
            let cond = &r.rule.condition;
            let holds = value.is_some_and(|v| cond.op.holds(v, cond.threshold));
            let levels = matches!(r.rule.action, Action::Shed).then_some(&shed);
            // Gauges (in flight, custom metrics) show a level's effect at once; windowed
            // metrics (latency, rates) only once the window has turned over.
            let gauge = matches!(
                r.rule.condition.metric,
                Metric::InFlight | Metric::Custom(_)
            );
            let settle = if gauge { Duration::ZERO } else { self.window };
            let (before, shed_before) = (r.phase, r.shed_level);
            step(r, holds, previous, now, self.release_step, levels, settle);
            if (r.phase, r.shed_level) != (before, shed_before) {
                trace_transition(r, before, shed_before);
            }
            let contribution = contribution(r, &self.levels);
            let target = if r.dry { &mut dry } else { &mut enforce };
            *target = target.stricter(&contribution);
        }
        (enforce, dry)
    }
}

/// A `tracing` event for a rule that moved: `fired` (its action is in force), `releasing`
/// (a step of the gradual release, or a step back), `released` (back to idle), `shed` (a
/// `shed` rule moved a level) at INFO, with the value of the metric that moved it; `pending`
/// and `cooling` at DEBUG. Target `waitstate::rule`. (A fleet's rules run here too, so the
/// control plane logs its fleet rules the same way.)
#[cfg(feature = "tracing")]
fn trace_transition(r: &RuleState, before: Phase, shed_before: usize) {
    let value = r.value.unwrap_or(f64::NAN);
    let (rule, dry_run, shed_level) = (r.text.as_str(), r.dry, r.shed_level);
    match r.phase {
        Phase::Firing if before != Phase::Firing => {
            tracing::info!(target: "waitstate::rule", rule, value, dry_run, shed_level, "rule fired");
        }
        Phase::Releasing(step) => {
            tracing::info!(target: "waitstate::rule", rule, value, dry_run, step, shed_level, "rule releasing");
        }
        Phase::Idle if matches!(before, Phase::Cooling | Phase::Releasing(_)) => {
            tracing::info!(target: "waitstate::rule", rule, value, dry_run, "rule released");
        }
        Phase::Firing | Phase::Cooling if r.shed_level != shed_before => {
            tracing::info!(target: "waitstate::rule", rule, value, dry_run, shed_level, "rule shed one more level");
        }
        phase => {
            tracing::debug!(target: "waitstate::rule", rule, value, dry_run, ?phase, "rule phase");
        }
    }
}

#[cfg(not(feature = "tracing"))]
fn trace_transition(_: &RuleState, _: Phase, _: usize) {}

/// Count the requests of `tag` still in flight at `now` with the age they have reached at
/// least, so that a backend that stops answering reads as slow, not as "no data": of the
/// `in_flight` now, at most the number admitted since an earlier sample were admitted after
/// it, so at least the rest have been in flight since that sample. Each such request is
/// added once, at the oldest age it is known to have (a lower bound: a stalled backend's
/// latency grows with the stall, and a rule on it fires and stays fired). Healthy traffic
/// adds nothing: its in-flight requests are younger than the last tick.
fn add_in_flight_ages(
    tag: &str,
    last: &Compact,
    now: Duration,
    samples: &[(Duration, HashMap<&str, &Compact>)],
    into: &mut Histogram,
) {
    let mut counted = 0u64;
    // Oldest first: the bound grows as the samples get younger.
    for (at, tags) in samples {
        let admitted_then = tags
            .get(tag)
            .filter(|c| c.generation == last.generation)
            .map_or(0, |c| c.admitted);
        let since = last.admitted.saturating_sub(admitted_then);
        let older = last.in_flight.saturating_sub(since);
        if older > counted {
            let age = now
                .saturating_sub(*at)
                .as_micros()
                .min(u128::from(u64::MAX)) as u64;
            into.record_n_micros(age, older - counted);
            counted = older;
        }
    }
}

/// What `shed` needs to know to move between priority levels.
#[derive(Debug)]
struct ShedLevels {
    /// Per level (lowest first): whether it had any traffic in the window.
    busy: Vec<bool>,
}

impl ShedLevels {
    /// The highest level `shed` may reach: every priority but the top one shed.
    fn max(&self) -> usize {
        self.busy.len().saturating_sub(1)
    }

    /// One more level: the next level up that has traffic ("the lowest priority still
    /// admitted"); empty levels in between are passed over in the same step.
    fn up(&self, level: usize) -> usize {
        (level + 1..=self.max())
            .find(|k| self.busy[k - 1])
            .unwrap_or(level)
    }

    /// One level back, in reverse: the highest level below `level` that has traffic,
    /// which then ramps back up (the empty levels above it are readmitted with it). `None`
    /// when no level below has traffic: nothing is left to readmit.
    fn down(&self, level: usize) -> Option<usize> {
        (0..level).rev().find(|j| self.busy[*j])
    }
}

/// Whether the metric moved clearly (5%) towards clearing the condition since last tick.
fn improving(op: Op, value: Option<f64>, previous: Option<f64>) -> bool {
    match (value, previous) {
        (Some(v), Some(p)) => match op {
            Op::Gt | Op::Ge => v < p * 0.95,
            Op::Lt | Op::Le => v > p * 1.05,
        },
        _ => false,
    }
}

/// One tick of a rule's state machine. `shed` is set for the `shed` action; `settle` is how
/// long `shed` waits after moving up a level before it may move up again.
fn step(
    r: &mut RuleState,
    holds: bool,
    previous: Option<f64>,
    now: Duration,
    release_step: Duration,
    shed: Option<&ShedLevels>,
    settle: Duration,
) {
    let held = now.saturating_sub(r.since);
    let fire = |r: &mut RuleState| {
        r.phase = Phase::Firing;
        r.since = now;
        r.escalated = now;
        if let Some(levels) = shed {
            r.shed_level = levels.up(r.shed_level);
        }
    };
    // `shed` readmits one level at a time, each through the ramp (25%, 50%, 75%) before
    // it is fully open and the next level starts.
    let release_one = |r: &mut RuleState, levels: &ShedLevels| match r.phase {
        Phase::Releasing(k) if k < RELEASE_STEPS => r.phase = Phase::Releasing(k + 1),
        _ => match levels.down(r.shed_level) {
            Some(level) => {
                r.shed_level = level;
                r.phase = Phase::Releasing(1);
            }
            None => {
                r.shed_level = 0;
                r.phase = Phase::Idle;
            }
        },
    };
    match r.phase {
        Phase::Idle if holds => {
            r.since = now;
            if r.rule.condition.hold.is_zero() {
                fire(r);
            } else {
                r.phase = Phase::Pending;
            }
        }
        Phase::Idle => {}
        Phase::Pending if !holds => r.phase = Phase::Idle,
        Phase::Pending => {
            if held >= r.rule.condition.hold {
                fire(r);
            }
        }
        Phase::Firing if holds => {
            // Adaptive shedding: one more level each evaluation step while the condition
            // holds, unless the metric is already clearly recovering (the levels shed so
            // far are working), and, for a metric computed over the window, not before the
            // window has seen the last level's effect: a lagging metric must not shed the
            // next level for traffic that is already gone.
            if let Some(levels) = shed
                && !improving(r.rule.condition.op, r.value, previous)
                && now.saturating_sub(r.escalated) >= settle
            {
                r.shed_level = levels.up(r.shed_level);
                r.escalated = now;
            }
        }
        Phase::Firing => {
            r.phase = Phase::Cooling;
            r.since = now;
        }
        // The condition comes back while the action is being released: the share let
        // through is too much, not the whole of it. Step the ramp back (75% -> 50% -> 25%, or
        // 8r -> 4r -> 2r), at most once per window (the metric lags), and resume only after a
        // full cool-down; back at the first step, fire again. The same hysteresis for every
        // action: without it a `block` re-fired at 75% jumps to 0% and back, and a level
        // `shed` readmits during a long surge is shed whole, readmitted, shed again.
        Phase::Releasing(k) if holds && (k > 1 || now.saturating_sub(r.escalated) < settle) => {
            if now.saturating_sub(r.escalated) >= settle {
                r.phase = Phase::Releasing(k - 1);
                r.since = now;
                r.escalated = now;
            }
        }
        Phase::Cooling | Phase::Releasing(_) if holds => fire(r),
        Phase::Cooling => {
            if held >= r.cooldown {
                r.since = now;
                match shed {
                    Some(levels) => release_one(r, levels),
                    None => r.phase = Phase::Releasing(1),
                }
            }
        }
        Phase::Releasing(k) => {
            // `shed` moves its ramp at most once per window, as it escalates: a ramp that
            // outruns a windowed metric readmits more than the metric has judged. After a
            // step back (`escalated`), every ramp waits a full cool-down to resume.
            let step = match shed {
                Some(_) => release_step.max(settle),
                None => release_step,
            };
            let backed_off = now.saturating_sub(r.escalated) < r.cooldown;
            if held >= step && !backed_off {
                r.since = now;
                if let Some(levels) = shed {
                    release_one(r, levels);
                } else if k >= RELEASE_STEPS {
                    r.phase = Phase::Idle;
                } else {
                    r.phase = Phase::Releasing(k + 1);
                }
            }
        }
    }
}

/// What a rule in its current phase adds to the policy.
fn contribution(r: &RuleState, levels: &[i64]) -> Policy {
    let mut p = Policy::default();
    let release = match r.phase {
        Phase::Idle | Phase::Pending => return p,
        Phase::Firing | Phase::Cooling => None,
        Phase::Releasing(k) => Some(k),
    };
    let ramp = |k: u32| f64::from(k) / f64::from(RELEASE_STEPS + 1);
    match &r.rule.action {
        Action::Block { tag } => match release {
            None => {
                p.tag_max_weights.insert(tag.clone(), 0.0);
            }
            Some(k) => {
                p.tag_throttles.insert(tag.clone(), 100.0 * ramp(k));
            }
        },
        Action::Throttle { tag, percent } => {
            let share = match release {
                None => *percent,
                Some(k) => percent + (100.0 - percent) * ramp(k),
            };
            p.tag_throttles.insert(tag.clone(), share);
        }
        Action::Limit { tag, per_second } => {
            let factor = release.map_or(1.0, |k| f64::from(1u32 << k));
            p.tag_rate_limits.insert(tag.clone(), per_second * factor);
        }
        Action::LimitConcurrency { max } => {
            let factor = release.map_or(1, |k| 1u64 << k);
            p.concurrency_limit = Some(u64::from(*max) * factor);
        }
        Action::Kill => match release {
            None => p.kill_signal = true,
            Some(k) => p.global_throttle = Some(100.0 * ramp(k)),
        },
        Action::Shed => {
            if r.shed_level > 0 {
                p.priority_floor = levels.get(r.shed_level).copied();
            }
            // The level being readmitted (the one at the floor) ramps up.
            if let (Some(k), Some(level)) = (release, levels.get(r.shed_level)) {
                p.priority_throttles.insert(*level, 100.0 * ramp(k));
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Demand;

    #[test]
    fn limits_are_the_floor_of_every_policy_produced() {
        // The control plane's path: readings in, policy out, the fleet's `[limits]` in it.
        let mut config = Config::default();
        config.tags.insert("free".into(), 10);
        config.limits = crate::config::Limits::default()
            .concurrency(40)
            .rate("free", 200.0);
        config.rules.push(crate::RuleConfig::new(
            "when in_flight > 5 then limit free to 50/s",
        ));
        let mut reflex = Reflex::new(&config).unwrap();
        let (quiet, _) = reflex.observe(Duration::from_secs(1), Reading::default());
        assert_eq!(quiet.concurrency_limit, Some(40));
        assert_eq!(quiet.tag_rate_limits.get("free"), Some(&200.0));
        let mut busy = TagReading::default();
        busy.tag = "free".into();
        busy.counters.in_flight = 9;
        let reading = Reading {
            tags: vec![busy],
            ..Reading::default()
        };
        let (fired, _) = reflex.observe(Duration::from_secs(2), reading);
        assert_eq!(fired.tag_rate_limits.get("free"), Some(&50.0));
        assert_eq!(fired.concurrency_limit, Some(40));
    }

    #[test]
    fn a_reclaimed_tag_seen_again_counts_from_zero_in_the_window() {
        // `user` counts 50 good requests, goes quiet, is reclaimed, and comes back with 20
        // failures inside one window: the window sees those 20 (not 20 - 50 = nothing).
        let mut config = Config::default();
        config.window = Duration::from_secs(10);
        config
            .rules
            .push(crate::RuleConfig::new("when error_rate > 50% then kill"));
        let engine = Engine::new(&config).unwrap();
        let mut reflex = Reflex::new(&config).unwrap();
        let t0 = Duration::from_secs(1);
        for _ in 0..50 {
            let ticket = engine.admit(&Demand::new("user"), t0).unwrap();
            ticket.finish(Duration::from_millis(5), false);
        }
        reflex.tick(t0, &engine);
        let quiet = t0 + crate::RECLAIM_QUIET;
        let _ = engine.reclaim_quiet(t0, None);
        reflex.tick(quiet - Duration::from_secs(1), &engine);
        assert_eq!(engine.reclaim_quiet(quiet, None), 1);
        for _ in 0..20 {
            let ticket = engine.admit(&Demand::new("user"), quiet).unwrap();
            ticket.finish(Duration::from_millis(5), true);
        }
        let status = reflex.tick(quiet + Duration::from_secs(1), &engine);
        assert_eq!(status[0].phase, Phase::Firing, "{status:?}");
    }

    #[test]
    fn idle_tags_share_one_copy_across_the_window() {
        let config = Config::default();
        let engine = Engine::new(&config).unwrap();
        let mut reflex = Reflex::new(&config).unwrap();
        for i in 0..50 {
            let _ = engine.decide(&Demand::new(&format!("user-{i}")), Duration::ZERO);
        }
        for t in 1..=6 {
            let _ = engine.decide(&Demand::new("busy"), Duration::from_secs(t));
            reflex.tick(Duration::from_secs(t), &engine);
        }
        let (first, last) = (
            reflex.history.front().unwrap(),
            reflex.history.back().unwrap(),
        );
        let find =
            |s: &Sample, name: &str| s.tags.iter().find(|t| &*t.0 == name).unwrap().2.clone();
        assert!(
            Arc::ptr_eq(&find(first, "user-7"), &find(last, "user-7")),
            "idle: shared"
        );
        assert!(
            !Arc::ptr_eq(&find(first, "busy"), &find(last, "busy")),
            "active: its own copy"
        );
    }
}
