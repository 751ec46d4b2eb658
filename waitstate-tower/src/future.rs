//! The response future of [`GateService`](crate::GateService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderValue, Response};
use pin_project_lite::pin_project;
use waitstate_core::{Permit, Reason};

use crate::body::{Guard, ResponseBody};
use crate::classify::{Classify, Outcome};

pub use waitstate_core::adapter::DRY_RUN_HEADER;

pin_project! {
    /// Response future of [`GateService`](crate::GateService). Dropping it before it is
    /// ready releases the request's in-flight slot.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Allowed {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classifier: Option<C>,
            dry_run: Option<Reason>,
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

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn allowed(
        future: F,
        permit: Permit,
        classifier: C,
        dry_run: Option<Reason>,
    ) -> Self {
        Self {
            kind: Kind::Allowed {
                future,
                permit: Some(permit),
                classifier: Some(classifier),
                dry_run,
            },
        }
    }

    pub(crate) fn exempt(future: F) -> Self {
        Self {
            kind: Kind::Exempt { future },
        }
    }

    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
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
            Kind::Allowed { .. } => "allowed",
            Kind::Exempt { .. } => "exempt",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    C: Classify,
    B: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<B, C>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Allowed {
                future,
                permit,
                classifier,
                dry_run,
            } => {
                let result = ready!(future.poll(cx));
                let Some(mut permit) = permit.take() else {
                    // Polled again after completion: a contract breach of the caller; answer
                    // without touching any counter rather than panic.
                    return Poll::Ready(result.map(|r| r.map(|b| ResponseBody::inner(b, None))));
                };
                match result {
                    Ok(res) => {
                        let (mut parts, body) = res.into_parts();
                        let outcome = classifier.as_ref().map_or(Outcome::Success, |c| {
                            c.classify(parts.status, &parts.headers)
                        });
                        permit.set_error(outcome == Outcome::Error);
                        if let Some(reason) = dry_run {
                            parts
                                .headers
                                .insert(DRY_RUN_HEADER, HeaderValue::from_static(reason.as_str()));
                        }
                        let guard = Guard {
                            permit,
                            classifier: if outcome == Outcome::AwaitTrailers {
                                classifier.take()
                            } else {
                                None
                            },
                        };
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
