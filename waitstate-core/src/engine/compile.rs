//! Policy compilation: the local, remote and configured policies merged (the stricter
//! wins) and compiled, per tag, into the checks the hot path runs; the snapshot published
//! with one atomic store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;

use super::Engine;
use crate::error::ConfigError;
use crate::limiter::{Gcra, PPM, percent_to_ppm};
use crate::policy::Policy;
use crate::registry::{DEFAULT_TAG, MAX_TAG_LEN, OVERFLOW_TAG, TagSlot};

/// The checks one tag's requests go through, compiled from a policy (the order is in
/// `check::run_checks`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Checks {
    pub(super) kill: bool,
    pub(super) global_max_weight: f64,
    pub(super) max_weight: f64,
    pub(super) shed: bool,
    pub(super) throttle_ppm: u32,
    pub(super) rate: Option<Gcra>,
    pub(super) concurrency_cap: Option<u64>,
}

#[derive(Debug)]
pub(super) struct TagEntry {
    pub(super) slot: Arc<TagSlot>,
    pub(super) enforce: Checks,
    /// Checks from dry-run rules: checked after enforcement passes, counted, not enforced.
    pub(super) dry: Option<Checks>,
}

/// The immutable snapshot the hot path reads with one atomic load.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) tags: HashMap<Box<str>, TagEntry, RandomState>,
    pub(super) overflow: TagEntry,
    /// The registry is at its cap: an unknown tag goes to `overflow` without a lock.
    pub(super) full: bool,
    /// The metric name table for `report`.
    pub(super) metrics: HashMap<Box<str>, usize, RandomState>,
    pub(super) policy: Arc<Policy>,
    pub(super) dry_policy: Arc<Policy>,
}

#[derive(Debug)]
/// What every snapshot is compiled from; changed under the engine's lock.
pub(super) struct PolicySources {
    pub(super) slots: Vec<Arc<TagSlot>>,
    pub(super) local: Policy,
    pub(super) local_dry: Policy,
    pub(super) remote: Option<Policy>,
    pub(super) metrics: Vec<Box<str>>,
    /// Per reclaimable slot: (generation, its activity count when last seen to move, since
    /// when it has not moved).
    pub(super) quiet: HashMap<Box<str>, (u64, u64, Duration)>,
}

/// How long a tag nobody declared must stay quiet before its slot is reclaimed.
pub const RECLAIM_QUIET: Duration = Duration::from_secs(300);

impl Engine {
    /// The effective policy: local and remote merged, the stricter wins.
    pub fn policy(&self) -> Arc<Policy> {
        self.snapshot.load().policy.clone()
    }

    /// The policy of the dry-run rules (watched, not enforced).
    pub fn dry_policy(&self) -> Arc<Policy> {
        self.snapshot.load().dry_policy.clone()
    }

    /// Install the local reflex policy (enforced) and the dry-run rules' policy.
    ///
    /// # Errors
    /// [`ConfigError::Policy`] when either fails [`Policy::validate`]; the last good policy
    /// stays.
    pub fn set_local_policy(&self, enforce: Policy, dry: Policy) -> Result<(), ConfigError> {
        enforce.validate()?;
        dry.validate()?;
        let mut w = self.lock();
        if w.local == enforce && w.local_dry == dry {
            return Ok(());
        }
        w.local = enforce;
        w.local_dry = dry;
        self.rebuild(&mut w);
        Ok(())
    }

    /// Install (or with `None`, drop) the remote policy from a control plane. It merges
    /// with the local one; the stricter wins.
    ///
    /// # Errors
    /// [`ConfigError::Policy`] when it fails [`Policy::validate`]; the last good policy
    /// stays.
    pub fn set_remote_policy(&self, remote: Option<Policy>) -> Result<(), ConfigError> {
        if let Some(p) = &remote {
            p.validate()?;
        }
        let mut w = self.lock();
        if w.remote == remote {
            return Ok(());
        }
        w.remote = remote;
        self.rebuild(&mut w);
        Ok(())
    }

    /// The cold path: give `tag` a slot (if there is room) and publish a new snapshot.
    pub(super) fn register(&self, tag: &str) -> arc_swap::Guard<Arc<Snapshot>> {
        let mut w = self.lock();
        let snap = self.snapshot.load();
        if snap.tags.contains_key(tag) || snap.full {
            return snap;
        }
        drop(snap);
        w.slots
            .push(TagSlot::create(tag, self.priority_of(tag), &self.global));
        self.rebuild(&mut w);
        self.snapshot.load()
    }

    /// Free the slots of tags that nobody declared (not in `[tags]`, not named by the policy
    /// in force or a dry-run rule) and that have been quiet (nothing admitted, rejected or
    /// ended, none in flight) for [`RECLAIM_QUIET`] at `now`, so that tags seen once (a
    /// flood of invented names, users who left) do not hold the registry's room for good.
    /// `settled`: slots whose last activity is before this time only (a control-plane
    /// client passes the time of its last acknowledged pulse, so no reclaimed tag has
    /// unsent telemetry); `None`: no such bound. Returns how many slots were freed.
    ///
    /// The runtime calls it every tick; with the pure core, call it now and then. A tag seen
    /// again gets a new slot (a new [`Tag::generation`](crate::registry::Tag::generation)),
    /// its counters from zero.
    pub fn reclaim_quiet(&self, now: Duration, settled: Option<Duration>) -> usize {
        let mut w = self.lock();
        let snap = self.snapshot.load();
        let named: std::collections::HashSet<&str> = snap
            .policy
            .named_tags()
            .chain(snap.dry_policy.named_tags())
            .collect();
        let mut seen = HashMap::with_capacity(w.quiet.len());
        let mut freed = std::collections::HashSet::new();
        for slot in &w.slots {
            let name = &*slot.name;
            if name == DEFAULT_TAG || self.priorities.contains_key(name) || named.contains(name) {
                continue;
            }
            let in_flight = slot.in_flight();
            let activity = slot.activity();
            let since = match w.quiet.get(name) {
                Some(&(generation, before, since))
                    if generation == slot.generation && before == activity && in_flight == 0 =>
                {
                    since
                }
                _ => now,
            };
            let quiet_enough = now.saturating_sub(since) >= RECLAIM_QUIET
                && settled.is_none_or(|settled| since <= settled);
            if quiet_enough {
                freed.insert(slot.generation);
            } else {
                seen.insert(slot.name.clone(), (slot.generation, activity, since));
            }
        }
        drop(snap);
        w.quiet = seen;
        if freed.is_empty() {
            return 0;
        }
        w.slots.retain(|s| !freed.contains(&s.generation));
        self.rebuild(&mut w);
        freed.len()
    }

    /// Compile the writer's state into a new snapshot and publish it.
    pub(super) fn rebuild(&self, w: &mut PolicySources) {
        let local = w.local.stricter(&self.config_limits);
        let policy = match &w.remote {
            Some(r) => local.stricter(r),
            None => local,
        };
        let dry = w.local_dry.clone();
        // Tags a policy names get a slot while there is room (they are tracked from now on).
        let named: Vec<String> = policy
            .named_tags()
            .chain(dry.named_tags())
            .filter(|t| t.len() <= MAX_TAG_LEN && !t.is_empty())
            .map(str::to_owned)
            .collect();
        for name in &named {
            if w.slots.len() + 1 < self.tag_cap && !w.slots.iter().any(|s| &*s.name == name) {
                w.slots
                    .push(TagSlot::create(name, self.priority_of(name), &self.global));
            }
        }
        let dry_active = !dry.is_open();
        let entry = |slot: &Arc<TagSlot>, name: &str| TagEntry {
            slot: slot.clone(),
            enforce: self.compile(&policy, name, slot.priority, false),
            dry: dry_active
                .then(|| self.compile(&dry.stricter(&policy), name, slot.priority, true)),
        };
        let mut tags: HashMap<Box<str>, TagEntry, RandomState> =
            HashMap::with_capacity_and_hasher(w.slots.len() + named.len(), RandomState::default());
        for slot in &w.slots {
            tags.insert(slot.name.clone(), entry(slot, &slot.name));
        }
        // Named tags past the cap keep their own limits, counted under the overflow slot.
        for name in named {
            if !tags.contains_key(name.as_str()) {
                let e = TagEntry {
                    slot: self.overflow.clone(),
                    ..entry(&self.overflow, &name)
                };
                tags.insert(name.into_boxed_str(), e);
            }
        }
        let metrics = w
            .metrics
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), i))
            .collect();
        let snapshot = Snapshot {
            full: w.slots.len() + 1 >= self.tag_cap,
            overflow: entry(&self.overflow, OVERFLOW_TAG),
            tags,
            metrics,
            policy: Arc::new(policy),
            dry_policy: Arc::new(dry),
        };
        self.global
            .pool
            .set_static_cap(snapshot.policy.concurrency_limit);
        self.snapshot.store(Arc::new(snapshot));
    }

    /// `dry`: the checks of dry-run rules, which count a concurrency limit themselves; an
    /// enforced one caps the admission pool instead (set in `rebuild`).
    fn compile(&self, p: &Policy, name: &str, priority: i64, dry: bool) -> Checks {
        let tag_throttle = p.tag_throttles.get(name).copied().unwrap_or(100.0);
        let level_throttle = p
            .priority_throttles
            .get(&priority)
            .copied()
            .unwrap_or(100.0);
        let throttle = tag_throttle
            .min(level_throttle)
            .min(p.global_throttle.unwrap_or(100.0));
        Checks {
            kill: p.kill_signal,
            global_max_weight: p.global_max_weight,
            max_weight: p
                .tag_max_weights
                .get(name)
                .copied()
                .unwrap_or(f64::INFINITY),
            shed: p.priority_floor.is_some_and(|floor| priority < floor),
            throttle_ppm: percent_to_ppm(throttle),
            rate: p.tag_rate_limits.get(name).map(|r| Gcra::new(*r)),
            concurrency_cap: if dry { p.concurrency_limit } else { None },
        }
    }
}

impl Snapshot {
    pub(super) fn empty(overflow: &Arc<TagSlot>) -> Self {
        let open = Checks {
            kill: false,
            global_max_weight: f64::INFINITY,
            max_weight: f64::INFINITY,
            shed: false,
            throttle_ppm: PPM as u32,
            rate: None,
            concurrency_cap: None,
        };
        Self {
            tags: HashMap::default(),
            overflow: TagEntry {
                slot: overflow.clone(),
                enforce: open,
                dry: None,
            },
            full: true,
            metrics: HashMap::default(),
            policy: Arc::new(Policy::default()),
            dry_policy: Arc::new(Policy::default()),
        }
    }
}
