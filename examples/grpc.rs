//! Run with: `cargo run --example grpc` (add `-- --interceptor` for the interceptor way)
//!
//! A tonic gRPC server (the standard health service) gated two ways:
//!
//! - **The layer** (`Server::builder().layer(GateLayer)`, the default): sees each call's
//!   method and its response, so tags can follow the method (per-method priorities with
//!   `GrpcTagger`) and latency and errors reach the rules.
//! - **The interceptor** (`GateInterceptor`, for services wired with tonic interceptors):
//!   sees metadata only, so tags come from metadata; it cannot see the response (see
//!   `waitstate_tower::interceptor` for what that costs).
//!
//! A rejected call gets a gRPC status either way, not a bare 429: `UNAVAILABLE` (14) when
//! load is shed (`tag_blocked`, `throttled`, `priority_shed`, `concurrency_limited`,
//! `kill_signal`), `RESOURCE_EXHAUSTED` (8) for quotas (`rate_limited`, `over_weight`),
//! with a `grpc-message` and a `grpc-retry-pushback-ms` hint. The caller's tier travels as
//! the `x-waitstate-tag` metadata key.

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use waitstate_core::WaitState;
use waitstate_tower::{GateInterceptor, GateLayer, GrpcTagger};

/// The engine: tiers and rules. `watch` (long-lived health streams) ranks below every
/// caller's tier, so it is shed first.
pub(crate) fn waitstate() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .tag("watch", 1)
        .rule("when error_rate > 5% then throttle free to 50%")
        .build()
        .expect("valid configuration")
}

/// Per-method priorities: `Watch` calls are `watch` whoever makes them; other calls take
/// the caller's tier from the `x-waitstate-tag` metadata key (trust it only if a proxy or
/// an auth layer in front sets it), `free` without one.
pub(crate) fn tagger() -> GrpcTagger {
    GrpcTagger::new("free")
        .method("/grpc.health.v1.Health/Watch", "watch", 1.0)
        .metadata_key("x-waitstate-tag")
}

/// Serve the gRPC app, gated by the layer, on `listener` until the task is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    ws: WaitState,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    Server::builder()
        .layer(GateLayer::new(ws, tagger()))
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// Serve the gRPC app, gated by the interceptor, on `listener` until the task is dropped.
/// The same tagger: its per-method entry does not apply here (an interceptor does not see
/// the method), its metadata key does.
pub(crate) async fn serve_intercepted(
    listener: TcpListener,
    ws: WaitState,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let gated = InterceptedService::new(health, GateInterceptor::new(ws, tagger()));
    Server::builder()
        .add_service(gated)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:50051".to_owned();
    let mut intercepted = false;
    for arg in args.by_ref() {
        match arg.as_str() {
            "--interceptor" => intercepted = true,
            other => addr = other.to_owned(),
        }
    }
    let listener = TcpListener::bind(&addr).await?;
    let way = if intercepted { "interceptor" } else { "layer" };
    println!(
        "gRPC health service on {}, gated by the {way}",
        listener.local_addr()?
    );
    if intercepted {
        serve_intercepted(listener, waitstate()).await?;
    } else {
        serve(listener, waitstate()).await?;
    }
    Ok(())
}
