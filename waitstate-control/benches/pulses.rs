//! Control plane throughput: how many signed pulses per second `waitstate-control` takes
//! from a fleet of simulated instances, and the pulse latency (p50, p99) under that load.
//!
//! Each simulated instance sends what our SDK sends: a v1 pulse body (usage, per-tag mean
//! latency, count and the 8 v1 buckets) with our extensions (admitted, completed, errors,
//! in-flight, the mergeable histogram), for 3 tags, HMAC-signed, with a fresh timestamp.
//! `--concurrency` pulses are in flight at once over keep-alive connections; instances are
//! taken in turn, so every one of them is live in the fleet (which the server merges, and
//! ages) while the run lasts.
//!
//! Run with: `cargo bench -p waitstate-control --bench pulses -- --instances 1000`
//!
//! Without `--url` the control plane runs in this process (server and generator then share
//! the cores). `bench/control.sh` instead starts the release `waitstate-control` binary
//! pinned to one core, with the configuration `--print-config` gives, and this generator on
//! the other, and reads the server's own CPU time per pulse.
//!
//! Replicas over Redis: `--url URL1,URL2` sends pulse n to URL n mod 2 (an instance's
//! pulses alternate between the replicas); `--redis URL` adds `redis_url` to the printed
//! configuration, and without `--url` starts `--replicas N` (1) replicas over it in this
//! process. `bench/replicas.sh` runs two release replicas and Redis as processes.
//!
//! Options: `--url URL[,URL...]`, `--instances N` (1000), `--duration SECS` (10),
//! `--concurrency N` (32), `--threads N` (generator threads, 1), `--print-config`,
//! `--no-budget` (leave out the fleet-wide rate limit), `--ready-file PATH` (written when registration ends and the measured part begins).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use waitstate_control::{ControlConfig, ControlServer};
use waitstate_core::wire::{self, HEADER_ID, HEADER_INSTANCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};

const PK: &str = "pk_bench";
const SK: &str = "sk_bench_secret";

/// The control plane's configuration for the run (`listen` is replaced by the caller). With
/// `budget`, a fleet-wide rate limit is in force, so every answer splits it by demand.
fn config_toml(listen: &str, budget: bool, redis: Option<&str>) -> String {
    let redis = redis.map_or(String::new(), |url| format!("redis_url = \"{url}\"\n"));
    let budget = if budget {
        "[[rules]]\nrule = \"when rps >= 0 then limit free to 1000/s\"\n"
    } else {
        ""
    };
    format!(
        r#"[tags]
enterprise = 100
pro = 50
free = 10

[[rules]]
rule = "when p95_latency of free > 500ms for 5s then block free"
[[rules]]
rule = "when error_rate > 5% then throttle pro to 50%"
{budget}
[server]
listen = "{listen}"
max_instances = 20000
{redis}
[[keys]]
publish_key = "{PK}"
secret_key = "{SK}"
org_id = "bench"
"#
    )
}

#[derive(Debug)]
struct Args {
    url: Option<String>,
    instances: u64,
    duration: Duration,
    concurrency: usize,
    threads: usize,
    print_config: bool,
    no_budget: bool,
    ready_file: Option<String>,
    redis: Option<String>,
    replicas: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: None,
        instances: 1000,
        duration: Duration::from_secs(10),
        concurrency: 32,
        threads: 1,
        print_config: false,
        no_budget: false,
        ready_file: None,
        redis: None,
        replicas: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--url" => a.url = Some(value()?),
            "--instances" => a.instances = num(value()?)?.max(1),
            "--duration" => a.duration = Duration::from_secs(num(value()?)?.max(1)),
            "--concurrency" => a.concurrency = num(value()?)?.max(1) as usize,
            "--threads" => a.threads = num(value()?)?.max(1) as usize,
            "--print-config" => a.print_config = true,
            "--no-budget" => a.no_budget = true,
            "--ready-file" => a.ready_file = Some(value()?),
            "--redis" => a.redis = Some(value()?),
            "--replicas" => a.replicas = num(value()?)?.clamp(1, 16) as usize,
            // `cargo bench` passes `--bench`; criterion-style filters are ignored too.
            "--bench" => {}
            other if !other.starts_with("--") => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

#[allow(clippy::disallowed_methods)]
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[allow(clippy::disallowed_methods)]
fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// The pulse of instance `i`, its `seq`-th: a v1 body with our extensions, 3 tags.
fn pulse_body(i: u64, seq: u64, ts: u64) -> Vec<u8> {
    let tag = |name: &str, count: u64, latency: f64| {
        serde_json::json!({
            "tag": name,
            "latency": latency,
            "count": count,
            "latencyBuckets": [count / 2, count / 4, count / 8, count / 16, 3, 2, 1, 0],
            "admitted": count,
            "admittedWeight": count as f64,
            "completed": count,
            "errors": count / 100,
            "inFlight": 2,
            "histogram": {
                "layout": "loglin16us",
                "buckets": [[40, count / 2], [60, count / 4], [80, count / 8], [100, count / 8]]
            }
        })
    };
    let body = serde_json::json!({
        "instanceId": format!("bench-instance-{i:06}"),
        "usageDelta": 600 + seq % 7,
        "bouncedUnits": 0,
        "metrics": { "latency": 12.5, "errors": 3 },
        "tagMetrics": [
            tag("enterprise", 100, 8.0),
            tag("pro", 200, 11.0),
            tag("free", 300 + seq % 5, 15.0),
        ],
        "ts": ts,
        "windows": 1
    });
    serde_json::to_vec(&body).expect("json")
}

#[derive(Default)]
struct Tally {
    next: AtomicU64,
    ok: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

async fn send(
    client: &reqwest::Client,
    urls: &[String],
    i: u64,
    seq: u64,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    // An instance's pulses go to the replicas in turn.
    let url = &urls[((i + seq) % urls.len() as u64) as usize];
    let ts = wall_ms();
    let body = pulse_body(i, seq, ts);
    let ts = ts.to_string();
    let signature = wire::sign(SK.as_bytes(), &body, &ts);
    let res = client
        .post(url)
        .header(HEADER_ID, PK)
        .header(HEADER_TIMESTAMP, ts)
        .header(HEADER_SIGNATURE, signature)
        .header(HEADER_INSTANCE, format!("bench-instance-{i:06}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = res.status();
    res.bytes().await?;
    Ok(status)
}

/// Pulses from `concurrency` workers until `until`; latencies (µs) of the accepted ones.
async fn drive(
    client: reqwest::Client,
    url: Arc<[String]>,
    instances: u64,
    concurrency: usize,
    until: tokio::time::Instant,
    tally: Arc<Tally>,
) -> Vec<u32> {
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while now() < until {
                    let n = tally.next.fetch_add(1, Relaxed);
                    let start = now();
                    match send(&client, &url, n % instances, n / instances).await {
                        Ok(s) if s.is_success() => {
                            tally.ok.fetch_add(1, Relaxed);
                            let us = start.elapsed().as_micros();
                            lat.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Ok(_) => {
                            tally.refused.fetch_add(1, Relaxed);
                        }
                        Err(_) => {
                            tally.errors.fetch_add(1, Relaxed);
                        }
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        if let Ok(mut l) = w.await {
            all.append(&mut l);
        }
    }
    all
}

async fn bench(a: Args) -> Result<(), String> {
    let mut _servers: Vec<ControlServer> = Vec::new();
    let bases: Vec<String> = match &a.url {
        Some(u) => u
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .collect(),
        None => {
            let text = config_toml("127.0.0.1:0", !a.no_budget, a.redis.as_deref());
            let config = ControlConfig::from_toml_str(&text).map_err(|e| e.to_string())?;
            for _ in 0..a.replicas {
                let server = ControlServer::bind(config.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                _servers.push(server);
            }
            _servers.iter().map(ControlServer::url).collect()
        }
    };
    let base = bases.join(",");
    let url: Arc<[String]> = bases.iter().map(|b| format!("{b}/v1/pulse")).collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()
        .map_err(|e| e.to_string())?;

    // Register every instance once (not measured), so the fleet is full from the start.
    let warm = Arc::new(Tally::default());
    let registering = now();
    let warm_until = registering + Duration::from_secs(120);
    {
        let tally = warm.clone();
        let (client, url) = (client.clone(), url.clone());
        let instances = a.instances;
        let workers: Vec<_> = (0..a.concurrency)
            .map(|_| {
                let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
                tokio::spawn(async move {
                    loop {
                        let n = tally.next.fetch_add(1, Relaxed);
                        if n >= instances || now() >= warm_until {
                            break;
                        }
                        if send(&client, &url, n, 0).await.is_err() {
                            tally.errors.fetch_add(1, Relaxed);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.await;
        }
    }
    if warm.errors.load(Relaxed) > 0 {
        return Err(format!(
            "{} of {} registering pulses failed: is the control plane at {base}?",
            warm.errors.load(Relaxed),
            a.instances
        ));
    }

    if let Some(path) = &a.ready_file {
        // Tells a script that registration is over and the measured part starts.
        std::fs::write(path, b"measuring\n").map_err(|e| format!("{path}: {e}"))?;
    }
    let tally = Arc::new(Tally::default());
    tally.next.store(a.instances, Relaxed);
    let start = now();
    let mut lat = drive(
        client,
        url,
        a.instances,
        a.concurrency,
        start + a.duration,
        tally.clone(),
    )
    .await;
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize]
        }
    };
    println!(
        "instances={} concurrency={} pulses={} seconds={seconds:.3} pulses_per_s={:.0} p50_us={} p99_us={} refused={} errors={}",
        a.instances,
        a.concurrency,
        lat.len(),
        lat.len() as f64 / seconds,
        pct(0.50),
        pct(0.99),
        tally.refused.load(Relaxed),
        tally.errors.load(Relaxed),
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pulses: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if a.print_config {
        print!(
            "{}",
            config_toml("127.0.0.1:7700", !a.no_budget, a.redis.as_deref())
        );
        return std::process::ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pulses: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(a)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pulses: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
