//! The response body of [`GateService`](crate::GateService).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use waitstate_core::Permit;
use waitstate_core::adapter::{StreamGuard, poll_recording_panic};

use crate::classify::Classify;

/// Holds the request's in-flight slot until the body ends (or is dropped), then records
/// latency and outcome. Dropped before the end of stream, the client went away: the request
/// counts as cancelled (see [`StreamGuard`]).
pub(crate) struct Guard<C> {
    stream: StreamGuard,
    /// Set when the outcome is in the trailers (streaming gRPC).
    classifier: Option<C>,
}

impl<C> Guard<C> {
    pub(crate) fn new(permit: Permit, classifier: Option<C>) -> Self {
        Self {
            stream: StreamGuard::new(permit),
            classifier,
        }
    }

    /// The body reached its end (the permit records the outcome set so far).
    fn end(self) {
        self.stream.end();
    }
}

pin_project! {
    /// Response body of [`GateService`](crate::GateService): the inner body, which holds the
    /// request's in-flight slot until its end of stream (or until it is dropped, whichever
    /// comes first), or a rejection's body.
    pub struct ResponseBody<B, C> {
        #[pin]
        kind: BodyKind<B, C>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B, C> {
        Inner {
            #[pin]
            body: B,
            guard: Option<Guard<C>>,
        },
        Full {
            data: Option<Bytes>,
        },
    }
}

impl<B, C> ResponseBody<B, C> {
    pub(crate) fn inner(body: B, mut guard: Option<Guard<C>>) -> Self
    where
        B: Body,
    {
        // An empty body may never be polled: the request is over with its head.
        if body.is_end_stream()
            && let Some(g) = guard.take()
        {
            g.end();
        }
        Self {
            kind: BodyKind::Inner { body, guard },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: BodyKind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B, C> std::fmt::Debug for ResponseBody<B, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            BodyKind::Inner { guard, .. } => {
                if guard.is_some() {
                    "streaming (slot held)"
                } else {
                    "streaming"
                }
            }
            BodyKind::Full { .. } => "rejection",
        };
        f.debug_struct("ResponseBody")
            .field("state", &state)
            .finish()
    }
}

impl<B, C> Body for ResponseBody<B, C>
where
    B: Body<Data = Bytes>,
    C: Classify,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner { mut body, guard } => {
                let permit = guard.as_mut().map(|g| g.stream.permit_mut());
                let frame = ready!(poll_recording_panic(permit, || body
                    .as_mut()
                    .poll_frame(cx)));
                match &frame {
                    // End of stream: the request is over.
                    None => {
                        if let Some(g) = guard.take() {
                            g.end();
                        }
                    }
                    Some(Ok(f)) => {
                        if let Some(trailers) = f.trailers_ref()
                            && let Some(mut g) = guard.take()
                        {
                            if let Some(c) = &g.classifier {
                                let error = c.classify_trailers(trailers);
                                g.stream.permit_mut().set_error(error);
                            }
                            g.end();
                        } else if body.is_end_stream()
                            && let Some(g) = guard.take()
                        {
                            // The last frame: the server may not poll again.
                            g.end();
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(mut g) = guard.take() {
                            g.stream.permit_mut().set_error(true);
                            g.end();
                        }
                    }
                }
                Poll::Ready(frame)
            }
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { body, .. } => body.is_end_stream(),
            BodyKind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { body, .. } => body.size_hint(),
            BodyKind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
