//! The control plane's lease and safe mode, as a state machine with time passed in.
//!
//! | state | `synced(now, lease)` | `tick(now)` |
//! |---|---|---|
//! | unsynced (fail-open) | valid until `now + lease` | stays |
//! | valid until `until` | valid until `now + lease` | `now >= until`: safe, `EnterSafeMode` |
//! | safe | valid until `now + lease`, `LeaveSafeMode` | stays |
//!
//! - Fail-open: before the first successful sync no tick ever enters safe mode.
//! - The lease holds while `now < until`; a tick at exactly `until` has expired.
//! - `until` is `now + lease`, saturated: a lease too long to represent never expires.
//! - Entering and leaving are returned as a [`Transition`] exactly once each, so the caller
//!   logs once and applies the [`Effect`] of the mode once.
//!
//! [`Lease`] is owned by the control task and takes `&mut self`; the hot path reads only
//! the [`SafeModeGate`] (an atomic flag and a rate cap), which the control task keeps in
//! step with [`Lease::caps_rate`].
//!
//! Times are [`Duration`]s since the engine's origin, the time base of the hot path. No
//! clock is read here.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::SafeMode;
use crate::limiter::Gcra;

/// The shortest lease honoured: a policy saying `leaseDurationSeconds: 0` gets this.
pub(crate) const MIN_LEASE: Duration = Duration::from_secs(1);

/// What a safe mode does while it is in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Effect {
    /// The control plane's policy is dropped: local rules only.
    pub(crate) drop_remote_policy: bool,
    /// Admissions are capped at `safe_mode_max_rps` (rejections say `lease_expired`).
    pub(crate) cap_rate: bool,
}

impl Effect {
    /// The effect of `mode` (see [`SafeMode`]).
    pub(crate) fn of(mode: SafeMode) -> Self {
        match mode {
            SafeMode::Open => Self {
                drop_remote_policy: true,
                cap_rate: false,
            },
            SafeMode::FixedRps => Self {
                drop_remote_policy: true,
                cap_rate: true,
            },
            SafeMode::LastPolicy => Self {
                drop_remote_policy: false,
                cap_rate: false,
            },
        }
    }
}

/// A change of state the caller must act on (apply the effect, log). Each is returned
/// once per entry into, or exit from, safe mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The lease expired: safe mode `mode` starts now.
    EnterSafeMode(SafeMode),
    /// A sync succeeded while in safe mode `mode`: the policy just received is in force.
    LeaveSafeMode(SafeMode),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No policy received yet: fail-open, nothing expires.
    Unsynced,
    /// A policy holds until `until` (exclusive); `Duration::MAX` means never.
    Valid { until: Duration },
    /// The lease expired; safe mode is in force until the next successful sync.
    Safe,
}

/// The lease and safe-mode state machine (see the module docs).
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    mode: SafeMode,
    /// The lease when a policy does not say.
    default: Duration,
    state: State,
}

impl Lease {
    /// Before the first sync: fail-open. `default` is the lease of a policy that names none.
    pub(crate) fn new(mode: SafeMode, default: Duration) -> Self {
        Self {
            mode,
            default,
            state: State::Unsynced,
        }
    }

    /// The lease a policy gets: its `leaseDurationSeconds`, else the default, at least
    /// [`MIN_LEASE`].
    pub(crate) fn duration(&self, lease_seconds: Option<u64>) -> Duration {
        lease_seconds
            .map_or(self.default, Duration::from_secs)
            .max(MIN_LEASE)
    }

    /// A policy was received and installed at `now`, with `lease_seconds` (the policy's
    /// `leaseDurationSeconds`, if any): the lease runs until `now` plus the lease
    /// (saturating: never expires if that cannot be represented). Leaves safe mode.
    pub(crate) fn synced(
        &mut self,
        now: Duration,
        lease_seconds: Option<u64>,
    ) -> Option<Transition> {
        let lease = self.duration(lease_seconds);
        let until = now.checked_add(lease).unwrap_or(Duration::MAX);
        let was_safe = self.state == State::Safe;
        self.state = State::Valid { until };
        was_safe.then_some(Transition::LeaveSafeMode(self.mode))
    }

    /// Time passed to `now`: enters safe mode if the lease has expired (`now >= until`).
    /// Before the first sync, and once in safe mode, nothing happens.
    pub(crate) fn tick(&mut self, now: Duration) -> Option<Transition> {
        match self.state {
            State::Valid { until } if now >= until => {
                self.state = State::Safe;
                Some(Transition::EnterSafeMode(self.mode))
            }
            _ => None,
        }
    }

    /// When the next [`Lease::tick`] can change something: the lease's end while it holds,
    /// `None` before the first sync, in safe mode, or for a lease that never ends.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        match self.state {
            State::Valid { until } if until != Duration::MAX => Some(until),
            _ => None,
        }
    }

    /// A policy has been received at least once.
    pub(crate) fn is_synced(&self) -> bool {
        self.state != State::Unsynced
    }

    /// The lease expired and safe mode is in force.
    pub(crate) fn in_safe_mode(&self) -> bool {
        self.state == State::Safe
    }

    /// A policy was received and its lease has not been seen to expire.
    pub(crate) fn is_valid(&self) -> bool {
        matches!(self.state, State::Valid { .. })
    }

    /// Whether the hot path must cap admissions now (safe mode `fixed_rps` in force).
    pub(crate) fn caps_rate(&self) -> bool {
        self.in_safe_mode() && Effect::of(self.mode).cap_rate
    }
}

/// The hot path's part of safe mode: while engaged (`fixed_rps` in force), admissions are
/// capped by a GCRA at the configured rate. Shared; lock-free.
#[derive(Debug)]
pub(crate) struct SafeModeGate {
    engaged: AtomicBool,
    rate: Gcra,
    tat: AtomicU64,
}

impl SafeModeGate {
    /// A disengaged gate that caps at `max_rps` once engaged.
    pub(crate) fn new(max_rps: f64) -> Self {
        Self {
            engaged: AtomicBool::new(false),
            rate: Gcra::new(max_rps),
            tat: AtomicU64::new(0),
        }
    }

    /// Engage or release the cap (the control task mirrors [`Lease::caps_rate`]).
    pub(crate) fn set(&self, engaged: bool) {
        self.engaged.store(engaged, Relaxed);
    }

    /// The cap is in force. One relaxed load: what every request pays outside safe mode.
    #[inline]
    pub(crate) fn is_engaged(&self) -> bool {
        self.engaged.load(Relaxed)
    }

    /// Spend one admission of the cap at `now` for a request at priority level `level` of
    /// `levels` (0 the lowest): `Ok`, or `Err(wait)` until one fits. Ask only while
    /// [`SafeModeGate::is_engaged`].
    ///
    /// By priority, lowest shed first: level `i` may use `(i + 1) / levels` of the cap's
    /// one-second burst, so while the top level asks for the whole rate the lower levels are
    /// refused, and they get whatever the levels above leave (the rate is never left unused
    /// while anyone asks).
    #[inline]
    pub(crate) fn try_acquire(
        &self,
        now: Duration,
        level: usize,
        levels: usize,
    ) -> Result<(), Duration> {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let share = (level + 1) as f64 / levels.max(1) as f64;
        self.rate.try_acquire_sharing(&self.tat, now, 1.0, share)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);
    const MODES: [SafeMode; 3] = [SafeMode::Open, SafeMode::FixedRps, SafeMode::LastPolicy];

    fn lease(mode: SafeMode) -> Lease {
        Lease::new(mode, 300 * S)
    }

    #[test]
    fn fail_open_before_the_first_sync() {
        for mode in MODES {
            let mut l = lease(mode);
            for now in [Duration::ZERO, 300 * S, 10_000 * S, Duration::MAX] {
                assert_eq!(l.tick(now), None);
            }
            assert!(!l.is_synced() && !l.is_valid() && !l.in_safe_mode() && !l.caps_rate());
            assert_eq!(l.deadline(), None);
        }
    }

    #[test]
    fn lease_expires_exactly_at_its_end() {
        let mut l = lease(SafeMode::Open);
        assert_eq!(l.synced(10 * S, Some(30)), None);
        assert!(l.is_synced() && l.is_valid());
        assert_eq!(l.deadline(), Some(40 * S));
        assert_eq!(l.tick(40 * S - Duration::from_nanos(1)), None);
        assert!(l.is_valid());
        assert_eq!(
            l.tick(40 * S),
            Some(Transition::EnterSafeMode(SafeMode::Open))
        );
        assert!(l.in_safe_mode() && !l.is_valid() && l.is_synced());
        assert_eq!(l.deadline(), None);
    }

    #[test]
    fn the_lease_is_the_policys_else_the_default_and_at_least_a_second() {
        let mut l = Lease::new(SafeMode::Open, 7 * S);
        assert_eq!(l.duration(None), 7 * S);
        assert_eq!(l.duration(Some(60)), 60 * S);
        assert_eq!(l.duration(Some(0)), MIN_LEASE);
        l.synced(Duration::ZERO, None);
        assert_eq!(l.deadline(), Some(7 * S));
        l.synced(Duration::ZERO, Some(0));
        assert_eq!(l.deadline(), Some(S));
        assert_eq!(
            Lease::new(SafeMode::Open, Duration::ZERO).duration(None),
            MIN_LEASE
        );
    }

    #[test]
    fn a_sync_renews_the_lease_from_its_own_time() {
        let mut l = lease(SafeMode::FixedRps);
        l.synced(Duration::ZERO, Some(10));
        assert_eq!(l.tick(9 * S), None);
        assert_eq!(l.synced(9 * S, Some(10)), None);
        assert_eq!(l.tick(10 * S), None, "the renewed lease holds");
        assert_eq!(l.deadline(), Some(19 * S));
        assert!(l.tick(19 * S).is_some());
    }

    #[test]
    fn a_sync_after_the_end_but_before_the_tick_renews_without_safe_mode() {
        let mut l = lease(SafeMode::FixedRps);
        l.synced(Duration::ZERO, Some(10));
        assert_eq!(l.synced(15 * S, Some(10)), None);
        assert_eq!(l.tick(15 * S), None);
        assert!(!l.in_safe_mode());
    }

    #[test]
    fn each_safe_mode_has_its_effect() {
        assert_eq!(
            Effect::of(SafeMode::Open),
            Effect {
                drop_remote_policy: true,
                cap_rate: false
            }
        );
        assert_eq!(
            Effect::of(SafeMode::FixedRps),
            Effect {
                drop_remote_policy: true,
                cap_rate: true
            }
        );
        assert_eq!(
            Effect::of(SafeMode::LastPolicy),
            Effect {
                drop_remote_policy: false,
                cap_rate: false
            }
        );
        for mode in MODES {
            let mut l = lease(mode);
            l.synced(Duration::ZERO, Some(1));
            assert!(!l.caps_rate(), "{mode:?}: no cap while the lease holds");
            assert_eq!(l.tick(S), Some(Transition::EnterSafeMode(mode)));
            assert_eq!(l.caps_rate(), mode == SafeMode::FixedRps, "{mode:?}");
            l.synced(2 * S, Some(1));
            assert!(!l.caps_rate(), "{mode:?}: the cap goes with safe mode");
        }
    }

    #[test]
    fn entering_is_reported_once() {
        for mode in MODES {
            let mut l = lease(mode);
            l.synced(Duration::ZERO, Some(5));
            let entered: Vec<_> = (0..100u32).filter_map(|i| l.tick(i * 100 * MS)).collect();
            assert_eq!(entered, [Transition::EnterSafeMode(mode)]);
            assert_eq!(l.tick(Duration::MAX), None);
        }
    }

    #[test]
    fn the_first_successful_sync_leaves_safe_mode_once() {
        for mode in MODES {
            let mut l = lease(mode);
            l.synced(Duration::ZERO, Some(5));
            l.tick(5 * S);
            assert_eq!(
                l.synced(60 * S, Some(5)),
                Some(Transition::LeaveSafeMode(mode))
            );
            assert!(l.is_valid() && !l.in_safe_mode());
            assert_eq!(l.synced(61 * S, Some(5)), None, "left once");
            assert_eq!(l.deadline(), Some(66 * S));
            assert_eq!(
                l.tick(66 * S),
                Some(Transition::EnterSafeMode(mode)),
                "and can expire again"
            );
        }
    }

    #[test]
    fn a_lease_too_long_to_represent_saturates_and_never_expires() {
        let mut l = lease(SafeMode::FixedRps);
        assert_eq!(l.synced(10 * S, Some(u64::MAX)), None);
        assert!(l.is_valid());
        assert_eq!(l.deadline(), None, "no wake-up for a lease that never ends");
        assert_eq!(l.tick(Duration::from_secs(u64::MAX / 2)), None);
        assert_eq!(l.tick(Duration::MAX - Duration::from_nanos(1)), None);

        // At the very edge: the sum would overflow by a nanosecond.
        let mut l = Lease::new(SafeMode::Open, Duration::MAX);
        let now = Duration::from_nanos(1);
        assert_eq!(l.synced(now, None), None);
        assert_eq!(l.deadline(), None);

        // A long lease that still fits is an ordinary deadline.
        let mut l = lease(SafeMode::Open);
        let now = Duration::from_secs(u64::MAX - 100);
        l.synced(now, Some(100));
        assert_eq!(l.deadline(), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(
            l.tick(Duration::from_secs(u64::MAX)),
            Some(Transition::EnterSafeMode(SafeMode::Open))
        );
    }

    #[test]
    fn the_gate_admits_everything_until_engaged_then_caps() {
        let gate = SafeModeGate::new(2.0);
        assert!(!gate.is_engaged());
        gate.set(true);
        assert!(gate.is_engaged());
        let t = 10 * S;
        // One second of budget as a burst, then one every 500 ms.
        assert_eq!(gate.try_acquire(t, 0, 1), Ok(()));
        assert_eq!(gate.try_acquire(t, 0, 1), Ok(()));
        assert_eq!(gate.try_acquire(t, 0, 1), Err(500 * MS));
        assert_eq!(gate.try_acquire(t + 499 * MS, 0, 1), Err(MS));
        assert_eq!(gate.try_acquire(t + 500 * MS, 0, 1), Ok(()));
        assert_eq!(gate.try_acquire(t + 500 * MS, 0, 1), Err(500 * MS));
        gate.set(false);
        assert!(!gate.is_engaged());
    }

    #[test]
    fn the_gate_sheds_the_lowest_priority_first_and_leaves_no_rate_unused() {
        // 100/s, three levels: every 10 ms, the top level and the lowest ask. The top level
        // gets its 50/s in full; the lowest only what it leaves.
        let gate = SafeModeGate::new(100.0);
        gate.set(true);
        let (mut top, mut low) = (0, 0);
        for i in 0..1000u32 {
            let t = 10 * S + MS * (10 * i);
            if i % 2 == 0 && gate.try_acquire(t, 2, 3).is_ok() {
                top += 1;
            }
            for _ in 0..10 {
                if gate.try_acquire(t, 0, 3).is_ok() {
                    low += 1;
                }
            }
        }
        // Ten seconds: the top level asked 500 times and got all of them.
        assert_eq!(top, 500);
        // The rate (100/s for 10 s, plus the lowest's third of the burst) is used.
        assert!((500..=540).contains(&low), "{low}");

        // The lowest alone gets the whole rate.
        let gate = SafeModeGate::new(100.0);
        gate.set(true);
        let low = (0..1000u32)
            .filter(|i| gate.try_acquire(10 * S + MS * (10 * i), 0, 3).is_ok())
            .count();
        assert!(low >= 990, "{low}");
    }

    #[test]
    fn the_gate_saturates_a_time_past_u64_nanoseconds() {
        let gate = SafeModeGate::new(1.0);
        gate.set(true);
        assert_eq!(gate.try_acquire(Duration::MAX, 0, 1), Ok(()));
    }
}
