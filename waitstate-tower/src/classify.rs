//! Whether a response counts as an error for the rules' `error_rate`.

use http::{HeaderMap, StatusCode};
use waitstate_core::adapter;

/// What the classifier can tell from the response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backend did its job.
    Success,
    /// The backend is in trouble (a 5xx, a gRPC status that means server trouble).
    Error,
    /// Not known until the trailers (a streaming gRPC response).
    AwaitTrailers,
}

/// Classifies a response as success or error, for the rules' `error_rate`.
///
/// Closures `Fn(StatusCode, &HeaderMap) -> bool` (true for an error) are classifiers too.
pub trait Classify {
    /// From the response's status and headers.
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Outcome;

    /// From the trailers, when [`Classify::classify`] said [`Outcome::AwaitTrailers`]:
    /// `true` for an error. The default reads `grpc-status` as [`DefaultClassifier`] does.
    fn classify_trailers(&self, trailers: &HeaderMap) -> bool {
        grpc_error(trailers).unwrap_or(false)
    }
}

impl<F> Classify for F
where
    F: Fn(StatusCode, &HeaderMap) -> bool,
{
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        if self(status, headers) {
            Outcome::Error
        } else {
            Outcome::Success
        }
    }
}

/// 5xx responses are errors, 4xx are not (the client's fault). gRPC: the statuses that mean
/// server trouble are errors (`UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNAVAILABLE`,
/// `DATA_LOSS`), read from the headers of a trailers-only response or from the trailers.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct DefaultClassifier;

impl Classify for DefaultClassifier {
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        if status.is_server_error() {
            return Outcome::Error;
        }
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| adapter::is_grpc_content_type(v.as_bytes()));
        if !grpc {
            return Outcome::Success;
        }
        match grpc_error(headers) {
            Some(true) => Outcome::Error,
            Some(false) => Outcome::Success,
            None => Outcome::AwaitTrailers,
        }
    }
}

/// `Some(is_error)` when a `grpc-status` is present.
fn grpc_error(headers: &HeaderMap) -> Option<bool> {
    adapter::grpc_status_is_error(headers.get("grpc-status")?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(status: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        if let Some(s) = status {
            h.insert("grpc-status", s.parse().unwrap());
        }
        h
    }

    #[test]
    fn http_statuses() {
        let c = DefaultClassifier;
        assert_eq!(
            c.classify(StatusCode::OK, &HeaderMap::new()),
            Outcome::Success
        );
        assert_eq!(
            c.classify(StatusCode::NOT_FOUND, &HeaderMap::new()),
            Outcome::Success
        );
        assert_eq!(
            c.classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()),
            Outcome::Success
        );
        assert_eq!(
            c.classify(StatusCode::BAD_GATEWAY, &HeaderMap::new()),
            Outcome::Error
        );
    }

    #[test]
    fn grpc_statuses() {
        let c = DefaultClassifier;
        assert_eq!(
            c.classify(StatusCode::OK, &grpc(None)),
            Outcome::AwaitTrailers
        );
        assert_eq!(
            c.classify(StatusCode::OK, &grpc(Some("0"))),
            Outcome::Success
        );
        assert_eq!(
            c.classify(StatusCode::OK, &grpc(Some("5"))),
            Outcome::Success
        );
        assert_eq!(
            c.classify(StatusCode::OK, &grpc(Some("14"))),
            Outcome::Error
        );
        assert!(c.classify_trailers(&grpc(Some("13"))));
        assert!(!c.classify_trailers(&grpc(Some("3"))));
        assert!(!c.classify_trailers(&grpc(Some("garbage"))));
    }

    #[test]
    fn closures_classify() {
        let only_503 = |s: StatusCode, _: &HeaderMap| s == StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            only_503.classify(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new()),
            Outcome::Success
        );
        assert_eq!(
            only_503.classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()),
            Outcome::Error
        );
    }
}
