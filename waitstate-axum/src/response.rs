//! `IntoResponse` for rejections.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use waitstate_core::Rejection;
use waitstate_tower::{DefaultRejection, MakeRejection, RejectionContext};

/// A [`Rejection`] as an axum response: exactly what the gate sends, because it is
/// rendered by the gate's own [`DefaultRejection`] (429 + `Retry-After` + the JSON deny
/// body, `RateLimit` fields for rate limits), with the [`Rejection`] in the response's
/// extensions.
///
/// For a handler that gates a second operation itself:
///
/// ```
/// use axum::extract::State;
/// use waitstate_axum::{Rejected, WaitState};
///
/// async fn export(State(ws): State<WaitState>) -> Result<&'static str, Rejected> {
///     let _permit = ws.admit("exports", 50.0)?; // held until the export is done
///     Ok("exported")
/// }
/// # let _: axum::Router<WaitState> = axum::Router::new().route("/export", axum::routing::post(export));
/// ```
///
/// It always answers the HTTP way; for a gRPC client, see
/// [`grpc_response`](waitstate_tower::grpc_response). To answer as a customized gate does
/// (say, 503 for `kill_signal`), use [`Rejected::into_response_with`].
#[derive(Clone, Debug)]
pub struct Rejected(pub Rejection);

impl Rejected {
    /// Render with `rejection` (the same builder given to
    /// [`GateLayer::with_rejection`](crate::GateLayer::with_rejection)) instead of the
    /// default one.
    pub fn into_response_with<R: MakeRejection + ?Sized>(self, rejection: &R) -> Response {
        let res = rejection.make_rejection(&RejectionContext::new(&self.0, false));
        let mut res = res.map(Body::from);
        res.extensions_mut().insert(self.0);
        res
    }
}

impl From<Rejection> for Rejected {
    fn from(rejection: Rejection) -> Self {
        Self(rejection)
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        self.into_response_with(&DefaultRejection::default())
    }
}
