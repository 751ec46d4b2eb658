//! control's unit tests.
use super::*;

/// Issue 15, item 6: the client itself refuses plain http off loopback, whatever
/// `validate` was skipped (the fields are public), with the URL parser it connects with.
#[test]
fn the_client_refuses_plain_http_off_loopback() {
    for ok in [
        "https://control.example.com",
        "http://127.0.0.1:7700",
        "http://[::1]:7700",
        "http://localhost:7700",
    ] {
        assert!(
            http_client(&ControlPlane::new(ok, "pk", "sk")).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "http://control.example.com",
        "http://10.0.0.1:7700",
        "http://localhost@example.com",
        "http://example.com\\@localhost",
        "ftp://localhost",
    ] {
        let err = http_client(&ControlPlane::new(bad, "pk", "sk")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "control_plane.base_url"),
            "{bad}: {err:?}"
        );
    }
    let opted_in = ControlPlane::new("http://10.0.0.1:7700", "pk", "sk").allow_insecure_http(true);
    assert!(http_client(&opted_in).is_ok());
}

/// Issue 15, item 3: a control task that panics is restarted, and `is_running` covers
/// it. Before, the panic left the instance with no lease and no syncs for good, while
/// `is_running` (the reflex task only) said all was well.
#[tokio::test(start_paused = true)]
async fn a_control_task_that_panics_is_restarted() {
    // Nothing listens there: every sync fails, and is counted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let ws = crate::WaitState::builder()
        .control_plane(ControlPlane::new(url, "pk", "sk"))
        .build()
        .unwrap();
    let shared = ws.inner.control.clone().unwrap();
    let syncs = || ws.control_status().unwrap().syncs_failed;
    while syncs() == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared
        .inject_panic
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The panic happens at the task's next wake-up (a retry within the sync backoff).
    while shared
        .inject_panic
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = syncs();
    assert!(ws.is_running());
    // Restarted: it syncs (and fails) again.
    for _ in 0..600 {
        if syncs() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        syncs() > before,
        "no sync after the panic: {:?}",
        ws.control_status()
    );
    assert!(ws.is_running());
}

#[test]
fn unacknowledged_counts_are_compared_within_one_generation() {
    let mut old = TagCounters::default();
    old.admitted = 50;
    let mut new = TagCounters::default();
    new.admitted = 20;
    // Same slot: what it counted since.
    let mut more = TagCounters::default();
    more.admitted = 70;
    assert_eq!(since(&(1, more), Some(&(1, old.clone()))).admitted, 20);
    // A new slot of a reclaimed tag: all of it (before: 20 - 50, saturated to 0).
    assert_eq!(since(&(2, new), Some(&(1, old))).admitted, 20);
}

#[test]
fn path_segments_are_encoded() {
    assert_eq!(encode_path("acme-1_x.y~"), "acme-1_x.y~");
    assert_eq!(encode_path("a/b c"), "a%2Fb%20c");
}
