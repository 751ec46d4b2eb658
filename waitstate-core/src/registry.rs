//! The tag registry: one slot per tag, created at configuration or first sight, bounded by
//! the registry's cap. Slots of undeclared tags that go quiet are reclaimed
//! ([`Engine::reclaim_quiet`](crate::Engine::reclaim_quiet)); a tag seen again later gets a
//! new slot, told apart from the old one by its generation.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use crate::admission::{Pool, PoolSettings};
use crate::decision::Reason;
use crate::histogram::{AtomicHistogram, Histogram};
use crate::stripe::{Striped, gauge_sum};

pub use crate::names::{DEFAULT_TAG, MAX_TAG_LEN, OVERFLOW_TAG};
/// How many custom metric names the engine tracks; reports past it are dropped and counted.
pub const MAX_CUSTOM_METRICS: usize = 32;

/// Checks a tag name given in configuration or in a policy ([`crate::names::tag_problem`]).
pub(crate) fn check_tag_name(tag: &str) -> Result<(), String> {
    match crate::names::tag_problem(tag) {
        None => Ok(()),
        Some(why) => Err(why.into_owned()),
    }
}

/// Shared by every slot of one engine: the priority levels and the admission pool every
/// admitted request holds a slot of.
#[derive(Debug)]
pub(crate) struct Global {
    /// The distinct priorities, lowest first.
    levels: Box<[i64]>,
    /// One pool of slots for the whole engine (adaptive admission).
    pub(crate) pool: Pool,
    /// The next slot's generation.
    generations: AtomicU64,
}

impl Global {
    /// `levels`: the distinct priorities, lowest first (never empty: the default priority is
    /// always one).
    pub(crate) fn new(levels: &[i64], admission: PoolSettings) -> Self {
        Self {
            levels: levels.into(),
            pool: Pool::new(levels.len(), admission),
            generations: AtomicU64::new(0),
        }
    }

    /// The distinct priorities, lowest first.
    pub(crate) fn levels(&self) -> &[i64] {
        &self.levels
    }

    /// The index of `priority` among the levels (a priority between two levels counts at the
    /// lower one; one below every level at the lowest).
    pub(crate) fn level_of(&self, priority: i64) -> usize {
        self.levels
            .iter()
            .filter(|l| **l <= priority)
            .count()
            .saturating_sub(1)
    }
}

/// One custom metric's window aggregate, lock-free (`f64` bits in atomics).
#[derive(Debug)]
pub(crate) struct CustomAcc {
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for CustomAcc {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            min: AtomicU64::new(f64::INFINITY.to_bits()),
            max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
        }
    }
}

fn update_f64(cell: &AtomicU64, f: impl Fn(f64) -> f64) {
    // A CAS loop; `fetch_update` retries on contention. It never fails because the
    // closure always returns Some.
    let _ = cell.fetch_update(Relaxed, Relaxed, |bits| {
        Some(f(f64::from_bits(bits)).to_bits())
    });
}

impl CustomAcc {
    pub(crate) fn record(&self, v: f64) {
        update_f64(&self.sum, |s| s + v);
        update_f64(&self.min, |m| m.min(v));
        update_f64(&self.max, |m| m.max(v));
        self.count.fetch_add(1, Relaxed);
    }

    /// Take the window's aggregate and start a new one.
    pub(crate) fn take(&self) -> Option<Aggregate> {
        let count = self.count.swap(0, Relaxed);
        let sum = f64::from_bits(self.sum.swap(0f64.to_bits(), Relaxed));
        let min = f64::from_bits(self.min.swap(f64::INFINITY.to_bits(), Relaxed));
        let max = f64::from_bits(self.max.swap(f64::NEG_INFINITY.to_bits(), Relaxed));
        (count > 0).then_some(Aggregate {
            min,
            max,
            sum,
            count,
        })
    }
}

/// A custom metric over a window: `{min, max, sum, count}` as the v1 pulse sends it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Aggregate {
    /// Smallest value reported.
    pub min: f64,
    /// Largest value reported.
    pub max: f64,
    /// Sum of the values.
    pub sum: f64,
    /// How many values.
    pub count: u64,
}

impl Aggregate {
    /// Fold another window in.
    pub fn merge(&mut self, o: &Aggregate) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count = self.count.saturating_add(o.count);
    }

    /// The mean value (what a rule compares).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The set of custom metric accumulators, allocated on first use.
#[derive(Debug, Default)]
pub(crate) struct CustomSet(OnceLock<Box<[CustomAcc]>>);

impl CustomSet {
    pub(crate) fn record(&self, index: usize, v: f64) {
        let accs = self.0.get_or_init(|| {
            (0..MAX_CUSTOM_METRICS)
                .map(|_| CustomAcc::default())
                .collect()
        });
        if let Some(acc) = accs.get(index) {
            acc.record(v);
        }
    }

    /// Take every metric's window aggregate, by metric index.
    pub(crate) fn take(&self, out: &mut Vec<(usize, Aggregate)>) {
        if let Some(accs) = self.0.get() {
            out.extend(
                accs.iter()
                    .enumerate()
                    .filter_map(|(i, a)| a.take().map(|g| (i, g))),
            );
        }
    }
}

/// All state of one tag. Aligned so that two slots never share a cache line: threads
/// serving different tags do not contend.
///
/// The alignment also puts the `Arc`'s reference counts (which every admitted request's
/// ticket moves) on a line of their own, away from the fields every request reads.
#[repr(align(128))]
pub(crate) struct TagSlot {
    pub(crate) name: Box<str>,
    /// Tells this slot from an earlier one of the same name that was reclaimed: cumulative
    /// counters are compared only within one generation.
    pub(crate) generation: u64,
    pub(crate) priority: i64,
    /// The index of `priority` in `global`'s levels.
    pub(crate) level: usize,
    pub(crate) global: Arc<Global>,
    /// What every admitted request writes, once per stripe (see [`crate::stripe`]).
    pub(crate) hot: Striped<Hot>,
    // Written on rejections and by active limits.
    pub(crate) rejected: [AtomicU64; Reason::ALL.len()],
    pub(crate) would_reject: AtomicU64,
    /// Requests whose client went away while they waited in the queue (slow path only).
    pub(crate) abandoned: AtomicU64,
    pub(crate) throttle_credit: AtomicU64,
    pub(crate) dry_throttle_credit: AtomicU64,
    pub(crate) tat: AtomicU64,
    pub(crate) dry_tat: AtomicU64,
    pub(crate) latency: AtomicHistogram,
    pub(crate) custom: CustomSet,
}

/// A tag's counters that every admitted request writes: one line per stripe. All of them
/// only grow but `in_flight`, a gauge whose `+1` and `-1` may land on different stripes;
/// every sum wraps (see [`crate::stripe`]).
#[derive(Debug, Default)]
pub(crate) struct Hot {
    pub(crate) in_flight: AtomicU64,
    pub(crate) admitted: AtomicU64,
    pub(crate) admitted_weight_milli: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) errors: AtomicU64,
    /// Requests whose client went away before the answer (not successes, not errors).
    pub(crate) cancelled: AtomicU64,
    /// Requests whose handler panicked (not successes, not backend errors).
    pub(crate) panicked: AtomicU64,
    pub(crate) latency_sum_us: AtomicU64,
}

impl fmt::Debug for TagSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TagSlot")
            .field("name", &self.name)
            .field("priority", &self.priority)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl TagSlot {
    /// A slot for `name`, counted in its level by the admission pool.
    pub(crate) fn create(name: &str, priority: i64, global: &Arc<Global>) -> Arc<Self> {
        let slot = Arc::new(Self::new(name, priority, global.clone()));
        global.pool.register(&slot);
        slot
    }

    fn new(name: &str, priority: i64, global: Arc<Global>) -> Self {
        Self {
            name: name.into(),
            generation: global.generations.fetch_add(1, Relaxed),
            priority,
            level: global.level_of(priority),
            global,
            hot: Striped::default(),
            rejected: Default::default(),
            would_reject: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            throttle_credit: AtomicU64::new(0),
            dry_throttle_credit: AtomicU64::new(0),
            tat: AtomicU64::new(0),
            dry_tat: AtomicU64::new(0),
            latency: AtomicHistogram::new(),
            custom: CustomSet::default(),
        }
    }

    /// Record the end of an admitted request: latency and outcome. A cancelled or panicked
    /// request counts only as such: its latency was cut short, and it says nothing of the
    /// backend's health.
    pub(crate) fn record_end(&self, latency_us: u64, ending: Ending) {
        let hot = self.hot.local();
        match ending {
            Ending::Cancelled => {
                hot.cancelled.fetch_add(1, Relaxed);
                return;
            }
            Ending::Panicked => {
                hot.panicked.fetch_add(1, Relaxed);
                return;
            }
            Ending::Error => {
                hot.errors.fetch_add(1, Relaxed);
            }
            Ending::Success => {}
        }
        self.latency.record_micros(latency_us);
        hot.latency_sum_us.fetch_add(latency_us, Relaxed);
        hot.completed.fetch_add(1, Relaxed);
    }

    /// The sum over the stripes of one hot counter.
    fn sum(&self, field: impl Fn(&Hot) -> &AtomicU64) -> u64 {
        self.hot
            .iter()
            .map(|h| field(h).load(Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Requests of this tag in flight now.
    pub(crate) fn in_flight(&self) -> u64 {
        gauge_sum(self.hot.iter().map(|h| h.in_flight.load(Relaxed)))
    }

    /// Everything counted for this tag so far (admissions, completions, rejections), a
    /// number that moves whenever the tag is used.
    pub(crate) fn activity(&self) -> u64 {
        self.sum(|h| &h.admitted)
            .wrapping_add(self.sum(|h| &h.completed))
            .wrapping_add(self.would_reject.load(Relaxed))
            .wrapping_add(
                self.rejected
                    .iter()
                    .map(|r| r.load(Relaxed))
                    .fold(0, u64::wrapping_add),
            )
    }

    /// Copy the cumulative counters into `out` (allocation-free once `out` exists).
    pub(crate) fn load_into(&self, out: &mut TagCounters) {
        out.admitted = self.sum(|h| &h.admitted);
        out.admitted_weight = self.sum(|h| &h.admitted_weight_milli) as f64 / 1000.0;
        for (o, r) in out.rejected.iter_mut().zip(&self.rejected) {
            *o = r.load(Relaxed);
        }
        out.would_reject = self.would_reject.load(Relaxed);
        out.abandoned = self.abandoned.load(Relaxed);
        out.completed = self.sum(|h| &h.completed);
        out.errors = self.sum(|h| &h.errors);
        out.cancelled = self.sum(|h| &h.cancelled);
        out.panicked = self.sum(|h| &h.panicked);
        out.latency_sum_us = self.sum(|h| &h.latency_sum_us);
        out.in_flight = self.in_flight();
        self.latency.load_into(&mut out.latency);
    }
}

/// Cumulative counters of one tag (they only grow, except `in_flight`, a gauge). Subtract
/// an earlier copy to get a window.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct TagCounters {
    /// Requests admitted.
    pub admitted: u64,
    /// Weight admitted, in units.
    pub admitted_weight: f64,
    /// Requests rejected, by [`Reason`] (indexed as [`Reason::ALL`]).
    pub rejected: [u64; Reason::ALL.len()],
    /// Requests a dry-run mode or rule would have rejected but let through.
    pub would_reject: u64,
    /// Requests whose client went away while they waited in the queue for a slot: neither
    /// admitted nor rejected, but offered.
    pub abandoned: u64,
    /// Admitted requests that have ended.
    pub completed: u64,
    /// Ended requests classified as errors.
    pub errors: u64,
    /// Admitted requests whose client went away before the answer: not in `completed`, nor
    /// in the latency histogram (their latency was cut short).
    pub cancelled: u64,
    /// Admitted requests whose handler panicked: not in `completed`, not errors of the
    /// backend, not in the latency histogram.
    pub panicked: u64,
    /// Sum of ended requests' latency, in microseconds.
    pub latency_sum_us: u64,
    /// Requests in flight now (a gauge).
    pub in_flight: u64,
    /// Latency of ended requests.
    pub latency: Histogram,
}

impl TagCounters {
    /// Requests offered: admitted, rejected, or abandoned in the queue.
    pub fn offered(&self) -> u64 {
        self.admitted
            .saturating_add(self.rejected_total())
            .saturating_add(self.abandoned)
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// Rejections for one reason.
    pub fn rejected_for(&self, reason: Reason) -> u64 {
        self.rejected[reason.index()]
    }

    /// `self - earlier`, field by field (the gauge is kept as is).
    pub fn since(&self, earlier: &TagCounters) -> TagCounters {
        let mut out = self.clone();
        out.subtract(earlier);
        out
    }

    /// In place: `self -= earlier` (the gauge is kept as is).
    pub fn subtract(&mut self, earlier: &TagCounters) {
        self.admitted = self.admitted.saturating_sub(earlier.admitted);
        self.admitted_weight = (self.admitted_weight - earlier.admitted_weight).max(0.0);
        for (a, b) in self.rejected.iter_mut().zip(&earlier.rejected) {
            *a = a.saturating_sub(*b);
        }
        self.would_reject = self.would_reject.saturating_sub(earlier.would_reject);
        self.abandoned = self.abandoned.saturating_sub(earlier.abandoned);
        self.completed = self.completed.saturating_sub(earlier.completed);
        self.errors = self.errors.saturating_sub(earlier.errors);
        self.cancelled = self.cancelled.saturating_sub(earlier.cancelled);
        self.panicked = self.panicked.saturating_sub(earlier.panicked);
        self.latency_sum_us = self.latency_sum_us.saturating_sub(earlier.latency_sum_us);
        self.latency.subtract(&earlier.latency);
    }

    /// In place: `self += other` (gauges add too: used to sum tags into the service).
    pub fn merge(&mut self, other: &TagCounters) {
        // Saturating: a fleet's counts come from instances it does not trust.
        self.admitted = self.admitted.saturating_add(other.admitted);
        self.admitted_weight += other.admitted_weight;
        for (a, b) in self.rejected.iter_mut().zip(&other.rejected) {
            *a = a.saturating_add(*b);
        }
        self.would_reject = self.would_reject.saturating_add(other.would_reject);
        self.abandoned = self.abandoned.saturating_add(other.abandoned);
        self.completed = self.completed.saturating_add(other.completed);
        self.errors = self.errors.saturating_add(other.errors);
        self.cancelled = self.cancelled.saturating_add(other.cancelled);
        self.panicked = self.panicked.saturating_add(other.panicked);
        self.latency_sum_us = self.latency_sum_us.saturating_add(other.latency_sum_us);
        self.in_flight = self.in_flight.saturating_add(other.in_flight);
        self.latency.merge(&other.latency);
    }
}

/// How an admitted request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ending {
    /// An answer that was not a failure: counted, its latency measured.
    Success,
    /// A failure the rules count (`error_rate`): counted, its latency measured.
    Error,
    /// The client went away first (a dropped connection, a cancelled call): counted
    /// apart; neither a success nor an error, its latency not measured.
    Cancelled,
    /// The handler panicked: counted apart; not an error of the backend.
    Panicked,
}

impl Ending {
    /// `Error` or `Success`.
    pub fn of_error(error: bool) -> Self {
        if error {
            Ending::Error
        } else {
            Ending::Success
        }
    }
}

/// A tag as the engine tracks it: its name and priority. Cheap to clone (shared).
#[derive(Clone)]
pub struct Tag(pub(crate) Arc<TagSlot>);

impl Tag {
    /// The tag's name ([`OVERFLOW_TAG`] for tags past the cap).
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// The tag's priority (higher is more important).
    pub fn priority(&self) -> i64 {
        self.0.priority
    }

    /// Which slot of this name: a tag reclaimed and seen again counts from zero in a new
    /// generation, so a reader of cumulative counters subtracts only within one.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tag").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Tag {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
