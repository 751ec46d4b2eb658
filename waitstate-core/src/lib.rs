//! # waitstate-core
//!
//! The engine of WaitState: it gates traffic inside a service on the health of its
//! backend. Every request has a *tag* (its traffic class: `enterprise`, `pro`, `free`) and a
//! *weight* (its cost). Reflex rules watch latency percentiles, error rate, in-flight and
//! custom metrics; when one fires (`when p95_latency > 500ms then block free`) the
//! lowest-priority traffic is shed first while the important traffic passes.
//!
//! The decision is in-process and synchronous: one atomic load of an immutable policy
//! snapshot, one tag lookup, a few relaxed atomics. No lock, no allocation, no I/O.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `runtime` | yes | [`WaitState`]: builder, TOML config file, RAII [`Permit`], the background task that evaluates rules every tick (tokio) |
//! | `control-plane` | no | the control-plane client (implies `runtime`; adds reqwest with rustls and ring): `Builder::control_plane`, pulse and sync, lease and safe mode, `WaitState::control_status`, the `wire` module. Without it a configured control plane is a [`ConfigError`] when the handle is built |
//! | `toml` | with `runtime` | [`Config::from_toml_str`] |
//!
//! Without features the crate is the pure decision: [`Policy`] (the v1 wire document and
//! our extensions), [`Engine`] (tags, compiled policy, `decide`/`admit`, counters),
//! [`rule`] (the rule language), [`Reflex`] (the evaluator) and [`histogram`]. It reads no
//! clock: time is passed in.
//!
//! ## The pure engine, with time passed in
//!
//! ```
//! use std::time::Duration;
//! use waitstate_core::{Config, Demand, Engine, Policy, Reason, Reflex};
//!
//! let config = Config::from_toml_str(r#"
//!     [tags]
//!     enterprise = 100
//!     free = 10
//!     [[rules]]
//!     rule = "when p95_latency of free > 500ms then block free"
//! "#)?;
//! let engine = Engine::new(&config)?;
//! let mut reflex = Reflex::new(&config)?;
//! let mut now = Duration::ZERO;
//!
//! // free's requests take 800 ms...
//! for _ in 0..100 {
//!     let ticket = engine.admit(&Demand::new("free"), now).unwrap();
//!     ticket.finish(Duration::from_millis(800), false);
//! }
//! now += Duration::from_secs(1);
//! reflex.tick(now, &engine);
//!
//! // ...so the rule fires: free is blocked, enterprise passes.
//! let d = engine.decide(&Demand::new("free"), now);
//! assert_eq!(d.reason(), Some(Reason::TagBlocked));
//! assert!(engine.decide(&Demand::new("enterprise"), now).is_allowed());
//! # Ok::<(), waitstate_core::ConfigError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapter;
pub mod admission;
mod config;
mod decision;
mod engine;
mod error;
pub mod histogram;
mod limiter;
pub mod names;
mod policy;
pub mod reflex;
mod registry;
pub mod rule;
#[cfg(feature = "runtime")]
mod runtime;
mod stripe;
pub mod tagger;

pub use admission::{AdmissionState, LevelState};
pub use config::{
    AdmissionConfig, Config, ControlPlane, Limits, MetricsConfig, RuleConfig, SafeMode,
    parse_duration,
};
pub use decision::{Decision, Quota, Reason, Rejection};
pub use engine::{Admit, Demand, Engine, Queued, RECLAIM_QUIET, ReportError, Ticket};
pub use error::ConfigError;
pub use policy::{DEFAULT_PULSE_INTERVAL_MS, Policy};
pub use reflex::{Phase, Reading, Reflex, RuleStatus, TagReading};
pub use registry::{
    Aggregate, DEFAULT_TAG, Ending, MAX_CUSTOM_METRICS, MAX_TAG_LEN, OVERFLOW_TAG, Tag, TagCounters,
};
#[cfg(feature = "runtime")]
pub use runtime::{Builder, Entry, Permit, WaitForSlot, WaitState};
#[cfg(feature = "control-plane")]
#[cfg_attr(docsrs, doc(cfg(feature = "control-plane")))]
pub use runtime::{ControlStatus, wire};

/// The README (the registry page): its example runs with `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
