//! The one error type of configuration: what is wrong, and where.

use std::fmt;

use crate::rule::RuleError;

/// A configuration, rule or policy that cannot be used, with what is wrong and where.
///
/// Returned by [`Config::validate`](crate::Config::validate), by the runtime builder and by
/// [`Policy::validate`](crate::Policy::validate). It never carries a secret.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A reflex rule did not parse.
    Rule {
        /// Position of the rule in the configuration (0-based).
        index: usize,
        /// The rule's text.
        text: String,
        /// What the parser found, with the column.
        error: RuleError,
    },
    /// A setting has a value that cannot be used.
    Invalid {
        /// The setting's name, as written in the TOML file (`tag_cap`, `tags.free`, ...).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A policy document (local, or from a control plane) failed validation.
    Policy {
        /// The camelCase field of the v1 document (or of our extension).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TOML text did not parse (line and column are in the message).
    Toml(String),
    /// The configuration file could not be read.
    Io {
        /// The path that was read.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// The runtime needs a tokio runtime to run its background task.
    NoRuntime,
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn policy(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Policy {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rule { index, text, error } => {
                write!(f, "rules[{index}] `{text}`: {error}")
            }
            Self::Invalid { key, reason } => write!(f, "`{key}`: {reason}"),
            Self::Policy { field, reason } => write!(f, "policy field `{field}`: {reason}"),
            Self::Toml(msg) => write!(f, "invalid TOML: {msg}"),
            Self::Io { path, message } => write!(f, "cannot read `{path}`: {message}"),
            Self::NoRuntime => f.write_str(
                "no tokio runtime: build the WaitState inside a tokio runtime \
                 (for example in #[tokio::main])",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
