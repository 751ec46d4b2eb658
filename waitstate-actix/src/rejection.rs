//! How a rejection becomes a response: 429 + `Retry-After` + JSON for HTTP, a gRPC status
//! for gRPC. Replaceable with [`Gate::with_rejection`](crate::Gate::with_rejection).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use waitstate_core::{Reason, Rejection};

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

/// The default answer, the same as `waitstate-tower`'s (both render through
/// `waitstate-core`'s [`Rejection`] methods).
///
/// - HTTP: `429 Too Many Requests` (or the configured status for `kill_signal`), a
///   `Retry-After` in whole seconds rounded up, `RateLimit-Policy` and `RateLimit` fields
///   when a rate limit applies, and the WaitState SDKs' JSON deny body, extended:
///   `{"error":"rate_limited","reason":"tag_blocked","tag":"free","retryAfter":2}`.
/// - gRPC: HTTP 200 with `grpc-status` `RESOURCE_EXHAUSTED` (8) for quota reasons
///   (`rate_limited`, `over_weight`), `UNAVAILABLE` (14) for overload shedding, a
///   `grpc-message` and a `grpc-retry-pushback-ms` hint.
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

/// Inserts a header whose value was computed; a value that is not a valid header (which
/// the core's renderings never produce) is left out rather than failing the response.
fn put(res: &mut HttpResponse, name: HeaderName, value: impl TryInto<HeaderValue>) {
    if let Ok(v) = value.try_into() {
        res.headers_mut().insert(name, v);
    }
}

impl MakeRejection for DefaultRejection {
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> HttpResponse {
        let r = ctx.rejection;
        if ctx.grpc {
            return grpc_response(r);
        }
        let status = match r.reason() {
            Reason::KillSignal => self.kill_signal_status,
            _ => StatusCode::TOO_MANY_REQUESTS,
        };
        let mut res = HttpResponse::build(status).body(r.deny_body());
        put(
            &mut res,
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        put(&mut res, header::RETRY_AFTER, r.retry_after_secs());
        if let Some((policy, state)) = r.rate_limit_fields() {
            put(
                &mut res,
                HeaderName::from_static("ratelimit-policy"),
                policy,
            );
            put(&mut res, HeaderName::from_static("ratelimit"), state);
        }
        res
    }
}

/// A gRPC trailers-only response for a rejection (HTTP 200, `grpc-status`, `grpc-message`,
/// `grpc-retry-pushback-ms`), as tonic's `Status::into_http` builds one.
pub fn grpc_response(r: &Rejection) -> HttpResponse {
    let mut res = HttpResponse::Ok().finish();
    put(
        &mut res,
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    put(
        &mut res,
        HeaderName::from_static("grpc-status"),
        u16::from(r.grpc_code()),
    );
    put(
        &mut res,
        HeaderName::from_static("grpc-message"),
        r.grpc_message(),
    );
    put(
        &mut res,
        HeaderName::from_static("grpc-retry-pushback-ms"),
        r.retry_after_ms(),
    );
    res
}
