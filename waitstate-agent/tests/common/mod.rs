//! Shared helpers: an agent from TOML, a request through its router.
#![allow(dead_code, unreachable_pub)]

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower_service::Service;
use waitstate_agent::{Agent, AgentConfig};
use waitstate_core::Policy;

/// Tiers and a latency rule on free; fast ticks.
pub const TIERS: &str = r#"
[tags]
enterprise = 100
pro = 50
free = 10
[[rules]]
rule = "when p95_latency of free > 500ms then block free"
"#;

pub fn agent(toml: &str) -> Agent {
    Agent::new(AgentConfig::from_toml_str(toml).expect("config")).expect("agent")
}

/// One answer: status, headers, body as text.
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Answer {
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(agent: &Agent, request: Request<Body>) -> Answer {
    let mut app = agent.router();
    let response: Response<Body> = app.call(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn post(agent: &Agent, path: &str, body: &str) -> Answer {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    send(agent, request).await
}

/// Block `tag` through the remote policy (as a control plane would).
pub fn block(agent: &Agent, tag: &str) {
    let mut p = Policy::default();
    p.tag_max_weights.insert(tag.into(), 0.0);
    agent
        .waitstate()
        .engine()
        .set_remote_policy(Some(p))
        .expect("policy");
}
