//! Run with: `cargo run --release -p waitstate-scenarios -- --scenario surge --out target/scenarios`
//!
//! Overload scenarios, each run four ways in one invocation: no gate, a static rate limit
//! (`tower_governor` at the backend's calm-weather capacity), an adaptive concurrency limit
//! (`tower-acc`'s Gradient2 with its defaults, priority-blind) and WaitState with
//! `scenarios/waitstate.toml` (no capacity number: adaptive admission). Every run is a real
//! axum service on 127.0.0.1 in front of a simulated backend (a pool of [`POOL`]
//! connections, log-normal service times, a pool timeout that answers 503), driven
//! open-loop over loopback by Poisson arrivals of three tiers. Besides the tiers' outcomes,
//! each second records the backend's utilisation and the gate's limit (WaitState's and
//! tower-acc's), and WaitState's queue. The results (SCENARIOS.md) come from this tool.
//!
//! Options: `--scenario NAME|all` (default `surge`; names: surge, slow, errors, expensive,
//! capacity, slow-surge; `all` runs these six; `creep` runs WaitState alone at 1.2x capacity
//! for `--creep-secs N`, default 600, and checks that the learned limit does not creep; `soak`
//! runs the soak instead, for `--soak-secs N`, default 600: see `soak.rs`; with
//! `--replot` it only redraws soak.png from `--out`'s soak.json; `fleet` and `cp-loss` are
//! scenarios 5 and 6, see `fleet.rs`, with ways `none,static,local,fleet`),
//! `--out DIR` (default `target/scenarios`: NAME.json and NAME.png per scenario),
//! `--quick` (short phases, for a smoke run), `--ways LIST` (comma-separated subset of
//! `none,static,acc,waitstate`), `--static-caps N,M,..` (adds a way per N: WaitState with
//! `[admission] adaptive = false` and `[limits] concurrency = N`, the sweep for the best
//! static cap), `--config PATH` (another WaitState configuration than the published
//! `scenarios/waitstate.toml`, which is built in).

mod args;
mod fleet;
mod plot;
mod progress;
mod report;
mod service;
mod soak;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout};
use tower::ServiceBuilder;
use tower_acc::{Algorithm, ConcurrencyLimitLayer, Gradient2};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::GlobalKeyExtractor;
use waitstate_core::histogram::{AtomicHistogram, Histogram};
use waitstate_core::{Config, WaitState};
use waitstate_tower::{GateLayer, HeaderTagger};

use args::*;
use report::*;
use service::*;
use stats::{Gauges, TIERS, TierSample, Timeline, Window};

/// Connections in the backend's pool.
const POOL: usize = 10;
/// Mean service time of a plain request (log-normal around it).
const SERVICE_MEAN_MS: f64 = 100.0;
/// Spread of the log-normal service time (sigma of its logarithm).
const SERVICE_SIGMA: f64 = 0.5;
/// A request that waits this long for a connection fails with 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(1);
/// The client gives up after this long (counted as an error).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most requests the generator keeps outstanding (past it, a request counts as an error).
const MAX_OUTSTANDING: u64 = 4_000;
/// A success slower than this is not goodput.
const GOOD_LATENCY: Duration = Duration::from_millis(500);
/// Calm load, as a share of capacity.
const CALM_UTILISATION: f64 = 0.7;
/// Share of the load per tier, in [`TIERS`] order.
const MIX: [f64; 3] = [0.2, 0.3, 0.5];
/// Backend time of a weight-100 search, in plain requests.
const SEARCH_COST: f64 = 10.0;
/// The WaitState configuration of the WaitState way.
const WAITSTATE_TOML: &str = include_str!("../waitstate.toml");
/// Requests tower-acc's way holds in its `Buffer` in front of the limit; past it, `LoadShed`
/// turns them away. 16 is the `BUFFER_SIZE` of tower-acc's server example (`examples/hyper.rs`).
const ACC_BUFFER: usize = 16;

/// What the backend can serve per second in calm weather.
fn capacity_rps() -> f64 {
    POOL as f64 * 1000.0 / SERVICE_MEAN_MS
}

// ---------------------------------------------------------------- scenarios

/// One scenario: calm, then an incident, then calm again.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scenario {
    name: &'static str,
    title: &'static str,
    calm_s: u64,
    incident_s: u64,
    after_s: u64,
    /// Offered load during the incident, as a multiple of the calm load.
    load_factor: f64,
    /// Service time multiplier during the incident.
    service_factor: f64,
    /// Share of requests the backend fails during the incident.
    error_rate: f64,
    /// Share of free requests that are weight-100 searches during the incident.
    search_share: f64,
    /// The backend's pool doubles halfway through the incident (and stays so).
    pool_doubles: bool,
}

impl Scenario {
    /// What the backend can serve per second during the incident (plain requests).
    fn incident_capacity(&self) -> f64 {
        let free_searches = CALM_UTILISATION * MIX[2] * self.load_factor * self.search_share;
        let plain = 1.0 - free_searches / (CALM_UTILISATION * self.load_factor);
        // Capacity in requests/s of the incident's mix: each search costs SEARCH_COST.
        let cost = plain + (1.0 - plain) * SEARCH_COST;
        let capacity = capacity_rps() / self.service_factor / cost;
        if self.pool_doubles {
            // Half the incident at this capacity, half at twice it; no more than is offered
            // can be served.
            let offered = capacity_rps() * CALM_UTILISATION * self.load_factor;
            (capacity.min(offered) + (2.0 * capacity).min(offered)) / 2.0
        } else {
            capacity
        }
    }

    fn quick(mut self) -> Self {
        self.calm_s = 5;
        // A pool change needs two halves with a steady part each.
        self.incident_s = self.incident_s.min(if self.pool_doubles { 20 } else { 10 });
        self.after_s = 10;
        self
    }

    /// When the pool doubles, in seconds from the start (`None`: it does not).
    fn pool_change_s(&self) -> Option<u64> {
        self.pool_doubles
            .then_some(self.calm_s + self.incident_s / 2)
    }

    fn window(&self) -> Window {
        Window {
            onset_s: self.calm_s,
            end_s: self.calm_s + self.incident_s,
        }
    }

    fn total_s(&self) -> u64 {
        self.calm_s + self.incident_s + self.after_s
    }
}

const CALM: Scenario = Scenario {
    name: "",
    title: "",
    calm_s: 15,
    incident_s: 30,
    after_s: 25,
    load_factor: 1.0,
    service_factor: 1.0,
    error_rate: 0.0,
    search_share: 0.0,
    pool_doubles: false,
};

/// Every scenario the runner knows (and `all` runs).
pub(crate) const SCENARIOS: [Scenario; 6] = [
    Scenario {
        name: "surge",
        title: "Surge: offered load jumps to 3x capacity for 30 s, then back",
        load_factor: 3.0 / CALM_UTILISATION,
        ..CALM
    },
    Scenario {
        name: "slow",
        title: "Slow dependency: service time doubles (capacity halves) for 30 s, same load",
        service_factor: 2.0,
        ..CALM
    },
    Scenario {
        name: "errors",
        title: "Error storm: the backend fails 10% of requests for 20 s",
        incident_s: 20,
        error_rate: 0.1,
        ..CALM
    },
    Scenario {
        name: "expensive",
        title: "Expensive requests: a quarter of free requests become weight-100 searches for 30 s",
        search_share: 0.25,
        ..CALM
    },
    Scenario {
        name: "capacity",
        title: "Capacity grows: 1.5x load for 40 s; halfway, the pool doubles (10 -> 20)",
        incident_s: 40,
        load_factor: 1.5 / CALM_UTILISATION,
        pool_doubles: true,
        ..CALM
    },
    Scenario {
        name: "slow-surge",
        title: "Slow surge: service time doubles and load jumps to 3x capacity, for 30 s",
        load_factor: 3.0 / CALM_UTILISATION,
        service_factor: 2.0,
        ..CALM
    },
];

/// The creep run: WaitState alone at 1.2x capacity for `secs`, no calm before or after.
fn creep(secs: u64) -> Scenario {
    Scenario {
        name: "creep",
        title: "Creep: offered load steady at 1.2x capacity, WaitState alone",
        calm_s: 0,
        incident_s: secs,
        after_s: 0,
        load_factor: 1.2 / CALM_UTILISATION,
        ..CALM
    }
}

// ---------------------------------------------------------------- the load

/// Live counters of one tier in one second.
#[derive(Debug, Default)]
struct Bucket {
    offered: AtomicU64,
    succeeded: AtomicU64,
    good: AtomicU64,
    shed: AtomicU64,
    errors: AtomicU64,
    latency: AtomicHistogram,
}

impl Bucket {
    fn sample(&self) -> TierSample {
        let mut latency = Histogram::new();
        self.latency.load_into(&mut latency);
        TierSample {
            offered: self.offered.load(Relaxed),
            succeeded: self.succeeded.load(Relaxed),
            good: self.good.load(Relaxed),
            shed: self.shed.load(Relaxed),
            errors: self.errors.load(Relaxed),
            latency,
        }
    }
}

/// One run's result.
#[derive(Debug)]
struct Run {
    timeline: Timeline,
    /// The backend and the gate, per second.
    gauges: Vec<Gauges>,
    first_shed_s: Option<f64>,
}

/// Samples the backend and the gate: the pool's busy connections at every step of the
/// driver (every ~2 ms), averaged per second; the gate's limit and WaitState's queue at the
/// end of each second.
#[derive(Debug)]
struct Sampler {
    backend: Backend,
    ws: Option<WaitState>,
    acc_limit: Option<Arc<AtomicU64>>,
    busy_sum: u64,
    steps: u64,
    timed_out: u64,
    gauges: Vec<Gauges>,
}

impl Sampler {
    fn step(&mut self) {
        self.busy_sum += self.backend.busy();
        self.steps += 1;
    }

    /// Closes the second under way.
    fn second(&mut self) {
        let pool = self.backend.size();
        let busy = self.busy_sum as f64 / self.steps.max(1) as f64;
        (self.busy_sum, self.steps) = (0, 0);
        let mut g = Gauges {
            pool,
            busy,
            utilisation: busy / pool as f64,
            limit: self.acc_limit.as_ref().map(|l| l.load(Relaxed)),
            ..Gauges::default()
        };
        if let Some(ws) = &self.ws {
            let a = ws.admission();
            let timed_out: u64 = a.levels.iter().map(|l| l.timed_out_total).sum();
            g.limit = Some(a.limit);
            g.in_flight = Some(a.in_flight);
            g.waiting = Some(a.levels.iter().map(|l| l.waiting).sum());
            g.timed_out = Some(timed_out.saturating_sub(self.timed_out));
            self.timed_out = timed_out;
            let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
            g.baseline_ms = ms(a.baseline);
            g.service_ms = ms(a.service_time);
            g.probing = Some(a.probing);
        }
        self.gauges.push(g);
    }
}

/// Runs one scenario one way, in real time.
async fn run(
    scenario: &Scenario,
    way: Way,
    config: &str,
) -> Result<Run, Box<dyn std::error::Error>> {
    let weather = Arc::new(Weather::default());
    weather.service_factor_milli.store(1000, Relaxed);
    let ws = way.waitstate(config)?;
    let backend = Backend::new(weather.clone());
    let (router, acc_limit) = app(way, backend.clone(), ws.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(axum::serve(listener, router).into_future());
    let mut sampler = Sampler {
        backend: backend.clone(),
        ws: ws.clone(),
        acc_limit: (way == Way::Acc).then_some(acc_limit),
        busy_sum: 0,
        steps: 0,
        timed_out: 0,
        gauges: Vec::new(),
    };
    let pool_change = scenario.pool_change_s().map(Duration::from_secs);

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(10))
        .build_http();
    let uri: http::Uri = format!("http://{addr}/").parse()?;
    let total = scenario.total_s();
    let buckets: Arc<[[Bucket; 3]]> = (0..total).map(|_| Default::default()).collect();
    let outstanding = Arc::new(AtomicU64::new(0));
    // First 429 after the onset, in µs from the start (u64::MAX: none yet).
    let first_shed = Arc::new(AtomicU64::new(u64::MAX));
    let window = scenario.window();
    let onset = Duration::from_secs(window.onset_s);
    let end = Duration::from_secs(window.end_s);
    let rng = AtomicU64::new(0x1234_5678_9ABC_DEF0);

    let start = Instant::now();
    let mut next = [Duration::ZERO; 3];
    let mut second = u64::MAX;
    loop {
        let elapsed = start.elapsed();
        while (sampler.gauges.len() as u64) < elapsed.as_secs().min(total) {
            sampler.second();
        }
        if elapsed >= Duration::from_secs(total) {
            break;
        }
        sampler.step();
        if pool_change.is_some_and(|at| elapsed >= at) {
            backend.grow(2 * POOL as u64);
        }
        let incident = elapsed >= onset && elapsed < end;
        if incident {
            weather
                .service_factor_milli
                .store((scenario.service_factor * 1000.0) as u64, Relaxed);
            weather
                .error_rate_ppm
                .store((scenario.error_rate * 1e6) as u64, Relaxed);
        } else {
            weather.service_factor_milli.store(1000, Relaxed);
            weather.error_rate_ppm.store(0, Relaxed);
        }
        if elapsed.as_secs() != second {
            second = elapsed.as_secs();
        }
        for tier in 0..3 {
            let factor = if incident { scenario.load_factor } else { 1.0 };
            let rate = capacity_rps() * CALM_UTILISATION * MIX[tier] * factor;
            while next[tier] <= elapsed {
                // Poisson arrivals: exponential gaps.
                next[tier] += Duration::from_secs_f64(-uniform(&rng).ln() / rate);
                let search = tier == 2 && incident && uniform(&rng) < scenario.search_share;
                let sec = elapsed.as_secs() as usize;
                buckets[sec][tier].offered.fetch_add(1, Relaxed);
                if outstanding.load(Relaxed) >= MAX_OUTSTANDING {
                    buckets[sec][tier].errors.fetch_add(1, Relaxed);
                    continue;
                }
                outstanding.fetch_add(1, Relaxed);
                tokio::spawn(send(
                    Shot {
                        client: client.clone(),
                        uri: uri.clone(),
                        buckets: buckets.clone(),
                        outstanding: outstanding.clone(),
                        first_shed: first_shed.clone(),
                        start,
                        onset,
                    },
                    sec,
                    tier,
                    search,
                ));
            }
        }
        sleep(Duration::from_millis(2)).await;
    }
    // Let the requests in flight finish (bounded by the client timeout).
    drain(&outstanding).await;
    server.abort();
    drop(ws);
    let first = first_shed.load(Relaxed);
    Ok(Run {
        timeline: buckets
            .iter()
            .map(|s| s.each_ref().map(Bucket::sample))
            .collect(),
        gauges: sampler.gauges,
        first_shed_s: (first != u64::MAX).then(|| first as f64 / 1e6 - onset.as_secs_f64()),
    })
}

/// Where one request goes and where its outcome is filed.
#[derive(Clone, Debug)]
struct Shot {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
    buckets: Arc<[[Bucket; 3]]>,
    outstanding: Arc<AtomicU64>,
    /// First 429 after the onset, in µs from the start (u64::MAX: none yet).
    first_shed: Arc<AtomicU64>,
    start: Instant,
    onset: Duration,
}

/// Sends one request of `tier` (a weight-100 search if `search`) and files its outcome
/// under second `sec`.
async fn send(shot: Shot, sec: usize, tier: usize, search: bool) {
    let Shot {
        client,
        uri,
        buckets,
        outstanding,
        first_shed,
        start,
        onset,
    } = shot;

    let sent = Instant::now();
    let mut req = http::Request::get(uri).header("x-waitstate-tag", TIERS[tier]);
    if search {
        req = req
            .header("x-search", "1")
            .header("x-waitstate-weight", "100");
    }
    let req = req.body(Empty::<Bytes>::new()).expect("a valid request");
    let result = timeout(CLIENT_TIMEOUT, async {
        let res = client.request(req).await?;
        let status = res.status();
        res.into_body().collect().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
    })
    .await;
    let latency = sent.elapsed();
    let b = &buckets[sec][tier];
    match result {
        Ok(Ok(StatusCode::TOO_MANY_REQUESTS)) => {
            b.shed.fetch_add(1, Relaxed);
            let at = (sent - start).as_micros() as u64;
            if at >= onset.as_micros() as u64 {
                first_shed.fetch_min(at, Relaxed);
            }
        }
        Ok(Ok(StatusCode::OK)) => {
            b.succeeded.fetch_add(1, Relaxed);
            if latency <= GOOD_LATENCY {
                b.good.fetch_add(1, Relaxed);
            }
            b.latency.record(latency);
        }
        _ => {
            b.errors.fetch_add(1, Relaxed);
            b.latency.record(latency);
        }
    }
    outstanding.fetch_sub(1, Relaxed);
}

/// Runs one fleet scenario (5 or 6) every way asked, prints and writes its results.
async fn run_fleet(
    args: &Args,
    scenario: &fleet::FleetScenario,
) -> Result<(), Box<dyn std::error::Error>> {
    use fleet::FleetWay;
    let scenario = if args.quick {
        scenario.quick()
    } else {
        *scenario
    };
    let ways = args.fleet_ways.clone().unwrap_or_else(|| {
        if scenario.name == "cp-loss" {
            vec![FleetWay::Fleet]
        } else {
            FleetWay::ALL.to_vec()
        }
    });
    println!(
        "## {} ({})\n\n{}\n",
        scenario.name,
        scenario.title,
        fleet::describe(&scenario)
    );
    let mut results = Vec::new();
    for way in &ways {
        let r = progress::run(
            &format!("{} / {}", scenario.name, way.name()),
            Duration::from_secs(scenario.total_s()),
            fleet::run(&scenario, *way, &args.config),
        )
        .await?;
        let (f, each) = fleet::figures(&scenario, &r);
        results.push((*way, r, f, each));
    }
    let table: Vec<(&str, &stats::Figures, &[stats::Figures])> = results
        .iter()
        .map(|(w, _, f, e)| (w.name(), f, e.as_slice()))
        .collect();
    println!("{}", fleet::markdown_table(&table));
    for (w, r, _, _) in &results {
        if *w == FleetWay::Fleet {
            for (what, at) in &r.cp_events {
                println!("{}: {what} at {at:.2} s", w.name());
            }
            println!("\n{} per second:\n", w.name());
            println!("{}", fleet::state_table(r, 0, r.states.len() as u64));
        }
    }
    let json = serde_json::json!({
        "scenario": scenario.name,
        "title": scenario.title,
        "quick": args.quick,
        "capacity_rps": capacity_rps(),
        "window": scenario.window(),
        "describe": fleet::describe(&scenario),
        "ways": results.iter().map(|(w, r, f, each)| serde_json::json!({
            "way": w.key(),
            "fleet_figures": f,
            "fleet_goals": stats::goals(f),
            "instance_figures": each,
            "control_plane_events": r.cp_events,
            "per_second_state": r.states,
            "per_second_fleet": timeline_json(&r.merged),
            "per_second_instances": r.timelines.iter().map(timeline_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let json_path = args.out.join(format!("{}.json", scenario.name));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    let window = scenario.window();
    let mut written = vec![json_path.display().to_string()];
    if results.len() == 1 {
        // One way: a column per instance.
        let r = &results[0].1;
        let names = ["instance 0 (hit)", "instance 1", "instance 2"];
        let panels: Vec<plot::Panel<'_>> = r
            .timelines
            .iter()
            .zip(names)
            .map(|(t, n)| plot::Panel {
                title: n,
                timeline: t,
                gauges: &[],
            })
            .collect();
        let path = args.out.join(format!("{}.png", scenario.name));
        plot::render(&path, scenario.title, window, capacity_rps(), &panels)?;
        written.push(path.display().to_string());
    } else {
        // Several ways: the instances the surge did not hit (1 and 2 merged), then the hit one.
        let quiet: Vec<stats::Timeline> = results
            .iter()
            .map(|(_, r, _, _)| fleet::merge(&r.timelines[1..]))
            .collect();
        let panels: Vec<plot::Panel<'_>> = results
            .iter()
            .zip(&quiet)
            .map(|((w, _, _, _), t)| plot::Panel {
                title: w.name(),
                timeline: t,
                gauges: &[],
            })
            .collect();
        let path = args.out.join(format!("{}.png", scenario.name));
        let title = format!("{} - instances 1 and 2 (not hit)", scenario.title);
        plot::render(&path, &title, window, capacity_rps(), &panels)?;
        written.push(path.display().to_string());
        let panels: Vec<plot::Panel<'_>> = results
            .iter()
            .map(|(w, r, _, _)| plot::Panel {
                title: w.name(),
                timeline: &r.timelines[0],
                gauges: &[],
            })
            .collect();
        let path = args.out.join(format!("{}-hit.png", scenario.name));
        let title = format!("{} - instance 0 (hit)", scenario.title);
        plot::render(&path, &title, window, capacity_rps(), &panels)?;
        written.push(path.display().to_string());
    }
    println!("written: {}\n", written.join(", "));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args().map_err(|e| -> Box<dyn std::error::Error> { e.into() })?;
    std::fs::create_dir_all(&args.out)?;
    if args.soak {
        println!(
            "## soak ({} s, WaitState only)\n\nbackend: {POOL} connections, capacity {:.0} req/s; load {:.0} req/s \
             (80%), enterprise/pro/free {:?} of the 95% not flooded, 5% with a fresh random tag each, \
             2% of requests dropped by the client (half before the answer, half after the first body chunk)\n",
            args.soak_secs,
            capacity_rps(),
            capacity_rps() * 0.8,
            MIX,
        );
        let json_path = args.out.join("soak.json");
        let samples = if args.replot {
            // Redraw the plot from an earlier run's JSON.
            let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json_path)?)?;
            serde_json::from_value::<Vec<soak::Sample>>(v["samples"].clone())?
        } else {
            let v = progress::run(
                "soak",
                Duration::from_secs(args.soak_secs),
                soak::run(args.soak_secs, &args.config),
            )
            .await?;
            println!("{}", soak::report(&v));
            std::fs::write(&json_path, serde_json::to_string_pretty(&v)?)?;
            v.samples
        };
        let png_path = args.out.join("soak.png");
        let points: Vec<(u64, u64, u64)> = samples
            .iter()
            .map(|s| (s.t_s, s.rss_kb, s.in_flight))
            .collect();
        plot::render_soak(
            &png_path,
            &format!(
                "Soak: {} s at 80% of capacity, tag flood, client disconnects",
                args.soak_secs
            ),
            soak::WARM_UP.as_secs().min(args.soak_secs / 2),
            &points,
        )?;
        println!(
            "written: {} and {}",
            json_path.display(),
            png_path.display()
        );
        return Ok(());
    }
    for scenario in &args.fleet {
        run_fleet(&args, scenario).await?;
    }
    let mut ways = args.ways.clone();
    ways.extend(args.static_caps.iter().map(|n| Way::Cap(*n)));
    for scenario in &args.scenarios {
        let scenario = if args.quick {
            scenario.quick()
        } else {
            *scenario
        };
        run_scenario(&args, &scenario, &ways).await?;
    }
    if args.creep {
        // `--quick`: 90 s, enough for the figure's windows (9 s each) to mean something.
        let secs = if args.quick { 90 } else { args.creep_secs };
        run_scenario(&args, &creep(secs), &[Way::WaitState]).await?;
    }
    Ok(())
}

/// Runs one overload scenario every way in `ways`; prints its table, its scenario's own
/// figures and the gauges per second; writes NAME.json and NAME.png.
async fn run_scenario(
    args: &Args,
    scenario: &Scenario,
    ways: &[Way],
) -> Result<(), Box<dyn std::error::Error>> {
    let capacity = scenario.incident_capacity();
    println!(
        "## {} ({})\n\nbackend: {POOL} connections{}, log-normal service time (mean {SERVICE_MEAN_MS} ms, sigma {SERVICE_SIGMA}), \
         pool timeout {} ms; capacity {:.0} req/s calm, {:.0} req/s during the incident; \
         calm load {:.0} req/s (enterprise/pro/free {:?}), {:.0} req/s during the incident; phases {} s calm, {} s incident, {} s after\n",
        scenario.name,
        scenario.title,
        match scenario.pool_change_s() {
            Some(at) => format!(" ({} from {at} s on)", 2 * POOL),
            None => String::new(),
        },
        POOL_TIMEOUT.as_millis(),
        capacity_rps(),
        capacity,
        capacity_rps() * CALM_UTILISATION,
        MIX,
        capacity_rps() * CALM_UTILISATION * scenario.load_factor,
        scenario.calm_s,
        scenario.incident_s,
        scenario.after_s,
    );
    let mut results = Vec::new();
    for way in ways {
        let r = progress::run(
            &format!("{} / {}", scenario.name, way.name()),
            Duration::from_secs(scenario.total_s()),
            run(scenario, *way, &args.config),
        )
        .await?;
        let f = stats::figures(
            &r.timeline,
            &r.gauges,
            scenario.window(),
            capacity,
            r.first_shed_s,
        );
        results.push((*way, r, f));
    }
    let names: Vec<String> = results.iter().map(|(w, _, _)| w.name()).collect();
    let table: Vec<(&str, &stats::Figures)> = names
        .iter()
        .zip(&results)
        .map(|(n, (_, _, f))| (n.as_str(), f))
        .collect();
    println!("{}", stats::markdown_table(&table));
    let own = own_figures(scenario, &results);
    for line in &own.0 {
        println!("{line}");
    }
    // Every second of a short run; every 10th of the creep.
    let every = if scenario.total_s() > 120 { 10 } else { 1 };
    println!(
        "\nper second: backend busy connections / pool; the gate's limit, waiting, timed out\n"
    );
    println!("{}", gauge_table(&results, every));

    let json = serde_json::json!({
        "scenario": scenario.name,
        "title": scenario.title,
        "quick": args.quick,
        "capacity_rps": capacity_rps(),
        "incident_capacity_rps": capacity,
        "window": scenario.window(),
        "pool_change_s": scenario.pool_change_s(),
        "scenario_figures": own.1,
        "ways": results.iter().map(|(w, r, f)| serde_json::json!({
            "way": w.key(),
            "figures": f,
            "goals": stats::goals(f),
            "per_second": timeline_json(&r.timeline),
            "per_second_gauges": r.gauges,
        })).collect::<Vec<_>>(),
    });
    let json_path = args.out.join(format!("{}.json", scenario.name));
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)?;
    let png_path = args.out.join(format!("{}.png", scenario.name));
    let panels: Vec<plot::Panel<'_>> = names
        .iter()
        .zip(&results)
        .map(|(n, (_, r, _))| plot::Panel {
            title: n,
            timeline: &r.timeline,
            gauges: &r.gauges,
        })
        .collect();
    plot::render(
        &png_path,
        scenario.title,
        scenario.window(),
        capacity_rps(),
        &panels,
    )?;
    println!(
        "written: {} and {}\n",
        json_path.display(),
        png_path.display()
    );
    Ok(())
}

/// Wait until no request of the load generator is outstanding, at most twice the client
/// timeout (each request gives up by then).
pub(crate) async fn drain(outstanding: &AtomicU64) {
    let start = Instant::now();
    while outstanding.load(Relaxed) > 0 && start.elapsed() < CLIENT_TIMEOUT * 2 {
        sleep(Duration::from_millis(20)).await;
    }
}
