//! Differential test: on v1 policies our decision matches the published `waitstate` 0.1
//! pure `gate`, reason for reason.
//!
//! Deliberate differences, excluded from the generator and tested on their own below:
//! - an infinite weight: v1 lets it through when no finite limit applies; we reject it as
//!   `over_weight` (an infinite cost cannot be charged against any budget);
//! - an empty tag: v1 treats `""` as a tag of its own; we count it as `__default__`;
//! - a weight of 0 on a blocked tag (`tagMaxWeights` 0): v1 lets it through (`0 > 0` is
//!   false); for us blocked means blocked for every weight;
//! - a tag longer than `MAX_TAG_LEN` bytes: we count it under `__overflow__`, so a v1 policy
//!   entry for such a tag does not apply to it.

use proptest::prelude::*;
use waitstate_core::{Config, DEFAULT_TAG, Decision, Demand, Engine, Policy, Reason};
use waitstate_v1::{GateReason, gate};

const TAGS: [&str; 5] = ["free", "pro", "enterprise", "__default__", "checkout"];

fn ours(reason: Option<Reason>) -> GateReason {
    match reason {
        None => GateReason::Allowed,
        Some(Reason::KillSignal) => GateReason::KillSignal,
        Some(Reason::GlobalBlock) => GateReason::GlobalBlock,
        Some(Reason::TagBlocked) => GateReason::TagBlocked,
        Some(Reason::OverWeight) => GateReason::OverWeight,
        Some(Reason::LeaseExpired) => GateReason::LeaseExpired,
        Some(other) => panic!("a v1 policy produced a non-v1 reason: {other}"),
    }
}

fn limit() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(-1.0),
        Just(0.0),
        Just(0.5),
        Just(1.0),
        Just(5.0),
        Just(100.0),
        -10.0..1000.0f64,
    ]
}

fn weight() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        Just(Some(f64::NAN)),
        Just(Some(-1.0)),
        Just(Some(-0.0)),
        Just(Some(0.0)),
        Just(Some(1.0)),
        Just(Some(5.0)),
        Just(Some(1e300)),
        Just(Some(f64::MAX)),
        (-5.0..500.0f64).prop_map(Some),
    ]
}

/// A v1 policy document as JSON, generated field by field.
fn policy_json() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop_oneof![Just(None), limit().prop_map(Some)],
        proptest::collection::btree_map(proptest::sample::select(&TAGS[..]), limit(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(kill, global, tags, lease)| {
            let global = global.map_or("null".to_owned(), |g| format!("{g}"));
            let tags: Vec<String> = tags.iter().map(|(t, w)| format!("\"{t}\":{w}")).collect();
            let lease = if lease { ",\"leaseDurationSeconds\":300" } else { "" };
            format!(
                "{{\"globalMaxWeight\":{global},\"tagMaxWeights\":{{{}}},\"pulseInterval\":5000,\"killSignal\":{kill}{lease}}}",
                tags.join(",")
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn same_reason_as_v1_gate(
        json in policy_json(),
        tag in proptest::option::of(proptest::sample::select(&TAGS[..])),
        w in weight(),
    ) {
        let v1_policy: waitstate_v1::Policy = serde_json::from_str(&json).unwrap();
        let mut expected = gate(&v1_policy, tag, w).reason;
        // The one deliberate difference the generator reaches: weight 0 on a blocked tag.
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        let max = doc["tagMaxWeights"][tag.unwrap_or(DEFAULT_TAG)].as_f64();
        if w == Some(0.0)
            && max.is_some_and(|m| m <= 0.0)
            && matches!(expected, GateReason::Allowed | GateReason::OverWeight)
        {
            expected = GateReason::TagBlocked;
        }

        let mut config = Config::default();
        config.tags.insert("enterprise".into(), 100);
        let engine = Engine::new(&config).unwrap();
        engine.set_remote_policy(Some(Policy::from_json(&json).unwrap())).unwrap();
        let demand = Demand::new(tag.unwrap_or(DEFAULT_TAG)).weight(w.unwrap_or(1.0));
        let got = engine.decide(&demand, std::time::Duration::ZERO);
        prop_assert_eq!(ours(got.reason()), expected, "policy {} tag {:?} weight {:?}", json, tag, w);
    }
}

#[test]
fn documented_difference_infinite_weight() {
    let engine = Engine::new(&Config::default()).unwrap();
    let v1 = gate(
        &waitstate_v1::Policy::default(),
        Some("free"),
        Some(f64::INFINITY),
    );
    assert_eq!(v1.reason, GateReason::Allowed);
    let d = engine.decide(
        &Demand::new("free").weight(f64::INFINITY),
        std::time::Duration::ZERO,
    );
    assert_eq!(d.reason(), Some(Reason::OverWeight));
}

#[test]
fn documented_difference_empty_tag_is_default() {
    let engine = Engine::new(&Config::default()).unwrap();
    engine
        .set_remote_policy(Some(
            Policy::from_json(r#"{"globalMaxWeight":null,"tagMaxWeights":{"__default__":0}}"#)
                .unwrap(),
        ))
        .unwrap();
    let d = engine.decide(&Demand::new(""), std::time::Duration::ZERO);
    assert!(
        matches!(d, Decision::Rejected(ref r) if r.reason() == Reason::TagBlocked && r.tag() == DEFAULT_TAG)
    );
}

#[test]
fn documented_difference_weight_zero_on_a_blocked_tag() {
    let json = r#"{"globalMaxWeight":null,"tagMaxWeights":{"free":0}}"#;
    let v1 = gate(
        &serde_json::from_str(json).unwrap(),
        Some("free"),
        Some(0.0),
    );
    assert_eq!(v1.reason, GateReason::Allowed);
    let engine = Engine::new(&Config::default()).unwrap();
    engine
        .set_remote_policy(Some(Policy::from_json(json).unwrap()))
        .unwrap();
    let d = engine.decide(&Demand::new("free").weight(0.0), std::time::Duration::ZERO);
    assert_eq!(d.reason(), Some(Reason::TagBlocked));
}
