//! What every HTTP adapter (`waitstate-tower`, `waitstate-axum`, `waitstate-actix`) shares,
//! framework-free: the gate step itself ([`gate`], feature `runtime`), the rendering of a
//! rejection as plain status, header fields and body ([`render`]), and the gRPC and dry-run
//! conventions. An adapter only moves these into its framework's types.

use crate::decision::{Reason, Rejection};

/// The response header that marks, in dry run, a response that would have been rejected:
/// `x-waitstate-dry-run: <reason>`.
pub const DRY_RUN_HEADER: &str = "x-waitstate-dry-run";

/// Whether a `content-type` value is gRPC's (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value.starts_with(b"application/grpc")
}

/// Whether a `grpc-status` value means server trouble, the outcome the rules count as an
/// error: `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4), `INTERNAL` (13), `UNAVAILABLE` (14),
/// `DATA_LOSS` (15). `None` when the value is not a status code.
pub fn grpc_status_is_error(value: &[u8]) -> Option<bool> {
    let code: u32 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    Some(matches!(code, 2 | 4 | 13 | 14 | 15))
}

/// A rejection as an HTTP answer, before it becomes a framework's response type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rendered {
    /// The status code.
    pub status: u16,
    /// Header fields, names in lower case.
    pub headers: Vec<(&'static str, String)>,
    /// The body (empty for gRPC: a trailers-only response).
    pub body: String,
}

/// The default answer to a rejection, the same in every adapter:
///
/// - HTTP: `429` (or `kill_signal_status` for `kill_signal`), `Retry-After` in whole seconds
///   rounded up, `RateLimit-Policy` and `RateLimit` when a rate limit applies, and the
///   WaitState SDKs' JSON deny body, extended
///   (`{"error":"rate_limited","reason":"tag_blocked","retryAfter":2,"tag":"free"}`).
/// - gRPC (`grpc = true`): HTTP 200, `grpc-status` `RESOURCE_EXHAUSTED` (8) for quota reasons,
///   `UNAVAILABLE` (14) for overload shedding, a percent-encoded `grpc-message` and a
///   `grpc-retry-pushback-ms` hint, as tonic's `Status::into_http` answers.
pub fn render(r: &Rejection, grpc: bool, kill_signal_status: u16) -> Rendered {
    if grpc {
        return Rendered {
            status: 200,
            headers: vec![
                ("content-type", "application/grpc".to_owned()),
                ("grpc-status", r.grpc_code().to_string()),
                ("grpc-message", r.grpc_message()),
                ("grpc-retry-pushback-ms", r.retry_after_ms().to_string()),
            ],
            body: String::new(),
        };
    }
    let status = if r.reason() == Reason::KillSignal {
        kill_signal_status
    } else {
        429
    };
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("retry-after", r.retry_after_secs().to_string()),
    ];
    if let Some((policy, state)) = r.rate_limit_fields() {
        headers.push(("ratelimit-policy", policy));
        headers.push(("ratelimit", state));
    }
    Rendered {
        status,
        headers,
        body: r.deny_body(),
    }
}

#[cfg(feature = "runtime")]
pub use self::gate_step::{Verdict, gate};

#[cfg(feature = "runtime")]
mod gate_step {
    use crate::decision::Rejection;
    use crate::runtime::{Permit, WaitState};
    use crate::tagger::{Admission, RequestView, Tagger};

    /// What the gate decided for one request. The three cases are all there can be.
    #[derive(Debug)]
    pub enum Verdict {
        /// The tagger marked it exempt: pass it on, ungated and uncounted.
        Exempt,
        /// Admitted: hold the permit until the response body ends; put the admission in the
        /// request's extensions.
        Admitted {
            /// The in-flight slot; dropping it records latency and outcome.
            permit: Permit,
            /// Tag, weight and dry-run verdict, for handlers.
            admission: Admission,
        },
        /// Turned away.
        Rejected(Rejection),
    }

    /// The gate step every adapter runs in `call`: tag the request, skip it if exempt, else
    /// ask the engine.
    pub fn gate<T: Tagger + ?Sized>(ws: &WaitState, tagger: &T, req: &dyn RequestView) -> Verdict {
        let tagging = tagger.tag(req);
        if tagging.exempt {
            return Verdict::Exempt;
        }
        match ws.admit_demand(&tagging.demand()) {
            Ok(permit) => {
                let admission = Admission::new(permit.tag(), tagging.weight, permit.would_reject());
                Verdict::Admitted { permit, admission }
            }
            Err(rejection) => Verdict::Rejected(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_conventions() {
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert_eq!(grpc_status_is_error(b"14"), Some(true));
        assert_eq!(grpc_status_is_error(b" 0 "), Some(false));
        assert_eq!(grpc_status_is_error(b"5"), Some(false));
        assert_eq!(grpc_status_is_error(b"x"), None);
    }
}
