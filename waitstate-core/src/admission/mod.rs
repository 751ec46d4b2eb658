//! Adaptive admission: a concurrency limit learned from the backend's service time, and a
//! short, deadline-bounded wait per priority when it is full. On by default; nothing to tune.
//!
//! # How it works
//!
//! - **One pool of slots**, counted exactly: an admitted request takes a slot with one
//!   compare-and-swap (no check-then-act race) and gives it back when its ticket ends.
//! - **The limit is learned** per instance from the service time of successful requests
//!   (time in the backend, from the slot's grant to the end of the response) against a
//!   no-load baseline, in the style of Netflix's Gradient2 and Envoy's gradient controller.
//!   The formula and its constants are on the controller (`limit.rs`).
//! - **When the pool is full** a request waits in its priority level's queue: the highest
//!   level first, FIFO within a level; a lower level below a small floor (a twentieth of
//!   the limit, rounded down) is served first so it is never starved. A wait is bounded
//!   by a deadline: the per-level maximum (two learned service times for the top level,
//!   one for every other, within 10 ms..1 s, or `[admission] max_wait` for all) or the
//!   client's own, whichever is shorter. A
//!   request whose wait cannot end in time, because the queue ahead of it is already long,
//!   is turned away at once (`concurrency_limited`), and a newcomer of a higher level turns
//!   away the lower-level waiters it makes late, lowest level first. No doomed work starts.
//! - Rules and static limits act on top: a `limit concurrency to N` rule or `[limits]
//!   concurrency` caps the learned limit; every other check runs before a request queues.
//!
//! # Failure modes the peers met, and what this does about them
//!
//! | failure | here |
//! |---|---|
//! | the baseline drifts up under sustained overload (Gradient2's moving average, failsafe-go) | the baseline falls freely but rises only when two probes in a row show that less in flight does not lower the latency |
//! | the limit creeps up from a constant queue term (concurrency-limits #134) | the queue term is added to a knee estimate `L·B/x`, a fixed point under overload |
//! | dropped or failed requests with near-zero latency skew the samples | only successful completions are samples; a request turned away, timed out in the queue or cancelled gives none |
//! | low-traffic windows move the limit | a window needs 20 samples; one that cannot gather them in 5 s is dropped without a change, and a window whose demand stayed under the limit changes nothing |
//! | slow cold start | the limit doubles each clean window until queueing first shows |
//! | probes hurt throughput (Envoy's minRTT at concurrency 3) | a probe holds 3/4 of the limit for ~50 samples; the queue absorbs it |
//! | partitions race past the global limit | one pool, one counter, one CAS; priorities only decide who gets the next free slot |

mod limit;
mod pool;

use std::time::Duration;

pub(crate) use limit::LimitSettings;
pub(crate) use pool::{CellState, Pool, PoolSettings, WaitCell};

/// Adaptive admission's state, for dashboards and metrics ([`Engine::admission`](crate::Engine::admission)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AdmissionState {
    /// Whether the limit is learned (`false`: only a static cap, if any, binds).
    pub adaptive: bool,
    /// The limit in force: requests the backend may hold (`u64::MAX` when nothing binds).
    pub limit: u64,
    /// The learned no-load service time (median), once known.
    pub baseline: Option<Duration>,
    /// The median service time of the last window that counted.
    pub service_time: Option<Duration>,
    /// Whether a probe holds the limit lower right now.
    pub probing: bool,
    /// Slots in use.
    pub in_flight: u64,
    /// The longest a request of the lowest level waits for a slot now (the top level may
    /// wait twice as long).
    pub max_wait: Duration,
    /// Per priority level, lowest first.
    pub levels: Vec<LevelState>,
}

/// One priority level's share of admission.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LevelState {
    /// The level's priority.
    pub priority: i64,
    /// Slots its requests hold.
    pub in_flight: u64,
    /// Requests waiting for a slot now.
    pub waiting: u64,
    /// Requests that ever had to wait (cumulative).
    pub queued_total: u64,
    /// Time the granted waiters spent waiting (cumulative).
    pub waited_total: Duration,
    /// Waiters turned away: deadline passed, or made late by higher levels (cumulative).
    pub timed_out_total: u64,
}

#[cfg(test)]
mod tests;
