//! The engine's settings, as code builds them and as the TOML file holds them.
//!
//! ```toml
//! default_priority = 0
//! [tags]
//! enterprise = 100
//! pro = 50
//! free = 10
//! [[rules]]
//! rule = "when p95_latency > 500ms for 5s then block free"
//! [[rules]]
//! rule = "when error_rate > 5% then throttle pro to 50%"
//! dry_run = true          # watch what it would shed before turning it on
//! [[rules]]
//! rule = "when p95_latency > 1s then shed"
//! cooldown = "10s"
//! [limits]                # always in force, whatever the rules say
//! rate = { free = 200 }   # free's budget, in weight units per second
//! [admission]             # adaptive admission: on by default, every key optional
//! max_wait = "100ms"      # the longest a request waits for a slot
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod control_plane;
mod limits;
#[cfg(test)]
mod tests;

pub use control_plane::{ControlPlane, SafeMode};
pub use limits::{AdmissionConfig, Limits};

use crate::error::ConfigError;
use crate::policy::Policy;
use crate::registry::{DEFAULT_TAG, OVERFLOW_TAG, check_tag_name};
use crate::rule::Rule;

/// Every setting of the engine. Build it in code or read it from TOML
/// ([`Config::from_toml_str`], feature `toml`); unknown keys are an error, so a typo is
/// caught at startup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Priority of a tag that `[tags]` does not list (lowest by default: 0).
    #[serde(default)]
    pub default_priority: i64,
    /// Tag name to priority (higher is more important).
    #[serde(default)]
    pub tags: BTreeMap<String, i64>,
    /// Reflex rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Limits always in force (`[limits]`), whatever the rules say; a rule can only make
    /// them stricter.
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Adaptive admission (`[admission]`): on by default, nothing to tune.
    #[serde(default, skip_serializing_if = "AdmissionConfig::is_default")]
    pub admission: AdmissionConfig,
    /// Most tags tracked one by one; past it, new tags count as `__overflow__`.
    #[serde(default = "default_tag_cap")]
    pub tag_cap: usize,
    /// Compute and count every decision, reject nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// How often the rules are evaluated (and the window is closed).
    #[serde(default = "default_tick", with = "duration_text")]
    pub tick: Duration,
    /// The window the rules' metrics are computed over.
    #[serde(default = "default_window", with = "duration_text")]
    pub window: Duration,
    /// How long a rule's condition must stay clear before its action starts to release.
    #[serde(default = "default_cooldown", with = "duration_text")]
    pub cooldown: Duration,
    /// How long each step of a gradual release lasts.
    #[serde(default = "default_release_step", with = "duration_text")]
    pub release_step: Duration,
    /// The retry-after hint for rejections that are not rate limits.
    #[serde(default = "default_retry_after", with = "duration_text")]
    pub retry_after: Duration,
    /// The control plane this instance pulses and syncs with (`[control_plane]`); `None`
    /// (the default): local rules only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ControlPlane>,
    /// `[metrics]`: the custom metrics the service reports, which rules may name.
    #[serde(default, skip_serializing_if = "MetricsConfig::is_empty")]
    pub metrics: MetricsConfig,
}

/// `[metrics]`: the custom metrics rules may name. A rule naming a metric that is neither
/// built in nor declared here is a [`ConfigError`] with the closest name, so a typo
/// (`when p95 > 500ms`) fails at load instead of never firing.
///
/// ```toml
/// [metrics]
/// custom = ["queue_depth", "db_pool_wait_ms"]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// The names the service reports with `report("queue_depth", value, tag)`.
    #[serde(default)]
    pub custom: Vec<String>,
}

impl MetricsConfig {
    /// Declare a custom metric.
    pub fn custom(mut self, name: impl Into<String>) -> Self {
        self.custom.push(name.into());
        self
    }

    fn is_empty(&self) -> bool {
        self.custom.is_empty()
    }
}

/// One rule in the configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuleConfig {
    /// The rule text, e.g. `when p95_latency > 500ms for 5s then block free`.
    pub rule: String,
    /// Watch this rule without enforcing it.
    #[serde(default)]
    pub dry_run: bool,
    /// This rule's cool-down (defaults to the engine's).
    #[serde(
        default,
        with = "opt_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub cooldown: Option<Duration>,
}

impl RuleConfig {
    /// A rule from its text, enforced, with the engine's cool-down.
    pub fn new(rule: impl Into<String>) -> Self {
        Self {
            rule: rule.into(),
            dry_run: false,
            cooldown: None,
        }
    }

    /// Watch without enforcing.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }

    /// This rule's cool-down.
    pub fn cooldown(mut self, d: Duration) -> Self {
        self.cooldown = Some(d);
        self
    }
}

fn default_tag_cap() -> usize {
    256
}
fn default_tick() -> Duration {
    Duration::from_secs(1)
}
fn default_window() -> Duration {
    Duration::from_secs(5)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(5)
}
fn default_release_step() -> Duration {
    Duration::from_secs(2)
}
fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_priority: 0,
            tags: BTreeMap::new(),
            rules: Vec::new(),
            limits: Limits::default(),
            admission: AdmissionConfig::default(),
            tag_cap: default_tag_cap(),
            dry_run: false,
            tick: default_tick(),
            window: default_window(),
            cooldown: default_cooldown(),
            release_step: default_release_step(),
            retry_after: default_retry_after(),
            control_plane: None,
            metrics: MetricsConfig::default(),
        }
    }
}

impl Config {
    /// Read the TOML format (no I/O; see the runtime's `from_config_file` for files) and
    /// validate it.
    ///
    /// # Errors
    /// [`ConfigError::Toml`] with line and column when the text does not parse or a key is
    /// unknown; otherwise what [`Config::validate`] finds.
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Check every setting and parse every rule.
    ///
    /// # Errors
    /// The first problem found: a rule that does not parse (with its column), a bad tag
    /// name, a cap too small for the configured tags, a zero tick or window.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.parsed_rules().map(|_| ())
    }

    /// The rules, parsed, after checking the other settings.
    pub(crate) fn parsed_rules(&self) -> Result<Vec<Rule>, ConfigError> {
        for tag in self.tags.keys() {
            check_tag_name(tag)
                .map_err(|why| ConfigError::invalid(format!("tags.{tag:.64}"), why))?;
            if tag == OVERFLOW_TAG {
                return Err(ConfigError::invalid(
                    format!("tags.{tag}"),
                    "is reserved for tags past the cap",
                ));
            }
        }
        self.limits.validate()?;
        self.admission.validate()?;
        let needed = self.tags.len() + 2;
        if self.tag_cap < needed {
            return Err(ConfigError::invalid(
                "tag_cap",
                format!(
                    "must hold the {} configured tags plus `{DEFAULT_TAG}` and `{OVERFLOW_TAG}`: at least {needed}, got {}",
                    self.tags.len(),
                    self.tag_cap
                ),
            ));
        }
        if self.tag_cap > 65_536 {
            return Err(ConfigError::invalid("tag_cap", "must be at most 65536"));
        }
        for (key, d) in [
            ("tick", self.tick),
            ("window", self.window),
            ("release_step", self.release_step),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than zero"));
            }
        }
        if self.window < self.tick {
            return Err(ConfigError::invalid(
                "window",
                "must be at least one tick long",
            ));
        }
        if self.retry_after.is_zero() {
            return Err(ConfigError::invalid(
                "retry_after",
                "must be longer than zero",
            ));
        }
        if let Some(cp) = &self.control_plane {
            cp.validate()?;
        }
        for (i, name) in self.metrics.custom.iter().enumerate() {
            if let Some(why) = crate::names::metric_problem(name) {
                return Err(ConfigError::invalid(format!("metrics.custom[{i}]"), why));
            }
        }
        // Every name a rule uses is declared: a typo fails here, with a did-you-mean.
        let tags: Vec<&str> = self.tags.keys().map(String::as_str).collect();
        let custom: Vec<&str> = self.metrics.custom.iter().map(String::as_str).collect();
        self.rules
            .iter()
            .enumerate()
            .map(|(index, rc)| {
                Rule::parse(&rc.rule)
                    .and_then(|rule| {
                        rule.check_declared(&rc.rule, &tags, &custom)?;
                        Ok(rule)
                    })
                    .map_err(|error| ConfigError::Rule {
                        index,
                        text: rc.rule.clone(),
                        error,
                    })
            })
            .collect()
    }

    /// The priority of a tag under this configuration.
    pub fn priority_of(&self, tag: &str) -> i64 {
        self.tags.get(tag).copied().unwrap_or(self.default_priority)
    }
}

/// Parse a duration as the configuration file writes it: `500ms`, `5s`, `2m`, `1h` (a whole
/// or decimal number and a unit).
///
/// # Errors
/// A message naming the text when it is not such a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration such as 5s, 500ms or 2m, got `{text}`"))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "expected a duration such as 5s, 500ms or 2m, got `{text}`"
            ));
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration out of range: `{text}`"))
}

fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_secs_f64() * 1000.0)
    }
}

mod duration_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

mod opt_duration_text {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
