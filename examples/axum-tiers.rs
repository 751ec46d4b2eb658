//! Run with: `cargo run --example axum-tiers` (then `curl -i -X POST -H 'x-waitstate-tag: free' 127.0.0.1:3000/search`)
//!
//! An axum app with three tiers (`enterprise`, `pro`, `free`, read from the
//! `x-waitstate-tag` header) whose rules live in `axum-tiers.toml`. Requests cost by route:
//! `POST /search` costs 100, `GET /reports/{id}` costs 10, everything else 1. `/reports/{id}`
//! takes 300 ms, so a few of them as `free` make the first rule fire
//! (`when p95_latency of free > 200ms then block free`): `free` then gets `429` +
//! `Retry-After` + JSON while `enterprise` still passes. `/whoami` shows what the gate
//! decided; `/healthz` is never gated.
//!
//! In production, set or strip `x-waitstate-tag` in a trusted layer in front (an auth
//! middleware, a proxy): a client's own header is whatever the client sent.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use waitstate_axum::{Admitted, GateLayer, HeaderTagger, Rejected, RouteWeights, WaitState};
use waitstate_core::ConfigError;

/// The engine, configured by `axum-tiers.toml` next to this file.
pub(crate) fn waitstate() -> Result<WaitState, ConfigError> {
    WaitState::from_config_file(concat!(env!("CARGO_MANIFEST_DIR"), "/axum-tiers.toml"))
}

/// The gated app.
pub(crate) fn app(ws: WaitState) -> Router {
    let tagger = RouteWeights::new(HeaderTagger::new().fallback("free").exempt_path("/healthz"))
        .route(Method::POST, "/search", 100u32)
        .route(Method::GET, "/reports/{id}", 10u32);
    Router::new()
        .route("/", get(|| async { "home\n" }))
        .route("/search", post(|| async { "results\n" }))
        .route("/reports/{id}", get(report))
        .route("/whoami", get(whoami))
        .route("/export", post(export))
        .route("/healthz", get(|| async { "ok\n" }))
        // `layer`, not `route_layer`: unmatched requests (404s) are gated too. Both run
        // after routing in axum 0.8, so the tagger sees `/reports/{id}`.
        .layer(GateLayer::new(ws.clone(), tagger))
        .with_state(ws)
}

async fn report(Path(id): Path<u32>) -> String {
    tokio::time::sleep(Duration::from_millis(300)).await;
    format!("report {id}\n")
}

async fn whoami(Admitted(a): Admitted) -> String {
    format!(
        "tag {} (priority {}), weight {}\n",
        a.tag,
        a.tag.priority(),
        a.weight
    )
}

/// A second, handler-level gate: exports share one `exports` budget across tiers, and a
/// rejection answers exactly as the gate does.
async fn export(State(ws): State<WaitState>) -> Result<&'static str, Rejected> {
    let _permit = ws.admit("exports", 50.0)?;
    Ok("exported\n")
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("axum-tiers on http://{}", listener.local_addr()?);
    axum::serve(listener, app(waitstate()?)).await?;
    Ok(())
}
