//! Run with: `cargo run --example hyper` (then `curl -i -H 'x-waitstate-tag: free' 127.0.0.1:3000/`)
//!
//! A plain hyper 1 server with `GateLayer` in front of a handler. The rule blocks `free`
//! when its p95 latency passes 200 ms; `/slow` takes 300 ms, so a few requests to
//! `/slow` as `free` make the rule fire, and `free` then gets `429` + `Retry-After` + JSON
//! while `enterprise` still passes.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Layer, service_fn};
use waitstate_core::WaitState;
use waitstate_tower::{GateLayer, HeaderTagger};

/// The engine: tiers and a rule.
pub(crate) fn waitstate() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .rule("when p95_latency of free > 200ms then block free")
        .build()
        .expect("valid configuration")
}

async fn handler(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(Response::new(Full::new(Bytes::from("ok\n"))))
}

/// Serve the gated app on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, ws: WaitState) {
    let layer = GateLayer::new(ws, HeaderTagger::new().exempt_path("/healthz"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let svc = layer.layer(service_fn(handler));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await;
        });
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, waitstate()).await;
    Ok(())
}
