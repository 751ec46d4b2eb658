//! GraphQL: an Apollo Router external coprocessor (the router's JSON protocol, version 1).
//!
//! Point the router's `coprocessor.url` at `http://127.0.0.1:7300/graphql/coprocessor`
//! and enable the `supergraph` stage (`request: { body: true, headers: true }`,
//! `response: { status_code: true }`), or the `router` stage (its request body is the raw
//! HTTP body, parsed here).
//!
//! - At `SupergraphRequest` / `RouterRequest` the operation's tag is found: the configured
//!   `[agent.graphql] operations` map of operation name → tag, else the operation's own
//!   name (`tag_by_operation_name`), else the `tag_header`, else `__default__`. The
//!   operation name is `operationName`, else the first named operation of the query. The
//!   request is admitted (waiting for a slot when the pool is full, as the layers do): the
//!   answer is `"control": "continue"`, and the request is held under the router's `id`
//!   until its response stage; or, when refused, `"control": {"break": 429}` with a
//!   GraphQL error body and `retry-after` / `content-type` headers.
//! - At `SupergraphResponse` / `RouterResponse` the held request ends: its latency (from
//!   admission) and outcome (a `statusCode` of 500 or more is a failure) go to the rules.
//!   The answer echoes `version`, `stage` and `id` only, so nothing of the response
//!   changes.
//! - A held request whose response stage never comes ends after `[agent] token_ttl`, as
//!   cancelled (counted apart, its latency not measured).

use std::collections::HashMap;
use std::hash::BuildHasher;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use waitstate_core::{Demand, Rejection};

use crate::agent::Agent;
use crate::config::GraphqlSettings;
use crate::routes::{error, json as json_response, parse};
use crate::tokens::Outcome;

/// The longest router request id kept (they are UUIDs).
const MAX_ID_LEN: usize = 256;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Externalized {
    #[serde(default = "version_one")]
    version: Value,
    stage: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    headers: Option<HashMap<String, Vec<String>>>,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    status_code: Option<u16>,
}

fn version_one() -> Value {
    Value::from(1)
}

/// `POST /graphql/coprocessor`.
pub(crate) async fn coprocessor(State(agent): State<Agent>, body: Bytes) -> Response {
    let req: Externalized = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.id.as_ref().is_some_and(|id| id.len() > MAX_ID_LEN) {
        return error(StatusCode::BAD_REQUEST, "bad_request", "`id` is too long");
    }
    let mut out = Map::new();
    out.insert("version".into(), req.version.clone());
    out.insert("stage".into(), Value::from(req.stage.as_str()));
    if let Some(id) = &req.id {
        out.insert("id".into(), Value::from(id.as_str()));
    }
    match req.stage.as_str() {
        "RouterRequest" | "SupergraphRequest" => {
            let settings = &agent.inner.settings.graphql;
            let operation = operation_name(&req);
            let tag = tag_of(settings, operation.as_deref(), req.headers.as_ref());
            match enter(&agent, &tag, req.id.as_deref()).await {
                Ok(()) => {
                    out.insert("control".into(), Value::from("continue"));
                }
                Err(rejection) => {
                    out.insert("control".into(), json!({ "break": 429 }));
                    out.insert("body".into(), shed_body(&rejection));
                    out.insert(
                        "headers".into(),
                        json!({
                            "content-type": ["application/json"],
                            "retry-after": [rejection.retry_after_secs().to_string()],
                        }),
                    );
                }
            }
        }
        "RouterResponse" | "SupergraphResponse" => {
            if let Some(id) = &req.id {
                let failed = req.status_code.is_some_and(|s| s >= 500);
                let outcome = if failed {
                    Outcome::Error
                } else {
                    Outcome::Success
                };
                agent
                    .inner
                    .tokens
                    .finish(agent.inner.hasher.hash_one(id), outcome);
            }
        }
        // Other stages (execution, subgraph): nothing to do; let the request through.
        _ => {
            if req.stage.ends_with("Request") {
                out.insert("control".into(), Value::from("continue"));
            }
        }
    }
    json_response(StatusCode::OK, Value::Object(out).to_string())
}

/// Admit and hold the request under the router's id (or, without an id, only decide).
async fn enter(agent: &Agent, tag: &str, id: Option<&str>) -> Result<(), Rejection> {
    let demand = Demand::new(tag).declared_only(true);
    let Some(id) = id else {
        return match agent.waitstate().decide_demand(&demand) {
            waitstate_core::Decision::Allowed { .. } => Ok(()),
            waitstate_core::Decision::Rejected(r) => Err(r),
        };
    };
    let tokens = &agent.inner.tokens;
    let Some(reservation) = tokens.reserve() else {
        // More requests in flight than the agent holds: only decide.
        return match agent.waitstate().decide_demand(&demand) {
            waitstate_core::Decision::Allowed { .. } => Ok(()),
            waitstate_core::Decision::Rejected(r) => Err(r),
        };
    };
    let permit = agent.waitstate().enter(&demand).resolve().await?;
    let ttl = agent.inner.settings.token_ttl;
    tokens.hold(
        reservation,
        agent.inner.hasher.hash_one(id),
        permit,
        Instant::now(),
        ttl,
    );
    Ok(())
}

/// The GraphQL body of a shed request.
fn shed_body(r: &Rejection) -> Value {
    json!({
        "errors": [{
            "message": format!("shed by WaitState ({}); retry after {} s", r.reason(), r.retry_after_secs()),
            "extensions": {
                "code": "RATE_LIMITED",
                "reason": r.reason().as_str(),
                "tag": r.tag(),
                "retryAfter": r.retry_after_secs(),
            }
        }]
    })
}

/// The tag of an operation: the map, its name, the header, or the default.
fn tag_of(
    settings: &GraphqlSettings,
    operation: Option<&str>,
    headers: Option<&HashMap<String, Vec<String>>>,
) -> String {
    if let Some(op) = operation {
        if let Some(tag) = settings.operations.get(op) {
            return tag.clone();
        }
        if settings.tag_by_operation_name {
            return op.to_owned();
        }
    }
    if let (Some(name), Some(headers)) = (&settings.tag_header, headers) {
        let found = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first());
        if let Some(tag) = found {
            return tag.clone();
        }
    }
    String::new()
}

/// The operation's name: `operationName`, else the first named operation in `query`.
/// At the router stage the body is the HTTP body as a string (JSON inside; a batch is an
/// array, whose first operation counts).
fn operation_name(req: &Externalized) -> Option<String> {
    let parsed;
    let mut body = req.body.as_ref()?;
    if let Value::String(raw) = body {
        parsed = serde_json::from_str::<Value>(raw).ok()?;
        body = &parsed;
    }
    if let Value::Array(batch) = body {
        body = batch.first()?;
    }
    if let Some(name) = body.get("operationName").and_then(Value::as_str)
        && !name.is_empty()
    {
        return Some(name.to_owned());
    }
    body.get("query")
        .and_then(Value::as_str)
        .and_then(first_operation_name)
        .map(str::to_owned)
}

/// The name of the first named operation in a GraphQL document (`query Name`, `mutation
/// Name`, `subscription Name`), skipping comments and strings.
pub(crate) fn first_operation_name(query: &str) -> Option<&str> {
    let bytes = query.as_bytes();
    let mut i = 0;
    let name_char = |b: u8| b == b'_' || b.is_ascii_alphanumeric();
    let mut expect_name = false;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if b == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            expect_name = false;
        } else if name_char(b) {
            let start = i;
            while i < bytes.len() && name_char(bytes[i]) {
                i += 1;
            }
            let word = &query[start..i];
            if expect_name {
                return Some(word);
            }
            expect_name = matches!(word, "query" | "mutation" | "subscription");
        } else {
            if !b.is_ascii_whitespace() && b != b',' {
                expect_name = false;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::first_operation_name;

    #[test]
    fn operation_names_are_found_in_query_text() {
        assert_eq!(
            first_operation_name("query Search($q: String) { s(q: $q) }"),
            Some("Search")
        );
        assert_eq!(
            first_operation_name("# query Fake\n mutation PlaceOrder { o }"),
            Some("PlaceOrder")
        );
        assert_eq!(first_operation_name("{ anonymous }"), None);
        assert_eq!(first_operation_name("query { anonymous }"), None);
        assert_eq!(
            first_operation_name(r#"{ a(s: "query Hidden") } query Real { b }"#),
            Some("Real")
        );
        assert_eq!(first_operation_name("query"), None);
        assert_eq!(first_operation_name("\"unterminated \\"), None);
    }
}
