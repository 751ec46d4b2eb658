//! The learned limit: how many requests the backend can hold, from measured service time.
//!
//! A gradient controller in the family of Netflix's Gradient2 and Envoy's adaptive
//! concurrency filter, with the guards their users asked for (see the module docs of
//! `admission` for the failure modes and where each is handled). Pure: every call takes
//! `now`; the caller feeds it one closed window at a time.
//!
//! Per closed window, with `x` the window's median service time and `B` the no-load
//! baseline:
//!
//! ```text
//! not saturated (demand stayed under the limit)  -> no change
//! g = clamp(tol · B / x, 0.5, 1)
//! g == 1 (no queueing):  slow start: L = 2L;  after 3 clean windows: L = 1.5L;  else L = L + q
//! g <  1 (queueing):     L = L + (L·g + q − L) / 2        (a knee estimate plus q, smoothed)
//! q = max(1, ceil(0.05 L))
//! ```
//!
//! When the backend is saturated, `L · B / x` is the knee itself (Little's law: past the
//! knee the median grows in proportion to what is in flight), so the limit settles at about
//! `tol · knee + q` in one step and cannot creep: the queue term is added to a knee
//! estimate, not to a ratio that overload inflates.
//!
//! The baseline falls whenever a window of enough samples shows a lower median. It rises
//! only on evidence: a probe (the limit held at 3/4 for a short while, the queue in front of
//! the gate absorbs the dip) whose median did not improve on the median just before it
//! means the latency is the backend's own, not queueing; two such probes in a row raise the
//! baseline, at most 2x per pair of probes. Probes run only while saturated, every few seconds, or
//! at once after three windows of decreases in a row (a slowed backend is re-learned within
//! seconds instead of shrinking the limit to nothing); when a probe's evidence raises the
//! baseline, the cuts made since the slowdown began are undone. A probe also needs the limit to
//! bind hard (a request refused or queued for every four completions): calm weather's
//! bursts touch a limit near the knee now and then, and a probe there only queues them.

use std::time::Duration;

/// Tuning of the learned limit. The defaults fit most backends; see `[admission]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LimitSettings {
    pub(crate) initial: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    /// How much queueing (median over baseline) is tolerated before the limit comes down.
    pub(crate) tolerance: f64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            initial: 8.0,
            min: 2.0,
            max: 1000.0,
            tolerance: 1.1,
        }
    }
}

/// A window of completions, as the pool measured it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Window {
    /// Successful completions in the window.
    pub(crate) samples: u64,
    /// Their median service time, in microseconds.
    pub(crate) median_us: u64,
    /// Whether demand passed the limit at some point (a request queued or was refused a
    /// slot).
    pub(crate) saturated: bool,
    /// How many requests found no free slot (queued or refused) in the window.
    pub(crate) pressed: u64,
}

impl Window {
    /// Whether the limit bound hard enough for a probe to be worth its dip: at least one
    /// request found no free slot for every `PRESSED_PER_PROBE` completions. A limit near
    /// the knee is touched now and then by calm weather's bursts (at 70% load, about one
    /// arrival in ten finds 11 slots of a pool of 10 taken); a probe then would only queue
    /// calm traffic, and turn the lowest level away, to learn nothing.
    fn pressed_hard(&self) -> bool {
        self.saturated && self.pressed.saturating_mul(PRESSED_PER_PROBE) >= self.samples
    }
}

/// See [`Window::pressed_hard`]: one request pressed per this many completions.
const PRESSED_PER_PROBE: u64 = 4;

/// Fewest samples for a window to count; below it the window keeps accumulating.
pub(crate) const MIN_SAMPLES: u64 = 20;
/// Samples a probe (and a baseline-lowering bucket) needs.
const PROBE_SAMPLES: u64 = 50;
/// A window older than this with too few samples is dropped without a change.
const STALE: Duration = Duration::from_secs(5);
/// Between probes while saturated (plus up to 15% of jitter).
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// The longest a probe lasts when samples are scarce.
const PROBE_MAX: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Doubling each clean window, until the first sign of queueing.
    SlowStart,
    Steady,
    /// Limit held at `PROBE_FRACTION` of `before` until enough samples arrive.
    Probe {
        since: Duration,
        before: f64,
        reference_us: u64,
    },
}

const PROBE_FRACTION: f64 = 0.75;

/// The least shift (median over baseline) that may raise the baseline, the same as the
/// default tolerance (kept apart from the setting: a user's tolerance says how much
/// queueing to allow, not how sure a raise must be). It was 1.3, and a backend 10-30% slower than the baseline (a slowed
/// dependency's median read at its onset, a busier host) was never re-learned: the 10-30%
/// read as queueing for good and held the limit at the knee, under it during probes (the
/// slow-dependency scenario: baseline 152 ms against a median of 176-200, limit 9.6, 89%
/// goodput; with 1.1, 184 ms, limit 11.4). The raise is to a probe's median, taken with a
/// quarter less in flight, and needs two of three such readings: a probe past the knee
/// reads as queueing (the median falls with what is in flight), so noise, not a shift near
/// the knee, is what could raise it.
const RAISE_BAR: f64 = 1.1;

/// The controller's state. Not shared: the pool keeps it behind its lock and calls it from
/// the tick.
#[derive(Clone, Debug)]
pub(crate) struct LearnedLimit {
    settings: LimitSettings,
    limit: f64,
    baseline_us: Option<u64>,
    phase: Phase,
    clean_streak: u32,
    decrease_streak: u32,
    /// The limit before the current run of cuts began: cuts made on a baseline that then
    /// proves too low (the backend slowed) are undone when it is raised.
    cut_from: Option<f64>,
    /// The last three "less in flight" observations, 1 = the median did not fall.
    evidence: u8,
    next_probe: Duration,
    probes: u64,
    /// The median of the last window that moved the limit (for the snapshot).
    last_median_us: Option<u64>,
    /// The limit in force and the median of the last saturated window: every cut of the
    /// limit is a free probe (did the median fall with it?).
    last_saturated: Option<(f64, u64)>,
}

impl LearnedLimit {
    pub(crate) fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            limit: settings.initial.clamp(settings.min, settings.max),
            baseline_us: None,
            phase: Phase::SlowStart,
            clean_streak: 0,
            decrease_streak: 0,
            cut_from: None,
            evidence: 0,
            next_probe: PROBE_EVERY,
            probes: 0,
            last_median_us: None,
            last_saturated: None,
        }
    }

    /// The limit in force (a probe lowers it for a while).
    pub(crate) fn limit(&self) -> u64 {
        let l = match self.phase {
            Phase::Probe { before, .. } => (before * PROBE_FRACTION).max(self.settings.min),
            _ => self.limit,
        };
        l.floor().max(1.0) as u64
    }

    pub(crate) fn baseline(&self) -> Option<Duration> {
        self.baseline_us.map(Duration::from_micros)
    }

    /// A median of enough samples pooled over several windows (the pool gathers them):
    /// below the baseline, it becomes the baseline. (A window of enough samples does the
    /// same in [`LearnedLimit::update`]; at low rates none has enough.)
    pub(crate) fn offer_baseline(&mut self, median_us: u64) {
        if let Some(b) = self.baseline_us
            && median_us > 0
            && median_us < b
        {
            self.baseline_us = Some(median_us);
        }
    }

    pub(crate) fn last_median(&self) -> Option<Duration> {
        self.last_median_us.map(Duration::from_micros)
    }

    pub(crate) fn is_probing(&self) -> bool {
        matches!(self.phase, Phase::Probe { .. })
    }

    /// How long a window lasts before it may close: four baselines, within 100 ms..1 s.
    pub(crate) fn window_length(&self) -> Duration {
        let b = self.baseline_us.unwrap_or(25_000).saturating_mul(4);
        Duration::from_micros(b).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Whether a window that began at `start` with `samples` so far should close now, be
    /// dropped (too old, too few), or go on.
    pub(crate) fn window_verdict(&self, start: Duration, now: Duration, samples: u64) -> Verdict {
        let age = now.saturating_sub(start);
        let needed = if self.is_probing() {
            PROBE_SAMPLES
        } else {
            MIN_SAMPLES
        };
        if let Phase::Probe { since, .. } = self.phase
            && now.saturating_sub(since) >= PROBE_MAX
        {
            return if samples >= MIN_SAMPLES {
                Verdict::Close
            } else {
                Verdict::Drop
            };
        }
        if age >= self.window_length() && samples >= needed {
            Verdict::Close
        } else if age >= STALE {
            Verdict::Drop
        } else {
            Verdict::Wait
        }
    }

    /// A window was dropped for want of samples: nothing moves, but a probe ends.
    pub(crate) fn dropped(&mut self, now: Duration) {
        if let Phase::Probe { before, .. } = self.phase {
            self.limit = before;
            self.phase = Phase::Steady;
            self.schedule_probe(now);
        }
    }

    /// Fold one closed window in.
    pub(crate) fn update(&mut self, w: Window, now: Duration) {
        let x = w.median_us.max(1);
        self.last_median_us = Some(x);
        let Some(baseline) = self.baseline_us else {
            // The first window: the limit starts small enough to be under any knee worth
            // the name, so its median is a fair no-load baseline.
            self.baseline_us = Some(x);
            return;
        };
        if w.samples >= PROBE_SAMPLES && x < baseline {
            self.baseline_us = Some(x);
        }
        if let Phase::Probe {
            before,
            reference_us,
            ..
        } = self.phase
        {
            self.end_probe(x, before, reference_us, now);
            self.last_saturated = None;
            return;
        }
        if !w.saturated {
            // Demand stayed under the limit: the window says nothing about the knee.
            self.clean_streak = 0;
            self.decrease_streak = 0;
            self.cut_from = None;
            self.last_saturated = None;
            return;
        }
        // A cut since the last saturated window is a probe for free: if the median did not
        // fall with the limit, the latency is the backend's own, not queueing.
        if let Some((limit_before, median_before)) = self.last_saturated
            && self.limit <= 0.92 * limit_before
        {
            self.judge(insensitive(median_before, x, self.limit / limit_before), x);
        }
        self.last_saturated = Some((self.limit, x));
        let baseline = self.baseline_us.unwrap_or(x) as f64;
        let gradient = (self.settings.tolerance * baseline / x as f64).clamp(0.5, 1.0);
        let q = (0.05 * self.limit).ceil().max(1.0);
        if gradient >= 1.0 {
            self.decrease_streak = 0;
            self.cut_from = None;
            self.clean_streak += 1;
            self.limit = match self.phase {
                Phase::SlowStart => self.limit * 2.0,
                _ if self.clean_streak >= 3 => self.limit * 1.5,
                _ => self.limit + q,
            };
        } else {
            self.phase = Phase::Steady;
            self.clean_streak = 0;
            let target = self.limit * gradient + q;
            let before = self.limit;
            self.limit += if target >= self.limit {
                target - self.limit
            } else {
                0.5 * (target - self.limit)
            };
            // At the fixed point the gradient is under 1 every window while the limit holds:
            // only a real cut counts towards "the limit keeps coming down".
            if self.limit < 0.95 * before {
                self.decrease_streak += 1;
                self.cut_from.get_or_insert(before);
            } else {
                self.decrease_streak = 0;
                self.cut_from = None;
            }
        }
        self.limit = self.limit.clamp(self.settings.min, self.settings.max);
        // Saturated: probe on schedule, or at once when the limit keeps coming down (a
        // slower backend looks like queueing until a probe says otherwise); only when the
        // limit really binds, else the probe waits for a window where it does.
        if (now >= self.next_probe || self.decrease_streak >= 3) && w.pressed_hard() {
            self.phase = Phase::Probe {
                since: now,
                before: self.limit,
                reference_us: x,
            };
            self.decrease_streak = 0;
        }
    }

    fn end_probe(&mut self, probe_us: u64, before: f64, reference_us: u64, now: Duration) {
        self.probes += 1;
        self.limit = before;
        self.phase = Phase::Steady;
        self.schedule_probe(now);
        let insensitive = insensitive(reference_us, probe_us, PROBE_FRACTION);
        if !insensitive {
            self.judge(false, probe_us);
        } else if self.judge(true, probe_us) {
            // The baseline was raised on a probe's evidence: the cuts since the slowdown
            // began were made on the old one; undo them (regrown a slot per window, the
            // backend sat half idle for seconds). Only here, not on a cut's evidence: a host
            // hiccup can fake that one, and the undo would make its excursion faster.
            if let Some(from) = self.cut_from.take() {
                self.limit = self.limit.max(from);
            }
        } else {
            // One insensitive probe: confirm (or refute) it soon, not in five seconds, so a
            // slowed backend is re-learned before the limit has shrunk far.
            self.next_probe = now + 2 * self.window_length();
        }
    }

    /// Weigh one observation of less in flight: `insensitive` when the median did not fall.
    /// Two in a row raise the baseline towards `median_us` (at most 2x at a time); `true`
    /// when they did.
    fn judge(&mut self, insensitive: bool, median_us: u64) -> bool {
        // The last three observations, newest in the low bit: two of three insensitive
        // raise the baseline (one noisy window neither raises it nor resets the evidence).
        self.evidence = ((self.evidence << 1) | u8::from(insensitive)) & 0b111;
        if !insensitive {
            return false;
        }
        let baseline = self.baseline_us.unwrap_or(median_us);
        // Only a shift past the tolerance moves the baseline up (see `RAISE_BAR`).
        if self.evidence.count_ones() >= 2 && median_us as f64 >= RAISE_BAR * baseline as f64 {
            // Twice in a row less in flight did not help: the backend itself is slower.
            self.baseline_us = Some(median_us.min(baseline.saturating_mul(2)));
            self.evidence = 0;
            return true;
        }
        false
    }

    fn schedule_probe(&mut self, now: Duration) {
        // Jitter from the probe count (deterministic, so tests replay): 0..15%.
        let jitter_permille = (self.probes.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) % 150;
        self.next_probe = now + PROBE_EVERY + PROBE_EVERY * jitter_permille as u32 / 1000;
    }
}

/// What to do with the window under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Close,
    Drop,
    Wait,
}

/// Whether a median that went from `before` to `after` while what was in flight was scaled
/// by `ratio` (< 1) says "not queueing": past the knee the median falls in proportion to
/// what is in flight, below it it does not move; the verdict is whichever of the two the
/// observed change is nearer to.
fn insensitive(before: u64, after: u64, ratio: f64) -> bool {
    let observed = after as f64 / before.max(1) as f64;
    observed > (1.0 + ratio) / 2.0
}
