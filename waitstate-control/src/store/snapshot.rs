//! The state file (`[server] state_file`): a copy, on this replica's disk, of the fleet
//! state it last read from Redis, so that a replica started while Redis is unreachable
//! answers with the last fleet policy instead of an empty one (issue 19).
//!
//! - **What.** Per fleet (org and site): the published [`FleetState`] (the policy, each
//!   rule's state, the tags, the live instances, the demand budgets are split by: all an
//!   answer is made of, so answers are the ones Redis's state gave), and the cumulative
//!   counters (for `/metrics` and the dashboard). JSON, with the `redis_prefix` and the
//!   fleet rules it was written under.
//! - **When written.** After a tick that read Redis: at once when a fleet policy or a
//!   rule's state changed (so at most once a tick), otherwise at most once per
//!   `state_file_interval` when only numbers moved; and on a graceful shutdown. Never
//!   while Redis is away (nothing new to keep). A write goes to a temporary file in the
//!   same directory, is synced, then renamed over the file: a reader sees the old file or
//!   the new one, never half of one. A write that fails is logged (once until one
//!   succeeds again), counted, and retried no sooner than `state_file_interval`.
//! - **When read.** Once, at start, and only when Redis does not answer then. A file that
//!   cannot be read, does not parse, or does not fit this configuration (another
//!   `redis_prefix`, other fleet rules, another format) is left aside with a warning: the
//!   replica starts without it, as it would without a file. Once Redis answers, its state
//!   replaces the file's (Redis is the source of truth), and the next write replaces the
//!   file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use waitstate_core::names;
use waitstate_core::{Config, Phase, Reflex, RuleStatus, TagCounters};

use super::codec::{Counts, FleetState, RuleRecord};
use super::redis::{Cached, ShardKey};
use crate::config::ControlConfig;
use crate::state::lock;

/// The file's format: a file of another format is left aside.
const FORMAT: u32 = 1;

/// The fleet rules, as the file records them: canonical text and dry run.
pub(super) type RuleSet = Vec<(String, bool)>;

/// The fleet rules of a configuration (empty when they do not build: the configuration
/// was checked at start, so they do).
pub(super) fn rule_set(engine: &Config) -> RuleSet {
    Reflex::new(engine)
        .map(|r| {
            r.status()
                .into_iter()
                .map(|s| (s.rule, s.dry_run))
                .collect()
        })
        .unwrap_or_default()
}

/// The file, as written (borrowing the cache).
#[derive(Serialize)]
struct FileOut<'a> {
    format: u32,
    prefix: &'a str,
    rules: &'a RuleSet,
    written_ms: u64,
    shards: Vec<ShardOut<'a>>,
}

#[derive(Serialize)]
struct ShardOut<'a> {
    org: &'a str,
    site: &'a str,
    state: &'a FleetState,
    tags: Vec<(&'a str, Counts)>,
}

/// The file, as read.
#[derive(Deserialize)]
struct FileIn {
    format: u32,
    prefix: String,
    rules: RuleSet,
    written_ms: u64,
    shards: Vec<ShardIn>,
}

#[derive(Deserialize)]
struct ShardIn {
    org: String,
    site: String,
    state: FleetState,
    tags: Vec<(String, Counts)>,
}

/// One fleet read back from the file.
#[derive(Debug)]
pub(super) struct RestoredShard {
    pub(super) key: ShardKey,
    pub(super) state: FleetState,
    pub(super) cumulative: BTreeMap<String, TagCounters>,
    pub(super) rules: Vec<RuleStatus>,
}

/// What the file held.
#[derive(Debug)]
pub(super) struct Restored {
    /// When it was written (epoch ms).
    pub(super) written_ms: u64,
    pub(super) shards: Vec<RestoredShard>,
}

/// Why the file was not used.
#[derive(Debug)]
pub(super) enum LoadError {
    /// There is none (a first start).
    Missing,
    /// It cannot be read.
    Unreadable(io::Error),
    /// It is not a state file, or one damaged.
    Corrupt(String),
    /// It does not fit this configuration.
    Mismatch(String),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no state file yet"),
            Self::Unreadable(e) => write!(f, "cannot be read: {e}"),
            Self::Corrupt(why) => write!(f, "damaged or not a state file: {why}"),
            Self::Mismatch(why) => write!(f, "does not fit this configuration: {why}"),
        }
    }
}

/// The file's bytes for the fleets this replica holds (those read from Redis; none read
/// back from an earlier file).
pub(super) fn encode(
    prefix: &str,
    rules: &RuleSet,
    written_ms: u64,
    cache: &HashMap<ShardKey, Arc<Cached>>,
) -> serde_json::Result<Vec<u8>> {
    let mut shards: Vec<ShardOut<'_>> = cache
        .iter()
        .filter(|(_, c)| !c.restored)
        .map(|((org, site), c)| ShardOut {
            org,
            site,
            state: &c.state,
            tags: c
                .cumulative
                .iter()
                .map(|(tag, counters)| (tag.as_str(), Counts::of(counters)))
                .collect(),
        })
        .collect();
    shards.sort_by(|a, b| (a.org, a.site).cmp(&(b.org, b.site)));
    serde_json::to_vec(&FileOut {
        format: FORMAT,
        prefix,
        rules,
        written_ms,
        shards,
    })
}

/// Read the file back, checked against `config`.
pub(super) fn load(path: &Path, config: &ControlConfig) -> Result<Restored, LoadError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(LoadError::Unreadable(e)),
    };
    decode(&bytes, config)
}

/// Parse and check the file's bytes.
pub(super) fn decode(bytes: &[u8], config: &ControlConfig) -> Result<Restored, LoadError> {
    let file: FileIn =
        serde_json::from_slice(bytes).map_err(|e| LoadError::Corrupt(e.to_string()))?;
    if file.format != FORMAT {
        return Err(LoadError::Mismatch(format!(
            "format {} (this version reads {FORMAT})",
            file.format
        )));
    }
    if file.prefix != config.server.redis_prefix {
        return Err(LoadError::Mismatch(format!(
            "written for redis_prefix `{}`, not `{}`",
            file.prefix, config.server.redis_prefix
        )));
    }
    let template = Reflex::new(&config.engine)
        .map_err(|e| LoadError::Mismatch(format!("the fleet rules do not build: {e}")))?
        .status();
    let rules: RuleSet = template
        .iter()
        .map(|s| (s.rule.clone(), s.dry_run))
        .collect();
    if file.rules != rules {
        return Err(LoadError::Mismatch(
            "written under other fleet rules".to_owned(),
        ));
    }
    let mut shards = Vec::with_capacity(file.shards.len());
    for s in file.shards {
        if !config.keys.iter().any(|k| k.org_id == s.org) {
            // An org no key names any more: nobody can ask for it.
            continue;
        }
        if names::shard_name_problem(&s.site).is_some() && !s.site.is_empty() {
            return Err(LoadError::Corrupt(format!("site name {:?}", s.site)));
        }
        s.state
            .policy
            .validate()
            .map_err(|e| LoadError::Corrupt(format!("the policy of {}/{}: {e}", s.org, s.site)))?;
        let rules = statuses(&template, &s.state.rules)
            .map_err(|why| LoadError::Corrupt(format!("{}/{}: {why}", s.org, s.site)))?;
        shards.push(RestoredShard {
            key: (s.org, s.site),
            cumulative: s
                .tags
                .into_iter()
                .map(|(tag, c)| (tag, c.counters()))
                .collect(),
            state: s.state,
            rules,
        });
    }
    Ok(Restored {
        written_ms: file.written_ms,
        shards,
    })
}

/// The rules' states as the dashboard and tests read them ([`RuleStatus`]), from the
/// records: this configuration's rules, each set to its record's phase.
fn statuses(template: &[RuleStatus], records: &[RuleRecord]) -> Result<Vec<RuleStatus>, String> {
    let mut out = template.to_vec();
    for r in records {
        // Published by an evaluator with other rules (a rolling change): not shown.
        let Some(status) = out.iter_mut().find(|s| s.rule == r.rule) else {
            continue;
        };
        status.phase = parse_phase(&r.phase).ok_or_else(|| format!("rule phase {:?}", r.phase))?;
        status.value = r.value.filter(|v| v.is_finite());
        status.shed_level = r.shed_level;
    }
    Ok(out)
}

/// `Idle`, `Pending`, `Firing`, `Cooling`, `Releasing(n)` ([`RuleRecord::phase`]).
fn parse_phase(text: &str) -> Option<Phase> {
    Some(match text {
        "Idle" => Phase::Idle,
        "Pending" => Phase::Pending,
        "Firing" => Phase::Firing,
        "Cooling" => Phase::Cooling,
        other => Phase::Releasing(
            other
                .strip_prefix("Releasing(")?
                .strip_suffix(')')?
                .parse()
                .ok()?,
        ),
    })
}

/// What decides whether the file is due: a digest of what answers are made of (each
/// fleet's policy and rule states), and each fleet's published window.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Summary {
    digest: u64,
    windows: Vec<(ShardKey, u64, u64)>,
}

impl Summary {
    pub(super) fn of(cache: &HashMap<ShardKey, Arc<Cached>>) -> Self {
        let mut keys: Vec<&ShardKey> = cache.keys().collect();
        keys.sort();
        let mut h = DefaultHasher::new();
        let mut windows = Vec::with_capacity(keys.len());
        for key in keys {
            let c = &cache[key];
            key.hash(&mut h);
            serde_json::to_string(&c.state.policy)
                .unwrap_or_default()
                .hash(&mut h);
            for r in &c.state.rules {
                (&r.rule, &r.phase, r.active).hash(&mut h);
            }
            windows.push((key.clone(), c.state.fence, c.state.seq));
        }
        Self {
            digest: h.finish(),
            windows,
        }
    }
}

/// The last write, or attempt.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// What the file holds (`None`: nothing written by this replica yet).
    summary: Option<Summary>,
    /// When it was last tried (epoch ms).
    tried_ms: Option<u64>,
    /// The last attempt failed.
    pub(super) failing: bool,
}

impl Written {
    /// Whether to write `now` what `summary` sums up. `force`: whatever moved, now (a
    /// graceful shutdown).
    pub(super) fn due(
        &self,
        summary: &Summary,
        now_ms: u64,
        interval_ms: u64,
        force: bool,
    ) -> bool {
        let Some(written) = &self.summary else {
            return !self.failing || self.interval_passed(now_ms, interval_ms);
        };
        let urgent = written.digest != summary.digest;
        let moved = urgent || written.windows != summary.windows;
        if force {
            return moved;
        }
        (urgent && !self.failing) || (moved && self.interval_passed(now_ms, interval_ms))
    }

    fn interval_passed(&self, now_ms: u64, interval_ms: u64) -> bool {
        self.tried_ms
            .is_none_or(|at| now_ms < at || now_ms - at >= interval_ms)
    }

    /// Record an attempt.
    pub(super) fn tried(&mut self, summary: Summary, now_ms: u64, ok: bool) {
        self.tried_ms = Some(now_ms);
        self.failing = !ok;
        if ok {
            self.summary = Some(summary);
        }
    }
}

/// Write `bytes` to `path` atomically: a temporary file beside it (named after this
/// replica, so that two processes never share one), synced, renamed over `path`, the
/// directory synced (best effort).
pub(super) fn write_atomic(path: &Path, bytes: &[u8], replica: &str) -> io::Result<()> {
    let tmp = temp_path(path, replica);
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The state file of a replica: where, how often, what was last written, and what
/// `/metrics` says of it.
#[derive(Debug)]
pub(crate) struct StateFile {
    path: PathBuf,
    interval_ms: u64,
    prefix: String,
    rules: RuleSet,
    replica: String,
    written: Mutex<Written>,
    /// Answers come from the file (Redis has not answered since the start).
    restored: AtomicBool,
    writes: AtomicU64,
    errors: AtomicU64,
}

impl StateFile {
    /// The state file of `config` (`None` when `state_file` is not set).
    pub(super) fn new(config: &ControlConfig, replica: &str) -> Option<Self> {
        let server = &config.server;
        Some(Self {
            path: server.state_file.clone()?,
            interval_ms: u64::try_from(server.state_file_interval.as_millis()).unwrap_or(u64::MAX),
            prefix: server.redis_prefix.clone(),
            rules: rule_set(&config.engine),
            replica: replica.to_owned(),
            written: Mutex::new(Written::default()),
            restored: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Read the file back (at start, Redis unreachable): what it holds, or `None`, logged
    /// either way.
    pub(super) async fn read(&self, config: Arc<ControlConfig>, now_ms: u64) -> Option<Restored> {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || load(&path, &config)).await;
        let shown = self.path.display();
        match read {
            Ok(Ok(restored)) => {
                warn!(
                    path = %shown,
                    fleets = restored.shards.len(),
                    age_s = now_ms.saturating_sub(restored.written_ms) / 1000,
                    "Redis unreachable at start: answering with the last fleet policy from the state file until Redis answers"
                );
                self.restored.store(true, Relaxed);
                Some(restored)
            }
            Ok(Err(LoadError::Missing)) => {
                warn!(path = %shown, "Redis unreachable at start and no state file yet: no fleet policy until Redis answers");
                None
            }
            Ok(Err(e)) => {
                warn!(path = %shown, error = %e, "state file left aside: starting without it (no fleet policy until Redis answers)");
                None
            }
            Err(e) => {
                warn!(path = %shown, error = %e, "state file not read: starting without it");
                None
            }
        }
    }

    /// Redis answered: its state replaces the file's.
    pub(super) fn superseded(&self) {
        if self.restored.swap(false, Relaxed) {
            info!("Redis reachable: its fleet state replaces the state file's");
        }
    }

    /// Write the fleets of `cache` when due (see the module docs); `force`: whatever moved,
    /// now (a graceful shutdown).
    pub(super) async fn save(
        &self,
        cache: Arc<HashMap<ShardKey, Arc<Cached>>>,
        now_ms: u64,
        force: bool,
    ) {
        let summary = Summary::of(&cache);
        if !lock(&self.written).due(&summary, now_ms, self.interval_ms, force) {
            return;
        }
        let (path, prefix, rules, replica) = (
            self.path.clone(),
            self.prefix.clone(),
            self.rules.clone(),
            self.replica.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            let bytes = encode(&prefix, &rules, now_ms, &cache).map_err(io::Error::other)?;
            write_atomic(&path, &bytes, &replica)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        let mut w = lock(&self.written);
        match written {
            Ok(()) => {
                self.writes.fetch_add(1, Relaxed);
                if w.failing {
                    info!(path = %self.path.display(), "state file written again");
                }
                w.tried(summary, now_ms, true);
            }
            Err(e) => {
                self.errors.fetch_add(1, Relaxed);
                if !w.failing {
                    warn!(path = %self.path.display(), error = %e, "cannot write the state file: a restart while Redis is away would start without the last fleet policy");
                }
                w.tried(summary, now_ms, false);
            }
        }
    }
}

/// `/metrics` lines of the state file (zeros without one).
pub(super) fn render(file: Option<&StateFile>, out: &mut String) {
    use std::fmt::Write as _;
    let get = |a: fn(&StateFile) -> u64| file.map_or(0, a);
    let _ = write!(
        out,
        "# HELP waitstate_store_restored Whether this replica answers from its state file: Redis has not answered since it started (1) or it has (0).\n\
         # TYPE waitstate_store_restored gauge\nwaitstate_store_restored {}\n\
         # HELP waitstate_state_file_writes_total Writes of the state file.\n\
         # TYPE waitstate_state_file_writes_total counter\nwaitstate_state_file_writes_total {}\n\
         # HELP waitstate_state_file_errors_total Writes of the state file that failed.\n\
         # TYPE waitstate_state_file_errors_total counter\nwaitstate_state_file_errors_total {}\n",
        get(|f| u64::from(f.restored.load(Relaxed))),
        get(|f| f.writes.load(Relaxed)),
        get(|f| f.errors.load(Relaxed)),
    );
}

/// `<dir>/.<name>.<replica>.tmp`.
fn temp_path(path: &Path, replica: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{replica}.tmp"))
}

#[cfg(test)]
mod tests;
