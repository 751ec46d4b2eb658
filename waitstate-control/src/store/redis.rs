//! The Redis store (see [`crate::store`] for the design): the writer task that batches
//! pulses into pipelines, the lease that elects the evaluator, the per-replica copies of
//! the fleet rules, and the fleet state every replica answers from.
//!
//! Keys, under the prefix `P` (`[server] redis_prefix`) and a shard `S` (`org` and `site`,
//! joined by a control character no name may hold):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:shards` | set | every shard |
//! | `P:{S}:cum` | hash | everything received, per tag and counter (`HINCRBY`) |
//! | `P:{S}:fresh` | hash | the same, of single-window pulses: what the rules read |
//! | `P:{S}:custom` | list | custom metrics since the last window (JSON, taken by the evaluator) |
//! | `P:{S}:inst` | hash | instance → last pulse (epoch ms) and in-flight gauges |
//! | `P:{S}:d:<n>:<tag>` | hash | a tag's demand per instance in time bucket `n` (expires) |
//! | `P:{S}:meta` | hash | `pulses` |
//! | `P:{S}:state` | string | the published [`FleetState`] (JSON) |
//! | `P:{S}:hist` | list | the last `redis_history` windows ([`Sample`], JSON) |
//! | `P:leader`, `P:fence` | string, counter | the evaluator's lease and fencing token |
//! | `P:jwt` | string | the token key, when `jwt_secret` is not set |
//! | `P:replay:<mac>` | string | a pulse MAC seen (expires after twice the skew) |

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisError, RedisResult, Script};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use waitstate_core::names::OVERFLOW_TAG;
use waitstate_core::{
    Aggregate, Config, Policy, Reading, Reflex, RuleStatus, TagCounters, TagReading,
};

use super::codec::{
    Counts, Demand, FleetState, InstanceRecord, RuleRecord, SEP, Sample, read_fields,
};
use super::health::Health;
use super::snapshot::{self, StateFile};
use super::writer::{Job, MAX_BATCH, demand_key, writer};
use crate::config::{ControlConfig, ServerConfig};
use crate::fleet::{self, IngestError, ShardView, add_to, for_rules_now, policy_version};
use crate::instances::{self, InstanceOrder, InstancePage};
use crate::metrics::{FleetStats, ShardStats};
use crate::state::lock;

/// Take the lease, or renew it: returns the holder's token `<replica>:<fence>` when it is
/// (now) ours, nil when another replica holds it.
const LEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v and v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return v
end
if v then return false end
local f = redis.call('INCR', KEYS[2])
local t = ARGV[3] .. ':' .. f
redis.call('SET', KEYS[1], t, 'PX', ARGV[2])
return t
";

/// Publish a window, fenced: only while the lease still holds our token.
const PUBLISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
for i = 5, #ARGV do redis.call('HDEL', KEYS[4], ARGV[i]) end
return 1
";

/// Give the lease up (a graceful shutdown), if it is ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub(super) type ShardKey = (String, String);

/// What the evaluator reads of a shard for a window: the fresh counters, the instances,
/// the pulse count, the custom metrics.
type WindowRead = (
    HashMap<String, String>,
    HashMap<String, String>,
    Option<u64>,
    Vec<String>,
);

/// The keys of one shard.
pub(super) struct ShardKeys {
    pub(super) cum: String,
    pub(super) fresh: String,
    pub(super) custom: String,
    pub(super) inst: String,
    pub(super) meta: String,
    pub(super) state: String,
    pub(super) hist: String,
    pub(super) demand: String,
}

impl ShardKeys {
    pub(super) fn new(prefix: &str, (org, site): &ShardKey) -> Self {
        let base = format!("{prefix}:{{{org}{SEP}{site}}}");
        Self {
            cum: format!("{base}:cum"),
            fresh: format!("{base}:fresh"),
            custom: format!("{base}:custom"),
            inst: format!("{base}:inst"),
            meta: format!("{base}:meta"),
            state: format!("{base}:state"),
            hist: format!("{base}:hist"),
            demand: format!("{base}:d:"),
        }
    }
}

pub(super) fn member((org, site): &ShardKey) -> String {
    format!("{org}{SEP}{site}")
}

/// This replica's copy of a shard's fleet rules.
struct Eval {
    reflex: Reflex,
    /// The last window fed.
    seq: u64,
    /// Fed a window that was not published: rebuild from the history.
    dirty: bool,
    /// The evaluator's copy of closed demand buckets (bucket, tag): read once, not every
    /// window (10,000 instances make them large).
    demand: BTreeMap<(u64, String), HashMap<String, u64>>,
}

/// A shard as this replica last read it.
#[derive(Debug)]
pub(crate) struct Cached {
    pub(crate) state: FleetState,
    pub(super) cumulative: BTreeMap<String, TagCounters>,
    pub(super) rules: Vec<RuleStatus>,
    pub(super) stats: Arc<ShardStats>,
    /// Read back from the state file at start, not from Redis.
    pub(super) restored: bool,
    /// [`fleet::policy_version`] of the state's policy.
    pub(super) version: u32,
}

/// The fleet state in Redis, shared by every replica.
pub(crate) struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    id: String,
    config: Arc<ControlConfig>,
    jobs: mpsc::Sender<Job>,
    writer: JoinHandle<()>,
    cache: ArcSwap<HashMap<ShardKey, Arc<Cached>>>,
    evals: tokio::sync::Mutex<HashMap<ShardKey, Eval>>,
    lease: Mutex<Option<String>>,
    health: Arc<Health>,
    bucket_ms: u64,
    /// `[server] state_file`: the last fleet state, kept for a start without Redis.
    state_file: Option<StateFile>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("replica", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// A store on `url`. Connects lazily: a Redis that is down at start is retried, and
    /// the replica answers meanwhile (with no fleet state yet, or the state file's: see
    /// [`RedisStore::start`]).
    pub(crate) fn new(url: &str, config: Arc<ControlConfig>) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, manager)?;
        let server = &config.server;
        let bucket_ms = (ms(server.demand_window) / 6).max(1000);
        let demand_ttl_ms = ms(server.demand_window) + 2 * bucket_ms;
        let health = Arc::new(Health::default());
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let writer = tokio::spawn(writer(
            rx,
            conn.clone(),
            server.redis_prefix.clone(),
            health.clone(),
            bucket_ms,
            demand_ttl_ms,
            config.engine.tick,
        ));
        let mut id = [0u8; 8];
        let _ = getrandom::fill(&mut id);
        let id = hex::encode(id);
        Ok(Self {
            conn,
            prefix: server.redis_prefix.clone(),
            state_file: StateFile::new(&config, &id),
            id,
            config,
            jobs: tx,
            writer,
            cache: ArcSwap::default(),
            evals: tokio::sync::Mutex::new(HashMap::new()),
            lease: Mutex::new(None),
            health,
            bucket_ms,
        })
    }

    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    fn server(&self) -> &ServerConfig {
        &self.config.server
    }

    fn engine(&self) -> &Config {
        &self.config.engine
    }

    /// The token key every replica shares: set once (`SET NX`), read by all.
    pub(crate) async fn shared_key(&self) -> RedisResult<Vec<u8>> {
        if !self.health.may_try() {
            return Err(RedisError::from((redis::ErrorKind::Io, "Redis is down")));
        }
        let mut conn = self.conn.clone();
        let key = format!("{}:jwt", self.prefix);
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| RedisError::from((redis::ErrorKind::Client, "random", e.to_string())))?;
        let r: RedisResult<String> = async {
            let _: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(hex::encode(fresh))
                .arg("NX")
                .query_async(&mut conn)
                .await?;
            conn.get(&key).await
        }
        .await;
        match r {
            Ok(text) => {
                self.health.ok();
                hex::decode(text.trim()).map_err(|e| {
                    RedisError::from((redis::ErrorKind::Client, "token key", e.to_string()))
                })
            }
            Err(e) => {
                self.health.failed("read the token key", &e);
                Err(e)
            }
        }
    }

    /// Whether a pulse MAC is seen for the first time by any replica; `None` when Redis
    /// cannot tell (this replica's own cache has already said yes).
    pub(crate) async fn first_sight(&self, mac: &[u8; 32]) -> Option<bool> {
        if !self.health.may_try() {
            return None;
        }
        let ttl = ms(self.server().skew).saturating_mul(2).max(1000);
        let key = format!("{}:replay:{}", self.prefix, hex::encode(mac));
        let r: RedisResult<Option<String>> = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .query_async(&mut self.conn.clone())
            .await;
        match r {
            Ok(v) => {
                self.health.ok();
                Some(v.is_some())
            }
            Err(e) => {
                self.health.failed("check a replay", &e);
                None
            }
        }
    }

    /// Take a pulse: hand it to the writer, wait for its batch, answer from the fleet state
    /// this replica last read (the last good one when Redis is away).
    pub(crate) async fn ingest(
        &self,
        org: &str,
        body: &waitstate_core::wire::PulseBody,
        now_ms: u64,
    ) -> Result<Policy, IngestError> {
        let mut checked = fleet::check(body)?;
        self.health.saw(now_ms);
        let shard = (org.to_owned(), checked.site.clone());
        let cache = self.cache.load();
        let cached = cache.get(&shard);
        if cached.is_none()
            && cache.keys().filter(|(o, _)| o == org).count() >= self.server().max_sites
        {
            return Err(IngestError::Full("sites"));
        }
        // Past the tag cap, new tags count as the overflow tag.
        let known: Vec<&str> = cached
            .map(|c| c.state.tags.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let mut new_tags = 0usize;
        for d in &mut checked.deltas {
            if !known.contains(&d.tag.as_str()) {
                if known.len() + new_tags + 1 >= self.engine().tag_cap {
                    d.tag = OVERFLOW_TAG.to_owned();
                } else {
                    new_tags += 1;
                }
            }
        }
        // At the instance cap (of the whole fleet, as the evaluator last counted it), a new
        // instance is refused; one Redis read, only then.
        if let Some(c) = cached
            && c.state.instances >= self.server().max_instances
            && self.health.may_try()
        {
            let k = ShardKeys::new(&self.prefix, &shard);
            let known: RedisResult<bool> =
                self.conn.clone().hexists(&k.inst, &body.instance_id).await;
            if let Ok(false) = known {
                return Err(IngestError::Full("instances"));
            }
        }
        let (done, written) = oneshot::channel();
        let job = Job {
            shard: shard.clone(),
            instance: body.instance_id.clone(),
            checked,
            now_ms,
            // The answer below is made from this same `cached`.
            version: cached.map_or_else(|| policy_version(&Policy::default()), |c| c.version),
            done,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(IngestError::Internal);
        }
        // Not written: carried by the writer, and said so by `Health`.
        let _ = written.await;
        let cached = cache.get(&shard);
        Ok(fleet::answer(
            cached.map(|c| &c.state),
            Some(&body.instance_id),
            self.server(),
            self.engine(),
        ))
    }

    /// The answer for a policy read.
    pub(crate) fn answer_for(&self, org: &str, site: &str, instance: Option<&str>) -> Policy {
        let cache = self.cache.load();
        let cached = cache.get(&(org.to_owned(), site.to_owned()));
        fleet::answer(
            cached.map(|c| &c.state),
            instance,
            self.server(),
            self.engine(),
        )
    }

    /// A page of a shard's live instances, from its instance hash (one `HGETALL`, off the
    /// pulse path); `None`: no such shard.
    pub(crate) async fn instances(
        &self,
        org: &str,
        site: &str,
        now_ms: u64,
        order: InstanceOrder,
        page: usize,
        per_page: usize,
    ) -> RedisResult<Option<InstancePage>> {
        self.health.saw(now_ms);
        if !self.health.may_try() {
            return Err(RedisError::from((redis::ErrorKind::Io, "Redis is down")));
        }
        let shard = (org.to_owned(), site.to_owned());
        let k = ShardKeys::new(&self.prefix, &shard);
        let read: RedisResult<HashMap<String, String>> = self.conn.clone().hgetall(&k.inst).await;
        let inst = match read {
            Ok(inst) => {
                self.health.ok();
                inst
            }
            Err(e) => {
                self.health.failed("read the instances", &e);
                return Err(e);
            }
        };
        if inst.is_empty() && !self.cache.load().contains_key(&shard) {
            return Ok(None);
        }
        let ttl = self.server().instance_ttl;
        let rows = inst
            .iter()
            .filter_map(|(id, json)| {
                let r = serde_json::from_str::<InstanceRecord>(json).ok()?;
                let ago = Duration::from_millis(now_ms.saturating_sub(r.s));
                (ago <= ttl).then_some((id.as_str(), ago, r.v))
            })
            .collect();
        Ok(Some(instances::page_of(
            rows,
            self.server().lease,
            order,
            page,
            per_page,
        )))
    }

    /// A shard as this replica last read it.
    pub(crate) fn shard(&self, org: &str, site: &str) -> Option<ShardView> {
        let cache = self.cache.load();
        let c = cache.get(&(org.to_owned(), site.to_owned()))?;
        Some(ShardView::new(
            c.state.instances,
            c.state.pulses,
            c.state.policy.clone(),
            c.rules.clone(),
            c.cumulative.clone(),
        ))
    }

    /// At start: when Redis does not answer, answer from the state file meanwhile (see
    /// `snapshot.rs`).
    pub(crate) async fn start(&self, now_ms: u64, stats: &FleetStats) {
        self.health.saw(now_ms);
        if !self.health.is_up() && self.health.may_try() {
            let ping: RedisResult<String> =
                redis::cmd("PING").query_async(&mut self.conn.clone()).await;
            match ping {
                Ok(_) => self.health.ok(),
                Err(e) => self.health.failed("reach Redis at start", &e),
            }
        }
        if self.health.is_up() {
            return;
        }
        let Some(file) = &self.state_file else {
            warn!(
                "Redis unreachable at start, and no [server] state_file: no fleet policy until Redis answers"
            );
            return;
        };
        let Some(restored) = file.read(self.config.clone(), now_ms).await else {
            return;
        };
        let mut cache: HashMap<ShardKey, Arc<Cached>> = HashMap::clone(&self.cache.load());
        for s in restored.shards {
            if cache.contains_key(&s.key) {
                continue;
            }
            let stats = stats.add_shard(&s.key.0, &s.key.1);
            stats.set_instances(s.state.instances);
            stats.set_rules_active(s.state.rules.iter().filter(|r| r.active).count());
            for (tag, c) in &s.cumulative {
                stats.set_tag(tag, c.admitted, fleet::rejected_total(c));
            }
            let cached = Cached {
                version: policy_version(&s.state.policy),
                state: s.state,
                cumulative: s.cumulative,
                rules: s.rules,
                stats,
                restored: true,
            };
            cache.insert(s.key, Arc::new(cached));
        }
        self.cache.store(Arc::new(cache));
    }

    /// One tick: renew (or take) the lease; for every shard, read the fleet state and
    /// bring this replica's rules up to it; the evaluator then closes a window and
    /// publishes; then the state file, when due. Redis unreachable: nothing changes here
    /// (the last state stays).
    pub(crate) async fn tick(&self, now_ms: u64, stats: &FleetStats) {
        self.health.saw(now_ms);
        if !self.health.may_try() {
            return;
        }
        match self.try_tick(now_ms, stats).await {
            Ok(()) => {
                if let Some(file) = &self.state_file {
                    file.save(self.cache.load_full(), now_ms, false).await;
                }
            }
            Err(e) => self.health.failed("tick", &e),
        }
    }

    async fn try_tick(&self, now_ms: u64, stats: &FleetStats) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let leader = self.renew_lease(&mut conn).await?;
        self.health.leader.store(leader.is_some(), Relaxed);
        let members: Vec<String> = conn.smembers(format!("{}:shards", self.prefix)).await?;
        self.health.ok();
        let mut evals = self.evals.lock().await;
        let mut fresh_cache: HashMap<ShardKey, Arc<Cached>> = HashMap::clone(&self.cache.load());
        // Redis answers: what the state file gave is replaced (or dropped) by its state.
        let restored: HashMap<ShardKey, Arc<Cached>> =
            fresh_cache.extract_if(|_, c| c.restored).collect();
        for m in members {
            let Some((org, site)) = m.split_once(SEP) else {
                continue;
            };
            let shard: ShardKey = (org.to_owned(), site.to_owned());
            let k = ShardKeys::new(&self.prefix, &shard);
            let (state, cum): (Option<String>, HashMap<String, String>) = redis::pipe()
                .get(&k.state)
                .hgetall(&k.cum)
                .query_async(&mut conn)
                .await?;
            let mut state = state.and_then(|s| serde_json::from_str::<FleetState>(&s).ok());
            let eval = match evals.entry(shard.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(Eval {
                    reflex: Reflex::new(self.engine()).map_err(|e| {
                        RedisError::from((redis::ErrorKind::Client, "rules", e.to_string()))
                    })?,
                    seq: 0,
                    dirty: false,
                    demand: BTreeMap::new(),
                }),
            };
            self.catch_up(&mut conn, &k, eval, state.as_ref().map_or(0, |s| s.seq))
                .await?;
            let cumulative = read_fields(&cum.into_iter().collect::<Vec<_>>());
            if let Some((token, fence)) = &leader {
                match self
                    .evaluate(&mut conn, &k, eval, now_ms, token, *fence, &cumulative)
                    .await
                {
                    Ok(Some(published)) => state = Some(published),
                    Ok(None) => {
                        warn!("lost the evaluator's lease while publishing");
                        *lock(&self.lease) = None;
                        self.health.leader.store(false, Relaxed);
                    }
                    Err(e) => {
                        eval.dirty = true;
                        return Err(e);
                    }
                }
            }
            let Some(state) = state else { continue };
            let stats = match fresh_cache.get(&shard).or_else(|| restored.get(&shard)) {
                Some(c) => c.stats.clone(),
                None => stats.add_shard(&shard.0, &shard.1),
            };
            let rules = eval.reflex.status();
            stats.set_instances(state.instances);
            stats.set_rules_active(state.rules.iter().filter(|r| r.active).count());
            for (tag, c) in &cumulative {
                stats.set_tag(tag, c.admitted, fleet::rejected_total(c));
            }
            fresh_cache.insert(
                shard,
                Arc::new(Cached {
                    version: policy_version(&state.policy),
                    state,
                    cumulative,
                    rules,
                    stats,
                    restored: false,
                }),
            );
        }
        for (shard, c) in &restored {
            if !fresh_cache.contains_key(shard) {
                stats.remove_shard(&c.stats);
            }
        }
        self.cache.store(Arc::new(fresh_cache));
        if let Some(file) = &self.state_file {
            file.superseded();
        }
        Ok(())
    }

    async fn renew_lease(
        &self,
        conn: &mut ConnectionManager,
    ) -> RedisResult<Option<(String, u64)>> {
        let mine = lock(&self.lease).clone().unwrap_or_default();
        let ttl = ms(self.engine().tick).saturating_mul(3).max(2000);
        let got: Option<String> = Script::new(LEASE)
            .key(format!("{}:leader", self.prefix))
            .key(format!("{}:fence", self.prefix))
            .arg(&mine)
            .arg(ttl)
            .arg(&self.id)
            .invoke_async(conn)
            .await?;
        if got.as_deref() != Some(mine.as_str()) && got.is_some() {
            info!(replica = %self.id, "this replica now evaluates the fleet rules");
        }
        *lock(&self.lease) = got.clone();
        Ok(got.map(|t| {
            let fence = t
                .rsplit(':')
                .next()
                .and_then(|f| f.parse().ok())
                .unwrap_or(0);
            (t, fence)
        }))
    }

    /// Bring `eval` to the published window `target`: the windows it missed from the
    /// history's tail, or (a gap, a first start, a window fed but never published) a new
    /// copy of the rules fed the whole history. When Redis has less than this replica
    /// (it lost data), this replica's copy is kept.
    async fn catch_up(
        &self,
        conn: &mut ConnectionManager,
        k: &ShardKeys,
        eval: &mut Eval,
        target: u64,
    ) -> RedisResult<()> {
        if !eval.dirty && target <= eval.seq {
            return Ok(());
        }
        let missed = target.saturating_sub(eval.seq);
        if !eval.dirty && missed <= self.server().redis_history as u64 {
            let start = -isize::try_from(missed).unwrap_or(isize::MAX);
            let tail: Vec<String> = conn.lrange(&k.hist, start, -1).await?;
            let samples: Vec<Sample> = tail
                .iter()
                .filter_map(|s| serde_json::from_str(s).ok())
                .collect();
            let contiguous = samples.len() as u64 == missed
                && samples
                    .iter()
                    .enumerate()
                    .all(|(i, s)| s.seq == eval.seq + 1 + i as u64);
            if contiguous {
                for s in &samples {
                    feed(&mut eval.reflex, self.engine(), s);
                }
                eval.seq = target;
                return Ok(());
            }
        }
        let all: Vec<String> = conn.lrange(&k.hist, 0, -1).await?;
        let mut reflex = Reflex::new(self.engine())
            .map_err(|e| RedisError::from((redis::ErrorKind::Client, "rules", e.to_string())))?;
        let mut fed = 0;
        for s in all
            .iter()
            .filter_map(|s| serde_json::from_str::<Sample>(s).ok())
        {
            if s.seq <= target {
                feed(&mut reflex, self.engine(), &s);
                fed += 1;
            }
        }
        info!(
            windows = fed,
            seq = target,
            "fleet rules replayed from the shared history"
        );
        *eval = Eval {
            reflex,
            seq: target,
            dirty: false,
            demand: std::mem::take(&mut eval.demand),
        };
        Ok(())
    }

    /// The evaluator's window: read the merged telemetry, step the rules, publish (fenced).
    /// `Ok(None)`: the lease was lost.
    #[allow(clippy::too_many_arguments)]
    async fn evaluate(
        &self,
        conn: &mut ConnectionManager,
        k: &ShardKeys,
        eval: &mut Eval,
        now_ms: u64,
        token: &str,
        fence: u64,
        cumulative: &BTreeMap<String, TagCounters>,
    ) -> RedisResult<Option<FleetState>> {
        let server = self.server();
        let (fresh, inst, pulses, custom): WindowRead = redis::pipe()
            .atomic()
            .hgetall(&k.fresh)
            .hgetall(&k.inst)
            .hget(&k.meta, "pulses")
            .lrange(&k.custom, 0, -1)
            .del(&k.custom)
            .ignore()
            .query_async(conn)
            .await?;
        let ttl = ms(server.instance_ttl);
        let mut live: HashMap<String, InstanceRecord> = HashMap::new();
        let mut expired = Vec::new();
        for (id, json) in inst {
            match serde_json::from_str::<InstanceRecord>(&json) {
                Ok(r) if now_ms.saturating_sub(r.s) <= ttl => {
                    live.insert(id, r);
                }
                _ => expired.push(id),
            }
        }
        let mut gauge: BTreeMap<&str, u64> = BTreeMap::new();
        for r in live.values() {
            for (tag, n) in &r.f {
                add_to(gauge.entry(tag.as_str()).or_insert(0), *n);
            }
        }
        let fresh = read_fields(&fresh.into_iter().collect::<Vec<_>>());
        let sample = Sample {
            seq: eval.seq + 1,
            at: now_ms,
            tags: fresh
                .iter()
                .map(|(tag, c)| {
                    let c = for_rules_now(c, gauge.get(tag.as_str()));
                    (tag.clone(), Counts::of(&c))
                })
                .collect(),
            custom: custom
                .iter()
                .filter_map(|s| {
                    serde_json::from_str::<Vec<(Option<String>, String, Aggregate)>>(s).ok()
                })
                .flatten()
                .collect(),
        };
        let policy = feed(&mut eval.reflex, self.engine(), &sample);
        eval.seq = sample.seq;
        let rules: Vec<RuleRecord> = eval.reflex.status().iter().map(RuleRecord::of).collect();
        let demand = self
            .demand(
                conn,
                k,
                now_ms,
                &live,
                policy.tag_rate_limits.keys(),
                &mut eval.demand,
            )
            .await?;
        let state = FleetState {
            seq: sample.seq,
            fence,
            at: now_ms,
            policy,
            rules,
            tags: cumulative.keys().cloned().collect(),
            instances: live.len(),
            pulses: pulses.unwrap_or(0),
            demand,
        };
        let state_json = serde_json::to_string(&state).unwrap_or_default();
        let sample_json = serde_json::to_string(&sample).unwrap_or_default();
        let script = Script::new(PUBLISH);
        let mut publish = script.prepare_invoke();
        publish
            .key(format!("{}:leader", self.prefix))
            .key(&k.state)
            .key(&k.hist)
            .key(&k.inst)
            .arg(token)
            .arg(state_json)
            .arg(sample_json)
            .arg(server.redis_history);
        for id in &expired {
            publish.arg(id);
        }
        let written: i64 = publish.invoke_async(conn).await?;
        if written == 1 {
            Ok(Some(state))
        } else {
            eval.dirty = true;
            Ok(None)
        }
    }

    /// Per budgeted tag, the recent demand of every live instance. Buckets closed for a
    /// whole bucket are read once and kept in `cache`; the last two are read each window.
    async fn demand<'a>(
        &self,
        conn: &mut ConnectionManager,
        k: &ShardKeys,
        now_ms: u64,
        live: &HashMap<String, InstanceRecord>,
        tags: impl Iterator<Item = &'a String>,
        cache: &mut BTreeMap<(u64, String), HashMap<String, u64>>,
    ) -> RedisResult<BTreeMap<String, Demand>> {
        let tags: Vec<&String> = tags.collect();
        let window = ms(self.server().demand_window);
        let last = now_ms / self.bucket_ms;
        let first = now_ms.saturating_sub(window) / self.bucket_ms;
        cache.retain(|(b, _), _| *b >= first);
        let mut pipe = redis::pipe();
        let mut wanted = Vec::new();
        for tag in &tags {
            for b in first..=last {
                let key = (b, (*tag).clone());
                if b + 2 > last || !cache.contains_key(&key) {
                    pipe.hgetall(demand_key(k, b, tag));
                    wanted.push(key);
                }
            }
        }
        if !wanted.is_empty() {
            let read: Vec<HashMap<String, String>> = pipe.query_async(conn).await?;
            for (key, hash) in wanted.into_iter().zip(read) {
                let parsed = hash
                    .into_iter()
                    .map(|(inst, n)| (inst, n.parse::<u64>().unwrap_or(0)))
                    .collect();
                cache.insert(key, parsed);
            }
        }
        let mut out = BTreeMap::new();
        for tag in tags {
            let mut d = Demand::default();
            for b in first..=last {
                let Some(hash) = cache.get(&(b, tag.clone())) else {
                    continue;
                };
                for (inst, n) in hash {
                    if live.contains_key(inst) {
                        add_to(d.by.entry(inst.clone()).or_insert(0), *n);
                        add_to(&mut d.total, *n);
                    }
                }
            }
            out.insert(tag.clone(), d);
        }
        Ok(out)
    }

    /// Give the lease up (graceful shutdown), so another replica takes over at its next
    /// tick instead of after the lease; write the state file if anything moved since.
    pub(crate) async fn release(&self) {
        if let Some(file) = &self.state_file
            && self.health.is_up()
        {
            let now_ms = self.health.now_ms.load(Relaxed);
            file.save(self.cache.load_full(), now_ms, true).await;
        }
        let Some(token) = lock(&self.lease).take() else {
            return;
        };
        let r: RedisResult<i64> = Script::new(RELEASE)
            .key(format!("{}:leader", self.prefix))
            .arg(token)
            .invoke_async(&mut self.conn.clone())
            .await;
        if let Err(e) = r {
            warn!(error = %e, "could not give the evaluator's lease up");
        }
    }

    /// `/metrics` lines of the store.
    pub(crate) fn render(&self, out: &mut String) {
        self.health.render(out);
        snapshot::render(self.state_file.as_ref(), out);
    }
}

/// Feed one window to a copy of the fleet rules; the enforced policy.
fn feed(reflex: &mut Reflex, engine: &Config, s: &Sample) -> Policy {
    let mut reading = Reading::default();
    reading.tags = s
        .tags
        .iter()
        .map(|(tag, c)| TagReading::new(tag.clone(), engine.priority_of(tag), c.counters()))
        .collect();
    reading.custom = s.custom.clone();
    let (enforce, _dry) = reflex.observe(Duration::from_millis(s.at), reading);
    enforce
}
