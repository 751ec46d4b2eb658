//! The actix-tiers example answered over a real socket: a blocked tier gets 429 +
//! Retry-After + JSON, an important one passes, and `POST /search` weighs 100.

#[path = "../actix-tiers.rs"]
#[allow(dead_code)]
mod example;

mod support;

use actix_web::HttpServer;
use support::{assert_status, send};
use waitstate_core::Policy;

#[actix_web::test]
async fn blocked_tier_gets_429_with_retry_after_and_json() {
    let ws = example::waitstate().expect("actix-tiers.toml is valid");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app_ws = ws.clone();
    let server = HttpServer::new(move || example::app(app_ws.clone()))
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    assert_status(&send(addr, "GET", "/", "free").await, 200);
    let whoami = send(addr, "GET", "/whoami", "pro").await;
    assert!(
        whoami.ends_with("tag pro (priority 50), weight 1\n"),
        "{whoami}"
    );

    // Block `free`, as the first rule (or a control plane) would; cap any request at 50.
    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    policy.global_max_weight = 50.0;
    ws.engine().set_remote_policy(Some(policy)).unwrap();

    let res = send(addr, "GET", "/", "free").await;
    assert_status(&res, 429);
    assert!(res.contains("\r\nretry-after: 1\r\n"), "{res}");
    assert!(
        res.contains("\r\ncontent-type: application/json\r\n"),
        "{res}"
    );
    let body = res.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"error": "rate_limited", "reason": "tag_blocked", "tag": "free", "retryafter": 1})
    );

    // The route sets the weight: `POST /search` costs 100, over the cap of 50.
    assert_status(&send(addr, "GET", "/", "pro").await, 200);
    let res = send(addr, "POST", "/search", "pro").await;
    assert_status(&res, 429);
    assert!(res.contains(r#""reason":"over_weight""#), "{res}");

    assert_status(&send(addr, "GET", "/", "enterprise").await, 200);
    assert_status(&send(addr, "GET", "/healthz", "free").await, 200);
    handle.stop(false).await;
}
