//! SDK failover (issue 19, item 4): an instance given two control-plane URLs moves to the
//! second when the first goes away, with the telemetry the first never acknowledged, and
//! never enters safe mode. In virtual time; the two control planes are in memory (replicas
//! over Redis are in `replicas.rs`: here only the client's side is under test).

use waitstate_tests::control as common;

use std::time::Duration;

use common::{ORG, PK, SK};
use waitstate_core::{ControlPlane, WaitState};

const SECOND: Duration = Duration::from_secs(1);

fn admitted(state: &waitstate_control::AppState) -> u64 {
    state
        .shard(ORG, "")
        .map_or(0, |v| v.tags.get("free").map_or(0, |c| c.admitted))
}

/// One `free` request, ended at once; whether it was admitted.
fn request(ws: &WaitState) -> bool {
    ws.admit("free", 1.0).is_ok()
}

#[tokio::test(start_paused = true)]
async fn an_instance_fails_over_to_the_next_url_with_its_unsent_telemetry() {
    let config = || {
        common::config(
            "pulse_interval = \"1s\"",
            "[tags]\nenterprise = 100\nfree = 10\n",
        )
    };
    let a = common::start(config()).await;
    let b = common::start(config()).await;
    let (a_state, b_url) = (a.state().clone(), b.url());
    let ws = common::instance(
        ControlPlane::new(a.url(), PK, SK)
            .failover(&b_url)
            .pulse_interval(SECOND)
            .sync_interval(2 * SECOND)
            .timeout(Duration::from_secs(30)),
    );
    let status = || ws.control_status().unwrap();
    let mut made = 0u64;
    let mut traffic = || {
        for _ in 0..10 {
            if request(&ws) {
                made += 1;
            }
        }
    };
    assert!(
        common::drive(Duration::from_millis(250), 200, &mut traffic, || {
            admitted(&a_state) > 0
        })
        .await,
        "the first control plane never got a pulse"
    );
    a.shutdown().await.unwrap();
    // Traffic goes on; the instance moves to the second URL.
    let moved = common::drive(Duration::from_millis(250), 400, &mut traffic, || {
        status().control_plane_url == b_url && admitted(b.state()) > 0
    })
    .await;
    assert!(moved, "never moved to the second URL: {:?}", status());
    for _ in 0..20 {
        traffic();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Quiet now: the last pulse carries the rest.
    let settled = common::until(SECOND, 60, || {
        admitted(&a_state) + admitted(b.state()) == made
    })
    .await;
    let s = status();
    assert!(
        settled,
        "made {made}, first got {}, second {}: {s:?}",
        admitted(&a_state),
        admitted(b.state())
    );
    assert!(!s.safe_mode && s.lease_valid, "{s:?}");
    assert!(s.failovers >= 1 && s.pulses_failed >= 1, "{s:?}");
}
