//! `waitstate-control.toml`: the `[server]` table, `[[keys]]`, and the engine's own format
//! (tags, rules, timing) at the top level, exactly as an SDK's file has it.
//!
//! ```toml
//! window = "30s"              # top-level engine keys first (TOML puts keys after a
//!                             # table header into that table); make the fleet window
//!                             # longer than the pulse cadence
//! [server]
//! listen = "127.0.0.1:7700"
//! lease = "300s"              # leaseDurationSeconds in every answer
//! pulse_interval = "5s"       # pulseInterval hint
//!
//! [[keys]]
//! publish_key = "pk_live_1"
//! secret_key = "sk_live_1"
//! org_id = "acme"
//!
//! [tags]
//! enterprise = 100
//! free = 10
//! [[rules]]
//! rule = "when p95_latency > 500ms for 10s then block free"
//! ```
//!
//! Every error names the key and, where it can be found, the line.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use waitstate_core::{Config, ConfigError};

/// A configuration that cannot be used: which key, which line, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigFileError {
    /// The key, as written in the file (`keys[0].secret_key`, `server.listen`,
    /// `rules[2]`), or empty when the text did not parse at all.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), self.line) {
            (false, Some(line)) => write!(f, "line {line}: `{}`: {}", self.key, self.message),
            (false, None) => write!(f, "`{}`: {}", self.key, self.message),
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}

/// The `[server]` table. Its `Debug` redacts the secrets (`jwt_secret`, `metrics_token`,
/// `redis_url`, which may hold a password).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address to listen on (default `127.0.0.1:7700`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `leaseDurationSeconds` sent with every policy (default 300 s).
    #[serde(default = "default_lease", deserialize_with = "duration")]
    pub lease: Duration,
    /// `pulseInterval` hint sent with every policy (default 5 s).
    #[serde(default = "default_pulse", deserialize_with = "duration")]
    pub pulse_interval: Duration,
    /// An instance that has not pulsed for this long is gone (default 60 s).
    #[serde(default = "default_ttl", deserialize_with = "duration")]
    pub instance_ttl: Duration,
    /// Recent demand, for splitting rate budgets, is measured over this (default 30 s).
    #[serde(default = "default_demand_window", deserialize_with = "duration")]
    pub demand_window: Duration,
    /// Lifetime of the tokens `POST /v1/auth/token` issues (default 1 h).
    #[serde(default = "default_token_ttl", deserialize_with = "duration")]
    pub token_ttl: Duration,
    /// Largest accepted clock difference of a pulse's timestamp (default 5 min).
    #[serde(default = "default_skew", deserialize_with = "duration")]
    pub skew: Duration,
    /// Largest accepted request body in bytes (default 1 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Most instances per org and site (default 10 000).
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    /// Most sites per org (default 64).
    #[serde(default = "default_max_sites")]
    pub max_sites: usize,
    /// Key that signs tokens (HS256). Default: random at each start, so tokens do not
    /// survive a restart (SDKs simply buy a new one).
    #[serde(default)]
    pub jwt_secret: Option<String>,
    /// A client must send a whole request head within this, and an idle keep-alive
    /// connection is closed after it; also bounds the TLS handshake (default 10 s).
    #[serde(default = "default_header_read_timeout", deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// A request (its body read, the answer made) must be done within this, or it is
    /// answered `408` (default 30 s).
    #[serde(default = "default_request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Most connections open at once; past it a new connection is closed at once and
    /// counted (default 1024).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// When set, `GET /metrics` needs `Authorization: Bearer <metrics_token>` (at least 16
    /// characters). Default: `/metrics` is open.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// PEM certificate chain: with `tls_key`, the control plane serves HTTPS (rustls).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Keep the fleet state in Redis (`redis://host:port/db`, `rediss://` for TLS,
    /// `redis+unix:///path`), so that any number of replicas see one fleet and a restart
    /// loses nothing. Needs the `redis` feature. Default: in memory (one replica).
    #[serde(default)]
    pub redis_url: Option<String>,
    /// The prefix of every Redis key (default `waitstate`): two deployments may share one
    /// Redis with two prefixes.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    /// Fleet-rule windows (ticks) kept in Redis, so that a replica that takes over, or a
    /// restarted one, replays them and resumes every rule where it was (default 600).
    #[serde(default = "default_redis_history")]
    pub redis_history: usize,
    /// With Redis: where this replica keeps a copy of the last fleet state it read (each
    /// fleet's policy, rule states, budget split and counters; JSON, replaced atomically),
    /// so that, started while Redis is unreachable, it answers with the last fleet policy
    /// instead of an empty one. Read only at start, and only when Redis does not answer;
    /// once Redis answers, Redis's state replaces it. A file that cannot be read or does
    /// not fit this configuration (another `redis_prefix`, other rules) is left aside with
    /// a warning. Give each replica a writable path of its own that survives a restart (a
    /// volume, systemd's `StateDirectory=`). Default: none (a replica started while Redis
    /// is down answers with no fleet policy until Redis returns).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// How often at most `state_file` is rewritten when only numbers moved (demand, budget
    /// shares, counters); a change of a fleet policy or of a rule's state is written at the
    /// next tick (default 10 s).
    #[serde(default = "default_state_file_interval", deserialize_with = "duration")]
    pub state_file_interval: Duration,
}

fn default_state_file_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_redis_prefix() -> String {
    "waitstate".into()
}
fn default_redis_history() -> usize {
    600
}

fn default_listen() -> String {
    "127.0.0.1:7700".into()
}
fn default_lease() -> Duration {
    Duration::from_secs(300)
}
fn default_pulse() -> Duration {
    Duration::from_secs(5)
}
fn default_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_demand_window() -> Duration {
    Duration::from_secs(30)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_max_body() -> usize {
    1 << 20
}
fn default_max_instances() -> usize {
    10_000
}
fn default_max_sites() -> usize {
    64
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_connections() -> usize {
    1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            lease: default_lease(),
            pulse_interval: default_pulse(),
            instance_ttl: default_ttl(),
            demand_window: default_demand_window(),
            token_ttl: default_token_ttl(),
            skew: default_skew(),
            max_body_bytes: default_max_body(),
            max_instances: default_max_instances(),
            max_sites: default_max_sites(),
            jwt_secret: None,
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            metrics_token: None,
            tls_cert: None,
            tls_key: None,
            redis_url: None,
            redis_prefix: default_redis_prefix(),
            redis_history: default_redis_history(),
            state_file: None,
            state_file_interval: default_state_file_interval(),
        }
    }
}

/// One `[[keys]]` entry. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyConfig {
    /// The publish key (`x-waitstate-id`, `publishKey`).
    pub publish_key: String,
    /// The secret key (signs pulses, buys tokens).
    pub secret_key: String,
    /// The organisation these keys belong to.
    pub org_id: String,
}

impl KeyConfig {
    /// A key pair for an organisation.
    pub fn new(
        publish_key: impl Into<String>,
        secret_key: impl Into<String>,
        org_id: impl Into<String>,
    ) -> Self {
        Self {
            publish_key: publish_key.into(),
            secret_key: secret_key.into(),
            org_id: org_id.into(),
        }
    }
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("publish_key", &self.publish_key)
            .field("secret_key", &"[REDACTED]")
            .field("org_id", &self.org_id)
            .finish()
    }
}

/// The whole control plane configuration.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ControlConfig {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[[keys]]`.
    pub keys: Vec<KeyConfig>,
    /// The fleet's tags, rules and timing (the SDK's format).
    pub engine: Config,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("lease", &self.lease)
            .field("pulse_interval", &self.pulse_interval)
            .field("instance_ttl", &self.instance_ttl)
            .field("demand_window", &self.demand_window)
            .field("token_ttl", &self.token_ttl)
            .field("skew", &self.skew)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_instances", &self.max_instances)
            .field("max_sites", &self.max_sites)
            .field("jwt_secret", &secret(&self.jwt_secret))
            .field("header_read_timeout", &self.header_read_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("metrics_token", &secret(&self.metrics_token))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("redis_url", &secret(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("redis_history", &self.redis_history)
            .field("state_file", &self.state_file)
            .field("state_file_interval", &self.state_file_interval)
            .finish()
    }
}

impl fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlConfig")
            .field("server", &self.server)
            .field("keys", &self.keys)
            .field("engine", &self.engine)
            .finish()
    }
}

#[derive(Deserialize)]
struct ControlPart {
    #[serde(default)]
    server: Option<ServerConfig>,
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

impl ControlConfig {
    /// A configuration from parts (for tests and embedding); checked like a file.
    ///
    /// # Errors
    /// As [`ControlConfig::from_toml_str`], without lines.
    pub fn new(
        server: ServerConfig,
        keys: Vec<KeyConfig>,
        engine: Config,
    ) -> Result<Self, ConfigFileError> {
        let c = Self {
            server,
            keys,
            engine,
        };
        c.validate("")?;
        Ok(c)
    }

    /// Read the file.
    ///
    /// # Errors
    /// The file cannot be read, or as [`ControlConfig::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
            key: String::new(),
            line: None,
            message: format!("cannot read `{}`: {e}", path.display()),
        })?;
        Self::from_toml_str(&text)
    }

    /// Parse and check the TOML text.
    ///
    /// # Errors
    /// A [`ConfigFileError`] naming the key and the line.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigFileError> {
        let part: ControlPart = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let engine_text = blank_control_sections(text);
        let engine = Config::from_toml_str(&engine_text).map_err(|e| engine_error(text, &e))?;
        let mut c = Self {
            server: part.server.unwrap_or_default(),
            keys: part.keys,
            engine,
        };
        c.resolve_secrets(text)?;
        c.validate(text)?;
        Ok(c)
    }

    /// Secrets may live outside the file: `env:NAME` reads the environment variable `NAME`,
    /// `file:/path` reads the file (a trailing newline dropped), for every secret: the keys'
    /// `secret_key`, and `jwt_secret`, `metrics_token` and `redis_url` in `[server]`.
    /// Errors name the key and the variable or path, never a value.
    fn resolve_secrets(&mut self, text: &str) -> Result<(), ConfigFileError> {
        let resolve = |key: String, value: &mut String| -> Result<(), ConfigFileError> {
            match resolve_secret(value) {
                Ok(Some(secret)) => {
                    *value = secret;
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(message) => Err(ConfigFileError {
                    line: line_of(text, &key),
                    key,
                    message,
                }),
            }
        };
        for (i, k) in self.keys.iter_mut().enumerate() {
            resolve(format!("keys[{i}].secret_key"), &mut k.secret_key)?;
        }
        let s = &mut self.server;
        for (name, value) in [
            ("jwt_secret", &mut s.jwt_secret),
            ("metrics_token", &mut s.metrics_token),
            ("redis_url", &mut s.redis_url),
        ] {
            if let Some(v) = value.as_mut() {
                resolve(format!("server.{name}"), v)?;
            }
        }
        Ok(())
    }

    /// The organisation of a publish key.
    pub fn key(&self, publish_key: &str) -> Option<&KeyConfig> {
        self.keys.iter().find(|k| k.publish_key == publish_key)
    }

    fn validate(&self, text: &str) -> Result<(), ConfigFileError> {
        let err = |key: String, message: &str| ConfigFileError {
            line: line_of(text, &key),
            key,
            message: message.to_owned(),
        };
        if self.server.listen.parse::<SocketAddr>().is_err() {
            return Err(err(
                "server.listen".into(),
                "must be an address such as 127.0.0.1:7700",
            ));
        }
        for (k, d) in [
            ("lease", self.server.lease),
            ("pulse_interval", self.server.pulse_interval),
            ("instance_ttl", self.server.instance_ttl),
            ("demand_window", self.server.demand_window),
            ("token_ttl", self.server.token_ttl),
            ("skew", self.server.skew),
        ] {
            if d < Duration::from_secs(1) {
                return Err(err(format!("server.{k}"), "must be at least 1s"));
            }
        }
        if self.server.token_ttl <= Duration::from_secs(60) {
            return Err(err(
                "server.token_ttl".into(),
                "must be longer than 60s (SDKs renew a token a minute before it expires)",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(err("server.max_body_bytes".into(), "must be at least 1024"));
        }
        for (k, d) in [
            ("header_read_timeout", self.server.header_read_timeout),
            ("request_timeout", self.server.request_timeout),
        ] {
            if d < Duration::from_millis(100) {
                return Err(err(format!("server.{k}"), "must be at least 100ms"));
            }
        }
        if let Some(token) = &self.server.metrics_token
            && (token.len() < 16 || token.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(err(
                "server.metrics_token".into(),
                "must be at least 16 characters, without spaces or control characters",
            ));
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => {
                return Err(err("server.tls_cert".into(), "needs tls_key as well"));
            }
            (None, Some(_)) => {
                return Err(err("server.tls_key".into(), "needs tls_cert as well"));
            }
            _ => {}
        }
        for (k, n) in [
            ("max_instances", self.server.max_instances),
            ("max_sites", self.server.max_sites),
            ("max_connections", self.server.max_connections),
        ] {
            if n == 0 {
                return Err(err(format!("server.{k}"), "must be at least 1"));
            }
        }
        if let Some(secret) = &self.server.jwt_secret
            && secret.len() < 32
        {
            return Err(err(
                "server.jwt_secret".into(),
                "must be at least 32 characters",
            ));
        }
        if let Some(url) = &self.server.redis_url {
            let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|p| url.starts_with(p));
            if !scheme_ok {
                return Err(err(
                    "server.redis_url".into(),
                    "must be a redis://, rediss:// or redis+unix:// URL",
                ));
            }
            if !cfg!(feature = "redis") {
                return Err(err(
                    "server.redis_url".into(),
                    "this waitstate-control was built without the `redis` feature \
                     (cargo build -p waitstate-control --features redis)",
                ));
            }
        }
        let prefix = &self.server.redis_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(err(
                "server.redis_prefix".into(),
                "must be 1 to 64 of [A-Za-z0-9_.-]",
            ));
        }
        if !(10..=100_000).contains(&self.server.redis_history) {
            return Err(err(
                "server.redis_history".into(),
                "must be between 10 and 100000",
            ));
        }
        if let Some(path) = &self.server.state_file {
            if self.server.redis_url.is_none() {
                return Err(err(
                    "server.state_file".into(),
                    "needs redis_url (in memory, a restart starts empty by design: there \
                     is no shared fleet state to keep a copy of)",
                ));
            }
            if path.as_os_str().is_empty() || path.file_name().is_none() {
                return Err(err("server.state_file".into(), "must be a file's path"));
            }
        }
        if self.server.state_file_interval < Duration::from_secs(1) {
            return Err(err(
                "server.state_file_interval".into(),
                "must be at least 1s",
            ));
        }
        if self.keys.is_empty() {
            return Err(err(
                "keys".into(),
                "at least one [[keys]] entry (publish_key, secret_key, org_id) is needed",
            ));
        }
        for (i, k) in self.keys.iter().enumerate() {
            for (field, v) in [
                ("publish_key", &k.publish_key),
                ("secret_key", &k.secret_key),
                ("org_id", &k.org_id),
            ] {
                if v.trim().is_empty() {
                    return Err(err(format!("keys[{i}].{field}"), "must not be empty"));
                }
                if v.len() > 256 || v.chars().any(char::is_control) {
                    return Err(err(
                        format!("keys[{i}].{field}"),
                        "must be at most 256 printable characters",
                    ));
                }
            }
            if self.keys[..i]
                .iter()
                .any(|o| o.publish_key == k.publish_key)
            {
                return Err(err(
                    format!("keys[{i}].publish_key"),
                    "is used by an earlier entry",
                ));
            }
        }
        Ok(())
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    waitstate_core::parse_duration(&text).map_err(serde::de::Error::custom)
}

fn toml_error(text: &str, e: &toml::de::Error) -> ConfigFileError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    ConfigFileError {
        key: String::new(),
        line,
        message: e.message().to_owned(),
    }
}

fn engine_error(text: &str, e: &ConfigError) -> ConfigFileError {
    let (key, message) = match e {
        ConfigError::Rule { index, error, .. } => {
            return ConfigFileError {
                key: format!("rules[{index}]"),
                line: line_of(text, &format!("rules[{index}].rule")),
                message: error.to_string(),
            };
        }
        ConfigError::Invalid { key, reason } => (key.clone(), reason.clone()),
        ConfigError::Toml(msg) => {
            // toml's message already says "line N, column M".
            let line = msg
                .split("line ")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok());
            return ConfigFileError {
                key: String::new(),
                line,
                message: msg.clone(),
            };
        }
        other => (String::new(), other.to_string()),
    };
    ConfigFileError {
        line: line_of(text, &key),
        key,
        message,
    }
}

fn header_name(line: &str) -> Option<(&str, bool)> {
    let t = line.trim();
    if let Some(inner) = t.strip_prefix("[[") {
        let end = inner.find("]]")?;
        Some((inner[..end].trim(), true))
    } else if let Some(inner) = t.strip_prefix('[') {
        let end = inner.find(']')?;
        Some((inner[..end].trim(), false))
    } else {
        None
    }
}

/// The engine's view of the file: `[server]` and `[[keys]]` sections commented out, line
/// numbers kept.
fn blank_control_sections(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_control = false;
    for line in text.split_inclusive('\n') {
        if let Some((name, _)) = header_name(line) {
            in_control = name == "server" || name == "keys";
        }
        let t = line.trim_start();
        let top_level_control = !in_control
            && ["server", "keys"].iter().any(|k| {
                t.strip_prefix(k)
                    .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
            });
        if in_control || top_level_control {
            out.push('#');
        }
        out.push_str(line);
    }
    out
}

/// The 1-based line where a key path (`keys[1].secret_key`, `server.listen`, `tags.free`,
/// `rules[2]`, `tag_cap`) is written, when it can be found.
fn line_of(text: &str, key: &str) -> Option<usize> {
    if text.is_empty() || key.is_empty() {
        return None;
    }
    let (section, field) = match key.split_once('.') {
        Some((s, f)) => (Some(s), Some(f)),
        None if key.contains('[') => (Some(key), None),
        None => (None, Some(key)),
    };
    let (name, index) = match section {
        Some(s) => match s.split_once('[') {
            Some((n, i)) => (Some(n), i.trim_end_matches(']').parse::<usize>().ok()),
            None => (Some(s), None),
        },
        None => (None, None),
    };
    let mut current: Option<&str> = None;
    let mut seen = 0usize;
    let mut in_target = name.is_none();
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        if let Some((h, _)) = header_name(line) {
            current = Some(h);
            in_target = false;
            if Some(h) == name {
                if index.is_none_or(|want| want == seen) {
                    in_target = true;
                    header_line = Some(i + 1);
                }
                seen += 1;
            }
            continue;
        }
        if name.is_none() && current.is_some() {
            continue;
        }
        if in_target && let Some(field) = field {
            let t = line.trim_start();
            if t.strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                return Some(i + 1);
            }
        }
    }
    header_line
}

/// `env:NAME` or `file:/path`: the secret it names (`Ok(None)`: a literal value).
fn resolve_secret(value: &str) -> Result<Option<String>, String> {
    if let Some(name) = value.strip_prefix("env:") {
        return match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Some(v)),
            Ok(_) => Err(format!("the environment variable `{name}` is empty")),
            Err(_) => Err(format!("the environment variable `{name}` is not set")),
        };
    }
    if let Some(path) = value.strip_prefix("file:") {
        return match std::fs::read_to_string(path) {
            Ok(v) => {
                let v = v.trim_end_matches(['\n', '\r']).to_owned();
                if v.is_empty() {
                    Err(format!("the file `{path}` is empty"))
                } else {
                    Ok(Some(v))
                }
            }
            Err(e) => Err(format!("cannot read `{path}`: {}", e.kind())),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
