//! The pure engine: a tag table and a compiled policy behind one atomic pointer, and the
//! decision. It reads no clock: every call that needs time takes `now`, the time since an
//! origin of the caller's choosing (the runtime uses its start).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;

use crate::config::Config;
use crate::decision::{Decision, Quota, Reason, Rejection};
use crate::error::ConfigError;
use crate::limiter::{Gcra, PPM, percent_to_ppm, throttle_admits};
use crate::policy::Policy;
use crate::tags::{
    Aggregate, CustomSet, DEFAULT_TAG, Global, MAX_CUSTOM_METRICS, MAX_TAG_LEN, OVERFLOW_TAG, Tag,
    TagCounters, TagSlot,
};

/// What one request asks of the gate: its tag, its weight and, optionally, a cohort key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demand<'a> {
    /// The traffic class. Empty means [`DEFAULT_TAG`].
    pub tag: &'a str,
    /// The cost in units (1.0 by default). NaN, negative or infinite is `over_weight`.
    pub weight: f64,
    /// A stable hash of the user or API key: throttling then turns away the same cohorts
    /// each time.
    pub cohort: Option<u64>,
}

impl<'a> Demand<'a> {
    /// A demand of weight 1 for `tag`.
    pub fn new(tag: &'a str) -> Self {
        Self {
            tag,
            weight: 1.0,
            cohort: None,
        }
    }

    /// Set the weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Set the cohort key.
    pub fn cohort(mut self, cohort: u64) -> Self {
        self.cohort = Some(cohort);
        self
    }
}

/// Why [`Engine::report`] dropped a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// Not 1..63 chars of `[a-z0-9_]` starting with a letter, or a reserved name.
    InvalidName,
    /// The value is NaN or infinite.
    NotFinite,
    /// Already tracking the most custom metrics ([`MAX_CUSTOM_METRICS`]).
    TooManyMetrics,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidName => "invalid metric name: 1..63 chars of [a-z0-9_], starting with a letter, not reserved",
            Self::NotFinite => "metric value is not finite",
            Self::TooManyMetrics => "too many custom metrics",
        })
    }
}

impl std::error::Error for ReportError {}

/// The checks one tag's requests go through, compiled from a policy.
#[derive(Clone, Copy, Debug)]
struct Limits {
    kill: bool,
    global_max_weight: f64,
    max_weight: f64,
    shed: bool,
    throttle_ppm: u32,
    rate: Option<Gcra>,
    concurrency_cap: Option<u64>,
}

#[derive(Debug)]
struct Entry {
    slot: Arc<TagSlot>,
    enforce: Limits,
    /// Limits from dry-run rules: checked after enforcement passes, counted, not enforced.
    dry: Option<Limits>,
}

/// The immutable snapshot the hot path reads with one atomic load.
#[derive(Debug)]
struct Snapshot {
    tags: HashMap<Box<str>, Entry, RandomState>,
    overflow: Entry,
    /// The registry is at its cap: an unknown tag goes to `overflow` without a lock.
    full: bool,
    /// The metric name table for `report`.
    metrics: HashMap<Box<str>, usize, RandomState>,
    policy: Arc<Policy>,
    dry_policy: Arc<Policy>,
}

#[derive(Debug)]
struct Writer {
    slots: Vec<Arc<TagSlot>>,
    local: Policy,
    local_dry: Policy,
    remote: Option<Policy>,
    metrics: Vec<Box<str>>,
}

/// The engine: tags, policy, decisions and counters. Time is passed in.
///
/// `decide` and `admit` are lock-free and allocation-free in the steady state: one atomic
/// load of the snapshot, one hash lookup, a handful of relaxed atomics. A tag seen for the
/// first time takes a lock once to get its slot; past the cap it does not.
pub struct Engine {
    snapshot: ArcSwap<Snapshot>,
    writer: Mutex<Writer>,
    global: Arc<Global>,
    overflow: Arc<TagSlot>,
    untagged: CustomSet,
    priorities: HashMap<String, i64, RandomState>,
    default_priority: i64,
    /// The configuration's `[limits]`: every policy is merged with them.
    limits: Policy,
    tag_cap: usize,
    dry_run: bool,
    retry_after: Duration,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.snapshot.load();
        f.debug_struct("Engine")
            .field("tags", &snap.tags.len())
            .field("tag_cap", &self.tag_cap)
            .field("dry_run", &self.dry_run)
            .field("policy", &snap.policy)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for this configuration, with the open policy.
    ///
    /// # Errors
    /// What [`Config::validate`] finds.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut levels: BTreeSet<i64> = config.tags.values().copied().collect();
        levels.insert(config.default_priority);
        let levels: Vec<i64> = levels.into_iter().collect();
        let global = Arc::new(Global::new(&levels));
        let overflow = Arc::new(TagSlot::new(
            OVERFLOW_TAG,
            config.default_priority,
            global.clone(),
        ));
        let mut slots = Vec::with_capacity(config.tags.len() + 1);
        slots.push(Arc::new(TagSlot::new(
            DEFAULT_TAG,
            config.priority_of(DEFAULT_TAG),
            global.clone(),
        )));
        for (name, prio) in &config.tags {
            if name != DEFAULT_TAG {
                slots.push(Arc::new(TagSlot::new(name, *prio, global.clone())));
            }
        }
        let engine = Self {
            snapshot: ArcSwap::from_pointee(Snapshot::empty(&overflow)),
            writer: Mutex::new(Writer {
                slots,
                local: Policy::default(),
                local_dry: Policy::default(),
                remote: None,
                metrics: Vec::new(),
            }),
            global,
            overflow,
            untagged: CustomSet::default(),
            priorities: config.tags.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            default_priority: config.default_priority,
            limits: config.limits.to_policy(),
            tag_cap: config.tag_cap,
            dry_run: config.dry_run,
            retry_after: config.retry_after,
        };
        engine.rebuild(&mut engine.lock());
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock cannot leave the writer half-updated in a way that
        // matters (every update is a whole replacement), so a poisoned lock is used as is.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The distinct priorities, lowest first (configured tags and the default).
    pub fn priority_levels(&self) -> &[i64] {
        self.global.levels()
    }

    /// The priority of a tag.
    pub fn priority_of(&self, tag: &str) -> i64 {
        self.priorities
            .get(tag)
            .copied()
            .unwrap_or(self.default_priority)
    }

    /// Whether the engine is in dry-run mode (computes and counts, rejects nothing).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    // ---------------------------------------------------------------- hot path

    /// Decide for one request, without holding an in-flight slot.
    ///
    /// Counts the decision (admitted, or rejected by reason). `now` is the time since the
    /// caller's origin; it is used by rate limits only.
    pub fn decide(&self, demand: &Demand<'_>, now: Duration) -> Decision {
        self.decide_lazy(demand, || now)
    }

    /// [`Engine::decide`], reading the time only if a rate limit needs it.
    pub(crate) fn decide_lazy(
        &self,
        demand: &Demand<'_>,
        now: impl FnOnce() -> Duration,
    ) -> Decision {
        self.with_entry(demand.tag, |entry| {
            match self.check(entry, demand, now, false) {
                Ok(would_reject) => Decision::Allowed { would_reject },
                Err(rejection) => Decision::Rejected(rejection),
            }
        })
    }

    /// Decide, and when allowed hold an in-flight slot until the [`Ticket`] ends.
    ///
    /// # Errors
    /// The [`Rejection`] when the request is turned away.
    pub fn admit(&self, demand: &Demand<'_>, now: Duration) -> Result<Ticket, Rejection> {
        self.admit_lazy(demand, || now)
    }

    pub(crate) fn admit_lazy(
        &self,
        demand: &Demand<'_>,
        now: impl FnOnce() -> Duration,
    ) -> Result<Ticket, Rejection> {
        self.with_entry(demand.tag, |entry| {
            let would_reject = self.check(entry, demand, now, true)?;
            let slot = entry.slot.clone();
            slot.in_flight.fetch_add(1, Relaxed);
            Ok(Ticket {
                global: entry.enforce.concurrency_cap.is_some() && !self.dry_run,
                slot,
                would_reject,
                done: false,
            })
        })
    }

    /// Reject a request of `tag` for a reason decided outside the policy (the runtime's
    /// safe mode), counting it like any rejection.
    #[cfg(feature = "runtime")]
    pub(crate) fn reject_outside(
        &self,
        tag: &str,
        reason: Reason,
        retry_after: Duration,
    ) -> Rejection {
        self.with_entry(tag, |entry| {
            entry.slot.rejected[reason.index()].fetch_add(1, Relaxed);
            Rejection {
                reason,
                tag: Tag(entry.slot.clone()),
                retry_after: retry_after.max(Duration::from_millis(1)),
                quota: None,
            }
        })
    }

    #[inline]
    fn with_entry<R>(&self, tag: &str, f: impl FnOnce(&Entry) -> R) -> R {
        let tag = if tag.is_empty() { DEFAULT_TAG } else { tag };
        let snap = self.snapshot.load();
        if tag.len() > MAX_TAG_LEN {
            return f(&snap.overflow);
        }
        if let Some(entry) = snap.tags.get(tag) {
            return f(entry);
        }
        if snap.full {
            return f(&snap.overflow);
        }
        drop(snap);
        // First sight of a tag while the registry has room: the cold path.
        let snap = self.register(tag);
        let entry = snap.tags.get(tag).unwrap_or(&snap.overflow);
        f(entry)
    }

    /// Run the checks in order; `Ok(would_reject)` or the rejection (already counted).
    #[inline]
    fn check(
        &self,
        entry: &Entry,
        demand: &Demand<'_>,
        now: impl FnOnce() -> Duration,
        acquire: bool,
    ) -> Result<Option<Reason>, Rejection> {
        let slot = &entry.slot;
        // The clock is read at most once, and only when a rate limit needs it.
        let mut now = Some(now);
        let mut now_ns = 0u64;
        let mut clock = || {
            if let Some(f) = now.take() {
                now_ns = f().as_nanos().min(u128::from(u64::MAX)) as u64;
            }
            now_ns
        };

        let acquire = acquire && !self.dry_run;
        let enforced = check_limits(&entry.enforce, slot, demand, &mut clock, acquire, false);
        let mut would_reject = None;
        match enforced {
            Err((reason, wait, quota)) if !self.dry_run => {
                slot.rejected[reason.index()].fetch_add(1, Relaxed);
                return Err(Rejection {
                    reason,
                    tag: Tag(slot.clone()),
                    retry_after: wait
                        .unwrap_or(self.retry_after)
                        .max(Duration::from_millis(1)),
                    quota,
                });
            }
            Err((reason, ..)) => would_reject = Some(reason),
            Ok(()) => {
                if let Some(dry) = &entry.dry
                    && let Err((reason, ..)) =
                        check_limits(dry, slot, demand, &mut clock, false, true)
                {
                    would_reject = Some(reason);
                }
            }
        }
        if would_reject.is_some() {
            slot.would_reject.fetch_add(1, Relaxed);
        }
        slot.admitted.fetch_add(1, Relaxed);
        slot.admitted_weight_milli
            .fetch_add((demand.weight * 1000.0) as u64, Relaxed);
        Ok(would_reject)
    }

    // ---------------------------------------------------------------- metrics

    /// Feed a custom metric (queue depth, pool wait, ...) that rules can name, for one tag or
    /// for the whole service (`tag = None`).
    ///
    /// # Errors
    /// [`ReportError`] when the value was dropped: a bad name, a non-finite value, or too
    /// many distinct metrics.
    pub fn report(&self, metric: &str, value: f64, tag: Option<&str>) -> Result<(), ReportError> {
        if !value.is_finite() {
            return Err(ReportError::NotFinite);
        }
        let index = match self.snapshot.load().metrics.get(metric) {
            Some(i) => *i,
            None => self.register_metric(metric)?,
        };
        match tag {
            None => self.untagged.record(index, value),
            Some(tag) => self.with_entry(tag, |e| e.slot.custom.record(index, value)),
        }
        Ok(())
    }

    fn register_metric(&self, metric: &str) -> Result<usize, ReportError> {
        if !crate::names::is_valid_metric(metric) {
            return Err(ReportError::InvalidName);
        }
        let mut w = self.lock();
        if let Some(i) = w.metrics.iter().position(|m| &**m == metric) {
            return Ok(i);
        }
        if w.metrics.len() >= MAX_CUSTOM_METRICS {
            return Err(ReportError::TooManyMetrics);
        }
        w.metrics.push(metric.into());
        let i = w.metrics.len() - 1;
        self.rebuild(&mut w);
        Ok(i)
    }

    /// Take the custom metrics' window aggregates: `(tag or None, metric name, aggregate)`.
    /// Each call starts a new window.
    pub fn take_custom(&self, out: &mut Vec<(Option<Tag>, String, Aggregate)>) {
        let (slots, names) = {
            let w = self.lock();
            (w.slots.clone(), w.metrics.clone())
        };
        let mut buf = Vec::new();
        self.untagged.take(&mut buf);
        for (i, agg) in buf.drain(..) {
            out.push((None, names[i].to_string(), agg));
        }
        for slot in slots.iter().chain(std::iter::once(&self.overflow)) {
            slot.custom.take(&mut buf);
            for (i, agg) in buf.drain(..) {
                out.push((Some(Tag(slot.clone())), names[i].to_string(), agg));
            }
        }
    }

    /// Every tracked tag (the overflow tag last).
    pub fn tags(&self) -> Vec<Tag> {
        let w = self.lock();
        w.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .map(|s| Tag(s.clone()))
            .collect()
    }

    /// The cumulative counters of every tracked tag, into `out` (reusing its buffers).
    pub fn load_counters(&self, out: &mut Vec<(Tag, TagCounters)>) {
        let tags = self.tags();
        out.truncate(tags.len());
        for (i, tag) in tags.into_iter().enumerate() {
            if i == out.len() {
                out.push((tag.clone(), TagCounters::default()));
            }
            let (t, c) = &mut out[i];
            tag.0.load_into(c);
            *t = tag;
        }
    }

    /// The cumulative counters of one tag, if it is tracked.
    pub fn counters(&self, tag: &str) -> Option<TagCounters> {
        let w = self.lock();
        let slot = w
            .slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .find(|s| &*s.name == tag)?;
        let mut c = TagCounters::default();
        slot.load_into(&mut c);
        Some(c)
    }

    /// Requests in flight across every tag.
    pub fn in_flight(&self) -> u64 {
        let w = self.lock();
        w.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .map(|s| s.in_flight.load(Relaxed))
            .sum()
    }

    // ---------------------------------------------------------------- policy

    /// The effective policy: local and remote merged, the stricter wins.
    pub fn policy(&self) -> Arc<Policy> {
        self.snapshot.load().policy.clone()
    }

    /// The policy of the dry-run rules (watched, not enforced).
    pub fn dry_policy(&self) -> Arc<Policy> {
        self.snapshot.load().dry_policy.clone()
    }

    /// Install the local reflex policy (enforced) and the dry-run rules' policy.
    ///
    /// # Errors
    /// [`ConfigError::Policy`] when either fails [`Policy::validate`]; the last good policy
    /// stays.
    pub fn set_local_policy(&self, enforce: Policy, dry: Policy) -> Result<(), ConfigError> {
        enforce.validate()?;
        dry.validate()?;
        let mut w = self.lock();
        if w.local == enforce && w.local_dry == dry {
            return Ok(());
        }
        w.local = enforce;
        w.local_dry = dry;
        self.rebuild(&mut w);
        Ok(())
    }

    /// Install (or with `None`, drop) the remote policy from a control plane. It merges
    /// with the local one; the stricter wins.
    ///
    /// # Errors
    /// [`ConfigError::Policy`] when it fails [`Policy::validate`]; the last good policy
    /// stays.
    pub fn set_remote_policy(&self, remote: Option<Policy>) -> Result<(), ConfigError> {
        if let Some(p) = &remote {
            p.validate()?;
        }
        let mut w = self.lock();
        if w.remote == remote {
            return Ok(());
        }
        w.remote = remote;
        self.rebuild(&mut w);
        Ok(())
    }

    /// The cold path: give `tag` a slot (if there is room) and publish a new snapshot.
    fn register(&self, tag: &str) -> arc_swap::Guard<Arc<Snapshot>> {
        let mut w = self.lock();
        let snap = self.snapshot.load();
        if snap.tags.contains_key(tag) || snap.full {
            return snap;
        }
        drop(snap);
        w.slots.push(Arc::new(TagSlot::new(
            tag,
            self.priority_of(tag),
            self.global.clone(),
        )));
        self.rebuild(&mut w);
        self.snapshot.load()
    }

    /// Compile the writer's state into a new snapshot and publish it.
    fn rebuild(&self, w: &mut Writer) {
        let local = w.local.stricter(&self.limits);
        let policy = match &w.remote {
            Some(r) => local.stricter(r),
            None => local,
        };
        let dry = w.local_dry.clone();
        // Tags a policy names get a slot while there is room (they are tracked from now on).
        let named: Vec<String> = policy
            .named_tags()
            .chain(dry.named_tags())
            .filter(|t| t.len() <= MAX_TAG_LEN && !t.is_empty())
            .map(str::to_owned)
            .collect();
        for name in &named {
            if w.slots.len() + 1 < self.tag_cap && !w.slots.iter().any(|s| &*s.name == name) {
                w.slots.push(Arc::new(TagSlot::new(
                    name,
                    self.priority_of(name),
                    self.global.clone(),
                )));
            }
        }
        let dry_active = !dry.is_open();
        let entry = |slot: &Arc<TagSlot>, name: &str| Entry {
            slot: slot.clone(),
            enforce: self.compile(&policy, name, slot.priority),
            dry: dry_active.then(|| self.compile(&dry.stricter(&policy), name, slot.priority)),
        };
        let mut tags: HashMap<Box<str>, Entry, RandomState> =
            HashMap::with_capacity_and_hasher(w.slots.len() + named.len(), RandomState::default());
        for slot in &w.slots {
            tags.insert(slot.name.clone(), entry(slot, &slot.name));
        }
        // Named tags past the cap keep their own limits, counted under the overflow slot.
        for name in named {
            if !tags.contains_key(name.as_str()) {
                let e = Entry {
                    slot: self.overflow.clone(),
                    ..entry(&self.overflow, &name)
                };
                tags.insert(name.into_boxed_str(), e);
            }
        }
        let metrics = w
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), i))
            .collect();
        let snapshot = Snapshot {
            full: w.slots.len() + 1 >= self.tag_cap,
            overflow: entry(&self.overflow, OVERFLOW_TAG),
            tags,
            metrics,
            policy: Arc::new(policy),
            dry_policy: Arc::new(dry),
        };
        self.snapshot.store(Arc::new(snapshot));
    }

    fn compile(&self, p: &Policy, name: &str, priority: i64) -> Limits {
        let tag_throttle = p.tag_throttles.get(name).copied().unwrap_or(100.0);
        let level_throttle = p
            .priority_throttles
            .get(&priority)
            .copied()
            .unwrap_or(100.0);
        let throttle = tag_throttle
            .min(level_throttle)
            .min(p.global_throttle.unwrap_or(100.0));
        Limits {
            kill: p.kill_signal,
            global_max_weight: p.global_max_weight,
            max_weight: p
                .tag_max_weights
                .get(name)
                .copied()
                .unwrap_or(f64::INFINITY),
            shed: p.priority_floor.is_some_and(|floor| priority < floor),
            throttle_ppm: percent_to_ppm(throttle),
            rate: p.tag_rate_limits.get(name).map(|r| Gcra::new(*r)),
            concurrency_cap: p
                .concurrency_limit
                .map(|limit| self.concurrency_cap(limit, priority)),
        }
    }

    /// Under a concurrency limit, the highest priority may fill every slot and every lower
    /// level a third of them. A request counts the requests in flight at its own level and
    /// above against its level's cap (see `check_limits`), so with equal caps the lower level
    /// still yields first (free counts pro's requests, pro does not count free's), and no
    /// lower level takes the top level's headroom. A third: while the top level is quiet,
    /// lower levels keep the queue in front of the backend at a third of the limit, which is
    /// the wait the top level meets when it arrives, and the top level keeps two thirds of
    /// the limit as headroom for its own bursts (measured in `scenarios/`: at a half, a
    /// fleet sharing one backend had to choose between enterprise's headroom and its
    /// latency).
    ///
    /// So the limit binds the top level exactly; lower levels' requests admitted while the
    /// levels above were quiet may, while they finish, add to it (at most a third of the
    /// limit each). This is the trade the partitioned limiters make (Netflix's
    /// concurrency-limits admits a partition under its guaranteed share past the total): a
    /// surge of free requests must not turn enterprise away.
    fn concurrency_cap(&self, limit: u64, priority: i64) -> u64 {
        let top = self.global.levels().last().is_none_or(|l| priority >= *l);
        if top { limit } else { (limit / 3).max(1) }
    }
}

impl Snapshot {
    fn empty(overflow: &Arc<TagSlot>) -> Self {
        let open = Limits {
            kill: false,
            global_max_weight: f64::INFINITY,
            max_weight: f64::INFINITY,
            shed: false,
            throttle_ppm: PPM as u32,
            rate: None,
            concurrency_cap: None,
        };
        Self {
            tags: HashMap::default(),
            overflow: Entry {
                slot: overflow.clone(),
                enforce: open,
                dry: None,
            },
            full: true,
            metrics: HashMap::default(),
            policy: Arc::new(Policy::default()),
            dry_policy: Arc::new(Policy::default()),
        }
    }
}

type Failed = (Reason, Option<Duration>, Option<Quota>);

/// The decision order: the v1 checks first (invalid weight, kill_signal, global_block,
/// tag_blocked, over_weight), then ours (priority_shed, throttled, rate_limited,
/// concurrency_limited).
#[inline]
fn check_limits(
    l: &Limits,
    slot: &TagSlot,
    d: &Demand<'_>,
    now_ns: &mut impl FnMut() -> u64,
    acquire: bool,
    dry: bool,
) -> Result<(), Failed> {
    let w = d.weight;
    // v1 checks NaN and negative weights before anything else. Ours also refuses +inf: an
    // infinite cost cannot be charged against any budget (v1 lets it through when no
    // limit is finite).
    if w.is_nan() || w < 0.0 || w == f64::INFINITY {
        return Err((Reason::OverWeight, None, None));
    }
    if l.kill {
        return Err((Reason::KillSignal, None, None));
    }
    if l.global_max_weight <= 0.0 {
        return Err((Reason::GlobalBlock, None, None));
    }
    if w > l.max_weight {
        return Err((Reason::TagBlocked, None, None));
    }
    if w > l.global_max_weight {
        return Err((Reason::OverWeight, None, None));
    }
    if l.shed {
        return Err((Reason::PriorityShed, None, None));
    }
    if l.throttle_ppm < PPM as u32 {
        let credit = if dry {
            &slot.dry_throttle_credit
        } else {
            &slot.throttle_credit
        };
        if !throttle_admits(credit, l.throttle_ppm, d.cohort) {
            return Err((Reason::Throttled, None, None));
        }
    }
    if let Some(gcra) = &l.rate {
        let tat = if dry { &slot.dry_tat } else { &slot.tat };
        if let Err(wait) = gcra.try_acquire(tat, now_ns(), w) {
            let quota = Quota {
                per_second: gcra.per_second,
                burst: gcra.burst(),
            };
            return Err((Reason::RateLimited, Some(wait), Some(quota)));
        }
    }
    if let Some(cap) = l.concurrency_cap {
        // A request counts the requests in flight at its own priority level and above, against
        // its level's cap: a lower level yields to the work above it, and is never counted
        // against a higher one (enterprise is not turned away because free holds slots;
        // free is, because enterprise does). The top level's cap is the limit itself.
        let levels = &slot.global.in_flight;
        let own = &levels[slot.level].0;
        let above = || -> u64 {
            levels[slot.level + 1..]
                .iter()
                .map(|c| c.0.load(Relaxed))
                .sum()
        };
        if acquire {
            if own.fetch_add(1, Relaxed) + above() >= cap {
                own.fetch_sub(1, Relaxed);
                return Err((Reason::ConcurrencyLimited, None, None));
            }
        } else if own.load(Relaxed) + above() >= cap {
            return Err((Reason::ConcurrencyLimited, None, None));
        }
    }
    Ok(())
}

/// An admitted request's hold on its in-flight slot (the pure core's RAII guard).
///
/// [`Ticket::finish`] records the latency and outcome; dropping it without finishing only
/// releases the slot. The runtime's `Permit` wraps it and measures the latency itself.
#[must_use = "dropping the ticket releases the in-flight slot at once"]
pub struct Ticket {
    slot: Arc<TagSlot>,
    global: bool,
    would_reject: Option<Reason>,
    done: bool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("tag", &&*self.slot.name)
            .field("would_reject", &self.would_reject)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// The tag the request counts under.
    pub fn tag(&self) -> Tag {
        Tag(self.slot.clone())
    }

    /// The tag's name.
    pub fn tag_name(&self) -> &str {
        &self.slot.name
    }

    /// In dry run: the reason enforcement would have rejected this request.
    pub fn would_reject(&self) -> Option<Reason> {
        self.would_reject
    }

    /// End the request: record its latency and whether it failed, release the slot.
    pub fn finish(mut self, latency: Duration, error: bool) {
        self.finish_in_place(latency, error);
    }

    /// [`Ticket::finish`] without consuming the ticket (for a guard's `Drop`): records and
    /// releases once; later calls, and the drop, do nothing.
    pub(crate) fn finish_in_place(&mut self, latency: Duration, error: bool) {
        if !self.done {
            self.slot
                .record_completion(latency.as_micros().min(u128::from(u64::MAX)) as u64, error);
            self.release();
        }
    }

    fn release(&mut self) {
        if !self.done {
            self.done = true;
            self.slot.in_flight.fetch_sub(1, Relaxed);
            if self.global {
                self.slot.global.in_flight[self.slot.level]
                    .0
                    .fetch_sub(1, Relaxed);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(toml: &str) -> Engine {
        Engine::new(&Config::from_toml_str(toml).unwrap()).unwrap()
    }

    fn tiers() -> Engine {
        engine("[tags]\nenterprise = 100\npro = 50\nfree = 10\n")
    }

    const T0: Duration = Duration::ZERO;

    fn reason(e: &Engine, tag: &str, weight: f64) -> Option<Reason> {
        e.decide(&Demand::new(tag).weight(weight), T0).reason()
    }

    #[test]
    fn open_policy_allows_and_counts() {
        let e = tiers();
        for _ in 0..3 {
            assert!(e.decide(&Demand::new("pro"), T0).is_allowed());
        }
        assert_eq!(e.counters("pro").unwrap().admitted, 3);
        assert_eq!(e.counters("free").unwrap().admitted, 0);
    }

    #[test]
    fn v1_order_kill_then_global_then_tag_then_weight() {
        let e = tiers();
        let mut p = Policy::default();
        p.kill_signal = true;
        p.global_max_weight = 0.0;
        p.tag_max_weights.insert("free".into(), 0.0);
        e.set_remote_policy(Some(p.clone())).unwrap();
        assert_eq!(reason(&e, "free", 1.0), Some(Reason::KillSignal));
        p.kill_signal = false;
        e.set_remote_policy(Some(p.clone())).unwrap();
        assert_eq!(reason(&e, "free", 1.0), Some(Reason::GlobalBlock));
        p.global_max_weight = 10.0;
        e.set_remote_policy(Some(p.clone())).unwrap();
        assert_eq!(reason(&e, "free", 1.0), Some(Reason::TagBlocked));
        assert_eq!(reason(&e, "pro", 11.0), Some(Reason::OverWeight));
        assert_eq!(reason(&e, "pro", 10.0), None);
        // Invalid weights come first, as in v1.
        p.kill_signal = true;
        e.set_remote_policy(Some(p)).unwrap();
        assert_eq!(reason(&e, "pro", f64::NAN), Some(Reason::OverWeight));
        assert_eq!(reason(&e, "pro", -1.0), Some(Reason::OverWeight));
    }

    #[test]
    fn bad_weights_have_a_defined_answer() {
        let e = tiers();
        for w in [f64::NAN, -1.0, f64::NEG_INFINITY, f64::INFINITY, -0.000_1] {
            let d = e.decide(&Demand::new("pro").weight(w), T0);
            assert_eq!(d.reason(), Some(Reason::OverWeight), "{w}");
        }
        assert!(e.decide(&Demand::new("pro").weight(0.0), T0).is_allowed());
        assert!(
            e.decide(&Demand::new("pro").weight(f64::MAX), T0)
                .is_allowed()
        );
    }

    #[test]
    fn rejection_carries_tag_priority_and_retry_after() {
        let e = tiers();
        let mut p = Policy::default();
        p.tag_max_weights.insert("free".into(), 0.0);
        e.set_remote_policy(Some(p)).unwrap();
        let Decision::Rejected(r) = e.decide(&Demand::new("free"), T0) else {
            panic!("free must be blocked")
        };
        assert_eq!(r.reason(), Reason::TagBlocked);
        assert_eq!(r.tag(), "free");
        assert_eq!(r.priority(), 10);
        assert_eq!(r.retry_after(), Duration::from_secs(1));
        assert_eq!(r.retry_after_secs(), 1);
        assert_eq!(
            e.counters("free").unwrap().rejected_for(Reason::TagBlocked),
            1
        );
    }

    #[test]
    fn empty_and_oversized_tags() {
        let e = tiers();
        assert!(e.decide(&Demand::new(""), T0).is_allowed());
        assert_eq!(e.counters(DEFAULT_TAG).unwrap().admitted, 1);
        let huge = "x".repeat(10 * 1024);
        assert!(e.decide(&Demand::new(&huge), T0).is_allowed());
        assert_eq!(e.counters(OVERFLOW_TAG).unwrap().admitted, 1);
        assert!(e.counters(&huge).is_none());
    }

    #[test]
    fn a_flood_of_tags_stays_bounded() {
        let e = engine("tag_cap = 16\n[tags]\nfree = 10\n");
        for i in 0..1_000_000u32 {
            let tag = format!("user-{i}");
            assert!(e.decide(&Demand::new(&tag), T0).is_allowed());
        }
        let tags = e.tags();
        // The cap counts every slot: `__default__`, `free`, 13 users and `__overflow__`.
        assert_eq!(tags.len(), 16);
        assert_eq!(e.counters(OVERFLOW_TAG).unwrap().admitted, 1_000_000 - 13);
        let total: u64 = tags
            .iter()
            .map(|t| e.counters(t.as_str()).unwrap().admitted)
            .sum();
        assert_eq!(total, 1_000_000);
    }

    #[test]
    fn policy_named_tags_past_the_cap_keep_their_limits() {
        let e = engine("tag_cap = 4\n[tags]\nfree = 10\n");
        // Fill the registry.
        for t in ["a", "b", "c", "d"] {
            let _ = e.decide(&Demand::new(t), T0);
        }
        let mut p = Policy::default();
        p.tag_max_weights.insert("late".into(), 0.0);
        e.set_remote_policy(Some(p)).unwrap();
        assert_eq!(reason(&e, "late", 1.0), Some(Reason::TagBlocked));
        assert_eq!(reason(&e, "other", 1.0), None);
        assert_eq!(e.counters(OVERFLOW_TAG).unwrap().rejected_total(), 1);
    }

    #[test]
    fn throttle_is_deterministic_per_tag_and_consistent_per_cohort() {
        let e = tiers();
        let mut p = Policy::default();
        p.tag_throttles.insert("pro".into(), 50.0);
        e.set_remote_policy(Some(p)).unwrap();
        let admitted = (0..1000)
            .filter(|_| reason(&e, "pro", 1.0).is_none())
            .count();
        assert_eq!(admitted, 500);
        let run = |e: &Engine| -> Vec<bool> {
            (0..200u64)
                .map(|k| e.decide(&Demand::new("pro").cohort(k), T0).is_allowed())
                .collect()
        };
        assert_eq!(run(&e), run(&e));
        assert!(reason(&e, "enterprise", 1.0).is_none());
    }

    #[test]
    fn rate_limit_spends_weight_and_says_when() {
        let e = tiers();
        let mut p = Policy::default();
        p.tag_rate_limits.insert("free".into(), 10.0);
        e.set_remote_policy(Some(p)).unwrap();
        let d = Demand::new("free").weight(4.0);
        assert!(e.decide(&d, T0).is_allowed());
        assert!(e.decide(&d, T0).is_allowed());
        let Decision::Rejected(r) = e.decide(&d, T0) else {
            panic!("budget of 10 spent")
        };
        assert_eq!(r.reason(), Reason::RateLimited);
        assert_eq!(r.retry_after(), Duration::from_millis(200));
        assert_eq!(r.quota().unwrap().per_second, 10.0);
        assert!(e.decide(&d, Duration::from_millis(200)).is_allowed());
    }

    #[test]
    fn priority_floor_sheds_below_it() {
        let e = tiers();
        let mut p = Policy::default();
        p.priority_floor = Some(50);
        e.set_remote_policy(Some(p)).unwrap();
        assert_eq!(reason(&e, "free", 1.0), Some(Reason::PriorityShed));
        assert_eq!(reason(&e, "unknown", 1.0), Some(Reason::PriorityShed));
        assert_eq!(reason(&e, "pro", 1.0), None);
        assert_eq!(reason(&e, "enterprise", 1.0), None);
    }

    #[test]
    fn concurrency_limit_turns_lower_priorities_away_first() {
        let e = tiers();
        let mut p = Policy::default();
        p.concurrency_limit = Some(12);
        e.set_remote_policy(Some(p)).unwrap();
        // Levels 0, 10, 50, 100: every level below the top may use 12 / 3 = 4.
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(e.admit(&Demand::new("free"), T0).unwrap());
        }
        let r = e.admit(&Demand::new("free"), T0).unwrap_err();
        assert_eq!(r.reason(), Reason::ConcurrencyLimited);
        // Free's four do not count against enterprise: it may still fill its whole cap.
        for _ in 0..12 {
            held.push(e.admit(&Demand::new("enterprise"), T0).unwrap());
        }
        assert_eq!(
            e.admit(&Demand::new("enterprise"), T0)
                .unwrap_err()
                .reason(),
            Reason::ConcurrencyLimited
        );
        // Enterprise's twelve count against free: with the four free gone, free stays out.
        held.drain(..4);
        assert_eq!(
            e.admit(&Demand::new("free"), T0).unwrap_err().reason(),
            Reason::ConcurrencyLimited
        );
        // Pro counts enterprise too, not free: with 2 enterprise and 1 free in flight, two
        // pro fit, and free (which counts them all) no longer does.
        held.drain(..10);
        held.push(e.admit(&Demand::new("free"), T0).unwrap());
        held.push(e.admit(&Demand::new("pro"), T0).unwrap());
        held.push(e.admit(&Demand::new("pro"), T0).unwrap());
        assert_eq!(e.global.total(), 5);
        assert_eq!(
            e.admit(&Demand::new("free"), T0).unwrap_err().reason(),
            Reason::ConcurrencyLimited
        );
        assert_eq!(
            e.admit(&Demand::new("pro"), T0).unwrap_err().reason(),
            Reason::ConcurrencyLimited
        );
        held.pop();
        assert!(e.admit(&Demand::new("enterprise"), T0).is_ok());
        drop(held);
        assert_eq!(e.in_flight(), 0);
        assert_eq!(e.global.total(), 0);
    }

    #[test]
    fn limits_hold_from_the_start_and_no_policy_loosens_them() {
        let e = engine(
            "[tags]\nfree = 10\nenterprise = 100\n[limits]\nconcurrency = 2\nrate = { free = 1 }\n",
        );
        // No tick has run: the limits are already the policy.
        assert_eq!(e.policy().concurrency_limit, Some(2));
        assert!(e.decide(&Demand::new("free"), T0).is_allowed());
        assert_eq!(reason(&e, "free", 1.0), Some(Reason::RateLimited));
        // A looser local or remote policy does not lift them; a stricter one wins.
        let mut loose = Policy::default();
        loose.concurrency_limit = Some(100);
        e.set_local_policy(loose.clone(), Policy::default())
            .unwrap();
        e.set_remote_policy(Some(loose)).unwrap();
        let held = [
            e.admit(&Demand::new("enterprise"), T0).unwrap(),
            e.admit(&Demand::new("enterprise"), T0).unwrap(),
        ];
        assert_eq!(
            e.admit(&Demand::new("enterprise"), T0)
                .unwrap_err()
                .reason(),
            Reason::ConcurrencyLimited
        );
        drop(held);
        let mut strict = Policy::default();
        strict.concurrency_limit = Some(1);
        e.set_remote_policy(Some(strict)).unwrap();
        assert_eq!(e.policy().concurrency_limit, Some(1));
        assert_eq!(e.policy().tag_rate_limits.get("free"), Some(&1.0));
    }

    proptest::proptest! {
        /// The per-level counters of the concurrency cap follow every admission and every
        /// release, whatever the order, the tags and the policy changes in between.
        #[test]
        fn level_counters_follow_every_ticket(
            ops in proptest::collection::vec((0usize..5, 0u8..4), 1..300),
        ) {
            let e = tiers();
            let tags = ["enterprise", "pro", "free", "anonymous", ""];
            let mut held = Vec::new();
            for (tag, op) in ops {
                match op {
                    0 if !held.is_empty() => drop(held.remove(tag % held.len())),
                    1 if !held.is_empty() => {
                        let t: Ticket = held.swap_remove(0);
                        t.finish(Duration::from_millis(1), false);
                    }
                    2 => {
                        // The limit comes and goes: a ticket taken without it holds no
                        // level slot, one taken with it holds one.
                        let mut p = Policy::default();
                        p.concurrency_limit = (tag % 2 == 0).then_some(6);
                        e.set_remote_policy(Some(p)).unwrap();
                    }
                    _ => {
                        if let Ok(t) = e.admit(&Demand::new(tags[tag]), T0) {
                            held.push(t);
                        }
                    }
                }
                let counted = held.iter().filter(|t| t.global).count() as u64;
                proptest::prop_assert_eq!(e.global.total(), counted);
            }
            drop(held);
            proptest::prop_assert_eq!(e.global.total(), 0);
        }
    }

    #[test]
    fn tickets_release_exactly_once() {
        let e = tiers();
        let a = e.admit(&Demand::new("pro"), T0).unwrap();
        let b = e.admit(&Demand::new("pro"), T0).unwrap();
        assert_eq!(e.in_flight(), 2);
        a.finish(Duration::from_millis(30), true);
        drop(b);
        let c = e.counters("pro").unwrap();
        assert_eq!((c.in_flight, c.completed, c.errors), (0, 1, 1));
        assert_eq!(c.latency.count(), 1);
    }

    #[test]
    fn dry_run_mode_rejects_nothing_and_counts_what_it_would() {
        let e = engine("dry_run = true\n[tags]\nfree = 10\n");
        let mut p = Policy::default();
        p.tag_max_weights.insert("free".into(), 0.0);
        p.concurrency_limit = Some(1);
        e.set_remote_policy(Some(p)).unwrap();
        let d = e.decide(&Demand::new("free"), T0);
        assert!(matches!(
            d,
            Decision::Allowed {
                would_reject: Some(Reason::TagBlocked)
            }
        ));
        let t = e.admit(&Demand::new("free"), T0).unwrap();
        assert_eq!(t.would_reject(), Some(Reason::TagBlocked));
        let c = e.counters("free").unwrap();
        assert_eq!((c.admitted, c.would_reject, c.rejected_total()), (2, 2, 0));
        drop(t);
        assert_eq!(e.global.total(), 0);
    }

    #[test]
    fn dry_rules_are_watched_not_enforced() {
        let e = tiers();
        let mut dry = Policy::default();
        dry.tag_max_weights.insert("free".into(), 0.0);
        e.set_local_policy(Policy::default(), dry).unwrap();
        let d = e.decide(&Demand::new("free"), T0);
        assert!(matches!(
            d,
            Decision::Allowed {
                would_reject: Some(Reason::TagBlocked)
            }
        ));
        assert!(matches!(
            e.decide(&Demand::new("pro"), T0),
            Decision::Allowed { would_reject: None }
        ));
    }

    #[test]
    fn local_and_remote_merge_stricter_wins_and_bad_remote_is_refused() {
        let e = tiers();
        let mut local = Policy::default();
        local.tag_throttles.insert("pro".into(), 50.0);
        e.set_local_policy(local, Policy::default()).unwrap();
        let mut remote = Policy::default();
        remote.tag_max_weights.insert("free".into(), 0.0);
        e.set_remote_policy(Some(remote)).unwrap();
        assert_eq!(reason(&e, "free", 1.0), Some(Reason::TagBlocked));
        assert_eq!(e.policy().tag_throttles["pro"], 50.0);
        let mut bad = Policy::default();
        bad.tag_rate_limits.insert("free".into(), f64::NAN);
        assert!(e.set_remote_policy(Some(bad)).is_err());
        assert_eq!(
            reason(&e, "free", 1.0),
            Some(Reason::TagBlocked),
            "last good stays"
        );
        e.set_remote_policy(None).unwrap();
        assert_eq!(reason(&e, "free", 1.0), None);
    }

    #[test]
    fn custom_metrics_are_validated_bounded_and_windowed() {
        let e = tiers();
        assert_eq!(e.report("Queue", 1.0, None), Err(ReportError::InvalidName));
        assert_eq!(
            e.report("latency", 1.0, None),
            Err(ReportError::InvalidName)
        );
        assert_eq!(
            e.report("queue", f64::NAN, None),
            Err(ReportError::NotFinite)
        );
        e.report("queue", 3.0, Some("free")).unwrap();
        e.report("queue", 5.0, Some("free")).unwrap();
        e.report("queue", 7.0, None).unwrap();
        for i in 1..MAX_CUSTOM_METRICS {
            e.report(&format!("m{i}"), 1.0, None).unwrap();
        }
        assert_eq!(
            e.report("one_too_many", 1.0, None),
            Err(ReportError::TooManyMetrics)
        );
        let mut out = Vec::new();
        e.take_custom(&mut out);
        let free = out
            .iter()
            .find(|(t, n, _)| t.as_ref().is_some_and(|t| t.as_str() == "free") && n == "queue")
            .unwrap();
        assert_eq!(
            free.2,
            Aggregate {
                min: 3.0,
                max: 5.0,
                sum: 8.0,
                count: 2
            }
        );
        out.clear();
        e.take_custom(&mut out);
        assert!(out.is_empty(), "a take starts a new window");
    }
}
