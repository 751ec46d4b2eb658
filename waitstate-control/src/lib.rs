//! # waitstate-control
//!
//! A self-hostable WaitState control plane. It speaks the v1 protocol (PROTOCOL.md), so
//! both our SDK (`waitstate-core` with a [`ControlPlane`](waitstate_core::ControlPlane)) and
//! the existing v1 SDKs, unchanged, can point their `base_url` at it:
//!
//! | endpoint | what |
//! |---|---|
//! | `POST /v1/auth/token` | keys in, HS256 JWT out (`token`, `expiresAt`, `orgId`) |
//! | `GET /v1/policy/{orgId}` | `Bearer` token; the fleet policy |
//! | `POST /v1/pulse` | HMAC-signed telemetry (checked in constant time, timestamp within the skew window, replays refused, body size capped); answered with the fleet policy |
//! | `GET /healthz` | `ok` |
//! | `GET /metrics` | Prometheus text: pulses, refusals, instances, rules active, per-tag admitted/shed |
//!
//! Each org's instances (per `siteId` shard) form a fleet: their per-tag windows merge
//! (counts add, histograms merge, so the fleet p95 is a real percentile), the fleet rules run
//! on the SDK's own [`Reflex`](waitstate_core::Reflex), and every pulse is answered with
//! the fleet policy: v1 fields first (a `shed` floor becomes `tagMaxWeights: 0` for the
//! tags below it), then our extensions. `limit <tag> to N/s` is fleet-wide: each instance
//! gets its share of N by recent demand. Instances that stop pulsing age out.
//!
//! Telemetry is held in memory by default (one replica; a restart starts empty and fills
//! up again from the next pulses). With the `redis` feature and `[server] redis_url`, any
//! number of replicas share one fleet state in Redis and a restart resumes where it was
//! (with `[server] state_file`, also a restart while Redis is down: the replica answers
//! from its last copy of the fleet state): see the `store` module's docs (`src/store.rs`)
//! for how, and why.
//!
//! | feature | what |
//! |---|---|
//! | `redis` | fleet state in Redis (`redis` crate, tokio `ConnectionManager`): replicas, restarts that lose nothing |
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use waitstate_control::{ControlConfig, ControlServer};
//!
//! let config = ControlConfig::from_file("waitstate-control.toml")?;
//! let server = ControlServer::bind(config).await?;
//! println!("listening on {}", server.url());
//! # Ok(()) }
//! ```

mod auth;
mod config;
mod dashboard;
mod fleet;
mod instances;
mod jwt;
mod metrics;
mod refusal;
mod replay;
mod routes;
mod server;
mod state;
mod store;

pub use config::{ConfigFileError, ControlConfig, KeyConfig, ServerConfig};
pub use fleet::ShardView;
pub use instances::{InstanceOrder, InstancePage, InstanceView};
pub use routes::router;
pub use server::ControlServer;
pub use state::AppState;

/// The README (the registry page): its example compiles with `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
