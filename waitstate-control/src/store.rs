//! Where the fleet state lives: in this process (the default, one replica), or in Redis
//! (`[server] redis_url`, the `redis` feature), so that any number of replicas see one fleet
//! and a restart loses nothing.
//!
//! ## With Redis
//!
//! | what | how |
//! |---|---|
//! | telemetry | every replica adds the pulses it takes into per-shard hashes with `HINCRBY` (counts add, the latency histogram bucket by bucket, so the fleet p95 is a real percentile). Pulses are merged in memory and written in one pipeline per batch (group commit): no round trip per pulse or per tag. A pulse is answered once its batch is written |
//! | the fleet rules | one replica at a time evaluates them: the holder of a lease in Redis (`SET NX PX`, renewed each tick), with a fencing token (`INCR`) checked inside the script that publishes its result, so a replica that lost the lease (paused, cut off) can never publish. Each window it reads the merged telemetry, steps the rules, and publishes, atomically, the fleet state (policy, rule states, the demand the budgets are split by) and the window it read (a capped history list) |
//! | every replica's rules | each replica feeds the published windows to its own copy of the rules (the same code, the same inputs: the same states), so a replica that takes over carries on where the last one was. A replica that starts (or missed windows) replays the history: a restart mid-incident resumes the firing rule |
//! | answers | from the fleet state each replica reads once per tick: no Redis read on the pulse path. Budgets are split once, by the evaluator's numbers, so every replica gives the same shares and they add up to the budget |
//! | replays | each replica's own cache first, then `SET NX PX` of the MAC, shared by every replica |
//! | token key | `jwt_secret`, or a random key set once in Redis (`SET NX`) and read by every replica |
//!
//! ## When Redis is unreachable
//!
//! Replicas keep answering with the last fleet policy they read (never an empty one), log
//! it, and say so in `/metrics` (`waitstate_store_up 0`, `waitstate_store_errors_total`).
//! The telemetry they take meanwhile is merged in memory (bounded: per shard and tag, not
//! per pulse) and written when Redis returns, counted but kept out of the rules' current
//! window (as a pulse carrying old windows is). If a replica dies while Redis is away, what
//! it held is lost.
//!
//! A replica that *starts* while Redis is unreachable has read nothing yet. With
//! `[server] state_file`, each replica keeps a copy of the fleet state it last read (each
//! fleet's published state: policy, rule states, tags, live instances, the demand budgets
//! are split by; and the counters), written atomically after ticks that read Redis (at once
//! when a policy or a rule's state changed, else at most every `state_file_interval`), and
//! read back at start when Redis does not answer: it then answers as it did before the
//! restart, says so in the log (a warning) and in `/metrics` (`waitstate_store_restored 1`),
//! until Redis answers and its state replaces the file's. A file that cannot be read or
//! does not fit the configuration is a warning and a start without it. Without
//! `state_file` (the default: no path is writable and private everywhere, and a file
//! in a shared temp dir could be planted by another user to set a fleet policy), such a
//! replica answers with no fleet policy until Redis returns, and logs a warning saying so.
//! The details are in `store/snapshot.rs`.

//!
//! ## Why so
//!
//! - **A lease, and the same rules everywhere.** A window must be closed at one moment for
//!   the whole fleet: replicas that each read the shared counters at their own moment
//!   would each see a different window and could decide differently, so one replica (the
//!   lease holder) closes it and publishes what it read. The fencing token, checked by
//!   Redis in the same script that publishes, makes a deposed evaluator harmless (a pause
//!   longer than the lease, a partition), which a lease alone does not. Beyond that the
//!   evaluation is deterministic: the rules are the SDK's [`Reflex`](waitstate_core::Reflex),
//!   fed the same windows at the same times on every replica, so any replica can take over
//!   at the next tick with the same states, and a restarted one rebuilds them by replaying
//!   the history (600 windows by default: 10 minutes at the default tick, more than any
//!   window, `for` and cool-down in practice). Shipping the rule states themselves would
//!   need a serialized form of the evaluator's internals; replaying its inputs needs none.
//! - **Writes on the pulse path, reads off it.** A pulse waits for one pipelined write
//!   (shared with every pulse that arrived meanwhile), so a replica killed after answering
//!   has lost nothing; answers come from the state read once per tick, so the pulse path
//!   never reads Redis, and Redis being away does not stop answers.
//! - **The client: the `redis` crate** (redis-rs, the most used Rust client, maintained by
//!   the Redis company), its tokio `ConnectionManager`: one multiplexed connection per
//!   replica that pipelines concurrent calls and reconnects by itself, scripts (`EVALSHA`
//!   with a fallback to `EVAL`), no pool to size. `fred` is as well kept and does more
//!   (cluster, sentinel, pooling), none of which one Redis needs.
//! - Caps: `max_instances` is checked against the live instances the evaluator last
//!   counted (a new instance is refused once the fleet is full, with one `HEXISTS` then
//!   only); `max_sites` against the shards this replica knows.
//! - Not covered: Redis Cluster (the keys of a shard share a hash tag, `{org␟site}`, but the
//!   lease and the shard set do not).

#[cfg(feature = "redis")]
mod codec;
#[cfg(feature = "redis")]
mod health;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod snapshot;
#[cfg(feature = "redis")]
mod writer;

#[cfg(feature = "redis")]
pub(crate) use self::redis::RedisStore;
