//! The axum-tiers example answered over a real socket: a blocked tier gets 429 +
//! Retry-After + JSON, an important one passes, and `POST /search` weighs 100.

#[path = "../axum-tiers.rs"]
#[allow(dead_code)]
mod example;

mod support;

use std::net::SocketAddr;

use support::{assert_status, send};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use waitstate_core::{Policy, WaitState};

/// The example's engine and app, served on 127.0.0.1 (a free port) until aborted.
async fn start() -> (WaitState, SocketAddr, JoinHandle<std::io::Result<()>>) {
    let ws = example::waitstate().expect("axum-tiers.toml is valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, example::app(ws.clone())).into_future());
    (ws, addr, server)
}

#[tokio::test]
async fn blocked_tier_gets_429_with_retry_after_and_json() {
    let (ws, addr, server) = start().await;

    assert_status(&send(addr, "GET", "/", "free").await, 200);
    let whoami = send(addr, "GET", "/whoami", "pro").await;
    assert!(
        whoami.ends_with("tag pro (priority 50), weight 1\n"),
        "{whoami}"
    );

    // Block `free`, as the first rule (or a control plane) would.
    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    ws.engine().set_remote_policy(Some(policy)).unwrap();

    let res = send(addr, "GET", "/", "free").await;
    assert_status(&res, 429);
    assert!(res.contains("\r\nretry-after: 1\r\n"), "{res}");
    assert!(
        res.contains("\r\ncontent-type: application/json\r\n"),
        "{res}"
    );
    assert!(
        res.ends_with(
            r#"{"error":"rate_limited","reason":"tag_blocked","retryafter":1,"tag":"free"}"#
        ),
        "{res}"
    );
    assert_status(&send(addr, "GET", "/nope", "free").await, 429);
    assert_status(&send(addr, "GET", "/", "enterprise").await, 200);
    assert_status(&send(addr, "GET", "/healthz", "free").await, 200);
    assert_eq!(ws.in_flight(), 0);
    server.abort();
}

#[tokio::test]
async fn search_weighs_100_by_its_route() {
    let (ws, addr, server) = start().await;

    let mut policy = Policy::default();
    policy.global_max_weight = 50.0;
    ws.engine().set_remote_policy(Some(policy)).unwrap();

    let res = send(addr, "POST", "/search", "enterprise").await;
    assert_status(&res, 429);
    assert!(res.contains(r#""reason":"over_weight""#), "{res}");
    assert_status(&send(addr, "GET", "/", "enterprise").await, 200);
    // The handler-level gate of `/export` (weight 50) answers the same way.
    let res = send(addr, "POST", "/export", "enterprise").await;
    assert_status(&res, 200);
    policy = Policy::default();
    policy.global_max_weight = 10.0;
    ws.engine().set_remote_policy(Some(policy)).unwrap();
    let res = send(addr, "POST", "/export", "enterprise").await;
    assert_status(&res, 429);
    assert!(res.contains(r#""tag":"exports""#), "{res}");
    server.abort();
}
