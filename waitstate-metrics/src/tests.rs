//! What a scrape says about an engine, read back through the Prometheus text parser.

use std::time::Duration;

use waitstate_core::{Demand, Policy, WaitState};

use super::*;

fn engine() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .rule("when p95_latency of free > 500ms then block free")
        .build()
        .unwrap()
}

/// Parse `text` strictly enough to fail on a malformed line.
#[track_caller]
fn parse(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("the text format parses")
}

#[track_caller]
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"));
    match &sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn counters_reasons_and_latency_match_the_engine() {
    let ws = engine();
    for ms in [3, 30, 300] {
        let ticket = ws
            .engine()
            .admit(&Demand::new("enterprise"), Duration::ZERO)
            .unwrap();
        ticket.finish(Duration::from_millis(ms), false);
    }
    let failed = ws
        .engine()
        .admit(&Demand::new("free"), Duration::ZERO)
        .unwrap();
    failed.finish(Duration::from_millis(2), true);
    let mut blocked = Policy::default();
    blocked.tag_max_weights.insert("free".into(), 0.0);
    ws.engine().set_remote_policy(Some(blocked)).unwrap();
    for _ in 0..4 {
        assert!(ws.admit("free", 1.0).is_err());
    }
    let held = ws.admit("enterprise", 2.5).unwrap();

    let text = Exporter::new(&ws).render();
    let scrape = parse(&text);
    let ent = [("tag", "enterprise")];
    assert_eq!(
        value(&scrape, "waitstate_requests_admitted_total", &ent),
        4.0
    );
    assert_eq!(
        value(
            &scrape,
            "waitstate_requests_rejected_total",
            &[("tag", "free"), ("reason", "tag_blocked")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &scrape,
            "waitstate_requests_rejected_total",
            &[("tag", "free"), ("reason", "throttled")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &scrape,
            "waitstate_requests_ended_total",
            &[("tag", "free"), ("ending", "error")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "waitstate_requests_ended_total",
            &[("tag", "enterprise"), ("ending", "success")]
        ),
        3.0
    );
    assert_eq!(value(&scrape, "waitstate_requests_in_flight", &ent), 1.0);
    assert_eq!(value(&scrape, "waitstate_admitted_weight_total", &ent), 5.5);

    let histogram = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "waitstate_request_duration_seconds"
                && s.labels.get("tag") == Some("enterprise")
        })
        .expect("the histogram");
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("{histogram:?}");
    };
    let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
    // 3 ms, 30 ms, 300 ms: one below 4.096 ms, two below 32.768 ms, three below 524.288 ms.
    assert_eq!(at(0.004096), 1.0);
    assert_eq!(at(0.002048), 0.0);
    assert_eq!(at(0.032768), 2.0);
    assert_eq!(at(0.262144), 2.0);
    assert_eq!(at(0.524288), 3.0);
    assert_eq!(at(f64::INFINITY), 3.0);
    assert!(
        text.contains("waitstate_request_duration_seconds_count{tag=\"enterprise\"} 3\n"),
        "{text}"
    );
    assert!(
        text.contains("waitstate_request_duration_seconds_sum{tag=\"enterprise\"} 0.333\n"),
        "{text}"
    );
    drop(held);
}

#[tokio::test(flavor = "current_thread")]
async fn rules_and_admission_are_exported() {
    let ws = engine();
    let text = Exporter::new(&ws).render();
    let scrape = parse(&text);
    let rule = "when p95_latency of free > 500ms then block free";
    assert_eq!(
        value(
            &scrape,
            "waitstate_rule_state",
            &[("rule", rule), ("state", "idle")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            "waitstate_rule_state",
            &[("rule", rule), ("state", "firing")]
        ),
        0.0
    );
    assert_eq!(
        value(&scrape, "waitstate_rule_release_step", &[("rule", rule)]),
        0.0
    );
    let a = ws.admission();
    assert_eq!(
        value(&scrape, "waitstate_admission_limit", &[]),
        a.limit as f64
    );
    for level in &a.levels {
        let p = level.priority.to_string();
        assert_eq!(
            value(&scrape, "waitstate_queue_waiting", &[("priority", &p)]),
            level.waiting as f64
        );
        assert_eq!(
            value(&scrape, "waitstate_queued_total", &[("priority", &p)]),
            0.0
        );
    }
    assert_eq!(a.levels.len(), 3, "enterprise, free and the default level");
    // No control plane: no control metrics.
    assert!(!text.contains("waitstate_control_"), "{text}");
}

#[tokio::test(flavor = "current_thread")]
async fn label_values_are_escaped_and_tags_are_capped() {
    let ws = WaitState::builder()
        .tag("free", 10)
        .tag_cap(4)
        .build()
        .unwrap();
    drop(ws.admit("a\"b\\c", 1.0));
    for i in 0..100 {
        drop(ws.admit(&format!("user-{i}"), 1.0));
    }
    let text = Exporter::new(&ws).render();
    assert!(text.contains("tag=\"a\\\"b\\\\c\""), "{text}");
    let scrape = parse(&text);
    let tags: std::collections::BTreeSet<&str> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "waitstate_requests_admitted_total")
        .filter_map(|s| s.labels.get("tag"))
        .collect();
    assert!(tags.len() <= 5, "{tags:?}");
    assert!(tags.contains(waitstate_core::OVERFLOW_TAG), "{tags:?}");
    let admitted: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "waitstate_requests_admitted_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(admitted, 101.0, "every request counted somewhere");
}

#[tokio::test(flavor = "current_thread")]
async fn openmetrics_ends_with_eof() {
    let ws = engine();
    let text = Exporter::new(&ws).render_openmetrics();
    assert!(text.ends_with("# EOF\n"));
    assert!(
        text.contains("# TYPE waitstate_requests_admitted counter\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "prints a scrape: cargo test -p waitstate-metrics print_a_scrape -- --ignored --nocapture"]
async fn print_a_scrape() {
    let ws = engine();
    drop(ws.admit("free", 1.0));
    println!("{}", Exporter::new(&ws).render());
}
