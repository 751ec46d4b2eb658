//! The `reqwest-middleware` middleware against a real server on 127.0.0.1: the current
//! request's tag travels, a hinted 429 is retried within the budget, an unhinted one not.
#![cfg(feature = "reqwest")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use reqwest_middleware::ClientBuilder;
use tokio::net::TcpListener;
use waitstate_core::WaitState;
use waitstate_core::tagger::current;
use waitstate_tower::Admission;
use waitstate_tower::client::{ClientMiddleware, RetryPolicy};

/// Answers the first `refuse` calls with 429 (and `retry-after: 0` when `hint`), then
/// echoes the tag header. Counts calls.
async fn server(refuse: usize, hint: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/",
            get(
                move |State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap| async move {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    let tag = headers
                        .get("x-waitstate-tag")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    let mut h = HeaderMap::new();
                    if n < refuse {
                        if hint {
                            h.insert("retry-after", "0".parse().unwrap());
                        }
                        return (StatusCode::TOO_MANY_REQUESTS, h, String::new());
                    }
                    (StatusCode::OK, h, tag)
                },
            ),
        )
        .with_state(calls.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, calls)
}

fn enterprise() -> Admission {
    let ws = WaitState::builder().tag("enterprise", 100).build().unwrap();
    let permit = ws.admit("enterprise", 1.0).unwrap();
    Admission::new(permit.tag(), 1.0, None)
}

#[tokio::test]
async fn carries_the_tag_and_retries_a_hinted_429() {
    let (addr, calls) = server(1, true).await;
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(ClientMiddleware::new().retry(RetryPolicy::new()))
        .build();
    let res = current::scope(enterprise(), client.get(format!("http://{addr}/")).send())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "enterprise");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry");
}

#[tokio::test]
async fn an_unhinted_429_is_not_retried_and_no_scope_no_tag() {
    let (addr, calls) = server(1, false).await;
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(ClientMiddleware::new().retry(RetryPolicy::new()))
        .build();
    let res = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let res = client.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(
        res.text().await.unwrap(),
        "none",
        "outside a gate, nothing is sent"
    );
}

#[tokio::test]
async fn an_explicit_admission_is_carried() {
    let (addr, _calls) = server(0, false).await;
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(ClientMiddleware::new())
        .build();
    let res = client
        .get(format!("http://{addr}/"))
        .with_extension(enterprise())
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "enterprise");
}
