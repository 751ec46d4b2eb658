//! The Gate middleware end to end through `actix_web::test`, with tokio's paused clock.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderValue;
use actix_web::test::{self, TestRequest};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse};
use tokio::sync::mpsc;
use waitstate_actix::{
    Admission, DefaultRejection, Gate, HeaderTagger, PathTagger, Reason, Rejection,
    RejectionContext, Tagging, WaitState,
};
use waitstate_core::Policy;

// A Gate moves into `HttpServer::new`'s factory, which every worker thread calls.
static_assertions::assert_impl_all!(Gate<HeaderTagger>: Send, Sync, Clone, std::fmt::Debug);
static_assertions::assert_impl_all!(Gate<PathTagger, DefaultRejection>: Send, Sync, Clone);

fn ws() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("pro", 50)
        .tag("free", 10)
        .build()
        .unwrap()
}

fn set(ws: &WaitState, f: impl FnOnce(&mut Policy)) {
    let mut p = Policy::default();
    f(&mut p);
    ws.engine().set_remote_policy(Some(p)).unwrap();
}

fn tagger() -> HeaderTagger {
    HeaderTagger::new()
        .weight_header("x-weight")
        .exempt_path("/healthz")
}

fn req(tag: &str) -> TestRequest {
    TestRequest::get().insert_header(("x-waitstate-tag", tag))
}

/// The tag the handler saw in its `Admission`, or `exempt`.
async fn echo_tag(req: HttpRequest) -> HttpResponse {
    // The gate runs the handler in the admission's scope (no extension by default).
    let admission =
        waitstate_core::tagger::current::found_or_current(req.extensions().get::<Admission>());
    let tag = admission.map_or_else(|| "exempt".to_owned(), |a| a.tag.as_str().to_owned());
    HttpResponse::Ok().body(tag)
}

/// An app gated by `gate` that echoes the tag and counts the calls that reach a handler.
macro_rules! app {
    ($gate:expr, $calls:expr) => {{
        let calls: Arc<AtomicUsize> = $calls.clone();
        test::init_service(App::new().wrap($gate).default_service(web::to(
            move |req: HttpRequest| {
                calls.fetch_add(1, Ordering::SeqCst);
                echo_tag(req)
            },
        )))
        .await
    }};
}

/// A response header as text (empty when missing or not text).
fn h<'a, B>(res: &'a ServiceResponse<B>, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn body_string<B: MessageBody>(res: ServiceResponse<B>) -> String {
    String::from_utf8(test::read_body(res).await.to_vec()).unwrap()
}

#[track_caller]
fn assert_json(body: &str, reason: &str, tag: &str, retry_after: u64) {
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"error": "rate_limited", "reason": reason, "tag": tag, "retryAfter": retry_after})
    );
}

#[actix_web::test]
async fn blocked_tag_gets_429_retry_after_json_and_the_rejection_extension() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| {
        p.tag_max_weights.insert("free".into(), 0.0);
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app!(Gate::new(ws.clone(), tagger()), calls);

    let res = test::call_service(&app, req("free").to_request()).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&res, "retry-after"), "1");
    assert_eq!(h(&res, "content-type"), "application/json");
    let rejection = res
        .response()
        .extensions()
        .get::<Rejection>()
        .unwrap()
        .clone();
    assert_eq!(
        (rejection.reason(), rejection.tag(), rejection.priority()),
        (Reason::TagBlocked, "free", 10)
    );
    assert_json(&body_string(res).await, "tag_blocked", "free", 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler is never called"
    );

    let res = test::call_service(&app, req("enterprise").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body_string(res).await,
        "enterprise",
        "the handler sees the Admission"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(ws.in_flight(), 0);
    assert_eq!(ws.counters("enterprise").unwrap().completed, 1);
}

#[actix_web::test]
async fn app_clones_share_one_budget() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| {
        p.tag_rate_limits.insert("pro".into(), 3.0);
    });
    // actix-web builds one App (one middleware) per worker, from one Gate value.
    let gate = Gate::new(ws.clone(), tagger());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut apps = Vec::new();
    for _ in 0..4 {
        apps.push(app!(gate.clone(), calls));
    }
    let mut ok = 0;
    for i in 0..12 {
        let res = test::call_service(&apps[i % 4], req("pro").to_request()).await;
        if res.status() == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(h(&res, "ratelimit-policy"), "\"pro\";q=3;w=1");
            assert_eq!(h(&res, "ratelimit"), "\"pro\";r=0;t=1");
            assert_json(&body_string(res).await, "rate_limited", "pro", 1);
        }
    }
    assert_eq!(
        ok, 3,
        "one budget of 3 across every worker's app, not 3 each"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A streaming body fed through a channel: the test decides when each chunk arrives.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl MessageBody for ChannelBody {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// An app whose handler streams the body the test feeds through the returned sender.
macro_rules! streaming_app {
    ($ws:expr) => {
        streaming_app!($ws, Gate::new($ws.clone(), tagger()))
    };
    ($ws:expr, $gate:expr) => {{
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let rx = Rc::new(RefCell::new(Some(rx)));
        let app = test::init_service(App::new().wrap($gate).route(
            "/stream",
            web::get().to(move || {
                let rx = rx.borrow_mut().take();
                async move {
                    match rx {
                        Some(rx) => HttpResponse::Ok().body(ChannelBody(rx)),
                        None => HttpResponse::Gone().finish(),
                    }
                }
            }),
        ))
        .await;
        (app, tx)
    }};
}

fn stream_req() -> TestRequest {
    req("pro").uri("/stream")
}

/// The one `pro` request's client went away: its slot is free and it was recorded once,
/// as cancelled (not as a success with a cut-short latency).
#[track_caller]
fn assert_released_once(ws: &WaitState) {
    assert_eq!(ws.in_flight(), 0, "slot released");
    let c = ws.counters("pro").unwrap();
    assert_eq!(
        (c.cancelled, c.completed),
        (1, 0),
        "recorded once, as cancelled"
    );
}

async fn next_chunk<B: MessageBody + Unpin>(body: &mut B) -> Option<Bytes> {
    poll_fn(|cx| Pin::new(&mut *body).poll_next(cx))
        .await
        .map(|r| r.ok().unwrap())
}

#[actix_web::test]
async fn slot_is_held_until_the_body_ends_and_latency_is_taken_at_the_head() {
    tokio::time::pause();
    // By default the latency is the response's (a stream's length is not the backend's
    // speed); opted in, it runs to the end of the body. The slot is held to the end.
    for to_end in [false, true] {
        let ws = ws();
        let (app, tx) = streaming_app!(
            ws,
            Gate::new(ws.clone(), tagger()).latency_to_body_end(to_end)
        );
        let res = test::call_service(&app, stream_req().to_request()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            ws.in_flight(),
            1,
            "the response head is out, the body is not"
        );
        let mut body = res.into_body();
        tx.send(Bytes::from("a")).unwrap();
        assert_eq!(next_chunk(&mut body).await.unwrap(), "a");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(ws.in_flight(), 1, "mid-stream");
        drop(tx);
        assert!(next_chunk(&mut body).await.is_none());
        assert_eq!(
            ws.in_flight(),
            0,
            "released at end of stream, before the drop"
        );
        let c = ws.counters("pro").unwrap();
        assert_eq!((c.completed, c.errors), (1, 0));
        assert_eq!(
            c.latency_sum_us >= 2_000_000,
            to_end,
            "to the end: {to_end}, latency {} us",
            c.latency_sum_us
        );
        drop(body);
        assert_eq!(ws.counters("pro").unwrap().completed, 1, "recorded once");
    }
}

/// Issue 15, item 9: a panic in the handler is a panic, not a success.
#[actix_web::test]
async fn a_panic_in_the_handler_counts_as_a_panic() {
    let ws = ws();
    let app = test::init_service(App::new().wrap(Gate::new(ws.clone(), tagger())).route(
        "/",
        web::get().to(|| async {
            if true {
                panic!("the handler fails");
            }
            HttpResponse::Ok().finish()
        }),
    ))
    .await;
    let mut fut = Box::pin(app.call(req("pro").to_request()));
    // Poll to completion, catching the panic (what a server's task boundary does).
    let outcome = poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(_)) => Poll::Ready(Ok(())),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    })
    .await;
    assert!(outcome.is_err(), "the panic goes on unwinding");
    // (The future went with the closure that polled it, as a task's would.)
    let c = ws.counters("pro").unwrap();
    assert_eq!(
        (c.panicked, c.completed, c.errors, c.in_flight),
        (1, 0, 0, 0)
    );
}

#[actix_web::test]
async fn response_dropped_before_the_body_is_read_frees_the_slot() {
    tokio::time::pause();
    let ws = ws();
    let (app, _tx) = streaming_app!(ws);
    let res = test::call_service(&app, stream_req().to_request()).await;
    assert_eq!(ws.in_flight(), 1);
    drop(res);
    assert_released_once(&ws);
}

#[actix_web::test]
async fn body_dropped_mid_stream_frees_the_slot() {
    tokio::time::pause();
    let ws = ws();
    let (app, tx) = streaming_app!(ws);
    let res = test::call_service(&app, stream_req().to_request()).await;
    let mut body = res.into_body();
    tx.send(Bytes::from("first")).unwrap();
    assert_eq!(next_chunk(&mut body).await.unwrap(), "first");
    assert_eq!(ws.in_flight(), 1);
    drop(body);
    assert_released_once(&ws);
}

#[actix_web::test]
async fn handler_future_dropped_frees_the_slot() {
    tokio::time::pause();
    let ws = ws();
    let app = test::init_service(
        App::new()
            .wrap(Gate::new(ws.clone(), tagger()))
            .route("/", web::get().to(std::future::pending::<HttpResponse>)),
    )
    .await;
    let mut fut = Box::pin(app.call(req("pro").to_request()));
    let polled = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await;
    assert!(polled, "the handler never answers");
    assert_eq!(ws.in_flight(), 1);
    drop(fut);
    assert_released_once(&ws);
}

#[actix_web::test]
async fn dry_run_marks_what_would_have_been_rejected() {
    tokio::time::pause();
    let ws = WaitState::builder()
        .tag("free", 10)
        .dry_run(true)
        .build()
        .unwrap();
    set(&ws, |p| {
        p.tag_max_weights.insert("free".into(), 0.0);
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app!(Gate::new(ws.clone(), tagger()), calls);
    let res = test::call_service(&app, req("free").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h(&res, "x-waitstate-dry-run"), "tag_blocked");
    drop(res);

    let app = app!(Gate::new(ws.clone(), tagger()).dry_run_header(false), calls);
    let res = test::call_service(&app, req("free").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!res.headers().contains_key("x-waitstate-dry-run"));
    drop(res);
    assert_eq!(ws.counters("free").unwrap().would_reject, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(ws.in_flight(), 0);
}

#[actix_web::test]
async fn exempt_requests_pass_ungated_and_uncounted() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| p.kill_signal = true);
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app!(Gate::new(ws.clone(), tagger()), calls);
    let res = test::call_service(&app, req("free").uri("/healthz").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_string(res).await, "exempt", "no Admission for exempt");
    let res = test::call_service(&app, req("free").to_request()).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the rest is killed"
    );
    let c = ws.counters("free").unwrap();
    assert_eq!((c.admitted, c.completed, c.rejected_total()), (0, 0, 1));
}

#[actix_web::test]
async fn bad_input_gets_a_defined_answer_and_never_reaches_the_handler_when_rejected() {
    tokio::time::pause();
    let ws = ws();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app!(Gate::new(ws.clone(), tagger()), calls);

    // A tag that is not UTF-8: the fallback tag.
    let res = test::call_service(
        &app,
        TestRequest::get()
            .insert_header((
                "x-waitstate-tag",
                HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
            ))
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_string(res).await, waitstate_core::DEFAULT_TAG);

    // A 64 KB tag from the header: not declared, counted as the default tag, never stored.
    let long = "a".repeat(64 * 1024);
    let res = test::call_service(&app, req(&long).to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_string(res).await, waitstate_core::DEFAULT_TAG);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    for bad in ["NaN", "-1", "1e309", "garbage", ""] {
        let res = test::call_service(
            &app,
            req("pro").insert_header(("x-weight", bad)).to_request(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{bad:?}");
        let reason = res
            .response()
            .extensions()
            .get::<Rejection>()
            .map(Rejection::reason);
        assert_eq!(reason, Some(Reason::OverWeight), "{bad:?}");
        assert_json(&body_string(res).await, "over_weight", "pro", 1);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no bad weight reached the handler"
    );
    assert_eq!(ws.in_flight(), 0);
}

#[actix_web::test]
async fn five_hundreds_count_as_errors_four_hundreds_do_not() {
    tokio::time::pause();
    let ws = ws();
    let app = test::init_service(
        App::new()
            .wrap(Gate::new(ws.clone(), tagger()))
            .route(
                "/500",
                web::get().to(|| async { HttpResponse::InternalServerError().finish() }),
            )
            .route(
                "/404",
                web::get().to(|| async { HttpResponse::NotFound().finish() }),
            )
            .route(
                "/err",
                web::get().to(|| async {
                    Err::<HttpResponse, _>(actix_web::error::ErrorBadGateway("upstream"))
                }),
            ),
    )
    .await;
    for path in ["/500", "/404", "/err"] {
        let res = test::call_service(&app, req("pro").uri(path).to_request()).await;
        drop(test::read_body(res).await);
    }
    let c = ws.counters("pro").unwrap();
    assert_eq!((c.completed, c.errors), (3, 2));
    assert_eq!(ws.in_flight(), 0);
}

#[actix_web::test]
async fn grpc_requests_get_a_grpc_status() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| {
        p.tag_max_weights.insert("free".into(), 0.0);
        p.tag_rate_limits.insert("pro".into(), 0.5);
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let app = app!(Gate::new(ws.clone(), tagger()), calls);
    let grpc = |tag: &str| {
        req(tag)
            .insert_header(("content-type", "application/grpc+proto"))
            .to_request()
    };
    let res = test::call_service(&app, grpc("free")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(h(&res, "grpc-status"), "14", "overload: UNAVAILABLE");
    assert_eq!(h(&res, "content-type"), "application/grpc");
    assert!(res.headers().contains_key("grpc-message"));
    assert_eq!(h(&res, "grpc-retry-pushback-ms"), "1000");
    assert!(test::read_body(res).await.is_empty());

    let res = test::call_service(&app, grpc("pro")).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the first pro fits the budget"
    );
    let res = test::call_service(&app, grpc("pro")).await;
    assert_eq!(h(&res, "grpc-status"), "8", "quota: RESOURCE_EXHAUSTED");
}

#[actix_web::test]
async fn kill_signal_can_answer_503() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| p.kill_signal = true);
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Gate::new(ws.clone(), tagger()).with_rejection(
        DefaultRejection::default().kill_signal_status(StatusCode::SERVICE_UNAVAILABLE),
    );
    let app = app!(gate, calls);
    let res = test::call_service(&app, req("enterprise").to_request()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key("retry-after"));
    assert_json(&body_string(res).await, "kill_signal", "enterprise", 1);
}

#[actix_web::test]
async fn closures_replace_the_rejection_classifier_and_tagger() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| {
        p.tag_max_weights.insert("free".into(), 0.0);
    });
    let by_path = |r: &dyn waitstate_actix::RequestView| {
        if r.path().starts_with("/free") {
            Tagging::new("free")
        } else {
            Tagging::new("pro")
        }
    };
    let gate = Gate::new(ws.clone(), by_path)
        .with_rejection(|ctx: &RejectionContext<'_>| {
            HttpResponse::ServiceUnavailable().body(format!(
                "{} at {}",
                ctx.rejection.reason(),
                ctx.request.path()
            ))
        })
        .with_classifier(|s: StatusCode, _: &actix_web::http::header::HeaderMap| {
            s == StatusCode::NOT_FOUND
        });
    let app = test::init_service(
        App::new()
            .wrap(gate)
            .route(
                "/free",
                web::get().to(|| async { HttpResponse::Ok().finish() }),
            )
            .route(
                "/missing",
                web::get().to(|| async { HttpResponse::NotFound().finish() }),
            ),
    )
    .await;
    let res = test::call_service(&app, TestRequest::get().uri("/free").to_request()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.response().extensions().get::<Rejection>().is_some());
    assert_eq!(body_string(res).await, "tag_blocked at /free");
    let res = test::call_service(&app, TestRequest::get().uri("/missing").to_request()).await;
    drop(test::read_body(res).await);
    assert_eq!(
        ws.counters("pro").unwrap().errors,
        1,
        "404 is an error here"
    );
}

#[actix_web::test]
async fn route_aware_tagger_sees_the_matched_pattern() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| {
        p.tag_max_weights.insert("pro".into(), 5.0);
    });
    let tagger = PathTagger::new("free")
        .route("/users/{id}", "pro", 2.0)
        .route("POST /search", "pro", 100.0);
    let app = test::init_service(
        App::new()
            .wrap(Gate::new(ws.clone(), tagger))
            .service(web::scope("/users").route("/{id}", web::get().to(echo_tag)))
            .route("/search", web::post().to(echo_tag)),
    )
    .await;
    let res = test::call_service(&app, TestRequest::get().uri("/users/42").to_request()).await;
    assert_eq!(body_string(res).await, "pro", "matched /users/{{id}}");
    let res = test::call_service(&app, TestRequest::post().uri("/search").to_request()).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "weight 100 > 5"
    );
    let res = test::call_service(&app, TestRequest::get().uri("/nowhere").to_request()).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    drop(res);
    assert_eq!(ws.counters("free").unwrap().completed, 1, "fallback tag");
}

#[actix_web::test]
async fn the_wrapped_service_is_reachable() {
    use actix_web::dev::{ServiceRequest, Transform, fn_service};
    let inner = fn_service(|req: ServiceRequest| async move {
        Ok::<_, actix_web::Error>(req.into_response(HttpResponse::NoContent().finish()))
    });
    let gate = Gate::new(ws(), tagger());
    let middleware = gate.new_transform(inner).await.unwrap();
    let _: &dyn std::any::Any = middleware.get_ref();
    let inner = middleware.into_inner();
    let res = inner
        .call(TestRequest::default().to_srv_request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "ungated");
}

// ---- waiting for a slot: the adaptive pool full ----

#[actix_web::test]
async fn a_request_waits_for_a_slot_highest_priority_first_and_leaks_nothing() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| p.concurrency_limit = Some(1));
    let (go, _) = tokio::sync::broadcast::channel::<()>(16);
    let tx = go.clone();
    let app = Rc::new(
        test::init_service(
            App::new()
                .wrap(Gate::new(ws.clone(), tagger()))
                .default_service(web::to(move |req: HttpRequest| {
                    let mut go = tx.subscribe();
                    async move {
                        let _ = go.recv().await;
                        echo_tag(req).await
                    }
                })),
        )
        .await,
    );
    let call = |tag: &str| {
        let app = app.clone();
        let r = req(tag).to_request();
        actix_web::rt::spawn(async move { app.call(r).await })
    };
    let first = call("free");
    tokio::task::yield_now().await;
    let pro = call("pro");
    let ent = call("enterprise");
    tokio::task::yield_now().await;
    assert_eq!(
        ws.admission().levels.iter().map(|l| l.waiting).sum::<u64>(),
        2
    );
    // A third waiter gives up: its future is dropped in the queue.
    let mut leaver = Box::pin(app.call(req("pro").to_request()));
    assert!(poll_fn(|cx| Poll::Ready(leaver.as_mut().poll(cx).is_pending())).await);
    drop(leaver);
    assert_eq!(
        ws.admission().levels.iter().map(|l| l.waiting).sum::<u64>(),
        2
    );
    // The slot frees: enterprise goes next though it came after pro.
    go.send(()).unwrap();
    let res = first.await.unwrap().unwrap();
    assert_eq!(test::read_body(res).await, "free");
    tokio::task::yield_now().await;
    go.send(()).unwrap();
    let res = ent.await.unwrap().unwrap();
    assert_eq!(test::read_body(res).await, "enterprise");
    tokio::task::yield_now().await;
    go.send(()).unwrap();
    let res = pro.await.unwrap().unwrap();
    assert_eq!(test::read_body(res).await, "pro");
    assert_eq!(ws.in_flight(), 0);
    assert_eq!(ws.admission().in_flight, 0);
}

#[actix_web::test]
async fn a_wait_past_its_deadline_is_a_429() {
    tokio::time::pause();
    let ws = ws();
    set(&ws, |p| p.concurrency_limit = Some(1));
    let app = Rc::new(
        test::init_service(
            App::new()
                .wrap(Gate::new(ws.clone(), tagger()))
                .default_service(web::to(|| async {
                    std::future::pending::<()>().await;
                    HttpResponse::Ok().finish()
                })),
        )
        .await,
    );
    let held = {
        let app = app.clone();
        actix_web::rt::spawn(async move { app.call(req("pro").to_request()).await })
    };
    tokio::task::yield_now().await;
    let res = app.call(req("free").to_request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let rejection = res
        .response()
        .extensions()
        .get::<Rejection>()
        .cloned()
        .unwrap();
    assert_eq!(rejection.reason(), Reason::ConcurrencyLimited);
    held.abort();
    let _ = held.await;
    assert_eq!(ws.admission().in_flight, 0);
}
