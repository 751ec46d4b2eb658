//! fleet's unit tests.
use super::*;

fn tm(tag: &str, count: u64) -> TagMetric {
    let mut m = TagMetric::default();
    m.tag = tag.into();
    m.count = count;
    m.admitted = Some(count);
    m.completed = Some(0);
    m
}

fn pulse(id: &str, metrics: Vec<TagMetric>) -> PulseBody {
    let mut b = PulseBody::default();
    b.instance_id = id.into();
    b.tag_metrics = metrics;
    b
}

#[tokio::test(start_paused = true)]
async fn budgets_split_by_demand_and_add_up() {
    let server = ServerConfig::default();
    let mut engine = Config::default();
    engine.tags.insert("free".into(), 10);
    let mut f = Fleets::default();
    let now = Instant::now();
    for (id, n) in [("a", 100), ("b", 300), ("c", 0)] {
        f.ingest("o", &pulse(id, vec![tm("free", n)]), now, &server, &engine)
            .unwrap();
    }
    let shard = f.shard("o", "").unwrap();
    let shares: Vec<f64> = ["a", "b", "c"]
        .iter()
        .map(|id| split(Some(shard), Some(id), "free", 100.0))
        .collect();
    let total: f64 = shares.iter().sum();
    assert!((total - 100.0).abs() < 1e-9, "{shares:?}");
    assert!(shares[1] > 2.5 * shares[0] && shares[2] < 2.0, "{shares:?}");
    assert!((split(Some(shard), None, "free", 90.0) - 30.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn fleet_limits_are_in_every_answer_and_rate_budgets_split_by_demand() {
    let server = ServerConfig::default();
    let engine = Config::from_toml_str(
        "[tags]\nfree = 10\n[limits]\nconcurrency = 40\nrate = { free = 90 }\n",
    )
    .unwrap();
    let mut f = Fleets::default();
    let now = Instant::now();
    for (id, n) in [("a", 100), ("b", 200)] {
        f.ingest("o", &pulse(id, vec![tm("free", n)]), now, &server, &engine)
            .unwrap();
    }
    f.tick(now, Duration::from_secs(1), &server, &engine);
    let shard = f.shard("o", "");
    let a = answer(shard, Some("a"), &server, &engine);
    let b = answer(shard, Some("b"), &server, &engine);
    assert_eq!(a.concurrency_limit, Some(40));
    let (ra, rb) = (a.tag_rate_limits["free"], b.tag_rate_limits["free"]);
    assert!((ra + rb - 90.0).abs() < 1e-9 && rb > 1.8 * ra, "{ra} {rb}");
}

#[tokio::test(start_paused = true)]
async fn carried_windows_are_counted_but_do_not_drive_the_rules() {
    let server = ServerConfig::default();
    let engine = Config::from_toml_str(
        "[tags]\nfree = 10\n[[rules]]\nrule = \"when p95_latency of free > 500ms then block free\"\n",
    )
    .unwrap();
    let slow = |id: &str, windows: Option<u32>| {
        let mut m = tm("free", 50);
        m.completed = Some(50);
        let mut h = Histogram::new();
        h.record_n_micros(900_000, 50);
        m.histogram = Some(h.to_sparse());
        let mut b = pulse(id, vec![m]);
        b.windows = windows;
        b
    };
    let mut f = Fleets::default();
    let start = Instant::now();
    // After an outage: one pulse carrying 5 old windows of slow requests.
    f.ingest("o", &slow("a", Some(5)), start, &server, &engine)
        .unwrap();
    f.tick(start, Duration::from_secs(1), &server, &engine);
    let shard = f.shard("o", "").unwrap();
    assert_eq!(shard.view().tags["free"].completed, 50, "counted");
    assert!(
        !shard.view().policy.tag_max_weights.contains_key("free"),
        "not acted on"
    );
    // Slow now, in a window of its own: the rule fires.
    let later = start + Duration::from_secs(1);
    f.ingest("o", &slow("a", None), later, &server, &engine)
        .unwrap();
    f.tick(later, Duration::from_secs(2), &server, &engine);
    let shard = f.shard("o", "").unwrap();
    assert_eq!(shard.view().tags["free"].completed, 100);
    assert_eq!(shard.view().policy.tag_max_weights.get("free"), Some(&0.0));
}

#[tokio::test(start_paused = true)]
async fn demand_totals_follow_ingest_age_out_and_expiry() {
    let mut server = ServerConfig::default();
    server.demand_window = Duration::from_secs(10);
    server.instance_ttl = Duration::from_secs(30);
    let mut engine = Config::default();
    engine.tags.insert("free".into(), 10);
    let mut f = Fleets::default();
    let start = Instant::now();
    let recomputed = |shard: &Shard| -> BTreeMap<String, u64> {
        let mut sums = BTreeMap::new();
        for inst in shard.instances.values() {
            for (_, d) in &inst.demand {
                add_counts(&mut sums, d);
            }
        }
        sums
    };
    for step in 0..45u64 {
        let now = start + Duration::from_secs(step);
        // `a` pulses all along, `b` stops at 10 s (and expires), `c` pulses every 3 s.
        for (id, n, live) in [
            ("a", 5, true),
            ("b", 7, step < 10),
            ("c", 11, step % 3 == 0),
        ] {
            if live {
                let body = pulse(id, vec![tm("free", n), tm("pro", n + 1)]);
                f.ingest("o", &body, now, &server, &engine).unwrap();
            }
        }
        f.tick(now, Duration::from_secs(step), &server, &engine);
        let shard = f.shard("o", "").unwrap();
        assert_eq!(shard.demand_total, recomputed(shard), "at {step} s");
    }
    let shard = f.shard("o", "").unwrap();
    assert!(!shard.instances.contains_key("b"), "b expired");
    assert_eq!(shard.demand_total["free"], recomputed(shard)["free"]);
}

#[tokio::test(start_paused = true)]
async fn bad_pulses_store_nothing() {
    let server = ServerConfig::default();
    let engine = Config::default();
    let mut f = Fleets::default();
    let now = Instant::now();
    let mut bad = tm("free", 1);
    bad.histogram = Some(waitstate_core::histogram::SparseHistogram {
        layout: "nope".into(),
        buckets: vec![],
    });
    let body = pulse("a", vec![tm("pro", 5), bad]);
    assert!(f.ingest("o", &body, now, &server, &engine).is_err());
    assert!(f.shard("o", "").is_none());
    for tag in ["", &"x".repeat(200)] {
        let body = pulse("a", vec![tm(tag, 1)]);
        assert!(f.ingest("o", &body, now, &server, &engine).is_err());
    }
    assert!(
        f.ingest("o", &pulse("", vec![]), now, &server, &engine)
            .is_err()
    );
}

/// Issue 15, item 8: hostile telemetry (every count `u64::MAX`, from two instances and
/// twice) saturates instead of wrapping (or panicking in a debug build).
#[tokio::test(start_paused = true)]
async fn hostile_counts_saturate() {
    let server = ServerConfig::default();
    let engine = Config::from_toml_str(
        "[tags]\nfree = 10\n[[rules]]\nrule = \"when rps of free > 1 then limit free to 100/s\"\n",
    )
    .unwrap();
    let max = u64::MAX;
    let hostile = |id: &str| {
        let mut ours = tm("free", max);
        ours.admitted_weight = Some(f64::MAX);
        ours.rejected = Some(
            Reason::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), max))
                .collect(),
        );
        ours.would_reject = Some(max);
        ours.completed = Some(max);
        ours.errors = Some(max);
        ours.in_flight = Some(max);
        ours.latency = f64::MAX;
        ours.custom_metrics = Some(
            [(
                "queue_depth".to_owned(),
                Aggregate {
                    min: 0.0,
                    max: 1.0,
                    sum: 1.0,
                    count: max,
                },
            )]
            .into_iter()
            .collect(),
        );
        let mut v1 = TagMetric::default();
        v1.tag = "pro".into();
        v1.count = max;
        v1.latency_buckets = Some(vec![max; 8]);
        let mut b = pulse(id, vec![ours.clone(), ours]);
        b.metrics.errors = f64::MAX;
        let mut v1_body = pulse(id, vec![v1]);
        v1_body.metrics.errors = f64::MAX;
        (b, v1_body)
    };
    let mut f = Fleets::default();
    let now = Instant::now();
    for _ in 0..2 {
        for id in ["a", "b"] {
            let (ours, v1) = hostile(id);
            f.ingest("o", &ours, now, &server, &engine).unwrap();
            f.ingest("o", &v1, now, &server, &engine).unwrap();
        }
    }
    f.tick(now, Duration::from_secs(1), &server, &engine);
    let shard = f.shard("o", "").unwrap();
    let free = &shard.view().tags["free"];
    assert_eq!(free.admitted, max);
    assert!(free.rejected.iter().all(|&n| n == max));
    assert_eq!(
        (free.completed, free.errors, free.would_reject),
        (max, max, max)
    );
    assert_eq!(shard.view().tags["pro"].admitted, max);
    assert_eq!(shard.view().tags[DEFAULT_TAG].errors, max);
    assert_eq!(shard.demand_total["free"], max);
    assert_eq!(shard.pulses, 8);
    let p = answer(Some(shard), Some("a"), &server, &engine);
    assert!(
        p.tag_rate_limits
            .values()
            .all(|r| r.is_finite() && *r >= 0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn the_shed_floor_becomes_v1_blocks() {
    let server = ServerConfig::default();
    let mut engine = Config::default();
    engine.tags.insert("free".into(), 10);
    engine.tags.insert("pro".into(), 50);
    engine.tags.insert("enterprise".into(), 100);
    let mut f = Fleets::default();
    f.ingest(
        "o",
        &pulse("a", vec![tm("free", 1)]),
        Instant::now(),
        &server,
        &engine,
    )
    .unwrap();
    let shard = f.orgs.get_mut("o").unwrap().get_mut("").unwrap();
    shard.enforce.priority_floor = Some(50);
    let p = answer(Some(shard), Some("a"), &server, &engine);
    assert_eq!(p.tag_max_weights.get("free"), Some(&0.0));
    assert_eq!(p.tag_max_weights.get(DEFAULT_TAG), Some(&0.0));
    assert!(!p.tag_max_weights.contains_key("pro"));
    assert_eq!(p.lease_duration_seconds, Some(300));
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        json.starts_with(r#"{"globalMaxWeight":null,"tagMaxWeights""#),
        "{json}"
    );
}
