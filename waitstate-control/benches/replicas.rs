//! Replicas over one Redis, measured with real SDK instances: a fleet-wide budget
//! (`limit free to 100/s`) enforced by three instances that pulse every second to replicas
//! in turn (instance i's first URL is replica i mod n, the others follow), each offering
//! 100 `free` requests a second (300/s in all). After a warm-up, the admitted rate is
//! measured; then (with `--kill`) the first replica is killed (no graceful shutdown: its
//! lease runs out) and the rate is measured again. At the end every instance's admitted
//! count is compared with what the fleet state in Redis holds (telemetry lost?), and each
//! instance's control status says whether it ever entered safe mode.
//!
//! Run with: `cargo bench -p waitstate-control --features redis --bench replicas -- --replicas 2 --kill`
//!
//! Needs `redis-server` (`WAITSTATE_REDIS_SERVER`, or on the `PATH`); it is started on a
//! free port in a temp dir and stopped at the end. Options: `--replicas N` (2),
//! `--phase SECS` (20, each measured phase), `--kill`.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use waitstate_control::{AppState, ControlConfig, ControlServer};
use waitstate_core::{ControlPlane, WaitState};

const PK: &str = "pk_bench";
const SK: &str = "sk_bench_secret";
const ORG: &str = "bench";

struct Args {
    replicas: usize,
    phase: u64,
    kill: bool,
    memory: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        replicas: 2,
        phase: 20,
        kill: false,
        memory: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--replicas" => a.replicas = num()?.clamp(1, 8) as usize,
            "--phase" => a.phase = num()?.max(5),
            "--kill" => a.kill = true,
            "--memory" => a.memory = true,
            "--bench" => {}
            other if !other.starts_with("--") => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

/// A `redis-server` on a free port, in a temp dir; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    fn start() -> Result<Self, String> {
        let binary = std::env::var("WAITSTATE_REDIS_SERVER").unwrap_or("redis-server".into());
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let dir = std::env::temp_dir().join(format!("waitstate-bench-redis-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{binary}: {e} (install redis-server)"))?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Self { child, port, dir });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err("redis-server did not start".into())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(redis_port: Option<u16>) -> Result<ControlConfig, String> {
    let redis = redis_port.map_or(String::new(), |p| {
        format!("redis_url = \"redis://127.0.0.1:{p}\"")
    });
    ControlConfig::from_toml_str(&format!(
        r#"window = "5s"
[tags]
enterprise = 100
free = 10
[[rules]]
rule = "when rps >= 0 then limit free to 100/s"
[server]
listen = "127.0.0.1:0"
pulse_interval = "1s"
demand_window = "10s"
{redis}
[[keys]]
publish_key = "{PK}"
secret_key = "{SK}"
org_id = "{ORG}"
"#
    ))
    .map_err(|e| e.to_string())
}

#[allow(clippy::disallowed_methods)]
fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Admitted `free` requests, all instances.
fn admitted(counts: &[Arc<AtomicU64>]) -> u64 {
    counts.iter().map(|c| c.load(Relaxed)).sum()
}

async fn measure(counts: &[Arc<AtomicU64>], secs: u64) -> f64 {
    let before = admitted(counts);
    let start = now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    (admitted(counts) - before) as f64 / start.elapsed().as_secs_f64()
}

async fn bench(a: Args) -> Result<(), String> {
    let redis = Redis::start()?;
    let config = config((!a.memory).then_some(redis.port))?;
    let mut replicas = Vec::new();
    for _ in 0..a.replicas {
        replicas.push(Some(
            ControlServer::bind(config.clone())
                .await
                .map_err(|e| e.to_string())?,
        ));
    }
    let urls: Vec<String> = replicas.iter().flatten().map(|r| r.url()).collect();
    let survivor: AppState = replicas[a.replicas - 1]
        .as_ref()
        .map(|r| r.state().clone())
        .ok_or("no replica")?;
    let mut fleet = Vec::new();
    for i in 0..3 {
        let mut cp = ControlPlane::new(urls[i % urls.len()].clone(), PK, SK)
            .pulse_interval(Duration::from_secs(1))
            .sync_interval(Duration::from_secs(1));
        for k in 1..urls.len() {
            cp = cp.failover(urls[(i + k) % urls.len()].clone());
        }
        let ws = WaitState::builder()
            .tag("enterprise", 100)
            .tag("free", 10)
            .control_plane(cp)
            .build()
            .map_err(|e| e.to_string())?;
        fleet.push(ws);
    }
    // 100 `free` requests a second per instance, each ending at once.
    let counts: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut load = Vec::new();
    for (ws, count) in fleet.iter().zip(&counts) {
        let (ws, count) = (ws.clone(), count.clone());
        load.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            loop {
                every.tick().await;
                if let Ok(permit) = ws.admit("free", 1.0) {
                    drop(permit);
                    count.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    println!(
        "replicas={} store={} instances=3 offered=300/s budget=100/s phase={}s",
        a.replicas,
        if a.memory { "memory" } else { "redis" },
        a.phase
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady = measure(&counts, a.phase).await;
    println!(
        "steady: admitted {steady:.1}/s ({:+.1}% of the budget)",
        (steady - 100.0)
    );
    if a.kill && a.replicas > 1 {
        // Killed: dropped without a graceful shutdown; its lease runs out in Redis.
        replicas[0] = None;
        let during = measure(&counts, 5).await;
        let after = measure(&counts, a.phase).await;
        println!(
            "replica 0 killed: admitted {during:.1}/s in the first 5 s, then {after:.1}/s ({:+.1}% of the budget)",
            (after - 100.0)
        );
    }
    for l in &load {
        l.abort();
    }
    // Let the last pulses and a window land.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent = admitted(&counts);
    let fleet_view = survivor
        .shard(ORG, "")
        .and_then(|v| v.tags.get("free").map(|c| c.admitted))
        .unwrap_or(0);
    let safe = fleet
        .iter()
        .filter(|ws| ws.control_status().is_some_and(|s| s.safe_mode))
        .count();
    let failovers: u64 = fleet
        .iter()
        .filter_map(|ws| ws.control_status().map(|s| s.failovers))
        .sum();
    println!(
        "telemetry: instances admitted {sent}, the fleet state holds {fleet_view} ({}); instances in safe mode: {safe}; failovers: {failovers}",
        if sent == fleet_view {
            "nothing lost"
        } else {
            "MISMATCH"
        }
    );
    drop(redis);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("replicas: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("replicas: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(a)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replicas: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
