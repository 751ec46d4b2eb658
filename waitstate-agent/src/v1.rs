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
    ClientError, accepted, header_str, json, nullable_weight, parse, quoted, retry_after,
    tag_and_weight, v1_reason,
};

const TAG_HEADER: &str = "x-waitstate-tag";

#[derive(Deserialize)]
struct GateBody {
    #[serde(default)]
    tag: Option<String>,
    #[serde(default, deserialize_with = "nullable_weight")]
    weight: Option<f64>,
}

/// `POST /gate` `{"tag": "free" | null, "weight": 2.0}` →
/// `200 {"allowed": bool, "reason": "allowed" | <v1 reason>}`.
pub(crate) async fn gate(
    State(agent): State<Agent>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ClientError> {
    let req: GateBody = parse(&body)?;
    let (tag, weight) = tag_and_weight(req.tag.as_deref(), req.weight, &headers)?;
    Ok(
        match agent
            .waitstate()
            .decide_demand(&Demand::new(tag).weight(weight).declared_only(true))
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
        },
    )
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
) -> Result<Response, ClientError> {
    let req: LatencyBody = parse(&body)?;
    let Some(ms) = req.ms.filter(|ms| ms.is_finite() && *ms >= 0.0) else {
        return Err(ClientError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_latency",
            "`ms` must be a finite number of milliseconds, 0 or more",
        ));
    };
    // At most a day: a larger value is a unit mistake, and must not wrap anything.
    let latency = Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0);
    let tag = tag_of(req.tag.as_deref(), &headers);
    agent.inner.report_latency(tag, latency, Instant::now());
    Ok(accepted())
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
) -> Result<Response, ClientError> {
    let req: ErrorBody = parse(&body)?;
    agent
        .inner
        .report_error(tag_of(req.tag.as_deref(), &headers));
    Ok(accepted())
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
) -> Result<Response, ClientError> {
    let req: MetricBody = parse(&body)?;
    let tag = req
        .tag
        .as_deref()
        .or_else(|| header_str(&headers, TAG_HEADER));
    let value = req.value.unwrap_or(f64::NAN);
    match agent.waitstate().report(&req.metric, value, tag) {
        Ok(()) => Ok(accepted()),
        Err(e) => Err(ClientError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_metric",
            e.to_string(),
        )),
    }
}

fn tag_of<'a>(body: Option<&'a str>, headers: &'a HeaderMap) -> &'a str {
    body.or_else(|| header_str(headers, TAG_HEADER))
        .unwrap_or("")
}
