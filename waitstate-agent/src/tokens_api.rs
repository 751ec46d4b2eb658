//! The extended form: admission tokens, so that the agent measures in-flight and latency
//! itself.
//!
//! `POST /v1/admit` `{"tag": "pro", "weight": 1, "cohort": "user-42", "maxWaitMs": 200,
//! "ttlMs": 10000}` (every field optional; tag and weight also from `x-waitstate-tag` /
//! `x-waitstate-weight`, the cohort from `x-waitstate-cohort`) waits, when the admission
//! pool is full, at most its level's deadline (or `maxWaitMs`) for a slot, then answers
//! `200 {"allowed":true,"token":"…","tag":"pro","ttlMs":10000}` or `429` with
//! `Retry-After` and `{"allowed":false,"reason":…,"retryAfter":…,"tag":…}` (our reason
//! names here, not only v1's).
//!
//! `POST /v1/finish` `{"token": "…", "outcome": "success" | "error"}` ends the request:
//! its latency (from the slot's grant) and outcome go to the rules; `204`, or `404` when
//! the token is unknown or already ended. A token not finished within its time to live
//! (`ttlMs`, at most `[agent] token_ttl`) ends as cancelled: its client died; it is counted
//! apart, not as an error, and its latency is not measured.

use std::hash::BuildHasher;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;
use waitstate_core::{Demand, Reason, Rejection};

use crate::agent::Agent;
use crate::routes::{
    ClientError, accepted, error, header_str, json, nullable_weight, parse, quoted, retry_after,
    tag_and_weight,
};
use crate::tokens::Outcome;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmitBody {
    #[serde(default)]
    tag: Option<String>,
    #[serde(default, deserialize_with = "nullable_weight")]
    weight: Option<f64>,
    #[serde(default)]
    cohort: Option<String>,
    #[serde(default)]
    max_wait_ms: Option<u64>,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

/// `POST /v1/admit`.
pub(crate) async fn admit(
    State(agent): State<Agent>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ClientError> {
    let req: AdmitBody = parse(&body)?;
    let (tag, weight) = tag_and_weight(req.tag.as_deref(), req.weight, &headers)?;
    let mut demand = Demand::new(tag).weight(weight).declared_only(true);
    if let Some(c) = req
        .cohort
        .as_deref()
        .or_else(|| header_str(&headers, "x-waitstate-cohort"))
    {
        demand = demand.cohort(agent.inner.hasher.hash_one(c));
    }
    if let Some(ms) = req.max_wait_ms {
        demand = demand.max_wait(Duration::from_millis(ms));
    }
    let ttl = req
        .ttl_ms
        .map_or(agent.inner.settings.token_ttl, Duration::from_millis)
        .min(agent.inner.settings.token_ttl);

    let tokens = &agent.inner.tokens;
    let Some(reservation) = tokens.reserve() else {
        return Ok(full(tag));
    };
    let permit = match agent.waitstate().enter(&demand).resolve().await {
        Ok(p) => p,
        Err(r) => return Ok(refused(&r)),
    };
    let counted = permit.tag();
    let id = tokens.fresh_id();
    tokens.hold(reservation, id, permit, Instant::now(), ttl);
    let body = format!(
        r#"{{"allowed":true,"reason":"allowed","token":"{id:016x}","tag":{},"ttlMs":{}}}"#,
        quoted(counted.as_str()),
        ttl.as_millis(),
    );
    Ok(json(StatusCode::OK, body))
}

/// `429` for a rejection: `Retry-After` and our reason.
pub(crate) fn refused(r: &Rejection) -> Response {
    let body = format!(
        r#"{{"allowed":false,"reason":"{}","retryAfter":{},"tag":{}}}"#,
        r.reason().as_str(),
        r.retry_after_secs(),
        quoted(r.tag()),
    );
    let mut response = json(StatusCode::TOO_MANY_REQUESTS, body);
    retry_after(&mut response, r);
    response
}

/// `429 concurrency_limited`: `max_tokens` requests are in flight through the agent.
fn full(tag: &str) -> Response {
    let body = format!(
        r#"{{"allowed":false,"reason":"{}","retryAfter":1,"tag":{},"message":"max_tokens in flight"}}"#,
        Reason::ConcurrencyLimited.as_str(),
        quoted(tag),
    );
    let mut response = json(StatusCode::TOO_MANY_REQUESTS, body);
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}

#[derive(Deserialize)]
struct FinishBody {
    token: String,
    #[serde(default)]
    outcome: Option<String>,
}

/// `POST /v1/finish`.
pub(crate) async fn finish(State(agent): State<Agent>, body: Bytes) -> Response {
    let req: FinishBody = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let outcome = match req.outcome.as_deref() {
        None | Some("success" | "ok") => Outcome::Success,
        Some("error" | "failure") => Outcome::Error,
        Some(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_outcome",
                "`outcome` is \"success\" or \"error\"",
            );
        }
    };
    let id = match u64::from_str_radix(req.token.trim(), 16) {
        Ok(id) if req.token.len() <= 16 => id,
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_token",
                "not a token from /v1/admit",
            );
        }
    };
    if agent.inner.tokens.finish(id, outcome) {
        accepted()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "unknown_token",
            "the token is unknown, already finished, or expired",
        )
    }
}
