//! # waitstate-actix
//!
//! WaitState for actix-web: the [`Gate`] middleware gates each request on the backend's
//! health. A [`Tagger`] picks the request's tag and weight, the engine decides, a rejection
//! becomes a prioritized 429 (or a gRPC status), and the response's latency (to the end of
//! its body) and outcome flow back to the engine as health telemetry for the reflex rules.
//!
//! ```
//! # #[actix_web::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use actix_web::{App, HttpResponse, http::StatusCode, test, web};
//! use waitstate_actix::{Gate, HeaderTagger, Rejection, WaitState};
//! use waitstate_core::Policy;
//!
//! let ws = WaitState::builder().tag("enterprise", 100).tag("free", 10).build()?;
//! let app = test::init_service(
//!     App::new()
//!         .wrap(Gate::new(ws.clone(), HeaderTagger::new()))
//!         .route("/", web::get().to(|| async { HttpResponse::Ok().body("ok") })),
//! )
//! .await;
//!
//! // Block `free` (as a rule or a control plane would).
//! let mut policy = Policy::default();
//! policy.tag_max_weights.insert("free".into(), 0.0);
//! ws.engine().set_remote_policy(Some(policy))?;
//!
//! let req = test::TestRequest::get().insert_header(("x-waitstate-tag", "free"));
//! let res = test::call_service(&app, req.to_request()).await;
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(res.headers().get("retry-after").unwrap(), "1");
//! assert_eq!(res.headers().get("content-type").unwrap(), "application/json");
//! assert!(res.response().extensions().get::<Rejection>().is_some());
//! assert_eq!(
//!     test::read_body(res).await,
//!     r#"{"error":"rate_limited","reason":"tag_blocked","retryAfter":1,"tag":"free"}"#
//! );
//!
//! let req = test::TestRequest::get().insert_header(("x-waitstate-tag", "enterprise"));
//! let res = test::call_service(&app, req.to_request()).await;
//! assert_eq!(res.status(), StatusCode::OK);
//! # Ok(()) }
//! ```
//!
//! ## What it does, in order
//!
//! 1. `poll_ready` forwards to the inner service; nothing is parked there.
//! 2. `call` asks the tagger for tag, weight, cohort and exemption. Exempt requests (health
//!    checks, probes) pass ungated and uncounted.
//! 3. The engine decides. A rejection is a response, not an error: the [`MakeRejection`]
//!    builder makes it ([`DefaultRejection`]: 429 + `Retry-After` + JSON, or a gRPC status
//!    for `application/grpc` requests, exactly as `waitstate-tower` answers), and the
//!    machine-readable [`Rejection`] is put in the response's extensions. The handler is
//!    never called.
//! 4. An admitted request carries an [`Admission`] in its extensions (tag, weight, dry-run
//!    verdict; `req.extensions().get::<Admission>()` in a handler) and holds an in-flight
//!    slot. The slot is released, and latency and outcome recorded, when the response body
//!    ends, or when the future, the response or the body is dropped, whichever comes first.
//! 5. Outcome: [`DefaultClassifier`] counts 5xx as errors, 4xx not; replace it with
//!    [`Gate::with_classifier`].
//!
//! In dry run (engine or rule), nothing is rejected; a response that would have been is
//! marked `x-waitstate-dry-run: <reason>` and counted.
//!
//! ## Workers
//!
//! actix-web builds one `App`, so one middleware, per worker. Create the [`WaitState`] once,
//! outside the server's factory, and move clones in: every worker then shares one policy,
//! one set of counters and one budget (a `limit free to 100/s` is 100/s for the process,
//! not per worker).
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use waitstate_actix::{Gate, HeaderTagger, WaitState};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ws = WaitState::from_config_file("waitstate.toml")?;
//! let gate = Gate::new(ws, HeaderTagger::new().exempt_path("/healthz"));
//! HttpServer::new(move || App::new().wrap(gate.clone()))
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Taggers
//!
//! The taggers are `waitstate-core`'s, framework-free: the same [`HeaderTagger`] value
//! serves tower, axum and actix-web. A route-aware tagger ([`PathTagger`] with patterns
//! such as `/users/{id}`) sees actix-web's matched pattern; it is computed only when the
//! tagger asks for it. **A tag read from a client-supplied header is whatever the client
//! sent**: trust it only when a layer in front sets or strips it (see
//! [`waitstate_core::tagger`]).
//!
//! ## Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `control-plane` | no | `waitstate-core`'s control-plane client (reqwest, rustls, ring): a `[control_plane]` table or `Builder::control_plane` joins this instance to a fleet. Without it a configured control plane is a [`ConfigError`](waitstate_core::ConfigError) when the [`WaitState`] is built |
//!
//! The crate needs actix-web without its default features and `waitstate-core` with its
//! `runtime`.

mod body;
mod classify;
mod extract;
mod future;
mod gate;
mod identity;
mod rejection;
mod response;
mod service;
mod view;

pub use body::ResponseBody;
pub use classify::{Classify, DefaultClassifier};
pub use extract::{Admitted, AdmittedTag, GateMissing};
pub use future::{DRY_RUN_HEADER, ResponseFuture};
pub use gate::Gate;
pub use identity::{ActixExtensions, ClaimTagger, ExtensionTagger, extension};
pub use rejection::{DefaultRejection, MakeRejection, RejectionContext, grpc_response};
pub use response::Rejected;
pub use service::GateMiddleware;
pub use waitstate_core::tagger::{
    Admission, ApiKeyTagger, COHORT_HEADER, Claims, ConstTagger, GrpcTagger, HeaderTagger,
    PathTagger, PeerCohort, RequestView, TAG_HEADER, Tagger, Tagging, cohort_of,
};
pub use waitstate_core::{Reason, Rejection, Tag, WaitState};

/// The README's actix-web section compiles (run by `cargo test --doc`).
#[cfg(doctest)]
#[doc = include_str!("../README-section.md")]
struct ReadmeSection;

/// The README (the registry page): its example runs with `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
