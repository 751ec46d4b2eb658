//! How a rejection becomes a response: 429 + `Retry-After` + JSON for HTTP, a gRPC status
//! for gRPC. Replaceable with [`Gate::with_rejection`](crate::Gate::with_rejection).

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
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
    /// The rejected request (headers, app data), for content negotiation and the like.
    pub request: &'a HttpRequest,
}

/// Builds the response for a rejected request.
///
/// Closures `Fn(&RejectionContext<'_>) -> HttpResponse` are builders too. Whatever the
/// builder returns, the gate puts the [`Rejection`] in the response's extensions.
///
/// ```
/// use actix_web::HttpResponse;
/// use waitstate_actix::{Gate, HeaderTagger, RejectionContext, WaitState};
///
/// # fn gate(ws: WaitState) {
/// let gate = Gate::new(ws, HeaderTagger::new()).with_rejection(|ctx: &RejectionContext<'_>| {
///     HttpResponse::ServiceUnavailable().body(format!("busy, retry in {}s", ctx.rejection.retry_after_secs()))
/// });
/// # let _ = gate; }
/// ```
pub trait MakeRejection {
    /// The response for this rejection.
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> HttpResponse;
}

impl<F> MakeRejection for F
where
    F: Fn(&RejectionContext<'_>) -> HttpResponse,
{
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> HttpResponse {
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
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> HttpResponse {
        default_response(ctx.rejection, ctx.grpc, self.kill_signal_status)
    }
}

/// A gRPC trailers-only response for a rejection, as tonic's `Status::into_http` builds
/// one: the gRPC answer of [`adapter::render`].
pub fn grpc_response(r: &Rejection) -> HttpResponse {
    default_response(r, true, StatusCode::TOO_MANY_REQUESTS)
}

/// [`adapter::render`]'s answer, built in place: the fields go straight into the response's
/// header map (actix keeps response heads in a pool, with their maps), the body is
/// pre-rendered ([`adapter::render_body`]).
pub(crate) fn default_response(
    r: &Rejection,
    grpc: bool,
    kill_signal_status: StatusCode,
) -> HttpResponse {
    let body = BoxBody::new(adapter::render_body(r, grpc));
    let mut res = HttpResponse::with_body(StatusCode::TOO_MANY_REQUESTS, body);
    let headers = res.headers_mut();
    let status = adapter::render_head(r, grpc, kill_signal_status.as_u16(), |name, value| {
        // The core's renderings are always valid header values; one that were not would be
        // left out rather than fail the response.
        let value = match value {
            std::borrow::Cow::Borrowed(s) => Ok(HeaderValue::from_static(s)),
            std::borrow::Cow::Owned(s) => HeaderValue::try_from(s),
        };
        if let Ok(v) = value {
            headers.insert(HeaderName::from_static(name), v);
        }
    });
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    res
}
