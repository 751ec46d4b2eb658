//! # waitstate-tests
//!
//! WaitState's tests that cross crates; each crate's own `tests/` test that crate.
//!
//! - `tests/adapter_parity.rs`: the adapter parity table ([`parity`]): tower, axum and
//!   actix-web give the same answer to the same request in the same engine state, for
//!   every rejection reason, over plain HTTP and gRPC.
//! - `tests/fleet.rs`, `tests/faults.rs`, `tests/compat_v1.rs`: SDK instances (this
//!   workspace's runtime, and the published `waitstate` 0.1) against the
//!   `waitstate-control` server ([`control`]).
//! - `tests/replicas.rs`: control plane replicas over a real `redis-server` ([`redis`]),
//!   on an injected wall clock the test steps.
//!
//! Time is virtual throughout (`tokio::time::pause()`, or an injected clock): nothing sleeps
//! for real, but for the bounded waits of a real Redis to start and of a lease to expire.

pub mod control;
pub mod parity;
pub mod redis;
