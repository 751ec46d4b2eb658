//! # waitstate-tower
//!
//! WaitState for any tower stack (hyper, axum, tonic): [`GateLayer`] gates each request on
//! the backend's health. A [`Tagger`] picks the request's tag and weight, the engine
//! decides, a rejection becomes a prioritized 429 (or a gRPC status), and the response's
//! latency (to its head, by default) and outcome flow back to the engine as health
//! telemetry for the reflex rules.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use waitstate_core::{Policy, WaitState};
//! use waitstate_tower::{GateLayer, HeaderTagger};
//!
//! let ws = WaitState::builder().tag("enterprise", 100).tag("free", 10).build()?;
//! let app = ServiceBuilder::new()
//!     .layer(GateLayer::new(ws.clone(), HeaderTagger::new()))
//!     .service(service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
//!     }));
//!
//! // Block `free` (as a rule or a control plane would).
//! let mut policy = Policy::default();
//! policy.tag_max_weights.insert("free".into(), 0.0);
//! ws.engine().set_remote_policy(Some(policy))?;
//!
//! let req = Request::get("/").header("x-waitstate-tag", "free").body(Full::default())?;
//! let res = app.clone().oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers()["retry-after"], "1");
//! assert_eq!(res.headers()["content-type"], "application/json");
//!
//! let req = Request::get("/").header("x-waitstate-tag", "enterprise").body(Full::default())?;
//! assert_eq!(app.oneshot(req).await?.status(), StatusCode::OK);
//! # Ok(()) }
//! ```
//!
//! ## What it does, in order
//!
//! 1. `poll_ready` forwards to the inner service; nothing is parked there.
//! 2. `call` asks the tagger for tag, weight, cohort and exemption. Exempt requests (health
//!    checks, probes) pass ungated and uncounted.
//! 3. The engine decides. A rejection is a response, not an error (`Error = S::Error`): the
//!    [`MakeRejection`] builder makes it ([`DefaultRejection`]: 429 + `Retry-After` + JSON,
//!    or a gRPC status for `application/grpc` requests), and the machine-readable
//!    [`Rejection`] is put in the response's extensions.
//! 4. An admitted request carries an [`Admission`] in its extensions (tag, weight, dry-run
//!    verdict) and holds an in-flight slot. The slot is released, and latency and outcome
//!    recorded, when the response body ends, or when the future, the response or the body is
//!    dropped, whichever comes first.
//! 5. Outcome: [`DefaultClassifier`] counts 5xx and gRPC server-trouble statuses (in headers
//!    or trailers) as errors, 4xx not; replace it with [`GateLayer::with_classifier`].
//!
//! In dry run (engine or rule), nothing is rejected; a response that would have been is
//! marked `x-waitstate-dry-run: <reason>` and counted.
//!
//! ## Taggers
//!
//! The taggers are `waitstate-core`'s, framework-free: the same [`HeaderTagger`] value
//! serves tower, axum and actix-web. **A tag read from a client-supplied header is whatever
//! the client sent**: trust it only when a layer in front sets or strips it (see
//! [`waitstate_core::tagger`]).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `control-plane` | no | `waitstate-core`'s control-plane client (reqwest, rustls, ring): a `[control_plane]` table or `Builder::control_plane` joins this instance to a fleet. Without it a configured control plane is a [`ConfigError`](waitstate_core::ConfigError) when the [`WaitState`] is built |
//! | `axum` | no | axum's `MatchedPath` as the request's route, `ConnectInfo` as its peer address (`waitstate-axum` turns it on) |
//! | `tonic` | no | `GateInterceptor`, a tonic interceptor; the peer address from tonic's `TcpConnectInfo` |
//! | `client` | no | the `client` module: `ClientLayer` and `RetryPolicy` carry the tag downstream, honour pushback, throttle adaptively, retry within a budget |
//! | `reqwest` | no | `ClientMiddleware` for `reqwest-middleware` (implies `client`) |
//! | `tracing` | no | a `tracing` span per gated request (`waitstate.gate` at DEBUG: tag, priority, decision, reason) |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod classify;
#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
mod future;
mod identity;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod interceptor;
mod layer;
mod rejection;
mod service;
mod trace;
mod view;

pub use body::ResponseBody;
pub use classify::{Classify, DefaultClassifier, Outcome};
pub use future::{DRY_RUN_HEADER, ResponseFuture};
pub use identity::{ClaimTagger, ExtensionTagger, HttpExtensions, PeerAddr, extension};
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use interceptor::{GateInterceptor, InterceptedPermit};
pub use layer::GateLayer;
pub use rejection::{DefaultRejection, MakeRejection, RejectionContext, grpc_response};
pub use service::GateService;
pub use view::MatchedRoute;
pub use waitstate_core::tagger::{
    Admission, ApiKeyTagger, COHORT_HEADER, Claims, ConstTagger, GrpcTagger, HeaderTagger,
    PathTagger, PeerCohort, RequestView, TAG_HEADER, Tagger, Tagging, cohort_of,
};
pub use waitstate_core::{Reason, Rejection, Tag, WaitState};

/// The README (the registry page): its example runs with `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
