//! Run with: `cargo run --release --example demo`
//!
//! WaitState in 30 seconds of simulated time (it runs in about one second of real time).
//!
//! A backend with a fixed capacity (100 workers, 50 ms per request: 2,000 requests/s)
//! serves three tiers. Calm load is 90% of capacity; from t = 8 s to t = 22 s the free
//! tier triples and the offered load reaches 170%. Without a gate the queue grows and every
//! tier's latency collapses together; with WaitState the `shed` rule turns away the lowest
//! priorities first and enterprise keeps its latency.
//!
//! The engine is the real one (`waitstate-core`), driven with injected time: this shows
//! the decision and the reflex rules, not HTTP. Flags: `--no-gate` runs the same load
//! ungated; `--duration SECS` changes the length.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use waitstate_core::histogram::Histogram;
use waitstate_core::{Config, Demand, Engine, Reflex, Ticket};

const WORKERS: usize = 100;
const SERVICE_MS: u64 = 50;
const STEP_MS: u64 = 10;
const TIERS: [(&str, f64); 3] = [("enterprise", 400.0), ("pro", 600.0), ("free", 800.0)];
const CONFIG: &str = r#"
window = "2s"
tick = "250ms"

[tags]
enterprise = 100
pro = 50
free = 10

# In flight is the leading signal: it grows the moment the backend queues.
[[rules]]
rule = "when in_flight > 150 then shed"
cooldown = "3s"

# Latency is the backstop: it lags (it is known when a request ends).
[[rules]]
rule = "when p95_latency > 500ms for 1s then shed"
cooldown = "3s"
"#;

#[derive(Default, Clone)]
struct Second {
    offered: u64,
    admitted: u64,
    shed: u64,
    latency: Histogram,
}

#[derive(Default)]
struct Totals {
    calm: Histogram,
    surge: Histogram,
    offered: u64,
    shed: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let gate = !args.iter().any(|a| a == "--no-gate");
    let duration: u64 = args
        .iter()
        .position(|a| a == "--duration")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(30);
    let (surge_from, surge_to) = (duration * 8 / 30, duration * 22 / 30);

    let config = Config::from_toml_str(CONFIG)?;
    let engine = Engine::new(&config)?;
    let mut reflex = Reflex::new(&config)?;
    let tick = config.tick;
    let mut status = reflex.status();

    let mut workers: BinaryHeap<Reverse<u64>> = (0..WORKERS).map(|_| Reverse(0)).collect();
    let mut completions: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut running: HashMap<u64, (Option<Ticket>, u64, usize)> = HashMap::new();
    let mut seq = 0u64;
    let mut carry = [0.0f64; 3];
    let mut second = vec![Second::default(); 3];
    let mut totals: Vec<Totals> = (0..3).map(|_| Totals::default()).collect();

    println!(
        "WaitState demo: capacity {} req/s, calm load 90%, surge to 170% from t={surge_from}s to t={surge_to}s, gate {}",
        WORKERS as u64 * 1000 / SERVICE_MS,
        if gate { "ON" } else { "OFF (--no-gate)" }
    );
    println!(
        "{:>4} | {:^27} | {:^27} | {:^27} | rules",
        "t", "enterprise", "pro", "free"
    );
    println!(
        "{:>4} | {:^27} | {:^27} | {:^27} |",
        "s", "offered admit shed   p95", "offered admit shed   p95", "offered admit shed   p95"
    );

    for now_ms in (0..duration * 1000).step_by(STEP_MS as usize) {
        let now = Duration::from_millis(now_ms);
        let surge = (surge_from * 1000..surge_to * 1000).contains(&now_ms);
        // Completions due by now: their latency is known at the moment they end.
        while let Some(Reverse((done, id))) = completions.peek().copied() {
            if done > now_ms {
                break;
            }
            completions.pop();
            if let Some((ticket, arrived, tier)) = running.remove(&id) {
                let latency = Duration::from_millis(done - arrived);
                if let Some(t) = ticket {
                    t.finish(latency, false);
                }
                let us = latency.as_micros() as u64;
                second[tier].latency.record_micros(us);
                if surge {
                    totals[tier].surge.record_micros(us);
                } else if now_ms < surge_from * 1000 {
                    totals[tier].calm.record_micros(us);
                }
            }
        }
        // Arrivals of this step, per tier.
        for (tier, (tag, rps)) in TIERS.iter().enumerate() {
            let rate = if surge && *tag == "free" {
                rps * 3.0
            } else {
                *rps
            };
            carry[tier] += rate * STEP_MS as f64 / 1000.0;
            while carry[tier] >= 1.0 {
                carry[tier] -= 1.0;
                second[tier].offered += 1;
                totals[tier].offered += 1;
                let ticket = if gate {
                    match engine.admit(&Demand::new(tag), now) {
                        Ok(t) => Some(t),
                        Err(_) => {
                            second[tier].shed += 1;
                            totals[tier].shed += 1;
                            continue;
                        }
                    }
                } else {
                    None
                };
                second[tier].admitted += 1;
                let Reverse(free_at) = workers.pop().unwrap_or(Reverse(now_ms));
                let done = free_at.max(now_ms) + SERVICE_MS;
                workers.push(Reverse(done));
                seq += 1;
                running.insert(seq, (ticket, now_ms, tier));
                completions.push(Reverse((done, seq)));
            }
        }
        // Every tick: the reflex evaluation. Once a second: a line of the table.
        let end = now + Duration::from_millis(STEP_MS);
        if end.as_millis().is_multiple_of(tick.as_millis().max(1)) {
            status = reflex.tick(end, &engine);
        }
        if (now_ms + STEP_MS).is_multiple_of(1000) {
            let mut line = format!("{:>4} |", (now_ms + STEP_MS) / 1000);
            for s in &second {
                let p95 = s
                    .latency
                    .quantile_ms(0.95)
                    .map_or("-".to_owned(), |v| format!("{v:.0}ms"));
                line.push_str(&format!(
                    " {:>7} {:>5} {:>4} {:>7} |",
                    s.offered, s.admitted, s.shed, p95
                ));
            }
            let active: Vec<String> = status
                .iter()
                .filter(|r| r.is_active())
                .map(|r| format!("shed level {} ({:?})", r.shed_level, r.phase))
                .collect();
            line.push(' ');
            line.push_str(&active.join(", "));
            println!("{line}");
            second = vec![Second::default(); 3];
        }
    }

    println!();
    let p95 = |h: &Histogram| h.quantile_ms(0.95).unwrap_or(0.0);
    for (i, (tag, _)) in TIERS.iter().enumerate() {
        let t = &totals[i];
        println!(
            "{tag:>10}: p95 before the surge {:>6.0} ms, during it {:>7.0} ms, shed {:>5.1}% of {}",
            p95(&t.calm),
            p95(&t.surge),
            100.0 * t.shed as f64 / t.offered.max(1) as f64,
            t.offered
        );
    }
    let ent = &totals[0];
    let free = &totals[2];
    let kept = p95(&ent.surge) <= 2.0 * p95(&ent.calm).max(SERVICE_MS as f64);
    let free_first = free.shed >= ent.shed && ent.shed == 0;
    println!();
    if gate {
        println!(
            "verdict: enterprise {} its latency; free {} shed first.",
            if kept { "kept" } else { "did NOT keep" },
            if free_first && free.shed > 0 {
                "was"
            } else {
                "was NOT"
            }
        );
    } else {
        println!(
            "verdict (no gate): enterprise p95 went from {:.0} ms to {:.0} ms; every tier queued behind the surge.",
            p95(&ent.calm),
            p95(&ent.surge)
        );
    }
    Ok(())
}
