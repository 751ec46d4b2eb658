//! The `[control_plane]` table and the safe mode.

use super::*;

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
    /// `lease_expired`), by priority: the lowest priority is refused first, and the top
    /// level is refused only when it alone asks for more than the cap.
    FixedRps,
    /// Keep enforcing the last policy received.
    LastPolicy,
}

/// Where and how an instance talks to a WaitState v1 control plane: the `[control_plane]`
/// table of the TOML file, or [`ControlPlane::new`] in code.
///
/// The table always reads; the client that uses it is the `control-plane` feature (of this
/// crate or of the adapters). Without it, building a `WaitState` with a control plane
/// configured is a [`ConfigError::Invalid`](crate::ConfigError::Invalid) for
/// `control_plane`, never a silent ignore.
///
/// ```toml
/// [control_plane]
/// base_url = "https://control.example.com"   # or a list: ["https://cp-a...", "https://cp-b..."]
/// publish_key = "pk_live_..."
/// secret_key = "sk_live_..."
/// pulse_interval = "20s"
/// sync_interval = "30s"
/// safe_mode = "fixed_rps"     # open (default), fixed_rps, last_policy
/// safe_mode_max_rps = 50
/// ```
///
/// `base_url` may name several replicas of one control plane (a TOML array, or one string
/// of URLs separated by commas; [`ControlPlane::failover`] in code): every call goes to
/// the current one; after a failed call the next one in the list is tried, after the usual
/// jittered backoff, and the telemetry not yet acknowledged goes with it (bounded by
/// `carried_windows`, as always). Each URL is checked as `base_url` is.
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
    /// [`ControlPlane::allow_insecure_http`]. Several replicas: separated by commas (a TOML
    /// array is read as such); see [`ControlPlane::urls`].
    #[serde(deserialize_with = "one_or_many_urls")]
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

    /// Another replica of the control plane, tried after the ones before it fail.
    pub fn failover(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        if self.base_url.trim().is_empty() {
            self.base_url = url;
        } else {
            self.base_url = format!("{}, {}", self.base_url, url.trim());
        }
        self
    }

    /// Every base URL, in the order they are tried: `base_url` split at commas, trimmed,
    /// each without a trailing `/`.
    pub fn urls(&self) -> Vec<&str> {
        self.base_url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .collect()
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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("control_plane.{k}");
        let urls = self.urls();
        if urls.is_empty() {
            return Err(ConfigError::invalid(
                key("base_url"),
                "must be an http:// or https:// URL",
            ));
        }
        for url in urls {
            Self::validate_url(url, self.allow_insecure_http)?;
        }
        self.validate_rest()
    }

    fn validate_url(url: &str, allow_insecure_http: bool) -> Result<(), ConfigError> {
        let key = |k: &str| format!("control_plane.{k}");
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
        if !https && !allow_insecure_http && !is_loopback_url(url) {
            return Err(ConfigError::invalid(
                key("base_url"),
                "a plain http:// control plane must be on loopback (localhost, 127.0.0.0/8, \
                 [::1]): the secret key would cross the network unencrypted; use https://, \
                 or set allow_insecure_http = true for a network you trust",
            ));
        }
        Ok(())
    }

    fn validate_rest(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("control_plane.{k}");
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

/// `base_url`: one URL, or a list of them (kept as one string, separated by commas).
fn one_or_many_urls<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(url) => url,
        OneOrMany::Many(urls) => {
            if let Some(bad) = urls.iter().find(|u| u.contains(',')) {
                return Err(serde::de::Error::custom(format!(
                    "a URL of the list holds a comma: `{bad}`"
                )));
            }
            urls.join(", ")
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_are_tried_in_order_and_each_is_checked() {
        let cp = ControlPlane::new("https://cp-a.example.com/", "pk", "sk")
            .failover("https://cp-b.example.com");
        assert_eq!(
            cp.urls(),
            ["https://cp-a.example.com", "https://cp-b.example.com"]
        );
        assert_eq!(cp.validate(), Ok(()));
        let insecure = cp.clone().failover("http://10.0.0.9:7700");
        assert!(insecure.validate().is_err(), "the third is plain http");
        let blank = ControlPlane::new(" , ", "pk", "sk");
        assert!(blank.validate().is_err());
    }

    #[cfg(feature = "toml")]
    #[test]
    fn base_url_reads_a_list_from_toml() {
        let table = "[control_plane]\nbase_url = [\"http://127.0.0.1:7700\", \"http://127.0.0.1:7701\"]\npublish_key = \"p\"\nsecret_key = \"s\"\n";
        let c = Config::from_toml_str(table).unwrap();
        let cp = c.control_plane.unwrap();
        assert_eq!(
            cp.urls(),
            ["http://127.0.0.1:7700", "http://127.0.0.1:7701"]
        );
        let one = table.replace(
            "[\"http://127.0.0.1:7700\", \"http://127.0.0.1:7701\"]",
            "\"http://127.0.0.1:7700\"",
        );
        let c = Config::from_toml_str(&one).unwrap();
        assert_eq!(c.control_plane.unwrap().urls(), ["http://127.0.0.1:7700"]);
        let comma = table.replace("7701\"]", "7701,x\"]");
        assert!(Config::from_toml_str(&comma).is_err());
    }
}
