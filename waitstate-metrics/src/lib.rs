//! # waitstate-metrics
//!
//! Prometheus metrics for a [`WaitState`] engine: per tag and reason, the requests admitted,
//! rejected and their ends; requests in flight; latency histograms on the engine's own
//! bucket edges; each rule's state; adaptive admission's limit, baseline and queue per
//! priority level; the control-plane client's lease and safe mode.
//!
//! Nothing is recorded twice: the engine already counts every request on its hot path
//! (striped atomics, no lock), and this crate reads those counters when Prometheus scrapes,
//! through a [`prometheus_client`] [`Collector`]. A service that is never scraped pays
//! nothing, and a scrape costs one pass over the tracked tags.
//!
//! ```
//! use waitstate_core::WaitState;
//! use waitstate_metrics::Exporter;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ws = WaitState::builder().tag("enterprise", 100).tag("free", 10).build().unwrap();
//! drop(ws.admit("free", 1.0));
//!
//! let text = Exporter::new(&ws).render();
//! assert!(text.contains("waitstate_requests_admitted_total{tag=\"free\"} 1\n"));
//! assert!(text.contains("# TYPE waitstate_request_duration_seconds histogram\n"));
//! # }
//! ```
//!
//! In one line, with the `axum` feature:
//!
//! ```
//! # #[cfg(feature = "axum")]
//! # fn app(ws: waitstate_core::WaitState) -> axum::Router {
//! # use axum::Router;
//! let app = Router::new().route("/metrics", waitstate_metrics::axum_route(&ws));
//! # app }
//! ```
//!
//! or with the `actix-web` feature:
//!
//! ```
//! # #[cfg(feature = "actix-web")]
//! # fn app(ws: waitstate_core::WaitState) {
//! # use actix_web::App;
//! # let _ =
//! App::new().service(waitstate_metrics::actix_resource("/metrics", &ws))
//! # ; }
//! ```
//!
//! To add the engine's metrics to a [`Registry`] a service already has, register the
//! [`Exporter`] there ([`Exporter::register`]).
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | no | `axum_route` |
//! | `actix-web` | no | `actix_resource` |
//! | `control-plane` | no | the `waitstate_control_*` metrics (needs `waitstate-core/control-plane`) |
//!
//! ## The metrics
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `waitstate_requests_admitted_total` | counter | `tag` |
//! | `waitstate_requests_rejected_total` | counter | `tag`, `reason` (`tag_blocked`, `throttled`, `priority_shed`, ... every reason, zeros included) |
//! | `waitstate_requests_would_reject_total` | counter | `tag` (dry run: computed, counted, let through) |
//! | `waitstate_admitted_weight_total` | counter | `tag` (weight units) |
//! | `waitstate_requests_ended_total` | counter | `tag`, `ending` (`success`, `error`, `cancelled`, `panicked`) |
//! | `waitstate_requests_in_flight` | gauge | `tag` |
//! | `waitstate_request_duration_seconds` | histogram | `tag` (requests that ended as `success` or `error`) |
//! | `waitstate_tags_tracked` | gauge | |
//! | `waitstate_queue_waiting` | gauge | `priority` (requests waiting for a slot now) |
//! | `waitstate_queued_total` | counter | `priority` (requests that had to wait) |
//! | `waitstate_queue_timed_out_total` | counter | `priority` (waiters turned away) |
//! | `waitstate_queue_wait_seconds_total` | counter | `priority` (time granted waiters waited) |
//! | `waitstate_level_in_flight` | gauge | `priority` |
//! | `waitstate_admission_limit` | gauge | (`+Inf` when nothing binds) |
//! | `waitstate_admission_baseline_seconds` | gauge | (once learned) |
//! | `waitstate_admission_service_time_seconds` | gauge | (once measured) |
//! | `waitstate_admission_in_flight` | gauge | |
//! | `waitstate_admission_max_wait_seconds` | gauge | |
//! | `waitstate_admission_adaptive`, `waitstate_admission_probing` | gauge | (0 or 1) |
//! | `waitstate_rule_state` | gauge | `rule`, `state` (`idle`, `pending`, `firing`, `cooling`, `releasing`), `dry_run`: 1 for the rule's state, 0 for the others |
//! | `waitstate_rule_release_step` | gauge | `rule` (1..=3 while releasing, else 0) |
//! | `waitstate_rule_value` | gauge | `rule` (the metric's value in the last window; absent without data) |
//! | `waitstate_rule_shed_levels` | gauge | `rule` (`shed`: priority levels shed) |
//! | `waitstate_control_synced`, `_lease_valid`, `_safe_mode` | gauge | (feature `control-plane`, with a control plane configured: 0 or 1) |
//! | `waitstate_control_pulses_total`, `waitstate_control_syncs_total` | counter | `result` (`ok`, `failed`) |
//! | `waitstate_control_policies_rejected_total` | counter | |
//!
//! ## Bounded label cardinality
//!
//! Every label takes a bounded set of values, so a scrape's size is bounded whatever the
//! traffic: `tag` is one of the engine's tracked tags, which the engine caps (`tag_cap`,
//! 256 by default; past it every new tag counts as `__overflow__`, and a tag only a client
//! chose is counted as `__default__` unless declared); `reason`, `ending`, `state` and
//! `result` are fixed sets; `priority` is one of the configured priority levels; `rule` is
//! the canonical text of a configured rule. A tagger that leaks user ids into tags cannot
//! grow the scrape past `tag_cap` × (9 reasons + 13) series.
//!
//! ## Latency buckets
//!
//! The engine records latency in a fixed log-linear layout (16 buckets per power of two of
//! microseconds, [`waitstate_core::histogram`]). The exported histogram's `le` bounds are
//! the powers of two of that layout from 2^8 µs (0.256 ms) to 2^26 µs (67.1 s): each is an
//! edge of the engine's buckets, so every exported count is exact, not re-bucketed. (The
//! Prometheus defaults, `0.005, 0.01, 0.025, ...`, fall inside engine buckets and could only
//! be approximated.)
#![cfg_attr(docsrs, feature(doc_cfg))]

mod buckets;
mod collector;
#[cfg(any(feature = "axum", feature = "actix-web"))]
mod http;

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::registry::Registry;
use waitstate_core::WaitState;

pub use buckets::LE_SECONDS;
#[cfg(feature = "actix-web")]
pub use http::actix_resource;
#[cfg(feature = "axum")]
pub use http::axum_route;
/// The collector trait this crate implements (re-exported so a registry can be fed without
/// naming the `prometheus-client` version).
pub use prometheus_client::collector::Collector;

/// The `Content-Type` of [`Exporter::render`]: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The `Content-Type` of [`Exporter::render_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads a [`WaitState`]'s counters, rules and admission state at scrape time and encodes
/// them as Prometheus metrics. Cheap to clone (the engine is shared, not copied).
#[derive(Clone)]
pub struct Exporter {
    registry: Arc<Registry>,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter").finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter of `ws`'s metrics.
    pub fn new(ws: &WaitState) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector::EngineCollector::new(ws.clone())));
        Self {
            registry: Arc::new(registry),
        }
    }

    /// Add `ws`'s metrics to a registry the service already has: they are read at each
    /// encoding of `registry`.
    pub fn register(ws: &WaitState, registry: &mut Registry) {
        registry.register_collector(Box::new(collector::EngineCollector::new(ws.clone())));
    }

    /// The metrics in the Prometheus text format, version 0.0.4 ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a `String` cannot fail, and the collector only fails on the writer.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The metrics in the OpenMetrics text format ([`OPENMETRICS_CONTENT_TYPE`]), ending
    /// with `# EOF`.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = encode_registry(&mut out, &self.registry);
        out.push_str("# EOF\n");
        out
    }
}

#[cfg(test)]
mod tests;

/// The README (the registry page): its example runs with `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
