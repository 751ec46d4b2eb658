//! Shared helpers: a control plane on 127.0.0.1:0, and bounded waits in virtual time.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use waitstate_control::{AppState, ControlConfig, ControlServer};

pub const PK: &str = "pk_test_1";
pub const SK: &str = "sk_test_1_secret";
pub const ORG: &str = "acme";

/// A control plane configuration: the engine part is `engine_toml` (tags, rules, timing).
pub fn config(server_toml: &str, engine_toml: &str) -> ControlConfig {
    let text = format!(
        "{engine_toml}\n[server]\nlisten = \"127.0.0.1:0\"\n{server_toml}\n\n[[keys]]\npublish_key = \"{PK}\"\nsecret_key = \"{SK}\"\norg_id = \"{ORG}\"\n"
    );
    ControlConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub async fn start(config: ControlConfig) -> ControlServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    ControlServer::serve(listener, AppState::new(config).unwrap())
}

/// Serve again on the same address (a restart: new, empty state). The port was ours a
/// moment ago; binding it again is retried a few times.
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

/// Await a future with a bound in virtual time.
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(600), fut)
        .await
        .expect("bounded wait")
}
