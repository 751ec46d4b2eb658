//! Every rule transition is a `tracing` event with the value that moved it: fired,
//! releasing (each step), released. Time is passed in; nothing sleeps.
#![cfg(feature = "tracing")]

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use waitstate_core::{Config, Demand, Engine, Reflex};

/// One event: its target, level and fields as text.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Seen {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

/// A subscriber that keeps every event (no dependency on tracing-subscriber).
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Seen {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn fired_releasing_and_released_are_events_with_the_value() {
    let config = Config::from_toml_str(
        r#"
        window = "2s"
        cooldown = "5s"
        release_step = "1s"
        [tags]
        enterprise = 100
        free = 10
        [[rules]]
        rule = "when p95_latency of free > 500ms then block free"
        "#,
    )
    .unwrap();
    let engine = Engine::new(&config).unwrap();
    let mut reflex = Reflex::new(&config).unwrap();
    let recorder = Recorder::default();
    let seen = recorder.0.clone();
    tracing::subscriber::with_default(recorder, || {
        let mut now = Duration::ZERO;
        // 5 s of slow free requests (800 ms), then 30 s of fast ones (10 ms) through the
        // admitted share.
        for second in 0..35 {
            let ms = if second < 5 { 800 } else { 10 };
            for _ in 0..50 {
                if let Ok(ticket) = engine.admit(&Demand::new("free"), now) {
                    ticket.finish(Duration::from_millis(ms), false);
                }
            }
            now += Duration::from_secs(1);
            reflex.tick(now, &engine);
        }
    });
    let seen = seen.lock().unwrap().clone();
    let rule_events: Vec<&Seen> = seen
        .iter()
        .filter(|e| e.target == "waitstate::rule")
        .collect();
    let messages: Vec<&str> = rule_events
        .iter()
        .filter(|e| e.level == tracing::Level::INFO)
        .filter_map(|e| e.get("message"))
        .collect();
    assert_eq!(
        messages,
        [
            "rule fired",
            "rule releasing",
            "rule releasing",
            "rule releasing",
            "rule released"
        ],
        "{rule_events:#?}"
    );
    let fired = rule_events[0];
    assert_eq!(
        fired.get("rule"),
        Some("when p95_latency of free > 500ms then block free")
    );
    let value: f64 = fired.get("value").unwrap().parse().unwrap();
    assert!(value > 500.0, "fired at {value}");
    let steps: Vec<&str> = rule_events
        .iter()
        .filter(|e| e.get("message") == Some("rule releasing"))
        .filter_map(|e| e.get("step"))
        .collect();
    assert_eq!(steps, ["1", "2", "3"]);
    let released = rule_events
        .iter()
        .find(|e| e.get("message") == Some("rule released"))
        .unwrap();
    let value: f64 = released.get("value").unwrap().parse().unwrap();
    assert!(value < 500.0, "released at {value}");
}
