//! The public types of a parsed rule, their canonical text (`Display`), and `RuleError`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::parse::Parser;

/// Names of the built-in metrics, in declaration order.
pub(super) const BUILTIN_METRICS: [&str; 7] = [
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "error_rate",
    "rps",
    "in_flight",
    "reject_rate",
];

/// A parsed reflex rule: when [`condition`](Rule::condition) has held for its
/// hold time, take [`action`](Rule::action).
///
/// Parse one with [`Rule::parse`] or [`str::parse`]; its [`Display`](fmt::Display)
/// output is the canonical text of the rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// What must be true, and for how long, before the rule fires.
    pub condition: Condition,
    /// What the engine does when the rule fires.
    pub action: Action,
}

/// The `when` part of a rule: `metric [of tag] op threshold [for hold]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The metric being watched.
    pub metric: Metric,
    /// Restricts the metric to one tag (`p99_latency of checkout`); `None` watches all traffic.
    pub tag: Option<String>,
    /// How the metric's value is compared with [`threshold`](Condition::threshold).
    pub op: Op,
    /// The value compared against: milliseconds for latency metrics, a
    /// percentage (0 to 100) for `error_rate` and `reject_rate`, and a plain
    /// number otherwise.
    pub threshold: f64,
    /// How long the comparison must hold before the rule fires; zero when the
    /// rule has no `for` clause.
    pub hold: Duration,
}

/// A metric a rule can watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Metric {
    /// Median latency, in milliseconds (`p50_latency`).
    P50Latency,
    /// 95th percentile latency, in milliseconds (`p95_latency`).
    P95Latency,
    /// 99th percentile latency, in milliseconds (`p99_latency`).
    P99Latency,
    /// Percentage of requests that failed (`error_rate`).
    ErrorRate,
    /// Requests per second (`rps`).
    Rps,
    /// Requests currently in flight (`in_flight`).
    InFlight,
    /// Percentage of requests the engine rejected (`reject_rate`).
    RejectRate,
    /// A metric reported by the application, by name (e.g. `queue_depth`).
    ///
    /// The parser only produces names that follow the v1 custom metric name
    /// rule (1 to 63 characters of `a-z`, `0-9` and `_`, starting with a
    /// letter), that are not reserved (`latency`, `errors`) and that are not
    /// near-misses of a built-in metric name (such as `p59_latency`).
    Custom(String),
}

/// A comparison between a metric's value and a rule's threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `>`: the value is greater than the threshold.
    Gt,
    /// `>=`: the value is greater than or equal to the threshold.
    Ge,
    /// `<`: the value is less than the threshold.
    Lt,
    /// `<=`: the value is less than or equal to the threshold.
    Le,
}

/// What a rule does when it fires.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// `block TAG`: reject all traffic of the tag.
    Block {
        /// The tag whose traffic is rejected.
        tag: String,
    },
    /// `throttle TAG to P%`: admit only `percent` percent of the tag's traffic.
    Throttle {
        /// The tag being throttled.
        tag: String,
        /// The percentage of the tag's traffic still admitted, in `0.0..=100.0`.
        percent: f64,
    },
    /// `limit TAG to N/s`: cap the tag at `per_second` weight units per second.
    Limit {
        /// The tag being limited.
        tag: String,
        /// The admitted rate in weight units per second; finite and greater than zero.
        per_second: f64,
    },
    /// `limit concurrency to N`: at most `max` requests in flight, counted exactly: it caps
    /// the admission pool (see [`crate::admission`]), where a full pool serves the highest
    /// priority first.
    LimitConcurrency {
        /// The maximum number of requests in flight; at least 1.
        max: u32,
    },
    /// `shed`: shed load, lowest priority first.
    Shed,
    /// `kill`: reject all traffic.
    Kill,
}

/// Why a rule's text could not be parsed, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    column: usize,
    message: String,
}

impl RuleError {
    pub(super) fn new(column: usize, message: impl Into<String>) -> Self {
        Self {
            column,
            message: message.into(),
        }
    }

    /// The 1-based column, counted in characters, of the offending token; one
    /// past the last character when the rule ended too early.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What is wrong, without the column.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RuleError {
    /// Writes `column N: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for RuleError {}

impl Rule {
    /// Parses one rule such as `when p95_latency > 500ms for 5s then block free`.
    ///
    /// See the [module documentation](crate::rule) for the grammar. Never panics.
    ///
    /// # Errors
    ///
    /// Returns a [`RuleError`] pointing at the first offending token when the
    /// text does not follow the grammar or a value is out of range.
    pub fn parse(src: &str) -> Result<Rule, RuleError> {
        Parser::new(src).rule()
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    /// Same as [`Rule::parse`].
    fn from_str(src: &str) -> Result<Self, Self::Err> {
        Rule::parse(src)
    }
}

impl fmt::Display for Rule {
    /// Writes the canonical text of the rule.
    ///
    /// Latency thresholds are written in milliseconds, percentages with `%`,
    /// the hold time in the largest unit (`m`, `s` or `ms`) that represents it
    /// exactly, and the `for` clause only when the hold time is not zero.
    /// Numbers are written in the shortest form that reads back to the same
    /// `f64`. For every rule [`Rule::parse`] can produce,
    /// `Rule::parse(&rule.to_string()) == Ok(rule)`. A rule built by hand with
    /// values the parser would reject (a tag with spaces, a NaN threshold,
    /// `Action::Limit` for a tag named `concurrency`, …) is written as is and
    /// will not parse back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let condition = &self.condition;
        write!(f, "when {}", condition.metric.name())?;
        if let Some(tag) = &condition.tag {
            write!(f, " of {tag}")?;
        }
        let threshold = Num(condition.threshold);
        write!(f, " {} {threshold}", condition.op.symbol())?;
        match ThresholdKind::of(&condition.metric) {
            ThresholdKind::Latency => f.write_str("ms")?,
            ThresholdKind::Percent => f.write_str("%")?,
            ThresholdKind::Plain => {}
        }
        if !condition.hold.is_zero() {
            write!(f, " for {}", Hold(condition.hold))?;
        }
        f.write_str(" then ")?;
        match &self.action {
            Action::Block { tag } => write!(f, "block {tag}"),
            Action::Throttle { tag, percent } => write!(f, "throttle {tag} to {}%", Num(*percent)),
            Action::Limit { tag, per_second } => {
                write!(f, "limit {tag} to {}/s", Num(*per_second))
            }
            Action::LimitConcurrency { max } => write!(f, "limit concurrency to {max}"),
            Action::Shed => f.write_str("shed"),
            Action::Kill => f.write_str("kill"),
        }
    }
}

impl Op {
    /// Whether `value op threshold` is true. Always `false` when either side
    /// is NaN.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    /// The operator as written in a rule.
    pub(super) fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

impl Metric {
    /// The metric's name as written in a rule: `p95_latency`, `error_rate`, …,
    /// or the custom metric's own name.
    pub fn name(&self) -> &str {
        match self {
            Metric::P50Latency => "p50_latency",
            Metric::P95Latency => "p95_latency",
            Metric::P99Latency => "p99_latency",
            Metric::ErrorRate => "error_rate",
            Metric::Rps => "rps",
            Metric::InFlight => "in_flight",
            Metric::RejectRate => "reject_rate",
            Metric::Custom(name) => name,
        }
    }

    /// The built-in metric with this exact name.
    pub(super) fn builtin(name: &str) -> Option<Metric> {
        Some(match name {
            "p50_latency" => Metric::P50Latency,
            "p95_latency" => Metric::P95Latency,
            "p99_latency" => Metric::P99Latency,
            "error_rate" => Metric::ErrorRate,
            "rps" => Metric::Rps,
            "in_flight" => Metric::InFlight,
            "reject_rate" => Metric::RejectRate,
            _ => return None,
        })
    }
}

/// How a metric's threshold is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ThresholdKind {
    /// Milliseconds; `ms`, `s` or no unit.
    Latency,
    /// A percentage in `0..=100`; `%` or no unit.
    Percent,
    /// A plain number, no unit.
    Plain,
}

impl ThresholdKind {
    pub(super) fn of(metric: &Metric) -> Self {
        match metric {
            Metric::P50Latency | Metric::P95Latency | Metric::P99Latency => Self::Latency,
            Metric::ErrorRate | Metric::RejectRate => Self::Percent,
            Metric::Rps | Metric::InFlight | Metric::Custom(_) => Self::Plain,
        }
    }
}

/// Writes an `f64` in the shortest form that parses back to it, never `-0`.
#[derive(Clone, Copy, Debug)]
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0.0 {
            f.write_str("0")
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Writes a hold time in the largest unit that represents it exactly.
#[derive(Clone, Copy, Debug)]
struct Hold(Duration);

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NANOS_PER_MS: u128 = 1_000_000;
        const NANOS_PER_S: u128 = 1_000_000_000;
        const NANOS_PER_M: u128 = 60 * NANOS_PER_S;
        let nanos = self.0.as_nanos();
        if nanos.is_multiple_of(NANOS_PER_M) {
            write!(f, "{}m", nanos / NANOS_PER_M)
        } else if nanos.is_multiple_of(NANOS_PER_S) {
            write!(f, "{}s", nanos / NANOS_PER_S)
        } else if nanos.is_multiple_of(NANOS_PER_MS) {
            write!(f, "{}ms", nanos / NANOS_PER_MS)
        } else {
            let fraction = format!("{:06}", nanos % NANOS_PER_MS);
            write!(
                f,
                "{}.{}ms",
                nanos / NANOS_PER_MS,
                fraction.trim_end_matches('0')
            )
        }
    }
}
