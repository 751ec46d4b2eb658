//! How a rejection becomes a response: 429 + `Retry-After` + JSON for HTTP, a gRPC status
//! for gRPC. Replaceable with [`GateLayer::with_rejection`](crate::GateLayer::with_rejection).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use waitstate_core::Rejection;
use waitstate_core::adapter;

/// What a rejection builder knows of the rejected request.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RejectionContext<'a> {
    /// Why, which tag, which priority, when to retry.
    pub rejection: &'a Rejection,
    /// The request was gRPC (`content-type: application/grpc*`): answer with a gRPC status.
    pub grpc: bool,
}

impl<'a> RejectionContext<'a> {
    /// The context of a rejection, for calling a [`MakeRejection`] outside the gate (an
    /// adapter's `IntoResponse`, a handler that admits a second operation itself).
    pub fn new(rejection: &'a Rejection, grpc: bool) -> Self {
        Self { rejection, grpc }
    }
}

/// Builds the response for a rejected request.
///
/// Closures `Fn(&RejectionContext<'_>) -> Response<Bytes>` are builders too. Whatever the
/// builder returns, the gate puts the [`Rejection`] in the response's extensions.
pub trait MakeRejection {
    /// The response for this rejection.
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> Response<Bytes>;
}

impl<F> MakeRejection for F
where
    F: Fn(&RejectionContext<'_>) -> Response<Bytes>,
{
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> Response<Bytes> {
        self(ctx)
    }
}

/// The default answer, the same in every adapter (`waitstate-tower`, `waitstate-axum`,
/// `waitstate-actix`): `waitstate-core`'s rendering, [`adapter::render`], moved into this
/// crate's response type. Its docs say what each status, header field and body holds: a
/// 429 with `Retry-After` and the JSON deny body ([`Rejection::deny_body`]) for HTTP, a
/// gRPC status ([`Rejection::grpc_code`]) for gRPC requests.
///
/// The one setting is the status of a `kill_signal` rejection
/// ([`DefaultRejection::kill_signal_status`]).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct DefaultRejection {
    kill_signal_status: StatusCode,
}

impl Default for DefaultRejection {
    fn default() -> Self {
        Self {
            kill_signal_status: StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl DefaultRejection {
    /// Answer `kill_signal` with this status instead of 429 (for example 503).
    #[must_use]
    pub fn kill_signal_status(mut self, status: StatusCode) -> Self {
        self.kill_signal_status = status;
        self
    }
}

impl MakeRejection for DefaultRejection {
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> Response<Bytes> {
        to_response(adapter::render(
            ctx.rejection,
            ctx.grpc,
            self.kill_signal_status.as_u16(),
        ))
    }
}

/// A gRPC trailers-only response for a rejection, as tonic's `Status::into_http` builds
/// one: the gRPC answer of [`adapter::render`].
pub fn grpc_response(r: &Rejection) -> Response<Bytes> {
    to_response(adapter::render(r, true, 429))
}

fn to_response(rendered: adapter::Rendered) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(rendered.body));
    *res.status_mut() =
        StatusCode::from_u16(rendered.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let h = res.headers_mut();
    for (name, value) in rendered.headers {
        // The core's renderings are always valid header values; one that were not would be
        // left out rather than fail the response. Static values cost no allocation.
        let value = match value {
            std::borrow::Cow::Borrowed(s) => Ok(HeaderValue::from_static(s)),
            std::borrow::Cow::Owned(s) => HeaderValue::try_from(s),
        };
        if let Ok(v) = value {
            h.insert(name, v);
        }
    }
    res
}
