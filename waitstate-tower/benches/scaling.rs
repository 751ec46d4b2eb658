//! Does the hot path scale with cores? Admit + finish of one hot tag from 1, 2 and N threads
//! (N = the machine's cores, and twice that), beside tower's `ConcurrencyLimit` and
//! `governor` in the same run. Run with `cargo bench -p waitstate-tower --bench scaling`
//! (`OPS=<calls per thread>`, default 2,000,000; `ROUNDS=<n>`, default 5, the median kept).
//!
//! Every thread makes the same calls on the same shared state, so what is measured is the
//! cost of the cache lines the threads share. Printed: calls per second per thread, and
//! the total with k threads over the total with one (perfect scaling: k).

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use governor::{Quota, RateLimiter};
use http::{Request, Response};
use http_body_util::Full;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service, service_fn};
use waitstate_core::{Policy, WaitState};
use waitstate_tower::{GateLayer, HeaderTagger};

type Body = Full<bytes::Bytes>;

/// One contender: makes one call (admit and finish, or its peer's equivalent).
trait Contender: Send + Sync {
    fn worker(&self) -> Box<dyn FnMut() + Send + '_>;
}

/// The engine's own admit + drop (`WaitState::admit`, one `Permit`).
struct Engine(WaitState);

impl Contender for Engine {
    fn worker(&self) -> Box<dyn FnMut() + Send + '_> {
        Box::new(move || {
            let permit = self.0.admit("pro", 1.0).expect("admitted");
            drop(std::hint::black_box(permit));
        })
    }
}

fn poll_now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the bench's services are always ready"),
    }
}

fn ok_service() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send {
    service_fn(|_req: Request<Body>| std::future::ready(Ok(Response::new(Body::default()))))
}

fn request() -> Request<Body> {
    Request::get("/")
        .header("x-waitstate-tag", "pro")
        .body(Body::default())
        .expect("valid request")
}

/// A whole tower service: `poll_ready`, `call`, the response future, the body's end.
fn tower_worker<S>(mut svc: S) -> Box<dyn FnMut() + Send>
where
    S: Service<Request<Body>> + Send + 'static,
    S::Response: Send,
    S::Error: std::fmt::Debug,
{
    Box::new(move || {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let res = poll_now(svc.call(request())).expect("served");
        drop(std::hint::black_box(res));
    })
}

/// `GateLayer` over a service that answers at once.
struct Gate(WaitState);

impl Contender for Gate {
    fn worker(&self) -> Box<dyn FnMut() + Send + '_> {
        tower_worker(GateLayer::new(self.0.clone(), HeaderTagger::new()).layer(ok_service()))
    }
}

/// tower's `ConcurrencyLimit` (a semaphore permit per call), never reached.
struct TowerLimit;

impl Contender for TowerLimit {
    fn worker(&self) -> Box<dyn FnMut() + Send + '_> {
        tower_worker(ConcurrencyLimit::new(ok_service(), 1_000_000))
    }
}

/// The same service with nothing in front: what the tower rows' calls cost by themselves.
struct Bare;

impl Contender for Bare {
    fn worker(&self) -> Box<dyn FnMut() + Send + '_> {
        tower_worker(ok_service())
    }
}

/// `governor`'s direct rate limiter (one CAS per check), never reached.
struct Governor(governor::DefaultDirectRateLimiter);

impl Contender for Governor {
    fn worker(&self) -> Box<dyn FnMut() + Send + '_> {
        Box::new(move || {
            std::hint::black_box(self.0.check().is_ok());
        })
    }
}

/// The median over `rounds` of the wall time for `threads` threads making `ops` calls each.
fn measure(c: &dyn Contender, threads: usize, ops: u64, rounds: usize) -> Duration {
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let barrier = Barrier::new(threads);
            let per_thread: Vec<Duration> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let barrier = &barrier;
                        s.spawn(move || {
                            let mut call = c.worker();
                            for _ in 0..1000 {
                                call();
                            }
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..ops {
                                call();
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("bench thread"))
                    .collect()
            });
            per_thread.into_iter().max().unwrap_or_default()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let ops = if quick { 10_000 } else { env("OPS", 2_000_000) };
    let rounds = if quick { 1 } else { env("ROUNDS", 5) as usize };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut counts = vec![1, 2, cores, 2 * cores];
    counts.sort_unstable();
    counts.dedup();

    // The engine's state is driven by a runtime that is never run here: admission never
    // ticks, which is what a hot path between two ticks sees.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let adaptive = WaitState::builder()
        .tag("enterprise", 100)
        .tag("pro", 50)
        .tag("free", 10)
        .build()
        .expect("valid configuration");
    let limited = WaitState::builder()
        .tag("enterprise", 100)
        .tag("pro", 50)
        .tag("free", 10)
        .build()
        .expect("valid configuration");
    let mut policy = Policy::default();
    policy.concurrency_limit = Some(1_000_000);
    limited
        .engine()
        .set_remote_policy(Some(policy))
        .expect("valid policy");
    let quota = Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX);

    let contenders: Vec<(&str, Box<dyn Contender>)> = vec![
        (
            "WaitState::admit + drop (adaptive)",
            Box::new(Engine(adaptive.clone())),
        ),
        (
            "WaitState::admit + drop (static limit)",
            Box::new(Engine(limited.clone())),
        ),
        (
            "GateLayer service call (adaptive)",
            Box::new(Gate(adaptive)),
        ),
        ("tower ConcurrencyLimit service call", Box::new(TowerLimit)),
        ("bare tower service call (floor)", Box::new(Bare)),
        (
            "governor check",
            Box::new(Governor(RateLimiter::direct(quota))),
        ),
    ];

    println!(
        "{ops} calls per thread, median of {rounds} rounds, {cores} cores; one hot tag shared by every thread"
    );
    println!();
    print!("| contender |");
    for k in &counts {
        print!(
            " {k} thread{} (M calls/s per thread) |",
            if *k == 1 { "" } else { "s" }
        );
    }
    for k in counts.iter().skip(1) {
        print!(" total {k} / total 1 |");
    }
    println!();
    println!("|---|{}", "---|".repeat(2 * counts.len() - 1));
    for (name, c) in &contenders {
        let per_thread: Vec<f64> = counts
            .iter()
            .map(|&k| ops as f64 / measure(c.as_ref(), k, ops, rounds).as_secs_f64() / 1e6)
            .collect();
        print!("| {name} |");
        for r in &per_thread {
            print!(" {r:.2} |");
        }
        for (k, r) in counts.iter().zip(&per_thread).skip(1) {
            print!(" {:.2}x |", r * *k as f64 / per_thread[0]);
        }
        println!();
    }
}
