//! The hot path, side by side with its peers in one run (these machines are noisy: read
//! the ratios between lines of one run, not absolute times across runs).
//!
//! Groups, each with 1, 16 and 256 tags (requests cycle through the tags):
//! - `decide/<n>tags`: our `Engine::decide` (time passed in) with no rule active (`open`)
//!   and with a 50 % throttle and a GCRA limit active on every tag (`throttle+gcra`); the
//!   runtime `WaitState::decide` (its own clock read when a limit needs one); the *floor*
//!   (one `ArcSwap::load`, one std `HashMap<&str, AtomicU64>` get, one relaxed `fetch_add`);
//!   `governor`'s direct `check()`; the published `waitstate` 0.1 `WaitState::gate`.
//! - `admit/<n>tags`: the whole per-request cost: `Engine::admit` + `Ticket::finish`,
//!   `WaitState::admit` + `Permit` drop (two clock reads, latency recorded), against
//!   `waitstate` 0.1's `gate` + `report_latency` with the two clock reads its users need
//!   to measure the latency they report.
//! - `2threads/<n>tags`: the same calls from two threads at once, each on its own half of
//!   the tags (with 1 tag both share it). The time shown is per call per thread: a line
//!   that scales perfectly shows the same time as its 1-thread line.
//!
//! Before criterion starts, allocations per call are counted and printed (a global
//! allocator that counts only while a flag is up; the counting costs one relaxed load per
//! allocation, the same for every contender).
//!
//! Run with: `cargo bench -p waitstate-core --bench decide`
//! (short: `-- --warm-up-time 1 --measurement-time 2`; `bench/micro.sh` does that and
//! prints the ratios).
//!
//! The workspace denies `unsafe_code`; the counting allocator is this file's exception, as
//! in `tests/alloc.rs`: a `GlobalAlloc` impl is unsafe by definition. It forwards to
//! `System` and counts.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{Criterion, criterion_main};
use waitstate_core::{Config, Demand, Engine, Policy, WaitState};

// ---- allocation counting --------------------------------------------------------------

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations per call of `f`, over `n` calls after a warm-up pass.
fn allocs_per_call(n: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..n {
        f();
    }
    COUNTING.store(true, Relaxed);
    let before = ALLOCS.with(Cell::get);
    for _ in 0..n {
        f();
    }
    let after = ALLOCS.with(Cell::get);
    COUNTING.store(false, Relaxed);
    (after - before) as f64 / n as f64
}

// ---- the contenders -------------------------------------------------------------------

const TAG_COUNTS: [usize; 3] = [1, 16, 256];

fn names(tags: usize) -> &'static [String] {
    Vec::leak((0..tags).map(|i| format!("tier-{i}")).collect())
}

fn config(names: &[String]) -> Config {
    let mut config = Config::default();
    config.tag_cap = names.len() + 8;
    for (i, n) in names.iter().enumerate() {
        config.tags.insert(n.clone(), i as i64);
    }
    config
}

/// A 50 % throttle and a GCRA limit (never reached) on every tag.
fn limits(names: &[String]) -> Policy {
    let mut p = Policy::default();
    for n in names {
        p.tag_throttles.insert(n.clone(), 50.0);
        p.tag_rate_limits.insert(n.clone(), 1e12);
    }
    p
}

/// A concurrency limit (never reached) over three priority levels, as a tiered service has:
/// every admission takes its level's counter and reads those above.
fn capped(names: &[String]) -> Engine {
    let mut config = config(names);
    for (i, n) in names.iter().enumerate() {
        config.tags.insert(n.clone(), (i % 3) as i64);
    }
    let engine = Engine::new(&config).expect("valid config");
    let mut p = Policy::default();
    p.concurrency_limit = Some(u64::MAX / 4);
    engine.set_remote_policy(Some(p)).expect("valid policy");
    engine
}

fn engine(names: &[String], limited: bool) -> Engine {
    let engine = Engine::new(&config(names)).expect("valid config");
    if limited {
        engine
            .set_remote_policy(Some(limits(names)))
            .expect("valid policy");
    }
    engine
}

/// A current-thread runtime that is never driven: both SDKs' background tasks are spawned
/// on it and never run, so nothing but the measured calls uses the CPU.
fn idle_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn runtime_ws(rt: &tokio::runtime::Runtime, names: &[String], limited: bool) -> WaitState {
    let _enter = rt.enter();
    let ws = WaitState::from_config(config(names)).expect("valid config");
    if limited {
        ws.engine()
            .set_remote_policy(Some(limits(names)))
            .expect("valid policy");
    }
    ws
}

/// The published v1 SDK; its control plane is an unused loopback port and its background
/// tasks never run (idle runtime), so it stays on its cached, open policy.
fn v1(rt: &tokio::runtime::Runtime) -> waitstate_v1::WaitState {
    let _enter = rt.enter();
    waitstate_v1::WaitState::start(waitstate_v1::WaitStateConfig {
        publish_key: "pk_bench".into(),
        secret_key: "sk_bench".into(),
        base_url: "http://127.0.0.1:9".into(),
        ..Default::default()
    })
}

/// The floor: one `ArcSwap` load, one std `HashMap<&str, _>` get, one relaxed `fetch_add`.
struct Floor(ArcSwap<HashMap<&'static str, AtomicU64>>);

impl Floor {
    fn new(names: &'static [String]) -> Self {
        Self(ArcSwap::from_pointee(
            names
                .iter()
                .map(|n| (n.as_str(), AtomicU64::new(0)))
                .collect(),
        ))
    }
    fn hit(&self, tag: &str) -> bool {
        let map = self.0.load();
        match map.get(tag) {
            Some(c) => {
                c.fetch_add(1, Relaxed);
                true
            }
            None => false,
        }
    }
}

type Governor = governor::DefaultDirectRateLimiter;

fn governor() -> Governor {
    governor::RateLimiter::direct(governor::Quota::per_second(NonZeroU32::MAX))
}

/// Wall-clock reads for the latency the v1 SDK's users report, and for `iter_custom`.
#[allow(clippy::disallowed_methods)]
fn wall() -> std::time::Instant {
    std::time::Instant::now()
}

struct Contenders {
    names: &'static [String],
    open: Engine,
    limited: Engine,
    capped: Engine,
    ws_open: WaitState,
    ws_limited: WaitState,
    floor: Floor,
    governor: Governor,
    v1: waitstate_v1::WaitState,
    _rt: tokio::runtime::Runtime,
}

impl Contenders {
    fn new(tags: usize) -> Self {
        let rt = idle_runtime();
        let names = names(tags);
        Self {
            names,
            open: engine(names, false),
            limited: engine(names, true),
            capped: capped(names),
            ws_open: runtime_ws(&rt, names, false),
            ws_limited: runtime_ws(&rt, names, true),
            floor: Floor::new(names),
            governor: governor(),
            v1: v1(&rt),
            _rt: rt,
        }
    }
}

/// One call of a contender for the request number `i` (which picks the tag).
type Call = fn(&Contenders, &'static str, Duration);

fn decide_engine_open(c: &Contenders, tag: &str, now: Duration) {
    let _ = black_box(c.open.decide(&Demand::new(tag), now));
}
fn decide_engine_limited(c: &Contenders, tag: &str, now: Duration) {
    let _ = black_box(c.limited.decide(&Demand::new(tag), now));
}
fn decide_runtime_open(c: &Contenders, tag: &str, _: Duration) {
    let _ = black_box(c.ws_open.decide(tag, 1.0));
}
fn decide_runtime_limited(c: &Contenders, tag: &str, _: Duration) {
    let _ = black_box(c.ws_limited.decide(tag, 1.0));
}
fn floor(c: &Contenders, tag: &str, _: Duration) {
    black_box(c.floor.hit(tag));
}
fn governor_check(c: &Contenders, _: &str, _: Duration) {
    black_box(c.governor.check().is_ok());
}
fn v1_gate(c: &Contenders, tag: &str, _: Duration) {
    black_box(c.v1.gate(Some(tag), Some(1.0)));
}
fn admit_engine_open(c: &Contenders, tag: &str, now: Duration) {
    if let Ok(t) = c.open.admit(&Demand::new(tag), now) {
        t.finish(Duration::from_micros(250), false);
    }
}
fn admit_engine_capped(c: &Contenders, tag: &str, now: Duration) {
    if let Ok(t) = c.capped.admit(&Demand::new(tag), now) {
        t.finish(Duration::from_micros(250), false);
    }
}
fn admit_engine_limited(c: &Contenders, tag: &str, now: Duration) {
    if let Ok(t) = c.limited.admit(&Demand::new(tag), now) {
        t.finish(Duration::from_micros(250), false);
    }
}
fn admit_runtime_open(c: &Contenders, tag: &str, _: Duration) {
    drop(black_box(c.ws_open.admit(tag, 1.0)));
}
fn admit_runtime_limited(c: &Contenders, tag: &str, _: Duration) {
    drop(black_box(c.ws_limited.admit(tag, 1.0)));
}
fn v1_gate_report(c: &Contenders, tag: &str, _: Duration) {
    let start = wall();
    if c.v1.gate(Some(tag), Some(1.0)).allowed {
        c.v1.report_latency(start.elapsed().as_secs_f64() * 1e3, Some(tag));
    }
}

const DECIDE: [(&str, Call); 7] = [
    ("engine/open", decide_engine_open),
    ("engine/throttle+gcra", decide_engine_limited),
    ("runtime/open", decide_runtime_open),
    ("runtime/throttle+gcra", decide_runtime_limited),
    ("floor", floor),
    ("governor", governor_check),
    ("v1-gate", v1_gate),
];

const ADMIT: [(&str, Call); 6] = [
    ("engine/open", admit_engine_open),
    ("engine/throttle+gcra", admit_engine_limited),
    ("engine/concurrency", admit_engine_capped),
    ("runtime/open", admit_runtime_open),
    ("runtime/throttle+gcra", admit_runtime_limited),
    ("v1-gate+report", v1_gate_report),
];

const TWO_THREADS: [(&str, Call); 7] = [
    ("engine-decide/open", decide_engine_open),
    ("engine-admit/open", admit_engine_open),
    ("engine-admit/concurrency", admit_engine_capped),
    ("runtime-admit/open", admit_runtime_open),
    ("floor", floor),
    ("governor", governor_check),
    ("v1-gate+report", v1_gate_report),
];

/// `n` calls from one thread, starting at tag `first`, over `span` tags.
fn run(c: &Contenders, call: Call, n: u64, first: usize, span: usize) {
    let mut now = Duration::from_secs(1);
    let mut i = 0usize;
    for _ in 0..n {
        i += 1;
        if i == span {
            i = 0;
        }
        now += Duration::from_nanos(10);
        call(c, &c.names[first + i], now);
    }
}

fn print_allocations() {
    eprintln!("allocations per call (after warm-up), 16 tags:");
    let c = Contenders::new(16);
    let all = DECIDE
        .iter()
        .map(|c| ("decide", c))
        .chain(ADMIT.iter().map(|c| ("admit", c)));
    for (group, (name, call)) in all {
        let mut i = 0usize;
        let per = allocs_per_call(10_000, || {
            i = (i + 1) % c.names.len();
            call(&c, &c.names[i], Duration::from_secs(1));
        });
        eprintln!("  {group}/{name:<24} {per:.2}");
    }
}

fn bench(cr: &mut Criterion) {
    print_allocations();
    for tags in TAG_COUNTS {
        let c = Contenders::new(tags);
        let span = c.names.len();

        let mut group = cr.benchmark_group(format!("decide/{tags}tags"));
        for (name, call) in DECIDE {
            group.bench_function(name, |b| b.iter_custom(|n| one_thread(&c, call, n, span)));
        }
        group.finish();

        let mut group = cr.benchmark_group(format!("admit/{tags}tags"));
        for (name, call) in ADMIT {
            group.bench_function(name, |b| b.iter_custom(|n| one_thread(&c, call, n, span)));
        }
        group.finish();

        let mut group = cr.benchmark_group(format!("2threads/{tags}tags"));
        for (name, call) in TWO_THREADS {
            group.bench_function(name, |b| b.iter_custom(|n| two_threads(&c, call, n)));
        }
        group.finish();
    }
}

fn one_thread(c: &Contenders, call: Call, n: u64, span: usize) -> Duration {
    let start = wall();
    run(c, call, n, 0, span);
    start.elapsed()
}

/// Both threads make `n` calls, each on its own half of the tags; the wall time of the
/// slower one.
fn two_threads(c: &Contenders, call: Call, n: u64) -> Duration {
    let half = (c.names.len() / 2).max(1);
    let second = if c.names.len() > 1 { half } else { 0 };
    let barrier = Arc::new(Barrier::new(2));
    std::thread::scope(|s| {
        let handles = [0, second].map(|first| {
            let barrier = barrier.clone();
            s.spawn(move || {
                barrier.wait();
                let start = wall();
                run(c, call, n, first, half);
                start.elapsed()
            })
        });
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group! {
        name = benches;
        config = criterion::Criterion::default()
            .warm_up_time(std::time::Duration::from_secs(1))
            .measurement_time(std::time::Duration::from_secs(2));
        targets = super::bench
    }
}
use group::benches;
criterion_main!(benches);
