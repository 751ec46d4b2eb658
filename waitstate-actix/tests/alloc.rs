//! What the actix middleware allocates per request, over the whole app (`App`, the gate,
//! its future and body wrapper, a handler), counted by a global allocator, against the same
//! app without the gate: nothing of its own on the admit path; on the reject path 4, no
//! more than a builder answering an empty response: the `Rejection` in the response's
//! extensions (2: actix's map and the boxed value) and 2 of actix's own. Actix keeps
//! response heads, header maps included, in a pool, and the body is pre-rendered. (Before
//! the pre-rendered body and the in-place fields: 6.)
//!
//! The workspace denies `unsafe_code`; a `GlobalAlloc` impl is unsafe by definition, and
//! this one only forwards to `System` and counts (as `waitstate-tower/tests/alloc.rs`).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpResponse, web};
use waitstate_actix::{Gate, HeaderTagger, Rejection, RejectionContext};
use waitstate_core::{Policy, WaitState};

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

/// Call `app` with a request for `tag` (built before counting) and read the whole response
/// body, polling with a no-op waker (everything here is ready at once): the allocations
/// made meanwhile, and whether the response carried a `Rejection`.
fn allocations_of<S, B>(app: &S, tag: &str) -> (u64, bool)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let req = TestRequest::get()
        .uri("/items")
        .insert_header(("x-waitstate-tag", tag))
        .to_request();
    let mut cx = Context::from_waker(Waker::noop());
    let before = count();
    let mut fut = pin!(app.call(req));
    let Poll::Ready(res) = fut.as_mut().poll(&mut cx) else {
        panic!("pending")
    };
    let res = res.unwrap();
    let rejected = res.response().extensions().get::<Rejection>().is_some();
    let mut body = pin!(res.into_body());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_next(&mut cx) {}
    (count() - before, rejected)
}

async fn ok() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

#[test]
fn the_gate_allocates_nothing_to_admit_and_only_the_rejection_to_reject() {
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

    let bare = rt.block_on(test::init_service(
        App::new().route("/items", web::get().to(ok)),
    ));
    let gated = rt.block_on(test::init_service(
        App::new()
            .wrap(Gate::new(ws.clone(), HeaderTagger::new()))
            .route("/items", web::get().to(ok)),
    ));
    // A builder that answers with an empty response: what any rejection costs.
    let plain = rt.block_on(test::init_service(
        App::new()
            .wrap(Gate::new(ws.clone(), HeaderTagger::new()).with_rejection(
                |_: &RejectionContext<'_>| HttpResponse::TooManyRequests().finish(),
            ))
            .route("/items", web::get().to(ok)),
    ));
    // Warm up: the tags' slots, actix's pools of requests and response heads, thread-locals.
    for _ in 0..100 {
        allocations_of(&bare, "enterprise");
        allocations_of(&gated, "enterprise");
        assert!(allocations_of(&gated, "free").1, "rejected");
        assert!(allocations_of(&plain, "free").1, "rejected");
    }
    let rounds: u32 = 1000;
    let sum = |app: &dyn Fn() -> (u64, bool)| -> u64 { (0..rounds).map(|_| app().0).sum() };
    let floor = sum(&|| allocations_of(&bare, "enterprise"));
    let admit = sum(&|| allocations_of(&gated, "enterprise"));
    let reject = sum(&|| allocations_of(&gated, "free"));
    let reject_plain = sum(&|| allocations_of(&plain, "free"));
    let per = |n: u64| n as f64 / f64::from(rounds);
    println!(
        "per request: bare {}, admitted {}, rejected {} (with an empty response: {})",
        per(floor),
        per(admit),
        per(reject),
        per(reject_plain)
    );
    assert_eq!(ws.counters("enterprise").unwrap().in_flight, 0);
    assert_eq!(admit, floor, "the admit path allocates nothing of its own");
    // The default answer (status, fields, JSON body) costs nothing over an empty response:
    // the body is pre-rendered, the fields go into the pooled head's map. A rejection costs
    // 4: the `Rejection` in the response's extensions (2: the map's table, the box) and
    // 2 of actix's own for any response the middleware makes in place of the app's.
    assert_eq!(
        reject, reject_plain,
        "the default rejection costs no more than an empty response"
    );
    assert_eq!(
        reject,
        4 * u64::from(rounds),
        "4 allocations to reject: {reject} over {rounds}"
    );
}
