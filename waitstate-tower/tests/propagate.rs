//! Priority travels downstream: two real services on 127.0.0.1, the upstream's handler
//! calls the downstream through a polite client, and the downstream sheds by the
//! upstream's tag. The handler threads nothing by hand.
#![cfg(feature = "client")]

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use waitstate_core::tagger::current;
use waitstate_core::{Policy, WaitState};
use waitstate_tower::client::{ClientLayer, ClientService, LocalRejection};
use waitstate_tower::{Admission, COHORT_HEADER, GateLayer, HeaderTagger, cohort_of};

type HttpClient = ClientService<Client<HttpConnector, Full<Bytes>>>;

fn ws() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        // Declared: a tag from a header counts as itself only when declared.
        .tag("batch", 1)
        .build()
        .unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The downstream: gated by the tag (and cohort) headers; answers with what it admitted.
async fn downstream(ws: WaitState) -> SocketAddr {
    let tagger = HeaderTagger::new().cohort_header(COHORT_HEADER);
    let app = Router::new()
        .route(
            "/whoami",
            get(|| async move {
                // The gate runs the handler in the request's admission scope.
                match current::current() {
                    Some(admission) => format!("{} {:?}", admission.tag, admission.cohort),
                    None => "ungated".to_owned(),
                }
            }),
        )
        .layer(GateLayer::new(ws, tagger));
    serve(app).await
}

#[derive(Clone)]
struct Upstream {
    client: HttpClient,
    downstream: SocketAddr,
}

/// One call downstream, as a handler makes it: no tag in sight.
async fn call_downstream(client: HttpClient, downstream: SocketAddr) -> (StatusCode, String) {
    let req = Request::get(format!("http://{downstream}/whoami"))
        .body(Full::default())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The upstream: gated by tag and API key; its handler calls the downstream.
async fn upstream(ws: WaitState, client: HttpClient, downstream: SocketAddr) -> SocketAddr {
    let tagger = HeaderTagger::new().cohort_header("x-api-key");
    let app = Router::new()
        .route(
            "/",
            get(|State(up): State<Upstream>| async move {
                let (status, body) = call_downstream(up.client, up.downstream).await;
                format!("{} {body}", status.as_u16())
            }),
        )
        .route(
            "/spawned",
            get(|State(up): State<Upstream>| async move {
                // A spawned task starts outside the scope, unless carried there.
                let bare = tokio::spawn(call_downstream(up.client.clone(), up.downstream));
                let carried = match current::current() {
                    Some(a) => {
                        tokio::spawn(current::scope(a, call_downstream(up.client, up.downstream)))
                    }
                    None => return "no admission".to_owned(),
                };
                let (bare, carried) = (bare.await.unwrap().1, carried.await.unwrap().1);
                format!("{bare} | {carried}")
            }),
        )
        .layer(GateLayer::new(ws, tagger))
        .with_state(Upstream { client, downstream });
    serve(app).await
}

fn client(layer: ClientLayer) -> HttpClient {
    let inner = Client::builder(TokioExecutor::new()).build_http();
    ServiceBuilder::new().layer(layer).service(inner)
}

async fn get_text(addr: SocketAddr, path: &str, tag: &str) -> String {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{addr}{path}"))
        .header("x-waitstate-tag", tag)
        .header("x-api-key", "key-1")
        .body(Full::default())
        .unwrap();
    let res = client.request(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn the_upstreams_enterprise_call_is_enterprise_downstream() {
    let (up_ws, down_ws) = (ws(), ws());
    let down = downstream(down_ws.clone()).await;
    let up = upstream(up_ws, client(ClientLayer::new()), down).await;

    // The downstream's cohort is the upstream's, carried as hex and hashed again: the
    // same upstream user is the same downstream cohort.
    let upstream_cohort = cohort_of(b"key-1");
    let carried = cohort_of(format!("{upstream_cohort:016x}").as_bytes());
    let expected = format!("200 enterprise Some({carried})");
    assert_eq!(get_text(up, "/", "enterprise").await, expected);
    assert_eq!(
        get_text(up, "/", "free").await,
        format!("200 free Some({carried})")
    );

    // The downstream blocks free: the upstream's free call is shed there, enterprise not.
    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    down_ws.engine().set_remote_policy(Some(policy)).unwrap();
    assert!(get_text(up, "/", "free").await.starts_with("429 "));
    assert_eq!(get_text(up, "/", "enterprise").await, expected);
    assert_eq!(down_ws.counters("free").unwrap().rejected_total(), 1);
    assert_eq!(down_ws.in_flight(), 0);
}

#[tokio::test]
async fn a_spawned_task_needs_the_scope_carried() {
    let down = downstream(ws()).await;
    let up = upstream(ws(), client(ClientLayer::new()), down).await;
    let text = get_text(up, "/spawned", "enterprise").await;
    let (bare, carried) = text.split_once(" | ").unwrap();
    assert!(bare.starts_with("__default__"), "{text}");
    assert!(carried.starts_with("enterprise"), "{text}");
}

#[tokio::test]
async fn propagation_can_be_turned_off() {
    let down = downstream(ws()).await;
    let up = upstream(ws(), client(ClientLayer::new().propagate(false)), down).await;
    assert_eq!(
        get_text(up, "/", "enterprise").await,
        "200 __default__ None"
    );
}

#[tokio::test]
async fn an_explicit_admission_and_a_hand_set_header_win() {
    let up_ws = ws();
    let down = downstream(ws()).await;
    let client = client(ClientLayer::new());
    let permit = up_ws.admit("free", 1.0).unwrap();
    let explicit = Admission::new(permit.tag(), 1.0, None);
    let enterprise = {
        let p = up_ws.admit("enterprise", 1.0).unwrap();
        Admission::new(p.tag(), 1.0, None)
    };
    let text = current::scope(enterprise, async {
        let mut req = Request::get(format!("http://{down}/whoami"))
            .body(Full::<Bytes>::default())
            .unwrap();
        req.extensions_mut().insert(explicit);
        let res = client.clone().oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let explicit_wins = String::from_utf8_lossy(&body).into_owned();
        let req = Request::get(format!("http://{down}/whoami"))
            .header("x-waitstate-tag", "batch")
            .body(Full::<Bytes>::default())
            .unwrap();
        let res = client.clone().oneshot(req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (explicit_wins, String::from_utf8_lossy(&body).into_owned())
    })
    .await;
    assert_eq!(text.0, "free None");
    assert_eq!(text.1, "batch None");
}

#[tokio::test]
async fn a_pushed_back_tag_is_answered_locally_until_the_time_is_up() {
    let down_ws = ws();
    let down = downstream(down_ws.clone()).await;
    let client = client(ClientLayer::new().throttling(false));
    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    down_ws.engine().set_remote_policy(Some(policy)).unwrap();
    let call = |tag: &'static str| {
        let req = Request::get(format!("http://{down}/whoami"))
            .header("x-waitstate-tag", tag)
            .body(Full::<Bytes>::default())
            .unwrap();
        client.clone().oneshot(req)
    };
    let res = call("free").await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.extensions().get::<LocalRejection>().is_none());
    let res = call("free").await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(matches!(
        res.extensions().get::<LocalRejection>(),
        Some(LocalRejection::BackingOff { .. })
    ));
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(
        down_ws.counters("free").unwrap().rejected_total(),
        1,
        "the second call never reached the server"
    );
    assert_eq!(call("enterprise").await.unwrap().status(), StatusCode::OK);
}
