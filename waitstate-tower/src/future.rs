//! The response future of [`GateService`](crate::GateService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, request};
use pin_project_lite::pin_project;
use tower_service::Service;
use waitstate_core::adapter::poll_recording_panic;
use waitstate_core::tagger::Admission;
use waitstate_core::tagger::current::{self, Scoped};
use waitstate_core::{Ending, Permit, Reason, Rejection, WaitForSlot};

use crate::body::{Guard, ResponseBody};
use crate::classify::{Classify, Outcome};
use crate::trace;

pub use waitstate_core::adapter::DRY_RUN_HEADER;

pin_project! {
    /// Response future of [`GateService`](crate::GateService). Dropping it before it is
    /// ready releases the request's in-flight slot, or its place in the queue.
    ///
    /// The inner service's future runs with the request's [`Admission`] as the current one
    /// ([`waitstate_core::tagger::current`]), so calls it makes through a
    /// `ClientLayer` (feature `client`) carry the request's tag downstream.
    ///
    /// `S` and `B` are the inner service and the request body: a request that waits for a
    /// slot is held here, with a ready clone of the inner service, until its turn.
    pub struct ResponseFuture<F, C, S, B> {
        #[pin]
        kind: Kind<F, C, S, B>,
        span: trace::Span,
    }
}

/// What a waiting request needs to go on once it has a slot. Boxed, on the slow path only:
/// inline, the request and the inner service would make every response future (and every
/// move of it through the layers above) a few hundred bytes larger.
struct Resume<S, B, C> {
    rejection: Box<dyn FnOnce(Rejection, request::Parts) -> Response<Bytes> + Send>,
    inner: S,
    request: Request<B>,
    weight: f64,
    cohort: Option<u64>,
    classifier: C,
    admission_extension: bool,
    dry_run_header: bool,
    latency_to_end: bool,
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C, S, B> {
        Waiting {
            #[pin]
            wait: WaitForSlot,
            resume: Option<Box<Resume<S, B, C>>>,
        },
        Allowed {
            #[pin]
            future: Scoped<F>,
            permit: Option<Permit>,
            classifier: Option<C>,
            dry_run: Option<Reason>,
            latency_to_end: bool,
        },
        Exempt {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<F, C, S, B> ResponseFuture<F, C, S, B> {
    pub(crate) fn allowed(
        span: trace::Span,
        future: F,
        mut permit: Permit,
        admission: Admission,
        classifier: C,
        dry_run: Option<Reason>,
        latency_to_end: bool,
    ) -> Self
    where
        F: Future,
    {
        // Until the inner service answers, dropping this future means the client went away.
        permit.set_ending(Ending::Cancelled);
        Self {
            span,
            kind: Kind::Allowed {
                future: current::scoped(admission, future),
                permit: Some(permit),
                classifier: Some(classifier),
                dry_run,
                latency_to_end,
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn waiting(
        span: trace::Span,
        wait: WaitForSlot,
        inner: S,
        request: Request<B>,
        weight: f64,
        cohort: Option<u64>,
        classifier: C,
        admission_extension: bool,
        dry_run_header: bool,
        latency_to_end: bool,
        rejection: Box<dyn FnOnce(Rejection, request::Parts) -> Response<Bytes> + Send>,
    ) -> Self {
        Self {
            span,
            kind: Kind::Waiting {
                wait,
                resume: Some(Box::new(Resume {
                    rejection,
                    inner,
                    request,
                    weight,
                    cohort,
                    classifier,
                    admission_extension,
                    dry_run_header,
                    latency_to_end,
                })),
            },
        }
    }

    pub(crate) fn exempt(future: F) -> Self {
        Self {
            span: trace::none(),
            kind: Kind::Exempt { future },
        }
    }

    pub(crate) fn rejected(span: trace::Span, response: Response<Bytes>) -> Self {
        Self {
            span,
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, C, S, B> std::fmt::Debug for ResponseFuture<F, C, S, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Waiting { .. } => "waiting",
            Kind::Allowed { .. } => "allowed",
            Kind::Exempt { .. } => "exempt",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, C, S, ReqBody, B, E> Future for ResponseFuture<F, C, S, ReqBody>
where
    S: Service<Request<ReqBody>, Future = F>,
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify,
    B: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<B, C>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let _entered = trace::enter(&self.span);
        if let KindProj::Waiting { wait, resume } = self.as_mut().project().kind.project() {
            let outcome = ready!(wait.poll(cx));
            let Some(resume) = resume.take() else {
                // Polled again after completion: answer without touching any counter.
                return Poll::Ready(Ok(Response::new(ResponseBody::full(Bytes::new()))));
            };
            let next = match outcome {
                Err(r) => {
                    let Resume {
                        rejection, request, ..
                    } = *resume;
                    let (request, _body) = request.into_parts();
                    Kind::Rejected {
                        response: Some(rejection(r, request)),
                    }
                }
                Ok(mut permit) => {
                    let Resume {
                        rejection: _,
                        mut inner,
                        mut request,
                        weight,
                        cohort,
                        classifier,
                        admission_extension,
                        dry_run_header,
                        latency_to_end,
                    } = *resume;
                    permit.set_ending(Ending::Cancelled);
                    let admission =
                        waitstate_core::adapter::admission_for(&permit, weight).with_cohort(cohort);
                    trace::admitted(&self.span, &admission);
                    let dry_run = admission.would_reject.filter(|_| dry_run_header);
                    if admission_extension {
                        request.extensions_mut().insert(admission.clone());
                    }
                    Kind::Allowed {
                        future: current::scoped(admission, inner.call(request)),
                        permit: Some(permit),
                        classifier: Some(classifier),
                        dry_run,
                        latency_to_end,
                    }
                }
            };
            self.as_mut().project().kind.set(next);
        }
        match self.project().kind.project() {
            KindProj::Waiting { .. } => Poll::Pending,
            KindProj::Allowed {
                future,
                permit,
                classifier,
                dry_run,
                latency_to_end,
            } => {
                if permit.is_none() {
                    // Polled again after completion: a contract breach of the caller; answer
                    // without touching any counter (or the spent inner future) rather than
                    // panic.
                    return Poll::Ready(Ok(Response::new(ResponseBody::full(Bytes::new()))));
                }
                // A panic in the inner service is recorded as one (not as a success, nor as
                // the client going away), then goes on unwinding.
                let result = ready!(poll_recording_panic(permit.as_mut(), || future.poll(cx)));
                let Some(mut permit) = permit.take() else {
                    return Poll::Ready(result.map(|r| r.map(|b| ResponseBody::inner(b, None))));
                };
                match result {
                    Ok(res) => {
                        let (mut parts, body) = res.into_parts();
                        let outcome = classifier.as_ref().map_or(Outcome::Success, |c| {
                            c.classify(parts.status, &parts.headers)
                        });
                        permit.set_error(outcome == Outcome::Error);
                        if !*latency_to_end {
                            // The backend's speed is its time to the head: a stream's
                            // length is the client's business.
                            permit.head_sent();
                        }
                        if let Some(reason) = dry_run {
                            parts
                                .headers
                                .insert(DRY_RUN_HEADER, HeaderValue::from_static(reason.as_str()));
                        }
                        let guard = Guard::new(
                            permit,
                            if outcome == Outcome::AwaitTrailers {
                                classifier.take()
                            } else {
                                None
                            },
                        );
                        Poll::Ready(Ok(Response::from_parts(
                            parts,
                            ResponseBody::inner(body, Some(guard)),
                        )))
                    }
                    Err(e) => {
                        permit.set_error(true);
                        drop(permit);
                        Poll::Ready(Err(e))
                    }
                }
            }
            KindProj::Exempt { future } => {
                let res = ready!(future.poll(cx));
                Poll::Ready(res.map(|r| r.map(|b| ResponseBody::inner(b, None))))
            }
            KindProj::Rejected { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res.map(ResponseBody::full))),
                None => Poll::Ready(Ok(Response::new(ResponseBody::full(Bytes::new())))),
            },
        }
    }
}
