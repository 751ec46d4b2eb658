use std::fmt;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use waitstate_core::adapter::{self, GateConfig, Verdict};
use waitstate_core::tagger::Tagger;
use waitstate_core::{Rejection, WaitState};

use crate::body::ResponseBody;
use crate::classify::Classify;
use crate::future::ResponseFuture;
use crate::rejection::{MakeRejection, RejectionContext};
use crate::view::{ActixView, is_grpc};

/// The service the [`Gate`](crate::Gate) middleware wraps around the app, one per worker.
///
/// See the [crate docs](crate) for what it does with each request, and an example.
pub struct GateMiddleware<S, T, R, C> {
    // Shared with the futures of requests that wait for a slot: they call it when their
    // turn comes.
    service: Rc<S>,
    shared: Rc<GateConfig<T, R, C>>,
}

impl<S, T, R, C> GateMiddleware<S, T, R, C> {
    pub(crate) fn new(service: S, shared: Rc<GateConfig<T, R, C>>) -> Self {
        Self {
            service: Rc::new(service),
            shared,
        }
    }

    /// The engine.
    pub fn waitstate(&self) -> &WaitState {
        &self.shared.waitstate
    }

    /// The wrapped service (the app, or the next middleware).
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The wrapped service, without the gate (shared with any request still waiting for a
    /// slot).
    pub fn into_inner(self) -> Rc<S> {
        self.service
    }
}

impl<S, T, R, C> fmt::Debug for GateMiddleware<S, T, R, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateMiddleware")
            .field("waitstate", &self.shared.waitstate)
            .finish_non_exhaustive()
    }
}

impl<S, B, T, R, C> Service<ServiceRequest> for GateMiddleware<S, T, R, C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody,
    T: Tagger + 'static,
    R: MakeRejection + 'static,
    C: Classify + Clone + 'static,
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
        let verdict = adapter::gate(&shared.waitstate, &shared.tagger, &ActixView::new(&req));
        match verdict {
            Verdict::Exempt => ResponseFuture::exempt(self.service.call(req)),
            Verdict::Admitted { permit, admission } => {
                let dry = shared.dry_run_mark(&admission);
                if shared.admission_extension {
                    req.extensions_mut().insert(admission.clone());
                }
                ResponseFuture::allowed(
                    self.service.call(req),
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
                // The slow path: hold the request until a slot is handed over (or its
                // deadline passes), then call the app.
                let service = self.service.clone();
                let shared = self.shared.clone();
                ResponseFuture::waiting(
                    wait,
                    Box::new(move |outcome| match outcome {
                        Ok(permit) => {
                            let admission =
                                adapter::admission_for(&permit, weight).with_cohort(cohort);
                            let dry = shared.dry_run_mark(&admission);
                            if shared.admission_extension {
                                req.extensions_mut().insert(admission.clone());
                            }
                            ResponseFuture::allowed(
                                service.call(req),
                                permit,
                                admission,
                                shared.classifier.clone(),
                                dry,
                                shared.latency_to_end,
                            )
                        }
                        Err(rejection) => {
                            ResponseFuture::rejected(render(&shared.rejection, rejection, req))
                        }
                    }),
                )
            }
            Verdict::Rejected(rejection) => {
                ResponseFuture::rejected(render(&shared.rejection, rejection, req))
            }
        }
    }
}

/// The builder's response, with the machine-readable rejection in its extensions.
fn render<R: MakeRejection>(
    make: &R,
    rejection: Rejection,
    req: ServiceRequest,
) -> ServiceResponse<BoxBody> {
    let ctx = RejectionContext {
        rejection: &rejection,
        grpc: is_grpc(&req),
        request: req.request(),
    };
    let mut res = make.make_rejection(&ctx);
    res.extensions_mut().insert(rejection);
    let (request, _payload) = req.into_parts();
    ServiceResponse::new(request, res)
}
