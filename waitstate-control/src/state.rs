//! The control plane's shared state: configuration, token key, fleets, replay cache,
//! counters, and the clocks.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use waitstate_core::Policy;
use waitstate_core::wire::TokenResponse;

use crate::config::ControlConfig;
use crate::fleet::{self, Fleets, IngestError, ShardView};
use crate::jwt::{self, Claims};
use crate::metrics::{self, Counters, FleetStats};
use crate::replay::{MAX_REPLAY_ENTRIES, ReplayCache};

/// The wall clock: epoch milliseconds.
type WallClock = Box<dyn Fn() -> u64 + Send + Sync>;

struct Shared {
    config: ControlConfig,
    jwt_key: Vec<u8>,
    fleets: Mutex<Fleets>,
    /// What `/metrics` shows of the fleets, read without their lock.
    fleet_stats: Arc<FleetStats>,
    origin: Instant,
    wall: WallClock,
    replay: ReplayCache,
    counters: Counters,
}

/// The control plane's state: configuration, fleets, counters. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::disallowed_methods)]
fn system_wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Lock, even if another thread panicked holding the lock (the data stays consistent:
/// nothing here is left half-written by a panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppState {
    /// State for a configuration, reading the system's wall clock for timestamps.
    ///
    /// # Errors
    /// The operating system cannot provide random bytes for the token key.
    pub fn new(config: ControlConfig) -> io::Result<Self> {
        Self::with_wall_clock(config, Box::new(system_wall_ms))
    }

    /// State with an injected wall clock (epoch milliseconds), for tests of timestamp skew
    /// and token expiry. Windows and ageing use tokio's clock (`tokio::time::pause`).
    ///
    /// # Errors
    /// As [`AppState::new`].
    pub fn with_wall_clock(
        config: ControlConfig,
        wall: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> io::Result<Self> {
        let jwt_key = match &config.server.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
                key
            }
        };
        let fleets = Fleets::default();
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                jwt_key,
                fleet_stats: fleets.stats(),
                fleets: Mutex::new(fleets),
                origin: Instant::now(),
                wall,
                replay: ReplayCache::new(MAX_REPLAY_ENTRIES),
                counters: Counters::default(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.shared.config
    }

    /// Evaluate every fleet's rules now (the server does it every `tick`).
    pub fn tick(&self) {
        let now = Instant::now();
        let s = &*self.shared;
        lock(&s.fleets).tick(
            now,
            now.saturating_duration_since(s.origin),
            &s.config.server,
            &s.config.engine,
        );
    }

    /// A fleet's state (`site` is `""` for pulses without a `siteId`).
    pub fn shard(&self, org: &str, site: &str) -> Option<ShardView> {
        lock(&self.shared.fleets).shard(org, site).map(|s| s.view())
    }

    /// The policy an instance would get now.
    pub fn answer_for(&self, org: &str, site: &str, instance: Option<&str>) -> Policy {
        let s = &*self.shared;
        let fleets = lock(&s.fleets);
        fleet::answer(
            fleets.shard(org, site),
            instance,
            &s.config.server,
            &s.config.engine,
        )
    }

    /// Merge a pulse into its fleet and answer it with the instance's policy; nothing is
    /// stored when it is refused.
    pub(crate) fn ingest(
        &self,
        org: &str,
        pulse: &waitstate_core::wire::PulseBody,
    ) -> Result<Policy, IngestError> {
        let s = &*self.shared;
        let now = Instant::now();
        let site = pulse.site_id.as_deref().unwrap_or_default();
        let mut fleets = lock(&s.fleets);
        fleets.ingest(org, pulse, now, &s.config.server, &s.config.engine)?;
        Ok(fleet::answer(
            fleets.shard(org, site),
            Some(&pulse.instance_id),
            &s.config.server,
            &s.config.engine,
        ))
    }

    /// A token for a publish key of `org_id`, valid for `token_ttl` from now.
    pub(crate) fn issue_token(&self, publish_key: &str, org_id: &str) -> TokenResponse {
        let now = self.wall_ms() / 1000;
        let exp = now.saturating_add(self.shared.config.server.token_ttl.as_secs());
        let claims = Claims {
            sub: publish_key.to_owned(),
            org: org_id.to_owned(),
            iat: now,
            exp,
        };
        let token = jwt::sign(&self.shared.jwt_key, &claims);
        self.shared.counters.token();
        TokenResponse::new(token, exp.saturating_mul(1000), org_id)
    }

    /// The claims of a bearer token this control plane signed, if it is still valid.
    pub(crate) fn verify_token(&self, token: &str) -> Option<Claims> {
        jwt::verify(&self.shared.jwt_key, token, self.wall_ms() / 1000).ok()
    }

    /// The text of `/metrics`.
    pub(crate) fn metrics(&self) -> String {
        metrics::render(&self.shared.counters, &self.shared.fleet_stats)
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    pub(crate) fn replay(&self) -> &ReplayCache {
        &self.shared.replay
    }

    /// Now, in epoch milliseconds.
    pub(crate) fn wall_ms(&self) -> u64 {
        (self.shared.wall)()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Issue 15, item 6: `/metrics` never waits for the fleet lock that pulse handling takes
    /// (it used to hold it while cloning every shard's histograms). The lock is held here
    /// as a pulse would hold it; the scrape must still be answered. 10 s is a bound on a
    /// wait that should take microseconds, not a timing measured.
    #[test]
    fn metrics_are_rendered_while_the_fleet_lock_is_held() {
        let config = ControlConfig::from_toml_str(
            "[[keys]]\npublish_key = \"pk\"\nsecret_key = \"sk\"\norg_id = \"o\"\n",
        )
        .unwrap();
        let state = AppState::new(config).unwrap();
        let held = lock(&state.shared.fleets);
        let (tx, rx) = mpsc::channel();
        let scraper = state.clone();
        std::thread::spawn(move || {
            let _ = tx.send(scraper.metrics());
        });
        let text = rx.recv_timeout(Duration::from_secs(10));
        drop(held);
        let text = text.expect("/metrics waited for the fleet lock");
        assert!(text.contains("waitstate_pulses_total 0"), "{text}");
    }
}
