//! The engine's unit tests.

use std::future::Future;

use super::*;
use crate::decision::{Decision, Reason};
use crate::registry::{Aggregate, MAX_CUSTOM_METRICS};

fn engine(toml: &str) -> Engine {
    Engine::new(&Config::from_toml_str(toml).unwrap()).unwrap()
}

fn tiers() -> Engine {
    engine("[tags]\nenterprise = 100\npro = 50\nfree = 10\n")
}

const T0: Duration = Duration::ZERO;

fn reason(e: &Engine, tag: &str, weight: f64) -> Option<Reason> {
    e.decide(&Demand::new(tag).weight(weight), T0).reason()
}

#[test]
fn open_policy_allows_and_counts() {
    let e = tiers();
    for _ in 0..3 {
        assert!(e.decide(&Demand::new("pro"), T0).is_allowed());
    }
    assert_eq!(e.counters("pro").unwrap().admitted, 3);
    assert_eq!(e.counters("free").unwrap().admitted, 0);
}

#[test]
fn v1_order_kill_then_global_then_tag_then_weight() {
    let e = tiers();
    let mut p = Policy::default();
    p.kill_signal = true;
    p.global_max_weight = 0.0;
    p.tag_max_weights.insert("free".into(), 0.0);
    e.set_remote_policy(Some(p.clone())).unwrap();
    assert_eq!(reason(&e, "free", 1.0), Some(Reason::KillSignal));
    p.kill_signal = false;
    e.set_remote_policy(Some(p.clone())).unwrap();
    assert_eq!(reason(&e, "free", 1.0), Some(Reason::GlobalBlock));
    p.global_max_weight = 10.0;
    e.set_remote_policy(Some(p.clone())).unwrap();
    assert_eq!(reason(&e, "free", 1.0), Some(Reason::TagBlocked));
    assert_eq!(reason(&e, "pro", 11.0), Some(Reason::OverWeight));
    assert_eq!(reason(&e, "pro", 10.0), None);
    // Invalid weights come first, as in v1.
    p.kill_signal = true;
    e.set_remote_policy(Some(p)).unwrap();
    assert_eq!(reason(&e, "pro", f64::NAN), Some(Reason::OverWeight));
    assert_eq!(reason(&e, "pro", -1.0), Some(Reason::OverWeight));
}

#[test]
fn bad_weights_have_a_defined_answer() {
    let e = tiers();
    for w in [f64::NAN, -1.0, f64::NEG_INFINITY, f64::INFINITY, -0.000_1] {
        let d = e.decide(&Demand::new("pro").weight(w), T0);
        assert_eq!(d.reason(), Some(Reason::OverWeight), "{w}");
    }
    assert!(e.decide(&Demand::new("pro").weight(0.0), T0).is_allowed());
    assert!(
        e.decide(&Demand::new("pro").weight(f64::MAX), T0)
            .is_allowed()
    );
}

#[test]
fn rejection_carries_tag_priority_and_retry_after() {
    let e = tiers();
    let mut p = Policy::default();
    p.tag_max_weights.insert("free".into(), 0.0);
    e.set_remote_policy(Some(p)).unwrap();
    let Decision::Rejected(r) = e.decide(&Demand::new("free"), T0) else {
        panic!("free must be blocked")
    };
    assert_eq!(r.reason(), Reason::TagBlocked);
    assert_eq!(r.tag(), "free");
    assert_eq!(r.priority(), 10);
    assert_eq!(r.retry_after(), Duration::from_secs(1));
    assert_eq!(r.retry_after_secs(), 1);
    assert_eq!(
        e.counters("free").unwrap().rejected_for(Reason::TagBlocked),
        1
    );
}

#[test]
fn empty_and_oversized_tags() {
    let e = tiers();
    assert!(e.decide(&Demand::new(""), T0).is_allowed());
    assert_eq!(e.counters(DEFAULT_TAG).unwrap().admitted, 1);
    let huge = "x".repeat(10 * 1024);
    assert!(e.decide(&Demand::new(&huge), T0).is_allowed());
    assert_eq!(e.counters(OVERFLOW_TAG).unwrap().admitted, 1);
    assert!(e.counters(&huge).is_none());
}

#[test]
fn a_flood_of_tags_stays_bounded() {
    let e = engine("tag_cap = 16\n[tags]\nfree = 10\n");
    for i in 0..1_000_000u32 {
        let tag = format!("user-{i}");
        assert!(e.decide(&Demand::new(&tag), T0).is_allowed());
    }
    let tags = e.tags();
    // The cap counts every slot: `__default__`, `free`, 13 users and `__overflow__`.
    assert_eq!(tags.len(), 16);
    assert_eq!(e.counters(OVERFLOW_TAG).unwrap().admitted, 1_000_000 - 13);
    let total: u64 = tags
        .iter()
        .map(|t| e.counters(t.as_str()).unwrap().admitted)
        .sum();
    assert_eq!(total, 1_000_000);
}

/// Issue 15, item 7: tags a client chose take no slot unless declared.
#[test]
fn client_chosen_tags_count_as_the_default_unless_declared() {
    let e = engine("tag_cap = 16\n[tags]\nfree = 10\n");
    let before = e.tags().len();
    for i in 0..100_000u32 {
        let tag = format!("invented-{i}");
        let demand = Demand::new(&tag).declared_only(true);
        assert!(e.decide(&demand, T0).is_allowed());
    }
    assert_eq!(e.tags().len(), before, "no slot taken");
    assert_eq!(e.counters(DEFAULT_TAG).unwrap().admitted, 100_000);
    assert!(e.counters("invented-7").is_none());
    // A declared tag from a client counts as itself, and so does one already tracked.
    let _ = e.decide(&Demand::new("free").declared_only(true), T0);
    assert_eq!(e.counters("free").unwrap().admitted, 1);
    let _ = e.decide(&Demand::new("checkout"), T0);
    let _ = e.decide(&Demand::new("checkout").declared_only(true), T0);
    assert_eq!(e.counters("checkout").unwrap().admitted, 2);
    // An over-long one too, without a lookup.
    let huge = "x".repeat(10 * 1024);
    let _ = e.decide(&Demand::new(&huge).declared_only(true), T0);
    assert_eq!(e.counters(DEFAULT_TAG).unwrap().admitted, 100_001);
}

/// Issue 15, item 7: slots of undeclared tags that went quiet are reclaimed, so a flood
/// does not hold the registry's room for good.
#[test]
fn quiet_undeclared_slots_are_reclaimed() {
    let e = engine("tag_cap = 16\n[tags]\nfree = 10\n");
    let mut p = Policy::default();
    p.tag_rate_limits.insert("named".into(), 10.0);
    e.set_remote_policy(Some(p)).unwrap();
    for i in 0..100u32 {
        let _ = e.decide(&Demand::new(&format!("user-{i}")), T0);
    }
    assert_eq!(e.tags().len(), 16, "full");
    let _ = e.decide(&Demand::new("real"), T0);
    assert!(e.counters("real").is_none(), "past the cap: overflow");
    // One of them holds a request; another keeps busy.
    let held = e.admit(&Demand::new("user-0"), T0).unwrap();
    let quiet = RECLAIM_QUIET;
    assert_eq!(
        e.reclaim_quiet(T0, None),
        0,
        "first look: nothing quiet yet"
    );
    assert_eq!(e.reclaim_quiet(quiet / 2, None), 0);
    let _ = e.decide(&Demand::new("user-1"), quiet / 2);
    let freed = e.reclaim_quiet(quiet, None);
    // Gone: user-2.. (quiet since T0); kept: __default__, free, named, user-0 (in flight),
    // user-1 (busy at quiet/2), and the overflow slot.
    let names: Vec<String> = e.tags().iter().map(|t| t.as_str().to_owned()).collect();
    for kept in [
        DEFAULT_TAG,
        "free",
        "named",
        "user-0",
        "user-1",
        OVERFLOW_TAG,
    ] {
        assert!(names.iter().any(|n| n == kept), "{kept}: {names:?}");
    }
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(freed, 16 - 6);
    // Room again: a new tag gets its own slot, and a reclaimed one comes back from zero.
    let _ = e.decide(&Demand::new("real"), quiet);
    assert_eq!(e.counters("real").unwrap().admitted, 1);
    let old = e
        .tags()
        .into_iter()
        .find(|t| t.as_str() == "user-1")
        .unwrap();
    let _ = e.decide(&Demand::new("user-5"), quiet);
    let back = e
        .tags()
        .into_iter()
        .find(|t| t.as_str() == "user-5")
        .unwrap();
    assert_eq!(e.counters("user-5").unwrap().admitted, 1);
    assert!(back.generation() > old.generation());
    held.finish(Duration::from_millis(1), false);
}

#[test]
fn reclaim_waits_for_the_control_plane_to_have_everything() {
    let e = engine("[tags]\nfree = 10\n");
    let seen = Duration::from_secs(10);
    let _ = e.decide(&Demand::new("user"), seen);
    let _ = e.reclaim_quiet(seen, Some(T0));
    let later = seen + RECLAIM_QUIET * 2;
    // Quiet long enough, but the last acknowledged pulse read the counters before the
    // tag's last request: its telemetry is not all sent, so it stays.
    assert_eq!(e.reclaim_quiet(later, Some(Duration::from_secs(5))), 0);
    assert!(e.counters("user").is_some());
    assert_eq!(e.reclaim_quiet(later, Some(seen)), 1);
    assert!(e.counters("user").is_none());
}

#[test]
fn policy_named_tags_past_the_cap_keep_their_limits() {
    let e = engine("tag_cap = 4\n[tags]\nfree = 10\n");
    // Fill the registry.
    for t in ["a", "b", "c", "d"] {
        let _ = e.decide(&Demand::new(t), T0);
    }
    let mut p = Policy::default();
    p.tag_max_weights.insert("late".into(), 0.0);
    e.set_remote_policy(Some(p)).unwrap();
    assert_eq!(reason(&e, "late", 1.0), Some(Reason::TagBlocked));
    assert_eq!(reason(&e, "other", 1.0), None);
    assert_eq!(e.counters(OVERFLOW_TAG).unwrap().rejected_total(), 1);
}

#[test]
fn throttle_is_deterministic_per_tag_and_consistent_per_cohort() {
    let e = tiers();
    let mut p = Policy::default();
    p.tag_throttles.insert("pro".into(), 50.0);
    e.set_remote_policy(Some(p)).unwrap();
    let admitted = (0..1000)
        .filter(|_| reason(&e, "pro", 1.0).is_none())
        .count();
    assert_eq!(admitted, 500);
    let run = |e: &Engine| -> Vec<bool> {
        (0..200u64)
            .map(|k| e.decide(&Demand::new("pro").cohort(k), T0).is_allowed())
            .collect()
    };
    assert_eq!(run(&e), run(&e));
    assert!(reason(&e, "enterprise", 1.0).is_none());
}

#[test]
fn rate_limit_spends_weight_and_says_when() {
    let e = tiers();
    let mut p = Policy::default();
    p.tag_rate_limits.insert("free".into(), 10.0);
    e.set_remote_policy(Some(p)).unwrap();
    let d = Demand::new("free").weight(4.0);
    assert!(e.decide(&d, T0).is_allowed());
    assert!(e.decide(&d, T0).is_allowed());
    let Decision::Rejected(r) = e.decide(&d, T0) else {
        panic!("budget of 10 spent")
    };
    assert_eq!(r.reason(), Reason::RateLimited);
    assert_eq!(r.retry_after(), Duration::from_millis(200));
    assert_eq!(r.quota().unwrap().per_second, 10.0);
    assert!(e.decide(&d, Duration::from_millis(200)).is_allowed());
}

#[test]
fn priority_floor_sheds_below_it() {
    let e = tiers();
    let mut p = Policy::default();
    p.priority_floor = Some(50);
    e.set_remote_policy(Some(p)).unwrap();
    assert_eq!(reason(&e, "free", 1.0), Some(Reason::PriorityShed));
    assert_eq!(reason(&e, "unknown", 1.0), Some(Reason::PriorityShed));
    assert_eq!(reason(&e, "pro", 1.0), None);
    assert_eq!(reason(&e, "enterprise", 1.0), None);
}

fn fixed(toml: &str) -> Engine {
    engine(&format!("{toml}\n[admission]\nadaptive = false\n"))
}

fn in_flight_by_level(e: &Engine) -> Vec<u64> {
    e.admission().levels.iter().map(|l| l.in_flight).collect()
}

#[test]
fn a_concurrency_limit_is_exact_whatever_the_priority() {
    let e = fixed("[tags]\nenterprise = 100\npro = 50\nfree = 10\n");
    let mut p = Policy::default();
    p.concurrency_limit = Some(12);
    e.set_remote_policy(Some(p)).unwrap();
    let mut held = Vec::new();
    for tag in ["free", "pro", "enterprise"].iter().cycle().take(12) {
        held.push(e.admit(&Demand::new(tag), T0).unwrap());
    }
    // One pool: the thirteenth is turned away whoever asks (without waiting, `admit` cannot
    // queue), and the total never passes the limit.
    for tag in ["free", "enterprise"] {
        assert_eq!(
            e.admit(&Demand::new(tag), T0).unwrap_err().reason(),
            Reason::ConcurrencyLimited
        );
    }
    assert_eq!(e.admission().in_flight, 12);
    // Levels 0 (default), 10, 50, 100: four each for free, pro and enterprise.
    assert_eq!(in_flight_by_level(&e), [0, 4, 4, 4]);
    drop(held);
    assert_eq!(e.admission().in_flight, 0);
    assert_eq!(in_flight_by_level(&e), [0, 0, 0, 0]);
}

#[test]
fn when_full_the_queue_serves_the_highest_level_first() {
    let e = fixed("[tags]\nenterprise = 100\npro = 50\nfree = 10\n");
    let mut p = Policy::default();
    p.concurrency_limit = Some(2);
    e.set_remote_policy(Some(p)).unwrap();
    let first = e.admit(&Demand::new("free"), T0).unwrap();
    let second = e.admit(&Demand::new("free"), T0).unwrap();
    let queued = |tag| match e.admit_or_queue(&Demand::new(tag), T0) {
        Admit::Queued(q) => q,
        other => panic!("{tag}: expected to wait, got {other:?}"),
    };
    let mut free = queued("free");
    let mut pro = queued("pro");
    let mut ent = queued("enterprise");
    let waiting: Vec<u64> = e.admission().levels.iter().map(|l| l.waiting).collect();
    assert_eq!(waiting, [0, 1, 1, 1]);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut poll = |q: &mut Queued| std::pin::Pin::new(q).poll(&mut cx);
    assert!(poll(&mut free).is_pending());
    // A slot frees: enterprise gets it, though it came last.
    drop(first);
    assert!(poll(&mut free).is_pending());
    assert!(poll(&mut pro).is_pending());
    let std::task::Poll::Ready(Ok(ent_ticket)) = poll(&mut ent) else {
        panic!("enterprise should hold the slot");
    };
    // The next goes to pro, then free.
    drop(second);
    let std::task::Poll::Ready(Ok(pro_ticket)) = poll(&mut pro) else {
        panic!("pro should hold the next slot");
    };
    assert!(poll(&mut free).is_pending());
    drop((ent_ticket, pro_ticket));
    assert!(matches!(poll(&mut free), std::task::Poll::Ready(Ok(_))));
    // Every ticket above was dropped as it resolved: nothing in flight, nothing waiting.
    assert_eq!(e.admission().in_flight, 0);
    assert_eq!(e.counters("enterprise").unwrap().admitted, 1);
}

#[test]
fn a_waiter_that_leaves_leaks_nothing() {
    let e = fixed("[tags]\nfree = 10\n");
    let mut p = Policy::default();
    p.concurrency_limit = Some(1);
    e.set_remote_policy(Some(p)).unwrap();
    let held = e.admit(&Demand::new("free"), T0).unwrap();
    // Dropped while waiting: out of the queue.
    let Admit::Queued(q) = e.admit_or_queue(&Demand::new("free"), T0) else {
        panic!("expected to wait")
    };
    drop(q);
    assert_eq!(e.admission().levels[1].waiting, 0);
    // Granted, then dropped before it was polled: the slot goes back.
    let Admit::Queued(q) = e.admit_or_queue(&Demand::new("free"), T0) else {
        panic!("expected to wait")
    };
    drop(held);
    assert_eq!(e.admission().in_flight, 1, "handed over to the waiter");
    drop(q);
    assert_eq!(e.admission().in_flight, 0);
    // Gave up after its deadline: a counted rejection.
    let held = e.admit(&Demand::new("free"), T0).unwrap();
    let Admit::Queued(q) = e.admit_or_queue(&Demand::new("free"), T0) else {
        panic!("expected to wait")
    };
    assert_eq!(
        q.give_up().unwrap_err().reason(),
        Reason::ConcurrencyLimited
    );
    assert_eq!(
        e.counters("free").unwrap().rejected[Reason::ConcurrencyLimited.index()],
        1
    );
    drop(held);
    assert_eq!(e.admission().in_flight, 0);
}

#[test]
fn limits_hold_from_the_start_and_no_policy_loosens_them() {
    let e = engine(
        "[tags]\nfree = 10\nenterprise = 100\n[limits]\nconcurrency = 2\nrate = { free = 1 }\n",
    );
    // No tick has run: the limits are already the policy.
    assert_eq!(e.policy().concurrency_limit, Some(2));
    assert!(e.decide(&Demand::new("free"), T0).is_allowed());
    assert_eq!(reason(&e, "free", 1.0), Some(Reason::RateLimited));
    // A looser local or remote policy does not lift them; a stricter one wins.
    let mut loose = Policy::default();
    loose.concurrency_limit = Some(100);
    e.set_local_policy(loose.clone(), Policy::default())
        .unwrap();
    e.set_remote_policy(Some(loose)).unwrap();
    let held = [
        e.admit(&Demand::new("enterprise"), T0).unwrap(),
        e.admit(&Demand::new("enterprise"), T0).unwrap(),
    ];
    assert_eq!(
        e.admit(&Demand::new("enterprise"), T0)
            .unwrap_err()
            .reason(),
        Reason::ConcurrencyLimited
    );
    drop(held);
    let mut strict = Policy::default();
    strict.concurrency_limit = Some(1);
    e.set_remote_policy(Some(strict)).unwrap();
    assert_eq!(e.policy().concurrency_limit, Some(1));
    assert_eq!(e.policy().tag_rate_limits.get("free"), Some(&1.0));
}

proptest::proptest! {
    /// The pool's counters (total and per level) follow every admission and every release,
    /// whatever the order, the tags and the limit coming and going in between.
    #[test]
    fn level_counters_follow_every_ticket(
        ops in proptest::collection::vec((0usize..5, 0u8..4), 1..300),
    ) {
        let e = fixed("[tags]\nenterprise = 100\npro = 50\nfree = 10\n");
        let tags = ["enterprise", "pro", "free", "anonymous", ""];
        let mut held = Vec::new();
        let mut limited = false;
        for (tag, op) in ops {
            match op {
                0 if !held.is_empty() => drop(held.remove(tag % held.len())),
                1 if !held.is_empty() => {
                    let t: Ticket = held.swap_remove(0);
                    t.finish(Duration::from_millis(1), false);
                }
                2 => {
                    // The limit comes and goes; tickets held past a new, lower limit
                    // stay counted until they end.
                    let mut p = Policy::default();
                    p.concurrency_limit = (tag % 2 == 0).then_some(6);
                    limited = p.concurrency_limit.is_some() && held.len() <= 6;
                    e.set_remote_policy(Some(p)).unwrap();
                }
                _ => {
                    if let Ok(t) = e.admit(&Demand::new(tags[tag]), T0) {
                        held.push(t);
                    }
                }
            }
            let state = e.admission();
            proptest::prop_assert_eq!(state.in_flight, held.len() as u64);
            proptest::prop_assert_eq!(state.levels.iter().map(|l| l.in_flight).sum::<u64>(), held.len() as u64);
            proptest::prop_assert!(state.in_flight <= 6 || !limited, "the limit is exact");
        }
        drop(held);
        proptest::prop_assert_eq!(e.admission().in_flight, 0);
    }
}

#[test]
fn tickets_release_exactly_once() {
    let e = tiers();
    let a = e.admit(&Demand::new("pro"), T0).unwrap();
    let b = e.admit(&Demand::new("pro"), T0).unwrap();
    assert_eq!(e.in_flight(), 2);
    a.finish(Duration::from_millis(30), true);
    drop(b);
    let c = e.counters("pro").unwrap();
    assert_eq!((c.in_flight, c.completed, c.errors), (0, 1, 1));
    assert_eq!(c.latency.count(), 1);
}

#[test]
fn dry_run_mode_rejects_nothing_and_counts_what_it_would() {
    let e = engine("dry_run = true\n[tags]\nfree = 10\n");
    let mut p = Policy::default();
    p.tag_max_weights.insert("free".into(), 0.0);
    p.concurrency_limit = Some(1);
    e.set_remote_policy(Some(p)).unwrap();
    let d = e.decide(&Demand::new("free"), T0);
    assert!(matches!(
        d,
        Decision::Allowed {
            would_reject: Some(Reason::TagBlocked)
        }
    ));
    let t = e.admit(&Demand::new("free"), T0).unwrap();
    assert_eq!(t.would_reject(), Some(Reason::TagBlocked));
    let c = e.counters("free").unwrap();
    assert_eq!((c.admitted, c.would_reject, c.rejected_total()), (2, 2, 0));
    drop(t);
    assert_eq!(e.admission().in_flight, 0);
}

#[test]
fn dry_rules_are_watched_not_enforced() {
    let e = tiers();
    let mut dry = Policy::default();
    dry.tag_max_weights.insert("free".into(), 0.0);
    e.set_local_policy(Policy::default(), dry).unwrap();
    let d = e.decide(&Demand::new("free"), T0);
    assert!(matches!(
        d,
        Decision::Allowed {
            would_reject: Some(Reason::TagBlocked)
        }
    ));
    assert!(matches!(
        e.decide(&Demand::new("pro"), T0),
        Decision::Allowed { would_reject: None }
    ));
}

#[test]
fn local_and_remote_merge_stricter_wins_and_bad_remote_is_refused() {
    let e = tiers();
    let mut local = Policy::default();
    local.tag_throttles.insert("pro".into(), 50.0);
    e.set_local_policy(local, Policy::default()).unwrap();
    let mut remote = Policy::default();
    remote.tag_max_weights.insert("free".into(), 0.0);
    e.set_remote_policy(Some(remote)).unwrap();
    assert_eq!(reason(&e, "free", 1.0), Some(Reason::TagBlocked));
    assert_eq!(e.policy().tag_throttles["pro"], 50.0);
    let mut bad = Policy::default();
    bad.tag_rate_limits.insert("free".into(), f64::NAN);
    assert!(e.set_remote_policy(Some(bad)).is_err());
    assert_eq!(
        reason(&e, "free", 1.0),
        Some(Reason::TagBlocked),
        "last good stays"
    );
    e.set_remote_policy(None).unwrap();
    assert_eq!(reason(&e, "free", 1.0), None);
}

#[test]
fn custom_metrics_are_validated_bounded_and_windowed() {
    let e = tiers();
    assert_eq!(e.report("Queue", 1.0, None), Err(ReportError::InvalidName));
    assert_eq!(
        e.report("latency", 1.0, None),
        Err(ReportError::InvalidName)
    );
    assert_eq!(
        e.report("queue", f64::NAN, None),
        Err(ReportError::NotFinite)
    );
    e.report("queue", 3.0, Some("free")).unwrap();
    e.report("queue", 5.0, Some("free")).unwrap();
    e.report("queue", 7.0, None).unwrap();
    for i in 1..MAX_CUSTOM_METRICS {
        e.report(&format!("m{i}"), 1.0, None).unwrap();
    }
    assert_eq!(
        e.report("one_too_many", 1.0, None),
        Err(ReportError::TooManyMetrics)
    );
    let mut out = Vec::new();
    e.take_custom(&mut out);
    let free = out
        .iter()
        .find(|(t, n, _)| t.as_ref().is_some_and(|t| t.as_str() == "free") && n == "queue")
        .unwrap();
    assert_eq!(
        free.2,
        Aggregate {
            min: 3.0,
            max: 5.0,
            sum: 8.0,
            count: 2
        }
    );
    out.clear();
    e.take_custom(&mut out);
    assert!(out.is_empty(), "a take starts a new window");
}

#[test]
fn a_client_deadline_shorter_than_the_service_time_is_not_queued() {
    let e = fixed("[tags]\nfree = 10\n");
    let mut p = Policy::default();
    p.concurrency_limit = Some(1);
    e.set_remote_policy(Some(p)).unwrap();
    // Teach the pool a 100 ms service time.
    for _ in 0..60 {
        e.admit(&Demand::new("free"), T0)
            .unwrap()
            .finish(Duration::from_millis(100), false);
    }
    e.tick_admission(Duration::from_secs(1));
    let _held = e.admit(&Demand::new("free"), T0).unwrap();
    // 50 ms left on the client's clock: it cannot wait and be served in time.
    let hurried = Demand::new("free").max_wait(Duration::from_millis(50));
    assert!(matches!(
        e.admit_or_queue(&hurried, Duration::from_secs(1)),
        Admit::Rejected(r) if r.reason() == Reason::ConcurrencyLimited
    ));
    // A patient client waits in line.
    let patient = Demand::new("free").max_wait(Duration::from_secs(2));
    assert!(matches!(
        e.admit_or_queue(&patient, Duration::from_secs(1)),
        Admit::Queued(_)
    ));
}

#[test]
fn a_blocked_tag_is_blocked_for_every_weight() {
    let e = tiers();
    let mut p = Policy::default();
    p.tag_max_weights.insert("free".into(), 0.0);
    e.set_remote_policy(Some(p)).unwrap();
    for w in [0.0, -0.0, f64::MIN_POSITIVE / 2.0, 1e-300, 1.0] {
        assert_eq!(
            reason(&e, "free", w),
            Some(Reason::TagBlocked),
            "weight {w:e}"
        );
    }
    assert_eq!(reason(&e, "pro", 0.0), None);
}

#[test]
fn every_admitted_request_costs_its_rate_budget_something() {
    let e = tiers();
    let mut p = Policy::default();
    p.tag_rate_limits.insert("free".into(), 1.0);
    e.set_remote_policy(Some(p)).unwrap();
    // Weight 0 is charged the minimum cost: a second's budget is not bottomless.
    let admitted = (0..1000)
        .take_while(|_| reason(&e, "free", 0.0).is_none())
        .count();
    assert!(
        admitted < 1000,
        "weight 0 passed a 1/s budget {admitted} times"
    );
}

#[test]
fn a_weight_above_the_budget_is_refused_without_draining_it() {
    let e = tiers();
    let mut p = Policy::default();
    p.tag_rate_limits.insert("free".into(), 10.0);
    e.set_remote_policy(Some(p)).unwrap();
    // Heavier than the whole burst: it could never fit, and must not empty the bucket.
    assert_eq!(reason(&e, "free", 1e9), Some(Reason::OverWeight));
    for _ in 0..10 {
        assert_eq!(reason(&e, "free", 1.0), None);
    }
    assert_eq!(reason(&e, "free", 1.0), Some(Reason::RateLimited));
}

#[test]
fn the_admitted_weight_sum_cannot_wrap() {
    let e = tiers();
    for w in [1e300, 1e300, 1.0] {
        assert!(e.decide(&Demand::new("pro").weight(w), T0).is_allowed());
    }
    let c = e.counters("pro").unwrap();
    // Each huge weight counts as at most a billion units; nothing wrapped to a small sum.
    assert!(c.admitted_weight >= 2e9, "{}", c.admitted_weight);
}

#[test]
fn a_request_measured_elsewhere_is_recorded_without_an_admission() {
    let e = tiers();
    e.record(
        &Demand::new("free"),
        Duration::from_millis(900),
        crate::Ending::Error,
    );
    e.record(
        &Demand::new("free"),
        Duration::from_millis(100),
        crate::Ending::Success,
    );
    let c = e.counters("free").unwrap();
    assert_eq!(
        (c.admitted, c.completed, c.errors, c.in_flight),
        (0, 2, 1, 0)
    );
    assert_eq!(c.latency.count(), 2);
    // Blocked tags still get their reports (nothing is admitted).
    let mut p = Policy::default();
    p.tag_max_weights.insert("free".into(), 0.0);
    e.set_remote_policy(Some(p)).unwrap();
    e.record(
        &Demand::new("free"),
        Duration::from_millis(5),
        crate::Ending::Success,
    );
    assert_eq!(e.counters("free").unwrap().completed, 3);
    // A client's undeclared tag counts as the default one.
    e.record(
        &Demand::new("made-up").declared_only(true),
        Duration::from_millis(5),
        crate::Ending::Success,
    );
    assert!(e.counters("made-up").is_none());
    assert_eq!(e.counters(DEFAULT_TAG).unwrap().completed, 1);
}

#[test]
fn counters_kept_in_stripes_sum_exactly_across_threads() {
    // Requests admitted on some threads and finished on others (a ticket moved across
    // threads, as a tokio task is): every count, and the in-flight gauge, sums exactly.
    let e = engine("[tags]\npro = 50\n[admission]\nadaptive = false\n");
    let (tx, rx) = std::sync::mpsc::channel::<Ticket>();
    let per_thread = 500u64;
    std::thread::scope(|s| {
        for _ in 0..4 {
            let tx = tx.clone();
            let e = &e;
            s.spawn(move || {
                for _ in 0..per_thread {
                    let t = e.admit(&Demand::new("pro").weight(2.0), T0).unwrap();
                    tx.send(t).unwrap();
                }
            });
        }
        drop(tx);
        let mid = e.counters("pro").unwrap();
        assert!(mid.in_flight <= 4 * per_thread);
        let finisher = s.spawn(move || {
            let mut n = 0u64;
            for (i, t) in rx.into_iter().enumerate() {
                t.finish(Duration::from_millis(10), i % 10 == 0);
                n += 1;
            }
            n
        });
        assert_eq!(finisher.join().unwrap(), 4 * per_thread);
    });
    let c = e.counters("pro").unwrap();
    assert_eq!(c.admitted, 4 * per_thread);
    assert_eq!(c.admitted_weight, 2.0 * (4 * per_thread) as f64);
    assert_eq!(c.completed, 4 * per_thread);
    assert_eq!(c.errors, 4 * per_thread / 10);
    assert_eq!(c.latency_sum_us, 10_000 * 4 * per_thread);
    assert_eq!(c.in_flight, 0);
    assert_eq!(c.latency.count(), 4 * per_thread);
}
