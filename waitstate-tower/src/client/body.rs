//! The response body of [`ClientService`](super::ClientService).

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Response body of [`ClientService`](super::ClientService): the server's body, or
    /// nothing for a call answered locally.
    pub struct ClientBody<B> {
        #[pin]
        inner: Option<B>,
    }
}

impl<B> ClientBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self { inner: Some(body) }
    }

    pub(crate) fn empty() -> Self {
        Self { inner: None }
    }

    /// The server's body; `None` for a call answered locally.
    pub fn into_inner(self) -> Option<B> {
        self.inner
    }
}

impl<B> std::fmt::Debug for ClientBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.inner.is_some() {
            "server"
        } else {
            "local"
        };
        f.debug_struct("ClientBody").field("from", &state).finish()
    }
}

impl<B: Body> Body for ClientBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().inner.as_pin_mut() {
            Some(body) => body.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
