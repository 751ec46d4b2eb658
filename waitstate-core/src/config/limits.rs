//! The `[admission]` and `[limits]` tables: what bounds admission.

use super::*;

/// Adaptive admission, the `[admission]` table: a concurrency limit learned from the
/// backend's service time, and a short wait per priority when it is full (see
/// [`crate::admission`]). Every key is optional; the defaults fit most services.
///
/// ```toml
/// [admission]
/// adaptive = true        # learn the limit (default); false: only [limits] concurrency binds
/// max_wait = "100ms"     # the longest wait for a slot (default: one learned service time, two for the top priority)
/// initial_limit = 8      # where learning starts (default 8)
/// min_limit = 2          # never below (default 2)
/// max_limit = 1000       # never above (default 1000)
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdmissionConfig {
    /// Learn the limit (default `true`).
    #[serde(default = "yes")]
    pub adaptive: bool,
    /// The longest a request waits for a slot; `None`: one learned service time (two for the
    /// top priority), within 10 ms..1 s. `"0s"` turns every wait into an immediate
    /// `concurrency_limited`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_duration_text"
    )]
    pub max_wait: Option<Duration>,
    /// Where learning starts.
    #[serde(default = "default_initial_limit")]
    pub initial_limit: u64,
    /// The learned limit never goes below this.
    #[serde(default = "default_min_limit")]
    pub min_limit: u64,
    /// The learned limit never goes above this.
    #[serde(default = "default_max_limit")]
    pub max_limit: u64,
}

fn yes() -> bool {
    true
}
fn default_initial_limit() -> u64 {
    8
}
fn default_min_limit() -> u64 {
    2
}
fn default_max_limit() -> u64 {
    1000
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            adaptive: true,
            max_wait: None,
            initial_limit: default_initial_limit(),
            min_limit: default_min_limit(),
            max_limit: default_max_limit(),
        }
    }
}

impl AdmissionConfig {
    /// Whether every setting is the default.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Turn learning off: only a static concurrency limit, if any, binds.
    pub fn fixed(mut self) -> Self {
        self.adaptive = false;
        self
    }

    /// The longest a request waits for a slot.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_limit == 0 {
            return Err(ConfigError::invalid(
                "admission.min_limit",
                "must be at least 1",
            ));
        }
        if self.max_limit < self.min_limit {
            return Err(ConfigError::invalid(
                "admission.max_limit",
                "must be at least admission.min_limit",
            ));
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return Err(ConfigError::invalid(
                "admission.initial_limit",
                "must be between admission.min_limit and admission.max_limit",
            ));
        }
        if self.max_wait.is_some_and(|w| w > Duration::from_secs(60)) {
            return Err(ConfigError::invalid(
                "admission.max_wait",
                "must be at most 60s: a request that waits longer is better turned away",
            ));
        }
        Ok(())
    }

    pub(crate) fn pool_settings(&self) -> crate::admission::PoolSettings {
        let mut limit = crate::admission::LimitSettings::default();
        limit.initial = self.initial_limit as f64;
        limit.min = self.min_limit as f64;
        limit.max = self.max_limit as f64;
        crate::admission::PoolSettings {
            adaptive: self.adaptive,
            limit,
            max_wait: self.max_wait,
        }
    }
}

/// Limits always in force: the `[limits]` table.
///
/// ```toml
/// [limits]
/// concurrency = 40            # requests in flight (see `limit concurrency to n`)
/// rate = { free = 200 }       # per tag, weight units per second (GCRA, burst 1 s)
/// ```
///
/// The same limits as the rule actions `limit concurrency to n` and `limit <tag> to r/s`,
/// without a condition: the engine holds them from the start, and every policy (a rule's,
/// the control plane's) is merged with them, the stricter value winning.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Most requests in flight, counted exactly: a cap on adaptive admission's learned limit
    /// (for a backend whose capacity you know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u64>,
    /// Per tag: weight units admitted per second.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rate: BTreeMap<String, f64>,
}

impl Limits {
    /// No limit.
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_empty()
    }

    /// At most `max` requests in flight.
    pub fn concurrency(mut self, max: u64) -> Self {
        self.concurrency = Some(max);
        self
    }

    /// `tag` admits at most `per_second` weight units a second.
    pub fn rate(mut self, tag: impl Into<String>, per_second: f64) -> Self {
        self.rate.insert(tag.into(), per_second);
        self
    }

    /// The limits as a policy (what the engine merges every other policy with).
    pub fn to_policy(&self) -> Policy {
        let mut p = Policy::default();
        p.concurrency_limit = self.concurrency;
        p.tag_rate_limits = self.rate.clone();
        p
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == Some(0) {
            return Err(ConfigError::invalid(
                "limits.concurrency",
                "must be at least 1",
            ));
        }
        for (tag, rate) in &self.rate {
            let key = || format!("limits.rate.{tag:.64}");
            check_tag_name(tag).map_err(|why| ConfigError::invalid(key(), why))?;
            if !(rate.is_finite() && *rate > 0.0) {
                return Err(ConfigError::invalid(
                    key(),
                    "must be a finite number of weight units per second above zero",
                ));
            }
        }
        Ok(())
    }
}
