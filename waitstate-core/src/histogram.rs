//! Per-tag latency histograms: the data reflex rules read (p50/p95/p99) and
//! that instances exchange over the wire and merge across a fleet.
//!
//! # Layout
//!
//! All histograms share one fixed log-linear layout over microseconds
//! ([`BUCKETS`] buckets, identical on every instance, so histograms from
//! different instances merge bucket by bucket):
//!
//! * values `0..32` µs each get an exact bucket of width 1;
//! * every octave `[2^k, 2^(k+1))` for `k` in `5..36` is split into 16
//!   equal-width buckets of width `2^(k-4)`;
//! * the top of the layout is `2^36` µs (about 19.1 hours); larger values are
//!   clamped into the last bucket.
//!
//! A bucket is represented by its midpoint (its only value, for exact
//! buckets), so any value below the top is represented with a relative error
//! of at most 1/32 (≈ 3.1 %).
//!
//! # Recording and windows
//!
//! The hot path records into an [`AtomicHistogram`] (one relaxed `fetch_add`,
//! no lock, no allocation). Counts only grow; a reader copies them into a plain
//! [`Histogram`] with [`AtomicHistogram::load_into`] and obtains the counts of
//! a time window as `later - earlier` with [`Histogram::subtract`]. Nothing in
//! this module reads a clock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// log2 of the number of sub-buckets per power of two.
const SUB_BUCKET_BITS: u32 = 4;
/// Number of equal-width sub-buckets each octave is split into.
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Values below `2^TOP_EXPONENT` µs get their own bucket; larger ones clamp.
const TOP_EXPONENT: u32 = 36;
/// Largest value (in µs) that is not clamped.
const MAX_TRACKABLE: u64 = (1 << TOP_EXPONENT) - 1;

/// Number of buckets in the log-linear layout (a constant, same on every
/// instance).
///
/// It is part of the wire format (see [`SparseHistogram`]): changing the
/// layout requires a new layout name.
pub const BUCKETS: usize = index_of(MAX_TRACKABLE) + 1;

// The wire layout "loglin16us" is pinned: 32 exact buckets + 31 octaves × 16.
const _: () = assert!(BUCKETS == 528);

/// Bucket index of a value in microseconds (values above the top clamp into
/// the last bucket).
///
/// With `k` the position of the highest set bit of `max(v, 16)`, the bucket is
/// `(k - 4) * 16 + (v >> (k - 4))`: `v >> (k - 4)` lies in `16..32`, its low 4
/// bits select the sub-bucket. For `v < 32` this is `v` itself.
const fn index_of(micros: u64) -> usize {
    let v = if micros > MAX_TRACKABLE {
        MAX_TRACKABLE
    } else {
        micros
    };
    // `| 16` makes every value below 32 use shift 0 (exact buckets).
    let k = 63 - (v | SUB_BUCKETS as u64).leading_zeros();
    let shift = k - SUB_BUCKET_BITS;
    ((shift as usize) << SUB_BUCKET_BITS) + (v >> shift) as usize
}

/// Half-open bounds `[lo, hi)` in microseconds of bucket `i` (`i < BUCKETS`).
///
/// For the last bucket, `hi` is the nominal top `2^36`; clamped values above
/// it are counted there too.
const fn bucket_bounds(i: usize) -> (u64, u64) {
    if i < SUB_BUCKETS {
        return (i as u64, i as u64 + 1);
    }
    let shift = (i >> SUB_BUCKET_BITS) as u32 - 1;
    let lo = ((SUB_BUCKETS + (i & (SUB_BUCKETS - 1))) as u64) << shift;
    (lo, lo + (1 << shift))
}

/// Representative value of bucket `i`: its midpoint (`lo` for exact buckets).
const fn representative(i: usize) -> u64 {
    let (lo, hi) = bucket_bounds(i);
    lo + (hi - lo) / 2
}

/// Upper bounds (inclusive, µs) of the first seven v1 wire buckets; the eighth
/// is unbounded.
const V1_UPPER_MICROS: [u64; 7] = [
    50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
];

/// For each log-linear bucket, the v1 bucket its representative falls in.
const V1_OF_BUCKET: [u8; BUCKETS] = {
    let mut table = [0u8; BUCKETS];
    let mut i = 0;
    while i < BUCKETS {
        let mid = representative(i);
        let mut v1 = 0;
        while v1 < V1_UPPER_MICROS.len() && mid > V1_UPPER_MICROS[v1] {
            v1 += 1;
        }
        table[i] = v1 as u8;
        i += 1;
    }
    table
};

/// Converts a duration to whole microseconds, saturating at `u64::MAX`.
fn duration_micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)
}

/// Lock-free latency recorder for the hot path.
///
/// Recording is one relaxed `fetch_add`: no allocation, no lock. The bucket
/// array is allocated once in [`AtomicHistogram::new`]. Counts are cumulative
/// (they only grow); read them with [`AtomicHistogram::load_into`].
pub struct AtomicHistogram {
    counts: Box<[AtomicU64; BUCKETS]>,
}

impl AtomicHistogram {
    /// Creates an empty recorder (allocates the bucket array once).
    pub fn new() -> Self {
        Self {
            counts: Box::new([const { AtomicU64::new(0) }; BUCKETS]),
        }
    }

    /// Records one latency at microsecond resolution (sub-microsecond parts
    /// are truncated); latencies above the top of the layout are clamped into
    /// the last bucket.
    #[inline]
    pub fn record(&self, latency: Duration) {
        self.record_micros(duration_micros(latency));
    }

    /// Records one latency given in microseconds (clamped above the top).
    #[inline]
    pub fn record_micros(&self, micros: u64) {
        self.counts[index_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the cumulative counts into `out`, overwriting it. No allocation.
    ///
    /// Buckets are loaded one by one with relaxed ordering, so under
    /// concurrent recording the copy is not an atomic snapshot: a record
    /// racing with the copy may or may not be included. Since counts only grow,
    /// every bucket of a later copy is at least the same bucket of an earlier
    /// one, and [`Histogram::subtract`] yields the records in between.
    pub fn load_into(&self, out: &mut Histogram) {
        for (dst, src) in out.counts.iter_mut().zip(self.counts.iter()) {
            *dst = src.load(Ordering::Relaxed);
        }
    }

    /// Adds the cumulative counts into `out` (saturating), for a histogram kept in stripes
    /// and read as their sum. No allocation.
    pub(crate) fn add_into(&self, out: &mut Histogram) {
        for (dst, src) in out.counts.iter_mut().zip(self.counts.iter()) {
            *dst = dst.saturating_add(src.load(Ordering::Relaxed));
        }
    }

    /// Total number of records (sum over buckets, relaxed loads).
    fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |acc, c| acc.saturating_add(c.load(Ordering::Relaxed)))
    }
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AtomicHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AtomicHistogram")
            .field("count", &self.total())
            .finish_non_exhaustive()
    }
}

/// Plain (non-atomic) latency histogram over the shared log-linear layout:
/// mergeable, subtractable, and answers quantiles.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
}

impl Histogram {
    /// Creates an empty histogram.
    pub fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
        }
    }

    /// Records one value in microseconds (clamped above the top).
    #[inline]
    pub fn record_micros(&mut self, micros: u64) {
        self.record_n_micros(micros, 1);
    }

    /// Records `n` occurrences of a value in microseconds (clamped above the
    /// top); the bucket count saturates at `u64::MAX`.
    #[inline]
    pub fn record_n_micros(&mut self, micros: u64, n: u64) {
        let c = &mut self.counts[index_of(micros)];
        *c = c.saturating_add(n);
    }

    /// Total number of recorded values (saturating at `u64::MAX`).
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |acc, &c| acc.saturating_add(c))
    }

    /// Whether no value is recorded.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// Resets every bucket to zero (keeps the allocation).
    pub fn clear(&mut self) {
        self.counts.fill(0);
    }

    /// Adds `other` into `self`, bucket-wise, saturating at `u64::MAX`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, &b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(b);
        }
    }

    /// `self = self - earlier`, bucket-wise, saturating at 0.
    ///
    /// With cumulative copies from [`AtomicHistogram::load_into`], `later`
    /// minus `earlier` is the histogram of the values recorded in between
    /// (the window).
    pub fn subtract(&mut self, earlier: &Histogram) {
        for (a, &b) in self.counts.iter_mut().zip(earlier.counts.iter()) {
            *a = a.saturating_sub(b);
        }
    }

    /// The `q`-quantile in microseconds, by nearest rank.
    ///
    /// `q` is clamped to `[0, 1]`; returns `None` when the histogram is empty
    /// or `q` is NaN. The result is the representative value (midpoint, or the
    /// exact value for buckets of width 1) of the bucket holding the sample of
    /// rank `ceil(q * count)` (1-based, at least 1), so its relative error
    /// against that sample is at most 1/32 (≈ 3.1 %) below the top of the
    /// layout. Values clamped above the top are reported as the last bucket's
    /// midpoint.
    pub fn quantile_micros(&self, q: f64) -> Option<u64> {
        if q.is_nan() {
            return None;
        }
        let count = self.count();
        if count == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        // `as` saturates; the clamp keeps the rank in 1..=count.
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen >= rank {
                return Some(representative(i));
            }
        }
        // Unreachable: the buckets sum to `count >= rank`.
        Some(representative(BUCKETS - 1))
    }

    /// The `q`-quantile in milliseconds (see [`Histogram::quantile_micros`]).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.quantile_micros(q).map(|us| us as f64 / 1000.0)
    }

    /// Approximate mean in milliseconds, from bucket representatives (`None`
    /// when empty).
    pub fn mean_ms(&self) -> Option<f64> {
        let mut sum: u128 = 0;
        let mut n: u128 = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            sum += u128::from(representative(i)) * u128::from(c);
            n += u128::from(c);
        }
        if n == 0 {
            return None;
        }
        Some(sum as f64 / n as f64 / 1000.0)
    }

    /// The v1 wire protocol's 8 counts over the fixed millisecond ranges
    /// `[0,50]`, `(50,100]`, `(100,250]`, `(250,500]`, `(500,1000]`,
    /// `(1000,2500]`, `(2500,5000]`, `(5000,+inf)`.
    ///
    /// Each log-linear bucket is attributed as a whole to the v1 range holding
    /// its representative (midpoint). A bucket straddling a v1 bound goes to
    /// one side only, so values within one bucket width (≤ 1/16 relative) of a
    /// bound may be counted in the neighbouring range: e.g. a value of exactly
    /// 50 ms lies in bucket `[49.152, 51.2)` ms whose midpoint 50.176 ms is
    /// counted in `(50,100]`. Values well inside a range are always counted
    /// in it, and the 8 counts always sum to [`Histogram::count`] (unless that
    /// saturates).
    pub fn v1_buckets(&self) -> [u64; 8] {
        let mut out = [0u64; 8];
        for (&c, &v1) in self.counts.iter().zip(V1_OF_BUCKET.iter()) {
            let slot = &mut out[usize::from(v1)];
            *slot = slot.saturating_add(c);
        }
        out
    }

    /// The sparse wire form: non-zero buckets only, in increasing index order.
    pub fn to_sparse(&self) -> SparseHistogram {
        let buckets = self
            .counts
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c != 0)
            .map(|(i, &c)| (i as u32, c))
            .collect();
        SparseHistogram {
            layout: SparseHistogram::LAYOUT.to_owned(),
            buckets,
        }
    }

    /// Rebuilds a histogram from its sparse wire form.
    ///
    /// Entries may come in any order and zero counts are accepted. Errors
    /// (never panics) on an unknown layout name, an index `>= BUCKETS`, or an
    /// index given twice.
    pub fn from_sparse(s: &SparseHistogram) -> Result<Histogram, HistogramError> {
        if s.layout != SparseHistogram::LAYOUT {
            return Err(HistogramError::UnknownLayout {
                layout: s.layout.clone(),
            });
        }
        let mut seen = [0u64; BUCKETS.div_ceil(64)];
        let mut h = Histogram::new();
        for &(index, count) in &s.buckets {
            let i = usize::try_from(index)
                .ok()
                .filter(|&i| i < BUCKETS)
                .ok_or(HistogramError::IndexOutOfRange { index })?;
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if seen[word] & bit != 0 {
                return Err(HistogramError::DuplicateIndex { index });
            }
            seen[word] |= bit;
            h.counts[i] = count;
        }
        Ok(h)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("p50_us", &self.quantile_micros(0.5))
            .field("p99_us", &self.quantile_micros(0.99))
            .finish_non_exhaustive()
    }
}

/// Sparse wire form of a [`Histogram`] for our protocol extension: only the
/// non-zero buckets.
///
/// Serialized (serde, JSON) as
/// `{"layout":"loglin16us","buckets":[[index,count],...]}`; unknown fields
/// are ignored when deserializing. Validate with [`Histogram::from_sparse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SparseHistogram {
    /// Name of the bucket layout; [`SparseHistogram::LAYOUT`] for this one.
    pub layout: String,
    /// `(bucket index, count)` pairs, index in `0..BUCKETS`.
    pub buckets: Vec<(u32, u64)>,
}

impl SparseHistogram {
    /// Name of the log-linear layout of this module (16 sub-buckets per power
    /// of two, microseconds, [`BUCKETS`] buckets).
    pub const LAYOUT: &'static str = "loglin16us";
}

/// Why a [`SparseHistogram`] could not be turned into a [`Histogram`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HistogramError {
    /// The layout name is not [`SparseHistogram::LAYOUT`].
    UnknownLayout {
        /// The layout name received.
        layout: String,
    },
    /// A bucket index is not below [`BUCKETS`].
    IndexOutOfRange {
        /// The offending index.
        index: u32,
    },
    /// A bucket index appears more than once.
    DuplicateIndex {
        /// The repeated index.
        index: u32,
    },
}

impl fmt::Display for HistogramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownLayout { layout } => write!(
                f,
                "unknown histogram layout {layout:?} (expected {:?})",
                SparseHistogram::LAYOUT
            ),
            Self::IndexOutOfRange { index } => write!(
                f,
                "histogram bucket index {index} out of range (must be below {BUCKETS})"
            ),
            Self::DuplicateIndex { index } => {
                write!(f, "histogram bucket index {index} appears more than once")
            }
        }
    }
}

impl std::error::Error for HistogramError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hist_of(values: &[u64]) -> Histogram {
        let mut h = Histogram::new();
        for &v in values {
            h.record_micros(v);
        }
        h
    }

    /// Nearest-rank quantile: the value at rank `ceil(q * n)` (1-based).
    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let n = sorted.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        sorted[rank - 1]
    }

    #[test]
    fn layout_constants() {
        assert_eq!(BUCKETS, 528);
        assert_eq!(bucket_bounds(BUCKETS - 1).1, 1 << TOP_EXPONENT);
        assert_eq!(bucket_bounds(0), (0, 1));
    }

    #[test]
    fn index_and_bounds_are_consistent() {
        let mut prev_hi = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert!(lo < hi, "bucket {i} empty: [{lo}, {hi})");
            assert_eq!(lo, prev_hi, "bucket {i} not contiguous");
            assert_eq!(index_of(lo), i, "lo of bucket {i}");
            assert_eq!(index_of(hi - 1), i, "hi-1 of bucket {i}");
            let mid = representative(i);
            assert!(lo <= mid && mid < hi);
            assert_eq!(index_of(mid), i);
            // Width at most lo/16: midpoint error at most 1/32 relative.
            if lo > 0 {
                assert!((hi - lo) * 16 <= lo.max(16), "bucket {i} too wide");
            }
            prev_hi = hi;
        }
        assert_eq!(prev_hi, MAX_TRACKABLE + 1);
    }

    #[test]
    fn index_is_monotone() {
        let mut prev = 0;
        let mut v = 0u64;
        while v < (1 << 37) {
            let i = index_of(v);
            assert!(i >= prev, "index_of not monotone at {v}");
            assert!(i < BUCKETS);
            prev = i;
            v = v + 1 + v / 97;
        }
    }

    #[test]
    fn small_values_are_exact() {
        for v in 0..32 {
            assert_eq!(index_of(v), v as usize);
            let h = hist_of(&[v]);
            assert_eq!(h.quantile_micros(0.5), Some(v));
            assert_eq!(h.quantile_micros(0.0), Some(v));
            assert_eq!(h.quantile_micros(1.0), Some(v));
        }
    }

    #[test]
    fn values_above_top_clamp_to_last_bucket() {
        for v in [MAX_TRACKABLE, MAX_TRACKABLE + 1, 1 << 40, u64::MAX] {
            assert_eq!(index_of(v), BUCKETS - 1);
        }
        let a = AtomicHistogram::new();
        a.record(Duration::MAX);
        a.record_micros(u64::MAX);
        let mut h = Histogram::new();
        a.load_into(&mut h);
        assert_eq!(h.count(), 2);
        assert_eq!(h.quantile_micros(1.0), Some(representative(BUCKETS - 1)));
        assert_eq!(h.v1_buckets()[7], 2);
    }

    #[test]
    fn duration_is_truncated_to_micros() {
        let a = AtomicHistogram::new();
        a.record(Duration::from_nanos(999));
        a.record(Duration::from_nanos(7_999));
        let mut h = Histogram::new();
        a.load_into(&mut h);
        assert_eq!(h.quantile_micros(0.0), Some(0));
        assert_eq!(h.quantile_micros(1.0), Some(7));
    }

    #[test]
    fn empty_and_nan() {
        let h = Histogram::new();
        assert!(h.is_empty());
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile_micros(0.5), None);
        assert_eq!(h.quantile_ms(0.5), None);
        assert_eq!(h.mean_ms(), None);
        assert_eq!(h.v1_buckets(), [0; 8]);
        let h = hist_of(&[1_000]);
        assert_eq!(h.quantile_micros(f64::NAN), None);
        assert_eq!(h.quantile_ms(f64::NAN), None);
    }

    #[test]
    fn q_is_clamped() {
        let h = hist_of(&[10, 20, 30]);
        assert_eq!(h.quantile_micros(-1.0), Some(10));
        assert_eq!(h.quantile_micros(f64::NEG_INFINITY), Some(10));
        assert_eq!(h.quantile_micros(2.0), Some(30));
        assert_eq!(h.quantile_micros(f64::INFINITY), Some(30));
        assert_eq!(h.quantile_micros(0.5), Some(20));
    }

    #[test]
    fn quantile_ms_and_mean() {
        let mut h = Histogram::new();
        h.record_n_micros(20, 3);
        h.record_micros(4);
        assert_eq!(h.count(), 4);
        assert_eq!(h.quantile_ms(0.5), Some(0.02));
        assert_eq!(h.mean_ms(), Some(0.016));
        let h = hist_of(&[100_000, 200_000]);
        let mean = h.mean_ms().unwrap();
        assert!((mean - 150.0).abs() / 150.0 < 0.032, "mean {mean}");
    }

    #[test]
    fn clear_resets() {
        let mut h = hist_of(&[1, 2, 3_000_000]);
        assert!(!h.is_empty());
        h.clear();
        assert!(h.is_empty());
        assert_eq!(h, Histogram::new());
    }

    #[test]
    fn merge_equals_recording_both() {
        let a = [1, 5, 17, 900, 65_000, 1_000_000];
        let b = [5, 33, 900, 7_000_000_000];
        let mut m = hist_of(&a);
        m.merge(&hist_of(&b));
        let all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
        assert_eq!(m, hist_of(&all));
        assert_eq!(m.count(), 10);
    }

    #[test]
    fn subtract_inverts_merge_and_saturates() {
        let a = hist_of(&[1, 5, 17, 900, 65_000]);
        let b = hist_of(&[5, 33, 900, 1 << 40]);
        let mut m = a.clone();
        m.merge(&b);
        m.subtract(&b);
        assert_eq!(m, a);

        let mut e = Histogram::new();
        e.subtract(&a);
        assert!(e.is_empty());
    }

    #[test]
    fn window_from_cumulative_copies() {
        let a = AtomicHistogram::new();
        a.record_micros(1_000);
        let mut earlier = Histogram::new();
        a.load_into(&mut earlier);
        a.record_micros(2_000);
        a.record_micros(3_000);
        let mut window = Histogram::new();
        a.load_into(&mut window);
        assert_eq!(window.count(), 3);
        window.subtract(&earlier);
        assert_eq!(window, hist_of(&[2_000, 3_000]));
    }

    #[test]
    fn v1_buckets_well_inside_each_range() {
        // (value in µs, expected v1 slot), values far from any bound.
        let cases = [
            (0, 0),
            (1, 0),
            (25_000, 0),
            (45_000, 0),
            (75_000, 1),
            (175_000, 2),
            (375_000, 3),
            (750_000, 4),
            (1_750_000, 5),
            (3_750_000, 6),
            (6_000_000, 7),
            (60_000_000, 7),
            (u64::MAX, 7),
        ];
        for (v, slot) in cases {
            let mut expected = [0u64; 8];
            expected[slot] = 1;
            assert_eq!(hist_of(&[v]).v1_buckets(), expected, "value {v} µs");
        }
        let all: Vec<u64> = cases.iter().map(|&(v, _)| v).collect();
        let h = hist_of(&all);
        assert_eq!(h.v1_buckets().iter().sum::<u64>(), h.count());
    }

    #[test]
    fn v1_buckets_at_bounds_are_approximate() {
        // A value exactly on a bound lands in the range just below or just
        // above it, depending on the midpoint of its log-linear bucket.
        for (slot, &bound) in V1_UPPER_MICROS.iter().enumerate() {
            for v in [bound - 1, bound, bound + 1] {
                let got = hist_of(&[v]).v1_buckets();
                let landed = got.iter().position(|&c| c == 1).unwrap();
                assert!(
                    landed == slot || landed == slot + 1,
                    "value {v} µs landed in v1 slot {landed}"
                );
                assert_eq!(got.iter().sum::<u64>(), 1);
            }
            // Values more than one bucket width (1/16) away are exact.
            let below = bound - bound / 15;
            let above = bound + bound / 15;
            assert_eq!(hist_of(&[below]).v1_buckets()[slot], 1, "{below} µs");
            assert_eq!(hist_of(&[above]).v1_buckets()[slot + 1], 1, "{above} µs");
        }
        // The documented example: exactly 50 ms is reported in (50,100].
        assert_eq!(hist_of(&[50_000]).v1_buckets()[1], 1);
        // Every value in [0, 2^36) lands in one slot; counts always sum up.
        let mut h = Histogram::new();
        for i in 0..BUCKETS {
            h.record_n_micros(bucket_bounds(i).0, i as u64 + 1);
        }
        assert_eq!(h.v1_buckets().iter().sum::<u64>(), h.count());
    }

    #[test]
    fn sparse_round_trip() {
        let h = hist_of(&[0, 3, 3, 1_000, 250_000, 250_000, u64::MAX]);
        let s = h.to_sparse();
        assert_eq!(s.layout, SparseHistogram::LAYOUT);
        assert_eq!(s.buckets.len(), 5);
        assert!(s.buckets.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(s.buckets.iter().all(|&(_, c)| c > 0));
        assert_eq!(Histogram::from_sparse(&s), Ok(h.clone()));

        let json = serde_json::to_string(&s).unwrap();
        let back: SparseHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(Histogram::from_sparse(&back), Ok(h));

        let empty = Histogram::new().to_sparse();
        assert!(empty.buckets.is_empty());
        assert_eq!(Histogram::from_sparse(&empty), Ok(Histogram::new()));
    }

    #[test]
    fn sparse_json_shape() {
        let mut h = Histogram::new();
        h.record_n_micros(3, 2);
        h.record_micros(40);
        let json = serde_json::to_string(&h.to_sparse()).unwrap();
        assert_eq!(json, r#"{"layout":"loglin16us","buckets":[[3,2],[36,1]]}"#);

        // Unknown fields are ignored; order of entries is free.
        let s: SparseHistogram = serde_json::from_str(
            r#"{"layout":"loglin16us","extra":{"x":1},"buckets":[[36,1],[3,2]]}"#,
        )
        .unwrap();
        assert_eq!(Histogram::from_sparse(&s), Ok(h));
    }

    #[test]
    fn sparse_errors() {
        let ok = |buckets: Vec<(u32, u64)>| SparseHistogram {
            layout: SparseHistogram::LAYOUT.to_owned(),
            buckets,
        };
        let last = (BUCKETS - 1) as u32;
        assert!(Histogram::from_sparse(&ok(vec![(last, 1)])).is_ok());

        let err = Histogram::from_sparse(&ok(vec![(1, 1), (last + 1, 1)])).unwrap_err();
        assert_eq!(err, HistogramError::IndexOutOfRange { index: last + 1 });
        assert!(err.to_string().contains("out of range"), "{err}");
        assert_eq!(
            Histogram::from_sparse(&ok(vec![(u32::MAX, 1)])),
            Err(HistogramError::IndexOutOfRange { index: u32::MAX })
        );

        let err = Histogram::from_sparse(&ok(vec![(7, 1), (9, 1), (7, 2)])).unwrap_err();
        assert_eq!(err, HistogramError::DuplicateIndex { index: 7 });
        assert!(err.to_string().contains("more than once"), "{err}");
        // A zero count still counts as an occurrence.
        assert_eq!(
            Histogram::from_sparse(&ok(vec![(7, 0), (7, 1)])),
            Err(HistogramError::DuplicateIndex { index: 7 })
        );

        let bad = SparseHistogram {
            layout: "hdr3".to_owned(),
            buckets: vec![(1, 1)],
        };
        let err = Histogram::from_sparse(&bad).unwrap_err();
        assert_eq!(
            err,
            HistogramError::UnknownLayout {
                layout: "hdr3".to_owned()
            }
        );
        assert!(
            err.to_string().contains("unknown histogram layout"),
            "{err}"
        );
        let _: &dyn std::error::Error = &err;
    }

    #[test]
    fn debug_is_compact() {
        let a = AtomicHistogram::default();
        a.record_micros(5);
        let s = format!("{a:?}");
        assert!(s.contains("count: 1"), "{s}");
        assert!(s.len() < 100, "{s}");

        let h = hist_of(&[5, 6]);
        let s = format!("{h:?}");
        assert!(s.contains("count: 2"), "{s}");
        assert!(s.len() < 100, "{s}");
        assert_eq!(Histogram::default(), Histogram::new());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn quantiles_within_5_percent(
            mut values in prop::collection::vec(1u64..10_000_000, 1..2000),
        ) {
            let h = hist_of(&values);
            values.sort_unstable();
            for q in [0.5, 0.95, 0.99] {
                let exact = exact_quantile(&values, q) as f64;
                let got = h.quantile_micros(q).unwrap() as f64;
                let rel = (got - exact).abs() / exact;
                prop_assert!(rel < 0.05, "q={} exact={} got={} rel={}", q, exact, got, rel);
                let ms = h.quantile_ms(q).unwrap();
                prop_assert!((ms * 1000.0 - got).abs() < 1e-6);
            }
        }

        #[test]
        fn merge_equals_concatenation(
            a in prop::collection::vec(0u64..1 << 40, 0..500),
            b in prop::collection::vec(0u64..1 << 40, 0..500),
        ) {
            let mut m = hist_of(&a);
            m.merge(&hist_of(&b));
            let all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
            let expected = hist_of(&all);
            prop_assert_eq!(m.count(), all.len() as u64);
            prop_assert_eq!(m.v1_buckets().iter().sum::<u64>(), m.count());
            prop_assert_eq!(&m, &expected);
            m.subtract(&hist_of(&b));
            prop_assert_eq!(m, hist_of(&a));
        }

        #[test]
        fn atomic_load_equals_plain(
            values in prop::collection::vec(any::<u64>(), 0..500),
        ) {
            let a = AtomicHistogram::new();
            for &v in &values {
                a.record_micros(v);
            }
            let mut h = hist_of(&[1, 2, 3]); // overwritten, not merged
            a.load_into(&mut h);
            prop_assert_eq!(&h, &hist_of(&values));
            prop_assert_eq!(Histogram::from_sparse(&h.to_sparse()), Ok(h));
        }
    }
}
