//! A running service, gated and serving its metrics, scraped over HTTP and read back with a
//! Prometheus text-format parser: the numbers are the ones the clients saw.

use std::collections::BTreeMap;

use axum::Router;
use axum::routing::get;
use prometheus_parse::{Scrape, Value};
use tokio::net::TcpListener;
use waitstate_axum::{GateLayer, HeaderTagger, Policy, WaitState};

/// The demo's shape: tiers by header, a rule on free's latency, the gate on the backend's
/// route, the metrics route beside it (not gated).
fn app(ws: &WaitState) -> Router {
    Router::new()
        .route("/", get(|| async { "ok\n" }))
        .layer(GateLayer::new(ws.clone(), HeaderTagger::new()))
        .route("/metrics", waitstate_metrics::axum_route(ws))
}

/// Every sample line is `name{labels} value` with a finite or infinite number, every name
/// was declared by a `# TYPE` line before it, and no series appears twice.
#[track_caller]
fn check_lines(text: &str) {
    let mut declared: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        assert!(!v.is_nan(), "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            declared.iter().any(|d| name == d
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(d))),
            "{name} has no # TYPE before it"
        );
        assert!(seen.insert(series.to_owned()), "{series} twice");
    }
}

fn counter(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a number"),
        })
        .sum()
}

#[tokio::test(flavor = "current_thread")]
async fn a_running_service_scrapes_cleanly_and_matches_what_clients_saw() {
    let ws = WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .rule("when p95_latency of free > 500ms then block free")
        .build()
        .unwrap();
    // free at half rate, as a rule or a control plane would set it.
    let mut policy = Policy::default();
    policy.tag_throttles.insert("free".into(), 50.0);
    ws.engine().set_remote_policy(Some(policy)).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app(&ws)).await });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/");

    let mut seen: BTreeMap<(&str, u16), u32> = BTreeMap::new();
    for i in 0..60 {
        let tag = if i % 3 == 0 { "enterprise" } else { "free" };
        let res = client
            .get(&url)
            .header("x-waitstate-tag", tag)
            .send()
            .await
            .unwrap();
        *seen.entry((tag, res.status().as_u16())).or_default() += 1;
    }
    assert_eq!(seen.get(&("enterprise", 200)), Some(&20), "{seen:?}");
    let free_ok = f64::from(seen.get(&("free", 200)).copied().unwrap_or(0));
    let free_shed = f64::from(seen.get(&("free", 429)).copied().unwrap_or(0));
    assert!(free_ok > 0.0 && free_shed > 0.0, "{seen:?}");

    let res = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        waitstate_metrics::CONTENT_TYPE
    );
    let text = res.text().await.unwrap();
    check_lines(&text);
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();

    let admitted = "waitstate_requests_admitted_total";
    let rejected = "waitstate_requests_rejected_total";
    assert_eq!(counter(&scrape, admitted, &[("tag", "enterprise")]), 20.0);
    assert_eq!(counter(&scrape, admitted, &[("tag", "free")]), free_ok);
    assert_eq!(
        counter(
            &scrape,
            rejected,
            &[("tag", "free"), ("reason", "throttled")]
        ),
        free_shed
    );
    assert_eq!(counter(&scrape, rejected, &[("tag", "enterprise")]), 0.0);
    // The metrics route is not gated: no scrape is counted as a request.
    assert_eq!(counter(&scrape, admitted, &[]), 20.0 + free_ok);
    // Every request that got its answer has ended, successfully, and is in the histogram.
    assert_eq!(
        counter(
            &scrape,
            "waitstate_requests_ended_total",
            &[("ending", "success")]
        ),
        20.0 + free_ok
    );
    assert_eq!(counter(&scrape, "waitstate_requests_in_flight", &[]), 0.0);
    let mut histograms = 0;
    for s in &scrape.samples {
        if let Value::Histogram(buckets) = &s.value {
            histograms += 1;
            let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
            assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
            let inf = buckets.last().unwrap();
            assert_eq!(inf.less_than, f64::INFINITY);
            let tag = s.labels.get("tag").unwrap();
            let want = counter(&scrape, admitted, &[("tag", tag)]);
            assert_eq!(inf.count, want, "{tag}: histogram count vs admitted");
        }
    }
    assert!(histograms >= 2, "one histogram per tag with traffic");
    let rule = "when p95_latency of free > 500ms then block free";
    assert_eq!(
        counter(
            &scrape,
            "waitstate_rule_state",
            &[("rule", rule), ("state", "idle")]
        ),
        1.0
    );
    assert!(counter(&scrape, "waitstate_admission_limit", &[]) > 0.0);
    server.abort();
}

#[actix_web::test]
async fn the_actix_resource_serves_the_same_text() {
    use actix_web::{App, test};
    let ws = WaitState::builder().tag("free", 10).build().unwrap();
    drop(ws.admit("free", 1.0));
    let app =
        test::init_service(App::new().service(waitstate_metrics::actix_resource("/metrics", &ws)))
            .await;
    let res = test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        waitstate_metrics::CONTENT_TYPE
    );
    let body = test::read_body(res).await;
    let text = std::str::from_utf8(&body).unwrap();
    check_lines(text);
    assert!(
        text.contains("waitstate_requests_admitted_total{tag=\"free\"} 1\n"),
        "{text}"
    );
}
