//! The HTTP surface: the v1 endpoints, `/healthz`, `/metrics`, and the server handle.

use std::collections::{HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use waitstate_core::wire::{
    self, HEADER_ID, HEADER_INSTANCE, HEADER_SIGNATURE, HEADER_SITE, HEADER_TIMESTAMP, PulseBody,
    TokenRequest, TokenResponse,
};

use crate::config::ControlConfig;
use crate::fleet::{self, Fleets, IngestError, ShardView};
use crate::jwt::{self, Claims};

/// Most pulse signatures remembered to refuse replays within the skew window.
const MAX_REPLAY_ENTRIES: usize = 200_000;

/// Reasons a request is refused, as counted in `/metrics`.
const REFUSALS: [&str; 6] = [
    "unauthorized",
    "bad_signature",
    "stale_timestamp",
    "replay",
    "malformed",
    "full",
];

#[derive(Default)]
struct Counters {
    pulses: AtomicU64,
    tokens: AtomicU64,
    policy_reads: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
}

impl Counters {
    fn refuse(&self, reason: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Relaxed);
        }
    }
}

#[derive(Default)]
struct Replay {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<(u64, [u8; 32])>,
}

impl Replay {
    /// Remember a pulse; `false` if it was seen already.
    fn check(&mut self, digest: [u8; 32], ts: u64, oldest: u64) -> bool {
        while let Some((t, d)) = self.order.front() {
            if *t >= oldest && self.order.len() < MAX_REPLAY_ENTRIES {
                break;
            }
            self.seen.remove(d);
            self.order.pop_front();
        }
        if !self.seen.insert(digest) {
            return false;
        }
        self.order.push_back((ts, digest));
        true
    }
}

type WallClock = Box<dyn Fn() -> u64 + Send + Sync>;

struct Shared {
    config: ControlConfig,
    jwt_key: Vec<u8>,
    fleets: Mutex<Fleets>,
    origin: Instant,
    wall: WallClock,
    replay: Mutex<Replay>,
    counters: Counters,
}

/// The control plane's state: configuration, fleets, counters. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

#[allow(clippy::disallowed_methods)]
fn system_wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AppState {
    /// State for a configuration, reading the system's wall clock for timestamps.
    ///
    /// # Errors
    /// The operating system cannot provide random bytes for the token key.
    pub fn new(config: ControlConfig) -> io::Result<Self> {
        Self::with_wall_clock(config, Box::new(system_wall_ms))
    }

    /// State with an injected wall clock (epoch milliseconds), for tests of timestamp skew
    /// and token expiry. Windows and ageing use tokio's clock (`tokio::time::pause`).
    ///
    /// # Errors
    /// As [`AppState::new`].
    pub fn with_wall_clock(
        config: ControlConfig,
        wall: Box<dyn Fn() -> u64 + Send + Sync>,
    ) -> io::Result<Self> {
        let jwt_key = match &config.server.jwt_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let mut key = vec![0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
                key
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                jwt_key,
                fleets: Mutex::new(Fleets::default()),
                origin: Instant::now(),
                wall,
                replay: Mutex::new(Replay::default()),
                counters: Counters::default(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.shared.config
    }

    /// Evaluate every fleet's rules now (the server does it every `tick`).
    pub fn tick(&self) {
        let now = Instant::now();
        let s = &*self.shared;
        lock(&s.fleets).tick(
            now,
            now.saturating_duration_since(s.origin),
            &s.config.server,
            &s.config.engine,
        );
    }

    /// A fleet's state (`site` is `""` for pulses without a `siteId`).
    pub fn shard(&self, org: &str, site: &str) -> Option<ShardView> {
        lock(&self.shared.fleets).shard(org, site).map(|s| s.view())
    }

    /// The policy an instance would get now.
    pub fn answer_for(
        &self,
        org: &str,
        site: &str,
        instance: Option<&str>,
    ) -> waitstate_core::Policy {
        let s = &*self.shared;
        let fleets = lock(&s.fleets);
        fleet::answer(
            fleets.shard(org, site),
            instance,
            &s.config.server,
            &s.config.engine,
        )
    }

    fn wall_ms(&self) -> u64 {
        (self.shared.wall)()
    }
}

fn refuse(state: &AppState, status: StatusCode, reason: &'static str) -> Response {
    state.shared.counters.refuse(reason);
    debug!(reason, status = status.as_u16(), "request refused");
    let error = if status == StatusCode::UNAUTHORIZED && reason == "bad_signature" {
        // Do not tell an unknown key from a wrong signature.
        "unauthorized"
    } else {
        reason
    };
    json(status, format!(r#"{{"error":"{error}"}}"#).into_bytes())
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn policy_response(policy: &waitstate_core::Policy) -> Response {
    match serde_json::to_vec(policy) {
        Ok(body) => json(StatusCode::OK, body),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"internal"}"#.to_vec(),
        ),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Compare two secrets in constant time (whatever their lengths).
fn same_secret(a: &str, b: &str) -> bool {
    let a = Sha256::digest(a.as_bytes());
    let b = Sha256::digest(b.as_bytes());
    a.ct_eq(&b).into()
}

async fn token(State(state): State<AppState>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<TokenRequest>(&body) else {
        return refuse(&state, StatusCode::BAD_REQUEST, "malformed");
    };
    let config = &state.shared.config;
    let key = config.key(&req.publish_key);
    let expected = key.map_or("\u{0}no key\u{0}", |k| k.secret_key.as_str());
    if !same_secret(expected, &req.secret_key) || key.is_none() {
        return refuse(&state, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let Some(key) = key else {
        return refuse(&state, StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let now = state.wall_ms() / 1000;
    let exp = now.saturating_add(config.server.token_ttl.as_secs());
    let claims = Claims {
        sub: key.publish_key.clone(),
        org: key.org_id.clone(),
        iat: now,
        exp,
    };
    let answer = TokenResponse::new(
        jwt::sign(&state.shared.jwt_key, &claims),
        exp.saturating_mul(1000),
        key.org_id.clone(),
    );
    state.shared.counters.tokens.fetch_add(1, Relaxed);
    match serde_json::to_vec(&answer) {
        Ok(body) => json(StatusCode::OK, body),
        Err(_) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"internal"}"#.to_vec(),
        ),
    }
}

async fn policy(
    State(state): State<AppState>,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(bearer) = header_str(&headers, "authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }) else {
        return refuse(&state, StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let Ok(claims) = jwt::verify(&state.shared.jwt_key, bearer.trim(), state.wall_ms() / 1000)
    else {
        return refuse(&state, StatusCode::UNAUTHORIZED, "unauthorized");
    };
    // The key must still be configured for that org.
    let config = &state.shared.config;
    let still_valid = config
        .key(&claims.sub)
        .is_some_and(|k| k.org_id == claims.org);
    if !still_valid {
        return refuse(&state, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if claims.org != org {
        return refuse(&state, StatusCode::FORBIDDEN, "unauthorized");
    }
    let site = header_str(&headers, HEADER_SITE).unwrap_or("");
    let instance = header_str(&headers, HEADER_INSTANCE);
    state.shared.counters.policy_reads.fetch_add(1, Relaxed);
    policy_response(&state.answer_for(&org, site, instance))
}

async fn pulse(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let config = &state.shared.config;
    let Some(key) = header_str(&headers, HEADER_ID).and_then(|id| config.key(id)) else {
        return refuse(&state, StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let (Some(ts_text), Some(signature)) = (
        header_str(&headers, HEADER_TIMESTAMP),
        header_str(&headers, HEADER_SIGNATURE),
    ) else {
        return refuse(&state, StatusCode::UNAUTHORIZED, "unauthorized");
    };
    if !wire::verify(key.secret_key.as_bytes(), &body, ts_text, signature) {
        return refuse(&state, StatusCode::UNAUTHORIZED, "bad_signature");
    }
    let Ok(ts) = ts_text.trim().parse::<u64>() else {
        return refuse(&state, StatusCode::BAD_REQUEST, "malformed");
    };
    let now_ms = state.wall_ms();
    let skew = u64::try_from(config.server.skew.as_millis()).unwrap_or(u64::MAX);
    if now_ms.abs_diff(ts) > skew {
        return refuse(&state, StatusCode::UNAUTHORIZED, "stale_timestamp");
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&Sha256::digest(signature.as_bytes()));
    if !lock(&state.shared.replay).check(digest, ts, now_ms.saturating_sub(skew)) {
        return refuse(&state, StatusCode::CONFLICT, "replay");
    }
    let Ok(pulse) = serde_json::from_slice::<PulseBody>(&body) else {
        return refuse(&state, StatusCode::BAD_REQUEST, "malformed");
    };
    let now = Instant::now();
    let site = pulse.site_id.clone().unwrap_or_default();
    let answer = {
        let mut fleets = lock(&state.shared.fleets);
        match fleets.ingest(&key.org_id, &pulse, now, &config.server, &config.engine) {
            Ok(()) => {}
            Err(IngestError::Malformed(what)) => {
                drop(fleets);
                debug!(what, "malformed pulse");
                return refuse(&state, StatusCode::BAD_REQUEST, "malformed");
            }
            Err(IngestError::Full(what)) => {
                drop(fleets);
                warn!(what, org = %key.org_id, "fleet full: pulse refused");
                return refuse(&state, StatusCode::TOO_MANY_REQUESTS, "full");
            }
            Err(IngestError::Internal) => {
                drop(fleets);
                return json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    br#"{"error":"internal"}"#.to_vec(),
                );
            }
        }
        fleet::answer(
            fleets.shard(&key.org_id, &site),
            Some(&pulse.instance_id),
            &config.server,
            &config.engine,
        )
    };
    state.shared.counters.pulses.fetch_add(1, Relaxed);
    policy_response(&answer)
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        "ok\n",
    )
        .into_response()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(state): State<AppState>) -> Response {
    let c = &state.shared.counters;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP waitstate_pulses_total Pulses accepted.\n# TYPE waitstate_pulses_total counter\nwaitstate_pulses_total {}",
        c.pulses.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP waitstate_tokens_total Tokens issued.\n# TYPE waitstate_tokens_total counter\nwaitstate_tokens_total {}",
        c.tokens.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP waitstate_policy_reads_total Policy reads served.\n# TYPE waitstate_policy_reads_total counter\nwaitstate_policy_reads_total {}",
        c.policy_reads.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP waitstate_refused_total Requests refused, by reason.\n# TYPE waitstate_refused_total counter"
    );
    for (reason, n) in REFUSALS.iter().zip(&c.refused) {
        let _ = writeln!(
            out,
            "waitstate_refused_total{{reason=\"{reason}\"}} {}",
            n.load(Relaxed)
        );
    }
    let fleets = lock(&state.shared.fleets);
    let mut instances = String::new();
    let mut rules = String::new();
    let mut tags = String::new();
    for (org, site, shard) in fleets.shards() {
        let v = shard.view();
        let labels = format!("org=\"{}\",site=\"{}\"", escape(org), escape(site));
        let _ = writeln!(instances, "waitstate_instances{{{labels}}} {}", v.instances);
        let active = v.rules.iter().filter(|r| r.is_active()).count();
        let _ = writeln!(rules, "waitstate_rules_active{{{labels}}} {active}");
        for (tag, counters) in &v.tags {
            let t = escape(tag);
            let _ = writeln!(
                tags,
                "waitstate_tag_requests_total{{{labels},tag=\"{t}\",outcome=\"admitted\"}} {}",
                counters.admitted
            );
            let _ = writeln!(
                tags,
                "waitstate_tag_requests_total{{{labels},tag=\"{t}\",outcome=\"shed\"}} {}",
                counters.rejected_total()
            );
        }
    }
    drop(fleets);
    let _ = write!(
        out,
        "# HELP waitstate_instances Live instances per fleet.\n# TYPE waitstate_instances gauge\n{instances}\
         # HELP waitstate_rules_active Fleet rules in force.\n# TYPE waitstate_rules_active gauge\n{rules}\
         # HELP waitstate_tag_requests_total Requests per tag, admitted or shed, as reported by the fleet.\n# TYPE waitstate_tag_requests_total counter\n{tags}"
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

/// The control plane's routes over `state`.
pub fn router(state: AppState) -> Router {
    let limit = state.shared.config.server.max_body_bytes;
    Router::new()
        .route("/v1/auth/token", post(token))
        .route("/v1/policy/{org_id}", get(policy))
        .route("/v1/pulse", post(pulse))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A running control plane: the HTTP server and the task evaluating the fleet rules.
#[derive(Debug)]
pub struct ControlServer {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
    ticker: JoinHandle<()>,
}

impl ControlServer {
    /// Bind `server.listen` and serve.
    ///
    /// # Errors
    /// The address cannot be bound, or no random key can be made.
    pub async fn bind(config: ControlConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(&config.server.listen).await?;
        Ok(Self::serve(listener, AppState::new(config)?))
    }

    /// Serve `state` on a bound listener (tests bind `127.0.0.1:0`).
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn serve(listener: TcpListener, state: AppState) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        let tick = state.config().engine.tick;
        let ticking = state.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                ticking.tick();
            }
        });
        let config = state.config();
        if config.engine.window < config.server.pulse_interval * 2 {
            warn!(
                window = ?config.engine.window,
                pulse_interval = ?config.server.pulse_interval,
                "the fleet window is shorter than two pulse intervals: fleet metrics will be jumpy (set `window` higher)"
            );
        }
        info!(%addr, keys = config.keys.len(), rules = config.engine.rules.len(), "waitstate-control listening");
        Self {
            addr,
            state,
            stop: Some(tx),
            server: Some(server),
            ticker,
        }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the `base_url` for SDKs.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its state (fleets, configuration).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stop accepting, finish the requests in flight, close every connection.
    ///
    /// # Errors
    /// What the server loop ended with.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ticker.abort();
        match self.server.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.ticker.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
