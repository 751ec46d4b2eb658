//! How a rejection becomes a response: 429 + `Retry-After` + JSON for HTTP, a gRPC status
//! for gRPC. Replaceable with [`GateLayer::with_rejection`](crate::GateLayer::with_rejection).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use waitstate_core::{Reason, Rejection};

/// What a rejection builder knows of the rejected request.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RejectionContext<'a> {
    /// Why, which tag, which priority, when to retry.
    pub rejection: &'a Rejection,
    /// The request was gRPC (`content-type: application/grpc*`): answer with a gRPC status.
    pub grpc: bool,
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

/// The default answer.
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

/// gRPC status codes used for rejections.
pub mod grpc_code {
    /// `RESOURCE_EXHAUSTED`: a quota (rate limit, weight) was exceeded.
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    /// `UNAVAILABLE`: the service sheds load; retry later.
    pub const UNAVAILABLE: u8 = 14;
}

impl MakeRejection for DefaultRejection {
    fn make_rejection(&self, ctx: &RejectionContext<'_>) -> Response<Bytes> {
        let r = ctx.rejection;
        if ctx.grpc {
            return grpc_response(r);
        }
        let status = if r.reason() == Reason::KillSignal {
            self.kill_signal_status
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        let body = serde_json::json!({
            "error": "rate_limited",
            "reason": r.reason().as_str(),
            "tag": r.tag(),
            "retryAfter": r.retry_after_secs(),
        });
        let mut res = Response::new(Bytes::from(body.to_string()));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from(r.retry_after_secs()));
        if let Some(q) = r.quota() {
            // IETF draft-ietf-httpapi-ratelimit-headers: the policy is named after the tag.
            let name = sf_string(r.tag());
            let policy = format!("{name};q={};w=1", q.burst.round() as u64);
            let state = format!("{name};r=0;t={}", r.retry_after_secs());
            if let Ok(v) = HeaderValue::try_from(policy) {
                h.insert("ratelimit-policy", v);
            }
            if let Ok(v) = HeaderValue::try_from(state) {
                h.insert("ratelimit", v);
            }
        }
        res
    }
}

/// A gRPC trailers-only response for a rejection, as tonic's `Status::into_http` builds one.
pub fn grpc_response(r: &Rejection) -> Response<Bytes> {
    let code = if r.reason().is_quota() {
        grpc_code::RESOURCE_EXHAUSTED
    } else {
        grpc_code::UNAVAILABLE
    };
    let message = format!(
        "waitstate: {} for tag {}, retry after {}s",
        r.reason(),
        r.tag(),
        r.retry_after_secs()
    );
    let mut res = Response::new(Bytes::new());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::try_from(percent_encode(&message)) {
        h.insert("grpc-message", v);
    }
    let pushback = r.retry_after().as_millis().max(1).min(u128::from(u64::MAX)) as u64;
    h.insert("grpc-retry-pushback-ms", HeaderValue::from(pushback));
    res
}

/// gRPC's percent-encoding of `grpc-message`: every byte outside 0x20..=0x7E, and `%`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A structured-field string for the tag: quoted, with `\` and `"` escaped; a tag that is
/// not printable ASCII is named `"tag"`.
fn sf_string(tag: &str) -> String {
    if !tag.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return "\"tag\"".to_owned();
    }
    let mut out = String::with_capacity(tag.len() + 2);
    out.push('"');
    for c in tag.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_follows_grpc() {
        assert_eq!(percent_encode("a b%c"), "a b%25c");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn sf_strings_escape() {
        assert_eq!(sf_string("free"), "\"free\"");
        assert_eq!(sf_string("a\"b\\"), "\"a\\\"b\\\\\"");
        assert_eq!(sf_string("é"), "\"tag\"");
    }
}
