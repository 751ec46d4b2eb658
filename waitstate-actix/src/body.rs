//! The response body of [`Gate`](crate::Gate).

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;
use pin_project_lite::pin_project;
use waitstate_core::Permit;
use waitstate_core::adapter::{StreamGuard, poll_recording_panic};

pin_project! {
    /// Response body of the [`Gate`](crate::Gate) middleware: the inner body, which holds
    /// the request's in-flight slot until its end of stream, an error, or its drop,
    /// whichever comes first; or a rejection's body.
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Inner {
            #[pin]
            body: B,
            guard: Option<StreamGuard>,
        },
        Rejected {
            body: BoxBody,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B, permit: Option<Permit>) -> Self
    where
        B: MessageBody,
    {
        let mut guard = permit.map(StreamGuard::new);
        // An empty body may never be polled: the request is over with its head.
        if matches!(body.size(), BodySize::None | BodySize::Sized(0))
            && let Some(g) = guard.take()
        {
            g.end();
        }
        Self {
            kind: BodyKind::Inner { body, guard },
        }
    }

    pub(crate) fn rejected(body: BoxBody) -> Self {
        Self {
            kind: BodyKind::Rejected { body },
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            BodyKind::Inner { guard: Some(_), .. } => "streaming (slot held)",
            BodyKind::Inner { .. } => "streaming",
            BodyKind::Rejected { .. } => "rejection",
        };
        f.debug_struct("ResponseBody")
            .field("state", &state)
            .finish()
    }
}

impl<B: MessageBody> MessageBody for ResponseBody<B> {
    type Error = Box<dyn StdError>;

    fn size(&self) -> BodySize {
        match &self.kind {
            BodyKind::Inner { body, .. } => body.size(),
            BodyKind::Rejected { body } => body.size(),
        }
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner { body, guard } => {
                let permit = guard.as_mut().map(StreamGuard::permit_mut);
                let item = ready!(poll_recording_panic(permit, || body.poll_next(cx)));
                match &item {
                    // End of stream: the request is over.
                    None => {
                        if let Some(g) = guard.take() {
                            g.end();
                        }
                    }
                    Some(Err(_)) => {
                        if let Some(mut g) = guard.take() {
                            g.permit_mut().set_error(true);
                            g.end();
                        }
                    }
                    Some(Ok(_)) => {}
                }
                Poll::Ready(item.map(|r| r.map_err(Into::into)))
            }
            BodyProj::Rejected { body } => Pin::new(body).poll_next(cx),
        }
    }
}
