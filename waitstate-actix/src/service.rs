use std::fmt;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use waitstate_core::WaitState;
use waitstate_core::adapter::{self, Verdict};
use waitstate_core::tagger::Tagger;

use crate::body::ResponseBody;
use crate::classify::Classify;
use crate::future::ResponseFuture;
use crate::rejection::{MakeRejection, RejectionContext};
use crate::view::{ActixView, is_grpc};

/// One worker's copy of the gate's configuration; the engine inside is shared by all.
pub(crate) struct Shared<T, R, C> {
    pub(crate) ws: WaitState,
    pub(crate) tagger: T,
    pub(crate) rejection: R,
    pub(crate) classifier: C,
    pub(crate) dry_run_header: bool,
}

/// The service the [`Gate`](crate::Gate) middleware wraps around the app, one per worker.
pub struct GateMiddleware<S, T, R, C> {
    service: S,
    shared: Rc<Shared<T, R, C>>,
}

impl<S, T, R, C> GateMiddleware<S, T, R, C> {
    pub(crate) fn new(service: S, shared: Rc<Shared<T, R, C>>) -> Self {
        Self { service, shared }
    }

    /// The engine.
    pub fn waitstate(&self) -> &WaitState {
        &self.shared.ws
    }
}

impl<S, T, R, C> fmt::Debug for GateMiddleware<S, T, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateMiddleware")
            .field("waitstate", &self.shared.ws)
            .finish_non_exhaustive()
    }
}

impl<S, B, T, R, C> Service<ServiceRequest> for GateMiddleware<S, T, R, C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: MessageBody,
    T: Tagger,
    R: MakeRejection,
    C: Classify + Clone,
{
    type Response = ServiceResponse<ResponseBody<B>>;
    type Error = Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Never park a request here: the decision is made in `call`.
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let shared = &*self.shared;
        let verdict = adapter::gate(&shared.ws, &shared.tagger, &ActixView::new(&req));
        match verdict {
            Verdict::Exempt => ResponseFuture::exempt(self.service.call(req)),
            Verdict::Admitted { permit, admission } => {
                let dry = admission.would_reject.filter(|_| shared.dry_run_header);
                req.extensions_mut().insert(admission);
                ResponseFuture::allowed(
                    self.service.call(req),
                    permit,
                    shared.classifier.clone(),
                    dry,
                )
            }
            Verdict::Rejected(rejection) => {
                let ctx = RejectionContext {
                    rejection: &rejection,
                    grpc: is_grpc(&req),
                    request: req.request(),
                };
                let mut res = shared.rejection.make_rejection(&ctx);
                res.extensions_mut().insert(rejection);
                let (request, _payload) = req.into_parts();
                ResponseFuture::rejected(ServiceResponse::new(request, res))
            }
        }
    }
}
