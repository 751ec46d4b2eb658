//! Run with: `cargo run --release --example demo`
//!
//! WaitState in front of a real axum service, driven past its capacity over loopback.
//!
//! The backend has a fixed capacity: a pool of 10 connections, each request holding one
//! for 30-70 ms (about 200 requests/s). A request that waits a second for a connection
//! fails with 503, as a real pool times out. Latency therefore grows with load: requests
//! queue for the pool.
//!
//! The built-in load generator is open-loop (it does not slow down when the service does)
//! and mixes three tiers: enterprise 40/s, pro 48/s, free 72/s, 80% of capacity. A third of
//! the way in, free quadruples for 14/30 of the run (188% of capacity), then calms down.
//!
//! With the gate, WaitState's adaptive admission (no capacity number configured: it learns
//! the limit from the backend's service time) keeps the backend busy with the most
//! important work: free is turned away first, enterprise and pro keep their latency, and
//! the pool stays busy. With `--no-gate`, every tier queues behind the surge and every
//! tier's latency collapses together.
//!
//! Options: `--duration SECS` (default 30), `--summary-json PATH` (per tier: offered,
//! admitted, shed, errors, p95_ms, p99_ms, and the backend's capacity), `--no-gate`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior, sleep, timeout};
use waitstate_core::histogram::{AtomicHistogram, Histogram};
use waitstate_core::{Config, WaitState};
use waitstate_tower::{GateLayer, HeaderTagger};

const POOL: usize = 10;
const SERVICE_MS: (u64, u64) = (30, 70);
const POOL_TIMEOUT: Duration = Duration::from_secs(1);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_OUTSTANDING: u64 = 4_000;
const TIERS: [(&str, f64); 3] = [("enterprise", 40.0), ("pro", 48.0), ("free", 72.0)];
const SURGE_FACTOR: f64 = 4.0;

/// The WaitState configuration the demo runs with (the same TOML a service would load).
const CONFIG: &str = r#"
tick = "250ms"
window = "2s"

[tags]
enterprise = 100
pro = 50
free = 10

# No capacity number: adaptive admission learns how many requests the backend can hold
# and, when it is full, serves enterprise first, then pro, then free, each waiting at most a
# few service times. The rule is a backstop for a backend that slows down by itself.
[[rules]]
rule = "when p95_latency > 500ms for 2s then shed"
cooldown = "3s"
"#;

fn capacity_rps() -> f64 {
    POOL as f64 * 1000.0 / ((SERVICE_MS.0 + SERVICE_MS.1) as f64 / 2.0)
}

// ---------------------------------------------------------------- the service

/// The backend: a fixed-size pool, a service time per request.
#[derive(Clone)]
struct Backend {
    pool: Arc<Semaphore>,
    seed: Arc<AtomicU64>,
    /// Microseconds the pool's connections were held, in all (utilisation = busy / time).
    busy_us: Arc<AtomicU64>,
}

impl Backend {
    fn new() -> Self {
        Self {
            pool: Arc::new(Semaphore::new(POOL)),
            seed: Arc::new(AtomicU64::new(0x2545_F491_4F6C_DD1D)),
            busy_us: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A service time in `SERVICE_MS`, from a cheap shared pseudo-random sequence.
    fn service_time(&self) -> Duration {
        let x = self.seed.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        let x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Duration::from_millis(SERVICE_MS.0 + (x >> 33) % (SERVICE_MS.1 - SERVICE_MS.0 + 1))
    }
}

async fn handler(State(backend): State<Backend>) -> (StatusCode, &'static str) {
    match timeout(POOL_TIMEOUT, backend.pool.acquire()).await {
        Ok(Ok(_connection)) => {
            let service = backend.service_time();
            sleep(service).await;
            backend
                .busy_us
                .fetch_add(service.as_micros() as u64, Relaxed);
            (StatusCode::OK, "ok\n")
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "pool timeout\n"),
    }
}

/// The app: the backend's route, gated when `ws` is given.
fn app(ws: Option<WaitState>, backend: Backend) -> Router {
    let router = Router::new().route("/", get(handler)).with_state(backend);
    match ws {
        Some(ws) => router.layer(GateLayer::new(ws, HeaderTagger::new())),
        None => router,
    }
}

// ---------------------------------------------------------------- the load

#[derive(Default)]
struct TierStats {
    offered: AtomicU64,
    admitted: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    latency: AtomicHistogram,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    offered: u64,
    admitted: u64,
    shed: u64,
    errors: u64,
}

impl TierStats {
    fn counts(&self) -> Counts {
        Counts {
            offered: self.offered.load(Relaxed),
            admitted: self.admitted.load(Relaxed),
            shed: self.shed.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }

    fn histogram(&self) -> Histogram {
        let mut h = Histogram::new();
        self.latency.load_into(&mut h);
        h
    }
}

struct Args {
    duration: u64,
    summary: Option<PathBuf>,
    gate: bool,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        duration: 30,
        summary: None,
        gate: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-gate" => out.gate = false,
            "--duration" => {
                out.duration = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|d| *d >= 6)
                    .ok_or("--duration takes a number of seconds, at least 6")?;
            }
            "--summary-json" => {
                out.summary = Some(it.next().ok_or("--summary-json takes a path")?.into());
            }
            other => {
                return Err(format!(
                    "unknown argument `{other}` (try --duration, --summary-json, --no-gate)"
                ));
            }
        }
    }
    Ok(out)
}

fn ms(h: &Histogram, q: f64) -> Option<f64> {
    h.quantile_ms(q)
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.0}ms"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args().map_err(|e| -> Box<dyn std::error::Error> { e.into() })?;
    let ws = if args.gate {
        Some(WaitState::from_config(Config::from_toml_str(CONFIG)?)?)
    } else {
        None
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let backend = Backend::new();
    let busy = backend.busy_us.clone();
    let server = tokio::spawn(axum::serve(listener, app(ws.clone(), backend)).into_future());

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(10))
        .build_http();
    let uri: http::Uri = format!("http://{addr}/").parse()?;
    let stats: Arc<[TierStats; 3]> = Arc::new(Default::default());
    let outstanding = Arc::new(AtomicU64::new(0));

    let total = Duration::from_secs(args.duration);
    let surge_from = total * 8 / 30;
    let surge_to = total * 22 / 30;
    println!(
        "WaitState demo: backend capacity {:.0} req/s ({POOL} connections, {}-{} ms each); \
         load 80% of it, free x{SURGE_FACTOR} from {}s to {}s (188%); gate {}",
        capacity_rps(),
        SERVICE_MS.0,
        SERVICE_MS.1,
        surge_from.as_secs(),
        surge_to.as_secs(),
        if args.gate { "ON" } else { "OFF (--no-gate)" }
    );
    println!(
        "{:>4} | {:^28} | {:^28} | {:^28} | backend  | admission, rules",
        "", "enterprise", "pro", "free"
    );
    println!(
        "{:>4} | {:^28} | {:^28} | {:^28} |   busy   |",
        "t(s)",
        "offer  ok  shed err   p95",
        "offer  ok  shed err   p95",
        "offer  ok  shed err   p95"
    );

    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut carry = [0.0f64; 3];
    let mut last = start;
    let mut prev_counts = [Counts::default(); 3];
    let mut prev_hist: Vec<Histogram> = (0..3).map(|_| Histogram::new()).collect();
    let mut calm_end: Option<Vec<Histogram>> = None;
    let mut surge_start: Option<Vec<Histogram>> = None;
    let mut surge_end: Option<Vec<Histogram>> = None;
    let mut second = 0;
    let mut prev_busy = 0u64;
    let mut busy_at_surge: Option<(u64, Instant)> = None;
    let mut busy_after_surge: Option<(u64, Instant)> = None;

    loop {
        let now = ticker.tick().await;
        let elapsed = now - start;
        if elapsed >= total {
            break;
        }
        let dt = (now - last).as_secs_f64();
        last = now;
        let surge = elapsed >= surge_from && elapsed < surge_to;
        if surge && surge_start.is_none() {
            busy_at_surge = Some((busy.load(Relaxed), now));
            surge_start = Some(stats.iter().map(TierStats::histogram).collect());
            calm_end = surge_start.clone();
        }
        if !surge && surge_start.is_some() && surge_end.is_none() {
            busy_after_surge = Some((busy.load(Relaxed), now));
            surge_end = Some(stats.iter().map(TierStats::histogram).collect());
        }
        for (i, (tag, rps)) in TIERS.iter().enumerate() {
            let rate = if surge && *tag == "free" {
                rps * SURGE_FACTOR
            } else {
                *rps
            };
            carry[i] += rate * dt;
            while carry[i] >= 1.0 {
                carry[i] -= 1.0;
                stats[i].offered.fetch_add(1, Relaxed);
                if outstanding.load(Relaxed) >= MAX_OUTSTANDING {
                    stats[i].errors.fetch_add(1, Relaxed);
                    continue;
                }
                outstanding.fetch_add(1, Relaxed);
                let (client, uri, stats, outstanding) = (
                    client.clone(),
                    uri.clone(),
                    stats.clone(),
                    outstanding.clone(),
                );
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let req = http::Request::get(uri)
                        .header("x-waitstate-tag", *tag)
                        .body(Empty::<Bytes>::new())
                        .expect("a valid request");
                    let result = timeout(CLIENT_TIMEOUT, async {
                        let res = client.request(req).await?;
                        let status = res.status();
                        res.into_body().collect().await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
                    })
                    .await;
                    let s = &stats[i];
                    match result {
                        Ok(Ok(StatusCode::OK)) => {
                            s.admitted.fetch_add(1, Relaxed);
                            s.latency.record(sent.elapsed());
                        }
                        Ok(Ok(StatusCode::TOO_MANY_REQUESTS)) => {
                            s.shed.fetch_add(1, Relaxed);
                        }
                        _ => {
                            s.errors.fetch_add(1, Relaxed);
                        }
                    }
                    outstanding.fetch_sub(1, Relaxed);
                });
            }
        }
        // Once a second, a line of the table.
        if elapsed.as_secs() > second {
            second = elapsed.as_secs();
            let mut line = format!("{second:>4} |");
            for (i, s) in stats.iter().enumerate() {
                let c = s.counts();
                let p = prev_counts[i];
                let mut h = s.histogram();
                let all = h.clone();
                h.subtract(&prev_hist[i]);
                prev_hist[i] = all;
                prev_counts[i] = c;
                line.push_str(&format!(
                    " {:>5} {:>4} {:>5} {:>3} {:>6} |",
                    c.offered - p.offered,
                    c.admitted - p.admitted,
                    c.shed - p.shed,
                    c.errors - p.errors,
                    fmt_ms(ms(&h, 0.95))
                ));
            }
            let busy_now = busy.load(Relaxed);
            let util = (busy_now - prev_busy) as f64 / (POOL as f64 * 1e6);
            prev_busy = busy_now;
            line.push_str(&format!(" {:>6.0}%  |", 100.0 * util));
            if let Some(ws) = &ws {
                let a = ws.admission();
                let waiting: u64 = a.levels.iter().map(|l| l.waiting).sum();
                line.push_str(&format!(" limit {:>3}, waiting {waiting:>3}", a.limit));
                let active: Vec<String> = ws
                    .rules()
                    .iter()
                    .filter(|r| r.is_active())
                    .map(|r| format!("shed {} lvl ({:?})", r.shed_level, r.phase))
                    .collect();
                if !active.is_empty() {
                    line.push_str("; ");
                    line.push_str(&active.join(", "));
                }
            }
            println!("{line}");
        }
    }

    // Let the requests in flight finish (bounded by the client timeout).
    let drain = Instant::now();
    while outstanding.load(Relaxed) > 0 && drain.elapsed() < CLIENT_TIMEOUT {
        sleep(Duration::from_millis(20)).await;
    }
    server.abort();

    // ---------------------------------------------------------------- summary
    let surge_start = surge_start.unwrap_or_else(|| (0..3).map(|_| Histogram::new()).collect());
    let surge_end = surge_end.unwrap_or_else(|| stats.iter().map(TierStats::histogram).collect());
    let calm_end = calm_end.unwrap_or_else(|| surge_start.clone());
    println!();
    let mut tiers = serde_json::Map::new();
    let mut calm_p95 = [0.0; 3];
    let mut surge_p95 = [0.0; 3];
    let mut shed_share = [0.0; 3];
    for (i, (tag, _)) in TIERS.iter().enumerate() {
        let c = stats[i].counts();
        let all = stats[i].histogram();
        let mut surge = surge_end[i].clone();
        surge.subtract(&surge_start[i]);
        calm_p95[i] = ms(&calm_end[i], 0.95).unwrap_or(0.0);
        surge_p95[i] = ms(&surge, 0.95).unwrap_or(0.0);
        shed_share[i] = c.shed as f64 / c.offered.max(1) as f64;
        println!(
            "{tag:>10}: offered {:>5}, admitted {:>5}, shed {:>5} ({:>4.1}%), errors {:>4}; p95 before the surge {:>6}, during it {:>7}",
            c.offered,
            c.admitted,
            c.shed,
            100.0 * shed_share[i],
            c.errors,
            fmt_ms(Some(calm_p95[i])),
            fmt_ms(Some(surge_p95[i])),
        );
        tiers.insert(
            (*tag).to_owned(),
            serde_json::json!({
                "offered": c.offered,
                "admitted": c.admitted,
                "shed": c.shed,
                "errors": c.errors,
                "p95_ms": ms(&all, 0.95),
                "p99_ms": ms(&all, 0.99),
                "p95_ms_before_surge": calm_p95[i],
                "p95_ms_during_surge": surge_p95[i],
            }),
        );
    }

    let surge_util = match (busy_at_surge, busy_after_surge) {
        (Some((b0, t0)), Some((b1, t1))) => {
            (b1 - b0) as f64 / (POOL as f64 * 1e6 * (t1 - t0).as_secs_f64())
        }
        _ => 0.0,
    };
    println!(
        "backend utilisation during the surge: {:.0}% of its {POOL} connections",
        100.0 * surge_util
    );
    let ent_kept = stats[0].shed.load(Relaxed) == 0
        && surge_p95[0] <= (calm_p95[0] * 1.5).max(calm_p95[0] + 50.0);
    let free_first =
        shed_share[2] > 0.0 && shed_share[2] >= shed_share[1] && shed_share[1] >= shed_share[0];
    println!();
    let verdict = if args.gate {
        format!(
            "verdict: enterprise {} its latency (p95 {} before the surge, {} during it, nothing shed); free {} shed first ({:.0}% of free, {:.0}% of pro).",
            if ent_kept { "kept" } else { "did NOT keep" },
            fmt_ms(Some(calm_p95[0])),
            fmt_ms(Some(surge_p95[0])),
            if free_first { "was" } else { "was NOT" },
            100.0 * shed_share[2],
            100.0 * shed_share[1],
        )
    } else {
        format!(
            "verdict (no gate): enterprise p95 went from {} to {}; every tier queued behind the surge. Run without --no-gate to compare.",
            fmt_ms(Some(calm_p95[0])),
            fmt_ms(Some(surge_p95[0]))
        )
    };
    println!("{verdict}");

    if let Some(path) = args.summary {
        let summary = serde_json::json!({
            "gate": args.gate,
            "duration_s": args.duration,
            "capacity_rps": capacity_rps(),
            "backend": {"pool": POOL, "service_ms": [SERVICE_MS.0, SERVICE_MS.1], "pool_timeout_ms": POOL_TIMEOUT.as_millis() as u64},
            "tiers": tiers,
            "enterprise_kept_latency": ent_kept,
            "backend_utilisation_in_surge": surge_util,
            "free_shed_first": free_first,
            "verdict": verdict,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
        println!("summary written to {}", path.display());
    }
    Ok(())
}
