//! The HTTP surface: every route, and the small helpers they share.
//!
//! | route | for | answer |
//! |---|---|---|
//! | `POST /gate` | v1 SDKs (`agent_url`) | `200 {"allowed","reason"}` (v1 reason names), `Retry-After` when refused |
//! | `POST /report-latency`, `/report-error`, `/report-metric` | v1 SDKs | `204` |
//! | `POST /v1/admit` | clients that want the agent to measure | `200 {"token",...}` or `429` + `Retry-After` |
//! | `POST /v1/finish` | the same | `204`, or `404` for a token unknown or expired |
//! | `ANY /authz`, `/authz/{*path}` | nginx `auth_request`, Envoy `ext_authz` | `200` or `429` + `Retry-After` |
//! | `POST /graphql/coprocessor` | Apollo Router coprocessor | the router's JSON protocol |
//! | `GET /healthz` | probes | `200 ok` |
//! | `GET /v1/status` | people | tokens, in flight, the learned limit, body memory reserved |
//!
//! Bad input is a `4xx` with `{"error": ..., "message": ...}`, never a panic.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use waitstate_core::{Reason, Rejection};

use crate::agent::Agent;

pub(crate) fn router(agent: Agent) -> Router {
    let limit = agent.inner.settings.max_body_bytes;
    let budget = BodyBudget::new(agent.inner.settings.max_body_memory, limit);
    Router::new()
        .route("/gate", post(crate::v1::gate))
        .route("/report-latency", post(crate::v1::report_latency))
        .route("/report-error", post(crate::v1::report_error))
        .route("/report-metric", post(crate::v1::report_metric))
        .route("/v1/admit", post(crate::tokens_api::admit))
        .route("/v1/finish", post(crate::tokens_api::finish))
        .route("/authz", any(crate::authz::authz))
        .route("/authz/{*path}", any(crate::authz::authz))
        .route("/graphql/coprocessor", post(crate::graphql::coprocessor))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/status", {
            let budget = budget.clone();
            get(move |state| status(state, budget))
        })
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |req, next| {
            let budget = budget.clone();
            async move { budget.run(req, next).await }
        }))
        .with_state(agent)
}

/// The memory that the request bodies being read at once may hold, all connections
/// together (`max_body_memory`), counted in KiB by a semaphore. A request with a body
/// reserves its size (its `content-length`, or `max_body_bytes` when it sends none) before
/// its handler reads it, and gives it back when the answer is ready; one that finds no
/// room is answered `503` at once, before a byte of its body is read.
#[derive(Clone)]
struct BodyBudget {
    kib: std::sync::Arc<tokio::sync::Semaphore>,
    total_kib: usize,
    max_body: u64,
}

impl BodyBudget {
    fn new(max_memory: usize, max_body: usize) -> Self {
        let kib = (max_memory / 1024).min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            kib: std::sync::Arc::new(tokio::sync::Semaphore::new(kib)),
            total_kib: kib,
            max_body: max_body as u64,
        }
    }

    async fn run(&self, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
        let headers = req.headers();
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let has_body = match declared {
            Some(n) => n > 0,
            None => headers.contains_key(header::TRANSFER_ENCODING),
        };
        if !has_body {
            return next.run(req).await;
        }
        // A body past `max_body_bytes` is refused (413) after reading at most that much.
        let bytes = declared.map_or(self.max_body, |n| n.min(self.max_body));
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let Ok(_reserved) = self.kib.clone().try_acquire_many_owned(kib) else {
            let mut busy = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many request bodies are being read at once (max_body_memory)",
            );
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return busy;
        };
        next.run(req).await
    }
}

async fn status(State(agent): State<Agent>, budget: BodyBudget) -> Response {
    let ws = agent.waitstate();
    let a = ws.admission();
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    let body = serde_json::json!({
        "tokens": agent.live_tokens(),
        "expiredTokens": agent.expired_tokens(),
        "pendingReports": agent.pending_reports(),
        "inFlight": a.in_flight,
        "limit": (a.limit != u64::MAX).then_some(a.limit),
        "adaptive": a.adaptive,
        "baselineMs": ms(a.baseline),
        "serviceTimeMs": ms(a.service_time),
        "bodyMemoryKib": {
            "reserved": budget.total_kib - budget.kib.available_permits(),
            "max": budget.total_kib,
        },
    });
    json(StatusCode::OK, body.to_string())
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `204 No Content`.
pub(crate) fn accepted() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A client error: `{"error": code, "message": ...}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message });
    json(status, body.to_string())
}

/// A request the agent cannot use: its status, a machine-readable code and a message.
#[derive(Debug)]
pub(crate) struct ClientError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ClientError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ClientError {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

/// A request's tag and weight: the body's, else the `x-waitstate-tag` /
/// `x-waitstate-weight` headers', else `__default__` and 1.
pub(crate) fn tag_and_weight<'a>(
    tag: Option<&'a str>,
    weight: Option<f64>,
    headers: &'a HeaderMap,
) -> Result<(&'a str, f64), ClientError> {
    let weight = match weight {
        Some(w) => w,
        None => header_weight(headers, "x-waitstate-weight")?.unwrap_or(1.0),
    };
    let tag = tag
        .or_else(|| header_str(headers, "x-waitstate-tag"))
        .unwrap_or("");
    Ok((tag, weight))
}

/// A JSON body, or the `400` that says what is wrong with it. An empty body reads as `{}`.
pub(crate) fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ClientError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ClientError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(text).map_err(|e| ClientError::bad_request(e.to_string()))
}

/// A header's value as text, if present and printable.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A weight from a header: `Err` when present but not a number.
pub(crate) fn header_weight(headers: &HeaderMap, name: &str) -> Result<Option<f64>, ClientError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map(Some)
            .ok_or_else(|| ClientError::bad_request("the weight header is not a number")),
    }
}

/// The v1 reason a v1 client understands for one of ours: the published SDKs read an
/// unknown reason as "refused, reason `allowed`", so ours map to the nearest v1 one: a
/// quota (`rate_limited`) to `over_weight`, overload shedding (`throttled`,
/// `priority_shed`, `concurrency_limited`) to `tag_blocked`.
pub(crate) fn v1_reason(reason: Reason) -> &'static str {
    match reason {
        Reason::KillSignal
        | Reason::GlobalBlock
        | Reason::TagBlocked
        | Reason::OverWeight
        | Reason::LeaseExpired => reason.as_str(),
        r if r.is_quota() => Reason::OverWeight.as_str(),
        _ => Reason::TagBlocked.as_str(),
    }
}

/// Add `Retry-After` (whole seconds, rounded up) for a rejection.
pub(crate) fn retry_after(response: &mut Response, rejection: &Rejection) {
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(rejection.retry_after_secs()),
    );
}

/// A JSON string literal.
pub(crate) fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// A weight that may be `null` in JSON: what a v1 SDK sends for NaN or an infinity (JSON
/// has neither), so `null` reads as NaN and is refused as `over_weight`. Use with
/// `#[serde(default)]`: a missing weight is `None`.
pub(crate) fn nullable_weight<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<f64>, D::Error> {
    Ok(Some(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN)))
}
