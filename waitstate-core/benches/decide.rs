//! The hot path: `decide` and `admit` + ticket drop, with 1, 16 and 256 tags, with no rule
//! active and with a throttle and a GCRA limit active.
//!
//! Run with: `cargo bench -p waitstate-core --bench decide`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_main};
use waitstate_core::{Config, Demand, Engine, Policy};

fn engine(tags: usize, limited: bool) -> (Engine, Vec<String>) {
    let mut config = Config::default();
    config.tag_cap = tags + 8;
    let names: Vec<String> = (0..tags).map(|i| format!("tier-{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        config.tags.insert(n.clone(), i as i64);
    }
    let engine = Engine::new(&config).expect("valid config");
    if limited {
        let mut p = Policy::default();
        for n in &names {
            p.tag_throttles.insert(n.clone(), 50.0);
            p.tag_rate_limits.insert(n.clone(), 1e12);
        }
        engine.set_remote_policy(Some(p)).expect("valid policy");
    }
    (engine, names)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for tags in [1usize, 16, 256] {
        for limited in [false, true] {
            let (engine, names) = engine(tags, limited);
            let label = if limited { "throttle+gcra" } else { "open" };
            let mut i = 0usize;
            let mut now = Duration::ZERO;
            group.bench_function(format!("decide/{tags}tags/{label}"), |b| {
                b.iter(|| {
                    i = (i + 1) % names.len();
                    now += Duration::from_nanos(10);
                    black_box(engine.decide(&Demand::new(&names[i]), now))
                });
            });
            group.bench_function(format!("admit+drop/{tags}tags/{label}"), |b| {
                b.iter(|| {
                    i = (i + 1) % names.len();
                    now += Duration::from_nanos(10);
                    if let Ok(t) = engine.admit(&Demand::new(&names[i]), now) {
                        t.finish(Duration::from_micros(250), false);
                    }
                });
            });
        }
    }
    group.finish();
}

#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
