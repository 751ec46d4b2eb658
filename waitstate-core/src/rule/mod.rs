//! Reflex rules: the `when … then …` lines of a WaitState configuration.
//!
//! A reflex rule watches one health metric and, once a condition has held for
//! long enough, takes a load-shedding action. Rules are written as text, for
//! example in TOML configuration:
//!
//! ```text
//! when p95_latency > 500ms for 5s then block free
//! ```
//!
//! [`Rule::parse`] (or [`str::parse`]) turns that text into a typed [`Rule`].
//! When the text is invalid, the [`RuleError`] says what is wrong, what was
//! expected, and the 1-based column (counted in characters) of the offending
//! token.
//!
//! # Grammar
//!
//! Tokens are separated by whitespace, except that a unit attaches to its
//! number (`500ms`, `1s`, `5%`, `100/s`); a space before the unit is also
//! accepted (`500 ms`). Keywords are lowercase.
//!
//! ```text
//! rule      := "when" metric [ "of" TAG ] op threshold [ "for" duration ] "then" action
//! metric    := "p50_latency" | "p95_latency" | "p99_latency" | "error_rate"
//!            | "rps" | "in_flight" | "reject_rate" | CUSTOM
//! op        := ">" | ">=" | "<" | "<="
//! threshold := NUMBER [unit]
//!                latency metrics:          "ms" or "s" (a plain number means ms), stored in ms
//!                error_rate, reject_rate:  "%" or plain, a percentage in 0..=100
//!                rps, in_flight, CUSTOM:   plain number only
//! duration  := NUMBER ("ms" | "s" | "m")     the hold time: how long the condition must hold
//! action    := "block" TAG
//!            | "throttle" TAG "to" NUMBER "%"    admit that percentage (0..=100) of the tag
//!            | "limit" TAG "to" NUMBER "/s"      weight units per second, > 0
//!            | "limit" "concurrency" "to" INTEGER  at least 1
//!            | "shed"
//!            | "kill"
//! CUSTOM    := 1..=63 chars of [a-z0-9_], starting with a letter;
//!              not `latency` or `errors` (reserved), nor a near-miss of a built-in metric
//! TAG       := 1..=128 chars of [A-Za-z0-9_.:-]
//! NUMBER    := DIGITS [ "." DIGITS ]            (no sign, no exponent, finite)
//! ```
//!
//! Nothing may follow the action. After `limit`, `concurrency` is always the
//! keyword, never a tag. `TAG` and `CUSTOM` are checked by
//! [`names::rule_tag_problem`](crate::names::rule_tag_problem) and
//! [`names::metric_problem`](crate::names::metric_problem), the validators the rest of
//! WaitState uses too.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use waitstate_core::rule::{Action, Metric, Op, Rule};
//!
//! let rule: Rule = "when p95_latency > 500ms for 5s then block free".parse()?;
//! assert_eq!(rule.condition.metric, Metric::P95Latency);
//! assert_eq!(rule.condition.op, Op::Gt);
//! assert_eq!(rule.condition.threshold, 500.0);
//! assert_eq!(rule.condition.hold, Duration::from_secs(5));
//! assert_eq!(rule.action, Action::Block { tag: "free".to_owned() });
//! assert!(rule.condition.op.holds(612.0, rule.condition.threshold));
//!
//! // `Display` gives the canonical text, which parses back to the same rule.
//! let shed = Rule::parse("when p95_latency > 1s then shed")?;
//! assert_eq!(shed.to_string(), "when p95_latency > 1000ms then shed");
//! assert_eq!(Rule::parse(&shed.to_string())?, shed);
//!
//! let err = Rule::parse("when p95_latency > 500ms than block free").unwrap_err();
//! assert_eq!(err.column(), 26);
//! assert_eq!(err.to_string(), "column 26: expected `then`, found `than`");
//! # Ok::<(), waitstate_core::rule::RuleError>(())
//! ```

mod declared;
mod parse;
mod suggest;
mod token;
mod types;

pub use self::types::{Action, Condition, Metric, Op, Rule, RuleError};

#[cfg(test)]
mod tests;
