//! The routes: each handler names what it needs (the extractors in [`crate::auth`] prove
//! it) and calls the fleet. Refusals are [`Refusal`] responses, counted on the way out.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tracing::{debug, warn};

use crate::auth::{Credentials, MetricsScraper, Reader, SignedPulse};
use crate::fleet::IngestError;
use crate::jwt::Claims;
use crate::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::refusal::{self, Refusal, count_refusals};
use crate::state::AppState;

/// The control plane's routes over `state`.
pub fn router(state: AppState) -> Router {
    let limit = state.config().server.max_body_bytes;
    Router::new()
        .route("/v1/auth/token", post(token))
        .route("/v1/policy/{org_id}", get(policy))
        .route("/v1/pulse", post(pulse))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes(&state))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::map_response_with_state(
            state.clone(),
            count_refusals,
        ))
        .with_state(state)
}

/// 200 with `value` as JSON (500 if it cannot be written).
fn json_ok(value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => refusal::json(StatusCode::OK, body),
        Err(_) => refusal::internal(),
    }
}

/// `POST /v1/auth/token`.
async fn token(State(state): State<AppState>, key: Credentials) -> Response {
    json_ok(&state.issue_token(&key.publish_key, &key.org_id))
}

/// `GET /v1/policy/{orgId}`.
async fn policy(
    State(state): State<AppState>,
    Path(org): Path<String>,
    claims: Claims,
    reader: Reader,
) -> Result<Response, Refusal> {
    claims.require_org(&org)?;
    state.counters().policy_read();
    let policy = state.answer_for(&org, &reader.site, reader.instance.as_deref());
    Ok(json_ok(&policy))
}

/// `POST /v1/pulse`.
async fn pulse(State(state): State<AppState>, pulse: SignedPulse) -> Response {
    match state.take_pulse(&pulse.org, &pulse.body).await {
        Ok(policy) => {
            state.counters().pulse();
            json_ok(&policy)
        }
        Err(IngestError::Malformed(what)) => {
            debug!(what, "malformed pulse");
            Refusal::Malformed.into_response()
        }
        Err(IngestError::Full(what)) => {
            warn!(what, org = %pulse.org, "fleet full: pulse refused");
            Refusal::Full.into_response()
        }
        Err(IngestError::Internal) => refusal::internal(),
    }
}

/// `GET /healthz`.
async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        "ok\n",
    )
        .into_response()
}

/// `GET /metrics`.
async fn metrics(State(state): State<AppState>, _: MetricsScraper) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics(),
    )
        .into_response()
}
