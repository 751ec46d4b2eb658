//! The agent's configuration: the SDK's TOML file, unchanged, plus an optional `[agent]`
//! table for the agent's own settings.
//!
//! ```toml
//! [tags]
//! enterprise = 100
//! free = 10
//! [[rules]]
//! rule = "when p95_latency of free > 500ms then block free"
//!
//! [agent]                       # every key optional
//! listen = "127.0.0.1:7300"     # TCP, loopback by default
//! unix_socket = "/run/waitstate/agent.sock"
//! max_tokens = 65536            # admission tokens alive at once
//! token_ttl = "30s"             # a token not finished by then ends as cancelled
//! max_body_bytes = 262144
//! max_body_memory = 16777216   # bodies being read at once, all connections together
//! max_connections = 1024
//! header_read_timeout = "10s"   # also closes an idle keep-alive connection
//! pair_window = "200ms"         # how long a v1 latency report waits for its error report
//!
//! [agent.authz]                 # nginx auth_request / Envoy ext_authz
//! tag_header = "x-waitstate-tag"
//! weight_header = "x-waitstate-weight"
//! path_header = "x-original-uri"
//! paths = { "/api/search" = "free", "/api/checkout" = "checkout" }
//!
//! [agent.graphql]               # Apollo Router coprocessor
//! operations = { SearchProducts = "free", PlaceOrder = "checkout" }
//! tag_by_operation_name = true  # an operation not in the map counts under its own name
//! tag_header = "x-waitstate-tag"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use waitstate_core::{Config, ConfigError, parse_duration};

/// The engine's configuration (the SDK's format) and the agent's own settings.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The engine: tags, rules, limits, admission, control plane (the SDK's TOML format).
    pub engine: Config,
    /// The agent's `[agent]` table.
    pub agent: AgentSettings,
}

impl AgentConfig {
    /// A configuration from its parts.
    pub fn new(engine: Config, agent: AgentSettings) -> Self {
        Self { engine, agent }
    }

    /// Read the SDK's TOML format, with an optional `[agent]` table.
    ///
    /// # Errors
    /// [`ConfigError::Toml`] for text that does not parse or an unknown key,
    /// [`ConfigError::Invalid`] for a value that cannot be used, and what
    /// [`Config::validate`] finds.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let agent = match table.remove("agent") {
            None => AgentSettings::default(),
            Some(value) => AgentSettings::deserialize(value)
                .map_err(|e| ConfigError::Toml(format!("[agent]: {e}")))?,
        };
        agent.validate()?;
        let engine = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Toml(e.to_string()))?;
        engine.validate()?;
        Ok(Self { engine, agent })
    }

    /// [`AgentConfig::from_toml_str`] on a file's contents.
    ///
    /// # Errors
    /// [`ConfigError::Io`] when the file cannot be read, otherwise as
    /// [`AgentConfig::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml_str(&text)
    }
}

/// The `[agent]` table.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentSettings {
    /// TCP address to listen on (default `127.0.0.1:7300` when no unix socket is set).
    pub listen: Option<String>,
    /// A unix-domain socket to listen on (as well as `listen`, when both are set).
    pub unix_socket: Option<PathBuf>,
    /// Admission tokens (and coprocessor requests) alive at once; past it, `/v1/admit`
    /// answers `429 concurrency_limited`.
    pub max_tokens: usize,
    /// A token not finished within this ends as cancelled (its client died): counted
    /// apart, neither a success nor an error, its latency not measured.
    #[serde(deserialize_with = "duration")]
    pub token_ttl: Duration,
    /// The largest request body read; a larger one gets `413`.
    pub max_body_bytes: usize,
    /// The most memory the request bodies being read at once may hold, all connections
    /// together (each reserves its `content-length`, or `max_body_bytes` when it sends
    /// none, before it is read); a request that finds no room gets `503` with
    /// `Retry-After`. Without it the bound would be `max_connections` x `max_body_bytes`
    /// (256 MiB with the defaults).
    pub max_body_memory: usize,
    /// Connections open at once; a connection past it is closed at once.
    pub max_connections: usize,
    /// The longest wait for a request's head, and for the next request on an idle
    /// keep-alive connection.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a v1 `/report-latency` waits for the `/report-error` of the same request
    /// (the published SDKs send both for a failed request) before it counts as a success.
    #[serde(deserialize_with = "duration")]
    pub pair_window: Duration,
    /// The authorization endpoint (`/authz`).
    pub authz: AuthzSettings,
    /// The Apollo Router coprocessor endpoint (`/graphql/coprocessor`).
    pub graphql: GraphqlSettings,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            listen: None,
            unix_socket: None,
            max_tokens: 65_536,
            token_ttl: Duration::from_secs(30),
            max_body_bytes: 256 * 1024,
            max_body_memory: 16 * 1024 * 1024,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            pair_window: Duration::from_millis(200),
            authz: AuthzSettings::default(),
            graphql: GraphqlSettings::default(),
        }
    }
}

impl AgentSettings {
    /// Check the values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: format!("agent.{key}"),
                reason: reason.to_owned(),
            })
        };
        if self.max_tokens == 0 {
            return invalid("max_tokens", "must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        if self.max_body_memory < self.max_body_bytes {
            return invalid("max_body_memory", "must be at least max_body_bytes");
        }
        if self.token_ttl < Duration::from_millis(10) {
            return invalid("token_ttl", "must be at least 10ms");
        }
        if self.header_read_timeout < Duration::from_millis(10) {
            return invalid("header_read_timeout", "must be at least 10ms");
        }
        if self.pair_window < Duration::from_millis(1) || self.pair_window > Duration::from_secs(10)
        {
            return invalid("pair_window", "must be between 1ms and 10s");
        }
        for header in [
            Some(&self.authz.tag_header),
            self.authz.weight_header.as_ref(),
            Some(&self.authz.path_header),
            self.graphql.tag_header.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if axum::http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return invalid("authz", "a header name is not a valid HTTP header name");
            }
        }
        Ok(())
    }

    /// Where to listen on TCP: `listen`, or `127.0.0.1:7300` when neither `listen` nor
    /// `unix_socket` is set.
    pub fn tcp_listen(&self) -> Option<&str> {
        match (&self.listen, &self.unix_socket) {
            (Some(l), _) => Some(l),
            (None, None) => Some("127.0.0.1:7300"),
            (None, Some(_)) => None,
        }
    }
}

/// The `[agent.authz]` table: how `/authz` finds a request's tag and weight.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthzSettings {
    /// The header that carries the tag (trust it only if the proxy sets it, or strips
    /// the client's own).
    pub tag_header: String,
    /// The header that carries the weight (default `x-waitstate-weight`).
    pub weight_header: Option<String>,
    /// The header that carries the original path when the proxy does not append it to
    /// the authorization URL (nginx: `proxy_set_header X-Original-URI $request_uri`).
    pub path_header: String,
    /// Path prefix → tag, for requests without the tag header (the longest prefix wins).
    pub paths: BTreeMap<String, String>,
}

impl Default for AuthzSettings {
    fn default() -> Self {
        Self {
            tag_header: "x-waitstate-tag".to_owned(),
            weight_header: Some("x-waitstate-weight".to_owned()),
            path_header: "x-original-uri".to_owned(),
            paths: BTreeMap::new(),
        }
    }
}

/// The `[agent.graphql]` table: how the coprocessor tags a GraphQL operation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GraphqlSettings {
    /// Operation name → tag.
    pub operations: BTreeMap<String, String>,
    /// An operation not in `operations` counts under its own name (else under the
    /// header's tag, or the default tag).
    pub tag_by_operation_name: bool,
    /// A header (sent by the router: `headers: true` in its coprocessor stage) whose value
    /// is the tag of an operation that the map does not name.
    pub tag_header: Option<String>,
}

impl Default for GraphqlSettings {
    fn default() -> Self {
        Self {
            operations: BTreeMap::new(),
            tag_by_operation_name: true,
            tag_header: Some("x-waitstate-tag".to_owned()),
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_file_reads_as_is_and_agent_keys_are_optional() {
        let c = AgentConfig::from_toml_str(
            "[tags]\nfree = 10\n[[rules]]\nrule = \"when p95_latency > 500ms then block free\"\n",
        )
        .unwrap();
        assert_eq!(c.engine.tags.get("free"), Some(&10));
        assert_eq!(c.agent, AgentSettings::default());
        assert_eq!(c.agent.tcp_listen(), Some("127.0.0.1:7300"));
    }

    #[test]
    fn agent_table_is_read_and_checked() {
        let c = AgentConfig::from_toml_str(
            "[agent]\nunix_socket = \"/tmp/a.sock\"\ntoken_ttl = \"5s\"\n[agent.graphql]\noperations = { Search = \"free\" }\n",
        )
        .unwrap();
        assert_eq!(c.agent.token_ttl, Duration::from_secs(5));
        assert_eq!(c.agent.tcp_listen(), None);
        assert_eq!(c.agent.graphql.operations["Search"], "free");

        let e = AgentConfig::from_toml_str("[agent]\nmax_tokens = 0\n").unwrap_err();
        assert!(e.to_string().contains("agent.max_tokens"), "{e}");
        let e = AgentConfig::from_toml_str("[agent]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
        let e = AgentConfig::from_toml_str("[agent]\ntoken_ttl = \"soon\"\n").unwrap_err();
        assert!(matches!(e, ConfigError::Toml(_)), "{e}");
        // The engine's keys keep their own checks.
        let e = AgentConfig::from_toml_str("tag_kap = 3\n").unwrap_err();
        assert!(e.to_string().contains("tag_kap"), "{e}");
    }
}
