//! Extractors: what the gate decided for the request being handled.

use std::convert::Infallible;
use std::fmt;
use std::ops::Deref;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use waitstate_core::Tag;
use waitstate_core::tagger::Admission;

/// What the gate decided for this request: its tag, its weight and, in dry run, what
/// enforcement would have done.
///
/// The gate ([`GateLayer`](crate::GateLayer), with `Router::layer` or `route_layer`) puts
/// an [`Admission`] in the request's extensions when it lets a request through. Without a
/// gate in front of the handler, or for an exempt request (a health check the tagger
/// exempts), there is none: `Admitted` then rejects with [`GateMissing`] (a 500, as a
/// missing `Extension` does), and `Option<Admitted>` is `None`.
///
/// ```
/// use waitstate_axum::Admitted;
///
/// async fn handler(Admitted(admission): Admitted) -> String {
///     format!("{} costs {}", admission.tag, admission.weight)
/// }
/// # let _: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
/// ```
#[derive(Clone, Debug)]
pub struct Admitted(pub Admission);

impl Deref for Admitted {
    type Target = Admission;

    fn deref(&self) -> &Admission {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admitted {
    type Rejection = GateMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, GateMissing> {
        admission(parts)
            .map(Self)
            .ok_or(GateMissing { what: "Admitted" })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Admitted {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Infallible> {
        Ok(admission(parts).map(Self))
    }
}

/// The tag the request counts under (its traffic class, with its priority).
///
/// Under the same rules as [`Admitted`]: without a gate in front, or for an exempt
/// request, it rejects with [`GateMissing`]; `Option<AdmittedTag>` is `None`. Tags past
/// the engine's cap read as the overflow tag.
///
/// ```
/// use waitstate_axum::AdmittedTag;
///
/// async fn handler(AdmittedTag(tag): AdmittedTag) -> String {
///     format!("tier {tag}, priority {}", tag.priority())
/// }
/// # let _: axum::Router = axum::Router::new().route("/", axum::routing::get(handler));
/// ```
#[derive(Clone, Debug)]
pub struct AdmittedTag(pub Tag);

impl Deref for AdmittedTag {
    type Target = Tag;

    fn deref(&self) -> &Tag {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdmittedTag {
    type Rejection = GateMissing;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, GateMissing> {
        admission(parts).map(|a| Self(a.tag)).ok_or(GateMissing {
            what: "AdmittedTag",
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AdmittedTag {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Infallible> {
        Ok(admission(parts).map(|a| Self(a.tag)))
    }
}

fn admission(parts: &Parts) -> Option<Admission> {
    waitstate_core::tagger::current::found_or_current(parts.extensions.get::<Admission>())
}

/// The rejection of [`Admitted`] and [`AdmittedTag`] when the request carries no
/// admission: no gate is in front of the handler (a server bug, hence
/// `500 Internal Server Error`), or the tagger exempted the request.
#[derive(Clone, Copy, Debug)]
pub struct GateMissing {
    what: &'static str,
}

impl fmt::Display for GateMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` found no WaitState admission: put `GateLayer` in front of this handler \
             (`Router::layer` or `route_layer`), or extract `Option<{}>` where requests may \
             be exempt",
            self.what, self.what
        )
    }
}

impl std::error::Error for GateMissing {}

impl IntoResponse for GateMissing {
    fn into_response(self) -> Response {
        let mut res = self.to_string().into_response();
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}
