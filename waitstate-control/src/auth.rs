//! Authentication as extractors, in the shape of axum's `examples/jwt`: a handler names what
//! it needs, and gets it only if the request proves it; otherwise the request is answered
//! with a [`Refusal`] and the handler never runs.
//!
//! | extractor | proves | refusals, in the order checked |
//! |---|---|---|
//! | [`SignedPulse`] | an HMAC-signed pulse, fresh and first seen | 413 (body cap), `unauthorized`, `bad_signature`, `malformed` (timestamp), `stale_timestamp`, `replay`, `malformed` (body) |
//! | [`Credentials`] | a publish key and its secret (`POST /v1/auth/token`) | 413 (body cap), `malformed`, `unauthorized` |
//! | [`Claims`] | a bearer token this control plane signed, unexpired, for a key still configured | `unauthorized` |
//! | [`Reader`] | nothing: who reads a policy (our extension headers) | none |
//! | [`MetricsScraper`] | `Bearer <server.metrics_token>`, when one is configured | `unauthorized` |
//!
//! Secrets are compared in constant time: the pulse signature by HMAC verification
//! ([`wire::verify`]), the token request's secret by [`same_secret`].

use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use waitstate_core::wire::{
    self, HEADER_ID, HEADER_INSTANCE, HEADER_SIGNATURE, HEADER_SITE, HEADER_TIMESTAMP, PulseBody,
    TokenRequest,
};

use crate::jwt::Claims;
use crate::refusal::Refusal;
use crate::state::AppState;

/// Why a request with a body was not taken: its body could not be read (axum's own answer,
/// 413 past the body cap), or it was refused.
#[derive(Debug)]
pub(crate) enum BodyRejection {
    /// The body could not be read: too large, or the connection failed.
    Body(BytesRejection),
    /// The request was read and refused.
    Refused(Refusal),
}

impl From<BytesRejection> for BodyRejection {
    fn from(e: BytesRejection) -> Self {
        Self::Body(e)
    }
}

impl From<Refusal> for BodyRejection {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Body(e) => e.into_response(),
            Self::Refused(r) => r.into_response(),
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Split off the headers and read the body (within the router's body cap).
async fn headers_and_body(
    req: Request,
    state: &AppState,
) -> Result<(HeaderMap, Bytes), BytesRejection> {
    let (mut parts, body) = req.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    let body = Bytes::from_request(Request::from_parts(parts, body), state).await?;
    Ok((headers, body))
}

/// Compare two secrets in constant time (whatever their lengths).
fn same_secret(a: &str, b: &str) -> bool {
    let a = Sha256::digest(a.as_bytes());
    let b = Sha256::digest(b.as_bytes());
    a.ct_eq(&b).into()
}

/// `POST /v1/pulse`: a pulse signed with a configured key's secret, its timestamp within the
/// skew window, not seen before.
#[derive(Debug)]
pub(crate) struct SignedPulse {
    /// The org of the key that signed it.
    pub(crate) org: String,
    /// The pulse.
    pub(crate) body: PulseBody,
    /// Its MAC (the decoded signature).
    pub(crate) mac: [u8; 32],
}

impl SignedPulse {
    /// Check a pulse's headers and body, in the order the table in the module docs gives.
    fn check(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Self, Refusal> {
        let config = state.config();
        let key = header_str(headers, HEADER_ID)
            .and_then(|id| config.key(id))
            .ok_or(Refusal::Unauthorized)?;
        let (Some(ts_text), Some(signature)) = (
            header_str(headers, HEADER_TIMESTAMP),
            header_str(headers, HEADER_SIGNATURE),
        ) else {
            return Err(Refusal::Unauthorized);
        };
        if !wire::verify(key.secret_key.as_bytes(), body, ts_text, signature) {
            return Err(Refusal::BadSignature);
        }
        // Verified, so it is 64 hex digits; the replay cache keys on the bytes, whatever
        // the letters' case.
        let mut mac = [0u8; 32];
        hex::decode_to_slice(signature, &mut mac).map_err(|_| Refusal::BadSignature)?;
        let ts = ts_text
            .trim()
            .parse::<u64>()
            .map_err(|_| Refusal::Malformed)?;
        let now_ms = state.wall_ms();
        let skew = u64::try_from(config.server.skew.as_millis()).unwrap_or(u64::MAX);
        if now_ms.abs_diff(ts) > skew {
            return Err(Refusal::StaleTimestamp);
        }
        if !state
            .replay()
            .first_sight(&mac, ts, now_ms.saturating_sub(skew))
        {
            return Err(Refusal::Replay);
        }
        let pulse = serde_json::from_slice::<PulseBody>(body).map_err(|_| Refusal::Malformed)?;
        Ok(Self {
            org: key.org_id.clone(),
            body: pulse,
            mac,
        })
    }
}

impl FromRequest<AppState> for SignedPulse {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (headers, body) = headers_and_body(req, state).await?;
        let pulse = Self::check(state, &headers, &body)?;
        // With replicas: a pulse another replica took is a replay too.
        if state.first_sight_shared(&pulse.mac).await == Some(false) {
            return Err(Refusal::Replay.into());
        }
        Ok(pulse)
    }
}

/// `POST /v1/auth/token`: a configured publish key and its secret (v1 sends the secret in
/// the body, so the control plane must be served over TLS in production).
#[derive(Debug)]
pub(crate) struct Credentials {
    /// The publish key.
    pub(crate) publish_key: String,
    /// Its org.
    pub(crate) org_id: String,
}

impl Credentials {
    fn check(state: &AppState, body: &[u8]) -> Result<Self, Refusal> {
        let req = serde_json::from_slice::<TokenRequest>(body).map_err(|_| Refusal::Malformed)?;
        let key = state.config().key(&req.publish_key);
        // Compare even when the key is unknown, so the time taken does not tell.
        let expected = key.map_or("\u{0}no key\u{0}", |k| k.secret_key.as_str());
        let matches = same_secret(expected, &req.secret_key);
        match key {
            Some(key) if matches => Ok(Self {
                publish_key: key.publish_key.clone(),
                org_id: key.org_id.clone(),
            }),
            _ => Err(Refusal::Unauthorized),
        }
    }
}

impl FromRequest<AppState> for Credentials {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state).await?;
        Ok(Self::check(state, &body)?)
    }
}

/// `Authorization: Bearer <token>` (or `bearer`): a token this control plane signed, not
/// expired, whose key is still configured for the same org.
impl FromRequestParts<AppState> for Claims {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        let bearer = header_str(&parts.headers, "authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(Refusal::Unauthorized)?;
        let claims = state
            .verify_token(bearer.trim())
            .ok_or(Refusal::Unauthorized)?;
        let still_valid = state
            .config()
            .key(&claims.sub)
            .is_some_and(|k| k.org_id == claims.org);
        if !still_valid {
            return Err(Refusal::Unauthorized);
        }
        Ok(claims)
    }
}

impl Claims {
    /// The token must be for `org`: another org's policy is forbidden (403).
    pub(crate) fn require_org(&self, org: &str) -> Result<(), Refusal> {
        if self.org == org {
            Ok(())
        } else {
            Err(Refusal::WrongOrg)
        }
    }
}

/// Who reads a policy: our extension headers `x-waitstate-site` and `x-waitstate-instance`,
/// so the answer is that instance's share of its site's fleet. v1 SDKs send neither: the
/// site is then `""` and the share an equal one.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// The site (`""` when not sent).
    pub(crate) site: String,
    /// The instance id.
    pub(crate) instance: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Reader {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Self {
            site: header_str(&parts.headers, HEADER_SITE)
                .unwrap_or("")
                .to_owned(),
            instance: header_str(&parts.headers, HEADER_INSTANCE).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests;

/// `GET /metrics`: when `server.metrics_token` is set, `Authorization: Bearer <token>`
/// (compared in constant time); otherwise anyone.
#[derive(Debug)]
pub(crate) struct MetricsScraper;

impl FromRequestParts<AppState> for MetricsScraper {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Refusal> {
        let Some(expected) = &state.config().server.metrics_token else {
            return Ok(Self);
        };
        let given = header_str(&parts.headers, "authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(Refusal::Unauthorized)?;
        if same_secret(expected, given) {
            Ok(Self)
        } else {
            Err(Refusal::Unauthorized)
        }
    }
}
