//! The writer: pulses merged in memory and written to Redis in one pipeline per batch
//! (group commit), each pulse answered once its batch is written; what cannot be written
//! is carried, bounded, and retried.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use redis::RedisError;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tracing::error;
use waitstate_core::names::DEFAULT_TAG;
use waitstate_core::{Aggregate, TagCounters};

use super::codec::{InstanceRecord, fields, weight_field};
use super::health::Health;
use super::redis::{ShardKey, ShardKeys, member};
use crate::fleet::{self, RULE_FEED_CAP, add_to};

/// Most pulses merged into one write.
pub(super) const MAX_BATCH: usize = 4096;
/// Most custom-metric batches kept per shard between two windows.
const MAX_CUSTOM_BATCHES: isize = 1024;

/// A pulse for the writer.
pub(super) struct Job {
    pub(super) shard: ShardKey,
    pub(super) instance: String,
    pub(super) checked: fleet::Checked,
    pub(super) now_ms: u64,
    /// The version of the policy the pulse is answered with.
    pub(super) version: u32,
    pub(super) done: oneshot::Sender<bool>,
}

/// Pulses merged, per shard, waiting to be written.
#[derive(Default)]
struct ShardBatch {
    cum: BTreeMap<String, TagCounters>,
    fresh: BTreeMap<String, TagCounters>,
    custom: Vec<(Option<String>, String, Aggregate)>,
    inst: HashMap<String, InstanceRecord>,
    /// (time bucket, instance, tag) → offered.
    demand: HashMap<(u64, String, String), u64>,
    pulses: u64,
}

#[derive(Default)]
struct Batch {
    shards: HashMap<ShardKey, ShardBatch>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    fn pulses(&self) -> u64 {
        self.shards.values().map(|b| b.pulses).sum()
    }

    /// Merge a pulse in; its reply channel.
    fn add(&mut self, job: Job, bucket_ms: u64) -> oneshot::Sender<bool> {
        let Job {
            shard,
            instance,
            checked: c,
            now_ms,
            version,
            done,
        } = job;
        let b = self.shards.entry(shard).or_default();
        b.pulses += 1;
        let bucket = now_ms / bucket_ms;
        let mut in_flight = BTreeMap::new();
        for d in c.deltas {
            fleet::merge_counters(b.cum.entry(d.tag.clone()).or_default(), &d.counters);
            if c.fresh {
                fleet::merge_counters(b.fresh.entry(d.tag.clone()).or_default(), &d.counters);
                for (name, agg) in d.custom {
                    b.custom.push((Some(d.tag.clone()), name, agg));
                }
            }
            add_to(
                b.demand
                    .entry((bucket, instance.clone(), d.tag.clone()))
                    .or_insert(0),
                d.offered,
            );
            add_to(in_flight.entry(d.tag).or_insert(0), d.in_flight);
        }
        if c.v1 && c.v1_errors > 0 {
            add_to(
                &mut b.cum.entry(DEFAULT_TAG.to_owned()).or_default().errors,
                c.v1_errors,
            );
            if c.fresh {
                add_to(
                    &mut b.fresh.entry(DEFAULT_TAG.to_owned()).or_default().errors,
                    c.v1_errors,
                );
            }
        }
        b.inst.insert(
            instance,
            InstanceRecord {
                s: now_ms,
                f: in_flight,
                v: Some(version),
            },
        );
        done
    }

    /// A write failed: keep it for the next, as telemetry of past windows (counted, kept
    /// out of the rules' current window), bounded: demand older than `oldest` goes.
    fn carry(mut self, oldest_bucket: u64) -> Self {
        for b in self.shards.values_mut() {
            b.fresh.clear();
            b.custom.clear();
            b.demand
                .retain(|(bucket, _, _), _| *bucket >= oldest_bucket);
        }
        self
    }

    /// Everything in one pipeline.
    fn pipeline(&self, prefix: &str, demand_ttl_ms: u64) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        let shards = format!("{prefix}:shards");
        for (shard, b) in &self.shards {
            let k = ShardKeys::new(prefix, shard);
            pipe.sadd(&shards, member(shard)).ignore();
            for (key, tags) in [(&k.cum, &b.cum), (&k.fresh, &b.fresh)] {
                for (tag, c) in tags {
                    let (f, w) = fields(tag, c);
                    for (field, n) in f {
                        pipe.hincr(key, field, n).ignore();
                    }
                    if w > 0.0 {
                        pipe.hincr(key, weight_field(tag), w).ignore();
                    }
                }
            }
            if !b.custom.is_empty() {
                let json = serde_json::to_string(&b.custom).unwrap_or_default();
                pipe.rpush(&k.custom, json).ignore();
                pipe.ltrim(&k.custom, -MAX_CUSTOM_BATCHES, -1).ignore();
            }
            if !b.inst.is_empty() {
                let items: Vec<(&str, String)> = b
                    .inst
                    .iter()
                    .map(|(id, r)| (id.as_str(), serde_json::to_string(r).unwrap_or_default()))
                    .collect();
                pipe.hset_multiple(&k.inst, &items).ignore();
            }
            let mut buckets: Vec<String> = Vec::new();
            for ((bucket, inst, tag), n) in &b.demand {
                let key = demand_key(&k, *bucket, tag);
                pipe.hincr(&key, inst, (*n).min(RULE_FEED_CAP)).ignore();
                if !buckets.contains(&key) {
                    buckets.push(key);
                }
            }
            for key in buckets {
                pipe.pexpire(&key, i64::try_from(demand_ttl_ms).unwrap_or(i64::MAX))
                    .ignore();
            }
            pipe.hincr(&k.meta, "pulses", b.pulses).ignore();
        }
        pipe
    }
}

/// The hash of a tag's demand in a time bucket: instance → requests offered.
pub(super) fn demand_key(k: &ShardKeys, bucket: u64, tag: &str) -> String {
    format!("{}{bucket}:{tag}", k.demand)
}

/// The writer: takes pulses as they come, merges what waits, writes it in one pipeline,
/// then tells each pulse. What cannot be written is carried (and retried every `retry`).
pub(super) async fn writer(
    mut rx: mpsc::Receiver<Job>,
    mut conn: ConnectionManager,
    prefix: String,
    health: Arc<Health>,
    bucket_ms: u64,
    demand_ttl_ms: u64,
    retry: Duration,
) {
    let mut carry = Batch::default();
    let mut waiting: Vec<oneshot::Sender<bool>> = Vec::new();
    loop {
        let first = if carry.is_empty() {
            match rx.recv().await {
                Some(j) => Some(j),
                None => break,
            }
        } else {
            match tokio::time::timeout(retry, rx.recv()).await {
                Ok(Some(j)) => Some(j),
                Ok(None) => break,
                Err(_) => None,
            }
        };
        let mut batch = std::mem::take(&mut carry);
        let mut latest = 0;
        if let Some(j) = first {
            latest = j.now_ms;
            waiting.push(batch.add(j, bucket_ms));
        }
        while waiting.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => {
                    latest = latest.max(j.now_ms);
                    waiting.push(batch.add(j, bucket_ms));
                }
                Err(_) => break,
            }
        }
        health.saw(latest);
        if !health.may_try() {
            // Down, and no probe due: carried at once (the tick probes).
            let oldest = latest.saturating_sub(demand_ttl_ms) / bucket_ms;
            carry = batch.carry(oldest);
            health.carried.store(carry.pulses(), Relaxed);
            for done in waiting.drain(..) {
                let _ = done.send(false);
            }
            continue;
        }
        let written = match batch
            .pipeline(&prefix, demand_ttl_ms)
            .query_async::<()>(&mut conn)
            .await
        {
            Ok(()) => {
                health.ok();
                true
            }
            Err(e) => {
                health.failed("write telemetry", &e);
                if transient(&e) {
                    let oldest = latest.saturating_sub(demand_ttl_ms) / bucket_ms;
                    carry = batch.carry(oldest);
                } else {
                    // Redis refused the data itself (a counter past i64): carrying it would
                    // fail the same way forever.
                    error!(error = %e, "Redis refused a telemetry write: dropped");
                }
                false
            }
        };
        health.carried.store(carry.pulses(), Relaxed);
        for done in waiting.drain(..) {
            let _ = done.send(written);
        }
    }
}

fn transient(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}
