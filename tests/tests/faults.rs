//! The control plane fails: down at start, down after a sync, back up, restarted empty; and
//! a control plane that sends a bad policy. Virtual time throughout.

use waitstate_tests::control as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use common::{ORG, PK, SK};
use tokio::net::TcpListener;
use waitstate_core::{ControlPlane, ControlStatus, Reason, SafeMode, WaitState};

const SECOND: Duration = Duration::from_secs(1);

fn instance(url: &str, mode: SafeMode) -> WaitState {
    common::instance(
        ControlPlane::new(url, PK, SK)
            .pulse_interval(Duration::from_secs(5))
            .sync_interval(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .safe_mode(mode)
            .safe_mode_max_rps(5.0),
    )
}

fn status(ws: &WaitState) -> ControlStatus {
    ws.control_status().unwrap()
}

async fn free_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

#[tokio::test(start_paused = true)]
async fn down_at_start_fails_open() {
    let ws = instance(&free_port().await, SafeMode::FixedRps);
    let tried = common::drive(
        SECOND,
        120,
        || {
            for _ in 0..20 {
                assert!(ws.decide("free", 1.0).is_allowed());
            }
        },
        || {
            let s = status(&ws);
            s.pulses_failed >= 3 && s.syncs_failed >= 3
        },
    )
    .await;
    assert!(tried);
    let s = status(&ws);
    assert!(!s.synced && !s.lease_valid && !s.safe_mode, "{s:?}");
    assert!(s.carried_windows >= 1);
    // Never synced: no lease to expire, still open.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!status(&ws).safe_mode);
    assert!(ws.decide("free", 1.0).is_allowed());
    // The retries back off: far fewer than one attempt per second over these 10 minutes.
    assert!(status(&ws).syncs_failed < 200, "{:?}", status(&ws));
}

fn server_config() -> waitstate_control::ControlConfig {
    common::fleet_config(
        "pulse_interval = \"5s\"\nlease = \"20s\"",
        "5s",
        "when rps of free > 0 then block free",
    )
}

#[tokio::test(start_paused = true)]
async fn down_after_a_sync_cached_then_safe_mode_then_back_up_with_exact_counts() {
    let server = common::start(server_config()).await;
    let addr = server.local_addr();
    let ws = instance(&server.url(), SafeMode::FixedRps);

    // The fleet rule blocks free and the instance obeys.
    let blocked = common::drive(
        SECOND,
        120,
        || {
            let _ = ws.decide("free", 1.0);
        },
        || {
            ws.decide("enterprise", 1.0).is_allowed()
                && ws.policy().tag_max_weights.get("free") == Some(&0.0)
        },
    )
    .await;
    assert!(blocked);
    // Quiet until one more pulse is acknowledged: the control plane has everything.
    let acked = status(&ws).pulses_ok;
    assert!(common::until(SECOND, 60, || status(&ws).pulses_ok > acked).await);
    let syncs_before = status(&ws).syncs_ok;

    // Down.
    server.shutdown().await.unwrap();
    // The cached policy holds while the lease does.
    for _ in 0..4 {
        assert_eq!(ws.decide("free", 1.0).reason(), Some(Reason::TagBlocked));
    }
    for _ in 0..7 {
        assert!(ws.decide("enterprise", 1.0).is_allowed());
    }
    assert!(common::until(SECOND, 10, || status(&ws).pulses_failed > 0).await);
    let s = status(&ws);
    assert!(s.lease_valid && !s.safe_mode, "{s:?}");

    // The lease (20 s) expires: safe mode fixed_rps, 5 per second, `lease_expired`, by
    // priority: free (the middle of three levels) may use 2/3 of the one-second burst,
    // enterprise (the top) the rest.
    assert!(common::until(SECOND, 60, || status(&ws).safe_mode).await);
    let s = status(&ws);
    assert!(!s.lease_valid && s.carried_windows >= 2, "{s:?}");
    let decisions: Vec<_> = (0..8).map(|_| ws.decide("free", 1.0)).collect();
    assert_eq!(decisions.iter().filter(|d| d.is_allowed()).count(), 3);
    assert!(
        decisions[3..]
            .iter()
            .all(|d| d.reason() == Some(Reason::LeaseExpired))
    );
    let top: Vec<_> = (0..3).map(|_| ws.decide("enterprise", 1.0)).collect();
    assert_eq!(top.iter().filter(|d| d.is_allowed()).count(), 2);

    // Back up, restarted with empty state (and a new token key).
    let server = common::restart_on(addr, server_config()).await;
    assert!(common::until(SECOND, 120, || !status(&ws).safe_mode).await);
    assert!(common::until(SECOND, 120, || server.state().shard(ORG, "").is_some()).await);
    let exact = |server: &waitstate_control::ControlServer| {
        let shard = server.state().shard(ORG, "").unwrap();
        let free = &shard.tags["free"];
        let enterprise = &shard.tags["enterprise"];
        (
            free.offered(),
            free.rejected_for(Reason::TagBlocked),
            free.rejected_for(Reason::LeaseExpired),
            free.admitted,
            enterprise.admitted,
        )
    };
    // Everything gated while it was down arrives, once: 4 blocked, then 3 admitted and 5
    // refused in safe mode; 7 + 2 enterprise (the decide calls above while up were
    // acknowledged before it went down).
    assert_eq!(exact(&server), (12, 4, 5, 3, 9));
    let s = status(&ws);
    assert_eq!(s.windows_dropped, 0);
    assert_eq!(s.carried_windows, 0);
    // Two more pulses: nothing is counted twice.
    let ok = s.pulses_ok;
    assert!(common::until(SECOND, 60, || status(&ws).pulses_ok >= ok + 2).await);
    assert_eq!(exact(&server), (12, 4, 5, 3, 9));
    // The restarted control plane signs tokens with a new key: the instance buys a new one.
    assert!(common::until(SECOND, 120, || status(&ws).syncs_ok > syncs_before).await);
    assert!(status(&ws).lease_valid);
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn safe_mode_last_policy_keeps_enforcing_and_open_drops_it() {
    for (mode, free_after) in [(SafeMode::LastPolicy, false), (SafeMode::Open, true)] {
        let server = common::start(server_config()).await;
        let ws = instance(&server.url(), mode);
        let blocked = common::drive(
            SECOND,
            120,
            || {
                let _ = ws.decide("free", 1.0);
            },
            || ws.policy().tag_max_weights.get("free") == Some(&0.0),
        )
        .await;
        assert!(blocked);
        server.shutdown().await.unwrap();
        assert!(common::until(SECOND, 60, || status(&ws).safe_mode).await);
        assert_eq!(ws.decide("free", 1.0).is_allowed(), free_after, "{mode:?}");
        assert!(ws.decide("enterprise", 1.0).is_allowed());
    }
}

#[tokio::test(start_paused = true)]
async fn long_outages_carry_a_bounded_number_of_windows() {
    let server = common::start(server_config()).await;
    let addr = server.local_addr();
    let ws = WaitState::builder()
        .control_plane(
            ControlPlane::new(server.url(), PK, SK)
                .pulse_interval(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .carried_windows(3),
        )
        .build()
        .unwrap();
    assert!(common::until(SECOND, 60, || status(&ws).pulses_ok > 0).await);
    server.shutdown().await.unwrap();
    // Two minutes of traffic while it is down: far more than 3 windows of 5 s.
    let mut sent = 0u64;
    common::drive(
        SECOND,
        120,
        || {
            let _ = ws.decide("pro", 1.0);
            sent += 1;
        },
        || false,
    )
    .await;
    let s = status(&ws);
    assert!(s.windows_dropped > 0 && s.carried_windows <= 3, "{s:?}");
    let server = common::restart_on(addr, server_config()).await;
    assert!(common::until(SECOND, 120, || server.state().shard(ORG, "").is_some()).await);
    let got = server.state().shard(ORG, "").unwrap().tags["pro"].offered();
    let dropped = status(&ws).requests_dropped;
    assert!(got < sent && got > 0, "got {got} of {sent}");
    assert_eq!(
        got + dropped,
        sent,
        "every request is either delivered or counted as dropped"
    );
    server.shutdown().await.unwrap();
}

/// A control plane that answers with a good policy, then with one that fails validation.
#[tokio::test(start_paused = true)]
async fn a_bad_policy_is_refused_and_the_last_good_one_stays() {
    let bad = Arc::new(AtomicBool::new(false));
    let policy = {
        let bad = bad.clone();
        move || {
            let bad = bad.clone();
            async move {
                if bad.load(Ordering::Relaxed) {
                    r#"{"globalMaxWeight":null,"tagMaxWeights":{"free":0},"tagRateLimits":{"free":-5},"leaseDurationSeconds":300}"#
                } else {
                    r#"{"globalMaxWeight":null,"tagMaxWeights":{"free":0},"leaseDurationSeconds":300}"#
                }
            }
        }
    };
    let app = Router::new()
        .route(
            "/v1/auth/token",
            post(|| async { r#"{"token":"t","expiresAt":99999999999999,"orgId":"o"}"# }),
        )
        .route("/v1/policy/{org}", get(policy.clone()))
        .route("/v1/pulse", post(policy));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let ws = instance(&url, SafeMode::Open);
    assert!(common::until(SECOND, 60, || status(&ws).synced).await);
    assert_eq!(ws.decide("free", 1.0).reason(), Some(Reason::TagBlocked));
    bad.store(true, Ordering::Relaxed);
    assert!(common::until(SECOND, 60, || status(&ws).policies_rejected >= 2).await);
    assert_eq!(ws.decide("free", 1.0).reason(), Some(Reason::TagBlocked));
    assert!(ws.policy().tag_rate_limits.is_empty());
    server.abort();
}
