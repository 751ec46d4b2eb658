//! Run with: `cargo run --example grpc`
//!
//! A tonic gRPC server (the standard health service) behind `GateLayer`. A rejected gRPC
//! call gets a gRPC status, not a bare 429: `UNAVAILABLE` (14) when load is shed
//! (`tag_blocked`, `throttled`, `priority_shed`, `concurrency_limited`, `kill_signal`),
//! `RESOURCE_EXHAUSTED` (8) for quotas (`rate_limited`, `over_weight`), with a
//! `grpc-message` and a `grpc-retry-pushback-ms` hint. The tag travels as the
//! `x-waitstate-tag` metadata key.

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use waitstate_core::WaitState;
use waitstate_tower::{GateLayer, HeaderTagger};

/// The engine: tiers and rules.
pub(crate) fn waitstate() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .rule("when error_rate > 5% then throttle free to 50%")
        .build()
        .expect("valid configuration")
}

/// Serve the gated gRPC app on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    ws: WaitState,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    Server::builder()
        .layer(GateLayer::new(ws, HeaderTagger::new()))
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("gRPC health service on {}", listener.local_addr()?);
    serve(listener, waitstate()).await?;
    Ok(())
}
