//! Why a request is refused: the caller's 4xx, and the reason `/metrics` counts it under.
//!
//! A [`Refusal`] is a response, not an error: every extractor and handler returns one, and
//! it carries itself in the response's extensions, where [`count_refusals`] (a response
//! mapper on the router) counts it. No handler counts by hand, and none can forget to.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::debug;

use crate::state::AppState;

/// A refused request. The body is `{"error":"<reason>"}`; a few refusals tell less than
/// they count (see [`Refusal::told`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401: no credentials, unknown key, bad or expired token.
    Unauthorized,
    /// 403: a good token for another org. Counted and told as `unauthorized`.
    WrongOrg,
    /// 401: a pulse whose signature does not match. Told as `unauthorized`, so an unknown
    /// key cannot be told from a wrong signature.
    BadSignature,
    /// 401: a pulse's timestamp is outside the skew window.
    StaleTimestamp,
    /// 409: a pulse already received.
    Replay,
    /// 400: a body or header that does not parse or holds bad names or numbers.
    Malformed,
    /// 429: the fleet's cap on sites or instances is reached.
    Full,
}

impl Refusal {
    /// The refusals `/metrics` counts, in its order; `COUNTED[i].slot() == i`.
    pub(crate) const COUNTED: [Self; 6] = [
        Self::Unauthorized,
        Self::BadSignature,
        Self::StaleTimestamp,
        Self::Replay,
        Self::Malformed,
        Self::Full,
    ];

    /// Its counter's index in [`Refusal::COUNTED`] order.
    pub(crate) const fn slot(self) -> usize {
        match self {
            Self::Unauthorized | Self::WrongOrg => 0,
            Self::BadSignature => 1,
            Self::StaleTimestamp => 2,
            Self::Replay => 3,
            Self::Malformed => 4,
            Self::Full => 5,
        }
    }

    /// The `reason` label it is counted under.
    pub(crate) const fn reason(self) -> &'static str {
        match self {
            Self::Unauthorized | Self::WrongOrg => "unauthorized",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::Replay => "replay",
            Self::Malformed => "malformed",
            Self::Full => "full",
        }
    }

    /// The status code.
    pub(crate) const fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::BadSignature | Self::StaleTimestamp => {
                StatusCode::UNAUTHORIZED
            }
            Self::WrongOrg => StatusCode::FORBIDDEN,
            Self::Replay => StatusCode::CONFLICT,
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::Full => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The body: what the caller is told.
    pub(crate) const fn told(self) -> &'static str {
        match self {
            Self::Unauthorized | Self::WrongOrg | Self::BadSignature => {
                r#"{"error":"unauthorized"}"#
            }
            Self::StaleTimestamp => r#"{"error":"stale_timestamp"}"#,
            Self::Replay => r#"{"error":"replay"}"#,
            Self::Malformed => r#"{"error":"malformed"}"#,
            Self::Full => r#"{"error":"full"}"#,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = json(self.status(), self.told());
        response.extensions_mut().insert(self);
        response
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

/// 500 `{"error":"internal"}`: not a refusal, nothing is counted.
pub(crate) fn internal() -> Response {
    json(StatusCode::INTERNAL_SERVER_ERROR, r#"{"error":"internal"}"#)
}

/// Count the [`Refusal`] a response carries, if any (the router maps every response
/// through this).
pub(crate) async fn count_refusals(State(state): State<AppState>, response: Response) -> Response {
    if let Some(refusal) = response.extensions().get::<Refusal>() {
        state.counters().refuse(*refusal);
        debug!(
            reason = refusal.reason(),
            status = response.status().as_u16(),
            "request refused"
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Refusal; 7] = [
        Refusal::Unauthorized,
        Refusal::WrongOrg,
        Refusal::BadSignature,
        Refusal::StaleTimestamp,
        Refusal::Replay,
        Refusal::Malformed,
        Refusal::Full,
    ];

    #[test]
    fn every_refusal_has_a_counter_slot_in_order() {
        for (i, r) in Refusal::COUNTED.iter().enumerate() {
            assert_eq!(r.slot(), i, "{r:?}");
        }
        for r in ALL {
            assert_eq!(Refusal::COUNTED[r.slot()].reason(), r.reason(), "{r:?}");
        }
    }

    #[test]
    fn bodies_and_statuses_are_the_v1_ones() {
        let told: Vec<_> = ALL
            .iter()
            .map(|r| (r.status().as_u16(), r.told()))
            .collect();
        assert_eq!(
            told,
            [
                (401, r#"{"error":"unauthorized"}"#),
                (403, r#"{"error":"unauthorized"}"#),
                (401, r#"{"error":"unauthorized"}"#),
                (401, r#"{"error":"stale_timestamp"}"#),
                (409, r#"{"error":"replay"}"#),
                (400, r#"{"error":"malformed"}"#),
                (429, r#"{"error":"full"}"#),
            ]
        );
        for r in ALL {
            if r != Refusal::BadSignature && r != Refusal::WrongOrg {
                assert_eq!(r.told(), format!(r#"{{"error":"{}"}}"#, r.reason()));
            }
        }
    }

    #[test]
    fn the_response_carries_the_refusal() {
        let response = Refusal::Replay.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            response.extensions().get::<Refusal>(),
            Some(&Refusal::Replay)
        );
    }
}
