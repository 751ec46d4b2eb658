//! The exported histogram's buckets: powers of two of the engine's log-linear layout, so
//! each count is exact (see the crate docs).

use waitstate_core::histogram::Histogram;

/// The first and last exported edge, as powers of two of microseconds.
const FIRST_EDGE: u32 = 8;
const LAST_EDGE: u32 = 26;
const EDGES: usize = (LAST_EDGE - FIRST_EDGE + 1) as usize;

/// The `le` bounds of `waitstate_request_duration_seconds`, in seconds: 2^8 µs (0.000256 s)
/// to 2^26 µs (67.108864 s), each an edge of the engine's buckets; `+Inf` follows.
pub const LE_SECONDS: [f64; EDGES] = {
    let mut out = [0.0; EDGES];
    let mut i = 0;
    while i < EDGES {
        out[i] = (1u64 << (FIRST_EDGE as usize + i)) as f64 / 1e6;
        i += 1;
    }
    out
};

/// Half-open bounds `[lo, hi)` in microseconds of the engine's bucket `index` (the layout
/// `loglin16us`, pinned as a wire format: 32 exact buckets, then 16 per power of two).
pub(crate) fn engine_bucket_micros(index: u32) -> (u64, u64) {
    let i = u64::from(index);
    if i < 32 {
        return (i, i + 1);
    }
    let shift = (i >> 4) - 1;
    let lo = (16 + (i & 15)) << shift;
    (lo, lo + (1 << shift))
}

/// The histogram as `(le, count in the bucket)` pairs for [`LE_SECONDS`] and `+Inf` (not
/// cumulative: the encoder adds them up), and the total count.
pub(crate) fn exported(h: &Histogram) -> (Vec<(f64, u64)>, u64) {
    let mut counts = [0u64; EDGES + 1];
    for (index, n) in h.to_sparse().buckets {
        let (_, hi) = engine_bucket_micros(index);
        // The first edge at or above the bucket's upper end: every value of the bucket is
        // below it. Edges are powers of two, bucket ends never straddle one.
        let slot = (FIRST_EDGE..=LAST_EDGE)
            .position(|k| hi <= 1u64 << k)
            .unwrap_or(EDGES);
        counts[slot] = counts[slot].saturating_add(n);
    }
    let total = counts.iter().fold(0u64, |a, b| a.saturating_add(*b));
    let pairs = LE_SECONDS
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts)
        .collect();
    (pairs, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replica of the layout agrees with the engine: a value recorded lands in the
    /// bucket whose bounds hold it.
    #[test]
    fn bucket_bounds_match_the_engine() {
        let mut v = 0u64;
        while v < 1 << 37 {
            let mut h = Histogram::new();
            h.record_micros(v);
            let sparse = h.to_sparse();
            let (index, _) = sparse.buckets[0];
            let (lo, hi) = engine_bucket_micros(index);
            let top = (1u64 << 36) - 1;
            let clamped = v.min(top);
            assert!(
                lo <= clamped && clamped < hi,
                "{v}: bucket {index} [{lo}, {hi})"
            );
            v = v * 9 / 8 + 1;
        }
    }

    #[test]
    fn counts_are_exact_at_the_edges() {
        let mut h = Histogram::new();
        // Just under and at each edge: under goes below, at goes above.
        for k in FIRST_EDGE..=LAST_EDGE {
            h.record_micros((1 << k) - 1);
            h.record_micros(1 << k);
        }
        h.record_micros(10);
        let (pairs, total) = exported(&h);
        assert_eq!(total, h.count());
        assert_eq!(pairs.len(), EDGES + 1);
        // le = 2^8 µs: 10 µs and 255 µs.
        assert_eq!(pairs[0], (0.000256, 2));
        // Each following edge k: 2^(k-1) and 2^k - 1.
        for (le, n) in pairs.iter().skip(1).take(EDGES - 1) {
            assert_eq!(*n, 2, "le {le}");
        }
        assert_eq!(pairs[EDGES], (f64::INFINITY, 1));
        assert_eq!(LE_SECONDS[EDGES - 1], 67.108864);
    }
}
