//! Bad input never panics: every tag, weight, policy document and config text gets a
//! defined decision or a `ConfigError`, and no sequence of admissions leaks a slot.

use std::time::Duration;

use proptest::prelude::*;
use waitstate_core::{Config, Decision, Demand, Engine, OVERFLOW_TAG, Policy, Reason};

fn engine() -> Engine {
    let mut c = Config::default();
    c.tag_cap = 32;
    c.tags.insert("free".into(), 10);
    c.tags.insert("enterprise".into(), 100);
    Engine::new(&c).unwrap()
}

fn any_tag() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}",
        any::<String>(),
        // Lossy decoding of non-UTF-8 header bytes, as an adapter would do.
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        (1usize..20_000).prop_map(|n| "t".repeat(n)),
    ]
}

fn any_weight() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_tag_and_weight_get_a_defined_decision(tag in any_tag(), weight in any_weight(), cohort in any::<Option<u64>>()) {
        let e = engine();
        let mut policy = Policy::default();
        policy.tag_throttles.insert("free".into(), 50.0);
        policy.tag_rate_limits.insert("t".into(), 10.0);
        policy.concurrency_limit = Some(4);
        e.set_remote_policy(Some(policy)).unwrap();
        let demand = Demand { tag: &tag, weight, cohort, max_wait: None, declared_only: false };
        let d = e.decide(&demand, Duration::from_secs(1));
        let invalid = weight.is_nan() || weight < 0.0 || weight == f64::INFINITY;
        if invalid {
            prop_assert_eq!(d.reason(), Some(Reason::OverWeight));
        }
        if let Decision::Rejected(r) = &d {
            prop_assert!(r.retry_after_secs() >= 1);
            prop_assert!(r.tag().len() <= waitstate_core::MAX_TAG_LEN);
        }
        if tag.len() > waitstate_core::MAX_TAG_LEN {
            prop_assert!(e.counters(OVERFLOW_TAG).unwrap().offered() == 1);
        }
        let t = e.admit(&demand, Duration::from_secs(1));
        drop(t);
        prop_assert_eq!(e.in_flight(), 0);
    }

    #[test]
    fn any_policy_text_is_a_policy_or_an_error(text in any::<String>()) {
        let _ = Policy::from_json(&text);
    }

    #[test]
    fn any_numbers_in_a_policy_are_validated(
        global in any::<f64>(), tag_max in any::<f64>(), throttle in any::<f64>(), rate in any::<f64>(), conc in any::<u64>(),
    ) {
        let e = engine();
        let mut p = Policy::default();
        p.global_max_weight = global;
        p.tag_max_weights.insert("free".into(), tag_max);
        p.tag_throttles.insert("free".into(), throttle);
        p.tag_rate_limits.insert("free".into(), rate);
        p.concurrency_limit = Some(conc);
        let accepted = e.set_remote_policy(Some(p.clone())).is_ok();
        prop_assert_eq!(accepted, p.validate().is_ok());
        // Serialized and read back as JSON: NaN and infinities have a defined form.
        let json = serde_json::to_string(&p).unwrap();
        let _ = Policy::from_json(&json);
        let _ = e.decide(&Demand::new("free"), Duration::ZERO);
    }

    #[cfg(feature = "toml")]
    #[test]
    fn any_config_text_is_a_config_or_an_error(text in any::<String>()) {
        if let Ok(c) = Config::from_toml_str(&text) {
            prop_assert!(Engine::new(&c).is_ok());
        }
    }

    #[test]
    fn no_sequence_of_admissions_leaks_a_slot(ops in proptest::collection::vec((0usize..4, any::<bool>()), 1..200)) {
        let e = engine();
        let mut p = Policy::default();
        p.concurrency_limit = Some(5);
        e.set_remote_policy(Some(p)).unwrap();
        let tags = ["free", "enterprise", "x", ""];
        let mut held = Vec::new();
        for (tag, release) in ops {
            if release && !held.is_empty() {
                let t: waitstate_core::Ticket = held.remove(0);
                t.finish(Duration::from_millis(3), false);
            } else if let Ok(t) = e.admit(&Demand::new(tags[tag]), Duration::ZERO) {
                held.push(t);
            } else {
                // Turned away only when the pool is full: one pool, one exact limit.
                prop_assert_eq!(held.len(), 5);
            }
            prop_assert_eq!(e.in_flight(), held.len() as u64);
            prop_assert_eq!(e.admission().in_flight, held.len() as u64);
            prop_assert!(held.len() <= 5);
        }
        drop(held);
        prop_assert_eq!(e.in_flight(), 0);
    }
}

#[cfg(feature = "toml")]
#[test]
fn a_typo_in_a_config_file_names_the_line() {
    let err = Config::from_toml_str(
        "[tags]\nfree = 10\n[[rules]]\nrule = \"when p95_latncy > 5s then shed\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("rules[0]") && text.contains("column 6"),
        "{text}"
    );
}
