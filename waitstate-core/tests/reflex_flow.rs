//! Rule flows end to end with injected time: a rule fires after its `for`, holds, cools
//! down and releases gradually; `shed` walks down the priorities one level per step and
//! back up in reverse.

use std::time::Duration;

use waitstate_core::{Config, Decision, Demand, Engine, Phase, Reason, Reflex, RuleConfig};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Offer `n` requests of `tag` at `now`; those admitted end with `latency`. Returns how many
/// were admitted.
fn offer(engine: &Engine, tag: &str, n: u32, now: Duration, latency: Duration) -> u32 {
    let mut admitted = 0;
    for _ in 0..n {
        if let Ok(ticket) = engine.admit(&Demand::new(tag), now) {
            admitted += 1;
            ticket.finish(latency, false);
        }
    }
    admitted
}

fn tiers(rule: &str) -> Config {
    let mut c = Config::default();
    c.tags.insert("enterprise".into(), 100);
    c.tags.insert("pro".into(), 50);
    c.tags.insert("free".into(), 10);
    c.rules.push(RuleConfig::new(rule));
    c.cooldown = secs(5);
    c.release_step = secs(2);
    c.window = secs(5);
    c
}

#[test]
fn block_fires_after_for_and_releases_gradually() {
    let config = tiers("when p95_latency of free > 500ms for 3s then block free");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let slow = Duration::from_millis(800);
    let fast = Duration::from_millis(20);

    let mut free_admitted = Vec::new();
    let mut phases = Vec::new();
    for t in 0..40u64 {
        let now = secs(t);
        // The backend is slow for free until t = 6, then healthy.
        let latency = if t < 6 { slow } else { fast };
        free_admitted.push(offer(&engine, "free", 100, now, latency));
        assert_eq!(
            offer(&engine, "enterprise", 100, now, fast),
            100,
            "enterprise at t={t}"
        );
        let status = reflex.tick(now + Duration::from_millis(999), &engine);
        phases.push(status[0].phase);
    }
    // Pending for 3 s after the first slow window, then blocked.
    assert_eq!(phases[0], Phase::Pending);
    assert_eq!(&free_admitted[..4], &[100, 100, 100, 100]);
    assert_eq!(phases[3], Phase::Firing);
    assert_eq!(free_admitted[4], 0, "blocked after `for` held");
    let blocked = engine
        .counters("free")
        .unwrap()
        .rejected_for(Reason::TagBlocked);
    assert!(blocked >= 100);

    // Released gradually: 25%, 50%, 75% of free, then all of it; never 0 -> 100 at once.
    let first_open = free_admitted.iter().skip(4).position(|a| *a > 0).unwrap() + 4;
    let release: Vec<u32> = free_admitted[first_open..].to_vec();
    assert_eq!(
        &release[..6],
        &[25, 25, 50, 50, 75, 75],
        "{free_admitted:?}"
    );
    assert!(release[6..].iter().all(|a| *a == 100), "{free_admitted:?}");
    assert_eq!(*phases.last().unwrap(), Phase::Idle);
    // Monotone: once the release starts, the share never goes back down.
    assert!(release.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn a_condition_back_during_release_fires_again() {
    let config = tiers("when p95_latency of free > 500ms then block free");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let mut t = 0u64;
    let mut step = |latency_ms: u64| {
        let a = offer(
            &engine,
            "free",
            100,
            secs(t),
            Duration::from_millis(latency_ms),
        );
        let s = reflex.tick(secs(t) + Duration::from_millis(999), &engine);
        t += 1;
        (a, s[0].phase)
    };
    assert_eq!(step(900).1, Phase::Firing);
    // Healthy until the release starts.
    let mut phase = Phase::Firing;
    while !matches!(phase, Phase::Releasing(_)) {
        phase = step(10).1;
    }
    // Slow again at the ramp's first step (25%): back to firing, fully blocked.
    let (_, phase) = step(900);
    assert_eq!(phase, Phase::Firing);
    assert_eq!(step(900).0, 0);
}

#[test]
fn every_action_steps_its_ramp_back_when_the_condition_returns() {
    // The same hysteresis as `shed`'s, for block, throttle, limit and kill: a condition
    // back at 50% steps the ramp back to 25% (not to fully blocked), waits a window there,
    // and only then fires again.
    for (rule, at_50, at_25) in [
        ("when p95_latency of free > 500ms then block free", 50, 25),
        (
            "when p95_latency of free > 500ms then throttle free to 20%",
            60,
            40,
        ),
        ("when p95_latency of free > 500ms then kill", 50, 25),
    ] {
        let config = tiers(rule);
        let engine = Engine::new(&config).unwrap();
        let mut reflex = Reflex::new(&config).unwrap();
        let mut t = 0u64;
        let mut step = |latency_ms: u64| {
            let a = offer(
                &engine,
                "free",
                100,
                secs(t),
                Duration::from_millis(latency_ms),
            );
            let s = reflex.tick(secs(t) + Duration::from_millis(999), &engine);
            t += 1;
            (a, s[0].phase)
        };
        assert_eq!(step(900).1, Phase::Firing, "{rule}");
        let mut phase = Phase::Firing;
        while phase != Phase::Releasing(2) {
            phase = step(10).1;
        }
        // The ramp at 50%: slow again, one step back, not to the firing share.
        let (admitted, phase) = step(900);
        assert_eq!(admitted, at_50, "{rule}");
        assert_eq!(phase, Phase::Releasing(1), "{rule}");
        let mut phases = Vec::new();
        for _ in 0..6 {
            let (admitted, phase) = step(900);
            phases.push((admitted, phase));
        }
        // A window (5 s since the step back) at 25% while it stays slow, then firing.
        assert!(
            phases[..4]
                .iter()
                .all(|p| *p == (at_25, Phase::Releasing(1))),
            "{rule}: {phases:?}"
        );
        assert_eq!(phases[4], (at_25, Phase::Firing), "{rule}: {phases:?}");
        assert!(phases[5].0 < at_25, "{rule}: {phases:?}");
    }

    // `limit t to r/s`: 4r at the second step, back to 2r.
    let config = tiers("when p95_latency of free > 500ms then limit free to 10/s");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let mut t = 0u64;
    let mut tick = |latency_ms: u64| {
        offer(
            &engine,
            "free",
            50,
            secs(t),
            Duration::from_millis(latency_ms),
        );
        let s = reflex.tick(secs(t) + Duration::from_millis(999), &engine);
        t += 1;
        (
            s[0].phase,
            engine.policy().tag_rate_limits.get("free").copied(),
        )
    };
    assert_eq!(tick(900), (Phase::Firing, Some(10.0)));
    while tick(10).0 != Phase::Releasing(2) {}
    assert_eq!(tick(900), (Phase::Releasing(1), Some(20.0)));
}

#[test]
fn a_backend_that_stops_answering_reads_as_slow_not_as_no_data() {
    // Requests go in and never come back: nothing completes, so before in-flight ages
    // counted the latency had no value and the rule could not fire (or, firing, released
    // while every request hung).
    let config = tiers("when p95_latency of free > 500ms then block free");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let mut hung = Vec::new();
    let mut phases = Vec::new();
    for t in 0..8u64 {
        if let Ok(ticket) = engine.admit(&Demand::new("free"), secs(t)) {
            hung.push(ticket);
        }
        let s = reflex.tick(secs(t) + Duration::from_millis(999), &engine);
        phases.push((s[0].phase, s[0].value));
    }
    assert!(hung.len() >= 2, "{}", hung.len());
    // The first tick has no earlier sample: no value. Then the oldest hung request's
    // age, and the rule fires.
    assert_eq!(phases[0], (Phase::Idle, None), "{phases:?}");
    assert_eq!(phases[1].0, Phase::Firing, "{phases:?}");
    assert!(phases[1].1.is_some_and(|v| v >= 900.0), "{phases:?}");
    // Still hung: still firing, the age keeps growing (no cool-down, no release).
    assert!(
        phases[1..].iter().all(|(p, _)| *p == Phase::Firing),
        "{phases:?}"
    );
    assert!(phases[7].1 > phases[2].1, "{phases:?}");

    // They come back: the rule cools down and releases as usual.
    for ticket in hung {
        ticket.finish(Duration::from_secs(8), false);
    }
    let mut later = Vec::new();
    for t in 9..40u64 {
        offer(&engine, "free", 10, secs(t), Duration::from_millis(10));
        later.push(reflex.tick(secs(t) + Duration::from_millis(999), &engine)[0].phase);
    }
    assert_eq!(*later.last().unwrap(), Phase::Idle, "{later:?}");
}

#[test]
fn healthy_in_flight_requests_add_no_age() {
    // A busy, healthy backend: many in flight at every tick, each younger than a tick.
    let config = tiers("when p95_latency of free > 500ms then block free");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let mut held: Vec<waitstate_core::Ticket> = Vec::new();
    for t in 0..10u64 {
        // Last tick's requests end now (20 ms); this tick's are still in flight at the tick.
        for ticket in held.drain(..) {
            ticket.finish(Duration::from_millis(20), false);
        }
        for _ in 0..5 {
            if let Ok(ticket) = engine.admit(&Demand::new("free"), secs(t)) {
                held.push(ticket);
            }
        }
        let s = reflex.tick(secs(t) + Duration::from_millis(999), &engine);
        assert_eq!(s[0].phase, Phase::Idle, "t={t}: {:?}", s[0]);
        if t > 0 {
            assert!(s[0].value.is_some_and(|v| v < 100.0), "t={t}: {:?}", s[0]);
        }
    }
}

#[test]
fn shed_walks_down_one_level_per_step_and_back_up_in_reverse() {
    let mut config = tiers("when p95_latency > 500ms then shed");
    config.default_priority = 0;
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    assert_eq!(engine.priority_levels(), &[0, 10, 50, 100]);

    let mut floors = Vec::new();
    for t in 0..90u64 {
        let now = secs(t);
        // Overloaded for 8 s: everything admitted is slow. Then healthy.
        let latency = Duration::from_millis(if t < 8 { 900 } else { 15 });
        for tag in ["enterprise", "pro", "free", "anonymous"] {
            offer(&engine, tag, 50, now, latency);
        }
        reflex.tick(now + Duration::from_millis(999), &engine);
        floors.push(engine.policy().priority_floor);
    }
    // Distinct consecutive floors: one level at a time down, then up in reverse.
    let mut walk: Vec<Option<i64>> = vec![None];
    for f in &floors {
        if walk.last() != Some(f) {
            walk.push(*f);
        }
    }
    assert_eq!(
        walk,
        [
            None,
            Some(10),
            Some(50),
            Some(100),
            Some(50),
            Some(10),
            None
        ],
        "{floors:?}"
    );
    // The highest priority was never shed.
    let ent = engine.counters("enterprise").unwrap();
    assert_eq!(ent.rejected_total(), 0);
    assert!(
        engine
            .counters("pro")
            .unwrap()
            .rejected_for(Reason::PriorityShed)
            > 0
    );
    assert!(
        engine
            .counters("anonymous")
            .unwrap()
            .rejected_for(Reason::PriorityShed)
            > 0
    );
}

#[test]
fn throttle_limit_and_kill_release_in_steps() {
    for (rule, check) in [
        ("when error_rate > 5% then throttle pro to 50%", "pro"),
        ("when error_rate > 5% then limit pro to 10/s", "pro"),
        ("when error_rate > 5% then kill", "pro"),
    ] {
        let config = tiers(rule);
        let engine = Engine::new(&config).unwrap();
        let mut reflex = Reflex::new(&config).unwrap();
        let mut shares = Vec::new();
        for t in 0..30u64 {
            let now = secs(t);
            let mut admitted = 0;
            for i in 0..100u32 {
                if let Ok(ticket) = engine.admit(
                    &Demand::new(check),
                    now + Duration::from_millis(u64::from(i) * 10),
                ) {
                    admitted += 1;
                    ticket.finish(Duration::from_millis(5), t < 3 && i % 5 == 0);
                }
            }
            shares.push(admitted);
            reflex.tick(now + Duration::from_millis(999), &engine);
        }
        let min = *shares.iter().min().unwrap();
        assert!(min < 100, "{rule}: never limited: {shares:?}");
        let first_min = shares.iter().position(|s| *s == min).unwrap();
        let after: Vec<u32> = shares[first_min..].to_vec();
        // Within one request: a 62.5% share admits 63 then 62 of 100.
        assert!(
            after.windows(2).all(|w| w[0] <= w[1] + 1),
            "{rule}: not monotone: {shares:?}"
        );
        let distinct: std::collections::BTreeSet<u32> = after.iter().copied().collect();
        assert!(
            distinct.len() >= 3,
            "{rule}: released in one jump: {shares:?}"
        );
        assert_eq!(*shares.last().unwrap(), 100, "{rule}: {shares:?}");
    }
}

#[test]
fn custom_metrics_drive_rules_and_dry_run_rules_only_watch() {
    let mut config = tiers("when queue_depth > 50 then block free");
    config
        .rules
        .push(RuleConfig::new("when queue_depth > 50 then block pro").dry_run(true));
    config.metrics.custom.push("queue_depth".into());
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    engine.report("queue_depth", 80.0, None).unwrap();
    engine.report("queue_depth", 90.0, Some("free")).unwrap();
    let status = reflex.tick(secs(1), &engine);
    assert_eq!(status[0].value, Some(85.0));
    assert!(status[0].is_active() && status[1].is_active() && status[1].dry_run);
    assert_eq!(
        engine.decide(&Demand::new("free"), secs(1)).reason(),
        Some(Reason::TagBlocked)
    );
    let pro = engine.decide(&Demand::new("pro"), secs(1));
    assert!(matches!(
        pro,
        Decision::Allowed {
            would_reject: Some(Reason::TagBlocked)
        }
    ));
}

#[test]
fn no_data_means_the_condition_does_not_hold() {
    let config = tiers("when p95_latency of free > 500ms then block free");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    for t in 1..10 {
        let s = reflex.tick(secs(t), &engine);
        assert_eq!(s[0].phase, Phase::Idle);
        assert_eq!(s[0].value, None);
    }
}

#[test]
fn shed_steps_every_tick_on_a_gauge_and_once_per_window_on_a_windowed_metric() {
    // A gauge: in flight is held high, so every tick sheds one more level.
    let mut config = tiers("when in_flight > 5 then shed");
    config.tags.insert("bulk".into(), 1);
    // Ten held at once: more than adaptive admission's starting limit; this is about rules.
    config.admission.adaptive = false;
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let _held: Vec<_> = (0..10)
        .map(|_| engine.admit(&Demand::new("enterprise"), secs(0)).unwrap())
        .collect();
    let mut floors = Vec::new();
    for t in 1..=4 {
        for tag in ["bulk", "free", "pro", "anon"] {
            let _ = engine.decide(&Demand::new(tag), secs(t));
        }
        reflex.tick(secs(t), &engine);
        floors.push(engine.policy().priority_floor);
    }
    assert_eq!(floors, [Some(1), Some(10), Some(50), Some(100)]);

    // A windowed metric (p95 over a 5 s window): at most one level per window.
    let config = tiers("when p95_latency > 500ms then shed");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let mut floors = Vec::new();
    for t in 0..12u64 {
        for tag in ["free", "pro", "enterprise", "anon"] {
            offer(&engine, tag, 20, secs(t), Duration::from_millis(900));
        }
        reflex.tick(secs(t) + Duration::from_millis(999), &engine);
        floors.push(engine.policy().priority_floor);
    }
    let changes: Vec<usize> = floors
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] != w[1])
        .map(|(i, _)| i + 1)
        .collect();
    assert!(changes.windows(2).all(|c| c[1] - c[0] >= 5), "{floors:?}");
    assert_eq!(floors[0], Some(10));
}

#[test]
fn shed_steps_a_ramp_back_when_the_condition_returns_instead_of_shedding_the_level_again() {
    let config = tiers("when p95_latency > 500ms then shed");
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let mut t = 0u64;
    let mut tick = |latency_ms: u64| {
        for tag in ["enterprise", "pro", "free"] {
            offer(&engine, tag, 50, secs(t), Duration::from_millis(latency_ms));
        }
        let status = reflex.tick(secs(t) + Duration::from_millis(999), &engine);
        t += 1;
        (status[0].phase, engine.policy())
    };
    // Overloaded until pro is shed too (floor 100), then healthy until pro's ramp is at 50%.
    while tick(900).1.priority_floor != Some(100) {}
    let (mut phase, mut policy) = tick(10);
    while phase != Phase::Releasing(2) {
        (phase, policy) = tick(10);
    }
    assert_eq!(policy.priority_floor, Some(50));
    assert_eq!(policy.priority_throttles.get(&50), Some(&50.0));

    // Slow again: pro's share steps back to 25%; pro is not shed whole.
    let (phase, policy) = tick(900);
    assert_eq!(phase, Phase::Releasing(1));
    assert_eq!(policy.priority_floor, Some(50));
    assert_eq!(policy.priority_throttles.get(&50), Some(&25.0));
    // Healthy: the ramp resumes only after a full cool-down (5 s), not a release step (2 s).
    let mut waited = 0;
    loop {
        let (phase, _) = tick(10);
        waited += 1;
        if phase == Phase::Releasing(2) {
            break;
        }
        assert_eq!(phase, Phase::Releasing(1), "after {waited} s");
    }
    assert!(waited >= 5, "resumed after {waited} s");

    // Slow and staying slow: one step back per window (5 s), then, at 25%, pro is shed
    // again (firing, floor 100).
    let mut phases = Vec::new();
    for _ in 0..8 {
        let (phase, policy) = tick(900);
        phases.push((phase, policy.priority_floor));
    }
    assert_eq!(phases[0], (Phase::Releasing(1), Some(50)), "{phases:?}");
    assert!(
        phases[..5]
            .iter()
            .all(|p| *p == (Phase::Releasing(1), Some(50))),
        "{phases:?}"
    );
    assert_eq!(phases[5], (Phase::Firing, Some(100)), "{phases:?}");
}
