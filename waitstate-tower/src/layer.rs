use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;
use waitstate_core::WaitState;

use crate::classify::DefaultClassifier;
use crate::rejection::DefaultRejection;
use crate::service::{GateService, Shared};

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
    ws: WaitState,
    tagger: T,
    rejection: R,
    classifier: C,
    dry_run_header: bool,
    admission_extension: bool,
}

impl<T, R, C> fmt::Debug for GateLayer<T, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateLayer")
            .field("waitstate", &self.ws)
            .field("tagger", &std::any::type_name::<T>())
            .field("rejection", &std::any::type_name::<R>())
            .field("classifier", &std::any::type_name::<C>())
            .field("dry_run_header", &self.dry_run_header)
            .field("admission_extension", &self.admission_extension)
            .finish()
    }
}

impl<T> GateLayer<T> {
    /// Gate with this engine and tagger, the default rejection responses and the default
    /// classifier (5xx and gRPC server-trouble statuses are errors).
    pub fn new(waitstate: WaitState, tagger: T) -> Self {
        Self {
            ws: waitstate,
            tagger,
            rejection: DefaultRejection::default(),
            classifier: DefaultClassifier,
            dry_run_header: true,
            admission_extension: true,
        }
    }
}

impl<T, R, C> GateLayer<T, R, C> {
    /// Build rejection responses with `rejection` instead (a
    /// [`MakeRejection`](crate::MakeRejection), or a closure).
    pub fn with_rejection<R2>(self, rejection: R2) -> GateLayer<T, R2, C> {
        GateLayer {
            ws: self.ws,
            tagger: self.tagger,
            rejection,
            classifier: self.classifier,
            dry_run_header: self.dry_run_header,
            admission_extension: self.admission_extension,
        }
    }

    /// Classify responses with `classifier` instead (a [`Classify`](crate::Classify), or a
    /// closure `Fn(StatusCode, &HeaderMap) -> bool`). It is cloned into responses whose
    /// outcome waits for the trailers, so keep it cheap to clone.
    pub fn with_classifier<C2>(self, classifier: C2) -> GateLayer<T, R, C2> {
        GateLayer {
            ws: self.ws,
            tagger: self.tagger,
            rejection: self.rejection,
            classifier,
            dry_run_header: self.dry_run_header,
            admission_extension: self.admission_extension,
        }
    }

    /// In dry run, mark responses that would have been rejected with an
    /// `x-waitstate-dry-run: <reason>` header (on by default).
    pub fn dry_run_header(mut self, yes: bool) -> Self {
        self.dry_run_header = yes;
        self
    }

    /// Put the [`Admission`](crate::Admission) (tag, weight, dry-run verdict) in each admitted
    /// request's extensions, for handlers and extractors (on by default). Off saves an
    /// allocation or three per request (the `Admission`, and the extensions map when the
    /// request has none yet): turn it off when no handler reads it.
    pub fn admission_extension(mut self, yes: bool) -> Self {
        self.admission_extension = yes;
        self
    }

    /// The engine.
    pub fn waitstate(&self) -> &WaitState {
        &self.ws
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
        GateService::new(
            inner,
            Arc::new(Shared {
                ws: self.ws.clone(),
                tagger: self.tagger.clone(),
                rejection: self.rejection.clone(),
                classifier: self.classifier.clone(),
                dry_run_header: self.dry_run_header,
                admission_extension: self.admission_extension,
            }),
        )
    }
}
