//! The extended form (admission tokens), the authorization endpoint and the Apollo
//! Router coprocessor.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{TIERS, agent, block, post, send};
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn a_token_holds_a_slot_until_finished_and_the_agent_measures_latency() {
    let a = agent(TIERS);
    let r = post(&a, "/v1/admit", r#"{"tag":"pro"}"#).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["tag"], "pro");
    assert_eq!(a.waitstate().in_flight(), 1);
    assert_eq!(a.live_tokens(), 1);

    tokio::time::sleep(Duration::from_millis(120)).await;
    let r = post(
        &a,
        "/v1/finish",
        &json!({"token": token, "outcome": "error"}).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(a.waitstate().in_flight(), 0);
    let pro = a.waitstate().counters("pro").unwrap();
    assert_eq!((pro.admitted, pro.completed, pro.errors), (1, 1, 1));
    assert_eq!(
        pro.latency_sum_us, 120_000,
        "measured by the agent, from admission"
    );

    // Finished once only.
    let r = post(&a, "/v1/finish", &json!({ "token": token }).to_string()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn a_token_whose_client_died_expires_as_cancelled() {
    let a = agent(&format!("{TIERS}\n[agent]\ntoken_ttl = \"2s\"\n"));
    let r = post(&a, "/v1/admit", r#"{"tag":"free","ttlMs":60000}"#).await;
    assert_eq!(r.json()["ttlMs"], 2000, "capped by token_ttl");
    let token = r.json()["token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert_eq!(a.live_tokens(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(a.live_tokens(), 0);
    assert_eq!(a.expired_tokens(), 1);
    assert_eq!(a.waitstate().in_flight(), 0);
    let free = a.waitstate().counters("free").unwrap();
    assert_eq!(
        (
            free.completed,
            free.errors,
            free.latency_sum_us,
            free.cancelled
        ),
        (0, 0, 0, 1),
        "neither a success nor an error, no latency: {free:?}"
    );
    let r = post(&a, "/v1/finish", &json!({ "token": token }).to_string()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn tokens_are_bounded() {
    let a = agent("[admission]\nadaptive = false\n[agent]\nmax_tokens = 3\n");
    for _ in 0..3 {
        assert_eq!(post(&a, "/v1/admit", "").await.status, StatusCode::OK);
    }
    let r = post(&a, "/v1/admit", "").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.json()["reason"], "concurrency_limited");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(a.live_tokens(), 3);
    assert_eq!(a.waitstate().in_flight(), 3, "the refused one took no slot");
}

#[tokio::test(start_paused = true)]
async fn a_refused_admission_is_a_429_with_retry_after() {
    let a = agent(TIERS);
    block(&a, "free");
    let req = Request::post("/v1/admit")
        .header("x-waitstate-tag", "free")
        .body(Body::empty())
        .unwrap();
    let r = send(&a, req).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["reason"], "tag_blocked");
    assert_eq!(a.live_tokens(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_pool_makes_admit_wait_then_refuse_by_the_deadline() {
    let a =
        agent("[limits]\nconcurrency = 1\n[admission]\nadaptive = false\nmax_wait = \"50ms\"\n");
    let first = post(&a, "/v1/admit", "").await;
    assert_eq!(first.status, StatusCode::OK);
    let waiting = {
        let a = a.clone();
        tokio::spawn(async move { post(&a, "/v1/admit", "").await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let token = first.json()["token"].as_str().unwrap().to_owned();
    post(&a, "/v1/finish", &json!({ "token": token }).to_string()).await;
    let second = waiting.await.unwrap();
    assert_eq!(second.status, StatusCode::OK, "handed the freed slot");

    let third = post(&a, "/v1/admit", "").await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.json()["reason"], "concurrency_limited");
}

const AUTHZ: &str = r#"
[tags]
enterprise = 100
free = 10
[agent.authz]
paths = { "/api/search" = "free", "/api" = "enterprise" }
"#;

#[tokio::test(start_paused = true)]
async fn authz_allows_with_200_and_sheds_with_429_and_retry_after() {
    let a = agent(AUTHZ);
    let get = |uri: &str, tag: Option<&str>| {
        let mut b = Request::get(uri);
        if let Some(t) = tag {
            b = b.header("x-waitstate-tag", t);
        }
        b.body(Body::empty()).unwrap()
    };
    let r = send(&a, get("/authz", Some("free"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-waitstate-tag"), Some("free"));

    block(&a, "free");
    let r = send(&a, get("/authz", Some("free"))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["reason"], "tag_blocked");
    // Envoy appends the original path to the path prefix.
    let r = send(&a, get("/authz/api/search?q=shoes", None)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = send(&a, get("/authz/api/orders", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-waitstate-tag"), Some("enterprise"));
    // nginx sends the original URI in a header.
    let req = Request::get("/authz")
        .header("x-original-uri", "/api/search?q=1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&a, req).await.status, StatusCode::TOO_MANY_REQUESTS);
    // Any method (Envoy forwards the original one).
    let req = Request::delete("/authz/api/x").body(Body::empty()).unwrap();
    assert_eq!(send(&a, req).await.status, StatusCode::OK);
}

const GRAPHQL: &str = r#"
[tags]
enterprise = 100
free = 10
[agent.graphql]
operations = { SearchProducts = "free", PlaceOrder = "enterprise" }
"#;

fn supergraph_request(id: &str, operation: Option<&str>, query: &str) -> String {
    json!({
        "version": 1,
        "stage": "SupergraphRequest",
        "control": "continue",
        "id": id,
        "headers": {"content-type": ["application/json"]},
        "body": {"query": query, "operationName": operation, "variables": {}},
        "context": {"entries": {}},
        "method": "POST"
    })
    .to_string()
}

#[tokio::test(start_paused = true)]
async fn coprocessor_tags_by_operation_holds_the_request_and_reports_latency() {
    let a = agent(GRAPHQL);
    let r = post(
        &a,
        "/graphql/coprocessor",
        &supergraph_request("id-1", Some("SearchProducts"), "query SearchProducts { p }"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["control"], "continue");
    assert_eq!(
        (j["version"].as_i64(), j["stage"].as_str(), j["id"].as_str()),
        (Some(1), Some("SupergraphRequest"), Some("id-1"))
    );
    assert!(
        j.get("body").is_none() && j.get("headers").is_none(),
        "the request is left as is: {j}"
    );
    assert_eq!(a.live_tokens(), 1);
    assert_eq!(a.waitstate().counters("free").unwrap().in_flight, 1);

    tokio::time::sleep(Duration::from_millis(80)).await;
    let response = json!({
        "version": 1, "stage": "SupergraphResponse", "id": "id-1", "statusCode": 200,
        "body": {"data": {"p": 1}}, "hasNext": false
    });
    let r = post(&a, "/graphql/coprocessor", &response.to_string()).await;
    let j = r.json();
    assert_eq!(j["stage"], "SupergraphResponse");
    assert!(
        j.get("control").is_none(),
        "a control would reset the response's status: {j}"
    );
    assert_eq!(a.live_tokens(), 0);
    let free = a.waitstate().counters("free").unwrap();
    assert_eq!(
        (free.completed, free.errors, free.latency_sum_us),
        (1, 0, 80_000)
    );
}

#[tokio::test(start_paused = true)]
async fn coprocessor_breaks_with_429_and_a_graphql_error_when_shed() {
    let a = agent(GRAPHQL);
    block(&a, "free");
    let r = post(
        &a,
        "/graphql/coprocessor",
        &supergraph_request(
            "id-2",
            None,
            "query SearchProducts($q: String) { p(q: $q) }",
        ),
    )
    .await;
    let j = r.json();
    assert_eq!(j["control"], json!({"break": 429}), "{j}");
    assert_eq!(
        j["body"]["errors"][0]["extensions"]["reason"],
        "tag_blocked"
    );
    assert_eq!(j["body"]["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(j["headers"]["retry-after"], json!(["1"]));
    assert_eq!(a.live_tokens(), 0);
    // Another operation passes.
    let r = post(
        &a,
        "/graphql/coprocessor",
        &supergraph_request("id-3", Some("PlaceOrder"), "mutation PlaceOrder { o }"),
    )
    .await;
    assert_eq!(r.json()["control"], "continue");
}

#[tokio::test(start_paused = true)]
async fn coprocessor_router_stage_reads_the_raw_body_and_5xx_is_a_failure() {
    let a = agent(GRAPHQL);
    let raw = json!({"query": "query PlaceOrder { o }"}).to_string();
    let req = json!({
        "version": 1, "stage": "RouterRequest", "control": "continue", "id": "r-1",
        "headers": {}, "body": raw, "method": "POST", "path": "/"
    });
    let r = post(&a, "/graphql/coprocessor", &req.to_string()).await;
    assert_eq!(r.json()["control"], "continue");
    assert_eq!(a.waitstate().counters("enterprise").unwrap().in_flight, 1);
    let resp = json!({"version": 1, "stage": "RouterResponse", "id": "r-1", "statusCode": 503, "body": "{}"});
    post(&a, "/graphql/coprocessor", &resp.to_string()).await;
    let e = a.waitstate().counters("enterprise").unwrap();
    assert_eq!((e.in_flight, e.completed, e.errors), (0, 1, 1));
    // Other stages pass through.
    let sub = json!({"version": 1, "stage": "SubgraphRequest", "id": "r-1", "serviceName": "x"});
    let r = post(&a, "/graphql/coprocessor", &sub.to_string()).await;
    assert_eq!(r.json()["control"], "continue");
}

#[tokio::test(start_paused = true)]
async fn an_unnamed_operation_takes_the_header_tag() {
    let a = agent(GRAPHQL);
    block(&a, "free");
    let req = json!({
        "version": 1, "stage": "SupergraphRequest", "id": "h-1",
        "headers": {"X-WaitState-Tag": ["free"]},
        "body": {"query": "{ anonymous }"}
    });
    let r = post(&a, "/graphql/coprocessor", &req.to_string()).await;
    assert_eq!(r.json()["control"], json!({"break": 429}));
}
