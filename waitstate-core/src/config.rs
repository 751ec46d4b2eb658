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
}

/// What an instance does when the control plane's lease has expired (no successful sync
/// or pulse for the lease's duration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SafeMode {
    /// Drop the control plane's policy: local rules only, everything else admitted (the
    /// v1 default).
    #[default]
    Open,
    /// Drop the control plane's policy and cap admissions at
    /// [`ControlPlane::safe_mode_max_rps`] requests per second (rejections say
    /// `lease_expired`).
    FixedRps,
    /// Keep enforcing the last policy received.
    LastPolicy,
}

/// Where and how an instance talks to a WaitState v1 control plane: the `[control_plane]`
/// table of the TOML file, or [`ControlPlane::new`] in code.
///
/// ```toml
/// [control_plane]
/// base_url = "https://control.example.com"
/// publish_key = "pk_live_..."
/// secret_key = "sk_live_..."
/// pulse_interval = "20s"
/// sync_interval = "30s"
/// safe_mode = "fixed_rps"     # open (default), fixed_rps, last_policy
/// safe_mode_max_rps = 50
/// ```
///
/// The secret key is never printed: `Debug` redacts it and serializing skips it. It is
/// sent to the control plane to buy a token (`POST /v1/auth/token`, as v1 does), so a
/// plain `http://` base URL is refused unless its host is this machine (`localhost`,
/// `127.0.0.0/8`, `[::1]`) or [`ControlPlane::allow_insecure_http`] says otherwise.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ControlPlane {
    /// The control plane's base URL: `https://...`; `http://` only on loopback, or with
    /// [`ControlPlane::allow_insecure_http`].
    pub base_url: String,
    /// The publish key (`x-waitstate-id`).
    pub publish_key: String,
    /// The secret key: signs pulses, and buys policy tokens. Never printed.
    #[serde(skip_serializing)]
    pub secret_key: String,
    /// Optional shard key (`siteId`): the control plane aggregates each site on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<String>,
    /// How often telemetry is pulsed (default 20 s). A policy's `pulseInterval` hint
    /// replaces it once one is received.
    #[serde(default = "default_pulse_every", with = "duration_text")]
    pub pulse_interval: Duration,
    /// How often the token is refreshed and the policy read (default 30 s).
    #[serde(default = "default_sync_every", with = "duration_text")]
    pub sync_interval: Duration,
    /// Timeout of every HTTP call (default 10 s).
    #[serde(default = "default_http_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// The lease when a policy does not say (`leaseDurationSeconds`; default 300 s).
    #[serde(default = "default_lease", with = "duration_text")]
    pub lease: Duration,
    /// What to do once the lease has expired.
    #[serde(default)]
    pub safe_mode: SafeMode,
    /// The cap of [`SafeMode::FixedRps`], requests per second (default 50).
    #[serde(default = "default_safe_mode_max_rps")]
    pub safe_mode_max_rps: f64,
    /// Telemetry windows (pulse intervals) carried while the control plane cannot be
    /// reached; older ones are dropped (default 10).
    #[serde(default = "default_carried_windows")]
    pub carried_windows: usize,
    /// Accept a plain `http://` control plane that is not on loopback (default `false`):
    /// the secret key and the telemetry then cross the network unencrypted. For a private
    /// network you trust, or a TLS-terminating sidecar on another address.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("base_url", &self.base_url)
            .field("publish_key", &self.publish_key)
            .field("secret_key", &"[REDACTED]")
            .field("site_id", &self.site_id)
            .field("pulse_interval", &self.pulse_interval)
            .field("sync_interval", &self.sync_interval)
            .field("timeout", &self.timeout)
            .field("lease", &self.lease)
            .field("safe_mode", &self.safe_mode)
            .field("safe_mode_max_rps", &self.safe_mode_max_rps)
            .field("carried_windows", &self.carried_windows)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

impl ControlPlane {
    /// A control plane at `base_url`, with the v1 defaults for everything else.
    pub fn new(
        base_url: impl Into<String>,
        publish_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            publish_key: publish_key.into(),
            secret_key: secret_key.into(),
            site_id: None,
            pulse_interval: default_pulse_every(),
            sync_interval: default_sync_every(),
            timeout: default_http_timeout(),
            lease: default_lease(),
            safe_mode: SafeMode::default(),
            safe_mode_max_rps: default_safe_mode_max_rps(),
            carried_windows: default_carried_windows(),
            allow_insecure_http: false,
        }
    }

    /// The shard key (`siteId`).
    pub fn site_id(mut self, site: impl Into<String>) -> Self {
        self.site_id = Some(site.into());
        self
    }

    /// Pulse cadence (default 20 s).
    pub fn pulse_interval(mut self, every: Duration) -> Self {
        self.pulse_interval = every;
        self
    }

    /// Sync cadence (default 30 s).
    pub fn sync_interval(mut self, every: Duration) -> Self {
        self.sync_interval = every;
        self
    }

    /// Timeout of every HTTP call (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Lease when the policy does not say (default 300 s).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Behaviour after the lease expires (default [`SafeMode::Open`]).
    pub fn safe_mode(mut self, mode: SafeMode) -> Self {
        self.safe_mode = mode;
        self
    }

    /// The cap of [`SafeMode::FixedRps`] (default 50 per second).
    pub fn safe_mode_max_rps(mut self, rps: f64) -> Self {
        self.safe_mode_max_rps = rps;
        self
    }

    /// Windows carried while unreachable (default 10).
    pub fn carried_windows(mut self, windows: usize) -> Self {
        self.carried_windows = windows;
        self
    }

    /// Accept a plain `http://` control plane off loopback (default `false`). The secret
    /// key is then sent unencrypted: only for a network you trust.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("control_plane.{k}");
        let url = self.base_url.trim();
        let scheme = url
            .get(..8)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let https = scheme.starts_with("https://");
        if !(https || scheme.starts_with("http://")) || url.len() < 10 {
            return Err(ConfigError::invalid(
                key("base_url"),
                "must be an http:// or https:// URL",
            ));
        }
        if !https && !self.allow_insecure_http && !is_loopback_url(url) {
            return Err(ConfigError::invalid(
                key("base_url"),
                "a plain http:// control plane must be on loopback (localhost, 127.0.0.0/8, \
                 [::1]): the secret key would cross the network unencrypted; use https://, \
                 or set allow_insecure_http = true for a network you trust",
            ));
        }
        for (k, v) in [
            ("publish_key", &self.publish_key),
            ("secret_key", &self.secret_key),
        ] {
            if v.is_empty() {
                return Err(ConfigError::invalid(key(k), "must not be empty"));
            }
        }
        if let Some(site) = &self.site_id {
            check_tag_name(site).map_err(|why| ConfigError::invalid(key("site_id"), why))?;
        }
        for (k, d) in [
            ("pulse_interval", self.pulse_interval),
            ("sync_interval", self.sync_interval),
            ("timeout", self.timeout),
            ("lease", self.lease),
        ] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key(k), "must be longer than zero"));
            }
        }
        if !(self.safe_mode_max_rps.is_finite() && self.safe_mode_max_rps > 0.0) {
            return Err(ConfigError::invalid(
                key("safe_mode_max_rps"),
                "must be a finite number above zero",
            ));
        }
        if self.carried_windows == 0 {
            return Err(ConfigError::invalid(
                key("carried_windows"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Whether an `http://` URL's host is this machine: `localhost`, an address of
/// `127.0.0.0/8`, or `[::1]`. Strict where parsers differ: the authority ends at the first
/// `/`, `\\`, `?` or `#` (as WHATWG parsers, reqwest's included, end it for http), the
/// host follows the last `@`, and anything not plainly one of those hosts (a numeric
/// shorthand such as `127.1`, a percent-escape) is not loopback.
pub(crate) fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.get(7..) else {
        return false;
    };
    let authority = rest.split(['/', '\\', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, port)) if port.is_empty() || port.starts_with(':') => h,
            _ => return false,
        }
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn default_pulse_every() -> Duration {
    Duration::from_secs(20)
}
fn default_sync_every() -> Duration {
    Duration::from_secs(30)
}
fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_lease() -> Duration {
    Duration::from_secs(300)
}
fn default_safe_mode_max_rps() -> f64 {
    50.0
}
fn default_carried_windows() -> usize {
    10
}

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

    fn validate(&self) -> Result<(), ConfigError> {
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

    fn validate(&self) -> Result<(), ConfigError> {
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
        self.rules
            .iter()
            .enumerate()
            .map(|(index, rc)| {
                Rule::parse(&rc.rule).map_err(|error| ConfigError::Rule {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "5", "s", "5 parsecs", "-1s", "1e999s", "NaNs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "toml")]
    #[test]
    fn limits_parse_and_bad_ones_are_config_errors() {
        let c = Config::from_toml_str(
            "[limits]\nconcurrency = 40\nrate = { free = 200, \"pro.v2\" = 0.5 }\n",
        )
        .unwrap();
        assert_eq!(
            c.limits,
            Limits::default()
                .concurrency(40)
                .rate("free", 200.0)
                .rate("pro.v2", 0.5)
        );
        let p = c.limits.to_policy();
        assert_eq!(p.concurrency_limit, Some(40));
        assert_eq!(p.tag_rate_limits.get("free"), Some(&200.0));
        for (bad, key) in [
            ("concurrency = 0", "limits.concurrency"),
            ("concurrency = -1", ""),
            ("rate = { free = 0 }", "limits.rate.free"),
            ("rate = { free = -5 }", "limits.rate.free"),
            ("rate = { free = nan }", "limits.rate.free"),
            ("rate = { free = inf }", "limits.rate.free"),
            ("rate = { \"\" = 5 }", "limits.rate."),
            ("rate = { \"a\\u0007b\" = 5 }", "control characters"),
            ("burst = 5", ""),
        ] {
            let err = Config::from_toml_str(&format!("[limits]\n{bad}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn a_rule_typo_names_the_rule_and_column() {
        let mut c = Config::default();
        c.rules
            .push(RuleConfig::new("when p95_latency > 500ms then block free"));
        c.rules
            .push(RuleConfig::new("when p95_latency > 500ms than block free"));
        let err = c.validate().unwrap_err();
        let ConfigError::Rule { index, error, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*index, 1);
        assert_eq!(error.column(), 26);
        assert!(err.to_string().starts_with("rules[1]"), "{err}");
    }

    #[test]
    fn settings_are_checked() {
        let mut c = Config::default();
        c.tag_cap = 2;
        c.tags.insert("a".into(), 1);
        assert!(matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "tag_cap"));
        let mut c = Config::default();
        c.tags.insert(String::new(), 1);
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.tick = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.tags.insert(OVERFLOW_TAG.into(), 1);
        assert!(c.validate().is_err());
    }

    #[cfg(feature = "toml")]
    #[test]
    fn the_design_file_reads() {
        let c = Config::from_toml_str(
            r#"
default_priority = 0
[tags]
enterprise = 100
pro = 50
free = 10
[[rules]]
rule = "when p95_latency > 500ms for 5s then block free"
[[rules]]
rule = "when error_rate > 5% then throttle pro to 50%"
dry_run = true
[[rules]]
rule = "when p95_latency > 1s then shed"
cooldown = "10s"
"#,
        )
        .unwrap();
        assert_eq!(c.tags["pro"], 50);
        assert_eq!(c.rules.len(), 3);
        assert!(c.rules[1].dry_run);
        assert_eq!(c.rules[2].cooldown, Some(Duration::from_secs(10)));
        assert_eq!(c.tick, Duration::from_secs(1));
    }

    #[cfg(feature = "toml")]
    #[test]
    fn toml_errors_say_where() {
        let err = Config::from_toml_str("[tags]\nfree = \"ten\"\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Config::from_toml_str("tag_capp = 3\n").unwrap_err();
        assert!(err.to_string().contains("tag_capp"), "{err}");
        let err = Config::from_toml_str("window = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("duration"), "{err}");
    }
}

/// Issue 15, item 6: the SDK sends its secret key to `POST /v1/auth/token`, so a plain
/// `http://` control plane is refused unless it is on this machine (loopback).
#[cfg(test)]
mod insecure_http_tests {
    use super::*;

    fn with(url: &str) -> Result<(), ConfigError> {
        let mut c = Config::default();
        c.control_plane = Some(ControlPlane::new(url, "pk", "sk"));
        c.validate()
    }

    #[test]
    fn a_plain_http_control_plane_is_refused_off_loopback() {
        for ok in [
            "https://control.example.com",
            "https://10.0.0.1:7700/",
            "http://127.0.0.1:7700",
            "http://127.5.6.7",
            "http://[::1]:7700/",
            "http://localhost:7700",
            "http://LocalHost/base",
            "http://user@localhost:7700",
        ] {
            assert!(with(ok).is_ok(), "{ok}: {:?}", with(ok));
        }
        for bad in [
            "http://control.example.com",
            "http://10.0.0.1:7700",
            "http://0.0.0.0:7700",
            "http://[::2]:7700",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://localhost@example.com",
            "http://localhost:7700@example.com/",
            "http://example.com\\@localhost",
            "http://example.com#@localhost",
            "http://example.com?@127.0.0.1",
            "http://example.com/@localhost",
            "HTTP://example.com",
        ] {
            let err = with(bad).unwrap_err();
            let ConfigError::Invalid { key, reason } = &err else {
                panic!("{bad}: {err:?}");
            };
            assert_eq!(key, "control_plane.base_url", "{bad}");
            assert!(reason.contains("allow_insecure_http"), "{bad}: {reason}");
        }
    }

    #[test]
    fn plain_http_off_loopback_needs_the_explicit_option() {
        let mut c = Config::default();
        c.control_plane =
            Some(ControlPlane::new("http://10.0.0.1:7700", "pk", "sk").allow_insecure_http(true));
        assert_eq!(c.validate(), Ok(()));
        assert!(format!("{c:?}").contains("allow_insecure_http: true"));
    }

    #[cfg(feature = "toml")]
    #[test]
    fn the_option_reads_from_toml() {
        let table = "[control_plane]\nbase_url = \"http://10.0.0.1:7700\"\npublish_key = \"p\"\nsecret_key = \"s\"\n";
        let err = Config::from_toml_str(table).unwrap_err();
        assert!(err.to_string().contains("allow_insecure_http"), "{err}");
        let c = Config::from_toml_str(&format!("{table}allow_insecure_http = true\n")).unwrap();
        assert!(c.control_plane.unwrap().allow_insecure_http);
    }
}
