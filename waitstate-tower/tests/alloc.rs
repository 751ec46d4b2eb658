//! What the tower layer allocates per request, over the whole service (tagger, engine,
//! response future, body wrapper), counted by a global allocator, against the same
//! service without the gate: nothing on the admit path with the default options; on the
//! reject path, only the `Rejection` put in the response's extensions: 1 allocation when the
//! request came with extensions (behind axum's router it always does), 3 when it came with
//! none (a bare hyper request). The body is pre-rendered, the header map is the request's.
//! (Measured before: 7, and 22 when the JSON body was a `json!` value and every header
//! value a `String`.)
//!
//! The workspace denies `unsafe_code`; a `GlobalAlloc` impl is unsafe by definition, and
//! this one only forwards to `System` and counts (as `waitstate-core/tests/alloc.rs`).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, service_fn};
use waitstate_core::{Policy, WaitState};
use waitstate_tower::{GateLayer, HeaderTagger};

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

fn count() -> u64 {
    ALLOCS.with(Cell::get)
}

/// Call `svc` with `req` and read the whole response body, polling with a no-op waker
/// (everything here is ready at once): the allocations made meanwhile.
fn allocations_of<S, B>(svc: &mut S, req: Request<Full<Bytes>>) -> u64
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let before = count();
    let Poll::Ready(Ok(())) = svc.poll_ready(&mut cx) else {
        panic!("not ready")
    };
    let mut fut = pin!(svc.call(req));
    let Poll::Ready(res) = fut.as_mut().poll(&mut cx) else {
        panic!("pending")
    };
    let res = res.unwrap();
    let mut body = pin!(res.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
    count() - before
}

fn request(tag: &str) -> Request<Full<Bytes>> {
    Request::get("/items")
        .header("x-waitstate-tag", tag)
        .body(Full::new(Bytes::from_static(b"")))
        .unwrap()
}

/// What a router leaves in a request's extensions before the handler's layers see it (axum
/// puts its path parameters there for every routed request).
#[derive(Clone)]
struct Routed;

fn routed(tag: &str) -> Request<Full<Bytes>> {
    let mut req = request(tag);
    req.extensions_mut().insert(Routed);
    req
}

type ReadyOk = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

fn inner() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = ReadyOk,
> + Clone {
    service_fn(|_req: Request<Full<Bytes>>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(
            Bytes::from_static(b"ok"),
        ))))
    })
}

#[test]
fn the_gate_allocates_nothing_to_admit_and_only_the_response_to_reject() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let ws = WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .build()
        .unwrap();
    let mut blocked = Policy::default();
    blocked.tag_max_weights.insert("free".into(), 0.0);
    ws.engine().set_remote_policy(Some(blocked)).unwrap();

    let mut bare = inner();
    let mut gated = GateLayer::new(ws.clone(), HeaderTagger::new()).layer(inner());
    // Warm up: the tags' slots, thread-locals, lazily built statics.
    for _ in 0..100 {
        allocations_of(&mut bare, request("enterprise"));
        allocations_of(&mut gated, request("enterprise"));
        allocations_of(&mut gated, request("free"));
        allocations_of(&mut gated, routed("free"));
    }
    let rounds: u32 = 1000;
    let per_round = |svc: &mut dyn FnMut() -> u64| -> u64 { (0..rounds).map(|_| svc()).sum() };
    let floor = per_round(&mut || allocations_of(&mut bare, request("enterprise")));
    let admit = per_round(&mut || allocations_of(&mut gated, request("enterprise")));
    let reject = per_round(&mut || allocations_of(&mut gated, request("free")));
    let reject_routed = per_round(&mut || allocations_of(&mut gated, routed("free")));
    let per = |n: u64| n as f64 / f64::from(rounds);
    println!(
        "per request: bare {}, admitted {}, rejected {} (with extensions: {})",
        per(floor),
        per(admit),
        per(reject),
        per(reject_routed)
    );
    assert_eq!(ws.counters("enterprise").unwrap().in_flight, 0);
    assert_eq!(admit, floor, "the admit path allocates nothing of its own");
    // A rejection costs only the `Rejection` in the response's extensions: its box (1),
    // and the map with its table (2) when the request brought no map to reuse. The body is
    // a pre-rendered `Bytes`, the header fields go in the request's emptied header map.
    assert_eq!(
        reject_routed,
        floor + u64::from(rounds),
        "1 allocation to reject a request that has extensions: {reject_routed} over {rounds}"
    );
    assert_eq!(
        reject,
        floor + 3 * u64::from(rounds),
        "3 allocations to reject a request without extensions: {reject} over {rounds}"
    );
}
