//! The span per gated request (feature `tracing`): its fields say tag, priority, decision
//! and reason, and the inner service's events nest under it.
#![cfg(feature = "tracing")]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use waitstate_core::{Policy, WaitState};
use waitstate_tower::{GateLayer, HeaderTagger};

/// Every `waitstate.gate` span's fields, as `name=value`, and each event's parent span.
#[derive(Clone, Default)]
struct Seen {
    spans: Arc<Mutex<Vec<Vec<String>>>>,
    events_in_gate: Arc<Mutex<usize>>,
}

struct Fields<'a>(&'a mut Vec<String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={value}", field.name()));
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Seen {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() == "waitstate.gate" {
            let mut fields = Vec::new();
            attrs.record(&mut Fields(&mut fields));
            let mut spans = self.spans.lock().unwrap();
            spans.push(fields);
            let index = spans.len() - 1;
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(index);
            }
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(index) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<usize>().copied())
        {
            values.record(&mut Fields(&mut self.spans.lock().unwrap()[index]));
        }
    }
    fn on_event(&self, _event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if ctx
            .lookup_current()
            .is_some_and(|s| s.name() == "waitstate.gate")
        {
            *self.events_in_gate.lock().unwrap() += 1;
        }
    }
}

#[test]
fn each_gated_request_has_a_span_with_its_decision() {
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ws = WaitState::builder()
            .tag("enterprise", 100)
            .tag("free", 10)
            .build()
            .unwrap();
        let mut blocked = Policy::default();
        blocked.tag_max_weights.insert("free".into(), 0.0);
        ws.engine().set_remote_policy(Some(blocked)).unwrap();
        let svc =
            GateLayer::new(ws, HeaderTagger::new()).layer(service_fn(|_req: Request<()>| async {
                tracing::info!("in the handler");
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }));
        for tag in ["enterprise", "free"] {
            let req = Request::get("/")
                .header("x-waitstate-tag", tag)
                .body(())
                .unwrap();
            let _ = svc.clone().oneshot(req).await.unwrap();
        }
    });
    let spans = seen.spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:?}");
    for want in ["tag=enterprise", "priority=100", "decision=admitted"] {
        assert!(spans[0].iter().any(|f| f == want), "{want}: {spans:?}");
    }
    for want in ["tag=free", "decision=rejected", "reason=tag_blocked"] {
        assert!(spans[1].iter().any(|f| f == want), "{want}: {spans:?}");
    }
    // The handler's event happened inside the admitted request's span.
    assert_eq!(*seen.events_in_gate.lock().unwrap(), 1);
}
