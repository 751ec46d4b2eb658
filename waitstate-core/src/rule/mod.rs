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
//! keyword, never a tag.
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

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest accepted tag, in characters.
const MAX_TAG_CHARS: usize = 128;
/// Longest accepted custom metric name, in characters (the v1 custom metric name rule).
const MAX_METRIC_CHARS: usize = 63;
/// Names of the built-in metrics, in declaration order.
const BUILTIN_METRICS: [&str; 7] = [
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "error_rate",
    "rps",
    "in_flight",
    "reject_rate",
];
/// What a metric position accepts, for error messages.
const METRIC_EXPECTATION: &str = "a metric such as p95_latency, error_rate, rps, in_flight, \
     reject_rate or a custom metric name";
/// The action keywords, for suggestions.
const ACTIONS: [&str; 5] = ["block", "throttle", "limit", "shed", "kill"];
/// What an action position accepts, for error messages.
const ACTION_EXPECTATION: &str = "an action (`block`, `throttle`, `limit`, `shed` or `kill`)";
/// What a duration position accepts, for error messages.
const DURATION_EXPECTATION: &str = "a duration such as 5s, 500ms or 2m";
/// Tokens shown in error messages are cut to this many characters.
const MAX_SHOWN_CHARS: usize = 40;

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
    /// `limit concurrency to N`: at most `max` requests in flight, priority-aware (the top
    /// priority may hold `max`, every lower level `max / 3`, counting its own requests and
    /// those of the levels above).
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
    fn new(column: usize, message: impl Into<String>) -> Self {
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
    /// See the [module documentation](self) for the grammar. Never panics.
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
    fn symbol(self) -> &'static str {
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
    fn builtin(name: &str) -> Option<Metric> {
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
enum ThresholdKind {
    /// Milliseconds; `ms`, `s` or no unit.
    Latency,
    /// A percentage in `0..=100`; `%` or no unit.
    Percent,
    /// A plain number, no unit.
    Plain,
}

impl ThresholdKind {
    fn of(metric: &Metric) -> Self {
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

/// One whitespace-separated token and the column of its first character.
#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    text: &'a str,
    column: usize,
}

/// Splits `src` on whitespace, remembering 1-based character columns.
fn tokenize(src: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (index, (byte, ch)) in src.char_indices().enumerate() {
        if ch.is_whitespace() {
            if let Some((start_byte, column)) = start.take() {
                tokens.push(Token {
                    text: &src[start_byte..byte],
                    column,
                });
            }
        } else if start.is_none() {
            start = Some((byte, index + 1));
        }
    }
    if let Some((start_byte, column)) = start {
        tokens.push(Token {
            text: &src[start_byte..],
            column,
        });
    }
    tokens
}

/// A token quoted in an error message, cut short when very long.
fn show(text: &str) -> String {
    if text.chars().count() > MAX_SHOWN_CHARS {
        let head: String = text.chars().take(MAX_SHOWN_CHARS).collect();
        format!("{head}…")
    } else {
        text.to_owned()
    }
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), in chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            let mut best = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
            if i > 0 && j > 0 && ca == b[j - 1] && a[i - 1] == cb {
                best = best.min(before[j - 1] + 1);
            }
            current[j + 1] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The candidate closest to `word` (compared in lowercase), if it is within
/// edit distance 2 (1 for candidates of 3 characters or fewer).
fn closest<'k>(word: &str, candidates: &[&'k str]) -> Option<&'k str> {
    if word.chars().count() > MAX_SHOWN_CHARS {
        return None;
    }
    let word = word.to_ascii_lowercase();
    candidates
        .iter()
        .filter_map(|&candidate| {
            let distance = edit_distance(&word, candidate);
            let max = if candidate.len() <= 3 { 1 } else { 2 };
            (distance <= max).then(|| ((distance, letter_difference(&word, candidate)), candidate))
        })
        .min_by_key(|&(rank, _)| rank)
        .map(|(_, candidate)| candidate)
}

/// How many characters the two strings do not share, ignoring order: breaks
/// ties between equally distant candidates in favour of a transposition
/// (`p59_latency` is closer to `p95_latency` than to `p50_latency`).
fn letter_difference(a: &str, b: &str) -> usize {
    let mut unmatched: Vec<char> = b.chars().collect();
    let mut missing = 0;
    for c in a.chars() {
        match unmatched.iter().position(|&u| u == c) {
            Some(index) => {
                unmatched.swap_remove(index);
            }
            None => missing += 1,
        }
    }
    missing + unmatched.len()
}

/// `"; did you mean `x`?"`, or nothing.
fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates).map_or_else(String::new, |s| format!("; did you mean `{s}`?"))
}

/// The built-in metric a syntactically valid custom name is a near-miss of:
/// within edit distance 2 of a built-in name of 7 characters or more (so
/// `p59_latency` and `inflight` are typos, but `qps` is a custom metric).
fn near_builtin(name: &str) -> Option<&'static str> {
    BUILTIN_METRICS
        .iter()
        .filter(|builtin| builtin.len() >= 7)
        .map(|&builtin| {
            let rank = (
                edit_distance(name, builtin),
                letter_difference(name, builtin),
            );
            (rank, builtin)
        })
        .filter(|&((distance, _), _)| distance <= 2)
        .min_by_key(|&(rank, _)| rank)
        .map(|(_, builtin)| builtin)
}

/// Why `name` breaks the v1 custom metric name rule, if it does.
fn custom_name_problem(name: &str) -> Option<String> {
    let count = name.chars().count();
    if count > MAX_METRIC_CHARS {
        return Some(format!(
            "custom metric names are at most {MAX_METRIC_CHARS} characters, this one has {count}"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Some("custom metric names start with a lowercase letter".to_owned());
    }
    name.chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .map(|bad| format!("`{bad}` is not allowed; custom metric names use only a-z, 0-9 and `_`"))
}

/// Parses the metric position.
fn parse_metric(name: &str) -> Result<Metric, String> {
    if let Some(metric) = Metric::builtin(name) {
        return Ok(metric);
    }
    match name {
        "latency" => {
            return Err("`latency` is reserved and cannot be a custom metric name; \
                 did you mean `p95_latency` (or `p50_latency`, `p99_latency`)?"
                .to_owned());
        }
        "errors" => {
            return Err("`errors` is reserved and cannot be a custom metric name; \
                 did you mean `error_rate`?"
                .to_owned());
        }
        _ => {}
    }
    let shown = show(name);
    match custom_name_problem(name) {
        None => match near_builtin(name) {
            None => Ok(Metric::Custom(name.to_owned())),
            Some(builtin) => Err(format!(
                "unknown metric `{shown}`: expected {METRIC_EXPECTATION}; did you mean `{builtin}`? \
                 (custom metric names this close to a built-in metric are rejected as likely typos)"
            )),
        },
        Some(problem) => {
            let hint = if let Some(builtin) = closest(name, &BUILTIN_METRICS) {
                format!("; did you mean `{builtin}`?")
            } else if name.contains(['<', '>', '=']) {
                "; put spaces around the comparison (e.g. `p95_latency > 500ms`)".to_owned()
            } else {
                format!(" ({problem})")
            };
            Err(format!(
                "unknown metric `{shown}`: expected {METRIC_EXPECTATION}{hint}"
            ))
        }
    }
}

/// Why `text` is not a valid tag, if it is not.
fn tag_problem(text: &str, after: &str) -> Option<String> {
    let count = text.chars().count();
    if count > MAX_TAG_CHARS {
        return Some(format!(
            "tag `{}` after `{after}` is too long: {count} characters, the maximum is {MAX_TAG_CHARS}",
            show(text)
        ));
    }
    text.chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
        .map(|bad| {
            format!(
                "expected a tag after `{after}`, found `{}`: `{bad}` is not allowed; \
                 tags use only ASCII letters, digits, `_`, `.`, `:` and `-`",
                show(text)
            )
        })
}

/// Whether a standalone token is a unit that belongs to the number before it (`500 ms`).
fn is_unit_word(text: &str) -> bool {
    matches!(text, "ms" | "s" | "m" | "%" | "/s")
}

/// A number and its unit, as written.
#[derive(Clone, Copy, Debug)]
struct Quantity<'a> {
    /// The digits and decimal point.
    number: &'a str,
    /// The unit, `""` when none.
    unit: &'a str,
    /// The column of the number.
    column: usize,
}

impl fmt::Display for Quantity<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", show(&format!("{}{}", self.number, self.unit)))
    }
}

/// Why a number could not be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overflow {
    /// Too large to represent.
    TooLarge,
    /// Finer than the representation allows (durations: 1ns).
    TooPrecise,
}

/// A validated decimal number `int[.frac]`.
#[derive(Clone, Copy, Debug)]
struct Decimal<'a> {
    int: &'a str,
    frac: &'a str,
}

impl<'a> Decimal<'a> {
    /// Validates `DIGITS [ "." DIGITS ]`.
    fn new(text: &'a str) -> Option<Self> {
        let (int, frac) = match text.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || frac.is_some_and(|frac| !digits(frac)) {
            return None;
        }
        Some(Self {
            int,
            frac: frac.unwrap_or(""),
        })
    }

    /// The value times `10^shift`, rounded once to the nearest `f64`; `None` if not finite.
    fn to_f64(self, shift: usize) -> Option<f64> {
        let split = shift.min(self.frac.len());
        let (moved, rest) = self.frac.split_at(split);
        let zeros = "0".repeat(shift - split);
        let text = if rest.is_empty() {
            format!("{}{moved}{zeros}", self.int)
        } else {
            format!("{}{moved}{zeros}.{rest}", self.int)
        };
        text.parse::<f64>().ok().filter(|value| value.is_finite())
    }

    /// The value times `unit`, exactly, as an integer.
    fn times(self, unit: u128) -> Result<u128, Overflow> {
        let int = self.int.trim_start_matches('0');
        let frac = self.frac.trim_end_matches('0');
        // `unit` divides 60 * 10^9 = 2^11 * 3 * 5^10, and `frac` does not end in
        // 0, so more than 11 fractional digits can never give a whole result.
        if frac.len() > 11 {
            return Err(Overflow::TooPrecise);
        }
        let mut scaled: u128 = 0;
        for digit in int.bytes().chain(frac.bytes()) {
            scaled = scaled
                .checked_mul(10)
                .and_then(|n| n.checked_add(u128::from(digit - b'0')))
                .ok_or(Overflow::TooLarge)?;
        }
        let scaled = scaled.checked_mul(unit).ok_or(Overflow::TooLarge)?;
        let divisor = 10u128.pow(u32::try_from(frac.len()).unwrap_or(0));
        if scaled.is_multiple_of(divisor) {
            Ok(scaled / divisor)
        } else {
            Err(Overflow::TooPrecise)
        }
    }
}

/// A recursive-descent parser over whitespace-separated tokens.
#[derive(Debug)]
struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    end_column: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            tokens: tokenize(src),
            pos: 0,
            end_column: src.chars().count() + 1,
        }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    /// The next token, or an "unexpected end of rule" error.
    fn expect(&mut self, expected: &str) -> Result<Token<'a>, RuleError> {
        let token = self.peek().ok_or_else(|| {
            RuleError::new(
                self.end_column,
                format!("unexpected end of rule: expected {expected}"),
            )
        })?;
        self.bump();
        Ok(token)
    }

    /// Consumes the keyword `keyword`; `hint` follows the error message.
    fn keyword(&mut self, keyword: &str, after: &str, hint: &str) -> Result<(), RuleError> {
        let token = self.expect(&format!("`{keyword}` after {after}"))?;
        if token.text == keyword {
            return Ok(());
        }
        Err(RuleError::new(
            token.column,
            format!(
                "expected `{keyword}`, found `{}`{}{hint}",
                show(token.text),
                lowercase_hint(token.text, &[keyword])
            ),
        ))
    }

    fn rule(&mut self) -> Result<Rule, RuleError> {
        if self.tokens.is_empty() {
            return Err(RuleError::new(
                self.end_column,
                "empty rule: expected a rule such as `when p95_latency > 500ms then shed`",
            ));
        }
        self.keyword("when", "the start", "; a rule starts with `when`")?;
        let metric = self.metric()?;
        let tag = match self.peek() {
            Some(token) if token.text == "of" => {
                self.bump();
                Some(self.tag("of")?)
            }
            _ => None,
        };
        let op = self.op()?;
        let threshold = self.threshold(&metric, op)?;
        let (hold, had_for) = match self.peek() {
            Some(token) if token.text == "for" => {
                self.bump();
                (self.hold()?, true)
            }
            _ => (Duration::ZERO, false),
        };
        self.then(had_for)?;
        let action = self.action()?;
        if let Some(extra) = self.peek() {
            return Err(RuleError::new(
                extra.column,
                format!(
                    "unexpected `{}` after the action; nothing may follow the action",
                    show(extra.text)
                ),
            ));
        }
        Ok(Rule {
            condition: Condition {
                metric,
                tag,
                op,
                threshold,
                hold,
            },
            action,
        })
    }

    fn metric(&mut self) -> Result<Metric, RuleError> {
        let token = self.expect(&format!("{METRIC_EXPECTATION} after `when`"))?;
        parse_metric(token.text).map_err(|message| RuleError::new(token.column, message))
    }

    fn tag(&mut self, after: &str) -> Result<String, RuleError> {
        let token = self.expect(&format!("a tag after `{after}`"))?;
        match tag_problem(token.text, after) {
            None => Ok(token.text.to_owned()),
            Some(message) => Err(RuleError::new(token.column, message)),
        }
    }

    fn op(&mut self) -> Result<Op, RuleError> {
        const EXPECTED: &str = "a comparison `>`, `>=`, `<` or `<=`";
        let token = self.expect(EXPECTED)?;
        let op = match token.text {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            text => {
                let hint = match text {
                    "=" | "==" | "!=" => "; equality is not supported, use `>=` or `<=`",
                    "=>" => "; did you mean `>=`?",
                    "=<" => "; did you mean `<=`?",
                    _ if text.starts_with(['<', '>']) => {
                        "; put a space between the comparison and the threshold"
                    }
                    _ if !text.starts_with(|c: char| c.is_ascii_digit())
                        && tag_problem(text, "of").is_none() =>
                    {
                        "; to watch a metric for one tag, write `<metric> of <tag>`"
                    }
                    _ => "",
                };
                return Err(RuleError::new(
                    token.column,
                    format!("expected {EXPECTED}, found `{}`{hint}", show(text)),
                ));
            }
        };
        Ok(op)
    }

    /// Reads `NUMBER [unit]`, taking a unit from the next token when it stands alone.
    fn quantity(&mut self, expected: &str, after: &str) -> Result<Quantity<'a>, RuleError> {
        let token = self.expect(&format!("{expected} after `{after}`"))?;
        let split = token
            .text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(token.text.len());
        let (number, unit) = token.text.split_at(split);
        let shown = show(token.text);
        if number.is_empty() {
            let after_sign = token.text.get(1..).unwrap_or("");
            let hint = if token.text.starts_with('-')
                && after_sign.starts_with(|c: char| c.is_ascii_digit())
            {
                "; negative numbers are not allowed"
            } else if token.text.starts_with('+')
                && after_sign.starts_with(|c: char| c.is_ascii_digit())
            {
                "; write the number without a sign"
            } else {
                ""
            };
            return Err(RuleError::new(
                token.column,
                format!("expected {expected}, found `{shown}`{hint}"),
            ));
        }
        let mut unit_chars = unit.chars();
        if matches!(unit_chars.next(), Some('e' | 'E'))
            && unit_chars
                .next()
                .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '-')
        {
            return Err(RuleError::new(
                token.column,
                format!(
                    "exponent notation is not supported, found `{shown}`; \
                     write the number out in full (e.g. 1000)"
                ),
            ));
        }
        let mut quantity = Quantity {
            number,
            unit,
            column: token.column,
        };
        if unit.is_empty()
            && let Some(next) = self.peek()
            && is_unit_word(next.text)
        {
            self.bump();
            quantity.unit = next.text;
        }
        Ok(quantity)
    }

    /// Validates the number part of a quantity.
    fn decimal(quantity: Quantity<'a>) -> Result<Decimal<'a>, RuleError> {
        Decimal::new(quantity.number).ok_or_else(|| {
            RuleError::new(
                quantity.column,
                format!(
                    "`{}` is not a valid number; write numbers like 500 or 0.5",
                    show(quantity.number)
                ),
            )
        })
    }

    fn threshold(&mut self, metric: &Metric, op: Op) -> Result<f64, RuleError> {
        let name = metric.name();
        let kind = ThresholdKind::of(metric);
        let expected = match kind {
            ThresholdKind::Latency => "a latency threshold such as 500ms or 2s",
            ThresholdKind::Percent => "a percentage threshold such as 5%",
            ThresholdKind::Plain => "a threshold such as 100",
        };
        let quantity = self.quantity(expected, op.symbol())?;
        let shift = match (kind, quantity.unit) {
            (ThresholdKind::Latency, "" | "ms") | (ThresholdKind::Percent, "" | "%") => 0,
            (ThresholdKind::Latency, "s") => 3,
            (ThresholdKind::Latency, _) => {
                return Err(RuleError::new(
                    quantity.column,
                    format!("`{name}` takes a latency (e.g. 500ms or 2s), not `{quantity}`"),
                ));
            }
            (ThresholdKind::Percent, _) => {
                return Err(RuleError::new(
                    quantity.column,
                    format!("`{name}` takes a percentage (e.g. 5%), not `{quantity}`"),
                ));
            }
            (ThresholdKind::Plain, "") => 0,
            (ThresholdKind::Plain, _) => {
                let custom = if matches!(metric, Metric::Custom(_)) {
                    "custom metric "
                } else {
                    ""
                };
                return Err(RuleError::new(
                    quantity.column,
                    format!("{custom}`{name}` takes a plain number (e.g. 100), not `{quantity}`"),
                ));
            }
        };
        let value = Self::decimal(quantity)?.to_f64(shift).ok_or_else(|| {
            RuleError::new(
                quantity.column,
                format!("threshold `{quantity}` is too large"),
            )
        })?;
        if kind == ThresholdKind::Percent && value > 100.0 {
            return Err(RuleError::new(
                quantity.column,
                format!("`{name}` is a percentage between 0% and 100%, found `{quantity}`"),
            ));
        }
        Ok(value)
    }

    fn hold(&mut self) -> Result<Duration, RuleError> {
        let quantity = self.quantity(DURATION_EXPECTATION, "for")?;
        let unit: u128 = match quantity.unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            unit => {
                let hint = match unit {
                    "" => "; add a unit",
                    "h" => "; hours are not supported, write minutes such as 60m",
                    _ => "",
                };
                return Err(RuleError::new(
                    quantity.column,
                    format!("expected {DURATION_EXPECTATION}, found `{quantity}`{hint}"),
                ));
            }
        };
        let nanos = Self::decimal(quantity)?.times(unit);
        let duration = nanos.ok().and_then(|nanos| {
            let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
            let subsec = u32::try_from(nanos % 1_000_000_000).ok()?;
            Some(Duration::new(secs, subsec))
        });
        duration.ok_or_else(|| {
            let problem = match nanos {
                Err(Overflow::TooPrecise) => "is more precise than a nanosecond",
                _ => "is too long",
            };
            RuleError::new(quantity.column, format!("duration `{quantity}` {problem}"))
        })
    }

    /// Consumes `then`; `had_for` is whether a `for` clause was already read.
    fn then(&mut self, had_for: bool) -> Result<(), RuleError> {
        let expected = if had_for {
            "`then` and an action"
        } else {
            "`for` or `then`"
        };
        let token = self.expect(expected)?;
        if token.text == "then" {
            return Ok(());
        }
        let candidates: &[&str] = if had_for { &["then"] } else { &["for", "then"] };
        let message = match closest(token.text, candidates) {
            Some(keyword) => format!(
                "expected `{keyword}`, found `{}`{}",
                show(token.text),
                lowercase_hint(token.text, &[keyword])
            ),
            None => {
                let hint = if ACTIONS.contains(&token.text) {
                    format!("; write `then {}`", token.text)
                } else {
                    String::new()
                };
                let expected = if had_for {
                    "`then`"
                } else {
                    "`for <duration>` or `then`"
                };
                format!("expected {expected}, found `{}`{hint}", show(token.text))
            }
        };
        Err(RuleError::new(token.column, message))
    }

    fn action(&mut self) -> Result<Action, RuleError> {
        let token = self.expect(&format!("{ACTION_EXPECTATION} after `then`"))?;
        let action = match token.text {
            "block" => Action::Block {
                tag: self.tag("block")?,
            },
            "throttle" => {
                let tag = self.tag("throttle")?;
                self.keyword(
                    "to",
                    &format!("`throttle {tag}`"),
                    &format!("; write `throttle {tag} to 50%`"),
                )?;
                let percent = self.percent()?;
                Action::Throttle { tag, percent }
            }
            "limit" => match self.peek() {
                Some(next) if next.text == "concurrency" => {
                    self.bump();
                    self.keyword(
                        "to",
                        "`limit concurrency`",
                        "; write `limit concurrency to 150`",
                    )?;
                    Action::LimitConcurrency {
                        max: self.concurrency()?,
                    }
                }
                _ => {
                    let tag = self.tag("limit")?;
                    self.keyword(
                        "to",
                        &format!("`limit {tag}`"),
                        &format!("; write `limit {tag} to 100/s`"),
                    )?;
                    let per_second = self.rate(&tag)?;
                    Action::Limit { tag, per_second }
                }
            },
            "shed" => Action::Shed,
            "kill" => Action::Kill,
            text => {
                return Err(RuleError::new(
                    token.column,
                    format!(
                        "unknown action `{}`: expected {ACTION_EXPECTATION}{}",
                        show(text),
                        did_you_mean(text, &ACTIONS)
                    ),
                ));
            }
        };
        Ok(action)
    }

    fn percent(&mut self) -> Result<f64, RuleError> {
        let quantity = self.quantity("a percentage such as 50%", "to")?;
        match quantity.unit {
            "%" => {}
            "" => {
                return Err(RuleError::new(
                    quantity.column,
                    format!("expected a percentage such as 50%, found `{quantity}`; add `%`"),
                ));
            }
            _ => {
                return Err(RuleError::new(
                    quantity.column,
                    format!("`throttle` takes a percentage (e.g. 50%), not `{quantity}`"),
                ));
            }
        }
        match Self::decimal(quantity)?.to_f64(0) {
            Some(percent) if percent <= 100.0 => Ok(percent),
            _ => Err(RuleError::new(
                quantity.column,
                format!("`throttle` takes a percentage between 0% and 100%, found `{quantity}`"),
            )),
        }
    }

    fn rate(&mut self, tag: &str) -> Result<f64, RuleError> {
        let quantity = self.quantity("a rate such as 100/s", "to")?;
        match quantity.unit {
            "/s" => {}
            "" => {
                return Err(RuleError::new(
                    quantity.column,
                    format!("expected a rate such as 100/s, found `{quantity}`; add `/s`"),
                ));
            }
            _ => {
                return Err(RuleError::new(
                    quantity.column,
                    format!("`limit` takes a rate per second (e.g. 100/s), not `{quantity}`"),
                ));
            }
        }
        match Self::decimal(quantity)?.to_f64(0) {
            Some(rate) if rate > 0.0 => Ok(rate),
            Some(_) => Err(RuleError::new(
                quantity.column,
                format!(
                    "the rate must be greater than 0/s; to reject all of `{}`, use `block {}`",
                    show(tag),
                    show(tag)
                ),
            )),
            None => Err(RuleError::new(
                quantity.column,
                format!("rate `{quantity}` is too large"),
            )),
        }
    }

    fn concurrency(&mut self) -> Result<u32, RuleError> {
        let quantity = self.quantity("a whole number such as 150", "to")?;
        if !quantity.unit.is_empty() {
            return Err(RuleError::new(
                quantity.column,
                format!(
                    "`limit concurrency` takes a whole number of requests (e.g. 150), \
                     not `{quantity}`; `concurrency` after `limit` is a keyword, not a tag"
                ),
            ));
        }
        if quantity.number.contains('.') {
            return Err(RuleError::new(
                quantity.column,
                format!("the concurrency limit must be a whole number, found `{quantity}`"),
            ));
        }
        match quantity.number.parse::<u32>() {
            Ok(0) => Err(RuleError::new(
                quantity.column,
                "the concurrency limit must be at least 1, found `0`",
            )),
            Ok(max) => Ok(max),
            Err(_) => Err(RuleError::new(
                quantity.column,
                format!(
                    "the concurrency limit `{quantity}` is too large; the maximum is {}",
                    u32::MAX
                ),
            )),
        }
    }
}

/// `" (keywords are lowercase)"` when `text` is a keyword in the wrong case.
fn lowercase_hint(text: &str, keywords: &[&str]) -> &'static str {
    let lower = text.to_ascii_lowercase();
    if lower != text && keywords.contains(&lower.as_str()) {
        " (keywords are lowercase)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(src: &str) -> Rule {
        match Rule::parse(src) {
            Ok(rule) => rule,
            Err(err) => panic!("`{src}` should parse, got {err}"),
        }
    }

    fn err(src: &str) -> RuleError {
        match Rule::parse(src) {
            Ok(rule) => panic!("`{src}` should not parse, got {rule:?}"),
            Err(err) => err,
        }
    }

    fn cond(metric: Metric, op: Op, threshold: f64) -> Condition {
        Condition {
            metric,
            tag: None,
            op,
            threshold,
            hold: Duration::ZERO,
        }
    }

    fn tag(s: &str) -> String {
        s.to_owned()
    }

    /// Parses, checks the canonical text parses back to the same rule, returns it.
    fn round_trip(src: &str) -> Rule {
        let rule = ok(src);
        let text = rule.to_string();
        assert_eq!(
            Rule::parse(&text),
            Ok(rule.clone()),
            "canonical text `{text}`"
        );
        rule
    }

    #[test]
    fn design_examples() {
        assert_eq!(
            round_trip("when p95_latency > 500ms for 5s then block free"),
            Rule {
                condition: Condition {
                    hold: Duration::from_secs(5),
                    ..cond(Metric::P95Latency, Op::Gt, 500.0)
                },
                action: Action::Block { tag: tag("free") },
            }
        );
        assert_eq!(
            round_trip("when error_rate > 5% then throttle pro to 50%"),
            Rule {
                condition: cond(Metric::ErrorRate, Op::Gt, 5.0),
                action: Action::Throttle {
                    tag: tag("pro"),
                    percent: 50.0
                },
            }
        );
        assert_eq!(
            round_trip("when p95_latency > 1s then shed"),
            Rule {
                condition: cond(Metric::P95Latency, Op::Gt, 1000.0),
                action: Action::Shed,
            }
        );
        assert_eq!(
            round_trip("when p99_latency of checkout > 2s then limit free to 100/s"),
            Rule {
                condition: Condition {
                    tag: Some(tag("checkout")),
                    ..cond(Metric::P99Latency, Op::Gt, 2000.0)
                },
                action: Action::Limit {
                    tag: tag("free"),
                    per_second: 100.0
                },
            }
        );
        assert_eq!(
            round_trip("when in_flight > 200 then limit concurrency to 150"),
            Rule {
                condition: cond(Metric::InFlight, Op::Gt, 200.0),
                action: Action::LimitConcurrency { max: 150 },
            }
        );
        assert_eq!(
            round_trip("when queue_depth > 50 then kill"),
            Rule {
                condition: cond(Metric::Custom(tag("queue_depth")), Op::Gt, 50.0),
                action: Action::Kill,
            }
        );
    }

    #[test]
    fn one_second_is_a_thousand_ms() {
        assert_eq!(
            ok("when p50_latency > 1s then shed").condition.threshold,
            1000.0
        );
        assert_eq!(
            ok("when p50_latency > 1000ms then shed")
                .condition
                .threshold,
            1000.0
        );
        assert_eq!(
            ok("when p50_latency > 1000 then shed").condition.threshold,
            1000.0
        );
        assert_eq!(
            ok("when p50_latency > 1 s then shed").condition.threshold,
            1000.0
        );
        assert_eq!(
            ok("when p50_latency > 1.5s then shed").condition.threshold,
            1500.0
        );
        assert_eq!(
            ok("when p50_latency > 1.005s then shed")
                .condition
                .threshold,
            1005.0
        );
        assert_eq!(
            ok("when p50_latency > 0.0001s then shed")
                .condition
                .threshold,
            0.1
        );
    }

    #[test]
    fn every_metric() {
        for (name, metric) in [
            ("p50_latency", Metric::P50Latency),
            ("p95_latency", Metric::P95Latency),
            ("p99_latency", Metric::P99Latency),
            ("error_rate", Metric::ErrorRate),
            ("rps", Metric::Rps),
            ("in_flight", Metric::InFlight),
            ("reject_rate", Metric::RejectRate),
            ("queue_depth", Metric::Custom(tag("queue_depth"))),
            ("qps", Metric::Custom(tag("qps"))),
            ("a", Metric::Custom(tag("a"))),
        ] {
            assert_eq!(metric.name(), name);
            let rule = round_trip(&format!("when {name} > 5 then shed"));
            assert_eq!(rule.condition.metric, metric);
            assert_eq!(rule.condition.threshold, 5.0);
        }
        let longest = format!("m{}", "_".repeat(62));
        assert_eq!(
            ok(&format!("when {longest} > 1 then shed"))
                .condition
                .metric,
            Metric::Custom(longest)
        );
    }

    #[test]
    fn every_op() {
        for (symbol, op) in [(">", Op::Gt), (">=", Op::Ge), ("<", Op::Lt), ("<=", Op::Le)] {
            assert_eq!(
                ok(&format!("when rps {symbol} 10 then shed")).condition.op,
                op
            );
        }
        assert!(Op::Gt.holds(2.0, 1.0) && !Op::Gt.holds(1.0, 1.0));
        assert!(Op::Ge.holds(1.0, 1.0) && !Op::Ge.holds(0.5, 1.0));
        assert!(Op::Lt.holds(0.5, 1.0) && !Op::Lt.holds(1.0, 1.0));
        assert!(Op::Le.holds(1.0, 1.0) && !Op::Le.holds(2.0, 1.0));
        for op in [Op::Gt, Op::Ge, Op::Lt, Op::Le] {
            assert!(!op.holds(f64::NAN, 1.0));
            assert!(!op.holds(1.0, f64::NAN));
        }
    }

    #[test]
    fn units_may_stand_apart() {
        assert_eq!(
            ok("when p95_latency > 500 ms for 5 s then throttle pro to 50 %"),
            ok("when p95_latency > 500ms for 5s then throttle pro to 50%")
        );
        assert_eq!(
            ok("when error_rate >= 5 % then limit free to 100 /s"),
            ok("when error_rate >= 5% then limit free to 100/s")
        );
        assert_eq!(ok("when error_rate > 5 then shed").condition.threshold, 5.0);
        assert_eq!(
            ok("when reject_rate <= 0.5% then shed").condition.threshold,
            0.5
        );
    }

    #[test]
    fn whitespace_is_flexible() {
        assert_eq!(
            ok("  when\tp95_latency >\n500ms   then shed  "),
            ok("when p95_latency > 500ms then shed")
        );
    }

    #[test]
    fn hold_times() {
        let hold = |src: &str| {
            ok(&format!("when rps > 1 for {src} then shed"))
                .condition
                .hold
        };
        assert_eq!(hold("500ms"), Duration::from_millis(500));
        assert_eq!(hold("5s"), Duration::from_secs(5));
        assert_eq!(hold("2m"), Duration::from_secs(120));
        assert_eq!(hold("0.5s"), Duration::from_millis(500));
        assert_eq!(hold("1.5ms"), Duration::from_micros(1500));
        assert_eq!(hold("0.1m"), Duration::from_secs(6));
        assert_eq!(hold("0s"), Duration::ZERO);
        assert_eq!(ok("when rps > 1 then shed").condition.hold, Duration::ZERO);

        let text = |src: &str| ok(&format!("when rps > 1 for {src} then shed")).to_string();
        assert_eq!(text("120s"), "when rps > 1 for 2m then shed");
        assert_eq!(text("90s"), "when rps > 1 for 90s then shed");
        assert_eq!(text("1500ms"), "when rps > 1 for 1500ms then shed");
        assert_eq!(text("1.25ms"), "when rps > 1 for 1.25ms then shed");
        assert_eq!(text("0ms"), "when rps > 1 then shed");
        for src in ["1.25ms", "0.000001ms", "3m", "18446744073709551615s"] {
            round_trip(&format!("when rps > 1 for {src} then shed"));
        }
    }

    #[test]
    fn actions() {
        let action = |src: &str| round_trip(&format!("when rps > 1 then {src}")).action;
        assert_eq!(action("block free"), Action::Block { tag: tag("free") });
        assert_eq!(
            action("throttle pro to 0%"),
            Action::Throttle {
                tag: tag("pro"),
                percent: 0.0
            }
        );
        assert_eq!(
            action("throttle pro to 100%"),
            Action::Throttle {
                tag: tag("pro"),
                percent: 100.0
            }
        );
        assert_eq!(
            action("limit a.b:c-d_E9 to 0.5/s"),
            Action::Limit {
                tag: tag("a.b:c-d_E9"),
                per_second: 0.5
            }
        );
        assert_eq!(
            action("limit concurrency to 1"),
            Action::LimitConcurrency { max: 1 }
        );
        assert_eq!(
            action("limit concurrency to 4294967295"),
            Action::LimitConcurrency { max: u32::MAX }
        );
        assert_eq!(action("shed"), Action::Shed);
        assert_eq!(action("kill"), Action::Kill);
        // Keywords in tag position are tags.
        assert_eq!(action("block then"), Action::Block { tag: tag("then") });
        let long = "t".repeat(128);
        assert_eq!(
            action(&format!("block {long}")),
            Action::Block { tag: long }
        );
    }

    #[test]
    fn tagged_condition() {
        let rule = round_trip("when error_rate of api:v2 >= 1.5 then shed");
        assert_eq!(rule.condition.tag.as_deref(), Some("api:v2"));
        assert_eq!(
            rule.to_string(),
            "when error_rate of api:v2 >= 1.5% then shed"
        );
    }

    #[test]
    fn canonical_text() {
        for (src, canonical) in [
            (
                "when p95_latency > 500ms for 5s then block free",
                "when p95_latency > 500ms for 5s then block free",
            ),
            (
                "when p95_latency > 1s then shed",
                "when p95_latency > 1000ms then shed",
            ),
            (
                "when error_rate > 5 then throttle pro to 50.0%",
                "when error_rate > 5% then throttle pro to 50%",
            ),
            (
                "when rps > 007 for 60000ms then limit concurrency to 0150",
                "when rps > 7 for 1m then limit concurrency to 150",
            ),
        ] {
            assert_eq!(ok(src).to_string(), canonical);
        }
    }

    #[test]
    fn error_columns() {
        // Typo in the metric.
        let e = err("when p59_latency > 500ms then shed");
        assert_eq!(e.column(), 6);
        assert!(e.message().contains("unknown metric `p59_latency`"), "{e}");
        assert!(
            e.message().contains(
                "expected a metric such as p95_latency, error_rate, rps, in_flight, \
                 reject_rate or a custom metric name"
            ),
            "{e}"
        );
        assert!(e.message().contains("did you mean `p95_latency`?"), "{e}");

        // Typo in `then`.
        let e = err("when p95_latency > 500ms than block free");
        assert_eq!(e.column(), 26);
        assert_eq!(e.to_string(), "column 26: expected `then`, found `than`");

        // Trailing garbage.
        let e = err("when rps > 5 then shed now");
        assert_eq!(e.column(), 24);
        assert!(e.message().contains("`now`"), "{e}");

        // Missing action: one past the end.
        let e = err("when rps > 5 then");
        assert_eq!(e.column(), 18);
        assert!(e.message().starts_with("unexpected end of rule"), "{e}");
        assert!(e.message().contains("an action"), "{e}");
        assert_eq!(err("when rps > 5 then   ").column(), 21);

        // Bad unit.
        let e = err("when error_rate > 500ms then shed");
        assert_eq!(e.column(), 19);
        assert_eq!(
            e.message(),
            "`error_rate` takes a percentage (e.g. 5%), not `500ms`"
        );
        let e = err("when error_rate > 500 ms then shed");
        assert_eq!(e.column(), 19);
        assert_eq!(
            e.message(),
            "`error_rate` takes a percentage (e.g. 5%), not `500ms`"
        );

        // Unknown action.
        let e = err("when rps > 5 then blok free");
        assert_eq!(e.column(), 19);
        assert!(e.message().contains("unknown action `blok`"), "{e}");
        assert!(e.message().contains("did you mean `block`?"), "{e}");

        // Missing `then`.
        let e = err("when rps > 5 block free");
        assert_eq!(e.column(), 14);
        assert!(e.message().contains("write `then block`"), "{e}");
        let e = err("when rps > 5 for 1s");
        assert_eq!(e.column(), 20);
        assert!(e.message().contains("`then`"), "{e}");
    }

    #[test]
    fn columns_count_chars_not_bytes() {
        // U+3000 is whitespace and three bytes long.
        let e = err("when\u{3000}rps > 5 than shed");
        assert_eq!(e.column(), 14);
        let e = err("when rps > 5 then block fr€e");
        assert_eq!(e.column(), 25);
        assert!(e.message().contains("`€` is not allowed"), "{e}");
        let e = err("when é > 5 then shed");
        assert_eq!(e.column(), 6);
        let e = err("ünïcödé");
        assert_eq!(e.column(), 1);
        assert_eq!(err("when rps > 5 then blöck x").column(), 19);
        assert_eq!(err("é").column(), 1);
        assert_eq!(err("when ééé >").column(), 6);
        assert_eq!(err("when rps >= ").column(), 13);
        assert_eq!(err("when rps ≥ 5").column(), 10);
    }

    #[test]
    fn empty_input() {
        let e = err("");
        assert_eq!(e.column(), 1);
        assert!(e.message().starts_with("empty rule"), "{e}");
        assert_eq!(err("   ").column(), 4);
    }

    #[test]
    fn keywords_are_lowercase() {
        let e = err("WHEN rps > 5 then shed");
        assert_eq!(e.column(), 1);
        assert_eq!(
            e.message(),
            "expected `when`, found `WHEN` (keywords are lowercase); a rule starts with `when`"
        );
        let e = err("when rps > 5 THEN shed");
        assert_eq!(e.column(), 14);
        assert!(e.message().contains("keywords are lowercase"), "{e}");
        let e = err("when rps > 5 then SHED");
        assert!(e.message().contains("did you mean `shed`?"), "{e}");
        let e = err("when P95_latency > 5 then shed");
        assert!(e.message().contains("did you mean `p95_latency`?"), "{e}");
    }

    #[test]
    fn metric_errors() {
        for (src, needle) in [
            ("when latency > 5 then shed", "`latency` is reserved"),
            ("when errors > 5 then shed", "did you mean `error_rate`?"),
            ("when inflight > 5 then shed", "did you mean `in_flight`?"),
            (
                "when error_rates > 5 then shed",
                "did you mean `error_rate`?",
            ),
            (
                "when Queue-Depth > 5 then shed",
                "start with a lowercase letter",
            ),
            ("when queue-depth > 5 then shed", "`-` is not allowed"),
            ("when 9lives > 5 then shed", "start with a lowercase letter"),
            (
                "when p95_latency>500ms then shed",
                "put spaces around the comparison",
            ),
            (
                "when queue_depth>5 then shed",
                "put spaces around the comparison",
            ),
        ] {
            let e = err(src);
            assert_eq!(e.column(), 6, "{src}");
            assert!(e.message().contains(needle), "{src}: {e}");
        }
        let e = err(&format!("when m{} > 5 then shed", "_".repeat(63)));
        assert_eq!(e.column(), 6);
        assert!(e.message().contains("at most 63 characters"), "{e}");
        let e = err("when");
        assert_eq!(e.column(), 5);
        assert!(e.message().contains("a metric"), "{e}");
    }

    #[test]
    fn tag_errors() {
        let e = err(&format!("when rps > 5 then block {}", "t".repeat(129)));
        assert_eq!(e.column(), 25);
        assert!(e.message().contains("too long: 129 characters"), "{e}");
        let e = err("when rps of a/b > 5 then shed");
        assert_eq!(e.column(), 13);
        assert!(e.message().contains("`/` is not allowed"), "{e}");
        let e = err("when rps of > 5 then shed");
        assert_eq!(e.column(), 13);
        let e = err("when rps > 5 then block");
        assert_eq!(e.column(), 24);
        assert!(e.message().contains("a tag after `block`"), "{e}");
        let e = err("when rps free > 5 then shed");
        assert_eq!(e.column(), 10);
        assert!(e.message().contains("`<metric> of <tag>`"), "{e}");
    }

    #[test]
    fn op_errors() {
        for (src, needle) in [
            ("when rps = 5 then shed", "equality is not supported"),
            ("when rps == 5 then shed", "equality is not supported"),
            ("when rps => 5 then shed", "did you mean `>=`?"),
            ("when rps >5 then shed", "put a space"),
        ] {
            let e = err(src);
            assert_eq!(e.column(), 10, "{src}");
            assert!(e.message().contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn threshold_errors() {
        for (src, column, needle) in [
            (
                "when rps > -5 then shed",
                12,
                "negative numbers are not allowed",
            ),
            ("when rps > +5 then shed", 12, "without a sign"),
            ("when rps > NaN then shed", 12, "found `NaN`"),
            ("when rps > inf then shed", 12, "found `inf`"),
            (
                "when rps > 1e3 then shed",
                12,
                "exponent notation is not supported",
            ),
            ("when rps > 1E-3 then shed", 12, "exponent notation"),
            ("when rps > .5 then shed", 12, "not a valid number"),
            ("when rps > 5. then shed", 12, "not a valid number"),
            ("when rps > 1.2.3 then shed", 12, "not a valid number"),
            (
                "when rps > 100/s then shed",
                12,
                "`rps` takes a plain number",
            ),
            ("when rps > 5 s then shed", 12, "not `5s`"),
            (
                "when queue_depth > 5ms then shed",
                20,
                "custom metric `queue_depth`",
            ),
            (
                "when in_flight > 5% then shed",
                18,
                "`in_flight` takes a plain number",
            ),
            ("when p95_latency > 5% then shed", 20, "takes a latency"),
            ("when p95_latency > 2m then shed", 20, "takes a latency"),
            ("when error_rate > 101 then shed", 19, "between 0% and 100%"),
            (
                "when reject_rate > 100.5% then shed",
                20,
                "between 0% and 100%",
            ),
            ("when rps > then shed", 12, "expected a threshold"),
        ] {
            let e = err(src);
            assert_eq!(e.column(), column, "{src}: {e}");
            assert!(e.message().contains(needle), "{src}: {e}");
        }
        assert_eq!(
            ok("when error_rate > 100 then shed").condition.threshold,
            100.0
        );
        assert_eq!(ok("when error_rate > 0 then shed").condition.threshold, 0.0);
        let huge = format!("when rps > 1{} then shed", "0".repeat(400));
        assert!(err(&huge).message().contains("too large"));
        let huge = format!("when p95_latency > 1{}s then shed", "0".repeat(306));
        assert!(err(&huge).message().contains("too large"));
    }

    #[test]
    fn duration_errors() {
        for (src, needle) in [
            (
                "when rps > 5 for 5 then shed",
                "expected a duration such as 5s, 500ms or 2m",
            ),
            ("when rps > 5 for 5 then shed", "add a unit"),
            ("when rps > 5 for 1h then shed", "hours are not supported"),
            ("when rps > 5 for 5% then shed", "found `5%`"),
            ("when rps > 5 for then shed", "found `then`"),
            (
                "when rps > 5 for 0.0000001ms then shed",
                "more precise than a nanosecond",
            ),
            (
                "when rps > 5 for 18446744073709551616s then shed",
                "too long",
            ),
            (
                "when rps > 5 for 99999999999999999999999999999999999999999m then shed",
                "too long",
            ),
        ] {
            let e = err(src);
            assert_eq!(e.column(), 18, "{src}");
            assert!(e.message().contains(needle), "{src}: {e}");
        }
        let e = err("when rps > 5 for");
        assert_eq!(e.column(), 17);
        assert!(e.message().contains("a duration"), "{e}");
    }

    #[test]
    fn action_errors() {
        for (src, column, needle) in [
            (
                "when rps > 5 then throttle pro to 101%",
                35,
                "between 0% and 100%",
            ),
            ("when rps > 5 then throttle pro to 50", 35, "add `%`"),
            (
                "when rps > 5 then throttle pro to 50/s",
                35,
                "takes a percentage",
            ),
            ("when rps > 5 then throttle pro 50%", 32, "expected `to`"),
            (
                "when rps > 5 then limit free to 0/s",
                33,
                "greater than 0/s",
            ),
            (
                "when rps > 5 then limit free to 0.0/s",
                33,
                "greater than 0/s",
            ),
            ("when rps > 5 then limit free to 100", 33, "add `/s`"),
            (
                "when rps > 5 then limit free to 100%",
                33,
                "rate per second",
            ),
            ("when rps > 5 then limit concurrency to 0", 40, "at least 1"),
            (
                "when rps > 5 then limit concurrency to 1.5",
                40,
                "whole number",
            ),
            (
                "when rps > 5 then limit concurrency to 4294967296",
                40,
                "too large",
            ),
            (
                "when rps > 5 then limit concurrency to 100/s",
                40,
                "is a keyword",
            ),
            (
                "when rps > 5 then limit concurrency 150",
                37,
                "expected `to`",
            ),
            (
                "when rps > 5 then limit concurrency to",
                39,
                "unexpected end of rule",
            ),
            ("when rps > 5 then shed free", 24, "nothing may follow"),
            ("when rps > 5 then block free pro", 30, "nothing may follow"),
        ] {
            let e = err(src);
            assert_eq!(e.column(), column, "{src}: {e}");
            assert!(e.message().contains(needle), "{src}: {e}");
        }
    }

    #[test]
    fn from_str_and_error_trait() {
        let rule: Rule = "when rps > 5 then shed".parse().unwrap();
        assert_eq!(rule, ok("when rps > 5 then shed"));
        let e: Box<dyn std::error::Error> = Box::new(err("when"));
        assert!(e.to_string().starts_with("column 5: "));
    }

    #[test]
    fn edit_distance_counts_transpositions() {
        assert_eq!(edit_distance("p59_latency", "p95_latency"), 1);
        assert_eq!(edit_distance("p59_latency", "p50_latency"), 1);
        assert_eq!(
            closest("p59_latency", &BUILTIN_METRICS),
            Some("p95_latency")
        );
        assert_eq!(near_builtin("p59_latency"), Some("p95_latency"));
        assert_eq!(near_builtin("qps"), None);
        assert_eq!(edit_distance("blok", "block"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("xy", &["to"]), None);
        assert_eq!(closest("fro", &["for", "then"]), Some("for"));
    }

    // ---- property tests ----

    const GRAMMAR_TOKENS: &[&str] = &[
        "when",
        "of",
        "for",
        "then",
        "to",
        ">",
        ">=",
        "<",
        "<=",
        "=",
        "p50_latency",
        "p95_latency",
        "p99_latency",
        "error_rate",
        "rps",
        "in_flight",
        "reject_rate",
        "queue_depth",
        "latency",
        "errors",
        "block",
        "throttle",
        "limit",
        "concurrency",
        "shed",
        "kill",
        "free",
        "pro",
        "500ms",
        "500",
        "ms",
        "1s",
        "s",
        "2m",
        "m",
        "5%",
        "%",
        "100/s",
        "/s",
        "0",
        "0.5",
        "1e3",
        "-1",
        "NaN",
        "inf",
        "150",
        "4294967296",
        "0/s",
        "101%",
        "é",
        "when\u{3000}",
        "\t",
        "blok",
        "than",
        "p59_latency",
        ".",
        "",
        " ",
    ];

    fn token_soup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(GRAMMAR_TOKENS), 0..14)
            .prop_map(|tokens| tokens.join(" "))
    }

    fn arbitrary_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\PC{0,60}",
            "[ a-z0-9_.%/<>=\u{e9}\u{3000}]{0,60}",
            token_soup(),
        ]
    }

    fn custom_metric() -> impl Strategy<Value = Metric> {
        "[a-z][a-z0-9_]{0,62}"
            .prop_filter("must parse as a custom metric", |name| {
                matches!(parse_metric(name), Ok(Metric::Custom(_)))
            })
            .prop_map(Metric::Custom)
    }

    fn metric() -> impl Strategy<Value = Metric> {
        prop_oneof![
            Just(Metric::P50Latency),
            Just(Metric::P95Latency),
            Just(Metric::P99Latency),
            Just(Metric::ErrorRate),
            Just(Metric::Rps),
            Just(Metric::InFlight),
            Just(Metric::RejectRate),
            custom_metric(),
        ]
    }

    fn tag_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:-]{1,128}"
    }

    fn non_negative() -> impl Strategy<Value = f64> {
        prop_oneof![
            (0u32..100_000).prop_map(f64::from),
            0.0..1e6f64,
            any::<f64>()
                .prop_map(f64::abs)
                .prop_filter("finite", |v| v.is_finite()),
            Just(f64::MAX),
            Just(f64::from_bits(1)),
        ]
    }

    fn percent() -> impl Strategy<Value = f64> {
        prop_oneof![
            (0u32..=100).prop_map(f64::from),
            0.0..=100.0f64,
            Just(f64::from_bits(1)),
        ]
    }

    fn hold() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            (0u64..1_000).prop_map(Duration::from_secs),
            (0u64..10_000).prop_map(Duration::from_millis),
            (0u64..100).prop_map(|m| Duration::from_secs(m * 60)),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            Just(Duration::MAX),
        ]
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            tag_strategy().prop_map(|tag| Action::Block { tag }),
            (tag_strategy(), percent())
                .prop_map(|(tag, percent)| Action::Throttle { tag, percent }),
            (
                tag_strategy().prop_filter("keyword", |tag| tag != "concurrency"),
                non_negative().prop_filter("positive", |v| *v > 0.0)
            )
                .prop_map(|(tag, per_second)| Action::Limit { tag, per_second }),
            (1u32..=u32::MAX).prop_map(|max| Action::LimitConcurrency { max }),
            Just(Action::Shed),
            Just(Action::Kill),
        ]
    }

    fn rule() -> impl Strategy<Value = Rule> {
        let op = prop_oneof![Just(Op::Gt), Just(Op::Ge), Just(Op::Lt), Just(Op::Le)];
        (
            metric(),
            prop::option::of(tag_strategy()),
            op,
            hold(),
            action(),
        )
            .prop_flat_map(|(metric, tag, op, hold, action)| {
                let threshold = match ThresholdKind::of(&metric) {
                    ThresholdKind::Percent => percent().boxed(),
                    ThresholdKind::Latency | ThresholdKind::Plain => non_negative().boxed(),
                };
                (
                    Just(metric),
                    Just(tag),
                    Just(op),
                    threshold,
                    Just(hold),
                    Just(action),
                )
            })
            .prop_map(|(metric, tag, op, threshold, hold, action)| Rule {
                condition: Condition {
                    metric,
                    tag,
                    op,
                    threshold,
                    hold,
                },
                action,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn never_panics_and_columns_are_in_range(src in arbitrary_text()) {
            let chars = src.chars().count();
            match Rule::parse(&src) {
                Ok(rule) => {
                    prop_assert_eq!(Rule::parse(&rule.to_string()), Ok(rule));
                }
                Err(e) => {
                    prop_assert!(
                        (1..=chars + 1).contains(&e.column()),
                        "column {} out of 1..={} for {:?}", e.column(), chars + 1, src
                    );
                    prop_assert!(!e.message().is_empty());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn valid_rules_round_trip(rule in rule()) {
            let text = rule.to_string();
            prop_assert_eq!(Rule::parse(&text), Ok(rule), "text: {}", text);
        }
    }
}
