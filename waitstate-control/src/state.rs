//! The control plane's shared state: configuration, token key, fleets, replay cache,
//! counters, and the clocks.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use tokio::time::Instant;
use waitstate_core::Policy;
use waitstate_core::wire::TokenResponse;

use crate::config::ControlConfig;
use crate::fleet::{self, Fleets, IngestError, ShardView};
use crate::instances::{self, InstanceOrder, InstancePage};
use crate::jwt::{self, Claims};
use crate::metrics::{self, Counters, FleetStats};
use crate::replay::{MAX_REPLAY_ENTRIES, ReplayCache};

/// The wall clock: epoch milliseconds.
type WallClock = Box<dyn Fn() -> u64 + Send + Sync>;

struct Shared {
    config: ControlConfig,
    /// Signs tokens: `jwt_secret`, or random; with Redis, the key every replica shares
    /// (read at start, or at the first tick Redis answers).
    jwt_key: ArcSwap<Vec<u8>>,
    /// With Redis: whether `jwt_key` is the shared one yet.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    key_shared: std::sync::atomic::AtomicBool,
    /// The fleet state in Redis (`[server] redis_url`); `None`: in memory (`fleets`).
    #[cfg(feature = "redis")]
    redis: Option<crate::store::RedisStore>,
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
        let key_shared = config.server.jwt_secret.is_some() || config.server.redis_url.is_none();
        #[cfg(feature = "redis")]
        let redis = match &config.server.redis_url {
            Some(url) => Some(
                crate::store::RedisStore::new(url, Arc::new(config.clone())).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("redis_url: {e}"))
                })?,
            ),
            None => None,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                jwt_key: ArcSwap::from_pointee(jwt_key),
                key_shared: std::sync::atomic::AtomicBool::new(key_shared),
                #[cfg(feature = "redis")]
                redis,
                fleet_stats: fleets.stats(),
                fleets: Mutex::new(fleets),
                origin: Instant::now(),
                wall,
                replay: ReplayCache::new(MAX_REPLAY_ENTRIES),
                counters: Counters::default(),
            }),
        })
    }

    /// State for a configuration, and, with Redis, the token key every replica shares (when
    /// Redis does not answer yet, it is read at the first tick it does). With Redis
    /// unreachable and a `[server] state_file`, the fleets are read back from that file,
    /// so that answers carry the last fleet policy until Redis answers.
    ///
    /// # Errors
    /// As [`AppState::new`]; with Redis, a `redis_url` that cannot be used.
    pub async fn connect(config: ControlConfig) -> io::Result<Self> {
        let state = Self::new(config)?;
        state.share_key().await;
        state.start().await;
        Ok(state)
    }

    /// [`AppState::connect`] with an injected wall clock (epoch milliseconds): with Redis,
    /// the fleet's windows, instance ageing and demand all run on it, so tests step it and
    /// call [`AppState::step`].
    ///
    /// # Errors
    /// As [`AppState::connect`].
    pub async fn connect_with_wall_clock(
        config: ControlConfig,
        wall: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> io::Result<Self> {
        let state = Self::with_wall_clock(config, wall)?;
        state.share_key().await;
        state.start().await;
        Ok(state)
    }

    /// With Redis: when it does not answer, the fleets of the state file meanwhile.
    async fn start(&self) {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            store.start(self.wall_ms(), &self.shared.fleet_stats).await;
        }
    }

    /// With Redis and no `jwt_secret`: take the shared token key, once.
    async fn share_key(&self) {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            use std::sync::atomic::Ordering::Relaxed;
            if self.shared.key_shared.load(Relaxed) {
                return;
            }
            if let Ok(key) = store.shared_key().await {
                self.shared.jwt_key.store(Arc::new(key));
                self.shared.key_shared.store(true, Relaxed);
            }
        }
    }

    /// One fleet window: the server calls it every `tick`. In memory, [`AppState::tick`];
    /// with Redis, read the fleet state, bring this replica's rules up to it, and, on the
    /// replica that holds the evaluator's lease, close the window and publish.
    pub async fn step(&self) {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            self.share_key().await;
            store.tick(self.wall_ms(), &self.shared.fleet_stats).await;
            return;
        }
        self.tick();
    }

    /// With Redis: give the evaluator's lease up, so another replica takes over at once
    /// (a graceful shutdown does it).
    pub async fn release(&self) {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            store.release().await;
        }
    }

    /// With Redis: whether it answered the last call, and whether this replica evaluates
    /// the fleet rules. `None` in memory.
    pub fn store_health(&self) -> Option<(bool, bool)> {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            return Some((store.health().is_up(), store.health().is_leader()));
        }
        None
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

    /// A fleet's state (`site` is `""` for pulses without a `siteId`). With Redis, as this
    /// replica last read it.
    pub fn shard(&self, org: &str, site: &str) -> Option<ShardView> {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            return store.shard(org, site);
        }
        lock(&self.shared.fleets).shard(org, site).map(|s| s.view())
    }

    /// A page of a fleet's live instances (`site` is `""` for pulses without a `siteId`):
    /// each one's last pulse, the version of the fleet policy it was answered with, and
    /// what is left of that answer's lease; `per_page` is kept within 1 and 100. `None`:
    /// no such fleet. In memory, one pass over the fleet's instances under its lock; with
    /// Redis, one read of the fleet's instance hash (not on the pulse path).
    ///
    /// # Errors
    /// With Redis: Redis does not answer.
    pub async fn instances(
        &self,
        org: &str,
        site: &str,
        order: InstanceOrder,
        page: usize,
        per_page: usize,
    ) -> io::Result<Option<InstancePage>> {
        let s = &*self.shared;
        #[cfg(feature = "redis")]
        if let Some(store) = &s.redis {
            return store
                .instances(org, site, self.wall_ms(), order, page, per_page)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()));
        }
        let now = Instant::now();
        let fleets = lock(&s.fleets);
        let Some(shard) = fleets.shard(org, site) else {
            return Ok(None);
        };
        let rows = shard.instance_rows(now, s.config.server.instance_ttl);
        Ok(Some(instances::page_of(
            rows,
            s.config.server.lease,
            order,
            page,
            per_page,
        )))
    }

    /// The policy an instance would get now.
    pub fn answer_for(&self, org: &str, site: &str, instance: Option<&str>) -> Policy {
        let s = &*self.shared;
        #[cfg(feature = "redis")]
        if let Some(store) = &s.redis {
            return store.answer_for(org, site, instance);
        }
        let fleets = lock(&s.fleets);
        fleet::answer(
            fleets.shard(org, site),
            instance,
            &s.config.server,
            &s.config.engine,
        )
    }

    /// Take a pulse: merged into its fleet (in memory, or written to Redis), answered with
    /// the instance's policy; nothing is stored when it is refused.
    pub(crate) async fn take_pulse(
        &self,
        org: &str,
        pulse: &waitstate_core::wire::PulseBody,
    ) -> Result<Policy, IngestError> {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            return store.ingest(org, pulse, self.wall_ms()).await;
        }
        self.ingest(org, pulse)
    }

    /// With Redis: whether no replica has seen this pulse MAC (`None`: Redis cannot tell,
    /// or there is no Redis; this replica's own cache has already said yes).
    pub(crate) async fn first_sight_shared(&self, mac: &[u8; 32]) -> Option<bool> {
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            return store.first_sight(mac).await;
        }
        let _ = mac;
        None
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
        let token = jwt::sign(&self.shared.jwt_key.load(), &claims);
        self.shared.counters.token();
        TokenResponse::new(token, exp.saturating_mul(1000), org_id)
    }

    /// The claims of a bearer token this control plane signed, if it is still valid.
    pub(crate) fn verify_token(&self, token: &str) -> Option<Claims> {
        jwt::verify(&self.shared.jwt_key.load(), token, self.wall_ms() / 1000).ok()
    }

    /// The text of `/metrics`.
    pub(crate) fn metrics(&self) -> String {
        #[allow(unused_mut)]
        let mut text = metrics::render(&self.shared.counters, &self.shared.fleet_stats);
        #[cfg(feature = "redis")]
        if let Some(store) = &self.shared.redis {
            store.render(&mut text);
        }
        text
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
