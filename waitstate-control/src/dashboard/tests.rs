//! The dashboard's unit tests.
use super::*;
use crate::ControlConfig;

#[test]
fn org_and_site_are_read_back_from_metrics_labels() {
    assert_eq!(
        parse_org_site(r#"org="acme",site="e\"u\\1"} 3"#),
        Some(("acme".into(), "e\"u\\1".into()))
    );
    assert_eq!(
        parse_org_site(r#"org="a",site=""} 0"#),
        Some(("a".into(), String::new()))
    );
    assert_eq!(parse_org_site(r#"org="a"#), None);
}

#[test]
fn the_query_is_percent_decoded() {
    let q = FleetQuery::parse("org=ac%20me&site=e%22u+1&page=2&per_page=x&bad=%&shards_page=1");
    assert_eq!(q.org.as_deref(), Some("ac me"));
    assert_eq!(q.site.as_deref(), Some("e\"u 1"));
    assert_eq!((q.page, q.per_page, q.shards_page), (2, None, 1));
    assert_eq!(percent_decode("%e2%82%ac%"), "\u{20ac}%");
    assert_eq!(percent_decode("%zz%4"), "%zz%4");
}

#[test]
fn pages_are_bounded() {
    let p = page_of((0..45).collect(), 2, 20);
    assert_eq!((p.total, p.items), (45, vec![40, 41, 42, 43, 44]));
    assert!(page_of((0..5).collect::<Vec<_>>(), 9, 20).items.is_empty());
}

#[test]
fn a_sample_keeps_the_busiest_tags_and_adds_the_rest() {
    let mut tags = BTreeMap::new();
    for i in 0..40u64 {
        let mut c = TagCounters::default();
        c.admitted = i * 10;
        c.latency.record_n_micros(1_000 * (i + 1), 10);
        tags.insert(format!("t{i:02}"), c);
    }
    let history = FleetHistory::default();
    let frame = history.frame(&tags, Instant::now(), 2.0);
    assert_eq!(frame.tags.len(), TAGS_PER_SAMPLE + 1);
    assert_eq!(&*frame.tags[0].tag, "t39");
    assert_eq!(frame.tags[0].admitted_rps, 195.0);
    let other = frame.tags.last().unwrap();
    assert_eq!(&*other.tag, OTHER);
    // t00..t15: (0 + 10 + ... + 150) / 2 s.
    assert_eq!(other.admitted_rps, 600.0);
    assert!(other.p95_ms.is_some());
}

/// `/dashboard/api/instances` as JSON.
async fn instances_json(state: &AppState, query: &str) -> serde_json::Value {
    let res = instances(state, &FleetQuery::parse(query)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Issue 18: the instance list is paged on the server, within bounds, whatever is asked;
/// each instance shows its last pulse, the policy version it was given, its lease.
#[tokio::test(start_paused = true)]
async fn the_instance_list_is_paged_within_bounds() {
    let config = ControlConfig::from_toml_str(
        "window = \"2s\"\n[server]\nlease = \"60s\"\n[[keys]]\npublish_key = \"pk\"\n\
         secret_key = \"sk\"\norg_id = \"o\"\n[tags]\nfree = 10\n[[rules]]\n\
         rule = \"when rps of free > 0 then block free\"\n",
    )
    .unwrap();
    let state = AppState::new(config).unwrap();
    let pulse = |id: &str| {
        let mut m = waitstate_core::wire::TagMetric::default();
        m.tag = "free".into();
        m.count = 5;
        m.admitted = Some(5);
        let mut b = waitstate_core::wire::PulseBody::default();
        b.instance_id = id.into();
        b.tag_metrics = vec![m];
        b
    };
    // 45 instances, i00 the first to pulse; then the rule fires, and only i40.. pulse again.
    for i in 0..45 {
        state.ingest("o", &pulse(&format!("i{i:02}"))).unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let open = fingerprint(&Policy::default());
    let mut blocking = open.clone();
    for _ in 0..10 {
        state.tick();
        blocking = fingerprint(&state.shard("o", "").unwrap().policy);
        if blocking != open {
            break;
        }
        state.ingest("o", &pulse("i44")).unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_ne!(blocking, open, "the rule never fired");
    for i in 40..45 {
        state.ingest("o", &pulse(&format!("i{i:02}"))).unwrap();
    }
    tokio::time::advance(Duration::from_secs(1)).await;

    let page = instances_json(&state, "org=o&site=&page=2&per_page=20").await;
    let p = &page["instances"];
    assert_eq!(
        (p["total"].as_u64(), p["per_page"].as_u64()),
        (Some(45), Some(20))
    );
    let ids: Vec<&str> = p["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["i40", "i41", "i42", "i43", "i44"]);
    assert_eq!(page["policy_version"].as_str(), Some(blocking.as_str()));
    for item in p["items"].as_array().unwrap() {
        assert_eq!(item["policy_version"].as_str(), Some(blocking.as_str()));
        assert_eq!(item["current"], true);
        assert_eq!(item["last_pulse_seconds_ago"].as_f64(), Some(1.0));
        assert_eq!(item["lease_left_seconds"].as_f64(), Some(59.0));
    }
    // Past the last page: empty, still answered; sizes kept within 1 and 100.
    for (query, per_page, len) in [
        ("page=3&per_page=20", 20, 0),
        ("page=0&per_page=0", 1, 1),
        ("page=0&per_page=100000", 100, 45),
        (
            "page=18446744073709551615&per_page=18446744073709551615",
            100,
            0,
        ),
    ] {
        let j = instances_json(&state, &format!("org=o&{query}")).await;
        let p = &j["instances"];
        assert_eq!(p["per_page"].as_u64(), Some(per_page), "{query}");
        assert_eq!(p["items"].as_array().unwrap().len(), len, "{query}");
        assert_eq!(p["total"].as_u64(), Some(45), "{query}");
    }
    // The longest silent first: i00, answered before the rule fired, with the open policy.
    let stale = instances_json(&state, "org=o&sort=stale&per_page=1").await;
    let first = &stale["instances"]["items"][0];
    assert_eq!(
        (stale["sort"].as_str(), first["id"].as_str()),
        (Some("stale"), Some("i00"))
    );
    assert_eq!(first["current"], false);
    assert_eq!(first["policy_version"].as_str(), Some(open.as_str()));
    // No fleet, or an unknown one: an empty list.
    let none = instances_json(&state, "org=nobody").await;
    assert_eq!(none["org"], serde_json::Value::Null);
    assert_eq!(none["instances"]["total"], 0);
    // Silent past `instance_ttl` (60 s): gone from the list.
    tokio::time::advance(Duration::from_secs(60)).await;
    let later = instances_json(&state, "org=o").await;
    assert_eq!(later["instances"]["total"], 0);
}
