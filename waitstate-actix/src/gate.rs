use std::fmt;
use std::future::{Ready, ready};
use std::rc::Rc;

use actix_web::Error;
use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use waitstate_core::WaitState;
use waitstate_core::adapter::GateConfig;
use waitstate_core::tagger::Tagger;

use crate::body::ResponseBody;
use crate::classify::{Classify, DefaultClassifier};
use crate::rejection::{DefaultRejection, MakeRejection};
use crate::service::GateMiddleware;

/// The actix-web middleware: `App::new().wrap(Gate::new(waitstate, tagger))`.
///
/// The tagger picks tag and weight, the engine decides, a rejection becomes a response
/// (a 429 by default), and the response's latency (to its head, by default) and outcome
/// flow back to the engine.
///
/// Configuration only: cheap to clone. actix-web builds one middleware per worker (one
/// per `App` the server's factory makes); every one of them shares the one engine (one
/// policy, one set of counters, one budget), because [`WaitState`] is a shared handle.
#[must_use]
#[derive(Clone)]
pub struct Gate<T, R = DefaultRejection, C = DefaultClassifier> {
    config: GateConfig<T, R, C>,
}

impl<T, R, C> fmt::Debug for Gate<T, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Gate").field(&self.config).finish()
    }
}

impl<T> Gate<T> {
    /// Gate with this engine and tagger, the default rejection responses and the default
    /// classifier (5xx are errors, 4xx not).
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

impl<T, R, C> Gate<T, R, C> {
    /// Build rejection responses with `rejection` instead (a
    /// [`MakeRejection`], or a closure `Fn(&RejectionContext<'_>) -> HttpResponse`).
    ///
    /// [`RejectionContext`]: crate::RejectionContext
    pub fn with_rejection<R2>(self, rejection: R2) -> Gate<T, R2, C> {
        Gate {
            config: self.config.with_rejection(rejection),
        }
    }

    /// Classify responses with `classifier` instead (a [`Classify`], or a closure
    /// `Fn(StatusCode, &HeaderMap) -> bool`, true for an error). It is cloned into every
    /// admitted request's future, so keep it cheap to clone.
    pub fn with_classifier<C2>(self, classifier: C2) -> Gate<T, R, C2> {
        Gate {
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
    /// admitted request's extensions (off by default: it costs an allocation per request).
    /// Without it, handlers get the admission with the [`Admitted`](crate::Admitted)
    /// extractor, which reads the scope the gate runs them in; turn it on for code that
    /// reads `req.extensions().get::<Admission>()`.
    pub fn admission_extension(mut self, yes: bool) -> Self {
        self.config.admission_extension = yes;
        self
    }

    /// Record each request's latency at the end of its response body rather than when the
    /// app's response is ready (off by default): a stream's whole duration (SSE) says
    /// nothing of the backend's speed. The in-flight slot is held to the body's end either
    /// way.
    pub fn latency_to_body_end(mut self, yes: bool) -> Self {
        self.config.latency_to_end = yes;
        self
    }

    /// The engine.
    pub fn waitstate(&self) -> &WaitState {
        &self.config.waitstate
    }
}

impl<S, B, T, R, C> Transform<S, ServiceRequest> for Gate<T, R, C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody,
    T: Tagger + Clone + 'static,
    R: MakeRejection + Clone + 'static,
    C: Classify + Clone + 'static,
{
    type Response = ServiceResponse<ResponseBody<B>>;
    type Error = Error;
    type Transform = GateMiddleware<S, T, R, C>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GateMiddleware::new(
            service,
            Rc::new(self.config.clone()),
        )))
    }
}
