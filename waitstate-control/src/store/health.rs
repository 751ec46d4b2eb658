//! Whether Redis answers, and what this replica does: for the logs (a line when it goes
//! away and when it returns, not one per failed call) and for `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use redis::RedisError;
use tracing::{error, info};

/// Whether Redis answers, and what this replica does, for logs and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Health {
    up: AtomicBool,
    errors: AtomicU64,
    pub(super) leader: AtomicBool,
    pub(super) carried: AtomicU64,
    /// The latest wall-clock time seen (epoch ms).
    pub(super) now_ms: AtomicU64,
    /// While Redis is down, no call before this (epoch ms): one probe a second, not a
    /// reconnection attempt on every pulse.
    retry_at: AtomicU64,
}

/// While Redis is down, how often it is tried again.
const PROBE_MS: u64 = 1000;

impl Health {
    pub(super) fn ok(&self) {
        if !self.up.swap(true, Relaxed) {
            info!("Redis reachable: fleet state shared");
        }
    }

    /// The wall clock reads `now_ms`.
    pub(super) fn saw(&self, now_ms: u64) {
        self.now_ms.fetch_max(now_ms, Relaxed);
    }

    /// Whether to call Redis now: it is up, or the next probe is due.
    pub(super) fn may_try(&self) -> bool {
        self.is_up() || self.now_ms.load(Relaxed) >= self.retry_at.load(Relaxed)
    }

    pub(super) fn failed(&self, what: &str, e: &RedisError) {
        self.errors.fetch_add(1, Relaxed);
        self.retry_at
            .store(self.now_ms.load(Relaxed).saturating_add(PROBE_MS), Relaxed);
        if self.up.swap(false, Relaxed) {
            error!(error = %e, what, "Redis unreachable: answering with the last fleet policy, keeping telemetry until it returns");
        }
    }

    /// Whether the last call to Redis succeeded.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Whether this replica holds the evaluator's lease.
    pub(crate) fn is_leader(&self) -> bool {
        self.leader.load(Relaxed)
    }

    pub(super) fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let b = |v: bool| u8::from(v);
        let _ = write!(
            out,
            "# HELP waitstate_store_up Whether Redis answered the last call (1) or not (0).\n\
             # TYPE waitstate_store_up gauge\nwaitstate_store_up {}\n\
             # HELP waitstate_store_errors_total Redis calls that failed.\n\
             # TYPE waitstate_store_errors_total counter\nwaitstate_store_errors_total {}\n\
             # HELP waitstate_store_leader Whether this replica evaluates the fleet rules.\n\
             # TYPE waitstate_store_leader gauge\nwaitstate_store_leader {}\n\
             # HELP waitstate_store_carried_pulses Pulses taken whose telemetry waits for Redis.\n\
             # TYPE waitstate_store_carried_pulses gauge\nwaitstate_store_carried_pulses {}\n",
            b(self.is_up()),
            self.errors.load(Relaxed),
            b(self.is_leader()),
            self.carried.load(Relaxed),
        );
    }
}
