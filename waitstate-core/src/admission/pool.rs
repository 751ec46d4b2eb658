//! One pool of slots, counted exactly, and the per-priority queues in front of it.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::Duration;

use super::limit::{LearnedLimit, LimitSettings, Verdict, Window};
use super::{AdmissionState, LevelState};
use crate::histogram::{AtomicHistogram, Histogram};
use crate::registry::TagSlot;
use crate::stripe::{Padded, Striped};

/// How the pool is set up (from `[admission]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PoolSettings {
    /// Learn the limit; when off, only a static cap (if any) binds.
    pub(crate) adaptive: bool,
    pub(crate) limit: LimitSettings,
    /// The longest a request waits for a slot; `None`: derived from the learned service
    /// time (three baselines, within 10 ms..1 s).
    pub(crate) max_wait: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            adaptive: true,
            limit: LimitSettings::default(),
            max_wait: None,
        }
    }
}

/// Samples pooled across windows before their median may lower the baseline.
const POOLED_SAMPLES: u64 = 50;
/// The oldest pooled samples kept for that.
const POOLED_MAX_AGE: Duration = Duration::from_secs(10);

/// Before a baseline is known, the wait a request may spend in the queue.
const DEFAULT_WAIT: Duration = Duration::from_millis(100);

/// A queued request's cell: the pool grants or evicts it, its future polls it.
#[derive(Debug)]
pub(crate) struct WaitCell {
    pub(crate) level: usize,
    deadline: Duration,
    state: Mutex<CellState>,
}

#[derive(Debug)]
pub(crate) enum CellState {
    Waiting(Option<Waker>),
    /// A slot was handed over: the future owns it now.
    Granted,
    /// Turned away: its deadline cannot be met.
    Evicted,
    /// The future took its outcome (or left); nothing more to do.
    Done,
}

impl WaitCell {
    pub(crate) fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settle(&self, to: CellState) {
        let waker = match std::mem::replace(&mut *self.lock(), to) {
            CellState::Waiting(w) => w,
            _ => None,
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

#[derive(Debug, Default)]
struct Queues {
    levels: Vec<VecDeque<Arc<WaitCell>>>,
}

/// Per level: what the snapshot reports (cumulative; touched on the slow path only).
#[derive(Debug, Default)]
#[repr(align(128))]
struct LevelStats {
    queued: AtomicU64,
    waited_us: AtomicU64,
    timed_out: AtomicU64,
}

#[derive(Debug)]
struct Learner {
    limit: LearnedLimit,
    window_start: Duration,
    seen: Histogram,
    scratch: Histogram,
    /// Closed windows' samples pooled until there are enough to judge the baseline by
    /// (at low rates no single window has them, and the baseline could never come down),
    /// since `pooled_since`; emptied when the baseline rises (samples from before a slower
    /// backend was learned must not bring the old baseline back) and when older than
    /// `POOLED_MAX_AGE`.
    pooled: Histogram,
    pooled_since: Duration,
}

/// The pool: every admitted request holds one slot until its ticket ends.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Slots held: written by every admission and every end, so alone on its cache line,
    /// away from the fields every request only reads (`limit`, `waiting`).
    in_use: Padded<AtomicU64>,
    /// The limit in force: the learned one, under the static cap.
    limit: AtomicU64,
    waiting: AtomicU64,
    /// Requests that found no free slot since the window began (queued or refused).
    pressed: AtomicU64,
    static_cap: AtomicU64,
    /// The last window's median service time (µs), for wait estimates; 0 = unknown.
    service_us: AtomicU64,
    /// Successful completions' service times (cumulative; the learner takes deltas), one
    /// histogram per stripe (every success writes one bucket; see [`crate::stripe`]).
    service: Striped<AtomicHistogram>,
    levels: Box<[LevelStats]>,
    /// Every tag's slot, to count a level's requests in flight on the slow path (the hot
    /// path keeps one counter per tag, not another per level).
    tags: Mutex<Vec<Weak<TagSlot>>>,
    settings: PoolSettings,
    queues: Mutex<Queues>,
    learner: Mutex<Learner>,
}

impl Pool {
    pub(crate) fn new(levels: usize, settings: PoolSettings) -> Self {
        let learned = LearnedLimit::new(settings.limit);
        let pool = Self {
            in_use: Padded(AtomicU64::new(0)),
            limit: AtomicU64::new(u64::MAX),
            waiting: AtomicU64::new(0),
            pressed: AtomicU64::new(0),
            static_cap: AtomicU64::new(u64::MAX),
            service_us: AtomicU64::new(0),
            service: Striped::default(),
            levels: (0..levels).map(|_| LevelStats::default()).collect(),
            tags: Mutex::new(Vec::new()),
            settings,
            queues: Mutex::new(Queues {
                levels: (0..levels).map(|_| VecDeque::new()).collect(),
            }),
            learner: Mutex::new(Learner {
                limit: learned,
                window_start: Duration::ZERO,
                seen: Histogram::new(),
                scratch: Histogram::new(),
                pooled: Histogram::new(),
                pooled_since: Duration::ZERO,
            }),
        };
        pool.publish_limit(&pool.lock_learner());
        pool
    }

    /// Count this tag's requests in its level's (slow path and snapshot only).
    pub(crate) fn register(&self, slot: &Arc<TagSlot>) {
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        // Reclaimed slots leave dead entries: drop them as new ones come.
        tags.retain(|t| t.strong_count() > 0);
        tags.push(Arc::downgrade(slot));
    }

    /// Requests in flight per level, from the tags' own counters.
    fn level_in_flight(&self) -> Vec<u64> {
        let mut out = vec![0; self.levels.len()];
        for slot in self.tags.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(slot) = slot.upgrade()
                && let Some(n) = out.get_mut(slot.level)
            {
                *n += slot.in_flight();
            }
        }
        out
    }

    fn lock_queues(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_learner(&self) -> MutexGuard<'_, Learner> {
        self.learner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish_limit(&self, learner: &Learner) {
        let cap = self.static_cap.load(Relaxed);
        let limit = if self.settings.adaptive {
            learner.limit.limit().min(cap)
        } else {
            cap
        };
        self.limit.store(limit, SeqCst);
    }

    /// Set (or with `None` lift) the static cap: a policy's `concurrencyLimit`.
    pub(crate) fn set_static_cap(&self, cap: Option<u64>) {
        let cap = cap.unwrap_or(u64::MAX).max(1);
        if self.static_cap.swap(cap, Relaxed) != cap {
            self.publish_limit(&self.lock_learner());
            self.drain();
        }
    }

    /// The fast path: a slot if one is free and nobody waits. One CAS.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        if self.waiting.load(SeqCst) == 0 && self.cas_acquire() {
            return true;
        }
        // Reaching the limit is not demand past it: only a request refused a slot (or
        // queued for one) counts, so a calm burst that touches the limit does not grow it.
        // Every request the engine queues or refuses for want of a slot passes here once.
        self.pressed.fetch_add(1, Relaxed);
        false
    }

    #[inline]
    fn cas_acquire(&self) -> bool {
        let limit = self.limit.load(SeqCst);
        self.in_use
            .fetch_update(SeqCst, SeqCst, |n| (n < limit).then_some(n + 1))
            .is_ok()
    }

    /// Take a slot whatever the limit (dry run): `true` if it was over the limit.
    pub(crate) fn force_acquire(&self) -> bool {
        let limit = self.limit.load(Relaxed);
        self.in_use.fetch_add(1, SeqCst) >= limit
    }

    /// Whether a slot is free now (for `decide`, which holds none).
    pub(crate) fn has_room(&self) -> bool {
        self.waiting.load(Relaxed) == 0 && self.in_use.load(Relaxed) < self.limit.load(Relaxed)
    }

    /// Give a slot back: to the best waiter if any, else to the pool.
    pub(crate) fn release(&self) {
        if self.waiting.load(SeqCst) > 0 {
            let mut q = self.lock_queues();
            if self.in_use.load(SeqCst) <= self.limit.load(SeqCst)
                && let Some(cell) = self.pop_best(&mut q)
            {
                // Hand the slot over: `in_use` does not move.
                drop(q);
                cell.settle(CellState::Granted);
                return;
            }
        }
        self.in_use.fetch_sub(1, SeqCst);
        if self.waiting.load(SeqCst) > 0 {
            self.drain();
        }
    }

    /// Grant queued requests while there is room (after a release raced an enqueue, or the
    /// limit rose).
    pub(crate) fn drain(&self) {
        if self.waiting.load(SeqCst) == 0 {
            return;
        }
        let mut q = self.lock_queues();
        self.drain_locked(&mut q);
    }

    fn drain_locked(&self, q: &mut Queues) {
        while self.waiting.load(SeqCst) > 0 {
            let limit = self.limit.load(SeqCst);
            if self
                .in_use
                .fetch_update(SeqCst, SeqCst, |n| (n < limit).then_some(n + 1))
                .is_err()
            {
                return;
            }
            match self.pop_best(q) {
                Some(cell) => cell.settle(CellState::Granted),
                None => {
                    self.in_use.fetch_sub(1, SeqCst);
                    return;
                }
            }
        }
    }

    /// The next waiter to serve: a lower level under its floor first (so it is not starved),
    /// else the highest level, FIFO within it. The floor is a twentieth of the limit (none
    /// under 20 slots: a small pool is the top level's).
    fn pop_best(&self, q: &mut Queues) -> Option<Arc<WaitCell>> {
        let floor = self.limit.load(Relaxed) / 20;
        let starved = if floor == 0 {
            None
        } else {
            let in_flight = self.level_in_flight();
            (0..q.levels.len()).find(|&l| !q.levels[l].is_empty() && in_flight[l] < floor)
        };
        let level =
            starved.or_else(|| (0..q.levels.len()).rev().find(|&l| !q.levels[l].is_empty()))?;
        let cell = q.levels[level].pop_front()?;
        self.waiting.fetch_sub(1, SeqCst);
        Some(cell)
    }

    /// How long a request of `level` may wait now: the top level up to two learned service
    /// times, every other level one (or `[admission] max_wait` for all), within 10 ms..1 s.
    /// The top level is served first, so it rarely waits long; a lower level that would wait
    /// longer than a service time is better turned away than served late.
    pub(crate) fn max_wait(&self, level: usize) -> Duration {
        if let Some(w) = self.settings.max_wait {
            return w;
        }
        let times = if level + 1 == self.levels.len() { 2 } else { 1 };
        match self.service_us.load(Relaxed) {
            0 => DEFAULT_WAIT,
            us => (Duration::from_micros(us) * times)
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
        }
    }

    /// The last window's median service time (zero until one is known).
    pub(crate) fn service_time(&self) -> Duration {
        Duration::from_micros(self.service_us.load(Relaxed))
    }

    /// The expected wait of the request `ahead + 1`-th in line.
    fn estimated_wait(&self, ahead: usize) -> Duration {
        let service = match self.service_us.load(Relaxed) {
            0 => return Duration::ZERO,
            us => us,
        };
        let limit = self.limit.load(Relaxed).clamp(1, 1 << 20);
        Duration::from_micros(service.saturating_mul(ahead as u64 + 1) / limit)
    }

    /// The slow path: wait in line. `Ok(cell)` while waiting (or already granted), `Err` when
    /// the wait cannot end within `wait`. Requests of lower levels whose deadline the new
    /// one makes impossible are turned away (lowest first).
    pub(crate) fn enqueue(
        &self,
        level: usize,
        now: Duration,
        wait: Duration,
    ) -> Result<Arc<WaitCell>, ()> {
        let mut q = self.lock_queues();
        let ahead: usize = q.levels[level..].iter().map(VecDeque::len).sum();
        if wait.is_zero() || self.estimated_wait(ahead) > wait {
            // Nothing ahead and a slot free: no need to wait at all.
            if ahead == 0 && self.cas_acquire() {
                let cell = Arc::new(WaitCell {
                    level,
                    deadline: now,
                    state: Mutex::new(CellState::Granted),
                });
                return Ok(cell);
            }
            return Err(());
        }
        let cell = Arc::new(WaitCell {
            level,
            deadline: now + wait,
            state: Mutex::new(CellState::Waiting(None)),
        });
        q.levels[level].push_back(cell.clone());
        self.waiting.fetch_add(1, SeqCst);
        self.levels[level].queued.fetch_add(1, Relaxed);
        self.drain_locked(&mut q);
        self.evict_doomed(&mut q, now);
        Ok(cell)
    }

    /// Turn away the waiters (lowest levels first, newest first) who can no longer be served
    /// before their deadline, given everything now ahead of them.
    fn evict_doomed(&self, q: &mut Queues, now: Duration) {
        let mut ahead = 0usize;
        for level in (0..q.levels.len()).rev() {
            let mut i = 0;
            while i < q.levels[level].len() {
                let deadline = q.levels[level][i].deadline;
                if now + self.estimated_wait(ahead) > deadline {
                    if let Some(cell) = q.levels[level].remove(i) {
                        self.waiting.fetch_sub(1, SeqCst);
                        self.levels[level].timed_out.fetch_add(1, Relaxed);
                        cell.settle(CellState::Evicted);
                    }
                } else {
                    ahead += 1;
                    i += 1;
                }
            }
        }
    }

    /// A waiter leaves (its future was dropped, or its deadline passed): out of the queue if
    /// still in it. `true` if it was granted meanwhile (the caller then owns a slot).
    pub(crate) fn leave(&self, cell: &Arc<WaitCell>, timed_out: bool) -> bool {
        let mut q = self.lock_queues();
        let mut state = cell.lock();
        match std::mem::replace(&mut *state, CellState::Done) {
            CellState::Waiting(_) => {
                if let Some(i) = q.levels[cell.level]
                    .iter()
                    .position(|c| Arc::ptr_eq(c, cell))
                {
                    q.levels[cell.level].remove(i);
                    self.waiting.fetch_sub(1, SeqCst);
                }
                if timed_out {
                    self.levels[cell.level].timed_out.fetch_add(1, Relaxed);
                }
                false
            }
            CellState::Granted => true,
            CellState::Evicted | CellState::Done => false,
        }
    }

    /// A waiter of `level` was granted its slot after `waited`.
    #[cfg(feature = "runtime")]
    pub(crate) fn note_wait(&self, level: usize, waited: Duration) {
        let us = waited.as_micros().min(u128::from(u64::MAX)) as u64;
        self.levels[level].waited_us.fetch_add(us, Relaxed);
    }

    /// Slots in use.
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_use.load(Relaxed)
    }

    /// A request ended successfully after `service_us` in the backend.
    #[inline]
    pub(crate) fn record(&self, service_us: u64) {
        self.service.local().record_micros(service_us);
    }

    /// Close the window under way if it is due, learn from it, and publish the new limit.
    /// Cheap when nothing is due; skipped if another thread is at it.
    pub(crate) fn tick(&self, now: Duration) {
        let Ok(mut guard) = self.learner.try_lock() else {
            return;
        };
        let l = &mut *guard;
        l.scratch.clear();
        for stripe in self.service.iter() {
            stripe.add_into(&mut l.scratch);
        }
        l.scratch.subtract(&l.seen);
        let samples = l.scratch.count();
        match l.limit.window_verdict(l.window_start, now, samples) {
            Verdict::Wait => return,
            Verdict::Drop => {
                l.limit.dropped(now);
                self.pressed.store(0, Relaxed);
            }
            Verdict::Close => {
                let median_us = l.scratch.quantile_micros(0.5).unwrap_or(0);
                let pressed = self.pressed.swap(0, Relaxed);
                let window = Window {
                    samples,
                    median_us,
                    saturated: pressed > 0,
                    pressed,
                };
                let before = l.limit.baseline();
                l.limit.update(window, now);
                if l.limit.baseline() > before
                    || now.saturating_sub(l.pooled_since) > POOLED_MAX_AGE
                {
                    l.pooled.clear();
                    l.pooled_since = now;
                }
                // A median of enough pooled samples below the baseline lowers it: no
                // load makes the median faster, so this is the backend's own speed.
                l.pooled.merge(&l.scratch);
                if l.pooled.count() >= POOLED_SAMPLES {
                    if let Some(m) = l.pooled.quantile_micros(0.5) {
                        l.limit.offer_baseline(m);
                    }
                    l.pooled.clear();
                    l.pooled_since = now;
                }
                if let Some(m) = l.limit.last_median() {
                    self.service_us
                        .store(m.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
                }
            }
        }
        l.seen.merge(&l.scratch);
        l.window_start = now;
        self.publish_limit(l);
        drop(guard);
        self.drain();
    }

    /// What the snapshot shows.
    pub(crate) fn state(&self, priorities: &[i64]) -> AdmissionState {
        let (limit, baseline, median, probing) = {
            let l = self.lock_learner();
            (
                self.limit.load(Relaxed),
                l.limit.baseline(),
                l.limit.last_median(),
                l.limit.is_probing(),
            )
        };
        let in_flight = self.level_in_flight();
        let queued_now: Vec<usize> = self
            .lock_queues()
            .levels
            .iter()
            .map(VecDeque::len)
            .collect();
        AdmissionState {
            adaptive: self.settings.adaptive,
            limit,
            baseline,
            service_time: median,
            probing,
            in_flight: self.in_use.load(Relaxed),
            max_wait: self.max_wait(0),
            levels: priorities
                .iter()
                .zip(self.levels.iter())
                .zip(queued_now)
                .zip(in_flight)
                .map(|(((&priority, s), waiting), in_flight)| LevelState {
                    priority,
                    in_flight,
                    waiting: waiting as u64,
                    queued_total: s.queued.load(Relaxed),
                    waited_total: Duration::from_micros(s.waited_us.load(Relaxed)),
                    timed_out_total: s.timed_out.load(Relaxed),
                })
                .collect(),
        }
    }
}
