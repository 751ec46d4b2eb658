//! # waitstate-tests
//!
//! WaitState's tests that cross crates; each crate's own `tests/` test that crate.
//!
//! - `tests/fleet.rs`, `tests/faults.rs`, `tests/compat_v1.rs`: SDK instances (this
//!   workspace's runtime, and the published `waitstate` 0.1) against the
//!   `waitstate-control` server ([`control`]).
//!
//! Time is virtual throughout (`tokio::time::pause()`): nothing sleeps for real.

pub mod control;
