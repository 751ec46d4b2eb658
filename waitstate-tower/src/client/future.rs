//! The response future of [`ClientService`](super::ClientService).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;

use super::manners::{Class, Manners, read_answer};
use super::{ClientBody, LocalRejection};

pin_project! {
    /// Response future of [`ClientService`](super::ClientService).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Sent {
            #[pin]
            future: F,
            shared: Arc<Manners>,
            class: Class,
        },
        Local {
            why: Option<LocalRejection>,
            grpc: bool,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn sent(future: F, shared: Arc<Manners>, class: Class) -> Self {
        Self {
            kind: Kind::Sent {
                future,
                shared,
                class,
            },
        }
    }

    pub(crate) fn local(why: LocalRejection, grpc: bool) -> Self {
        Self {
            kind: Kind::Local {
                why: Some(why),
                grpc,
            },
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Sent { .. } => "sent",
            Kind::Local { .. } => "local",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ClientBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Sent {
                future,
                shared,
                class,
            } => {
                let result = ready!(future.poll(cx));
                if let Ok(res) = &result {
                    shared.after(class, read_answer(res.status().as_u16(), res.headers()));
                }
                Poll::Ready(result.map(|res| res.map(ClientBody::inner)))
            }
            KindProj::Local { why, grpc } => {
                let why = why.take().unwrap_or(LocalRejection::Throttled);
                Poll::Ready(Ok(local_response(why, *grpc)))
            }
        }
    }
}

/// The response to a call answered locally: a 429 (with `Retry-After` while backing off),
/// or a trailers-only gRPC `UNAVAILABLE` with `grpc-retry-pushback-ms`.
pub(crate) fn local_response<B>(why: LocalRejection, grpc: bool) -> Response<ClientBody<B>> {
    let mut res = Response::new(ClientBody::empty());
    let wait = match why {
        LocalRejection::BackingOff { retry_after } => Some(retry_after),
        LocalRejection::Throttled => None,
    };
    if !grpc {
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    }
    let h = res.headers_mut();
    if grpc {
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static("14"));
        let message = match why {
            LocalRejection::BackingOff { .. } => "waitstate client: backing off",
            LocalRejection::Throttled => "waitstate client: throttled locally",
        };
        h.insert("grpc-message", HeaderValue::from_static(message));
        if let Some(wait) = wait {
            let ms = wait.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
            h.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
        }
    } else if let Some(wait) = wait {
        // Whole seconds, rounded up (never 0), as the gate's Retry-After.
        let secs = wait.as_nanos().div_ceil(1_000_000_000).max(1);
        h.insert(
            http::header::RETRY_AFTER,
            HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
        );
    }
    res.extensions_mut().insert(why);
    res
}
