//! The response future of the [`Gate`](crate::Gate) middleware.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::Error;
use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use waitstate_core::adapter::poll_recording_panic;
use waitstate_core::tagger::Admission;
use waitstate_core::tagger::current::{self, Scoped};
use waitstate_core::{Ending, Permit, Reason, Rejection, WaitForSlot};

use crate::body::ResponseBody;
use crate::classify::Classify;

pub use waitstate_core::adapter::DRY_RUN_HEADER;

pin_project! {
    /// Response future of the [`Gate`](crate::Gate) middleware. Dropping it before it is
    /// ready releases the request's in-flight slot.
    ///
    /// The app's future runs with the request's [`Admission`] as the current one
    /// ([`waitstate_core::tagger::current`]), so outgoing calls through `waitstate-tower`'s
    /// client layer or middleware carry the request's tag downstream.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

/// What a waiting request becomes once its wait ends: the app's future, or the rejection.
type Resume<F, C> = Box<dyn FnOnce(Result<Permit, Rejection>) -> ResponseFuture<F, C>>;

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Waiting {
            #[pin]
            wait: WaitForSlot,
            resume: Option<Resume<F, C>>,
        },
        Allowed {
            #[pin]
            future: Scoped<F>,
            permit: Option<Permit>,
            classifier: C,
            dry_run: Option<Reason>,
            latency_to_end: bool,
        },
        Exempt {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<ServiceResponse<BoxBody>>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn allowed(
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
        // Until the app answers, dropping this future means the client went away.
        permit.set_ending(Ending::Cancelled);
        Self {
            kind: Kind::Allowed {
                future: current::scoped(admission, future),
                permit: Some(permit),
                classifier,
                dry_run,
                latency_to_end,
            },
        }
    }

    pub(crate) fn waiting(wait: WaitForSlot, resume: Resume<F, C>) -> Self {
        Self {
            kind: Kind::Waiting {
                wait,
                resume: Some(resume),
            },
        }
    }

    pub(crate) fn exempt(future: F) -> Self {
        Self {
            kind: Kind::Exempt { future },
        }
    }

    pub(crate) fn rejected(response: ServiceResponse<BoxBody>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
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

impl<F, C, B> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
    C: Classify,
    B: actix_web::body::MessageBody,
{
    type Output = Result<ServiceResponse<ResponseBody<B>>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let KindProj::Waiting { wait, resume } = self.as_mut().project().kind.project() {
            let outcome = ready!(wait.poll(cx));
            let Some(resume) = resume.take() else {
                return Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                    "waitstate: polled after completion",
                )));
            };
            let next = resume(outcome);
            self.set(next);
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
                    // without touching any counter (or the spent app future) rather than
                    // panic.
                    return Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                        "waitstate: polled after completion",
                    )));
                }
                let result = ready!(poll_recording_panic(permit.as_mut(), || future.poll(cx)));
                let Some(mut permit) = permit.take() else {
                    return Poll::Ready(
                        result.map(|r| r.map_body(|_, b| ResponseBody::inner(b, None))),
                    );
                };
                match result {
                    Ok(mut res) => {
                        permit.set_error(classifier.is_error(res.status(), res.headers()));
                        if !*latency_to_end {
                            permit.head_sent();
                        }
                        if let Some(reason) = dry_run {
                            res.headers_mut().insert(
                                HeaderName::from_static(DRY_RUN_HEADER),
                                HeaderValue::from_static(reason.as_str()),
                            );
                        }
                        Poll::Ready(Ok(res.map_body(|_, b| ResponseBody::inner(b, Some(permit)))))
                    }
                    Err(e) => {
                        // The error becomes a response further out; classify it by the
                        // status it will have.
                        let status = e.as_response_error().status_code();
                        permit.set_error(classifier.is_error(status, &HeaderMap::new()));
                        drop(permit);
                        Poll::Ready(Err(e))
                    }
                }
            }
            KindProj::Exempt { future } => {
                let result = ready!(future.poll(cx));
                Poll::Ready(result.map(|r| r.map_body(|_, b| ResponseBody::inner(b, None))))
            }
            KindProj::Rejected { response } => match response.take() {
                Some(res) => Poll::Ready(Ok(res.map_body(|_, b| ResponseBody::rejected(b)))),
                None => Poll::Ready(Err(actix_web::error::ErrorInternalServerError(
                    "waitstate: rejection polled after completion",
                ))),
            },
        }
    }
}
