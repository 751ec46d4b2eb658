use std::sync::atomic::AtomicU64;

use waitstate_core::Policy;

use super::*;
use crate::metrics::FleetStats;
use crate::state::AppState;

const RULE: &str = "when p95_latency of free > 500ms then block free";

/// A configuration over Redis at `url` with a state file at `path`.
fn config(url: &str, path: &Path) -> ControlConfig {
    ControlConfig::from_toml_str(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nredis_url = \"{url}\"\nredis_prefix = \"t\"\n\
         state_file = \"{}\"\n\n[[keys]]\npublish_key = \"pk\"\nsecret_key = \"sk\"\n\
         org_id = \"acme\"\n\n[tags]\nenterprise = 100\nfree = 10\n[[rules]]\nrule = \"{RULE}\"\n",
        path.display()
    ))
    .unwrap()
}

/// A directory of this test's own, emptied.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ws-state-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Redis URL where nothing listens.
fn dead_redis() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    format!("redis://127.0.0.1:{port}")
}

/// The fleet `acme` with its rule firing: `free` blocked, two instances, a budget split.
fn firing(config: &ControlConfig) -> Cached {
    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    let mut status = Reflex::new(&config.engine).unwrap().status();
    status[0].phase = Phase::Firing;
    status[0].value = Some(900.0);
    let mut free = TagCounters::default();
    free.admitted = 30;
    free.rejected[1] = 4;
    free.latency.record_n_micros(900_000, 3);
    let mut demand = super::super::codec::Demand::default();
    demand.total = 30;
    demand.by.insert("i0".into(), 10);
    demand.by.insert("i1".into(), 20);
    Cached {
        state: FleetState {
            seq: 12,
            fence: 3,
            at: 1_000,
            policy,
            rules: status.iter().map(RuleRecord::of).collect(),
            tags: vec!["free".into()],
            instances: 2,
            pulses: 36,
            demand: [("free".to_owned(), demand)].into(),
        },
        cumulative: [("free".to_owned(), free)].into(),
        rules: status,
        stats: FleetStats::default().add_shard("acme", ""),
        restored: false,
        version: 0,
    }
}

fn cache_of(c: Cached) -> HashMap<ShardKey, Arc<Cached>> {
    [(("acme".to_owned(), String::new()), Arc::new(c))].into()
}

fn file_bytes(config: &ControlConfig) -> Vec<u8> {
    let cache = cache_of(firing(config));
    encode("t", &rule_set(&config.engine), 5_000, &cache).unwrap()
}

#[test]
fn what_is_written_reads_back_as_it_was() {
    let config = config("redis://127.0.0.1:6379", Path::new("/x/state.json"));
    let c = firing(&config);
    let back = decode(&file_bytes(&config), &config).unwrap();
    assert_eq!(back.written_ms, 5_000);
    assert_eq!(back.shards.len(), 1);
    let s = &back.shards[0];
    assert_eq!(s.key, ("acme".to_owned(), String::new()));
    assert_eq!(s.state.policy, c.state.policy);
    assert_eq!(s.state.rules, c.state.rules);
    assert_eq!((s.state.seq, s.state.instances), (12, 2));
    assert_eq!(s.state.demand, c.state.demand);
    assert_eq!(
        s.rules, c.rules,
        "the rules' states, as the dashboard reads them"
    );
    assert_eq!(s.cumulative, c.cumulative);
    // A fleet read back from a file is never written again as if read from Redis.
    let mut restored = firing(&config);
    restored.restored = true;
    let again = encode("t", &rule_set(&config.engine), 6_000, &cache_of(restored)).unwrap();
    assert!(decode(&again, &config).unwrap().shards.is_empty());
}

#[test]
fn a_corrupt_or_foreign_file_is_left_aside() {
    let config = config("redis://127.0.0.1:6379", Path::new("/x/state.json"));
    let good = file_bytes(&config);
    let text = String::from_utf8(good.clone()).unwrap();
    let corrupt: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\x00\xff\xfe garbage".to_vec(),
        good[..good.len() / 2].to_vec(),
        b"{\"format\":1}".to_vec(),
        b"[1,2,3]".to_vec(),
        // A policy no SDK would accept (a throttle over 100%).
        text.replace(
            "\"tagMaxWeights\"",
            "\"tagThrottles\":{\"free\":250},\"tagMaxWeights\"",
        )
        .into_bytes(),
        text.replace("\"Firing\"", "\"Smouldering\"").into_bytes(),
    ];
    for bytes in corrupt {
        let e = decode(&bytes, &config).unwrap_err();
        assert!(
            matches!(e, LoadError::Corrupt(_)),
            "{e} for {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let foreign = [
        text.replace("\"format\":1", "\"format\":99"),
        text.replace("\"prefix\":\"t\"", "\"prefix\":\"other\""),
        text.replace("block free", "block enterprise"),
    ];
    for t in foreign {
        let e = decode(t.as_bytes(), &config).unwrap_err();
        assert!(matches!(e, LoadError::Mismatch(_)), "{e} for {t}");
    }
    // The rules changed in the configuration since the file was written.
    let other = ControlConfig::from_toml_str(&format!(
        "[server]\nredis_url = \"redis://127.0.0.1:6379\"\nredis_prefix = \"t\"\n\n[[keys]]\n\
         publish_key = \"pk\"\nsecret_key = \"sk\"\norg_id = \"acme\"\n\n[tags]\nfree = 10\n\
         [[rules]]\nrule = \"{RULE}\"\ndry_run = true\n"
    ))
    .unwrap();
    assert!(matches!(
        decode(&good, &other).unwrap_err(),
        LoadError::Mismatch(_)
    ));
    let dir = temp_dir("unreadable");
    assert!(matches!(
        load(&dir.join("none.json"), &config).unwrap_err(),
        LoadError::Missing
    ));
    // A directory where the file should be.
    assert!(matches!(
        load(&dir, &config).unwrap_err(),
        LoadError::Unreadable(_)
    ));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writes_are_atomic_and_leave_no_temporary_file() {
    let dir = temp_dir("atomic");
    let path = dir.join("state.json");
    write_atomic(&path, b"one", "r1").unwrap();
    write_atomic(&path, b"two", "r1").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["state.json"]);
    // A directory that does not exist: an error, the old file (none) untouched.
    assert!(write_atomic(&dir.join("gone/state.json"), b"x", "r1").is_err());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_policy_is_written_at_once_numbers_at_the_interval() {
    let config = config("redis://127.0.0.1:6379", Path::new("/x/state.json"));
    let summary = |policy_blocks: bool, seq: u64| {
        let mut c = firing(&config);
        if !policy_blocks {
            c.state.policy = Policy::default();
        }
        c.state.seq = seq;
        Summary::of(&cache_of(c))
    };
    let mut w = Written::default();
    assert!(w.due(&summary(false, 1), 0, 10_000, false), "the first");
    w.tried(summary(false, 1), 0, true);
    assert!(
        !w.due(&summary(false, 1), 1_000, 10_000, false),
        "nothing moved"
    );
    assert!(
        !w.due(&summary(false, 2), 1_000, 10_000, false),
        "numbers only"
    );
    assert!(
        w.due(&summary(false, 2), 10_000, 10_000, false),
        "the interval"
    );
    assert!(
        w.due(&summary(true, 2), 1_000, 10_000, false),
        "the policy changed"
    );
    assert!(w.due(&summary(false, 2), 1_000, 10_000, true), "shutdown");
    assert!(
        !w.due(&summary(false, 1), 1_000, 10_000, true),
        "shutdown, nothing moved"
    );
    // A failing disk is retried at the interval, not every tick.
    w.tried(summary(true, 2), 1_000, false);
    assert!(!w.due(&summary(true, 3), 2_000, 10_000, false));
    assert!(w.due(&summary(true, 3), 11_000, 10_000, false));
    // A wall clock that went back does not stop the writes.
    assert!(w.due(&summary(true, 3), 500, 10_000, false));
}

async fn metric(state: &AppState, name: &str) -> Option<f64> {
    state
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

/// What the replica logs, captured.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl tracing_subscriber::fmt::MakeWriter<'_> for Logs {
    type Writer = Self;

    fn make_writer(&self) -> Self {
        self.clone()
    }
}

impl Logs {
    /// What was logged since the last call.
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *lock(&self.0))).into_owned()
    }
}

/// What the fleet policy `state` answers with caps `free` at (a rule blocks it: 0).
fn free_weight(state: &AppState) -> Option<f64> {
    state
        .answer_for("acme", "", None)
        .tag_max_weights
        .get("free")
        .copied()
}

/// Issue 19: a replica started while Redis is unreachable answers with the fleet state of
/// its file, and says so; a corrupt file is a warning and a start without it, never a
/// panic.
#[tokio::test]
async fn a_start_without_redis_answers_from_the_file_or_without_a_corrupt_one() {
    let logs = Logs::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );
    let dir = temp_dir("start");
    let path = dir.join("state.json");
    let config = config(&dead_redis(), &path);
    let clock = Arc::new(AtomicU64::new(65_000));
    let start = || {
        let clock = clock.clone();
        AppState::connect_with_wall_clock(config.clone(), Box::new(move || clock.load(Relaxed)))
    };
    // No file yet.
    let state = start().await.unwrap();
    assert_eq!(free_weight(&state), None);
    assert_eq!(metric(&state, "waitstate_store_restored").await, Some(0.0));
    let logged = logs.take();
    assert!(
        logged.contains("WARN") && logged.contains("no state file yet"),
        "{logged}"
    );

    fs::write(&path, file_bytes(&config)).unwrap();
    let state = start().await.unwrap();
    let answer = state.answer_for("acme", "", Some("i1"));
    assert_eq!(answer.tag_max_weights.get("free"), Some(&0.0));
    assert_eq!(answer.status.as_deref(), Some("degraded"));
    let view = state.shard("acme", "").unwrap();
    assert!(view.rules[0].is_active(), "{:?}", view.rules);
    assert_eq!(view.instances, 2);
    assert_eq!(metric(&state, "waitstate_store_restored").await, Some(1.0));
    assert_eq!(metric(&state, "waitstate_store_up").await, Some(0.0));
    let logged = logs.take();
    assert!(
        logged.contains("WARN")
            && logged.contains("answering with the last fleet policy from the state file"),
        "{logged}"
    );
    // Ticks while Redis stays away change nothing, and write nothing.
    clock.fetch_add(60_000, Relaxed);
    state.step().await;
    assert_eq!(free_weight(&state), Some(0.0));
    assert_eq!(fs::read(&path).unwrap(), file_bytes(&config));

    for bytes in [&b"{\"format\":1,\"prefix\":"[..], b"\xff\xfe", b""] {
        fs::write(&path, bytes).unwrap();
        let state = start().await.unwrap();
        assert_eq!(state.shard("acme", "").map(|v| v.instances), None);
        assert_eq!(free_weight(&state), None);
        assert_eq!(metric(&state, "waitstate_store_restored").await, Some(0.0));
        let logged = logs.take();
        assert!(
            logged.contains("WARN") && logged.contains("state file left aside"),
            "{logged}"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}
