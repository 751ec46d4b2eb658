//! The v1 endpoints' refusals: wrong key, bad signature, stale timestamp, replay, oversized
//! or malformed body, expired or foreign token. Each gets the right 4xx, nothing is stored
//! and nothing is leaked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use tokio::net::TcpListener;
use waitstate_control::{AppState, ControlConfig, ControlServer};
use waitstate_core::wire;

const NOW_MS: u64 = 1_700_000_000_000;
const PK: &str = "pk_test_1";
const SK: &str = "sk_test_1_secret";
const ORG: &str = "acme";

/// One org with one key pair, small bodies, a 60 s skew and 10 min tokens.
const CONFIG: &str = r#"
[tags]
free = 10

[server]
listen = "127.0.0.1:0"
max_body_bytes = 4096
skew = "60s"
token_ttl = "10m"

[[keys]]
publish_key = "pk_test_1"
secret_key = "sk_test_1_secret"
org_id = "acme"
"#;

async fn server_with_clock() -> (ControlServer, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(NOW_MS));
    let c = clock.clone();
    let config = ControlConfig::from_toml_str(CONFIG).unwrap();
    let state =
        AppState::with_wall_clock(config, Box::new(move || c.load(Ordering::Relaxed))).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (ControlServer::serve(listener, state), clock)
}

fn pulse_body(instance: &str) -> String {
    format!(
        r#"{{"instanceId":"{instance}","usageDelta":3,"bouncedUnits":0,"metrics":{{"latency":1.0,"errors":0}},"tagMetrics":[{{"tag":"free","latency":1.0,"count":3,"latencyBuckets":[3,0,0,0,0,0,0,0]}}],"ts":{NOW_MS}}}"#
    )
}

async fn post_pulse(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    secret: &str,
    ts: u64,
    body: &str,
) -> (StatusCode, String) {
    let ts = ts.to_string();
    let sig = wire::sign(secret.as_bytes(), body.as_bytes(), &ts);
    let r = http
        .post(format!("{url}/v1/pulse"))
        .header(wire::HEADER_ID, key)
        .header(wire::HEADER_TIMESTAMP, ts)
        .header(wire::HEADER_SIGNATURE, sig)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test]
async fn pulses_are_authenticated_fresh_unique_and_bounded() {
    let (server, _clock) = server_with_clock().await;
    let url = server.url();
    let http = reqwest::Client::new();
    let body = pulse_body("i-1");

    // Unknown key, wrong secret: 401, and the answer does not tell which.
    let (s, text) = post_pulse(&http, &url, "pk_nope", SK, NOW_MS, &body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s2, text2) = post_pulse(&http, &url, PK, "wrong", NOW_MS, &body).await;
    assert_eq!(s2, StatusCode::UNAUTHORIZED);
    assert_eq!(text, text2);
    assert!(!text.contains(SK) && !text.contains(PK));
    // Missing headers.
    let r = http
        .post(format!("{url}/v1/pulse"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Stale (and future) timestamps.
    let (s, text) = post_pulse(&http, &url, PK, SK, NOW_MS - 61_000, &body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(text.contains("stale_timestamp"), "{text}");
    let (s, _) = post_pulse(&http, &url, PK, SK, NOW_MS + 61_000, &body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Oversized body: 413 before anything is read into the fleet.
    let big = format!(r#"{{"instanceId":"i-2","pad":"{}"}}"#, "x".repeat(5000));
    let (s, _) = post_pulse(&http, &url, PK, SK, NOW_MS, &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Signed but malformed: 400.
    for bad in [
        "not json",
        r#"{"instanceId":""}"#,
        r#"{"instanceId":"i","tagMetrics":[{"tag":""}]}"#,
        r#"{"instanceId":"i","tagMetrics":[{"tag":"free","latencyBuckets":[1,2]}]}"#,
    ] {
        let (s, _) = post_pulse(&http, &url, PK, SK, NOW_MS, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert!(server.state().shard(ORG, "").is_none(), "nothing stored");

    // A good one: 200 with a v1 policy document.
    let (s, text) = post_pulse(&http, &url, PK, SK, NOW_MS, &body).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let v1: waitstate_v1::types::Policy = serde_json::from_str(&text).unwrap();
    assert!(v1.global_max_weight.is_infinite());
    assert!(text.starts_with(r#"{"globalMaxWeight":null"#), "{text}");
    assert_eq!(v1.lease_duration_seconds, Some(300));
    // The same pulse again: a replay.
    let (s, _) = post_pulse(&http, &url, PK, SK, NOW_MS, &body).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let shard = server.state().shard(ORG, "").unwrap();
    assert_eq!(shard.pulses, 1);
    assert_eq!(shard.tags["free"].offered(), 3);

    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("waitstate_pulses_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"waitstate_refused_total{reason="replay"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"waitstate_instances{org="acme",site=""} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tag="free",outcome="admitted"} 3"#),
        "{metrics}"
    );
    assert!(!metrics.contains(SK));
    let health = http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tokens_expire_and_belong_to_one_org() {
    let (server, clock) = server_with_clock().await;
    let url = server.url();
    let http = reqwest::Client::new();
    let token = |secret: &'static str| {
        http.post(format!("{url}/v1/auth/token"))
            .json(&serde_json::json!({"publishKey": PK, "secretKey": secret}))
            .send()
    };
    assert_eq!(
        token("nope").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = http
        .post(format!("{url}/v1/auth/token"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let answer: waitstate_v1::types::AuthTokenResponse =
        token(SK).await.unwrap().json().await.unwrap();
    assert_eq!(answer.org_id, ORG);
    assert_eq!(answer.expires_at, NOW_MS + 600_000);
    let get = |org: &str, bearer: Option<String>| {
        let mut req = http.get(format!("{url}/v1/policy/{org}"));
        if let Some(b) = bearer {
            req = req.header("authorization", format!("Bearer {b}"));
        }
        req.send()
    };
    let ok = get(ORG, Some(answer.token.clone())).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let p: waitstate_v1::types::Policy = ok.json().await.unwrap();
    assert!(p.global_max_weight.is_infinite());
    assert_eq!(
        get(ORG, None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(ORG, Some("x.y.z".into())).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("other-org", Some(answer.token.clone()))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    // Ten minutes later the token is dead.
    clock.fetch_add(600_001, Ordering::Relaxed);
    assert_eq!(
        get(ORG, Some(answer.token)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    server.shutdown().await.unwrap();
}
