//! `ResponseError` for rejections.

use std::fmt;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use waitstate_core::Rejection;

use crate::rejection::default_response;

/// A [`Rejection`] as an actix-web error: exactly what the gate sends by default (429 +
/// `Retry-After` + the JSON deny body, `RateLimit` fields for rate limits), rendered by
/// the same code ([`waitstate_core::adapter::render`]), with the [`Rejection`] in the response's
/// extensions.
///
/// For a handler that gates a second operation itself:
///
/// ```
/// use actix_web::{HttpResponse, web};
/// use waitstate_actix::{Rejected, WaitState};
///
/// async fn export(ws: web::Data<WaitState>) -> Result<HttpResponse, Rejected> {
///     let _permit = ws.admit("exports", 50.0)?; // held until the export is done
///     Ok(HttpResponse::Ok().body("exported"))
/// }
/// # let _ = web::post().to(export);
/// ```
///
/// It answers the HTTP way, with 429 for every reason (as the default gate does); for a
/// gRPC client, see [`grpc_response`](crate::grpc_response); for a gate configured
/// otherwise, render with its builder.
#[derive(Clone, Debug)]
pub struct Rejected(pub Rejection);

impl From<Rejection> for Rejected {
    fn from(rejection: Rejection) -> Self {
        Self(rejection)
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Rejected {}

impl ResponseError for Rejected {
    fn status_code(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = default_response(&self.0, false, StatusCode::TOO_MANY_REQUESTS);
        res.extensions_mut().insert(self.0.clone());
        res
    }
}
