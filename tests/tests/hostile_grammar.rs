//! Hostile values in well-formed documents (issue 15's adversarial suite). Random strings
//! almost never parse, so they only test the parser's first line; these strategies follow
//! each input's grammar (rule text, the TOML config, a policy from a control plane, a pulse,
//! the tag and weight headers, gRPC metadata) and put hostile values where the values go:
//! huge, negative, zero, denormal, NaN spelled out, numbers past `u64`, names that are
//! reserved, too long or not ASCII, keys that are misspelt.
//!
//! Every input gets a defined answer: a value or a `ConfigError`/`RuleError`, a 2xx or a
//! 4xx, an allowed or rejected decision; never a panic, and never a slot left held. What is
//! accepted is also checked to mean what it says (a parsed rule prints back to a rule that
//! parses the same; a rejected request leaves nothing in flight). SECURITY.md counts them.

use std::cell::Cell;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use tower::{ServiceBuilder, ServiceExt};
use waitstate_control::{AppState, ControlConfig};
use waitstate_core::rule::Rule;
use waitstate_core::{Config, Demand, Engine, Policy, Reflex, wire};
use waitstate_tower::{GateLayer, HeaderTagger};

/// Cases per grammar: enough to cover every production many times, small enough for CI.
const CASES: u32 = 400;

/// A fixed seed: the same documents every run (a CI failure reproduces), and the share of
/// valid ones asserted below is a fact of the grammar, not of a dice roll.
fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        RunnerConfig {
            cases: CASES,
            failure_persistence: None,
            ..RunnerConfig::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// Numbers as text, where a number goes.
fn number() -> impl Strategy<Value = String> {
    let hostile = prop_oneof![
        Just("0".into()),
        Just("-0".into()),
        Just("-1".into()),
        Just("-5.5".into()),
        Just("0.0000001".into()),
        Just("4.9e-324".into()),
        Just("1e308".into()),
        Just("1e309".into()),
        Just("NaN".into()),
        Just("inf".into()),
        Just("-inf".into()),
        Just("18446744073709551615".into()),
        Just("18446744073709551616".into()),
        Just("99999999999999999999999999999".into()),
        Just("5.".into()),
        Just(".5".into()),
        Just("1_000".into()),
        Just("0x10".into()),
        Just("١٢".into()),
    ];
    prop_oneof![
        3 => (1u32..2000).prop_map(|n| n.to_string()),
        1 => hostile,
    ]
}

/// Tag names, where a tag goes: declared ones, typos, reserved, hostile.
fn tag() -> impl Strategy<Value = String> {
    let hostile = prop_oneof![
        Just("fre".into()),
        Just("__default__".into()),
        Just("__overflow__".into()),
        Just("".into()),
        Just("Free".into()),
        Just("frée".into()),
        Just("free\u{0}".into()),
        Just("a b".into()),
        (65usize..400).prop_map(|n| "t".repeat(n)),
        "[a-z][a-z0-9_-]{0,20}",
    ];
    prop_oneof![
        2 => prop_oneof![Just("free"), Just("pro"), Just("enterprise")].prop_map(String::from),
        1 => hostile,
    ]
}

/// A metric and the unit its threshold takes (mostly; now and then another unit).
fn metric() -> impl Strategy<Value = (String, &'static str)> {
    let proper = prop_oneof![
        Just(("p50_latency", "ms")),
        Just(("p95_latency", "ms")),
        Just(("p99_latency", "s")),
        Just(("error_rate", "%")),
        Just(("reject_rate", "%")),
        Just(("rps", "")),
        Just(("in_flight", "")),
        Just(("queue_depth", "")),
    ]
    .prop_map(|(m, u)| (m.to_owned(), u));
    let hostile = prop_oneof![
        Just("p95".into()),
        Just("P95_LATENCY".into()),
        Just("".into()),
        (64usize..200).prop_map(|n| "m".repeat(n)),
    ];
    prop_oneof![
        6 => proper,
        1 => (proper_name(), unit()),
        1 => (hostile, unit()),
    ]
}

fn proper_name() -> impl Strategy<Value = String> {
    prop_oneof![Just("p95_latency"), Just("error_rate"), Just("rps")].prop_map(String::from)
}

fn unit() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("ms"),
        Just("s"),
        Just("m"),
        Just("h"),
        Just("%"),
        Just("/s"),
        Just(""),
        Just("us"),
        Just("d"),
        Just("ms%"),
    ]
}

fn op() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => prop_oneof![Just(">"), Just(">="), Just("<"), Just("<=")],
        1 => prop_oneof![Just("=="), Just("=>"), Just("!")],
    ]
}

fn space() -> impl Strategy<Value = &'static str> {
    prop_oneof![12 => Just(" "), 1 => Just("  "), 1 => Just("\t"), 1 => Just("\n"), 1 => Just("")]
}

fn action() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => tag().prop_map(|t| format!("block {t}")),
        1 => (tag(), number()).prop_map(|(t, n)| format!("throttle {t} to {n}%")),
        1 => (tag(), number()).prop_map(|(t, n)| format!("limit {t} to {n}/s")),
        1 => number().prop_map(|n| format!("limit concurrency to {n}")),
        1 => Just("kill".into()),
        2 => Just("shed".into()),
        1 => Just("shed free".into()),
        1 => Just("block".into()),
    ]
}

/// `when <metric> [of <tag>] <op> <number><unit> [for <number><unit>] then <action>`, with
/// hostile values and spacing.
fn rule_text() -> impl Strategy<Value = String> {
    (
        metric(),
        proptest::option::of(tag()),
        op(),
        number(),
        proptest::option::of((number(), prop_oneof![4 => Just("s"), 1 => unit()])),
        action(),
        space(),
        prop_oneof![7 => Just(false), 1 => Just(true)],
    )
        .prop_map(|((m, u), of, op, n, hold, act, sp, upper)| {
            let of = of.map(|t| format!("{sp}of{sp}{t}")).unwrap_or_default();
            let hold = hold
                .map(|(h, hu)| format!("{sp}for{sp}{h}{hu}"))
                .unwrap_or_default();
            let text = format!("when{sp}{m}{of}{sp}{op}{sp}{n}{u}{hold}{sp}then{sp}{act}");
            if upper { text.to_uppercase() } else { text }
        })
}

#[test]
fn rule_text_with_hostile_values_parses_or_names_the_problem() {
    let parsed = Cell::new(0u32);
    runner()
        .run(&rule_text(), |text| {
            match Rule::parse(&text) {
                Ok(rule) => {
                    parsed.set(parsed.get() + 1);
                    // What was accepted means what it says: its canonical text parses back
                    // to the same rule, and its threshold is a number a rule can compare.
                    let again = Rule::parse(&rule.to_string())
                        .map_err(|e| TestCaseError::fail(format!("{text:?} -> {rule}: {e}")))?;
                    prop_assert_eq!(&again, &rule);
                    prop_assert!(rule.condition.threshold.is_finite(), "{}", text);
                    // And a config holding it either validates or says why, and evaluates.
                    let mut config = Config::default();
                    config.tags.insert("free".into(), 10);
                    config.tags.insert("pro".into(), 50);
                    config.tags.insert("enterprise".into(), 100);
                    config.rules.push(waitstate_core::RuleConfig::new(&text));
                    if let Ok(engine) = Engine::new(&config) {
                        let mut reflex = Reflex::new(&config).unwrap();
                        for s in 1..4 {
                            let _ = engine.decide(&Demand::new("free"), Duration::from_secs(s));
                            reflex.tick(Duration::from_secs(s), &engine);
                        }
                    }
                }
                Err(e) => {
                    // A column inside the text (or just past it) and a message.
                    prop_assert!(e.column() <= text.chars().count() + 1, "{}: {:?}", text, e);
                    prop_assert!(!e.message().is_empty());
                }
            }
            Ok(())
        })
        .unwrap();
    // The grammar produces valid rules too, not only errors.
    let parsed = parsed.get();
    eprintln!("parsed: {parsed} of {CASES}");
    assert!(parsed > CASES / 20, "only {parsed} of {CASES} parsed");
}

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (1u32..600).prop_map(|n| format!("\"{n}s\"")),
        1 => (number(), unit()).prop_map(|(n, u)| format!("\"{n}{u}\"")),
    ]
}

/// A TOML config with hostile values where values go, and now and then a misspelt key.
fn config_text() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec((tag(), number()), 0..5),
        proptest::collection::vec(rule_text(), 0..3),
        proptest::option::of(number()),
        proptest::option::of((tag(), number())),
        proptest::option::of(duration()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(duration()),
        proptest::option::of(number()),
        prop_oneof![
            8 => Just(""),
            1 => Just("windw = \"10s\"\n"),
            1 => Just("[limit]\nconcurrency = 5\n"),
        ],
    )
        .prop_map(
            |(tags, rules, concurrency, rate, max_wait, adaptive, window, cap, typo)| {
                let mut t = String::new();
                t.push_str(typo);
                if let Some(w) = window {
                    t.push_str(&format!("window = {w}\n"));
                }
                if let Some(c) = cap {
                    t.push_str(&format!("tag_cap = {c}\n"));
                }
                t.push_str("[tags]\n");
                for (name, prio) in tags {
                    t.push_str(&format!("\"{}\" = {prio}\n", name.escape_default()));
                }
                for r in rules {
                    t.push_str(&format!("[[rules]]\nrule = \"{}\"\n", r.escape_default()));
                }
                t.push_str("[limits]\n");
                if let Some(c) = concurrency {
                    t.push_str(&format!("concurrency = {c}\n"));
                }
                if let Some((name, r)) = rate {
                    t.push_str(&format!(
                        "rate = {{ \"{}\" = {r} }}\n",
                        name.escape_default()
                    ));
                }
                t.push_str("[admission]\n");
                if let Some(w) = max_wait {
                    t.push_str(&format!("max_wait = {w}\n"));
                }
                if let Some(a) = adaptive {
                    t.push_str(&format!("adaptive = {a}\n"));
                }
                t
            },
        )
}

#[test]
fn config_files_with_hostile_values_load_or_name_the_key() {
    let loaded = Cell::new(0u32);
    runner()
        .run(&config_text(), |text| {
            match Config::from_toml_str(&text) {
                Ok(config) => {
                    loaded.set(loaded.get() + 1);
                    // Loaded means usable: an engine, a reflex, decisions, a tick.
                    let engine = Engine::new(&config)
                        .map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
                    let mut reflex = Reflex::new(&config).unwrap();
                    for tag in ["free", "pro", "x"] {
                        if let Ok(ticket) = engine.admit(&Demand::new(tag), Duration::ZERO) {
                            ticket.finish(Duration::from_millis(3), false);
                        }
                    }
                    reflex.tick(Duration::from_secs(1), &engine);
                    prop_assert_eq!(engine.in_flight(), 0);
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        })
        .unwrap();
    let loaded = loaded.get();
    eprintln!("loaded: {loaded} of {CASES}");
    assert!(loaded > CASES / 50, "only {loaded} of {CASES} loaded");
}

fn json_number() -> impl Strategy<Value = String> {
    let hostile = prop_oneof![
        Just("0".into()),
        Just("-0".into()),
        Just("-1".into()),
        Just("4.9e-324".into()),
        Just("1e308".into()),
        Just("1e309".into()),
        Just("18446744073709551616".into()),
        Just("\"5\"".into()),
        Just("null".into()),
        Just("true".into()),
        Just("[]".into()),
    ];
    prop_oneof![
        8 => (1u32..1000).prop_map(|n| n.to_string()),
        1 => hostile,
    ]
}

/// A share in percent where one goes (mostly in range).
fn json_percent() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0u32..=100).prop_map(|n| n.to_string()),
        1 => json_number(),
    ]
}

/// A v1 policy document (and our extensions) with hostile values.
fn policy_json() -> impl Strategy<Value = String> {
    (
        json_number(),
        proptest::collection::vec((tag(), json_number()), 0..4),
        json_number(),
        prop_oneof![Just("true"), Just("false"), Just("1"), Just("null")],
        json_number(),
        proptest::collection::vec((tag(), json_percent()), 0..3),
        json_percent(),
        proptest::collection::vec((tag(), json_number()), 0..3),
        json_number(),
    )
        .prop_map(
            |(gmw, weights, pulse, kill, lease, throttles, gthrottle, rates, conc)| {
                let map = |v: &[(String, String)]| {
                    v.iter()
                        .map(|(k, n)| format!("\"{}\":{n}", k.escape_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                format!(
                    r#"{{"globalMaxWeight":{gmw},"tagMaxWeights":{{{}}},"pulseInterval":{pulse},"killSignal":{kill},"leaseDurationSeconds":{lease},"tagThrottles":{{{}}},"globalThrottle":{gthrottle},"tagRateLimits":{{{}}},"concurrencyLimit":{conc}}}"#,
                    map(&weights),
                    map(&throttles),
                    map(&rates)
                )
            },
        )
}

#[test]
fn policies_with_hostile_values_are_installed_or_refused_whole() {
    let mut config = Config::default();
    config.tags.insert("free".into(), 10);
    config.tags.insert("enterprise".into(), 100);
    let installed = Cell::new(0u32);
    runner()
        .run(&policy_json(), |json| {
            let engine = Engine::new(&config).unwrap();
            match Policy::from_json(&json) {
                Ok(policy) => match engine.set_remote_policy(Some(policy.clone())) {
                    Ok(()) => {
                        installed.set(installed.get() + 1);
                        for (i, tag) in ["free", "enterprise", "other"].iter().enumerate() {
                            let d = engine
                                .decide(&Demand::new(tag).weight(i as f64), Duration::from_secs(1));
                            let _ = d.is_allowed();
                        }
                        // Blocked means blocked, whatever the weight (issue 15, item 1).
                        if policy.tag_max_weights.get("free") == Some(&0.0) {
                            for w in [0.0, -0.0, f64::MIN_POSITIVE, 1.0] {
                                prop_assert!(
                                    !engine
                                        .decide(&Demand::new("free").weight(w), Duration::ZERO)
                                        .is_allowed()
                                );
                            }
                        }
                    }
                    // Refused whole: the open policy stays.
                    Err(_) => prop_assert_eq!(&*engine.policy(), &Policy::default()),
                },
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
            Ok(())
        })
        .unwrap();
    let installed = installed.get();
    eprintln!("installed: {installed} of {CASES}");
    assert!(
        installed > CASES / 50,
        "only {installed} of {CASES} installed"
    );
}

const NOW_MS: u64 = 1_700_000_000_000;
const PK: &str = "pk_grammar";
const SK: &str = "sk_grammar_secret";

fn control() -> AppState {
    let text = format!(
        r#"
[tags]
free = 10
enterprise = 100

[[rules]]
rule = "when p95_latency of free > 500ms then block free"

[server]
listen = "127.0.0.1:0"
skew = "60s"
jwt_secret = "jwt-secret-for-the-grammar-tests-0123456789"

[[keys]]
publish_key = "{PK}"
secret_key = "{SK}"
org_id = "acme"
"#
    );
    let config = ControlConfig::from_toml_str(&text).unwrap();
    AppState::with_wall_clock(config, Box::new(|| NOW_MS)).unwrap()
}

fn tag_metric() -> impl Strategy<Value = String> {
    (
        tag(),
        json_number(),
        json_number(),
        proptest::option::of(proptest::collection::vec(json_number(), 0..10)),
        proptest::option::of((json_number(), json_number(), json_number())),
        proptest::option::of((metric().prop_map(|(m, _)| m), json_number())),
    )
        .prop_map(|(tag, latency, count, buckets, ours, custom)| {
            let mut m = format!(
                r#"{{"tag":"{}","latency":{latency},"count":{count}"#,
                tag.escape_default()
            );
            if let Some(b) = buckets {
                m.push_str(&format!(r#","latencyBuckets":[{}]"#, b.join(",")));
            }
            if let Some((admitted, errors, in_flight)) = ours {
                m.push_str(&format!(
                    r#","admitted":{admitted},"errors":{errors},"inFlight":{in_flight},"completed":{admitted}"#
                ));
            }
            if let Some((name, v)) = custom {
                m.push_str(&format!(
                    r#","customMetrics":{{"{name}":{{"min":{v},"max":{v},"sum":{v},"count":{v}}}}}"#
                ));
            }
            m.push('}');
            m
        })
}

/// A pulse (v1 fields and ours) with hostile values, signed properly: it gets past the
/// signature, so the values are what is tested.
fn pulse_json() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            4 => "[a-z0-9-]{1,36}",
            1 => Just(String::new()),
            1 => (200usize..400).prop_map(|n| "i".repeat(n)),
        ],
        json_number(),
        json_number(),
        json_number(),
        proptest::collection::vec(tag_metric(), 0..5),
        proptest::option::of(json_number()),
    )
        .prop_map(|(id, usage, bounced, latency, metrics, windows)| {
            let windows = windows.map(|w| format!(r#","windows":{w}"#)).unwrap_or_default();
            format!(
                r#"{{"instanceId":"{id}","usageDelta":{usage},"bouncedUnits":{bounced},"metrics":{{"latency":{latency},"errors":0}},"tagMetrics":[{}],"ts":{NOW_MS}{windows}}}"#,
                metrics.join(",")
            )
        })
}

#[test]
fn pulses_with_hostile_values_are_taken_or_refused_with_a_4xx() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = control();
    let app = waitstate_control::router(state.clone());
    let (taken, refused) = (Cell::new(0u32), Cell::new(0u32));
    let ts = NOW_MS.to_string();
    runner()
        .run(&pulse_json(), |body| {
            let signature = wire::sign(SK.as_bytes(), body.as_bytes(), &ts);
            let status = rt.block_on(
                app.clone().oneshot(
                    http::Request::post("/v1/pulse")
                        .header(wire::HEADER_ID, PK)
                        .header(wire::HEADER_TIMESTAMP, &ts)
                        .header(wire::HEADER_SIGNATURE, signature)
                        .header("content-type", "application/json")
                        .body(axum::body::Body::from(body.clone()))
                        .unwrap(),
                ),
            );
            let status = status.unwrap().status();
            prop_assert!(
                status.is_success() || status.is_client_error(),
                "{} for {}",
                status,
                body
            );
            if status.is_success() {
                taken.set(taken.get() + 1);
            } else {
                refused.set(refused.get() + 1);
            }
            // The fleet evaluates whatever was taken, and answers a policy.
            state.tick();
            let policy = state.answer_for("acme", "", None);
            prop_assert!(policy.validate().is_ok());
            Ok(())
        })
        .unwrap();
    let (taken, refused) = (taken.get(), refused.get());
    eprintln!("pulses: {taken} taken, {refused} refused");
    assert!(taken > 0 && refused > 0, "taken {taken}, refused {refused}");
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => tag().prop_map(String::into_bytes),
        1 => number().prop_map(String::into_bytes),
        1 => Just(b"free, enterprise".to_vec()),
        1 => Just(b" enterprise ".to_vec()),
        1 => Just(vec![0xff, 0xfe, b'a']),
        1 => Just(b"\tfree".to_vec()),
        1 => (1usize..16_000).prop_map(|n| vec![b'e'; n]),
    ]
}

/// The tag, weight and cohort headers the default tagger reads, and `grpc-timeout`, with
/// hostile values, through the tower layer: a 200 or a 429, nothing left in flight.
#[test]
fn hostile_headers_get_a_status_and_leave_nothing_in_flight() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let (ws, app) = rt.block_on(async {
        let ws = waitstate_core::WaitState::builder()
            .tag("free", 10)
            .tag("enterprise", 100)
            .rule("when in_flight of free > 1000 then block free")
            .build()
            .unwrap();
        let mut blocked = Policy::default();
        blocked.tag_max_weights.insert("free".into(), 0.0);
        ws.engine().set_remote_policy(Some(blocked)).unwrap();
        let tagger = HeaderTagger::new()
            .weight_header("x-waitstate-weight")
            .cohort_header("x-user");
        let served = served.clone();
        let app = ServiceBuilder::new()
            .layer(GateLayer::new(ws.clone(), tagger))
            .service(tower::service_fn(move |_req: http::Request<()>| {
                served.fetch_add(1, Ordering::Relaxed);
                async {
                    Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from("ok"),
                    )))
                }
            }));
        (ws, app)
    });
    let weight = prop_oneof![
        3 => prop_oneof![Just("1"), Just("2"), Just("0.5")].prop_map(|w| w.as_bytes().to_vec()),
        2 => header_value(),
    ];
    let strategy = (
        header_value(),
        weight,
        header_value(),
        proptest::option::of(header_value()),
        any::<bool>(),
    );
    let (ok, refused) = (Cell::new(0u32), Cell::new(0u32));
    runner()
        .run(&strategy, |(tag, weight, user, timeout, grpc)| {
            let blocked = tag == b"free";
            let mut req = http::Request::post("/v1/items");
            for (name, value) in [
                ("x-waitstate-tag", Some(tag)),
                ("x-waitstate-weight", Some(weight.clone())),
                ("x-user", Some(user)),
                ("grpc-timeout", timeout),
            ] {
                if let Some(v) = value
                    && let Ok(v) = http::HeaderValue::from_bytes(&v)
                {
                    req = req.header(name, v);
                }
            }
            if grpc {
                req = req.header("content-type", "application/grpc");
            }
            let res = rt
                .block_on(app.clone().oneshot(req.body(()).unwrap()))
                .unwrap();
            let status = res.status().as_u16();
            prop_assert!(matches!(status, 200 | 429 | 503), "{}", status);
            // A gRPC rejection is a 200 with a `grpc-status`.
            let served = status == 200 && !res.headers().contains_key("grpc-status");
            // `free` is blocked: never served, whatever its weight (issue 15, item 1).
            prop_assert!(!(blocked && served), "free served with weight {:?}", weight);
            if served {
                ok.set(ok.get() + 1);
            } else {
                refused.set(refused.get() + 1);
            }
            drop(res);
            prop_assert_eq!(ws.in_flight(), 0);
            Ok(())
        })
        .unwrap();
    let (ok, refused) = (ok.get(), refused.get());
    eprintln!("requests: {ok} served, {refused} refused");
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
    assert_eq!(served.load(Ordering::Relaxed), u64::from(ok));
}

#[test]
fn grpc_timeouts_with_hostile_values_are_a_duration_or_none() {
    let strategy = (number(), unit(), any::<bool>()).prop_map(|(n, u, h)| {
        let unit = if h {
            ["H", "M", "S", "m", "u", "n", "x", ""][n.len() % 8]
        } else {
            u
        };
        format!("{n}{unit}")
    });
    runner()
        .run(&strategy, |raw| {
            if let Some(d) = waitstate_core::adapter::grpc_timeout(raw.as_bytes()) {
                // At most 8 digits of hours: finite, and the text was well-formed.
                prop_assert!(d <= Duration::from_secs(99_999_999 * 3600));
                prop_assert!(raw.len() <= 9, "{}", raw);
            }
            Ok(())
        })
        .unwrap();
}
