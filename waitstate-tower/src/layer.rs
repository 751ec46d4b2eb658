use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use waitstate_core::WaitState;
use waitstate_core::adapter::GateConfig;

use crate::classify::DefaultClassifier;
use crate::rejection::DefaultRejection;
use crate::service::GateService;

/// Gates every request through a [`WaitState`]: the tagger picks tag and weight, the engine
/// decides, a rejection becomes a response, and the response's latency and outcome flow
/// back to the engine.
///
/// Configuration only: cheap to clone; every service it builds shares the one engine
/// (one policy, one set of counters, one budget), however many times a framework clones
/// it.
#[must_use]
#[derive(Clone)]
pub struct GateLayer<T, R = DefaultRejection, C = DefaultClassifier> {
    config: GateConfig<T, R, C>,
}

impl<T, R, C> fmt::Debug for GateLayer<T, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("GateLayer").field(&self.config).finish()
    }
}

impl<T> GateLayer<T> {
    /// Gate with this engine and tagger, the default rejection responses and the default
    /// classifier (5xx and gRPC server-trouble statuses are errors).
    pub fn new(waitstate: WaitState, tagger: T) -> Self {
        let config = GateConfig::new(
            waitstate,
            tagger,
            DefaultRejection::default(),
            DefaultClassifier,
        );
        Self { config }
    }
}

impl<T, R, C> GateLayer<T, R, C> {
    /// Build rejection responses with `rejection` instead (a
    /// [`MakeRejection`](crate::MakeRejection), or a closure).
    pub fn with_rejection<R2>(self, rejection: R2) -> GateLayer<T, R2, C> {
        GateLayer {
            config: self.config.with_rejection(rejection),
        }
    }

    /// Classify responses with `classifier` instead (a [`Classify`](crate::Classify), or a
    /// closure `Fn(StatusCode, &HeaderMap) -> bool`). It is cloned into responses whose
    /// outcome waits for the trailers, so keep it cheap to clone.
    pub fn with_classifier<C2>(self, classifier: C2) -> GateLayer<T, R, C2> {
        GateLayer {
            config: self.config.with_classifier(classifier),
        }
    }

    /// In dry run, mark responses that would have been rejected with an
    /// `x-waitstate-dry-run: <reason>` header (on by default).
    pub fn dry_run_header(mut self, yes: bool) -> Self {
        self.config.dry_run_header = yes;
        self
    }

    /// Also put the [`Admission`](crate::Admission) (tag, weight, dry-run verdict) in each
    /// admitted request's extensions (off by default: it costs three allocations per
    /// request). Without it, the inner service reads the admission from the scope the gate
    /// runs it in ([`current::current`](waitstate_core::tagger::current::current)), which is
    /// what `waitstate-axum`'s extractors do; turn it on for code that reads
    /// `req.extensions().get::<Admission>()` or runs outside the gate's task.
    pub fn admission_extension(mut self, yes: bool) -> Self {
        self.config.admission_extension = yes;
        self
    }

    /// Record each request's latency at the end of its response body rather than at the
    /// response head (off by default). The head is what tells the backend's speed; a
    /// stream's whole duration (SSE, a gRPC stream) does not. The in-flight slot is held
    /// until the body ends either way.
    pub fn latency_to_body_end(mut self, yes: bool) -> Self {
        self.config.latency_to_end = yes;
        self
    }

    /// The engine.
    pub fn waitstate(&self) -> &WaitState {
        &self.config.waitstate
    }
}

impl<S, T, R, C> Layer<S> for GateLayer<T, R, C>
where
    T: Clone,
    R: Clone,
    C: Clone,
{
    type Service = GateService<S, T, R, C>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService::new(inner, Arc::new(self.config.clone()))
    }
}
