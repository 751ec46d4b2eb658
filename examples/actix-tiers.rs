//! Run with: `cargo run --example actix-tiers` (then `curl -i -X POST -H 'x-waitstate-tag: free' 127.0.0.1:8080/search`)
//!
//! An actix-web app with three tiers (`enterprise`, `pro`, `free`, read from the
//! `x-waitstate-tag` header) whose rules live in `actix-tiers.toml`. Requests cost by route:
//! `POST /search` costs 100, `GET /reports/{id}` costs 10, everything else 1 (a tagger of
//! our own wraps the `HeaderTagger` and reads actix-web's matched route). `/reports/{id}`
//! takes 300 ms, so a few of them as `free` make the first rule fire
//! (`when p95_latency of free > 200ms then block free`): `free` then gets `429` +
//! `Retry-After` + JSON while `enterprise` still passes. `/whoami` shows what the gate
//! decided; `/healthz` is never gated.
//!
//! In production, set or strip `x-waitstate-tag` in a trusted layer in front (an auth
//! middleware, a proxy): a client's own header is whatever the client sent.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpResponse, HttpServer, web};
use waitstate_actix::{Admitted, Gate, HeaderTagger, RequestView, Tagger, Tagging, WaitState};
use waitstate_core::ConfigError;

/// The engine, configured by `actix-tiers.toml` next to this file.
pub(crate) fn waitstate() -> Result<WaitState, ConfigError> {
    WaitState::from_config_file(concat!(env!("CARGO_MANIFEST_DIR"), "/actix-tiers.toml"))
}

/// The tier from the header, the weight from the route the request matched.
#[derive(Clone, Debug)]
struct TierTagger(HeaderTagger);

impl Tagger for TierTagger {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        let tagging = self.0.tag(req);
        if tagging.exempt {
            return tagging;
        }
        // `route()` is actix-web's matched pattern, computed only because we ask.
        match (req.method(), req.route()) {
            ("POST", Some("/search")) => tagging.weight(100.0),
            ("GET", Some("/reports/{id}")) => tagging.weight(10.0),
            _ => tagging,
        }
    }
}

/// The gated app: one per worker, all sharing the one engine `ws`.
pub(crate) fn app(
    ws: WaitState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let tagger = TierTagger(HeaderTagger::new().fallback("free").exempt_path("/healthz"));
    App::new()
        .wrap(Gate::new(ws, tagger))
        .route("/", web::get().to(|| async { "home\n" }))
        .route("/search", web::post().to(|| async { "results\n" }))
        .route("/reports/{id}", web::get().to(report))
        .route("/whoami", web::get().to(whoami))
        .route("/healthz", web::get().to(|| async { "ok\n" }))
}

async fn report(id: web::Path<u32>) -> String {
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    format!("report {id}\n")
}

async fn whoami(admitted: Option<Admitted>) -> HttpResponse {
    match admitted {
        Some(a) => HttpResponse::Ok().body(format!(
            "tag {} (priority {}), weight {}\n",
            a.tag,
            a.tag.priority(),
            a.weight
        )),
        None => HttpResponse::Ok().body("exempt\n"),
    }
}

#[allow(dead_code)]
#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    // One engine for every worker: one policy, one budget.
    let ws = waitstate()?;
    let server = HttpServer::new(move || app(ws.clone())).bind(&addr)?;
    for a in server.addrs() {
        println!("actix-tiers on http://{a}");
    }
    server.run().await?;
    Ok(())
}
