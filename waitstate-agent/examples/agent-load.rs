//! Run with: `cargo run --release -p waitstate-agent --example agent-load -- <addr> [options]`
//!
//! A small HTTP/1.1 keep-alive load generator for the agent's benchmarks (BENCHMARKS.md,
//! "Agent"), and the same request shape against any peer:
//!
//! ```text
//! agent-load <addr> [--method POST] [--path /gate] [--body '{"tag":"free","weight":1.0}']
//!     [--connections 32] [--rate 10000 | --rate 0 (as fast as possible)] [--duration 10]
//! agent-load <addr> flood-tags N      # N /gate calls, each with a new tag
//! agent-load <addr> flood-tokens N    # N /v1/admit calls, none finished
//! ```
//!
//! A paced run (`--rate R`) sends on a fixed schedule per connection (tokio's timer: 1 ms
//! granularity, so sends come in small bursts) and measures each request's latency from
//! its actual send, as wrk does (a server that stalls also delays the next sends of that
//! connection: coordinated omission is not corrected). It prints one line:
//! `requests=… seconds=… rps=… p50_us=… p99_us=… p999_us=… non_2xx=… errors=…`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Opts {
    addr: String,
    method: String,
    path: String,
    body: String,
    connections: usize,
    rate: f64,
    duration: Duration,
}

fn parse() -> Result<(Opts, Option<(String, u64)>), String> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: agent-load <addr> [options]")?;
    let mut o = Opts {
        addr,
        method: "POST".into(),
        path: "/gate".into(),
        body: r#"{"tag":"free","weight":1.0}"#.into(),
        connections: 32,
        rate: 10_000.0,
        duration: Duration::from_secs(10),
    };
    let mut flood = None;
    while let Some(a) = args.next() {
        let mut v = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--method" => o.method = v()?,
            "--path" => o.path = v()?,
            "--body" => o.body = v()?,
            "--connections" => o.connections = v()?.parse().map_err(|e| format!("{e}"))?,
            "--rate" => o.rate = v()?.parse().map_err(|e| format!("{e}"))?,
            "--duration" => {
                o.duration = Duration::from_secs_f64(v()?.parse().map_err(|e| format!("{e}"))?);
            }
            "flood-tags" | "flood-tokens" => {
                flood = Some((a.clone(), v()?.parse().map_err(|e| format!("{e}"))?));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((o, flood))
}

fn request(method: &str, path: &str, body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nhost: agent\r\n");
    if method != "GET" || !body.is_empty() {
        r.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// Read one response; its status.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                buf.drain(..end + 4 + len);
                return Ok(status);
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Tally {
    latencies_us: Vec<u64>,
    non_2xx: u64,
    errors: u64,
}

async fn connection(o: &Opts, start: Instant, index: usize) -> Tally {
    let mut t = Tally {
        latencies_us: Vec::new(),
        non_2xx: 0,
        errors: 0,
    };
    let Ok(mut s) = TcpStream::connect(&o.addr).await else {
        t.errors += 1;
        return t;
    };
    let _ = s.set_nodelay(true);
    let req = request(&o.method, &o.path, &o.body);
    let mut buf = Vec::new();
    let interval = (o.rate > 0.0).then(|| Duration::from_secs_f64(o.connections as f64 / o.rate));
    // Spread the connections' schedules over one interval.
    let mut next =
        start + interval.map_or(Duration::ZERO, |i| i * index as u32 / o.connections as u32);
    let end = start + o.duration;
    loop {
        if let Some(i) = interval {
            tokio::time::sleep_until(next.into()).await;
            next += i;
        }
        if next - interval.unwrap_or_default() >= end
            || (interval.is_none() && Instant::now() >= end)
        {
            break;
        }
        // Latency from the actual send: tokio's timer fires with 1 ms granularity, so the
        // schedule is kept per connection but its lag is not charged to the server.
        let sent = Instant::now();
        if s.write_all(&req).await.is_err() {
            t.errors += 1;
            break;
        }
        match response(&mut s, &mut buf).await {
            Ok(status) => {
                t.latencies_us.push(sent.elapsed().as_micros() as u64);
                if !(200..300).contains(&status) {
                    t.non_2xx += 1;
                }
            }
            Err(_) => {
                t.errors += 1;
                break;
            }
        }
    }
    t
}

async fn flood(o: &Opts, kind: &str, n: u64) {
    let mut s = TcpStream::connect(&o.addr).await.expect("connect");
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut non_2xx = 0u64;
    for i in 0..n {
        let req = if kind == "flood-tags" {
            request(
                "POST",
                "/gate",
                &format!(r#"{{"tag":"flood-{i}","weight":1.0}}"#),
            )
        } else {
            request("POST", "/v1/admit", r#"{"tag":"free"}"#)
        };
        s.write_all(&req).await.expect("write");
        if !(200..300).contains(&response(&mut s, &mut buf).await.expect("read")) {
            non_2xx += 1;
        }
    }
    println!("{kind} requests={n} non_2xx={non_2xx}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (o, flooding) = match parse() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some((kind, n)) = flooding {
        flood(&o, &kind, n).await;
        return ExitCode::SUCCESS;
    }
    let start = Instant::now() + Duration::from_millis(50);
    let o = std::sync::Arc::new(o);
    let tasks: Vec<_> = (0..o.connections)
        .map(|i| {
            let o = o.clone();
            tokio::spawn(async move { connection(&o, start, i).await })
        })
        .collect();
    let mut all = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    for t in tasks {
        let t = t.await.expect("task");
        all.extend(t.latencies_us);
        non_2xx += t.non_2xx;
        errors += t.errors;
    }
    let secs = o.duration.as_secs_f64();
    all.sort_unstable();
    let q = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "requests={} seconds={secs:.1} rps={:.0} p50_us={} p99_us={} p999_us={} non_2xx={non_2xx} errors={errors}",
        all.len(),
        all.len() as f64 / secs,
        q(0.50),
        q(0.99),
        q(0.999),
    );
    ExitCode::SUCCESS
}
