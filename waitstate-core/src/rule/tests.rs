//! Tests of the rule parser: accepted rules, canonical text, error messages and columns,
//! and property tests (never panics, valid rules round-trip).

use std::time::Duration;

use proptest::prelude::*;

use super::parse::parse_metric;
use super::suggest::{closest, edit_distance, near_builtin};
use super::types::{BUILTIN_METRICS, ThresholdKind};
use super::*;

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
    assert!(e.message().contains("at most 128 bytes, got 129"), "{e}");
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

/// The module docs spell out the limits of `TAG` and `CUSTOM`; the parser takes them from
/// `crate::names`, so a change there must update the docs too.
#[test]
fn grammar_docs_match_the_shared_name_rules() {
    assert_eq!(crate::names::MAX_TAG_LEN, 128);
    assert_eq!(crate::names::MAX_METRIC_LEN, 63);
    ok(&format!("when rps > 5 then block {}", "t".repeat(128)));
    ok(&format!("when m{} > 5 then shed", "_".repeat(62)));
    for reserved in crate::names::RESERVED_METRICS {
        assert!(
            !matches!(parse_metric(reserved), Ok(Metric::Custom(_))),
            "{reserved}"
        );
    }
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
        (tag_strategy(), percent()).prop_map(|(tag, percent)| Action::Throttle { tag, percent }),
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
