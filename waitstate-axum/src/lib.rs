//! # waitstate-axum
//!
//! WaitState for axum: gate a [`Router`](axum::Router) on the health of its backend, so the
//! lowest-priority traffic is shed first while the important traffic passes. This crate is
//! thin: the middleware is `waitstate-tower`'s [`GateLayer`], re-exported here; what it
//! adds is route-aware tagging from axum's [`MatchedPath`](axum::extract::MatchedPath),
//! extractors ([`Admitted`], [`AdmittedTag`]), [`IntoResponse`](axum::response::IntoResponse)
//! for rejections ([`Rejected`]) and typed per-route weights ([`RouteWeights`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, body::Body, http::{Request, StatusCode}, routing::get};
//! use tower::ServiceExt;
//! use waitstate_axum::{GateLayer, HeaderTagger, WaitState};
//!
//! let ws = WaitState::builder().tag("enterprise", 100).tag("free", 10).build()?;
//! let app = Router::new()
//!     .route("/", get(|| async { "ok" }))
//!     .layer(GateLayer::new(ws.clone(), HeaderTagger::new()));
//!
//! // Block `free` (as a reflex rule or a control plane would).
//! let mut policy = waitstate_axum::Policy::default();
//! policy.tag_max_weights.insert("free".into(), 0.0);
//! ws.engine().set_remote_policy(Some(policy))?;
//!
//! let req = Request::get("/").header("x-waitstate-tag", "free").body(Body::empty())?;
//! let res = app.clone().oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()["retry-after"], "1");
//! assert_eq!(res.headers()["content-type"], "application/json");
//!
//! let req = Request::get("/").header("x-waitstate-tag", "enterprise").body(Body::empty())?;
//! assert_eq!(app.oneshot(req).await?.status(), StatusCode::OK);
//! # Ok(()) }
//! ```
//!
//! ## Where to put the gate
//!
//! In axum 0.8 both [`Router::layer`](axum::Router::layer) and
//! [`Router::route_layer`](axum::Router::route_layer) wrap each route's handler, so they
//! run *after* routing and the gate knows the matched route pattern (axum's
//! `MatchedPath`, which taggers read as [`RequestView::route`]). Only a gate wrapped
//! around the whole router (`ServiceBuilder::new().layer(gate).service(router)`, or
//! `tower::Layer::layer(&gate, router)`) runs *before* routing.
//!
//! | | `route_layer` | `Router::layer` | around the router |
//! |---|---|---|---|
//! | runs | after routing | after routing | before routing |
//! | matched routes | gated, pattern known | gated, pattern known | gated, **pattern not known** |
//! | fallback (404) | not gated | gated, no pattern | gated, no pattern |
//! | wrong method on a route (405) | gated | gated | gated |
//! | nested routers ([`Router::nest`](axum::Router::nest)) | full pattern (`/api/users/{id}`) | full pattern | no pattern |
//!
//! Route-aware taggers ([`PathTagger`], [`RouteWeights`]) match the route pattern when
//! there is one and the request's path otherwise: a static route (`POST /search`) matches
//! everywhere, a route with parameters (`/users/{id}`) only where the pattern is known.
//! `Router::layer` is the usual choice (every request gated, weights by route);
//! `route_layer` leaves the fallback (404s) ungated, and, as axum has it, panics on a
//! router that has no routes yet; wrapping the router gates it as one opaque
//! service (mounted among non-axum services, say), with per-route weights for static
//! routes only.
//!
//! ## Per-route weight
//!
//! A request's *tag* says who it is (a tier, from a header or authenticated state); its
//! *weight* says what it costs. [`RouteWeights`] keeps the tag of any tagger and sets the
//! weight from a typed route table (`POST /search` costs 100):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, body::Body, http::{Method, Request, StatusCode}, routing::{get, post}};
//! use tower::ServiceExt;
//! use waitstate_axum::{GateLayer, HeaderTagger, Policy, RouteWeights, WaitState};
//!
//! let ws = WaitState::builder().tag("pro", 50).tag("free", 10).build()?;
//! let tagger = RouteWeights::new(HeaderTagger::new())
//!     .route(Method::POST, "/search", 100u32)
//!     .any_method("/users/{id}", 5u32);
//! let app = Router::new()
//!     .route("/", get(|| async { "home" }))
//!     .route("/search", post(|| async { "results" }))
//!     .route("/users/{id}", get(|| async { "user" }))
//!     .route_layer(GateLayer::new(ws.clone(), tagger));
//!
//! // `free` may spend at most 50 units per request.
//! let mut policy = Policy::default();
//! policy.tag_max_weights.insert("free".into(), 50.0);
//! ws.engine().set_remote_policy(Some(policy))?;
//!
//! let search = Request::post("/search").header("x-waitstate-tag", "free").body(Body::empty())?;
//! assert_eq!(app.clone().oneshot(search).await?.status(), StatusCode::TOO_MANY_REQUESTS);
//! let home = Request::get("/").header("x-waitstate-tag", "free").body(Body::empty())?;
//! assert_eq!(app.oneshot(home).await?.status(), StatusCode::OK);
//! # Ok(()) }
//! ```
//!
//! ## In handlers
//!
//! - [`Admitted`]: what the gate decided (tag, weight, dry-run verdict). Without a gate in
//!   front, or for an exempt request, it rejects with a 500 ([`GateMissing`]); extract
//!   `Option<Admitted>` where that is expected.
//! - [`AdmittedTag`]: the tag the request counts under (same rules).
//! - [`Rejected`]: return a [`Rejection`] (from [`WaitState::admit`] on a second,
//!   handler-level operation) and the client gets exactly what the gate sends.
//!
//! ## Taggers and trust
//!
//! The taggers are `waitstate-core`'s, framework-free: one [`HeaderTagger`] value serves
//! tower, axum and actix-web. **A tag read from a client-supplied header is whatever the
//! client sent**: trust it only when a layer in front sets or strips it (see
//! [`waitstate_core::tagger`]).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `control-plane` | no | `waitstate-core`'s control-plane client (reqwest, rustls, ring): a `[control_plane]` table or `Builder::control_plane` joins this instance to a fleet. Without it a configured control plane is a [`ConfigError`](waitstate_core::ConfigError) when the [`WaitState`] is built |

mod extract;
mod response;
mod route;

pub use extract::{Admitted, AdmittedTag, GateMissing};
pub use response::Rejected;
pub use route::{InvalidWeight, RouteWeights, Weight};
pub use waitstate_core::{Policy, Reason, Rejection, Tag, WaitState};
pub use waitstate_tower::{
    Admission, ApiKeyTagger, ClaimTagger, Claims, Classify, ConstTagger, DRY_RUN_HEADER,
    DefaultClassifier, DefaultRejection, ExtensionTagger, GateLayer, GateService, HeaderTagger,
    HttpExtensions, MakeRejection, MatchedRoute, Outcome, PathTagger, PeerCohort, RejectionContext,
    RequestView, ResponseBody, ResponseFuture, Tagger, Tagging, cohort_of, extension,
};

/// The README's axum section compiles and its assertions hold (run by `cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README-section.md")]
struct ReadmeSection;

/// The README (the registry page): its example runs with `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
