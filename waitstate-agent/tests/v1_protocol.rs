//! The v1 agent protocol as the published SDKs send it: `/gate`, `/report-latency`,
//! `/report-error`, `/report-metric`.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TIERS, agent, block, post, send};

#[tokio::test(start_paused = true)]
async fn gate_answers_v1_fields_and_reasons() {
    let a = agent(TIERS);
    let r = post(&a, "/gate", r#"{"tag":"free","weight":2.0}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        serde_json::json!({"allowed": true, "reason": "allowed"})
    );

    block(&a, "free");
    let r = post(&a, "/gate", r#"{"tag":"free","weight":2.0}"#).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "v1 clients read the body of a 200"
    );
    let j = r.json();
    assert_eq!(j["allowed"], false);
    assert_eq!(j["reason"], "tag_blocked");
    assert_eq!(j["tag"], "free");
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = post(&a, "/gate", r#"{"tag":"enterprise","weight":2.0}"#).await;
    assert_eq!(r.json()["allowed"], true);

    // Counted once per gate.
    let free = a.waitstate().counters("free").unwrap();
    assert_eq!((free.admitted, free.rejected_total()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn null_tag_is_the_default_and_null_weight_is_over_weight() {
    let a = agent(TIERS);
    // What the Python SDK sends for `gate(None, None)`.
    let r = post(&a, "/gate", r#"{"tag":null,"weight":1.0}"#).await;
    assert_eq!(r.json()["allowed"], true);
    assert_eq!(a.waitstate().counters("__default__").unwrap().admitted, 1);
    // ... and for a NaN or infinite weight (JSON has neither).
    let r = post(&a, "/gate", r#"{"tag":"free","weight":null}"#).await;
    assert_eq!(r.json()["reason"], "over_weight");
    let r = post(&a, "/gate", r#"{"tag":"free","weight":-1.0}"#).await;
    assert_eq!(r.json()["reason"], "over_weight");
}

#[tokio::test(start_paused = true)]
async fn our_reasons_map_to_the_nearest_v1_reason() {
    let a = agent(TIERS);
    let mut p = waitstate_core::Policy::default();
    p.tag_throttles.insert("pro".into(), 0.0);
    a.waitstate().engine().set_remote_policy(Some(p)).unwrap();
    let r = post(&a, "/gate", r#"{"tag":"pro","weight":1.0}"#).await;
    let j = r.json();
    assert_eq!(j["allowed"], false);
    assert_eq!(j["reason"], "tag_blocked", "{j}");
    assert_eq!(j["detail"], "throttled");
}

#[tokio::test(start_paused = true)]
async fn tag_and_weight_from_headers_when_the_body_has_none() {
    let a = agent(TIERS);
    block(&a, "free");
    let req = Request::post("/gate")
        .header("x-waitstate-tag", "free")
        .body(Body::empty())
        .unwrap();
    let r = send(&a, req).await;
    assert_eq!(r.json()["reason"], "tag_blocked");
    // The body wins over the header.
    let req = Request::post("/gate")
        .header("x-waitstate-tag", "free")
        .body(Body::from(r#"{"tag":"pro"}"#))
        .unwrap();
    assert_eq!(send(&a, req).await.json()["allowed"], true);
    let req = Request::post("/gate")
        .header("x-waitstate-weight", "lots")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&a, req).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_a_4xx_never_a_panic() {
    let a = agent(TIERS);
    for (path, body) in [
        ("/gate", "{"),
        ("/gate", "[]"),
        ("/gate", r#"{"tag":7}"#),
        ("/gate", r#"{"weight":"2"}"#),
        ("/gate", "\u{0}\u{ff}"),
        ("/report-latency", r#"{"ms":"fast"}"#),
        ("/report-error", r#"{"tag":[1]}"#),
        ("/report-metric", r#"{"tag":"free"}"#),
        ("/v1/admit", r#"{"ttlMs":-1}"#),
        ("/v1/finish", "{}"),
        ("/graphql/coprocessor", r#"{"version":1}"#),
    ] {
        let r = post(&a, path, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            r.body
        );
        assert!(r.json()["message"].is_string());
    }
    for (path, body) in [
        ("/report-latency", r#"{"ms":null,"tag":"a"}"#),
        ("/report-latency", r#"{"ms":-5.0,"tag":"a"}"#),
        (
            "/report-metric",
            r#"{"metric":"latency","tag":null,"value":1.0}"#,
        ),
        (
            "/report-metric",
            r#"{"metric":"Bad Name","tag":null,"value":1.0}"#,
        ),
        (
            "/report-metric",
            r#"{"metric":"queue_depth","tag":null,"value":null}"#,
        ),
        ("/v1/finish", r#"{"token":"zz"}"#),
        ("/v1/finish", r#"{"token":"1","outcome":"meh"}"#),
    ] {
        let r = post(&a, path, body).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path} {body}: {}",
            r.body
        );
    }
    let r = post(&a, "/nope", "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let big = format!(r#"{{"tag":"{}"}}"#, "x".repeat(300 * 1024));
    assert_eq!(
        post(&a, "/gate", &big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test(start_paused = true)]
async fn reports_are_accepted_and_a_latency_rule_sheds_free_not_enterprise() {
    let a = agent(TIERS);
    for _ in 0..20 {
        let r = post(&a, "/report-latency", r#"{"ms":900.0,"tag":"free"}"#).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let r = post(&a, "/report-latency", r#"{"ms":20.0,"tag":"enterprise"}"#).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
    }
    let r = post(
        &a,
        "/report-metric",
        r#"{"metric":"queue_depth","tag":"free","value":7.0}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        post(&a, "/gate", r#"{"tag":"free","weight":1.0}"#)
            .await
            .json()["allowed"],
        true
    );
    // Past the pairing window the reports are recorded; the next tick fires the rule.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(a.pending_reports(), 0);
    let free = a.waitstate().counters("free").unwrap();
    assert_eq!((free.completed, free.errors), (20, 0));
    let r = post(&a, "/gate", r#"{"tag":"free","weight":1.0}"#).await;
    assert_eq!(r.json()["reason"], "tag_blocked", "{}", r.body);
    let r = post(&a, "/gate", r#"{"tag":"enterprise","weight":1.0}"#).await;
    assert_eq!(r.json()["allowed"], true);
}

#[tokio::test(start_paused = true)]
async fn an_error_report_marks_the_latency_report_before_it_failed() {
    let a = agent(TIERS);
    // What the SDKs' middlewares send for a 5xx: the latency, then the error.
    post(&a, "/report-latency", r#"{"ms":40.0,"tag":"pro"}"#).await;
    post(&a, "/report-error", r#"{"tag":"pro"}"#).await;
    // A success, alone.
    post(&a, "/report-latency", r#"{"ms":30.0,"tag":"pro"}"#).await;
    // An error without a latency report.
    post(&a, "/report-error", r#"{"tag":null}"#).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pro = a.waitstate().counters("pro").unwrap();
    assert_eq!(
        (pro.completed, pro.errors),
        (2, 1),
        "one request, one failure"
    );
    assert_eq!(pro.latency_sum_us, 70_000);
    let d = a.waitstate().counters("__default__").unwrap();
    assert_eq!((d.completed, d.errors), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn reports_for_a_blocked_tag_are_recorded_without_an_admission() {
    // A blocked tag's latency is what tells the rule it can release: it must be recorded,
    // and a report is not one more request offered.
    let a = agent(TIERS);
    block(&a, "free");
    post(&a, "/report-latency", r#"{"ms":40.0,"tag":"free"}"#).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let free = a.waitstate().counters("free").unwrap();
    assert_eq!((free.completed, free.admitted), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_distinct_tags_stays_bounded() {
    let a = agent("tag_cap = 64\n");
    for i in 0..5_000 {
        let body = format!(r#"{{"ms":1.0,"tag":"t{i}"}}"#);
        post(&a, "/report-latency", &body).await;
        let body = format!(r#"{{"tag":"g{i}","weight":1.0}}"#);
        post(&a, "/gate", &body).await;
    }
    assert!(a.pending_reports() <= 5_000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(a.pending_reports(), 0);
    // Tags the clients invent take no slot: they count as the default tag.
    assert_eq!(
        a.waitstate().engine().tags().len(),
        2,
        "__default__ and __overflow__"
    );
    let default = a.waitstate().counters("__default__").unwrap();
    assert_eq!(
        (default.admitted, default.completed),
        (5_000, 5_000),
        "{default:?}"
    );
}
