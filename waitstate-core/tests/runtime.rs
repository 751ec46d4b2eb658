//! The runtime handle with tokio's paused clock: no test sleeps for real.
#![cfg(feature = "runtime")]

use std::time::Duration;

use tokio::time::advance;
use waitstate_core::{ConfigError, Decision, Phase, Reason, RuleConfig, WaitState};

fn tiers() -> waitstate_core::Builder {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("pro", 50)
        .tag("free", 10)
}

/// Let the background task run its due ticks.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_background_tick_blocks_slow_free_and_readmits_it() {
    let ws = tiers()
        .rule("when p95_latency of free > 500ms for 2s then block free")
        .cooldown(Duration::from_secs(3))
        // Twenty held at once, synchronously: past adaptive admission's starting limit,
        // and this is about rules.
        .admission(waitstate_core::AdmissionConfig::default().fixed())
        .build()
        .unwrap();
    // Two seconds of slow free requests: each permit is held 800 ms of (paused) time.
    for _ in 0..3 {
        let permits: Vec<_> = (0..20).map(|_| ws.admit("free", 1.0).unwrap()).collect();
        advance(Duration::from_millis(800)).await;
        drop(permits);
        advance(Duration::from_millis(200)).await;
        settle().await;
    }
    assert_eq!(ws.rules()[0].phase, Phase::Firing, "{:?}", ws.rules());
    let rejection = ws.admit("free", 1.0).unwrap_err();
    assert_eq!(rejection.reason(), Reason::TagBlocked);
    assert_eq!(rejection.tag(), "free");
    assert!(ws.admit("enterprise", 1.0).is_ok());

    // The slow samples age out of the window, the cool-down passes, the ramp runs.
    let mut saw_release = false;
    for _ in 0..30 {
        advance(Duration::from_secs(1)).await;
        settle().await;
        saw_release |= matches!(ws.rules()[0].phase, Phase::Releasing(_));
        if let Ok(p) = ws.admit("free", 1.0) {
            drop(p);
        }
    }
    assert!(saw_release);
    assert_eq!(ws.rules()[0].phase, Phase::Idle);
    assert!(ws.decide("free", 1.0).is_allowed());
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_engine() {
    let ws = tiers().build().unwrap();
    let clones: Vec<WaitState> = (0..4).map(|_| ws.clone()).collect();
    let permits: Vec<_> = clones
        .iter()
        .map(|c| c.admit("pro", 1.0).unwrap())
        .collect();
    assert_eq!(ws.in_flight(), 4);
    drop(permits);
    assert_eq!(ws.in_flight(), 0);
    assert_eq!(ws.counters("pro").unwrap().admitted, 4);
    let mut remote = waitstate_core::Policy::default();
    remote.tag_rate_limits.insert("pro".into(), 3.0);
    ws.engine().set_remote_policy(Some(remote)).unwrap();
    // One budget of 3 (the burst) across every clone, not 3 each.
    let admitted = clones
        .iter()
        .cycle()
        .take(12)
        .filter(|c| c.decide("pro", 1.0).is_allowed())
        .count();
    assert_eq!(admitted, 3);
}

#[tokio::test(start_paused = true)]
async fn permit_records_latency_and_outcome() {
    let ws = tiers().build().unwrap();
    let mut failing = ws.admit("pro", 1.0).unwrap();
    failing.set_error(true);
    let ok = ws.admit("pro", 1.0).unwrap();
    advance(Duration::from_millis(250)).await;
    drop(failing);
    ok.success();
    let c = ws.counters("pro").unwrap();
    assert_eq!((c.completed, c.errors, c.in_flight), (2, 1, 0));
    let p50 = c.latency.quantile_ms(0.5).unwrap();
    assert!((240.0..=260.0).contains(&p50), "{p50}");
}

#[tokio::test(start_paused = true)]
async fn the_task_stops_when_the_last_handle_drops() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let ws = tiers().rule("when rps > 1000 then shed").build().unwrap();
    let other = ws.clone();
    settle().await;
    // The rules' tick and adaptive admission's.
    assert_eq!(metrics.num_alive_tasks(), before + 2);
    drop(ws);
    advance(Duration::from_secs(2)).await;
    settle().await;
    assert!(other.is_running());
    drop(other);
    advance(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(metrics.num_alive_tasks(), before);
}

#[tokio::test(start_paused = true)]
async fn custom_metric_rule_and_dry_run_rule() {
    let ws = tiers()
        .custom_metric("queue_depth")
        .rule("when queue_depth > 50 then block free")
        .rule_config(RuleConfig::new("when queue_depth > 50 then kill").dry_run(true))
        .build()
        .unwrap();
    ws.report("queue_depth", 75.0, None).unwrap();
    advance(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(ws.decide("free", 1.0).reason(), Some(Reason::TagBlocked));
    let permit = ws.admit("enterprise", 1.0).unwrap();
    assert_eq!(permit.would_reject(), Some(Reason::KillSignal));
}

#[tokio::test(start_paused = true)]
async fn dry_run_mode_rejects_nothing() {
    let ws = tiers().dry_run(true).build().unwrap();
    let mut p = waitstate_core::Policy::default();
    p.kill_signal = true;
    ws.engine().set_remote_policy(Some(p)).unwrap();
    let d = ws.decide("free", 1.0);
    assert!(matches!(
        d,
        Decision::Allowed {
            would_reject: Some(Reason::KillSignal)
        }
    ));
    assert_eq!(ws.counters("free").unwrap().would_reject, 1);
}

#[tokio::test]
async fn config_errors_are_clear() {
    let err = tiers()
        .rule("when p95_latency > 500ms then blok free")
        .build()
        .unwrap_err();
    let ConfigError::Rule { index, error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*index, error.column()), (0, 31));
    assert!(err.to_string().contains("did you mean `block`"), "{err}");

    let err = WaitState::from_config_file("/nonexistent/waitstate.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");

    let path = std::env::temp_dir().join(format!("waitstate-test-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[tags]\nfree = 10\n[[rules]]\nrule = \"when error_rate > 5% then throttle free to 50%\"\n",
    )
    .unwrap();
    let ws = WaitState::from_config_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(ws.rules().len(), 1);
    assert_eq!(ws.engine().priority_of("free"), 10);
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    assert_eq!(tiers().build().unwrap_err(), ConfigError::NoRuntime);
}

#[tokio::test(start_paused = true)]
async fn limits_hold_through_ticks_and_rules() {
    let ws = tiers()
        .limits(waitstate_core::Limits::default().concurrency(2))
        .rule("when in_flight > 100 then limit concurrency to 1000")
        .build()
        .unwrap();
    let a = ws.admit("enterprise", 1.0).unwrap();
    let b = ws.admit("enterprise", 1.0).unwrap();
    assert!(ws.admit("enterprise", 1.0).is_err());
    // Ticks come and go (the rule never fires, and would only loosen): the limit holds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ws.policy().concurrency_limit, Some(2));
    assert!(ws.admit("enterprise", 1.0).is_err());
    drop((a, b));
    assert!(ws.admit("enterprise", 1.0).is_ok());
    let bad = tiers()
        .limits(waitstate_core::Limits::default().rate("free", f64::NAN))
        .build()
        .unwrap_err();
    assert!(bad.to_string().contains("limits.rate.free"), "{bad}");
}

/// Issue 15, item 9: a panic, a cancellation and a stream each count as what they are.
#[tokio::test(start_paused = true)]
async fn panics_cancellations_and_streams_are_recorded_as_what_they_are() {
    use waitstate_core::Ending;
    let ws = tiers().build().unwrap();

    // A handler panics with the permit on its stack: panicked, not a success.
    let ws2 = ws.clone();
    let caught = std::panic::catch_unwind(move || {
        let _permit = ws2.admit("pro", 1.0).unwrap();
        panic!("the handler fails");
    });
    assert!(caught.is_err());
    let c = ws.counters("pro").unwrap();
    assert_eq!((c.panicked, c.completed, c.errors), (1, 0, 0), "{c:?}");
    assert_eq!(c.in_flight, 0);

    // The client went away: cancelled, its cut-short latency not measured.
    let mut permit = ws.admit("free", 1.0).unwrap();
    permit.set_ending(Ending::Cancelled);
    advance(Duration::from_millis(5)).await;
    drop(permit);
    let c = ws.counters("free").unwrap();
    assert_eq!((c.cancelled, c.completed, c.errors), (1, 0, 0), "{c:?}");
    assert!(c.latency.is_empty());

    // A stream: 20 ms to the head, then 10 s of body. The latency is the head's; the slot
    // is held to the end.
    let mut permit = ws.admit("enterprise", 1.0).unwrap();
    advance(Duration::from_millis(20)).await;
    permit.head_sent();
    advance(Duration::from_secs(10)).await;
    assert_eq!(ws.counters("enterprise").unwrap().in_flight, 1);
    drop(permit);
    let c = ws.counters("enterprise").unwrap();
    assert_eq!(c.completed, 1);
    let p99 = c.latency.quantile_ms(0.99).unwrap();
    assert!((15.0..30.0).contains(&p99), "{p99}");
}
