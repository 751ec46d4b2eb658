//! Extractors: what the gate decided for the request being handled.

use std::fmt;
use std::future::{Ready, ready};
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use waitstate_core::Tag;
use waitstate_core::tagger::Admission;

/// What the gate decided for this request: its tag, its weight, its cohort and, in dry
/// run, what enforcement would have done.
///
/// The [`Gate`](crate::Gate) puts an [`Admission`] in the request's extensions when it
/// lets a request through. Without a gate in front of the handler, or for an exempt
/// request (a health check the tagger exempts), there is none: `Admitted` then fails with
/// [`GateMissing`] (a 500), and `Option<Admitted>` is `None`.
///
/// ```
/// use actix_web::{HttpResponse, web};
/// use waitstate_actix::Admitted;
///
/// async fn handler(admission: Admitted) -> HttpResponse {
///     HttpResponse::Ok().body(format!("{} costs {}", admission.tag, admission.weight))
/// }
/// # let _ = web::get().to(handler);
/// ```
#[derive(Clone, Debug)]
pub struct Admitted(pub Admission);

impl Deref for Admitted {
    type Target = Admission;

    fn deref(&self) -> &Admission {
        &self.0
    }
}

impl FromRequest for Admitted {
    type Error = GateMissing;
    type Future = Ready<Result<Self, GateMissing>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            admission(req)
                .map(Self)
                .ok_or(GateMissing { what: "Admitted" }),
        )
    }
}

/// The tag the request counts under (its traffic class, with its priority). Under the
/// same rules as [`Admitted`].
#[derive(Clone, Debug)]
pub struct AdmittedTag(pub Tag);

impl Deref for AdmittedTag {
    type Target = Tag;

    fn deref(&self) -> &Tag {
        &self.0
    }
}

impl FromRequest for AdmittedTag {
    type Error = GateMissing;
    type Future = Ready<Result<Self, GateMissing>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(admission(req).map(|a| Self(a.tag)).ok_or(GateMissing {
            what: "AdmittedTag",
        }))
    }
}

fn admission(req: &HttpRequest) -> Option<Admission> {
    waitstate_core::tagger::current::found_or_current(req.extensions().get::<Admission>())
}

/// The error of [`Admitted`] and [`AdmittedTag`] when the request carries no admission: no
/// gate is in front of the handler (a server bug, hence `500 Internal Server Error`), or
/// the tagger exempted the request.
#[derive(Clone, Copy, Debug)]
pub struct GateMissing {
    what: &'static str,
}

impl fmt::Display for GateMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` found no WaitState admission: wrap the app or scope in `Gate` \
             (`App::wrap(Gate::new(...))`), or extract `Option<{}>` where requests may be \
             exempt",
            self.what, self.what
        )
    }
}

impl std::error::Error for GateMissing {}

impl ResponseError for GateMissing {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body(self.to_string())
    }
}
