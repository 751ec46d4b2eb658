//! The control plane client: pulse (signed telemetry, answered with the fleet policy) and
//! sync (token, then `GET /v1/policy/{orgId}`), lease and safe mode.
//!
//! One background task per [`WaitState`](super::WaitState) owns the HTTP client, the token
//! and the telemetry not yet acknowledged. The hot path only ever reads one flag (safe mode
//! `fixed_rps`) besides the engine's policy snapshot.
//!
//! - Fail-open: until the first policy arrives the engine runs on its local rules only.
//! - A policy (from a pulse answer or a sync) is validated; a bad one is logged and the last
//!   good policy stays. A good one renews the lease (`leaseDurationSeconds`, or
//!   [`ControlPlane::lease`]).
//! - When the lease expires: safe mode ([`SafeMode`](crate::config::SafeMode)), logged
//!   once; left on the next successful pulse or sync. The state machine is [`Lease`] (pure,
//!   time passed in); this task drives it with the clock and applies its transitions.
//! - Telemetry is cumulative counters minus what the control plane acknowledged, so a
//!   failed pulse loses nothing: the next one carries it. At most
//!   [`ControlPlane::carried_windows`] pulse windows are carried; older ones are dropped
//!   (and counted in [`ControlStatus::windows_dropped`]).
//! - Failed calls are retried after a jittered exponential backoff (1 s, 2 s, 4 s, ...,
//!   capped at the normal cadence). Every call has a timeout.
//! - Several control-plane URLs ([`ControlPlane::urls`], replicas of one control plane):
//!   a failed call moves to the next URL, which the retry (after the backoff) goes to; the
//!   unacknowledged telemetry goes with it, as it would to the same one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::lease::{Effect, Lease, SafeModeGate, Transition};
use super::wire::{
    self, HEADER_ID, HEADER_INSTANCE, HEADER_SIGNATURE, HEADER_SITE, HEADER_TIMESTAMP, PulseBody,
    PulseMetrics, TagMetric, TokenRequest, TokenResponse,
};
use super::{Inner, clock_now, wall_clock_ms};
use crate::config::ControlPlane;
use crate::decision::{Reason, Rejection};
use crate::error::ConfigError;
use crate::policy::Policy;
use crate::registry::{Aggregate, DEFAULT_TAG, TagCounters};

/// Largest response body read from a control plane.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Bounds of the `pulseInterval` hint a control plane may set.
const MIN_PULSE: Duration = Duration::from_secs(1);
const MAX_PULSE: Duration = Duration::from_secs(300);

/// What the control plane client is doing, for display, health checks and tests.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ControlStatus {
    /// This instance's id in pulses (a v4 UUID).
    pub instance_id: String,
    /// A policy has been received at least once (before that: fail-open).
    pub synced: bool,
    /// The lease holds (a policy was received within its lease).
    pub lease_valid: bool,
    /// The lease expired and safe mode is in force.
    pub safe_mode: bool,
    /// Pulses acknowledged.
    pub pulses_ok: u64,
    /// Pulse attempts that failed (network, timeout, non-2xx).
    pub pulses_failed: u64,
    /// Syncs that brought a policy.
    pub syncs_ok: u64,
    /// Syncs that failed.
    pub syncs_failed: u64,
    /// Policies refused by validation (the last good one stayed).
    pub policies_rejected: u64,
    /// Pulse windows waiting to be sent (0 when everything is acknowledged).
    pub carried_windows: usize,
    /// Windows dropped because more than `carried_windows` piled up.
    pub windows_dropped: u64,
    /// Gate calls whose telemetry was dropped with those windows.
    pub requests_dropped: u64,
    /// The pulse cadence in force (configured, or the control plane's hint).
    pub pulse_interval: Duration,
    /// The control-plane URL calls go to now (one of [`ControlPlane::urls`]).
    pub control_plane_url: String,
    /// Times a failed call moved to the next control-plane URL.
    pub failovers: u64,
}

/// The part of the client the hot path and the reflex task share.
pub(crate) struct ControlShared {
    config: ControlPlane,
    instance_id: String,
    /// Safe mode `fixed_rps`'s cap, engaged while it is in force.
    gate: SafeModeGate,
    /// Custom metric aggregates the reflex ticks took from the engine, not yet pulsed.
    custom: Mutex<BTreeMap<(Option<String>, String), Aggregate>>,
    status: Mutex<ControlStatus>,
    /// The counters the control plane last acknowledged, kept here so that a control task
    /// restarted after a panic neither sends them again nor loses what was not sent.
    acked: Mutex<Arc<Snapshot>>,
    /// When (engine time) the counters of the last acknowledged pulse were read: `None`
    /// before the first. Tags quiet since before it have no unsent telemetry.
    acked_at: Mutex<Option<Duration>>,
    /// Tests: make the control task panic at its next wake-up.
    #[cfg(test)]
    pub(crate) inject_panic: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ControlShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlShared")
            .field("config", &self.config)
            .field("instance_id", &self.instance_id)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl ControlShared {
    pub(crate) fn new(config: ControlPlane) -> Self {
        let instance_id = uuid::Uuid::new_v4().to_string();
        let status = ControlStatus {
            instance_id: instance_id.clone(),
            pulse_interval: config.pulse_interval,
            control_plane_url: config
                .urls()
                .first()
                .copied()
                .unwrap_or_default()
                .to_owned(),
            ..ControlStatus::default()
        };
        Self {
            gate: SafeModeGate::new(config.safe_mode_max_rps),
            config,
            instance_id,
            custom: Mutex::new(BTreeMap::new()),
            status: Mutex::new(status),
            acked: Mutex::new(Arc::new(Snapshot::new())),
            acked_at: Mutex::new(None),
            #[cfg(test)]
            inject_panic: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The hot path's safe-mode check: `Some` rejection when `fixed_rps` is in force and
    /// the budget left to the tag's priority is spent (lowest priorities first).
    #[inline]
    pub(crate) fn safe_mode_gate(&self, inner: &Inner, tag: &str) -> Option<Rejection> {
        if !self.gate.is_engaged() || inner.engine.is_dry_run() {
            return None;
        }
        let engine = &inner.engine;
        let levels = engine.priority_levels();
        let priority = engine.priority_of(tag);
        // The level at or below the tag's priority (levels are sorted, lowest first).
        let level = levels.partition_point(|l| *l <= priority).saturating_sub(1);
        match self.gate.try_acquire(inner.now(), level, levels.len()) {
            Ok(()) => None,
            Err(wait) => Some(inner.engine.reject_outside(tag, Reason::LeaseExpired, wait)),
        }
    }

    /// Until when (engine time) every counter has reached the control plane: the bound for
    /// [`Engine::reclaim_quiet`](crate::Engine::reclaim_quiet).
    pub(crate) fn settled(&self) -> Duration {
        lock(&self.acked_at).unwrap_or(Duration::ZERO)
    }

    /// Fold in the custom metrics one reflex tick took from the engine.
    pub(crate) fn add_custom(&self, taken: &[(Option<String>, String, Aggregate)]) {
        if taken.is_empty() {
            return;
        }
        let mut map = lock(&self.custom);
        for (tag, name, agg) in taken {
            merge_custom(&mut map, (tag.clone(), name.clone()), agg);
        }
    }

    pub(crate) fn status(&self) -> ControlStatus {
        lock(&self.status).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ControlStatus)) {
        f(&mut lock(&self.status));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn merge_custom(
    map: &mut BTreeMap<(Option<String>, String), Aggregate>,
    key: (Option<String>, String),
    agg: &Aggregate,
) {
    map.entry(key).and_modify(|a| a.merge(agg)).or_insert(*agg);
}

/// Build the HTTP client (rustls, timeouts on every call, no redirects).
///
/// The base URL is checked again here with the parser the client connects with: a plain
/// `http://` control plane off loopback is refused unless
/// [`ControlPlane::allow_insecure_http`] is set (the secret key is sent to buy a token).
/// Redirects are not followed, so an `https://` control plane cannot hand the secret to
/// another host, or to plain http.
pub(crate) fn http_client(config: &ControlPlane) -> Result<reqwest::Client, ConfigError> {
    let urls = config.urls();
    if urls.is_empty() {
        return Err(ConfigError::invalid(
            "control_plane.base_url",
            "must be an http:// or https:// URL",
        ));
    }
    let mut all_https = true;
    for url in urls {
        all_https &= check_url(url, config.allow_insecure_http)?;
    }
    reqwest::Client::builder()
        .https_only(all_https)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("waitstate-rs/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            ConfigError::invalid(
                "control_plane",
                format!("cannot build the HTTP client: {}", e.without_url()),
            )
        })
}

/// One control-plane URL, checked with the parser the client connects with; whether it is
/// `https`.
fn check_url(url: &str, allow_insecure_http: bool) -> Result<bool, ConfigError> {
    let url = reqwest::Url::parse(url.trim())
        .map_err(|e| ConfigError::invalid("control_plane.base_url", format!("not a URL: {e}")))?;
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(ConfigError::invalid(
                "control_plane.base_url",
                "must be an http:// or https:// URL",
            ));
        }
    };
    // `host_str` is normalised: a lower-case domain, a dotted IPv4, a bracketed IPv6.
    let loopback = url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    if !https && !loopback && !allow_insecure_http {
        return Err(ConfigError::invalid(
            "control_plane.base_url",
            "a plain http:// control plane must be on loopback (localhost, 127.0.0.0/8, [::1]): \
             the secret key would cross the network unencrypted; use https://, or set \
             allow_insecure_http = true for a network you trust",
        ));
    }
    Ok(https)
}

/// Why a call failed (logged; never holds a secret).
#[derive(Debug)]
enum CallError {
    Transport(String),
    Status(u16),
    Body(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(e) => write!(f, "transport: {e}"),
            CallError::Status(s) => write!(f, "HTTP status {s}"),
            CallError::Body(e) => write!(f, "bad answer: {e}"),
        }
    }
}

struct Token {
    token: String,
    expires_at: u64,
    org_id: String,
}

/// Cumulative counters by tag, with the tag's generation (a tag reclaimed and seen again
/// counts from zero: its counters are compared only within one generation).
type Snapshot = HashMap<String, (u64, TagCounters)>;

/// What `current` counted since `acked` (all of it when the tag is new, or a new slot).
fn since(current: &(u64, TagCounters), acked: Option<&(u64, TagCounters)>) -> TagCounters {
    match acked {
        Some((generation, before)) if *generation == current.0 => current.1.since(before),
        _ => current.1.clone(),
    }
}

/// The background task's state.
struct Client {
    shared: Arc<ControlShared>,
    http: reqwest::Client,
    /// Every control-plane URL (replicas), and the one calls go to now.
    bases: Vec<String>,
    current: usize,
    base: String,
    token: Option<Token>,
    /// Cumulative counters the control plane has acknowledged (mirrored in the shared
    /// part: see [`Client::set_acked`]).
    acked: Arc<Snapshot>,
    /// Cumulative counters at the start of each window not yet acknowledged but the first.
    cuts: VecDeque<Snapshot>,
    /// When the open (not yet closed) window started.
    window_start: Instant,
    /// The engine's origin: the lease counts time from here, as the hot path does.
    origin: Instant,
    lease: Lease,
    pulse_every: Duration,
    pulse_failures: u32,
    sync_failures: u32,
    rng: u64,
}

/// The control task: sync at once, then pulse and sync on their cadence, watch the lease.
/// Holds only a weak reference to the engine, so it ends with the last handle.
pub(crate) async fn run(inner: Weak<Inner>, shared: Arc<ControlShared>, http: reqwest::Client) {
    let Some(origin) = inner.upgrade().map(|i| i.origin) else {
        return;
    };
    let seed = uuid::Uuid::new_v4().as_u128();
    // A restart after a panic resumes from what was acknowledged: what the engine counted
    // since goes out in the next pulse, once.
    let acked = lock(&shared.acked).clone();
    let bases: Vec<String> = shared
        .config
        .urls()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut c = Client {
        base: bases.first().cloned().unwrap_or_default(),
        bases,
        current: 0,
        pulse_every: shared.config.pulse_interval,
        lease: Lease::new(shared.config.safe_mode, shared.config.lease),
        shared,
        http,
        token: None,
        acked,
        cuts: VecDeque::new(),
        window_start: clock_now(),
        origin,
        pulse_failures: 0,
        sync_failures: 0,
        rng: (seed as u64 ^ (seed >> 64) as u64) | 1,
    };
    let start = clock_now();
    let mut next_sync = start;
    let mut next_pulse = start + c.pulse_every;
    loop {
        let mut wake = next_sync.min(next_pulse);
        // A lease end past what an `Instant` can hold is never waited for.
        if let Some(until) = c.lease.deadline().and_then(|d| c.origin.checked_add(d)) {
            wake = wake.min(until);
        }
        tokio::time::sleep_until(wake).await;
        let Some(inner) = inner.upgrade() else { break };
        #[cfg(test)]
        if c.shared
            .inject_panic
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            panic!("injected by a test");
        }
        let now = clock_now();
        c.check_lease(&inner, now);
        if now >= next_sync {
            let used = c.current;
            let ok = c.sync(&inner).await;
            if !ok {
                c.fail_over(used);
            }
            let now = clock_now();
            next_sync = if ok {
                c.sync_failures = 0;
                now + c.shared.config.sync_interval
            } else {
                c.sync_failures = c.sync_failures.saturating_add(1);
                now + c.backoff(c.sync_failures, c.shared.config.sync_interval)
            };
        }
        let now = clock_now();
        if now >= next_pulse {
            let used = c.current;
            let ok = c.pulse(&inner, now).await;
            if !ok {
                c.fail_over(used);
            }
            let now = clock_now();
            next_pulse = if ok {
                c.pulse_failures = 0;
                now + c.pulse_every
            } else {
                c.pulse_failures = c.pulse_failures.saturating_add(1);
                now + c.backoff(c.pulse_failures, c.pulse_every)
            };
        }
        c.check_lease(&inner, clock_now());
    }
}

impl Client {
    fn config(&self) -> &ControlPlane {
        &self.shared.config
    }

    /// A call to URL `used` failed: the next calls go to the next URL (unless another
    /// failure moved on already). A token stays: replicas of one control plane share their
    /// key; one that does not answers 401, and a new token is bought.
    fn fail_over(&mut self, used: usize) {
        if self.bases.len() < 2 || self.current != used {
            return;
        }
        self.current = (self.current + 1) % self.bases.len();
        self.base = self.bases[self.current].clone();
        info!(url = %self.base, "WaitState control plane call failed: trying the next URL");
        let url = self.base.clone();
        self.shared.update(|s| {
            s.failovers += 1;
            s.control_plane_url = url;
        });
    }

    /// xorshift64*: jitter only, not security.
    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Exponential from 1 s, capped at `cap`, with jitter: uniform in [d/2, d].
    fn backoff(&mut self, failures: u32, cap: Duration) -> Duration {
        let exp =
            Duration::from_secs(1).saturating_mul(1u32 << failures.clamp(1, 16).saturating_sub(1));
        let d = exp.min(cap).max(Duration::from_millis(50));
        let frac = (self.next_rand() % 1001) as f64 / 1000.0;
        d.mul_f64(0.5 + 0.5 * frac)
    }

    /// Time since the engine's origin, the lease's time base.
    fn since_origin(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    fn check_lease(&mut self, inner: &Inner, now: Instant) {
        let transition = self.lease.tick(self.since_origin(now));
        self.apply(inner, transition);
    }

    /// Act on a lease transition: each is returned once, so each is logged once.
    fn apply(&self, inner: &Inner, transition: Option<Transition>) {
        match transition {
            None => {}
            Some(Transition::EnterSafeMode(mode)) => {
                if Effect::of(mode).drop_remote_policy {
                    let _ = inner.engine.set_remote_policy(None);
                }
                self.shared.gate.set(self.lease.caps_rate());
                error!(
                    safe_mode = ?mode,
                    max_rps = self.config().safe_mode_max_rps,
                    "WaitState control plane lease expired: entering safe mode"
                );
                self.shared.update(|s| {
                    s.lease_valid = self.lease.is_valid();
                    s.safe_mode = self.lease.in_safe_mode();
                });
            }
            Some(Transition::LeaveSafeMode(_)) => {
                self.shared.gate.set(self.lease.caps_rate());
                info!("WaitState control plane reachable again: left safe mode");
            }
        }
    }

    /// Validate and install a policy; renew the lease, leave safe mode.
    fn install(&mut self, inner: &Inner, body: &[u8], source: &str) -> bool {
        let parsed = std::str::from_utf8(body)
            .map_err(|_| ConfigError::Toml("policy is not UTF-8".into()))
            .and_then(Policy::from_json);
        let policy = match parsed {
            Ok(p) => p,
            Err(e) => return self.refuse(&e, source),
        };
        let lease_seconds = policy.lease_duration_seconds;
        let hint = Duration::from_millis(policy.pulse_interval).clamp(MIN_PULSE, MAX_PULSE);
        if let Err(e) = inner.engine.set_remote_policy(Some(policy)) {
            return self.refuse(&e, source);
        }
        self.pulse_every = hint;
        let transition = self
            .lease
            .synced(self.since_origin(clock_now()), lease_seconds);
        self.apply(inner, transition);
        self.shared.update(|s| {
            s.synced = self.lease.is_synced();
            s.lease_valid = self.lease.is_valid();
            s.safe_mode = self.lease.in_safe_mode();
            s.pulse_interval = hint;
        });
        true
    }

    fn refuse(&self, e: &ConfigError, source: &str) -> bool {
        error!(error = %e, source, "control plane sent an invalid policy; the last good policy stays");
        self.shared.update(|s| s.policies_rejected += 1);
        false
    }

    async fn read_body(resp: reqwest::Response) -> Result<Vec<u8>, CallError> {
        let mut resp = resp;
        let mut out = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(CallError::Body("answer too large".into()));
                    }
                    out.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(out),
                Err(e) => return Err(CallError::Transport(e.without_url().to_string())),
            }
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Vec<u8>, CallError> {
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Transport(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(CallError::Status(status.as_u16()));
        }
        Self::read_body(resp).await
    }

    async fn token(&mut self) -> Result<(String, String), CallError> {
        if let Some(t) = &self.token
            && wall_clock_ms() < t.expires_at.saturating_sub(60_000)
        {
            return Ok((t.token.clone(), t.org_id.clone()));
        }
        let body = TokenRequest::new(&self.config().publish_key, &self.config().secret_key);
        let json = serde_json::to_vec(&body).map_err(|e| CallError::Body(e.to_string()))?;
        let req = self
            .http
            .post(format!("{}/v1/auth/token", self.base))
            .header("content-type", "application/json")
            .body(json);
        let answer = self.send(req).await?;
        let t: TokenResponse =
            serde_json::from_slice(&answer).map_err(|e| CallError::Body(e.to_string()))?;
        self.token = Some(Token {
            token: t.token.clone(),
            expires_at: t.expires_at,
            org_id: t.org_id.clone(),
        });
        Ok((t.token, t.org_id))
    }

    /// Token (cached until a minute before it expires), then the policy.
    async fn sync(&mut self, inner: &Inner) -> bool {
        let result = async {
            let (token, org) = self.token().await?;
            let mut req = self
                .http
                .get(format!("{}/v1/policy/{}", self.base, encode_path(&org)))
                .header("authorization", format!("Bearer {token}"))
                .header(HEADER_INSTANCE, &self.shared.instance_id);
            if let Some(site) = &self.config().site_id {
                req = req.header(HEADER_SITE, site);
            }
            let answer = self.send(req).await;
            if let Err(CallError::Status(401 | 403)) = &answer {
                // A control plane restarted with a new signing key: buy a new token next time.
                self.token = None;
            }
            answer
        }
        .await;
        let ok = match result {
            Ok(body) => self.install(inner, &body, "sync"),
            Err(e) => {
                warn!(error = %e, "WaitState sync failed");
                false
            }
        };
        self.shared.update(|s| {
            if ok {
                s.syncs_ok += 1;
            } else {
                s.syncs_failed += 1;
            }
        });
        ok
    }

    /// Send everything not yet acknowledged; install the answer.
    async fn pulse(&mut self, inner: &Inner, now: Instant) -> bool {
        let mut loaded = Vec::new();
        inner.engine.load_counters(&mut loaded);
        let current: Snapshot = loaded
            .into_iter()
            .map(|(t, c)| (t.as_str().to_owned(), (t.generation(), c)))
            .collect();
        self.trim_windows();
        let custom = std::mem::take(&mut *lock(&self.shared.custom));
        let windows = u32::try_from(self.cuts.len() + 1).unwrap_or(u32::MAX);
        let body = self.body(&current, &custom, windows);
        let json = match serde_json::to_vec(&body) {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "cannot encode a pulse");
                return self.pulse_failed(custom, current, now);
            }
        };
        let ts = wall_clock_ms().to_string();
        let signature = wire::sign(self.config().secret_key.as_bytes(), &json, &ts);
        let req = self
            .http
            .post(format!("{}/v1/pulse", self.base))
            .header(HEADER_ID, &self.config().publish_key)
            .header(HEADER_TIMESTAMP, &ts)
            .header(HEADER_SIGNATURE, signature)
            .header("content-type", "application/json")
            .body(json);
        match self.send(req).await {
            Ok(answer) => {
                // The telemetry is acknowledged whatever the answer holds.
                self.set_acked(current);
                *lock(&self.shared.acked_at) = Some(now.saturating_duration_since(self.origin));
                self.cuts.clear();
                self.window_start = now;
                self.shared.update(|s| {
                    s.pulses_ok += 1;
                    s.carried_windows = 0;
                });
                debug!(windows, "WaitState pulse acknowledged");
                self.install(inner, &answer, "pulse");
                true
            }
            Err(e) => {
                warn!(error = %e, windows, "WaitState pulse failed; its telemetry is carried into the next one");
                self.pulse_failed(custom, current, now)
            }
        }
    }

    /// What the control plane has (or, for dropped windows, will never have): here and in
    /// the shared part, for a restarted task.
    fn set_acked(&mut self, acked: Snapshot) {
        self.acked = Arc::new(acked);
        *lock(&self.shared.acked) = self.acked.clone();
    }

    /// Carry at most `carried_windows` windows: the oldest are dropped (and counted).
    fn trim_windows(&mut self) {
        while self.cuts.len() >= self.config().carried_windows {
            let Some(oldest) = self.cuts.pop_front() else {
                break;
            };
            let lost: u64 = oldest
                .iter()
                .map(|(t, c)| since(c, self.acked.get(t)).offered())
                .sum();
            warn!(
                requests = lost,
                "WaitState control plane unreachable for too long: dropping the oldest telemetry window"
            );
            self.set_acked(oldest);
            self.shared.update(|s| {
                s.windows_dropped += 1;
                s.requests_dropped += lost;
            });
        }
    }

    /// Keep what was not sent. A failure at least (about) a pulse interval after the open
    /// window started closes that window; retries within one do not add windows.
    fn pulse_failed(
        &mut self,
        custom: BTreeMap<(Option<String>, String), Aggregate>,
        current: Snapshot,
        now: Instant,
    ) -> bool {
        if now.saturating_duration_since(self.window_start) >= self.pulse_every.mul_f64(0.9) {
            self.cuts.push_back(current);
            self.window_start = now;
            self.trim_windows();
        }
        let mut map = lock(&self.shared.custom);
        for (k, agg) in custom {
            merge_custom(&mut map, k, &agg);
        }
        drop(map);
        let carried = self.cuts.len() + 1;
        self.shared.update(|s| {
            s.pulses_failed += 1;
            s.carried_windows = carried;
        });
        false
    }

    fn body(
        &self,
        current: &Snapshot,
        custom: &BTreeMap<(Option<String>, String), Aggregate>,
        windows: u32,
    ) -> PulseBody {
        let mut body = PulseBody {
            instance_id: self.shared.instance_id.clone(),
            site_id: self.config().site_id.clone(),
            ts: wall_clock_ms(),
            windows: (windows > 1).then_some(windows),
            ..PulseBody::default()
        };
        let mut by_tag: BTreeMap<&str, BTreeMap<String, Aggregate>> = BTreeMap::new();
        for ((tag, name), agg) in custom {
            let tag = tag.as_deref().unwrap_or(DEFAULT_TAG);
            by_tag.entry(tag).or_default().insert(name.clone(), *agg);
        }
        let (mut lat_sum_us, mut completed, mut errors) = (0u64, 0u64, 0u64);
        let mut tags: Vec<&String> = current.keys().collect();
        tags.sort();
        for tag in tags {
            let d = since(&current[tag], self.acked.get(tag));
            let c = &current[tag].1;
            let custom = by_tag.remove(tag.as_str());
            if d.offered() == 0 && d.completed == 0 && c.in_flight == 0 && custom.is_none() {
                continue;
            }
            body.usage_delta += d.offered();
            body.bounced_units += d.rejected_total();
            lat_sum_us += d.latency_sum_us;
            completed += d.completed;
            errors += d.errors;
            body.tag_metrics
                .push(tag_metric(tag, &d, c.in_flight, custom));
        }
        // Custom metrics of tags the engine no longer lists (cannot happen today).
        for (tag, metrics) in by_tag {
            let mut m = TagMetric::default();
            m.tag = tag.to_owned();
            m.custom_metrics = Some(metrics);
            body.tag_metrics.push(m);
        }
        let mut metrics = PulseMetrics::default();
        metrics.latency = mean_ms(lat_sum_us, completed);
        metrics.errors = errors as f64;
        body.metrics = metrics;
        body
    }
}

fn mean_ms(sum_us: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        sum_us as f64 / n as f64 / 1000.0
    }
}

fn tag_metric(
    tag: &str,
    d: &TagCounters,
    in_flight: u64,
    custom: Option<BTreeMap<String, Aggregate>>,
) -> TagMetric {
    let mut m = TagMetric::default();
    m.tag = tag.to_owned();
    m.latency = mean_ms(d.latency_sum_us, d.completed);
    m.count = d.offered();
    if !d.latency.is_empty() {
        m.latency_buckets = Some(d.latency.v1_buckets().to_vec());
        m.histogram = Some(d.latency.to_sparse());
    }
    m.custom_metrics = custom;
    m.admitted = Some(d.admitted);
    m.admitted_weight = Some(d.admitted_weight);
    let rejected: BTreeMap<String, u64> = Reason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), d.rejected_for(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    if !rejected.is_empty() {
        m.rejected = Some(rejected);
    }
    m.would_reject = (d.would_reject > 0).then_some(d.would_reject);
    m.completed = Some(d.completed);
    m.errors = Some(d.errors);
    m.in_flight = Some(in_flight);
    m
}

/// Percent-encode a path segment (everything but unreserved characters).
fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
