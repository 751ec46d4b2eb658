//! Control plane replicas over one real `redis-server` (issue 19): one fleet however many
//! replicas, a replica killed, the only replica restarted mid-incident, Redis stopped for
//! 30 s, a replica restarted while Redis is down (answering from its state file). Needs `WAITSTATE_REDIS_SERVER` (scripts/test sets it; without it every test here
//! skips, saying so).
//!
//! The control plane's time is an injected wall clock that the test steps a second at a
//! time, and the fleet windows are closed by the test ([`AppState::step`]), so the
//! decisions do not depend on how fast this machine is. Real time passes only in bounded
//! waits: Redis starting, and a dead replica's lease running out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpListener;
use waitstate_control::{AppState, ControlConfig, ControlServer, InstanceOrder};
use waitstate_core::Policy;
use waitstate_core::histogram::Histogram;
use waitstate_core::wire::{self, PulseBody, TagMetric};
use waitstate_tests::control::{self as common, ORG, PK, SK};
use waitstate_tests::redis::RedisServer;

/// The wall clock at the start (epoch ms).
const START_MS: u64 = 1_900_000_000_000;
const SLOW_RULE: &str = "when p95_latency of free > 500ms then block free";
const BUDGET_RULE: &str = "when rps >= 0 then limit free to 100/s";

/// Replicas of one control plane, over one Redis, on one injected clock (or one replica in
/// memory, in virtual time).
struct Fleet {
    /// In memory, on tokio's paused clock (which [`Fleet::advance`] steps too).
    memory: bool,
    clock: Arc<AtomicU64>,
    config: ControlConfig,
    replicas: Vec<Option<ControlServer>>,
    http: reqwest::Client,
    nonce: AtomicU64,
}

fn config(redis: &RedisServer, prefix: &str, rule: &str) -> ControlConfig {
    common::fleet_config(
        &format!(
            "pulse_interval = \"1s\"\nredis_url = \"{}\"\nredis_prefix = \"{prefix}\"",
            redis.url()
        ),
        "5s",
        rule,
    )
}

/// One pulse's traffic for a tag: `n` requests, each taking `ms`.
#[derive(Clone, Copy)]
struct Traffic {
    tag: &'static str,
    n: u64,
    ms: u64,
}

fn traffic(tag: &'static str, n: u64, ms: u64) -> Traffic {
    Traffic { tag, n, ms }
}

impl Fleet {
    async fn new(config: ControlConfig, replicas: usize) -> Self {
        let mut fleet = Self {
            memory: config.server.redis_url.is_none(),
            clock: Arc::new(AtomicU64::new(START_MS)),
            config,
            replicas: Vec::new(),
            http: reqwest::Client::new(),
            nonce: AtomicU64::new(0),
        };
        for _ in 0..replicas {
            fleet.add_replica().await;
        }
        fleet
    }

    /// Start one more replica (or a restarted one); its index.
    async fn add_replica(&mut self) -> usize {
        let clock = self.clock.clone();
        let state = AppState::connect_with_wall_clock(
            self.config.clone(),
            Box::new(move || clock.load(Relaxed)),
        )
        .await
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = ControlServer::serve_without_ticks(listener, state).unwrap();
        self.replicas.push(Some(server));
        self.replicas.len() - 1
    }

    fn replica(&self, i: usize) -> &ControlServer {
        self.replicas[i].as_ref().expect("a live replica")
    }

    fn live(&self) -> impl Iterator<Item = &ControlServer> {
        self.replicas.iter().flatten()
    }

    async fn advance(&self, ms: u64) {
        self.clock.fetch_add(ms, Relaxed);
        if self.memory {
            tokio::time::advance(Duration::from_millis(ms)).await;
        }
    }

    /// Close a window: every live replica steps (the evaluator publishes), then the others
    /// step again to read what it published.
    async fn step(&self) {
        for r in self.live() {
            r.state().step().await;
        }
        for r in self.live() {
            if r.state().store_health().is_some_and(|h| h != (true, true)) {
                r.state().step().await;
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        self.replicas.iter().position(|r| {
            r.as_ref()
                .is_some_and(|r| r.state().store_health() == Some((true, true)))
        })
    }

    /// A signed pulse of `instance` to replica `i`: its answer, or the HTTP status (0 when
    /// the replica cannot be reached).
    async fn pulse(&self, i: usize, instance: &str, tags: &[Traffic]) -> Result<Policy, u16> {
        let Some(Some(server)) = self.replicas.get(i) else {
            return Err(0);
        };
        let mut body = PulseBody::default();
        body.instance_id = instance.to_owned();
        // Unique bodies: a second pulse alike would be a replay.
        body.ts = self.clock.load(Relaxed) + self.nonce.fetch_add(1, Relaxed);
        for t in tags {
            let mut m = TagMetric::default();
            m.tag = t.tag.to_owned();
            m.count = t.n;
            m.latency = t.ms as f64;
            m.admitted = Some(t.n);
            m.completed = Some(t.n);
            m.errors = Some(0);
            m.in_flight = Some(0);
            let mut h = Histogram::new();
            h.record_n_micros(t.ms * 1000, t.n);
            m.histogram = Some(h.to_sparse());
            body.tag_metrics.push(m);
        }
        let json = serde_json::to_vec(&body).unwrap();
        let ts = self.clock.load(Relaxed).to_string();
        let signature = wire::sign(SK.as_bytes(), &json, &ts);
        let sent = self
            .http
            .post(format!("{}/v1/pulse", server.url()))
            .header(wire::HEADER_ID, PK)
            .header(wire::HEADER_TIMESTAMP, &ts)
            .header(wire::HEADER_SIGNATURE, signature)
            .header("content-type", "application/json")
            .body(json)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                Ok(Policy::from_json(&r.text().await.unwrap()).unwrap())
            }
            Ok(r) => Err(r.status().as_u16()),
            Err(_) => Err(0),
        }
    }

    fn blocks_free(&self, i: usize) -> bool {
        self.replica(i)
            .state()
            .answer_for(ORG, "", None)
            .tag_max_weights
            .get("free")
            == Some(&0.0)
    }
}

/// Three instances, pulsing each second to replicas in turn: healthy free traffic for 10 s,
/// then 1 in 11 free requests takes 900 ms (only the merged histogram's p95 says so).
/// Returns, per window, whether replica 0 blocks free, and whether every acknowledged
/// answer of that window agreed with it.
async fn slow_scenario(fleet: &Fleet, windows: usize) -> Vec<bool> {
    let mut blocked = Vec::new();
    let n = fleet.replicas.len();
    for w in 0..windows {
        fleet.advance(1000).await;
        for i in 0..3 {
            let slow = w >= 10 && i == 0;
            let load = [
                traffic(
                    "free",
                    if slow { 1 } else { 5 },
                    if slow { 900 } else { 20 },
                ),
                traffic("enterprise", 5, 20),
            ];
            fleet
                .pulse((w + i) % n, &format!("i{i}"), &load)
                .await
                .unwrap();
        }
        fleet.step().await;
        blocked.push(fleet.blocks_free(0));
        for r in 1..n {
            assert_eq!(fleet.blocks_free(r), blocked[w], "replicas disagree at {w}");
        }
    }
    blocked
}

fn first_and_flips(blocked: &[bool]) -> (Option<usize>, usize) {
    let first = blocked.iter().position(|b| *b);
    let flips = blocked.windows(2).filter(|w| w[0] != w[1]).count();
    (first, flips)
}

/// The same scenario on one replica in memory (the default, no Redis), in virtual time.
fn in_memory(windows: usize) -> Vec<bool> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let config = common::fleet_config("pulse_interval = \"1s\"", "5s", SLOW_RULE);
            let fleet = Fleet::new(config, 1).await;
            slow_scenario(&fleet, windows).await
        })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_the_fleet_rule_once_as_one_replica_does() {
    let Some(redis) = RedisServer::start("two_replicas_fire_the_fleet_rule_once") else {
        return;
    };
    let one = Fleet::new(config(&redis, "one", SLOW_RULE), 1).await;
    let two = Fleet::new(config(&redis, "two", SLOW_RULE), 2).await;
    let alone = slow_scenario(&one, 25).await;
    let paired = slow_scenario(&two, 25).await;
    let memory = in_memory(25);
    let (first_memory, flips_memory) = first_and_flips(&memory);
    let first_memory = first_memory.expect("one replica in memory never blocked free");
    let (first_alone, flips_alone) = first_and_flips(&alone);
    let (first_paired, flips_paired) = first_and_flips(&paired);
    let first_alone = first_alone.expect("one replica never blocked free");
    let first_paired = first_paired.expect("two replicas never blocked free");
    eprintln!(
        "slow from window 10: one replica in memory blocks free from window {first_memory}, \
         one over Redis from {first_alone}, two from {first_paired}"
    );
    assert!(
        first_alone.abs_diff(first_memory) <= 1 && flips_memory == 1,
        "in memory: {memory:?}\nover Redis: {alone:?}"
    );
    assert!(
        first_alone >= 10,
        "fired before the slow requests: {alone:?}"
    );
    assert!(
        first_paired.abs_diff(first_alone) <= 1,
        "one replica fired at window {first_alone}, two at {first_paired}"
    );
    // Fired once: blocked from then on, never released and fired again.
    assert_eq!((flips_alone, flips_paired), (1, 1), "{alone:?}\n{paired:?}");
    // One evaluator: each window published once, whoever took the pulses.
    let view = two.replica(1).state().shard(ORG, "").unwrap();
    assert_eq!(view.instances, 3);
    assert_eq!(view.pulses, 75);
    // The rule read the merged window: p95 over 500 ms, though no instance's own p95 is
    // over it but instance 0's (1 in 11 of the fleet's free requests is slow).
    let firing: Vec<_> = view.rules.iter().filter(|r| r.is_active()).collect();
    assert_eq!(firing.len(), 1, "{:?}", view.rules);
    assert!(firing[0].value.unwrap() > 500.0, "{:?}", firing[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_budget_is_split_once_and_tokens_and_replays_are_shared() {
    let Some(redis) = RedisServer::start("a_fleet_budget_is_split_once") else {
        return;
    };
    let fleet = Fleet::new(config(&redis, "budget", BUDGET_RULE), 2).await;
    let demand = [10u64, 20, 30];
    let mut last: Vec<Policy> = Vec::new();
    for w in 0..8 {
        fleet.advance(1000).await;
        last.clear();
        for (i, n) in demand.iter().enumerate() {
            let p = fleet
                .pulse((w + i) % 2, &format!("i{i}"), &[traffic("free", *n, 20)])
                .await
                .unwrap();
            last.push(p);
        }
        fleet.step().await;
    }
    // Both replicas give every instance the same share, and the shares add up to 100/s.
    for r in 0..2 {
        let shares: Vec<f64> = (0..3)
            .map(|i| {
                fleet
                    .replica(r)
                    .state()
                    .answer_for(ORG, "", Some(&format!("i{i}")))
                    .tag_rate_limits["free"]
            })
            .collect();
        let total: f64 = shares.iter().sum();
        assert!((total - 100.0).abs() < 1e-6, "replica {r}: {shares:?}");
        assert!(shares[0] < shares[1] && shares[1] < shares[2], "{shares:?}");
        let other: Vec<f64> = (0..3)
            .map(|i| {
                fleet
                    .replica(1 - r)
                    .state()
                    .answer_for(ORG, "", Some(&format!("i{i}")))
                    .tag_rate_limits["free"]
            })
            .collect();
        assert_eq!(shares, other);
    }
    assert!(last.iter().all(|p| p.tag_rate_limits.contains_key("free")));

    // The dashboard's instance list (issue 18), from Redis: either replica lists the
    // fleet's three instances, a page at a time, each with the policy version it was given.
    for r in 0..2 {
        let state = fleet.replica(r).state();
        let page = state
            .instances(ORG, "", InstanceOrder::Id, 0, 2)
            .await
            .unwrap()
            .expect("the fleet");
        assert_eq!((page.total, page.per_page), (3, 2));
        let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["i0", "i1"]);
        let rest = state
            .instances(ORG, "", InstanceOrder::Id, 1, 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        let all: Vec<_> = page.items.iter().chain(&rest.items).collect();
        assert!(all[0].policy_version.is_some());
        for i in &all {
            assert_eq!(i.policy_version, all[0].policy_version, "{i:?}");
            assert_eq!(i.last_pulse_ago, Duration::ZERO);
            assert_eq!(i.lease_left, fleet.config.server.lease);
        }
    }

    // A token bought from one replica is good at the other.
    let token: serde_json::Value = fleet
        .http
        .post(format!("{}/v1/auth/token", fleet.replica(0).url()))
        .json(&serde_json::json!({"publishKey": PK, "secretKey": SK}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read = fleet
        .http
        .get(format!("{}/v1/policy/{ORG}", fleet.replica(1).url()))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    // A pulse taken by one replica is a replay at the other.
    let body = br#"{"instanceId":"i9","tagMetrics":[]}"#;
    let ts = fleet.clock.load(Relaxed).to_string();
    let signature = wire::sign(SK.as_bytes(), body, &ts);
    let mut statuses = Vec::new();
    for r in 0..2 {
        let answer = fleet
            .http
            .post(format!("{}/v1/pulse", fleet.replica(r).url()))
            .header(wire::HEADER_ID, PK)
            .header(wire::HEADER_TIMESTAMP, &ts)
            .header(wire::HEADER_SIGNATURE, &signature)
            .body(&body[..])
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [200, 409]);
}

/// Admitted `free` requests the fleet state holds, read at replica `i`.
fn admitted(fleet: &Fleet, i: usize) -> u64 {
    fleet
        .replica(i)
        .state()
        .shard(ORG, "")
        .map_or(0, |v| v.tags.get("free").map_or(0, |c| c.admitted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_incident_loses_nothing_and_the_other_takes_over() {
    let Some(redis) = RedisServer::start("a_replica_killed_mid_incident") else {
        return;
    };
    let mut fleet = Fleet::new(config(&redis, "kill", SLOW_RULE), 2).await;
    let mut sent = 0u64;
    for w in 0..14 {
        fleet.advance(1000).await;
        for i in 0..3 {
            let load = [traffic("free", 10, if i == 0 { 900 } else { 20 })];
            fleet
                .pulse((w + i) % 2, &format!("i{i}"), &load)
                .await
                .unwrap();
            sent += 10;
        }
        fleet.step().await;
    }
    assert!(fleet.blocks_free(0) && fleet.blocks_free(1), "not firing");
    let dead = fleet.leader().expect("a leader");
    let survivor = 1 - dead;
    // Killed: no graceful shutdown, its lease stays until it runs out.
    fleet.replicas[dead] = None;
    let mut took_over = false;
    for w in 14..200 {
        fleet.advance(1000).await;
        for i in 0..3 {
            let load = [traffic("free", 10, if i == 0 { 900 } else { 20 })];
            // What an SDK with both URLs does: the dead one fails, the next one is tried.
            let answer = match fleet.pulse((w + i) % 2, &format!("i{i}"), &load).await {
                Err(0) => fleet.pulse(survivor, &format!("i{i}"), &load).await,
                other => other,
            };
            let policy = answer.expect("every pulse is acknowledged");
            assert_eq!(
                policy.tag_max_weights.get("free"),
                Some(&0.0),
                "the last fleet policy stays while nobody evaluates"
            );
            sent += 10;
        }
        fleet.step().await;
        if fleet.leader() == Some(survivor) && w >= 20 {
            took_over = true;
            break;
        }
        // Bounded real wait for the dead replica's lease (3 s) to run out.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(took_over, "the survivor never took the evaluator's lease");
    fleet.step().await;
    assert!(fleet.blocks_free(survivor), "the rule stopped firing");
    assert_eq!(admitted(&fleet, survivor), sent, "telemetry lost");
    let view = fleet.replica(survivor).state().shard(ORG, "").unwrap();
    assert!(view.rules.iter().any(|r| r.is_active()), "{:?}", view.rules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_replica_restarted_mid_incident_is_still_firing() {
    let Some(redis) = RedisServer::start("the_only_replica_restarted") else {
        return;
    };
    // With a `for`: a copy of the rules that starts afresh would be pending, not firing.
    let rule = "when p95_latency of free > 500ms for 3s then block free";
    let mut fleet = Fleet::new(config(&redis, "restart", rule), 1).await;
    for _ in 0..12 {
        fleet.advance(1000).await;
        for i in 0..3 {
            let load = [traffic("free", 10, if i == 0 { 900 } else { 20 })];
            fleet.pulse(0, &format!("i{i}"), &load).await.unwrap();
        }
        fleet.step().await;
    }
    assert!(fleet.blocks_free(0), "not firing before the restart");
    let before = fleet.replica(0).state().shard(ORG, "").unwrap();
    // A graceful restart (SIGTERM): the lease is given up on the way out.
    let old = fleet.replicas[0].take().unwrap();
    old.shutdown().await.unwrap();
    let again = fleet.add_replica().await;
    // Before any new pulse: the first window after the start replays the history.
    fleet.step().await;
    assert!(
        fleet.blocks_free(again),
        "the restarted replica released free"
    );
    let after = fleet.replica(again).state().shard(ORG, "").unwrap();
    assert_eq!(after.rules, before.rules);
    assert_eq!(after.tags["free"].admitted, before.tags["free"].admitted);
    // And it goes on evaluating: still slow, still firing.
    for _ in 0..3 {
        fleet.advance(1000).await;
        for i in 0..3 {
            let load = [traffic("free", 10, if i == 0 { 900 } else { 20 })];
            let p = fleet.pulse(again, &format!("i{i}"), &load).await.unwrap();
            assert_eq!(p.tag_max_weights.get("free"), Some(&0.0));
        }
        fleet.step().await;
    }
    assert!(fleet.blocks_free(again));
}

async fn metric(fleet: &Fleet, i: usize, name: &str) -> Option<f64> {
    let text = fleet
        .http
        .get(format!("{}/metrics", fleet.replica(i).url()))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_for_30s_keeps_the_last_policy_and_catches_up() {
    let Some(mut redis) = RedisServer::start("redis_stopped_for_30s") else {
        return;
    };
    let fleet = Fleet::new(config(&redis, "outage", SLOW_RULE), 2).await;
    let mut sent = 0u64;
    let load = |i: usize| [traffic("free", 10, if i == 0 { 900 } else { 20 })];
    for w in 0..12 {
        fleet.advance(1000).await;
        for i in 0..3 {
            fleet
                .pulse((w + i) % 2, &format!("i{i}"), &load(i))
                .await
                .unwrap();
            sent += 10;
        }
        fleet.step().await;
    }
    assert!(fleet.blocks_free(0) && fleet.blocks_free(1), "not firing");
    let seq_before = fleet.replica(0).state().shard(ORG, "").unwrap().pulses;

    redis.stop();
    for w in 0..30 {
        fleet.advance(1000).await;
        for i in 0..3 {
            let p = fleet
                .pulse((w + i) % 2, &format!("i{i}"), &load(i))
                .await
                .expect("answered while Redis is away");
            assert_eq!(p.tag_max_weights.get("free"), Some(&0.0), "policy lost");
            sent += 10;
        }
        fleet.step().await;
    }
    for r in 0..2 {
        assert!(fleet.blocks_free(r));
        assert_eq!(metric(&fleet, r, "waitstate_store_up").await, Some(0.0));
        assert!(metric(&fleet, r, "waitstate_store_carried_pulses").await > Some(0.0));
    }

    redis.restart();
    // Within two pulses: the carried telemetry written, the fleet evaluated again.
    for _ in 0..2 {
        fleet.advance(1000).await;
        for i in 0..3 {
            fleet
                .pulse(i % 2, &format!("i{i}"), &load(i))
                .await
                .unwrap();
            sent += 10;
        }
        fleet.step().await;
    }
    for r in 0..2 {
        assert_eq!(metric(&fleet, r, "waitstate_store_up").await, Some(1.0));
        assert_eq!(
            metric(&fleet, r, "waitstate_store_carried_pulses").await,
            Some(0.0)
        );
        assert!(fleet.blocks_free(r), "replica {r} lost the policy");
        assert_eq!(admitted(&fleet, r), sent, "replica {r}: telemetry lost");
    }
    let pulses = fleet.replica(0).state().shard(ORG, "").unwrap().pulses;
    assert_eq!(pulses, seq_before + 96, "every pulse counted once");
}

/// Issue 19: the replica restarted while Redis is down answers with the last fleet policy,
/// from its state file (`[server] state_file`), never with an empty one; Redis's state
/// replaces the file's once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_while_redis_is_down_answers_from_its_state_file() {
    let Some(mut redis) = RedisServer::start("a_replica_restarted_while_redis_is_down") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("waitstate-state-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fleet-state.json");
    let rule = "when p95_latency of free > 500ms for 3s then block free";
    let mut config = config(&redis, "file", rule);
    config.server.state_file = Some(path.clone());
    let without_file = {
        let mut c = config.clone();
        c.server.state_file = None;
        c
    };
    let mut fleet = Fleet::new(config, 1).await;
    let load = |i: usize| [traffic("free", 10, if i == 0 { 900 } else { 20 })];
    for _ in 0..12 {
        fleet.advance(1000).await;
        for i in 0..3 {
            fleet.pulse(0, &format!("i{i}"), &load(i)).await.unwrap();
        }
        fleet.step().await;
    }
    assert!(fleet.blocks_free(0), "not firing");
    let before = fleet.replica(0).state().shard(ORG, "").unwrap();
    let answer_before = fleet.replica(0).state().answer_for(ORG, "", Some("i1"));
    assert!(path.exists(), "no state file written");
    assert!(metric(&fleet, 0, "waitstate_state_file_writes_total").await >= Some(1.0));

    // Killed (no graceful shutdown: what it wrote is what the ticks wrote), then Redis
    // goes away, then the replica starts again.
    fleet.replicas[0] = None;
    redis.stop();
    let again = fleet.add_replica().await;
    let state = fleet.replica(again).state();
    assert!(
        fleet.blocks_free(again),
        "the restarted replica answers with no fleet policy"
    );
    assert_eq!(state.answer_for(ORG, "", Some("i1")), answer_before);
    let view = state.shard(ORG, "").unwrap();
    assert_eq!(view.rules, before.rules);
    assert_eq!(view.instances, before.instances);
    // The counters are as of the last write: the rule's firing was written at once, the
    // numbers since then at most every `state_file_interval` (10 s; 8 windows passed).
    assert!(
        view.pulses > 0 && view.pulses <= before.pulses,
        "{}",
        view.pulses
    );
    assert_eq!(metric(&fleet, again, "waitstate_store_up").await, Some(0.0));
    assert_eq!(
        metric(&fleet, again, "waitstate_store_restored").await,
        Some(1.0)
    );
    // Pulses are answered alike, window after window, while Redis stays away.
    for _ in 0..5 {
        fleet.advance(1000).await;
        for i in 0..3 {
            let p = fleet
                .pulse(again, &format!("i{i}"), &load(i))
                .await
                .expect("answered while Redis is away");
            assert_eq!(p.tag_max_weights.get("free"), Some(&0.0), "policy lost");
        }
        fleet.step().await;
    }
    // Without a state file, the same restart answers with no fleet policy (what issue 19
    // was about).
    let mut bare = Fleet::new(without_file, 0).await;
    bare.clock.store(fleet.clock.load(Relaxed), Relaxed);
    bare.add_replica().await;
    assert!(
        !bare.blocks_free(0),
        "without a state file there is nothing to answer from"
    );

    // Redis returns: its state (still firing) replaces the file's.
    redis.restart();
    for _ in 0..2 {
        fleet.advance(1000).await;
        for i in 0..3 {
            fleet
                .pulse(again, &format!("i{i}"), &load(i))
                .await
                .unwrap();
        }
        fleet.step().await;
    }
    assert_eq!(metric(&fleet, again, "waitstate_store_up").await, Some(1.0));
    assert_eq!(
        metric(&fleet, again, "waitstate_store_restored").await,
        Some(0.0)
    );
    assert!(fleet.blocks_free(again), "the rule stopped firing");
    let view = fleet.replica(again).state().shard(ORG, "").unwrap();
    // Redis's counters: with what was taken while it was away.
    assert!(
        view.tags["free"].admitted > before.tags["free"].admitted,
        "not Redis's state"
    );
    assert!(metric(&fleet, again, "waitstate_state_file_writes_total").await >= Some(1.0));
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_cap_holds_for_the_fleet_not_per_replica() {
    let Some(redis) = RedisServer::start("the_instance_cap_holds_for_the_fleet") else {
        return;
    };
    let mut config = config(&redis, "cap", SLOW_RULE);
    config.server.max_instances = 2;
    let fleet = Fleet::new(config, 2).await;
    let load = [traffic("free", 1, 20)];
    fleet.advance(1000).await;
    // One instance on each replica: each replica alone is under the cap.
    fleet.pulse(0, "i0", &load).await.unwrap();
    fleet.pulse(1, "i1", &load).await.unwrap();
    fleet.step().await;
    fleet.advance(1000).await;
    for r in 0..2 {
        let third = fleet.pulse(r, "i2", &load).await;
        assert_eq!(
            third.err(),
            Some(429),
            "replica {r} let a third instance in"
        );
        // The two known instances still pulse, to either replica.
        fleet.pulse(r, "i0", &load).await.unwrap();
        fleet.pulse(r, "i1", &load).await.unwrap();
    }
}
