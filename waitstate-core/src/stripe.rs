//! Per-core stripes: counters that every request writes, one copy per stripe, each on its
//! own cache line, summed when read (by the tick, a snapshot, a test).
//!
//! A counter that every core writes bounces its cache line between them on every write:
//! with one hot tag, the tag's counters (not the backend) become the ceiling. A thread
//! writes the stripe it was given the first time it counted (round robin), so the threads
//! of a runtime's pool each write their own line; with more threads than stripes, a few
//! share one. There are as many stripes as cores, rounded up to a power of two, at most
//! [`MAX_STRIPES`]: 2 on a 2-core machine, 16 from 16 cores up.
//!
//! A reader sums the stripes with wrapping arithmetic: exact for counters that only grow,
//! and for a gauge (`in_flight`) whose `+1` and `-1` may land on different stripes (a
//! request admitted on one thread and finished on another): each stripe wraps, the sum
//! does not. A sum is not a snapshot of one instant (each stripe is read once, in turn),
//! which no reader here needs: windows are differences of sums a tick apart.
//!
//! Written by hand: `crossbeam-utils`' `CachePadded` is the same `repr(align)`, and a
//! sharded counter crate would bring its own notion of stripes per counter, where one
//! stripe here holds all of a tag's hot counters on one line (one line written per request
//! instead of one per counter).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

/// The most stripes a striped value has (a power of two).
pub(crate) const MAX_STRIPES: usize = 16;

/// `T` alone on its cache line(s): 128 bytes, the unit of the adjacent-line prefetcher on
/// x86-64 (what `crossbeam-utils` uses there too).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// One `T` per stripe.
#[derive(Debug)]
pub(crate) struct Striped<T> {
    stripes: Box<[Padded<T>]>,
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Self {
            stripes: (0..stripe_count()).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> Striped<T> {
    /// The calling thread's stripe.
    #[inline]
    pub(crate) fn local(&self) -> &T {
        // `stripes.len()` is a power of two.
        &self.stripes[thread_stripe() & (self.stripes.len() - 1)]
    }

    /// Every stripe, to sum.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|p| &p.0)
    }
}

/// The sum of a gauge's stripes (each moved up on one thread and down on another,
/// wrapping), read one stripe after the other while requests come and go: a request
/// admitted on a stripe already read and finished on one read after it shows as its `-1`
/// alone, a sum just below zero that wraps to a huge number. Such a transient reads as 0.
pub(crate) fn gauge_sum(stripes: impl Iterator<Item = u64>) -> u64 {
    let sum = stripes.fold(0u64, u64::wrapping_add);
    // Two's complement: a wrapped sum is a small negative number.
    if (sum as i64) < 0 { 0 } else { sum }
}

/// As many stripes as cores, rounded up to a power of two, at most [`MAX_STRIPES`].
fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .next_power_of_two()
            .min(MAX_STRIPES)
    })
}

/// The calling thread's stripe index (before masking): handed out round robin the first
/// time a thread counts.
#[inline]
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let v = s.get();
        if v != usize::MAX {
            return v;
        }
        let v = NEXT.fetch_add(1, Relaxed) & (MAX_STRIPES - 1);
        s.set(v);
        v
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn stripes_are_a_power_of_two_on_lines_of_their_own() {
        let s: Striped<AtomicU64> = Striped::default();
        let n = s.iter().count();
        assert!(n.is_power_of_two() && n <= MAX_STRIPES, "{n}");
        assert_eq!(std::mem::align_of::<Padded<AtomicU64>>(), 128);
        let addrs: Vec<usize> = s.iter().map(|c| c as *const _ as usize).collect();
        for w in addrs.windows(2) {
            assert!(w[1] - w[0] >= 128, "{addrs:?}");
        }
    }

    #[test]
    fn a_gauge_moved_across_threads_sums_exactly() {
        let s: Striped<AtomicU64> = Striped::default();
        // +1 on this thread's stripe, -1 on others': the sum is exact with wrapping.
        for _ in 0..10 {
            s.local().fetch_add(1, Relaxed);
        }
        std::thread::scope(|t| {
            for _ in 0..4 {
                t.spawn(|| {
                    for _ in 0..2 {
                        s.local().fetch_sub(1, Relaxed);
                    }
                });
            }
        });
        assert_eq!(gauge_sum(s.iter().map(|c| c.load(Relaxed))), 2);
    }

    #[test]
    fn a_gauge_read_between_its_up_and_its_down_is_never_huge() {
        // The stripe with the `+1` was read before the admission, the one with the `-1`
        // after the end: the sum is -1, which must not read as 2^64 - 1 requests.
        assert_eq!(gauge_sum([0, u64::MAX].into_iter()), 0);
        assert_eq!(gauge_sum([3, u64::MAX].into_iter()), 2);
    }
}
