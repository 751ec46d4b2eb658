//! # waitstate-agent
//!
//! The WaitState engine as a sidecar or per-node process, for services in any language and
//! for proxies in front of them. One agent serves every client of a node, over TCP on
//! loopback and a unix-domain socket:
//!
//! - **the v1 agent protocol** the published WaitState SDKs speak with `agent_url`
//!   (`POST /gate`, `/report-latency`, `/report-error`, `/report-metric`; see
//!   [Routes](crate#routes));
//! - **admission tokens** (`POST /v1/admit`, `/v1/finish`): the agent holds the slot and
//!   measures in-flight and latency itself; a token whose client died expires;
//! - **an authorization endpoint** (`/authz`) in the shape of nginx `auth_request` and
//!   Envoy `ext_authz`: `200`, or `429` with `Retry-After`;
//! - **an Apollo Router coprocessor** (`POST /graphql/coprocessor`): tag by operation
//!   name, `{"break": 429}` when shed, latency from the response stage.
//!
//! The configuration is the SDK's TOML file (tags, rules, limits, admission, and an
//! optional control plane: the agent is then one instance of the fleet and pulses like the
//! SDK), plus an optional `[agent]` table ([`AgentConfig`]).
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use waitstate_agent::{Agent, AgentConfig, AgentServer};
//!
//! let config = AgentConfig::from_toml_str(r#"
//!     [tags]
//!     enterprise = 100
//!     free = 10
//!     [[rules]]
//!     rule = "when p95_latency of free > 500ms then block free"
//!     [agent]
//!     listen = "127.0.0.1:7300"
//! "#)?;
//! let server = AgentServer::bind(Agent::new(config)?).await?;
//! // ... until SIGTERM:
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Routes
//!
//! | route | for | answer |
//! |---|---|---|
//! | `POST /gate` `{"tag","weight"}` | v1 SDKs | `200 {"allowed","reason"}` (v1 reason names; ours in `detail`), `Retry-After` when refused |
//! | `POST /report-latency` `{"ms","tag"}`, `/report-error` `{"tag"}`, `/report-metric` `{"metric","tag","value"}` | v1 SDKs | `204` |
//! | `POST /v1/admit` `{"tag","weight","cohort","maxWaitMs","ttlMs"}` | clients that want the agent to measure | `200 {"token",…}`, or `429` + `Retry-After` |
//! | `POST /v1/finish` `{"token","outcome"}` | the same | `204`, or `404` for a token unknown or expired |
//! | `ANY /authz`, `/authz/{*path}` | nginx `auth_request`, Envoy `ext_authz` | `200`, or `429` + `Retry-After` |
//! | `POST /graphql/coprocessor` | Apollo Router | the router's coprocessor JSON |
//! | `GET /healthz`, `GET /v1/status` | probes, people | `ok`; tokens, in flight, reports |
//!
//! A missing tag or weight in a body is read from `x-waitstate-tag` / `x-waitstate-weight`
//! (trust them only from a client you trust: the agent listens on loopback for that
//! reason). Bad input is a `4xx` with `{"error","message"}`, never a panic.
//!
//! ## v1 reports and what the engine counts
//!
//! `/gate` is a stateless decision (as the v1 SDK's own `gate`): it counts one offered
//! request and holds no slot, so in-flight rules and adaptive admission see nothing of v1
//! clients; use the tokens for that. A `/report-latency` waits `[agent] pair_window`
//! (200 ms) for the `/report-error` the SDKs' middlewares send right after it for a 5xx,
//! and is then recorded as one completed request (failed if the error came), with no
//! admission and no slot ([`WaitState::record`]): a report is never refused, even while its
//! tag is blocked, and does not count as one more request offered. Tags the clients name
//! count as themselves when the configuration declares them (`[tags]`), as the default tag
//! otherwise, so clients cannot fill the tag registry.

mod agent;
mod authz;
mod config;
mod graphql;
mod routes;
mod server;
mod tokens;
mod tokens_api;
mod v1;

pub use agent::Agent;
pub use config::{AgentConfig, AgentSettings, AuthzSettings, GraphqlSettings};
pub use server::AgentServer;
pub use waitstate_core::{Config, ConfigError, WaitState};

impl Agent {
    /// The agent's routes as an axum [`Router`](axum::Router) (what [`AgentServer`]
    /// serves), for tests with `tower::ServiceExt::oneshot` or to nest in another app.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }
}

/// The README (the registry page): its example runs with `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
