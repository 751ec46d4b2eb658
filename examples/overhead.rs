//! Run with: `cargo run --release --example overhead -- 127.0.0.1:3000 gate`
//!
//! The end-to-end overhead target: `GET /` answers `ok` through axum, in one of four modes,
//! so any load generator (wrk, ours below, yours) can compare them:
//!
//! | mode | stack |
//! |---|---|
//! | `bare` | axum alone |
//! | `gate` | axum + `GateLayer` (header tagger; tiers and rules loaded, none firing) |
//! | `governor` | axum + `tower_governor` (its default per-peer-IP key; a quota never reached) |
//! | `concurrency` | axum + tower's `LoadShed` + `ConcurrencyLimit` (a limit never reached) |
//!
//! `bench/overhead.sh` runs them interleaved and reports requests/s, ratios to bare, p99 and
//! the server's CPU time per request.
//!
//! The same binary is also a small HTTP/1.1 keep-alive load generator, used when `wrk` is
//! missing and for the memory figure (a flood of distinct tags):
//!
//! ```text
//! overhead load 127.0.0.1:3000 [--connections 64] [--threads 1]
//!     [--duration 10 | --requests 1000000] [--tag pro | --tags 3 | --distinct-tags]
//! ```
//!
//! It prints one line: `requests=… seconds=… rps=… p50_us=… p99_us=… non_2xx=… errors=…`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use waitstate_core::WaitState;
use waitstate_tower::{GateLayer, HeaderTagger};

const USAGE: &str = "usage: overhead <listen-addr> <bare|gate|governor|concurrency>
       overhead load <addr> [--connections N] [--threads N] [--duration SECS | --requests N] [--tag NAME | --tags N | --distinct-tags]";

/// What sits between axum and the handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Axum alone.
    Bare,
    /// `GateLayer` with the header tagger, rules loaded, none firing.
    Gate,
    /// The same without the `Admission` request extension (no handler reads it here).
    GateLean,
    /// `tower_governor`, quota never reached.
    Governor,
    /// tower's `LoadShed` + `ConcurrencyLimit`, limit never reached.
    Concurrency,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "bare" => Some(Self::Bare),
            "gate" => Some(Self::Gate),
            "gate-lean" => Some(Self::GateLean),
            "governor" => Some(Self::Governor),
            "concurrency" => Some(Self::Concurrency),
            _ => None,
        }
    }
}

/// The engine the `gate` mode loads: three tiers and the README's kind of rules, with
/// thresholds this handler never reaches.
pub(crate) fn waitstate() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("pro", 50)
        .tag("free", 10)
        .rule("when p95_latency > 500ms for 5s then block free")
        .rule("when error_rate > 5% then throttle pro to 50%")
        .rule("when p95_latency > 1s then shed")
        .build()
        .expect("valid configuration")
}

async fn ok() -> &'static str {
    "ok"
}

/// The app for a mode (`ws` is used by `gate` only).
pub(crate) fn app(mode: Mode, ws: Option<WaitState>) -> Router {
    let router = Router::new().route("/", get(ok));
    match mode {
        Mode::Bare => router,
        Mode::Gate => {
            let ws = ws.unwrap_or_else(waitstate);
            router.layer(GateLayer::new(ws, HeaderTagger::new()))
        }
        Mode::GateLean => {
            let ws = ws.unwrap_or_else(waitstate);
            router.layer(GateLayer::new(ws, HeaderTagger::new()).admission_extension(false))
        }
        Mode::Governor => {
            // One token per nanosecond with a burst of a million: never reached.
            let config = GovernorConfigBuilder::default()
                .per_nanosecond(1)
                .burst_size(1_000_000)
                .finish()
                .expect("non-zero quota");
            router.layer(GovernorLayer::new(config))
        }
        Mode::Concurrency => router.layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: axum::BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .load_shed()
                .concurrency_limit(100_000),
        ),
    }
}

async fn serve(addr: &str, mode: Mode) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "overhead: {mode:?} on http://{} (pid {})",
        listener.local_addr()?,
        std::process::id()
    );
    let app = app(mode, None);
    if mode == Mode::Governor {
        // tower_governor's default key is the peer IP, which it reads from `ConnectInfo`
        // (part of its cost: the other modes go without).
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    } else {
        axum::serve(listener, app).await
    }
}

/// Settings of the load generator.
#[derive(Clone, Debug)]
struct Load {
    addr: String,
    connections: usize,
    threads: usize,
    duration: Option<Duration>,
    requests: Option<u64>,
    tags: Tags,
}

#[derive(Clone, Copy, Debug)]
enum Tags {
    /// Cycle through `tag-0` .. `tag-{n-1}`.
    Cycle(u64),
    /// A new tag per request.
    Distinct,
    /// One tag for every request.
    Fixed(&'static str),
}

fn parse_load(args: &[String]) -> Result<Load, String> {
    let mut it = args.iter();
    let addr = it.next().ok_or(USAGE)?.clone();
    let mut load = Load {
        addr,
        connections: 64,
        threads: 1,
        duration: None,
        requests: None,
        tags: Tags::Cycle(3),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: &String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--connections" => load.connections = num(value()?)?.max(1) as usize,
            "--threads" => load.threads = num(value()?)?.max(1) as usize,
            "--duration" => load.duration = Some(Duration::from_secs(num(value()?)?)),
            "--requests" => load.requests = Some(num(value()?)?),
            "--tags" => load.tags = Tags::Cycle(num(value()?)?.max(1)),
            "--distinct-tags" => load.tags = Tags::Distinct,
            "--tag" => load.tags = Tags::Fixed(String::leak(value()?.clone())),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if load.duration.is_none() && load.requests.is_none() {
        load.duration = Some(Duration::from_secs(10));
    }
    Ok(load)
}

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
}

async fn connection(
    load: Arc<Load>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let Ok(stream) = TcpStream::connect(&load.addr).await else {
        tally.errors.fetch_add(1, Relaxed);
        return latencies;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        tally.errors.fetch_add(1, Relaxed);
        return latencies;
    };
    tokio::spawn(conn);
    let host = load.addr.clone();
    loop {
        if stop.load(Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let n = tally.sent.fetch_add(1, Relaxed);
        if load.requests.is_some_and(|max| n >= max) {
            break;
        }
        let tag = match load.tags {
            Tags::Cycle(k) => format!("tag-{}", n % k),
            Tags::Distinct => format!("u{n}"),
            Tags::Fixed(t) => t.to_owned(),
        };
        let req = Request::get("/")
            .header("host", &host)
            .header("x-waitstate-tag", tag)
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        let start = Instant::now();
        if sender.ready().await.is_err() {
            tally.errors.fetch_add(1, Relaxed);
            break;
        }
        match sender.send_request(req).await {
            Ok(res) => {
                let status = res.status();
                if res.into_body().collect().await.is_err() {
                    tally.errors.fetch_add(1, Relaxed);
                    break;
                }
                if !status.is_success() {
                    tally.non_2xx.fetch_add(1, Relaxed);
                }
                let us = start.elapsed().as_micros();
                latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Err(_) => {
                tally.errors.fetch_add(1, Relaxed);
                break;
            }
        }
    }
    latencies
}

fn run_load(load: Load) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(load.threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let load = Arc::new(load);
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = load.duration.map(|d| start + d);
    let mut all: Vec<u32> = rt.block_on(async {
        let tasks: Vec<_> = (0..load.connections)
            .map(|_| {
                tokio::spawn(connection(
                    load.clone(),
                    tally.clone(),
                    stop.clone(),
                    deadline,
                ))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(mut l) = t.await {
                all.append(&mut l);
            }
        }
        all
    });
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            0
        } else {
            all[((all.len() - 1) as f64 * p).round() as usize]
        }
    };
    println!(
        "requests={} seconds={seconds:.3} rps={:.0} p50_us={} p99_us={} non_2xx={} errors={}",
        all.len(),
        all.len() as f64 / seconds,
        pct(0.50),
        pct(0.99),
        tally.non_2xx.load(Relaxed),
        tally.errors.load(Relaxed),
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("load") {
        return match parse_load(&args[1..]).and_then(run_load) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("overhead load: {e}");
                ExitCode::from(2)
            }
        };
    }
    let (Some(addr), Some(mode)) = (args.first(), args.get(1).and_then(|m| Mode::parse(m))) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("overhead: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(addr, mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overhead: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
