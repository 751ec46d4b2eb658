//! The two stateful limits of the hot path, each one atomic: deterministic throttling by
//! credit, and GCRA rate limiting.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Parts per million: the throttle's resolution.
pub(crate) const PPM: u64 = 1_000_000;

/// Percent (0..=100) to parts per million.
pub(crate) fn percent_to_ppm(p: f64) -> u32 {
    (p.clamp(0.0, 100.0) * 10_000.0).round() as u32
}

/// Admit `ppm` parts per million of the calls, deterministically.
///
/// Without a cohort: credit accumulation (Bresenham): call `n` is admitted when
/// `floor((n+1)·p) > floor(n·p)`, so any run of calls admits its share to within one call.
/// With a cohort key: the same cohorts are admitted each time (a hash of the key below the
/// share), so throttling turns away the same users, not a random half of each user's calls.
pub(crate) fn throttle_admits(credit: &AtomicU64, ppm: u32, cohort: Option<u64>) -> bool {
    let ppm = u64::from(ppm);
    if ppm >= PPM {
        return true;
    }
    if ppm == 0 {
        return false;
    }
    match cohort {
        Some(key) => mix(key) % PPM < ppm,
        None => {
            let m = credit.fetch_add(1, Relaxed) % PPM;
            (m + 1) * ppm / PPM > m * ppm / PPM
        }
    }
}

/// splitmix64's finalizer: spreads a cohort key over the whole range.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The least a request costs against a rate budget, in weight units: a budget admits at most
/// 100 times more weightless requests than requests of weight 1.
pub(crate) const MIN_COST: f64 = 0.01;

/// GCRA parameters, compiled from a rate: nanoseconds per weight unit and the tolerance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Gcra {
    /// Weight units per second.
    pub(crate) per_second: f64,
    /// Nanoseconds one unit costs (emission interval). `u64::MAX` for a rate of 0.
    ns_per_unit: f64,
    /// Burst in nanoseconds (tolerance): one second of budget, at least one unit.
    tolerance_ns: u64,
}

impl Gcra {
    pub(crate) fn new(per_second: f64) -> Self {
        let per_second = if per_second.is_finite() {
            per_second.max(0.0)
        } else {
            0.0
        };
        if per_second == 0.0 {
            return Self {
                per_second,
                ns_per_unit: f64::INFINITY,
                tolerance_ns: 0,
            };
        }
        let ns_per_unit = 1e9 / per_second;
        let burst_units = per_second.max(1.0);
        Self {
            per_second,
            ns_per_unit,
            tolerance_ns: (burst_units * ns_per_unit).min(u64::MAX as f64 / 4.0) as u64,
        }
    }

    /// Burst in weight units.
    pub(crate) fn burst(&self) -> f64 {
        self.per_second.max(1.0)
    }

    /// Try to spend `weight` units at `now` (nanoseconds since the engine's origin).
    /// `Ok(())`, or `Err(wait)` until the request would fit. Every request costs at least
    /// [`MIN_COST`] units, so a weight of 0 cannot pass a budget for free; the engine refuses
    /// a weight above the burst before it gets here (it would cost the whole burst).
    pub(crate) fn try_acquire(
        &self,
        tat: &AtomicU64,
        now_ns: u64,
        weight: f64,
    ) -> Result<(), Duration> {
        self.try_acquire_within(tat, now_ns, weight, self.tolerance_ns)
    }

    /// [`Gcra::try_acquire`] that may use only `share` (0..=1) of the burst: a request
    /// that must leave the rest of the burst to others. Requests asking with a larger share
    /// still pass while the smaller shares are refused, so under a sustained excess the
    /// budget goes to the largest shares first, and whatever they leave to the others (the
    /// rate is never left unused while anyone asks).
    #[cfg(feature = "control-plane")]
    pub(crate) fn try_acquire_sharing(
        &self,
        tat: &AtomicU64,
        now_ns: u64,
        weight: f64,
        share: f64,
    ) -> Result<(), Duration> {
        let share = if share.is_nan() {
            1.0
        } else {
            share.clamp(0.0, 1.0)
        };
        // At least one request's worth, or a small share of a small burst refuses all.
        let min = (MIN_COST.max(1.0) * self.ns_per_unit).min(self.tolerance_ns as f64);
        let tolerance = (self.tolerance_ns as f64 * share).max(min) as u64;
        self.try_acquire_within(tat, now_ns, weight, tolerance)
    }

    fn try_acquire_within(
        &self,
        tat: &AtomicU64,
        now_ns: u64,
        weight: f64,
        tolerance_ns: u64,
    ) -> Result<(), Duration> {
        if !self.ns_per_unit.is_finite() {
            return Err(Duration::from_secs(1));
        }
        let cost = ((weight.max(MIN_COST) * self.ns_per_unit) as u64).min(self.tolerance_ns);
        let mut cur = tat.load(Relaxed);
        loop {
            let base = cur.max(now_ns);
            let new_tat = base.saturating_add(cost);
            // Allowed when the new theoretical arrival time is within the tolerance of now.
            let allow_at = new_tat.saturating_sub(tolerance_ns);
            if allow_at > now_ns {
                return Err(Duration::from_nanos(allow_at - now_ns));
            }
            match tat.compare_exchange_weak(cur, new_tat, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_admits_exactly_its_share() {
        for percent in [0.0, 1.0, 25.0, 33.3, 50.0, 99.0, 100.0] {
            let credit = AtomicU64::new(0);
            let ppm = percent_to_ppm(percent);
            let admitted = (0..10_000)
                .filter(|_| throttle_admits(&credit, ppm, None))
                .count();
            let expected = (10_000.0 * percent / 100.0) as usize;
            assert!(
                admitted.abs_diff(expected) <= 1,
                "{percent}%: {admitted} vs {expected}"
            );
        }
    }

    #[test]
    fn throttle_is_deterministic_and_spread() {
        let credit = AtomicU64::new(0);
        let ppm = percent_to_ppm(50.0);
        let seq: Vec<bool> = (0..6)
            .map(|_| throttle_admits(&credit, ppm, None))
            .collect();
        assert_eq!(seq, [false, true, false, true, false, true]);
    }

    #[test]
    fn cohorts_are_consistent_and_near_the_share() {
        let credit = AtomicU64::new(0);
        let ppm = percent_to_ppm(50.0);
        let first: Vec<bool> = (0..10_000u64)
            .map(|k| throttle_admits(&credit, ppm, Some(k)))
            .collect();
        let second: Vec<bool> = (0..10_000u64)
            .map(|k| throttle_admits(&credit, ppm, Some(k)))
            .collect();
        assert_eq!(first, second);
        let admitted = first.iter().filter(|a| **a).count();
        assert!((4_700..5_300).contains(&admitted), "{admitted}");
    }

    #[test]
    fn gcra_admits_rate_per_second_after_the_burst() {
        let g = Gcra::new(100.0);
        let tat = AtomicU64::new(0);
        let start = 10_000_000_000u64;
        // Burst: one second of budget at once.
        let burst = (0..1000)
            .filter(|_| g.try_acquire(&tat, start, 1.0).is_ok())
            .count();
        assert_eq!(burst, 100);
        // Then 100 per second, paced: over 10 s at 1 ms steps, about 1000 more.
        let mut admitted = 0;
        for ms in 1..=10_000u64 {
            if g.try_acquire(&tat, start + ms * 1_000_000, 1.0).is_ok() {
                admitted += 1;
            }
        }
        assert!((999..=1001).contains(&admitted), "{admitted}");
    }

    #[test]
    fn gcra_retry_after_is_when_it_fits() {
        let g = Gcra::new(10.0);
        let tat = AtomicU64::new(0);
        for _ in 0..10 {
            g.try_acquire(&tat, 0, 1.0).unwrap();
        }
        let wait = g.try_acquire(&tat, 0, 1.0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(g.try_acquire(&tat, wait.as_nanos() as u64, 1.0).is_ok());
    }

    #[test]
    fn gcra_weight_counts_units_and_zero_rate_blocks() {
        let g = Gcra::new(100.0);
        let tat = AtomicU64::new(0);
        assert!(g.try_acquire(&tat, 0, 60.0).is_ok());
        assert!(g.try_acquire(&tat, 0, 60.0).is_err());
        assert!(g.try_acquire(&tat, 0, 40.0).is_ok());
        // A weight above the burst needs a full bucket, and then passes.
        let tat = AtomicU64::new(0);
        assert!(g.try_acquire(&tat, 0, 1e9).is_ok());
        let zero = Gcra::new(0.0);
        assert!(zero.try_acquire(&AtomicU64::new(0), 0, 1.0).is_err());
    }
}
