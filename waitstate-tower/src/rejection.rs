//! How a rejection becomes a response: 429 + `Retry-After` + JSON for HTTP, a gRPC status
//! for gRPC. Replaceable with [`GateLayer::with_rejection`](crate::GateLayer::with_rejection).

use std::cell::Cell;
use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use waitstate_core::Rejection;
use waitstate_core::adapter;

/// What a rejection builder knows of the rejected request.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct RejectionContext<'a> {
    /// Why, which tag, which priority, when to retry.
    pub rejection: &'a Rejection,
    /// The request was gRPC (`content-type: application/grpc*`): answer with a gRPC status.
    pub grpc: bool,
    /// The rejected request's header map, emptied, for [`RejectionContext::take_headers`].
    spare_headers: Option<&'a Cell<Option<HeaderMap>>>,
}

impl<'a> RejectionContext<'a> {
    /// The context of a rejection, for calling a [`MakeRejection`] outside the gate (an
    /// adapter's `IntoResponse`, a handler that admits a second operation itself).
    pub fn new(rejection: &'a Rejection, grpc: bool) -> Self {
        Self {
            rejection,
            grpc,
            spare_headers: None,
        }
    }

    /// The same, with the rejected request's header map (emptied) for
    /// [`RejectionContext::take_headers`] to hand out.
    pub(crate) fn with_spare_headers(mut self, spare: &'a Cell<Option<HeaderMap>>) -> Self {
        self.spare_headers = Some(spare);
        self
    }

    /// An empty header map for the response. In the gate, the first call gets the rejected
    /// request's own map, emptied: it keeps its capacity, so the response's few fields cost
    /// no allocation (a new map allocates twice on its first insert). Later calls, and calls
    /// outside the gate, get a new map.
    pub fn take_headers(&self) -> HeaderMap {
        self.spare_headers.and_then(Cell::take).unwrap_or_default()
    }
}

impl fmt::Debug for RejectionContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectionContext")
            .field("rejection", &self.rejection)
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
    }
}

/// Builds the response for a rejected request.
///
/// Closures `Fn(&RejectionContext<'_>) -> Response<Bytes>` are builders too. Whatever the
/// builder returns, the gate puts the [`Rejection`] in the response's extensions (when the
/// builder left them empty, in the rejected request's extensions map, emptied: no new map
/// to allocate). A builder that wants its headers for free builds them in
/// [`RejectionContext::take_headers`].
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
        let (r, grpc) = (ctx.rejection, ctx.grpc);
        // Built in place, without the core's list of fields: the header map is the rejected
        // request's ([`RejectionContext::take_headers`]), the body a pre-rendered one
        // ([`adapter::render_body`]).
        let mut headers = ctx.take_headers();
        let status =
            adapter::render_head(r, grpc, self.kill_signal_status.as_u16(), |name, value| {
                // The core's renderings are always valid header values; one that were not
                // would be left out rather than fail the response. Static values cost no
                // allocation.
                let value = match value {
                    std::borrow::Cow::Borrowed(s) => Ok(HeaderValue::from_static(s)),
                    std::borrow::Cow::Owned(s) => HeaderValue::try_from(s),
                };
                if let Ok(v) = value {
                    headers.insert(name, v);
                }
            });
        let mut res = Response::new(adapter::render_body(r, grpc));
        *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        *res.headers_mut() = headers;
        res
    }
}

/// A gRPC trailers-only response for a rejection, as tonic's `Status::into_http` builds
/// one: the gRPC answer of [`adapter::render`].
pub fn grpc_response(r: &Rejection) -> Response<Bytes> {
    DefaultRejection::default().make_rejection(&RejectionContext::new(r, true))
}
