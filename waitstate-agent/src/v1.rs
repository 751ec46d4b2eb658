//! The v1 agent protocol, as the published SDKs send it (`agent_url`): `POST /gate`,
//! `/report-latency`, `/report-error`, `/report-metric`, JSON, nothing signed.
//!
//! The published Python SDK (0.1) reads the gate's body whatever the status (a body it
//! cannot read, or no answer within 1 s, is "allowed": fail-open), knows only the v1
//! reasons, and ignores the reports' answers. So `/gate` always answers `200` with a v1
//! reason (ours mapped to the nearest, ours in `detail`), and a report answers `204`.
//! A tag or weight missing from the body is read from `x-waitstate-tag` /
//! `x-waitstate-weight` (the extended form); then the tag is `__default__` and the
//! weight 1.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use tokio::time::Instant;
use waitstate_core::{Decision, Demand};

use crate::agent::Agent;
use crate::routes::{
    accepted, error, header_str, header_weight, json, nullable_weight, parse, quoted, retry_after,
    v1_reason,
};

const TAG_HEADER: &str = "x-waitstate-tag";
const WEIGHT_HEADER: &str = "x-waitstate-weight";

#[derive(Deserialize)]
struct GateBody {
    #[serde(default)]
    tag: Option<String>,
    #[serde(default, deserialize_with = "nullable_weight")]
    weight: Option<f64>,
}

/// `POST /gate` `{"tag": "free" | null, "weight": 2.0}` →
/// `200 {"allowed": bool, "reason": "allowed" | <v1 reason>}`.
pub(crate) async fn gate(State(agent): State<Agent>, headers: HeaderMap, body: Bytes) -> Response {
    let req: GateBody = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let weight = match req.weight {
        Some(w) => w,
        None => match header_weight(&headers, WEIGHT_HEADER) {
            Ok(w) => w.unwrap_or(1.0),
            Err(e) => return e,
        },
    };
    let tag = req
        .tag
        .as_deref()
        .or_else(|| header_str(&headers, TAG_HEADER))
        .unwrap_or("");
    match agent
        .waitstate()
        .decide_demand(&Demand::new(tag).weight(weight))
    {
        Decision::Allowed { .. } => json(
            StatusCode::OK,
            r#"{"allowed":true,"reason":"allowed"}"#.to_owned(),
        ),
        Decision::Rejected(r) => {
            let body = format!(
                r#"{{"allowed":false,"reason":"{}","detail":"{}","retryAfter":{},"tag":{}}}"#,
                v1_reason(r.reason()),
                r.reason().as_str(),
                r.retry_after_secs(),
                quoted(r.tag()),
            );
            let mut response = json(StatusCode::OK, body);
            retry_after(&mut response, &r);
            response
        }
    }
}

#[derive(Deserialize)]
struct LatencyBody {
    #[serde(default)]
    tag: Option<String>,
    ms: Option<f64>,
}

/// `POST /report-latency` `{"ms": 900.0, "tag": "free" | null}` → `204`.
pub(crate) async fn report_latency(
    State(agent): State<Agent>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: LatencyBody = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(ms) = req.ms.filter(|ms| ms.is_finite() && *ms >= 0.0) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_latency",
            "`ms` must be a finite number of milliseconds, 0 or more",
        );
    };
    // At most a day: a larger value is a unit mistake, and must not wrap anything.
    let latency = Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0);
    let tag = tag_of(req.tag.as_deref(), &headers);
    agent.inner.report_latency(tag, latency, Instant::now());
    accepted()
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    tag: Option<String>,
}

/// `POST /report-error` `{"tag": "free" | null}` → `204`.
pub(crate) async fn report_error(
    State(agent): State<Agent>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: ErrorBody = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    agent
        .inner
        .report_error(tag_of(req.tag.as_deref(), &headers));
    accepted()
}

#[derive(Deserialize)]
struct MetricBody {
    metric: String,
    #[serde(default)]
    tag: Option<String>,
    value: Option<f64>,
}

/// `POST /report-metric` `{"metric": "queue_depth", "tag": "free" | null, "value": 7.0}`
/// → `204`, or `422` when the engine drops it (a bad name, a value that is not finite,
/// too many metrics).
pub(crate) async fn report_metric(
    State(agent): State<Agent>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req: MetricBody = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let tag = req
        .tag
        .as_deref()
        .or_else(|| header_str(&headers, TAG_HEADER));
    let value = req.value.unwrap_or(f64::NAN);
    match agent.waitstate().report(&req.metric, value, tag) {
        Ok(()) => accepted(),
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_metric",
            &e.to_string(),
        ),
    }
}

fn tag_of<'a>(body: Option<&'a str>, headers: &'a HeaderMap) -> &'a str {
    body.or_else(|| header_str(headers, TAG_HEADER))
        .unwrap_or("")
}
