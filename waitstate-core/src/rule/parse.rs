//! The parser: a recursive descent over the tokens, one method per grammar position, each
//! error pointing at the offending token's column.

use std::time::Duration;

use super::suggest::{closest, did_you_mean, lowercase_hint, near_builtin};
use super::token::{Decimal, Overflow, Quantity, Token, is_unit_word, show, tokenize};
use super::types::{
    Action, BUILTIN_METRICS, Condition, Metric, Op, Rule, RuleError, ThresholdKind,
};
use crate::names;

/// What a metric position accepts, for error messages.
const METRIC_EXPECTATION: &str = "a metric such as p95_latency, error_rate, rps, in_flight, \
     reject_rate or a custom metric name";
/// The action keywords, for suggestions.
const ACTIONS: [&str; 5] = ["block", "throttle", "limit", "shed", "kill"];
/// What an action position accepts, for error messages.
const ACTION_EXPECTATION: &str = "an action (`block`, `throttle`, `limit`, `shed` or `kill`)";
/// What a duration position accepts, for error messages.
const DURATION_EXPECTATION: &str = "a duration such as 5s, 500ms or 2m";

/// Parses the metric position.
pub(super) fn parse_metric(name: &str) -> Result<Metric, String> {
    if let Some(metric) = Metric::builtin(name) {
        return Ok(metric);
    }
    let shown = show(name);
    match names::metric_problem(name) {
        None => match near_builtin(name) {
            None => Ok(Metric::Custom(name.to_owned())),
            Some(builtin) => Err(format!(
                "unknown metric `{shown}`: expected {METRIC_EXPECTATION}; did you mean `{builtin}`? \
                 (custom metric names this close to a built-in metric are rejected as likely typos)"
            )),
        },
        Some(problem) if names::RESERVED_METRICS.contains(&name) => {
            Err(format!("{problem}{}", reserved_hint(name)))
        }
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

/// What a rule most likely meant by a reserved metric name that is not a built-in one.
fn reserved_hint(name: &str) -> &'static str {
    match name {
        "latency" => "; did you mean `p95_latency` (or `p50_latency`, `p99_latency`)?",
        "errors" => "; did you mean `error_rate`?",
        _ => "",
    }
}

/// A recursive-descent parser over whitespace-separated tokens.
#[derive(Debug)]
pub(super) struct Parser<'a> {
    tokens: Vec<Token<'a>>,
    pos: usize,
    end_column: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(src: &'a str) -> Self {
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

    pub(super) fn rule(&mut self) -> Result<Rule, RuleError> {
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
        match names::rule_tag_problem(token.text) {
            None => Ok(token.text.to_owned()),
            Some(problem) => Err(RuleError::new(
                token.column,
                format!(
                    "expected a tag after `{after}`, found `{}`: {problem}",
                    show(token.text)
                ),
            )),
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
                        && names::rule_tag_problem(text).is_none() =>
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
