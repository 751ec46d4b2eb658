//! Whether a response counts as an error for the rules' `error_rate`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use waitstate_core::adapter;

/// Classifies a response as success or error, for the rules' `error_rate`.
///
/// Closures `Fn(StatusCode, &HeaderMap) -> bool` (true for an error) are classifiers too,
/// the same shape as `waitstate-tower`'s. actix-web has no response trailers, so the
/// outcome is known from the head.
pub trait Classify {
    /// `true` if a response with this status and these headers is an error.
    fn is_error(&self, status: StatusCode, headers: &HeaderMap) -> bool;
}

impl<F> Classify for F
where
    F: Fn(StatusCode, &HeaderMap) -> bool,
{
    fn is_error(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        self(status, headers)
    }
}

/// 5xx responses are errors, 4xx are not (the client's fault). A gRPC response
/// (`content-type: application/grpc*`) whose `grpc-status` header means server trouble
/// (`UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`) is an error too.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn is_error(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        if status.is_server_error() {
            return true;
        }
        let grpc = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| adapter::is_grpc_content_type(v.as_bytes()));
        grpc && headers
            .get("grpc-status")
            .and_then(|v| adapter::grpc_status_is_error(v.as_bytes()))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn grpc(status: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(
            header::HeaderName::from_static("grpc-status"),
            HeaderValue::from_static(status),
        );
        h
    }

    #[test]
    fn five_hundreds_are_errors_four_hundreds_are_not() {
        let c = DefaultClassifier;
        let none = HeaderMap::new();
        assert!(!c.is_error(StatusCode::OK, &none));
        assert!(!c.is_error(StatusCode::NOT_FOUND, &none));
        assert!(!c.is_error(StatusCode::TOO_MANY_REQUESTS, &none));
        assert!(c.is_error(StatusCode::BAD_GATEWAY, &none));
    }

    #[test]
    fn grpc_status_in_headers() {
        let c = DefaultClassifier;
        assert!(c.is_error(StatusCode::OK, &grpc("14")));
        assert!(!c.is_error(StatusCode::OK, &grpc("5")));
        assert!(!c.is_error(StatusCode::OK, &grpc("garbage")));
    }

    #[test]
    fn closures_classify() {
        let only_503 = |s: StatusCode, _: &HeaderMap| s == StatusCode::SERVICE_UNAVAILABLE;
        assert!(!only_503.is_error(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new()));
        assert!(only_503.is_error(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()));
    }
}
