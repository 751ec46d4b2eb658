//! The hot path: find the tag's compiled checks, run them in the decision order (see the
//! module docs), count the outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::compile::{Checks, Snapshot, TagEntry};
use super::{Admit, Demand, Engine, Queued, Ticket};
use crate::decision::{Decision, Quota, Reason, Rejection};
use crate::limiter::{PPM, throttle_admits};
use crate::registry::{DEFAULT_TAG, MAX_TAG_LEN, Tag, TagSlot};

impl Engine {
    /// Decide for one request, without holding an in-flight slot.
    ///
    /// Counts the decision (admitted, or rejected by reason). `now` is the time since the
    /// caller's origin; it is used by rate limits only.
    pub fn decide(&self, demand: &Demand<'_>, now: Duration) -> Decision {
        self.decide_lazy(demand, || now)
    }

    /// [`Engine::decide`], reading the time only if a rate limit needs it.
    pub(crate) fn decide_lazy(
        &self,
        demand: &Demand<'_>,
        now: impl FnOnce() -> Duration,
    ) -> Decision {
        self.with_entry(demand.tag, demand.declared_only, |entry| {
            let mut would_reject = match self.check(entry, demand, now) {
                Ok(w) => w,
                Err(rejection) => return Decision::Rejected(rejection),
            };
            let slot = &entry.slot;
            if !slot.global.pool.has_room() {
                if !self.dry_run {
                    let r = self.refuse(slot, Reason::ConcurrencyLimited, None, None);
                    return Decision::Rejected(r);
                }
                would_reject = would_reject.or(Some(Reason::ConcurrencyLimited));
            }
            count_admitted(slot, demand.weight, would_reject);
            Decision::Allowed { would_reject }
        })
    }

    /// Decide, and when allowed hold a slot of the admission pool until the [`Ticket`]
    /// ends. Never waits: when the pool is full the answer is `concurrency_limited` (use
    /// [`Engine::admit_or_queue`] to wait for a slot).
    ///
    /// # Errors
    /// The [`Rejection`] when the request is turned away.
    pub fn admit(&self, demand: &Demand<'_>, now: Duration) -> Result<Ticket, Rejection> {
        self.admit_lazy(demand, || now)
    }

    pub(crate) fn admit_lazy(
        &self,
        demand: &Demand<'_>,
        now: impl FnOnce() -> Duration,
    ) -> Result<Ticket, Rejection> {
        self.with_entry(demand.tag, demand.declared_only, |entry| {
            let mut would_reject = self.check(entry, demand, now)?;
            let slot = &entry.slot;
            let pool = &slot.global.pool;
            if self.dry_run {
                if pool.force_acquire() {
                    would_reject = would_reject.or(Some(Reason::ConcurrencyLimited));
                }
            } else if !pool.try_acquire() {
                return Err(self.refuse(slot, Reason::ConcurrencyLimited, None, None));
            }
            Ok(grant(slot, demand.weight, would_reject))
        })
    }

    /// Decide, and when allowed hold a slot; when the pool is full, wait in line for one
    /// (see [`crate::admission`]): the answer is then [`Admit::Queued`], a future that
    /// resolves when a slot is handed over or the request is turned away. The caller bounds
    /// the wait with [`Queued::max_wait`] and [`Queued::give_up`]: the pure engine has no
    /// timer.
    pub fn admit_or_queue(&self, demand: &Demand<'_>, now: Duration) -> Admit {
        self.admit_or_queue_lazy(demand, || now, || demand.max_wait)
    }

    /// [`Engine::admit_or_queue`], reading the time only if a rate limit or the queue needs
    /// it, and asking for the client's own deadline only when the request must wait (the
    /// adapters read it from a header: a lookup saved on every request that finds a slot).
    pub(crate) fn admit_or_queue_lazy(
        &self,
        demand: &Demand<'_>,
        now: impl Fn() -> Duration,
        client_deadline: impl FnOnce() -> Option<Duration>,
    ) -> Admit {
        self.with_entry(demand.tag, demand.declared_only, |entry| {
            let would_reject = match self.check(entry, demand, &now) {
                Ok(w) => w,
                Err(rejection) => return Admit::Rejected(rejection),
            };
            let slot = &entry.slot;
            let pool = &slot.global.pool;
            if self.dry_run || pool.try_acquire() {
                if self.dry_run {
                    pool.force_acquire();
                }
                return Admit::Admitted(grant(slot, demand.weight, would_reject));
            }
            // The level's maximum wait, or less when the client's own deadline leaves less
            // room after the service time itself (a wait it cannot afford is doomed work).
            let wait = match client_deadline() {
                None => pool.max_wait(slot.level),
                Some(client) => pool
                    .max_wait(slot.level)
                    .min(client.saturating_sub(pool.service_time())),
            };
            match pool.enqueue(slot.level, now(), wait) {
                Err(()) => {
                    Admit::Rejected(self.refuse(slot, Reason::ConcurrencyLimited, None, None))
                }
                Ok(cell) => {
                    let queued = Queued::new(
                        slot.clone(),
                        cell,
                        demand.weight,
                        would_reject,
                        self.retry_after,
                        wait,
                    );
                    match queued.try_take() {
                        Ok(ticket) => Admit::Admitted(ticket),
                        Err(queued) => Admit::Queued(queued),
                    }
                }
            }
        })
    }

    /// Count a rejection and build it.
    pub(super) fn refuse(
        &self,
        slot: &Arc<TagSlot>,
        reason: Reason,
        retry_after: Option<Duration>,
        quota: Option<Quota>,
    ) -> Rejection {
        refuse(slot, reason, retry_after.unwrap_or(self.retry_after), quota)
    }

    /// Record a request that ended elsewhere, measured by someone else (a sidecar's client
    /// that reports its own latency): its latency and ending count for its tag as any
    /// finished request's, with no admission, no check and no slot. It teaches adaptive
    /// admission nothing (the engine did not hold its slot). `demand.weight` is ignored;
    /// `demand.declared_only` applies.
    pub fn record(&self, demand: &Demand<'_>, latency: Duration, ending: crate::Ending) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.with_entry(demand.tag, demand.declared_only, |entry| {
            entry.slot.record_end(us, ending);
        });
    }

    /// Reject a request of `tag` for a reason decided outside the policy (the runtime's
    /// safe mode), counting it like any rejection.
    #[cfg(feature = "control-plane")]
    pub(crate) fn reject_outside(
        &self,
        tag: &str,
        reason: Reason,
        retry_after: Duration,
    ) -> Rejection {
        self.with_entry(tag, false, |entry| {
            refuse(&entry.slot, reason, retry_after, None)
        })
    }

    #[inline]
    pub(super) fn with_entry<R>(
        &self,
        tag: &str,
        declared_only: bool,
        f: impl FnOnce(&TagEntry) -> R,
    ) -> R {
        let tag = if tag.is_empty() { DEFAULT_TAG } else { tag };
        let snap = self.snapshot.load();
        // Too long to be a tag (not hashed), or not declared where only declared tags count.
        fn unknown(snap: &Snapshot, declared_only: bool) -> &TagEntry {
            if declared_only {
                // The default tag always has a slot (see `Engine::new`).
                snap.tags.get(DEFAULT_TAG).unwrap_or(&snap.overflow)
            } else {
                &snap.overflow
            }
        }
        if tag.len() > MAX_TAG_LEN {
            return f(unknown(&snap, declared_only));
        }
        if let Some(entry) = snap.tags.get(tag) {
            return f(entry);
        }
        if declared_only {
            return f(unknown(&snap, declared_only));
        }
        if snap.full {
            return f(&snap.overflow);
        }
        drop(snap);
        // First sight of a tag while the registry has room: the cold path.
        let snap = self.register(tag);
        let entry = snap.tags.get(tag).unwrap_or(&snap.overflow);
        f(entry)
    }

    /// Run the checks in order; `Ok(would_reject)` or the rejection (already counted).
    #[inline]
    fn check(
        &self,
        entry: &TagEntry,
        demand: &Demand<'_>,
        now: impl FnOnce() -> Duration,
    ) -> Result<Option<Reason>, Rejection> {
        let slot = &entry.slot;
        // The clock is read at most once, and only when a rate limit needs it.
        let mut now = Some(now);
        let mut now_ns = 0u64;
        let mut clock = || {
            if let Some(f) = now.take() {
                now_ns = f().as_nanos().min(u128::from(u64::MAX)) as u64;
            }
            now_ns
        };

        let enforced = run_checks(&entry.enforce, slot, demand, &mut clock, false);
        let mut would_reject = None;
        match enforced {
            Err(Refused {
                reason,
                retry_after,
                quota,
            }) if !self.dry_run => {
                return Err(self.refuse(slot, reason, retry_after, quota));
            }
            Err(Refused { reason, .. }) => would_reject = Some(reason),
            Ok(()) => {
                if let Some(dry) = &entry.dry
                    && let Err(Refused { reason, .. }) =
                        run_checks(dry, slot, demand, &mut clock, true)
                {
                    would_reject = Some(reason);
                }
            }
        }
        Ok(would_reject)
    }
}

/// Count an admission: admitted, its weight, and what a dry-run check would have done.
#[inline]
fn count_admitted(slot: &TagSlot, weight: f64, would_reject: Option<Reason>) {
    if would_reject.is_some() {
        slot.would_reject.fetch_add(1, Relaxed);
    }
    let hot = slot.hot.local();
    hot.admitted.fetch_add(1, Relaxed);
    hot.admitted_weight_milli
        .fetch_add(milli_units(weight), Relaxed);
}

/// A request's weight in thousandths of a unit, at most 2^40 (a billion units), so that the
/// cumulative sum cannot wrap before 2^24 such requests (`as` already saturates NaN and
/// infinities; the engine refuses them before this).
#[inline]
fn milli_units(weight: f64) -> u64 {
    ((weight * 1000.0) as u64).min(1 << 40)
}

/// Count an admission whose slot is held, and hand out its ticket.
pub(super) fn grant(slot: &Arc<TagSlot>, weight: f64, would_reject: Option<Reason>) -> Ticket {
    count_admitted(slot, weight, would_reject);
    slot.hot.local().in_flight.fetch_add(1, Relaxed);
    Ticket {
        slot: slot.clone(),
        would_reject,
        done: false,
    }
}

/// Count a rejection and build it.
pub(super) fn refuse(
    slot: &Arc<TagSlot>,
    reason: Reason,
    retry_after: Duration,
    quota: Option<Quota>,
) -> Rejection {
    slot.rejected[reason.index()].fetch_add(1, Relaxed);
    Rejection {
        reason,
        tag: Tag(slot.clone()),
        retry_after: retry_after.max(Duration::from_millis(1)),
        quota,
    }
}

/// A check that refused: why, how long to wait when a budget says so, and the budget.
struct Refused {
    reason: Reason,
    retry_after: Option<Duration>,
    quota: Option<Quota>,
}

impl Refused {
    fn because(reason: Reason) -> Self {
        Self {
            reason,
            retry_after: None,
            quota: None,
        }
    }
}

/// The decision order: the v1 checks first (invalid weight, kill_signal, global_block,
/// tag_blocked, over_weight), then ours (priority_shed, throttled, rate_limited,
/// concurrency_limited).
#[inline]
fn run_checks(
    l: &Checks,
    slot: &TagSlot,
    d: &Demand<'_>,
    now_ns: &mut impl FnMut() -> u64,
    dry: bool,
) -> Result<(), Refused> {
    let w = d.weight;
    // v1 checks NaN and negative weights before anything else. Ours also refuses +inf: an
    // infinite cost cannot be charged against any budget (v1 lets it through when no
    // limit is finite).
    if w.is_nan() || w < 0.0 || w == f64::INFINITY {
        return Err(Refused::because(Reason::OverWeight));
    }
    if l.kill {
        return Err(Refused::because(Reason::KillSignal));
    }
    if l.global_max_weight <= 0.0 {
        return Err(Refused::because(Reason::GlobalBlock));
    }
    // `block` is a max weight of 0 (v1's `tagMaxWeights: 0`): blocked means blocked for
    // every weight, 0 and -0 included (v1 lets a weight of 0 through).
    if w > l.max_weight || l.max_weight <= 0.0 {
        return Err(Refused::because(Reason::TagBlocked));
    }
    if w > l.global_max_weight {
        return Err(Refused::because(Reason::OverWeight));
    }
    if l.shed {
        return Err(Refused::because(Reason::PriorityShed));
    }
    if l.throttle_ppm < PPM as u32 {
        let credit = if dry {
            &slot.dry_throttle_credit
        } else {
            &slot.throttle_credit
        };
        if !throttle_admits(credit, l.throttle_ppm, d.cohort) {
            return Err(Refused::because(Reason::Throttled));
        }
    }
    if let Some(gcra) = &l.rate {
        // Heavier than the whole burst: it could never fit, and must not drain the budget.
        if w > gcra.burst() {
            return Err(Refused::because(Reason::OverWeight));
        }
        let tat = if dry { &slot.dry_tat } else { &slot.tat };
        if let Err(wait) = gcra.try_acquire(tat, now_ns(), w) {
            let quota = Quota {
                per_second: gcra.per_second,
                burst: gcra.burst(),
            };
            return Err(Refused {
                reason: Reason::RateLimited,
                retry_after: Some(wait),
                quota: Some(quota),
            });
        }
    }
    if let Some(cap) = l.concurrency_cap {
        // Only dry-run rules get here: an enforced concurrency limit caps the admission
        // pool, which is asked last (step 11).
        if slot.global.pool.in_flight() >= cap {
            return Err(Refused::because(Reason::ConcurrencyLimited));
        }
    }
    Ok(())
}
