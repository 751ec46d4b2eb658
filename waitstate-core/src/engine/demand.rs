//! What a request asks of the gate.

use std::fmt;
use std::time::Duration;

#[allow(unused_imports)] // the docs link to them
use crate::registry::{DEFAULT_TAG, MAX_CUSTOM_METRICS};

/// What one request asks of the gate: its tag, its weight and, optionally, a cohort key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Demand<'a> {
    /// The traffic class. Empty means [`DEFAULT_TAG`].
    pub tag: &'a str,
    /// The cost in units (1.0 by default). NaN, negative or infinite is `over_weight`.
    pub weight: f64,
    /// A stable hash of the user or API key: throttling then turns away the same cohorts
    /// each time.
    pub cohort: Option<u64>,
    /// The longest the client will wait for a slot (its own deadline, e.g. from
    /// `grpc-timeout`); the level's maximum wait applies when it is shorter or absent.
    pub max_wait: Option<Duration>,
    /// The tag was chosen by the client (a header, an agent's JSON): an undeclared tag then
    /// counts as [`DEFAULT_TAG`] instead of taking a slot of its own, so a client cannot fill
    /// the registry with tags of its invention. Declared means configured in `[tags]`, named
    /// by a policy or rule, or already tracked.
    pub declared_only: bool,
}

impl<'a> Demand<'a> {
    /// A demand of weight 1 for `tag`.
    pub fn new(tag: &'a str) -> Self {
        Self {
            tag,
            weight: 1.0,
            cohort: None,
            max_wait: None,
            declared_only: false,
        }
    }

    /// Count an undeclared tag as [`DEFAULT_TAG`] (for tags a client chose).
    pub fn declared_only(mut self, yes: bool) -> Self {
        self.declared_only = yes;
        self
    }

    /// Set the weight.
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Set the longest the client will wait for a slot.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// Set the cohort key.
    pub fn cohort(mut self, cohort: u64) -> Self {
        self.cohort = Some(cohort);
        self
    }
}

/// Why [`Engine::report`](super::Engine::report) dropped a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReportError {
    /// Not 1..63 chars of `[a-z0-9_]` starting with a letter, or a reserved name.
    InvalidName,
    /// The value is NaN or infinite.
    NotFinite,
    /// Already tracking the most custom metrics ([`MAX_CUSTOM_METRICS`]).
    TooManyMetrics,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidName => "invalid metric name: 1..63 chars of [a-z0-9_], starting with a letter, not reserved",
            Self::NotFinite => "metric value is not finite",
            Self::TooManyMetrics => "too many custom metrics",
        })
    }
}

impl std::error::Error for ReportError {}
