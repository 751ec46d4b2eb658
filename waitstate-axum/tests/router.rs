//! waitstate-axum through `Router`, one `oneshot` per request: `layer` and `route_layer`,
//! matched-path weights, nested routers, fallbacks, extractors, rejections as responses.

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::State;
use axum::http::{Method, Request, Response, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use static_assertions::assert_impl_all;
use tower::{Layer, Service, ServiceExt};
use waitstate_axum::{
    Admitted, AdmittedTag, GateLayer, GateService, HeaderTagger, PathTagger, Policy, Reason,
    Rejected, Rejection, RouteWeights, WaitState,
};

assert_impl_all!(GateLayer<RouteWeights<HeaderTagger>>: Send, Sync, Clone);
assert_impl_all!(GateService<axum::routing::Route, HeaderTagger, waitstate_axum::DefaultRejection, waitstate_axum::DefaultClassifier>: Send, Sync, Clone);
assert_impl_all!(RouteWeights<PathTagger>: Send, Sync, Clone);
assert_impl_all!(Admitted: Send, Sync, Clone);
assert_impl_all!(Rejected: Send, Sync, Clone);

fn waitstate() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("pro", 50)
        .tag("free", 10)
        .build()
        .expect("valid configuration")
}

#[track_caller]
fn set_policy(ws: &WaitState, edit: impl FnOnce(&mut Policy)) {
    let mut policy = Policy::default();
    edit(&mut policy);
    ws.engine()
        .set_remote_policy(Some(policy))
        .expect("valid policy");
}

fn block_free(ws: &WaitState) {
    set_policy(ws, |p| {
        p.tag_max_weights.insert("free".into(), 0.0);
    });
}

fn req(method: Method, path: &str, tag: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(tag) = tag {
        b = b.header("x-waitstate-tag", tag);
    }
    b.body(Body::empty()).expect("valid request")
}

/// Status and body text of one request through `app` (a `Router`, or a gate around one).
async fn send<S, B>(app: &S, req: Request<Body>) -> (StatusCode, String)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: HttpBody,
    B::Error: std::fmt::Debug,
{
    let res = call(app, req).await;
    let status = res.status();
    (status, body_text(res).await)
}

async fn body_text<B>(res: Response<B>) -> String
where
    B: HttpBody,
    B::Error: std::fmt::Debug,
{
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf-8 body")
}

/// Echoes what the gate decided: `tag weight`.
async fn echo(Admitted(a): Admitted) -> String {
    format!("{} {}", a.tag, a.weight)
}

#[track_caller]
fn assert_blocked_json(res: &Response<Body>, retry_after: &str) {
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], retry_after);
    assert_eq!(res.headers()["content-type"], "application/json");
}

/// One request through `app`; the gate's error type is axum's `Infallible`.
async fn call<S, B>(app: &S, req: Request<Body>) -> Response<B>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    app.clone().oneshot(req).await.expect("infallible")
}

/// `GET /` answering `home`, gated by `Router::layer` and by `route_layer`.
fn home_apps(ws: &WaitState) -> [(&'static str, Router); 2] {
    let gate = GateLayer::new(ws.clone(), HeaderTagger::new());
    let home = || Router::new().route("/", get(|| async { "home" }));
    [
        ("layer", home().layer(gate.clone())),
        ("route_layer", home().route_layer(gate)),
    ]
}

#[tokio::test]
async fn blocked_tag_gets_429_retry_after_and_json() {
    let ws = waitstate();
    block_free(&ws);
    for (placement, app) in home_apps(&ws) {
        let res = call(&app, req(Method::GET, "/", Some("free"))).await;
        assert_blocked_json(&res, "1");
        let rejection = res.extensions().get::<Rejection>().expect(placement);
        assert_eq!(
            (rejection.reason(), rejection.tag()),
            (Reason::TagBlocked, "free")
        );
        let body: serde_json::Value = serde_json::from_str(&body_text(res).await).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "rate_limited", "reason": "tag_blocked", "tag": "free", "retryAfter": 1}),
            "{placement}"
        );
    }
    assert_eq!(ws.counters("free").unwrap().rejected_total(), 2);
}

#[tokio::test]
async fn allowed_tags_reach_the_handler_and_release_their_slots() {
    let ws = waitstate();
    block_free(&ws);
    for (placement, app) in home_apps(&ws) {
        for tag in ["enterprise", "pro"] {
            assert_eq!(
                send(&app, req(Method::GET, "/", Some(tag))).await,
                (StatusCode::OK, "home".into()),
                "{placement} {tag}"
            );
        }
    }
    assert_eq!(ws.in_flight(), 0, "slots released at end of body");
    assert_eq!(ws.counters("enterprise").unwrap().offered(), 2);
    assert_eq!(ws.counters("enterprise").unwrap().rejected_total(), 0);
}

/// The example of issue 5: under `route_layer`, `POST /search` costs 100 and a
/// `tagMaxWeights` policy turns it away while `GET /` passes.
#[tokio::test]
async fn route_layer_path_tagger_weighs_post_search_100() {
    let ws = waitstate();
    let tagger = PathTagger::new("free").route("POST /search", "free", 100.0);
    let app = Router::new()
        .route("/", get(echo))
        .route("/search", post(echo))
        .route_layer(GateLayer::new(ws.clone(), tagger));
    set_policy(&ws, |p| {
        p.tag_max_weights.insert("free".into(), 50.0);
    });

    let res = call(&app, req(Method::POST, "/search", None)).await;
    assert_blocked_json(&res, "1");
    assert_eq!(
        res.extensions().get::<Rejection>().unwrap().reason(),
        Reason::TagBlocked,
        "over the tag's max weight: v1 says tag_blocked"
    );
    assert_eq!(
        send(&app, req(Method::GET, "/", None)).await,
        (StatusCode::OK, "free 1".into())
    );
}

/// A global weight cap with the route table: weight by route, tag by header.
#[tokio::test]
async fn route_layer_route_weights_against_global_max_weight() {
    let ws = waitstate();
    let tagger = RouteWeights::new(HeaderTagger::new()).route(Method::POST, "/search", 100u32);
    let app = Router::new()
        .route("/", get(echo))
        .route("/search", post(echo).get(echo))
        .route_layer(GateLayer::new(ws.clone(), tagger));
    set_policy(&ws, |p| p.global_max_weight = 50.0);

    let res = call(&app, req(Method::POST, "/search", Some("enterprise"))).await;
    assert_blocked_json(&res, "1");
    assert_eq!(
        res.extensions().get::<Rejection>().unwrap().reason(),
        Reason::OverWeight
    );
    assert_eq!(
        send(&app, req(Method::GET, "/search", Some("enterprise"))).await,
        (StatusCode::OK, "enterprise 1".into()),
        "the weight is per method"
    );
    assert_eq!(
        send(&app, req(Method::GET, "/", Some("free"))).await,
        (StatusCode::OK, "free 1".into())
    );
}

fn weighted_users() -> RouteWeights<HeaderTagger> {
    RouteWeights::new(HeaderTagger::new())
        .route(Method::GET, "/users/{id}", 20u32)
        .route(Method::POST, "/search", 100u32)
}

fn users_and_search() -> Router {
    Router::new()
        .route("/users/{id}", get(echo))
        .route("/search", post(echo))
}

/// axum 0.8 runs both `route_layer` and `Router::layer` after routing: the gate sees the
/// matched pattern.
#[tokio::test]
async fn route_layer_and_layer_see_the_matched_route_pattern() {
    let ws = waitstate();
    let gate = GateLayer::new(ws, weighted_users());
    let route_layered = users_and_search().route_layer(gate.clone());
    let layered = users_and_search().layer(gate);

    for app in [route_layered, layered] {
        assert_eq!(
            send(&app, req(Method::GET, "/users/42", Some("pro"))).await,
            (StatusCode::OK, "pro 20".into())
        );
        assert_eq!(
            send(&app, req(Method::POST, "/search", Some("pro"))).await,
            (StatusCode::OK, "pro 100".into())
        );
    }
}

/// A gate wrapped around the whole router runs before routing: no matched pattern, so
/// routes with parameters cannot match (the path is `/users/42`); static routes still do.
#[tokio::test]
async fn gate_around_the_router_runs_before_routing_and_sees_only_the_path() {
    let ws = waitstate();
    let app = GateLayer::new(ws.clone(), weighted_users()).layer(users_and_search());

    assert_eq!(
        send(&app, req(Method::GET, "/users/42", Some("pro"))).await,
        (StatusCode::OK, "pro 1".into()),
        "no MatchedPath before routing"
    );
    assert_eq!(
        send(&app, req(Method::POST, "/search", Some("pro"))).await,
        (StatusCode::OK, "pro 100".into()),
        "a static route is its own path"
    );
    block_free(&ws);
    let (status, _) = send(&app, req(Method::GET, "/nope", Some("free"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "404s are gated too");
    assert_eq!(ws.in_flight(), 0);
}

/// In a nested router the gate sees the full pattern, whether it was put on the inner
/// router before nesting or on the outer one after.
#[tokio::test]
async fn nested_routers_see_the_full_pattern() {
    let tagger = RouteWeights::new(HeaderTagger::new())
        .route(Method::GET, "/api/users/{id}", 20u32)
        .route(Method::GET, "/users/{id}", 999u32);
    let ws = waitstate();
    let inner_gated = Router::new().nest(
        "/api",
        Router::new()
            .route("/users/{id}", get(echo))
            .route_layer(GateLayer::new(ws.clone(), tagger.clone())),
    );
    let outer_gated = Router::new()
        .nest("/api", Router::new().route("/users/{id}", get(echo)))
        .route_layer(GateLayer::new(ws.clone(), tagger.clone()));
    let outer_layered = Router::new()
        .nest("/api", Router::new().route("/users/{id}", get(echo)))
        .layer(GateLayer::new(ws.clone(), tagger));

    for app in [inner_gated, outer_gated, outer_layered] {
        assert_eq!(
            send(&app, req(Method::GET, "/api/users/7", Some("pro"))).await,
            (StatusCode::OK, "pro 20".into())
        );
    }

    // And a blocked tag is blocked inside the nested router.
    block_free(&ws);
    let app = Router::new().nest(
        "/api",
        Router::new()
            .route("/users/{id}", get(echo))
            .layer(GateLayer::new(ws.clone(), HeaderTagger::new())),
    );
    let res = call(&app, req(Method::GET, "/api/users/7", Some("free"))).await;
    assert_blocked_json(&res, "1");
    assert_eq!(
        send(&app, req(Method::GET, "/api/users/7", Some("enterprise"))).await,
        (StatusCode::OK, "enterprise 1".into())
    );
}

async fn fallback(admitted: Option<Admitted>) -> (StatusCode, String) {
    let who = admitted.map_or_else(|| "ungated".to_owned(), |a| a.tag.to_string());
    (StatusCode::NOT_FOUND, who)
}

/// `Router::layer` gates the fallback too; `route_layer` does not reach it.
#[tokio::test]
async fn fallback_is_gated_by_layer_not_by_route_layer() {
    let ws = waitstate();
    let gate = GateLayer::new(ws.clone(), HeaderTagger::new());
    let layered = Router::new()
        .route("/", get(echo))
        .fallback(fallback)
        .layer(gate.clone());
    let route_layered = Router::new()
        .route("/", get(echo))
        .fallback(fallback)
        .route_layer(gate);

    assert_eq!(
        send(&layered, req(Method::GET, "/nope", Some("pro"))).await,
        (StatusCode::NOT_FOUND, "pro".into())
    );
    assert_eq!(
        send(&route_layered, req(Method::GET, "/nope", Some("pro"))).await,
        (StatusCode::NOT_FOUND, "ungated".into())
    );

    block_free(&ws);
    let res = call(&layered, req(Method::GET, "/nope", Some("free"))).await;
    assert_blocked_json(&res, "1");
    assert_eq!(
        send(&route_layered, req(Method::GET, "/nope", Some("free"))).await,
        (StatusCode::NOT_FOUND, "ungated".into())
    );
    // A wrong method on a matched path is the route's own 405: both gate it.
    for app in [&layered, &route_layered] {
        let (status, _) = send(app, req(Method::POST, "/", Some("free"))).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let (status, _) = send(app, req(Method::POST, "/", Some("pro"))).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
    assert_eq!(ws.in_flight(), 0);
}

#[tokio::test]
async fn extractors_read_the_admission_and_the_tag() {
    async fn both(Admitted(a): Admitted, AdmittedTag(tag): AdmittedTag) -> String {
        format!(
            "{} {} {} {:?}",
            tag,
            tag.priority(),
            a.weight,
            a.would_reject
        )
    }
    let ws = waitstate();
    let tagger = HeaderTagger::new()
        .weight_header("x-cost")
        .exempt_path("/healthz");
    let app = Router::new()
        .route("/", get(both))
        .route("/healthz", get(both))
        .layer(GateLayer::new(ws, tagger));

    let mut r = req(Method::GET, "/", Some("enterprise"));
    r.headers_mut().insert("x-cost", "2.5".parse().unwrap());
    assert_eq!(
        send(&app, r).await,
        (StatusCode::OK, "enterprise 100 2.5 None".into())
    );

    // Exempt: no admission; the extractor says why, as a 500.
    let (status, text) = send(&app, req(Method::GET, "/healthz", Some("free"))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text.contains("found no WaitState admission"), "{text}");
}

#[tokio::test]
async fn extractors_without_a_gate_reject_or_are_none() {
    let app = Router::new()
        .route(
            "/strict",
            get(|Admitted(_): Admitted| async { "unreachable" }),
        )
        .route(
            "/tag",
            get(|AdmittedTag(_): AdmittedTag| async { "unreachable" }),
        )
        .route(
            "/optional",
            get(|a: Option<Admitted>, t: Option<AdmittedTag>| async move {
                format!("{} {}", a.is_none(), t.is_none())
            }),
        );

    for path in ["/strict", "/tag"] {
        let res = call(&app, req(Method::GET, path, None)).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        let text = body_text(res).await;
        assert!(text.contains("put `GateLayer` in front"), "{path}: {text}");
    }
    assert_eq!(
        send(&app, req(Method::GET, "/optional", None)).await,
        (StatusCode::OK, "true true".into())
    );
}

/// A handler that gates a second operation answers exactly as the gate does.
#[tokio::test]
async fn rejected_renders_exactly_what_the_gate_renders() {
    async fn export(State(ws): State<WaitState>) -> Result<&'static str, Rejected> {
        let _permit = ws.admit("free", 1.0)?;
        Ok("exported")
    }
    let ws = waitstate();
    let app = Router::new()
        .route("/export", post(export))
        .with_state(ws.clone());
    let gated = Router::new()
        .route("/", get(|| async { "home" }))
        .layer(GateLayer::new(ws.clone(), HeaderTagger::new()));

    assert_eq!(
        send(&app, req(Method::POST, "/export", None)).await,
        (StatusCode::OK, "exported".into())
    );
    block_free(&ws);
    let from_handler = call(&app, req(Method::POST, "/export", None)).await;
    let from_gate = call(&gated, req(Method::GET, "/", Some("free"))).await;
    assert_blocked_json(&from_handler, "1");
    assert_eq!(from_handler.headers(), from_gate.headers());
    assert_eq!(
        from_handler
            .extensions()
            .get::<Rejection>()
            .map(Rejection::reason),
        Some(Reason::TagBlocked)
    );
    assert_eq!(body_text(from_handler).await, body_text(from_gate).await);
}

#[tokio::test]
async fn bad_input_gets_a_defined_answer() {
    let ws = waitstate();
    let tagger = HeaderTagger::new().weight_header("x-cost").fallback("free");
    let app = Router::new()
        .route("/", get(echo))
        .layer(GateLayer::new(ws.clone(), tagger));

    let mut r = req(Method::GET, "/", None);
    r.headers_mut().insert(
        "x-waitstate-tag",
        axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
    );
    assert_eq!(send(&app, r).await, (StatusCode::OK, "free 1".into()));

    let mut r = req(Method::GET, "/", Some("pro"));
    r.headers_mut().insert("x-cost", "NaN".parse().unwrap());
    let res = call(&app, r).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        res.extensions().get::<Rejection>().unwrap().reason(),
        Reason::OverWeight
    );
    assert_eq!(ws.in_flight(), 0);
}
