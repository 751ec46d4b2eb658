//! The control plane side of the SDK <-> control plane tests: a `waitstate-control`
//! server on 127.0.0.1:0 with one org and one key pair, and bounded waits in virtual time
//! (`tokio::time::pause()`; nothing sleeps for real).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use waitstate_control::{AppState, ControlConfig, ControlServer};
use waitstate_core::{ControlPlane, SafeMode, WaitState};

/// The publish key of the one key pair.
pub const PK: &str = "pk_test_1";
/// The secret key of the one key pair.
pub const SK: &str = "sk_test_1_secret";
/// The org the key pair belongs to.
pub const ORG: &str = "acme";

/// A control plane configuration: the engine part is `engine_toml` (tags, rules, timing).
pub fn config(server_toml: &str, engine_toml: &str) -> ControlConfig {
    let text = format!(
        "{engine_toml}\n[server]\nlisten = \"127.0.0.1:0\"\n{server_toml}\n\n[[keys]]\npublish_key = \"{PK}\"\nsecret_key = \"{SK}\"\norg_id = \"{ORG}\"\n"
    );
    ControlConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A control plane configuration for the tiers of [`instance`] (`enterprise` 100, `free`
/// 10), with one fleet rule over a `window` (`"5s"`).
pub fn fleet_config(server_toml: &str, window: &str, rule: &str) -> ControlConfig {
    config(
        server_toml,
        &format!(
            "window = \"{window}\"\n[tags]\nenterprise = 100\nfree = 10\n[[rules]]\nrule = \"{rule}\"\n"
        ),
    )
}

/// Serve `config` on a free port of 127.0.0.1.
pub async fn start(config: ControlConfig) -> ControlServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    ControlServer::serve(listener, AppState::new(config).unwrap())
}

/// An SDK instance with the tiers `enterprise` (100) and `free` (10) that talks to
/// `control`.
///
/// # Panics
/// Outside a tokio runtime, or when `control` is refused.
pub fn instance(control: ControlPlane) -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .control_plane(control)
        .build()
        .unwrap()
}

/// An SDK instance ([`instance`]) whose lease has expired: it synced with a control plane
/// that then went down, and safe mode `fixed_rps` caps it at `max_rps` requests a second
/// (rejections say `lease_expired`). Call under `tokio::time::pause()`: the lease runs out
/// in virtual time.
///
/// # Panics
/// When the instance never syncs or never enters safe mode.
pub async fn lapsed_instance(max_rps: f64) -> WaitState {
    const SECOND: Duration = Duration::from_secs(1);
    let server = start(config("lease = \"5s\"\npulse_interval = \"1s\"", "")).await;
    let ws = instance(
        ControlPlane::new(server.url(), PK, SK)
            .pulse_interval(SECOND)
            .sync_interval(SECOND)
            .timeout(Duration::from_secs(30))
            .safe_mode(SafeMode::FixedRps)
            .safe_mode_max_rps(max_rps),
    );
    let status = |ws: &WaitState| ws.control_status().unwrap();
    assert!(
        until(SECOND, 60, || status(&ws).synced).await,
        "never synced"
    );
    server.shutdown().await.unwrap();
    assert!(
        until(SECOND, 60, || status(&ws).safe_mode).await,
        "never in safe mode"
    );
    ws
}

/// Serve again on the same address (a restart: new, empty state). The port was ours a
/// moment ago; binding it again is retried a few times.
///
/// # Panics
/// When the address cannot be bound again, or the configuration is refused.
pub async fn restart_on(addr: SocketAddr, config: ControlConfig) -> ControlServer {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return ControlServer::serve(listener, AppState::new(config).unwrap());
        }
        tokio::task::yield_now().await;
    }
    panic!("cannot bind {addr} again");
}

/// Step virtual time by `step` until `done()` holds, at most `max` steps. Returns whether
/// it held.
pub async fn until<F: FnMut() -> bool>(step: Duration, max: usize, mut done: F) -> bool {
    for _ in 0..max {
        if done() {
            return true;
        }
        tokio::time::sleep(step).await;
    }
    done()
}

/// Run `f` each step of virtual time (traffic), until `done()` holds or `max` steps.
pub async fn drive<F, D>(step: Duration, max: usize, mut f: F, mut done: D) -> bool
where
    F: FnMut(),
    D: FnMut() -> bool,
{
    for _ in 0..max {
        if done() {
            return true;
        }
        f();
        tokio::time::sleep(step).await;
    }
    done()
}

/// Await a future with a bound in virtual time (600 s).
///
/// # Panics
/// When the bound passes first.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), fut)
        .await
        .expect("bounded wait")
}
