//! Three in-process SDK instances and one control plane, in virtual time.

use waitstate_tests::control as common;

use std::time::Duration;

use common::{ORG, PK, SK};
use waitstate_core::{ControlPlane, Demand, Reason, WaitState};

fn instance(url: &str) -> WaitState {
    common::instance(
        ControlPlane::new(url, PK, SK)
            .pulse_interval(Duration::from_secs(1))
            .sync_interval(Duration::from_secs(2))
            .timeout(Duration::from_secs(30)),
    )
}

/// A request of `tag` that took `ms` (the latency is given, not slept).
fn request(ws: &WaitState, tag: &str, ms: u64) {
    if let Ok(ticket) = ws.engine().admit(&Demand::new(tag), Duration::ZERO) {
        ticket.finish(Duration::from_millis(ms), false);
    }
}

#[tokio::test(start_paused = true)]
async fn one_slow_instance_plus_the_others_blocks_free_everywhere() {
    let server = common::start(common::fleet_config(
        "pulse_interval = \"1s\"",
        "10s",
        "when p95_latency of free > 500ms then block free",
    ))
    .await;
    let fleet: Vec<WaitState> = (0..3).map(|_| instance(&server.url())).collect();

    // Instance 0's free requests take 900 ms; the others' take 20 ms, five times as many
    // each. Alone, instances 1 and 2 are healthy, and the mean of the three instances' p95
    // (313 ms) is under the threshold: only the merged histogram says the fleet's free p95
    // is over 500 ms (1 in 11 requests is slow).
    let blocked = common::drive(
        Duration::from_millis(250),
        400,
        || {
            request(&fleet[0], "free", 900);
            for ws in &fleet[1..] {
                for _ in 0..5 {
                    request(ws, "free", 20);
                }
            }
            for ws in &fleet {
                request(ws, "enterprise", 20);
            }
        },
        || {
            fleet
                .iter()
                .all(|ws| ws.policy().tag_max_weights.get("free") == Some(&0.0))
        },
    )
    .await;
    assert!(blocked, "the fleet never blocked free on every instance");

    let shard = server.state().shard(ORG, "").unwrap();
    assert_eq!(shard.instances, 3);
    let p95 = shard.tags["free"].latency.quantile_ms(0.95).unwrap();
    assert!(p95 > 500.0, "fleet p95 of free: {p95}");
    for (i, ws) in fleet.iter().enumerate() {
        let own = ws
            .counters("free")
            .unwrap()
            .latency
            .quantile_ms(0.95)
            .unwrap();
        if i > 0 {
            assert!(own < 500.0, "instance {i} alone is healthy: {own}");
        }
        assert_eq!(
            ws.decide("free", 1.0).reason(),
            Some(Reason::TagBlocked),
            "instance {i}"
        );
        assert!(ws.decide("enterprise", 1.0).is_allowed(), "instance {i}");
        let status = ws.control_status().unwrap();
        assert!(status.synced && status.lease_valid && !status.safe_mode);
    }
    drop(fleet);
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_fleet_budget_of_100_per_second_holds_across_three_instances() {
    let server = common::start(common::fleet_config(
        "pulse_interval = \"1s\"\ndemand_window = \"10s\"",
        "5s",
        "when rps of free > 1 then limit free to 100/s",
    ))
    .await;
    let fleet: Vec<WaitState> = (0..3).map(|_| instance(&server.url())).collect();
    // Offered load per instance, per second: 300/s together, three times the budget.
    let rates = [60.0, 90.0, 150.0];
    let step = Duration::from_millis(10);
    let mut credit = [0.0f64; 3];
    let mut offer = |fleet: &[WaitState]| {
        for (i, ws) in fleet.iter().enumerate() {
            credit[i] += rates[i] * step.as_secs_f64();
            while credit[i] >= 1.0 {
                credit[i] -= 1.0;
                let _ = ws.decide("free", 1.0);
            }
        }
    };
    let limited = common::drive(
        step,
        6000,
        || offer(&fleet),
        || {
            fleet
                .iter()
                .all(|ws| ws.policy().tag_rate_limits.contains_key("free"))
        },
    )
    .await;
    assert!(limited, "the fleet budget never reached every instance");
    // Let the shares settle on the demand, then measure 30 s.
    for _ in 0..500 {
        offer(&fleet);
        tokio::time::sleep(step).await;
    }
    let admitted = |fleet: &[WaitState]| -> u64 {
        fleet
            .iter()
            .map(|ws| ws.counters("free").unwrap().admitted)
            .sum()
    };
    let before = admitted(&fleet);
    let start = tokio::time::Instant::now();
    for _ in 0..3000 {
        offer(&fleet);
        tokio::time::sleep(step).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = (admitted(&fleet) - before) as f64 / secs;
    let shares: Vec<f64> = fleet
        .iter()
        .map(|ws| ws.policy().tag_rate_limits["free"])
        .collect();
    println!("fleet admitted {rate:.1}/s of free over {secs:.1}s; shares {shares:?}");
    assert!(
        (90.0..=110.0).contains(&rate),
        "fleet rate {rate}/s, shares {shares:?}"
    );
    // Shares follow demand: the busiest instance has the largest share.
    assert!(shares[2] > shares[1] && shares[1] > shares[0], "{shares:?}");
    let total: f64 = shares.iter().sum();
    assert!((total - 100.0).abs() < 1.0, "{shares:?}");
    drop(fleet);
    server.shutdown().await.unwrap();
}
