//! The pure engine: a tag table and a compiled policy behind one atomic pointer, and the
//! decision. It reads no clock: every call that needs time takes `now`, the time since an
//! origin of the caller's choosing (the runtime uses its start).
//!
//! # The decision order
//!
//! Every request meets these checks in this order; the first that refuses names the
//! [`Reason`](crate::Reason). Where each lives:
//!
//! | # | check | reason | where |
//! |---|---|---|---|
//! | 0 | the tagger marks the request exempt (health checks, probes): passed on, never gated, never counted | — | [`adapter::gate`](crate::adapter) |
//! | 1 | the control plane's lease has expired and the safe mode is `fixed_rps` with its budget spent | `lease_expired` | the runtime's `safe_mode_gate` (feature `runtime`) |
//! | 2 | the weight is NaN, negative or +inf | `over_weight` | `check::run_checks` (v1) |
//! | 3 | `killSignal` | `kill_signal` | v1 |
//! | 4 | `globalMaxWeight <= 0` | `global_block` | v1 |
//! | 5 | weight above the tag's `tagMaxWeights` (0 = blocked) | `tag_blocked` | v1 |
//! | 6 | weight above `globalMaxWeight` | `over_weight` | v1 |
//! | 7 | the tag's priority is below `priorityFloor` | `priority_shed` | ours |
//! | 8 | the tag's, level's or global throttle turns it away (deterministic credit, per cohort when keyed) | `throttled` | ours |
//! | 9 | the tag's rate budget (GCRA) is spent | `rate_limited` | ours |
//! | 10 | a dry-run rule's concurrency limit (counted, never enforced) | `concurrency_limited` | ours |
//! | 11 | admission: a slot of the pool (the learned limit under any static `concurrencyLimit`), at once or after a deadline-bounded wait in the level's queue | `concurrency_limited` | [`crate::admission`] |
//!
//! The policy checked is the merge (the stricter wins) of the configuration's `[limits]`, the
//! local reflex rules' policy and the control plane's. Dry-run rules are checked after
//! enforcement passes, counted as `would_reject`, and never refuse. In an engine in dry-run
//! mode nothing refuses.
//!
//! # Files
//! `check` (the hot path and the checks above), `compile` (policies into per-tag checks,
//! the snapshot), `metrics` (custom metrics and counters), `ticket` (the admitted request's
//! guard), `demand` (what a request asks).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;

use crate::config::Config;
use crate::error::ConfigError;
use crate::policy::Policy;
use crate::registry::{CustomSet, DEFAULT_TAG, Global, OVERFLOW_TAG, TagSlot};

use compile::{PolicySources, Snapshot};

mod check;
mod compile;
mod demand;
mod metrics;
mod queued;
// Written against TOML configurations: with the `toml` feature (on by default).
#[cfg(all(test, feature = "toml"))]
mod tests;
mod ticket;

pub use compile::RECLAIM_QUIET;
pub use demand::{Demand, ReportError};
pub use queued::{Admit, Queued};
pub use ticket::Ticket;

/// The engine: tags, policy, decisions and counters. Time is passed in.
///
/// `decide` and `admit` are lock-free and allocation-free in the steady state: one atomic
/// load of the snapshot, one hash lookup, a handful of relaxed atomics. A tag seen for the
/// first time takes a lock once to get its slot; past the cap it does not.
pub struct Engine {
    snapshot: ArcSwap<Snapshot>,
    sources: Mutex<PolicySources>,
    global: Arc<Global>,
    overflow: Arc<TagSlot>,
    untagged: CustomSet,
    priorities: HashMap<String, i64, RandomState>,
    default_priority: i64,
    /// The configuration's `[limits]`: every policy is merged with them.
    config_limits: Policy,
    tag_cap: usize,
    dry_run: bool,
    retry_after: Duration,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = self.snapshot.load();
        f.debug_struct("Engine")
            .field("tags", &snap.tags.len())
            .field("tag_cap", &self.tag_cap)
            .field("dry_run", &self.dry_run)
            .field("policy", &snap.policy)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine for this configuration, with the open policy.
    ///
    /// # Errors
    /// What [`Config::validate`] finds.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut levels: BTreeSet<i64> = config.tags.values().copied().collect();
        levels.insert(config.default_priority);
        let levels: Vec<i64> = levels.into_iter().collect();
        let global = Arc::new(Global::new(&levels, config.admission.pool_settings()));
        let overflow = TagSlot::create(OVERFLOW_TAG, config.default_priority, &global);
        let mut slots = Vec::with_capacity(config.tags.len() + 1);
        slots.push(TagSlot::create(
            DEFAULT_TAG,
            config.priority_of(DEFAULT_TAG),
            &global,
        ));
        for (name, prio) in &config.tags {
            if name != DEFAULT_TAG {
                slots.push(TagSlot::create(name, *prio, &global));
            }
        }
        let engine = Self {
            snapshot: ArcSwap::from_pointee(Snapshot::empty(&overflow)),
            sources: Mutex::new(PolicySources {
                slots,
                local: Policy::default(),
                local_dry: Policy::default(),
                remote: None,
                metrics: Vec::new(),
                quiet: HashMap::default(),
            }),
            global,
            overflow,
            untagged: CustomSet::default(),
            priorities: config.tags.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            default_priority: config.default_priority,
            config_limits: config.limits.to_policy(),
            tag_cap: config.tag_cap,
            dry_run: config.dry_run,
            retry_after: config.retry_after,
        };
        engine.rebuild(&mut engine.lock());
        Ok(engine)
    }

    fn lock(&self) -> MutexGuard<'_, PolicySources> {
        // A panic while holding the lock cannot leave the writer half-updated in a way that
        // matters (every update is a whole replacement), so a poisoned lock is used as is.
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The distinct priorities, lowest first (configured tags and the default).
    pub fn priority_levels(&self) -> &[i64] {
        self.global.levels()
    }

    /// The priority of a tag.
    pub fn priority_of(&self, tag: &str) -> i64 {
        self.priorities
            .get(tag)
            .copied()
            .unwrap_or(self.default_priority)
    }

    /// Whether the engine is in dry-run mode (computes and counts, rejects nothing).
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }
}
