use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, request};
use tower_service::Service;
use waitstate_core::adapter::{self, GateConfig, Verdict};
use waitstate_core::tagger::Tagger;
use waitstate_core::{Rejection, WaitState};

use crate::body::ResponseBody;
use crate::classify::Classify;
use crate::future::ResponseFuture;
use crate::rejection::{MakeRejection, RejectionContext};
use crate::trace;
use crate::view::{HttpView, is_grpc};

/// The service [`GateLayer`](crate::GateLayer) builds. Cheap to clone: the engine and the
/// configuration are shared, so every clone sees one policy and one set of counters.
///
/// See the [crate docs](crate) for what it does with each request, and an example.
pub struct GateService<S, T, R, C> {
    inner: S,
    shared: Arc<GateConfig<T, R, C>>,
}

impl<S, T, R, C> GateService<S, T, R, C> {
    pub(crate) fn new(inner: S, shared: Arc<GateConfig<T, R, C>>) -> Self {
        Self { inner, shared }
    }

    /// The engine.
    pub fn waitstate(&self) -> &WaitState {
        &self.shared.waitstate
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, without the gate.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, T, R, C> Clone for GateService<S, T, R, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, T, R, C> fmt::Debug for GateService<S, T, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateService")
            .field("inner", &self.inner)
            .field("waitstate", &self.shared.waitstate)
            .finish_non_exhaustive()
    }
}

impl<S, T, R, C, ReqBody, ResBody> Service<Request<ReqBody>> for GateService<S, T, R, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    T: Tagger,
    R: MakeRejection + Clone + Send + 'static,
    C: Classify + Clone,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody, C>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C, S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Never park a request here: the decision is made in `call`.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let verdict = adapter::gate(&shared.waitstate, &shared.tagger, &HttpView(&req));
        if matches!(verdict, Verdict::Exempt) {
            return ResponseFuture::exempt(self.inner.call(req));
        }
        let span = trace::start();
        match verdict {
            Verdict::Exempt => ResponseFuture::exempt(self.inner.call(req)),
            Verdict::Admitted { permit, admission } => {
                trace::admitted(&span, &admission);
                let dry = shared.dry_run_mark(&admission);
                if shared.admission_extension {
                    req.extensions_mut().insert(admission.clone());
                }
                ResponseFuture::allowed(
                    span,
                    self.inner.call(req),
                    permit,
                    admission,
                    shared.classifier.clone(),
                    dry,
                    shared.latency_to_end,
                )
            }
            Verdict::Waiting {
                wait,
                weight,
                cohort,
            } => {
                // The slow path: the request waits for a slot, then calls the inner service
                // that was made ready for it (a clone takes its place here, as tower's docs
                // advise for services called later).
                trace::waiting(&span);
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let grpc = is_grpc(&req);
                let make = shared.rejection.clone();
                ResponseFuture::waiting(
                    span,
                    wait,
                    inner,
                    req,
                    weight,
                    cohort,
                    shared.classifier.clone(),
                    shared.admission_extension,
                    shared.dry_run_header,
                    shared.latency_to_end,
                    Box::new(move |rejection, req| render(&make, rejection, grpc, req)),
                )
            }
            Verdict::Rejected(rejection) => {
                trace::rejected(&span, &rejection);
                let grpc = is_grpc(&req);
                let (req, _body) = req.into_parts();
                ResponseFuture::rejected(span, render(&shared.rejection, rejection, grpc, req))
            }
        }
    }
}

/// The builder's response, with the machine-readable rejection in its extensions.
///
/// The rejected request is spent: its header map, emptied, is the builder's to take
/// ([`RejectionContext::take_headers`]), and its extensions map, emptied, holds the response's
/// when the builder left them empty. Both keep their capacity, so the response's fields and
/// the rejection cost no allocation of a new map (a request without extensions has no map
/// to give).
fn render<R: MakeRejection>(
    make: &R,
    rejection: Rejection,
    grpc: bool,
    req: request::Parts,
) -> Response<Bytes> {
    let request::Parts {
        mut headers,
        mut extensions,
        ..
    } = req;
    headers.clear();
    let spare = Cell::new(Some(headers));
    let ctx = RejectionContext::new(&rejection, grpc).with_spare_headers(&spare);
    let mut res = make.make_rejection(&ctx);
    if res.extensions().is_empty() {
        extensions.clear();
        *res.extensions_mut() = extensions;
    }
    res.extensions_mut().insert(rejection);
    res
}
