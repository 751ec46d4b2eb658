//! The agent's state: the engine, the token table, the v1 reports waiting to be paired,
//! and the housekeeping task that expires tokens and flushes reports.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use waitstate_core::{ConfigError, Demand, MAX_TAG_LEN, WaitState};

use crate::config::{AgentConfig, AgentSettings};
use crate::tokens::Tokens;

/// Most distinct tags with v1 latency reports waiting for their error report; past it,
/// a report is recorded at once (as a success).
const MAX_PENDING_TAGS: usize = 1024;
/// Most v1 latency reports waiting, over every tag.
const MAX_PENDING: usize = 65_536;

/// The agent: one engine shared by every client of this node. Cheap to clone.
///
/// Build it inside a tokio runtime (the engine's background tasks and the agent's
/// housekeeping run on it); serve [`Agent::router`] with [`crate::AgentServer`].
#[derive(Clone)]
pub struct Agent {
    pub(crate) inner: Arc<Shared>,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("tokens", &self.inner.tokens.live())
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub(crate) ws: WaitState,
    pub(crate) settings: AgentSettings,
    pub(crate) tokens: Tokens,
    pending: Mutex<Pending>,
    pub(crate) hasher: foldhash::fast::RandomState,
    housekeeping: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let task = self
            .housekeeping
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(task) = task.take() {
            task.abort();
        }
    }
}

/// v1 latency reports waiting for a `/report-error` of the same tag.
#[derive(Debug, Default)]
struct Pending {
    by_tag: HashMap<Box<str>, VecDeque<(Instant, Duration)>, foldhash::fast::RandomState>,
    total: usize,
}

impl Agent {
    /// An agent for this configuration. Call it inside a tokio runtime.
    ///
    /// # Errors
    /// What [`WaitState::from_config`] finds, and [`AgentSettings::validate`]'s findings.
    pub fn new(config: AgentConfig) -> Result<Self, ConfigError> {
        config.agent.validate()?;
        let ws = WaitState::from_config(config.engine)?;
        let hasher = foldhash::fast::RandomState::default();
        let key = hasher.hash_one(0xA6E7_u64);
        let pair_window = config.agent.pair_window;
        let inner = Arc::new(Shared {
            ws,
            tokens: Tokens::new(config.agent.max_tokens, key),
            settings: config.agent,
            pending: Mutex::new(Pending::default()),
            hasher,
            housekeeping: Mutex::new(None),
        });
        let task = tokio::spawn(housekeeping(Arc::downgrade(&inner), pair_window));
        *inner.housekeeping.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(Self { inner })
    }

    /// The engine (its policy, counters, rules and admission state).
    pub fn waitstate(&self) -> &WaitState {
        &self.inner.ws
    }

    /// Admission tokens alive now (and coprocessor requests in flight).
    pub fn live_tokens(&self) -> usize {
        self.inner.tokens.live()
    }

    /// Tokens ended by their time to live so far.
    pub fn expired_tokens(&self) -> u64 {
        self.inner.tokens.expired_total()
    }

    /// v1 latency reports waiting to be paired with an error report.
    pub fn pending_reports(&self) -> usize {
        self.inner.lock_pending().total
    }

    /// End expired tokens and record the v1 reports whose pairing window has passed, now
    /// (the housekeeping task does it every `pair_window`).
    pub fn housekeep(&self) {
        self.inner.housekeep(Instant::now());
    }
}

impl Shared {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record one completed request measured by the client (the v1 reports): its latency
    /// and outcome count for its tag, with no admission and no slot
    /// ([`WaitState::record`](waitstate_core::WaitState::record)), so a report is never
    /// refused and does not count as one more request offered.
    pub(crate) fn record(&self, tag: &str, latency: Duration, error: bool) {
        let demand = Demand::new(tag).declared_only(true);
        self.ws
            .record(&demand, latency, waitstate_core::Ending::of_error(error));
    }

    /// A v1 `/report-latency`: held for `pair_window`, so that the `/report-error` the SDKs
    /// send right after it for a failed request marks it failed.
    pub(crate) fn report_latency(&self, tag: &str, latency: Duration, now: Instant) {
        if tag.len() <= MAX_TAG_LEN {
            let mut p = self.lock_pending();
            if p.total < MAX_PENDING
                && (p.by_tag.len() < MAX_PENDING_TAGS || p.by_tag.contains_key(tag))
            {
                match p.by_tag.get_mut(tag) {
                    Some(q) => q.push_back((now, latency)),
                    None => {
                        p.by_tag
                            .insert(tag.into(), VecDeque::from([(now, latency)]));
                    }
                }
                p.total += 1;
                return;
            }
        }
        self.record(tag, latency, false);
    }

    /// A v1 `/report-error`: marks a waiting latency report of the tag failed, or records
    /// a failure of latency 0 when none is waiting.
    pub(crate) fn report_error(&self, tag: &str) {
        let latency = {
            let mut p = self.lock_pending();
            let taken = p.by_tag.get_mut(tag).and_then(|q| q.pop_front());
            if taken.is_some() {
                p.total -= 1;
                if p.by_tag.get(tag).is_some_and(VecDeque::is_empty) {
                    p.by_tag.remove(tag);
                }
            }
            taken.map(|(_, l)| l)
        };
        self.record(tag, latency.unwrap_or(Duration::ZERO), true);
    }

    fn housekeep(&self, now: Instant) {
        self.tokens.expire(now);
        let due = now.checked_sub(self.settings.pair_window).unwrap_or(now);
        let mut ready: Vec<(Box<str>, Duration)> = Vec::new();
        {
            let mut p = self.lock_pending();
            if p.total == 0 {
                return;
            }
            let mut taken = 0;
            p.by_tag.retain(|tag, q| {
                while q.front().is_some_and(|(at, _)| *at <= due) {
                    if let Some((_, l)) = q.pop_front() {
                        ready.push((tag.clone(), l));
                        taken += 1;
                    }
                }
                !q.is_empty()
            });
            p.total -= taken;
            if p.by_tag.is_empty() {
                p.by_tag.shrink_to(16);
            }
        }
        for (tag, latency) in ready {
            self.record(&tag, latency, false);
        }
    }
}

async fn housekeeping(agent: Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(agent) = agent.upgrade() else { return };
        agent.housekeep(Instant::now());
    }
}
