//! The published `waitstate` 0.1 crate, unchanged, against our control plane: a fleet rule
//! that blocks `free` reaches it through its own pulse and sync, and its gate obeys.

use waitstate_tests::control as common;

use std::time::Duration;

use common::{ORG, PK, SK};
use waitstate_v1::types::{GateReason, WaitStateConfig};

#[tokio::test(start_paused = true)]
async fn published_v1_sdk_obeys_a_fleet_block() {
    let server = common::start(common::fleet_config(
        "pulse_interval = \"1s\"",
        "5s",
        "when p95_latency of free > 500ms then block free",
    ))
    .await;

    let mut cfg = WaitStateConfig::default();
    cfg.base_url = server.url();
    cfg.publish_key = PK.into();
    cfg.secret_key = SK.into();
    cfg.pulse_interval_secs = 1;
    cfg.sync_interval_secs = 2;
    let ws = waitstate_v1::WaitState::start(cfg);

    // Before anything fires the v1 SDK is open.
    assert!(ws.gate(Some("free"), None).allowed);

    // free is slow: the v1 SDK reports it; the fleet's p95 of free goes over 500 ms.
    let blocked = common::drive(
        Duration::from_millis(250),
        400,
        || {
            for _ in 0..5 {
                let _ = ws.gate(Some("free"), None);
                ws.report_latency(900.0, Some("free"));
                let _ = ws.gate(Some("enterprise"), None);
                ws.report_latency(20.0, Some("enterprise"));
            }
        },
        || !ws.gate(Some("free"), None).allowed,
    )
    .await;
    assert!(blocked, "the fleet rule never reached the v1 SDK");

    let free = ws.gate(Some("free"), None);
    assert!(!free.allowed);
    assert_eq!(free.reason, GateReason::TagBlocked);
    let enterprise = ws.gate(Some("enterprise"), None);
    assert!(enterprise.allowed);
    assert_eq!(enterprise.reason, GateReason::Allowed);

    // The fleet saw the v1 SDK's telemetry and the rule is in force.
    let shard = server.state().shard(ORG, "").expect("the fleet exists");
    assert_eq!(shard.instances, 1);
    assert!(shard.tags["free"].offered() > 0);
    assert!(shard.rules.iter().any(|r| r.is_active()));
    assert_eq!(shard.policy.tag_max_weights.get("free"), Some(&0.0));

    // Its sync path ran too: tokens bought and policies read with them.
    let policy = server.state().answer_for(ORG, "", None);
    assert_eq!(policy.tag_max_weights.get("free"), Some(&0.0));
    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(value("waitstate_tokens_total ") >= 1, "{metrics}");
    assert!(value("waitstate_policy_reads_total ") >= 1, "{metrics}");
    assert!(value("waitstate_pulses_total ") >= 1, "{metrics}");
    drop(ws);
    server.shutdown().await.unwrap();
}
