//! Client-side adaptive throttling (Google SRE, "Handling Overload"): over a sliding window,
//! reject locally with probability `max(0, (requests - K * accepts) / (requests + 1))`.

use std::time::Duration;

/// How many buckets the sliding window is cut into.
const BUCKETS: usize = 20;

/// One traffic class's adaptive throttle. Pure: time is passed in (a duration since any
/// fixed origin), so it is tested without a clock.
///
/// `requests` counts every request the application tried (including those this throttle
/// turned away); `accepts` counts those the backend accepted (anything but an overload
/// answer). While the backend accepts everything, `requests - K * accepts` is negative and
/// nothing is rejected locally; when it rejects most requests, the client sheds locally in
/// proportion, so a backend that is refusing work does not also spend effort refusing it.
///
/// The draw is deterministic (credit accumulation, as the server's `throttle` is): a
/// rejection probability of 0.25 turns away exactly every fourth request.
#[derive(Clone, Debug)]
pub(crate) struct AdaptiveThrottle {
    k: f64,
    bucket_len: Duration,
    /// `(requests, accepts)` per bucket; `head` is the bucket of `head_start`.
    buckets: [(u64, u64); BUCKETS],
    head: usize,
    head_start: Duration,
    credit: f64,
}

impl AdaptiveThrottle {
    /// A throttle with multiplier `k` over `window`.
    pub(crate) fn new(k: f64, window: Duration) -> Self {
        let bucket_len = (window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            k,
            bucket_len,
            buckets: [(0, 0); BUCKETS],
            head: 0,
            head_start: Duration::ZERO,
            credit: 0.0,
        }
    }

    /// Moves the window to `now`, clearing the buckets that slid out.
    fn roll(&mut self, now: Duration) {
        if now < self.head_start.saturating_add(self.bucket_len) {
            return;
        }
        let steps = (now - self.head_start).as_nanos() / self.bucket_len.as_nanos();
        let steps = steps.min(u128::from(u32::MAX)) as u32;
        for _ in 0..steps.min(BUCKETS as u32) {
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = (0, 0);
        }
        self.head_start = self
            .head_start
            .saturating_add(self.bucket_len.saturating_mul(steps));
    }

    /// `(requests, accepts)` over the window.
    fn totals(&self) -> (u64, u64) {
        self.buckets
            .iter()
            .fold((0, 0), |(r, a), (br, ba)| (r + br, a + ba))
    }

    /// The probability of a local rejection now.
    pub(crate) fn reject_probability(&mut self, now: Duration) -> f64 {
        self.roll(now);
        let (requests, accepts) = self.totals();
        let requests = requests as f64;
        ((requests - self.k * accepts as f64) / (requests + 1.0)).max(0.0)
    }

    /// Counts a request and says whether to send it (`true`) or reject it locally.
    pub(crate) fn try_send(&mut self, now: Duration) -> bool {
        let p = self.reject_probability(now);
        self.buckets[self.head].0 += 1;
        self.credit += p;
        if self.credit >= 1.0 {
            self.credit -= 1.0;
            false
        } else {
            true
        }
    }

    /// Counts the backend's answer to a request that was sent: accepted or not.
    pub(crate) fn record(&mut self, now: Duration, accepted: bool) {
        self.roll(now);
        if accepted {
            self.buckets[self.head].1 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_healthy_backend_is_never_throttled() {
        let mut t = AdaptiveThrottle::new(2.0, Duration::from_secs(120));
        for i in 0..10_000 {
            assert!(t.try_send(ms(i)));
            t.record(ms(i), true);
        }
        assert_eq!(t.reject_probability(ms(10_000)), 0.0);
    }

    #[test]
    fn a_refusing_backend_is_throttled_by_the_formula() {
        let mut t = AdaptiveThrottle::new(2.0, Duration::from_secs(120));
        // 100 requests, 10 accepted: p = (100 - 20) / 101.
        for i in 0..100 {
            t.buckets[t.head].0 += 1;
            t.record(ms(i), i < 10);
        }
        let p = t.reject_probability(ms(100));
        assert!((p - 80.0 / 101.0).abs() < 1e-9, "{p}");
        // Deterministic: of the next 1000 tries, the share turned away follows p as it
        // moves (it rises as rejected tries count as requests).
        let sent = (0..1000).filter(|_| t.try_send(ms(100))).count();
        assert!(sent < 250, "{sent} sent");
        assert!(sent > 0, "p < 1: some get through to probe the backend");
    }

    #[test]
    fn k_loosens_the_throttle() {
        let mut strict = AdaptiveThrottle::new(1.0, Duration::from_secs(60));
        let mut loose = AdaptiveThrottle::new(3.0, Duration::from_secs(60));
        for t in [&mut strict, &mut loose] {
            for i in 0..100 {
                t.buckets[t.head].0 += 1;
                t.record(ms(i), i % 2 == 0);
            }
        }
        assert!(strict.reject_probability(ms(100)) > 0.4);
        assert_eq!(loose.reject_probability(ms(100)), 0.0);
    }

    #[test]
    fn the_window_forgets() {
        let mut t = AdaptiveThrottle::new(2.0, Duration::from_secs(20));
        for i in 0..100 {
            t.buckets[t.head].0 += 1;
            t.record(ms(i), false);
        }
        assert!(t.reject_probability(ms(100)) > 0.9);
        // Half a window later, still there; a full window later, gone.
        assert!(t.reject_probability(Duration::from_secs(10)) > 0.9);
        assert_eq!(t.reject_probability(Duration::from_secs(21)), 0.0);
        // A clock far in the future does not overflow.
        assert_eq!(t.reject_probability(Duration::MAX), 0.0);
    }
}
