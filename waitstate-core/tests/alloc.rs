//! The hot path allocates nothing in the steady state: `decide`, and `admit` + the
//! permit's drop, counted by a global allocator that counts this thread's allocations.
//!
//! The workspace denies `unsafe_code`; this file is its one documented exception: a
//! `GlobalAlloc` impl is unsafe by definition. It only forwards to `System` and counts.
#![cfg(feature = "runtime")]
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use waitstate_core::{Config, Demand, Engine, Policy, WaitState};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCS.with(Cell::get);
    f();
    ALLOCS.with(Cell::get) - before
}

fn limited_engine() -> Engine {
    let mut config = Config::default();
    for (t, p) in [("enterprise", 100), ("pro", 50), ("free", 10)] {
        config.tags.insert(t.into(), p);
    }
    let engine = Engine::new(&config).unwrap();
    let mut p = Policy::default();
    p.tag_throttles.insert("pro".into(), 50.0);
    p.tag_rate_limits.insert("free".into(), 1000.0);
    p.tag_max_weights.insert("checkout".into(), 10.0);
    p.concurrency_limit = Some(10_000);
    engine.set_remote_policy(Some(p)).unwrap();
    engine
}

const TAGS: [&str; 5] = ["enterprise", "pro", "free", "checkout", "unknown-tag"];

#[test]
fn decide_and_admit_allocate_nothing_in_the_steady_state() {
    let engine = limited_engine();
    let mut now = Duration::ZERO;
    // Warm up: first sight of each tag creates its slot (the one allowed allocation).
    for t in TAGS {
        let _ = engine.decide(&Demand::new(t), now);
        drop(engine.admit(&Demand::new(t), now));
    }
    let n = allocations(|| {
        for i in 0..20_000u64 {
            now += Duration::from_micros(100);
            let tag = TAGS[(i % 5) as usize];
            let d = Demand::new(tag).weight(1.0 + (i % 3) as f64).cohort(i);
            let _ = std::hint::black_box(engine.decide(&d, now));
            match engine.admit(&d, now) {
                Ok(ticket) => ticket.finish(Duration::from_millis(i % 700), i % 10 == 0),
                Err(rejection) => drop(std::hint::black_box(rejection)),
            }
        }
    });
    assert_eq!(n, 0, "the hot path allocated {n} times");
    // And the counters moved: the loop did real work.
    let free = engine.counters("free").unwrap();
    assert!(free.admitted > 0 && free.completed > 0);
    assert!(engine.counters("pro").unwrap().rejected_total() > 0);
}

#[test]
fn a_tag_flood_past_the_cap_allocates_nothing() {
    let engine = limited_engine();
    let names: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    for n in &names {
        let _ = engine.decide(&Demand::new(n), Duration::ZERO);
    }
    let n = allocations(|| {
        for name in &names {
            let _ = std::hint::black_box(engine.decide(&Demand::new(name), Duration::ZERO));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn runtime_admit_and_permit_drop_allocate_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ws = rt.block_on(async {
        WaitState::builder()
            .tag("enterprise", 100)
            .tag("free", 10)
            .rule("when p95_latency > 500ms then block free")
            .build()
            .unwrap()
    });
    let _guard = rt.enter();
    for t in ["enterprise", "free"] {
        drop(ws.admit(t, 1.0));
        let _ = ws.decide(t, 1.0);
    }
    let n = allocations(|| {
        for i in 0..10_000 {
            let tag = if i % 2 == 0 { "enterprise" } else { "free" };
            let _ = std::hint::black_box(ws.decide(tag, 1.0));
            let mut permit = ws.admit(tag, 2.0).unwrap();
            permit.set_error(i % 7 == 0);
            drop(permit);
        }
    });
    assert_eq!(n, 0, "admit + permit drop allocated {n} times");
    assert_eq!(ws.counters("free").unwrap().completed, 5_001);
}

#[test]
fn the_counter_sees_an_allocation() {
    let n = allocations(|| drop(std::hint::black_box(vec![1u8; 16])));
    assert_eq!(n, 1);
}
