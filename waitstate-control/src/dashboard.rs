//! The live dashboard at `/`: the fleet now, per-tag admitted / shed / p95 over the last
//! five minutes as charts, the fleet rules and their states, the fleet policy.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (HTML; its script and style are embedded in the binary, nothing from a CDN) |
//! | `GET /dashboard/app.js`, `GET /dashboard/style.css` | its assets |
//! | `GET /dashboard/api/fleet?org=&site=&page=&per_page=&shards_page=` | everything the page shows but the instances, as JSON |
//! | `GET /dashboard/api/instances?org=&site=&page=&per_page=&sort=` | a page of a fleet's instances (`sort=id`, the default, or `stale`: the longest silent first), as JSON |
//!
//! The page polls the JSON every two seconds. The JSON is as private as `/metrics`: when
//! `server.metrics_token` is set it needs `Authorization: Bearer <metrics_token>` (the page
//! asks for the token once and keeps it in the tab's session storage; `/#token=...` works
//! too). The page itself holds no data and is open.
//!
//! **Scale.** Nothing on the page grows with the number of instances: a fleet (an org's
//! site) is shown as its aggregate (instances counted, counts added, histograms merged, as
//! the fleet rules see it), fleets are listed a page at a time, and a fleet's tags a page
//! at a time (busiest first). The charts draw the busiest six tags. The history is sampled
//! here every two seconds from [`AppState::shard`] (the same view tests and `/metrics` read;
//! with Redis, as this replica last read it), kept for five minutes per fleet and capped per
//! sample, so 10,000 instances cost what 10 do. The one list that does grow with them,
//! the instances of a fleet (each one's last pulse, the version of the fleet policy that
//! pulse was answered with, what is left of that answer's lease), is sorted and cut into
//! pages where it is held ([`AppState::instances`]): a request copies one page (at most
//! 100), and the page asks for it only while it is shown.
//!
//! **What is approximate.** "Last pulse" is when this dashboard last saw the fleet's pulse
//! count move (within one sampling period); the policy's version is a fingerprint of the
//! fleet policy, with the time this dashboard saw it change.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::time::Instant;
use waitstate_core::histogram::Histogram;
use waitstate_core::{Phase, Policy, TagCounters};

use crate::ShardView;
use crate::auth::MetricsScraper;
use crate::fleet::policy_version;
use crate::instances::{InstanceOrder, InstancePage};
use crate::state::{AppState, lock};

/// How often the history is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept per fleet: five minutes.
const HISTORY: usize = 150;
/// Tags kept per sample (the busiest); the rest are added into `(other)`.
const TAGS_PER_SAMPLE: usize = 24;
/// Tags drawn in the charts.
const CHART_TAGS: usize = 6;
/// Largest page of tags or fleets.
const MAX_PER_PAGE: usize = 100;
/// The tag that holds the tags past [`TAGS_PER_SAMPLE`] in a sample.
const OTHER: &str = "(other)";

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
/// Only this origin's own script, style, images and JSON: nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes over `state` (merged into [`crate::router`]). Starts the sampler
/// when a tokio runtime is there; it ends when the routes are dropped.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let dash = Arc::new(Dashboard::default());
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(sample_forever(Arc::downgrade(&dash), state.clone()));
    }
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/dashboard/api/instances",
            get(
                |State(state): State<AppState>, _: MetricsScraper, RawQuery(q): RawQuery| async move {
                    let q = FleetQuery::parse(q.as_deref().unwrap_or_default());
                    instances(&state, &q).await
                },
            ),
        )
        .route(
            "/dashboard/api/fleet",
            get(
                move |State(state): State<AppState>, _: MetricsScraper, RawQuery(q): RawQuery| {
                    let dash = dash.clone();
                    let q = FleetQuery::parse(q.as_deref().unwrap_or_default());
                    async move { fleet(&dash, &state, &q) }
                },
            ),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

async fn sample_forever(dash: Weak<Dashboard>, state: AppState) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(dash) = dash.upgrade() else { return };
        dash.sample(&state, Instant::now());
    }
}

/// The history of every fleet seen.
#[derive(Debug, Default)]
struct Dashboard {
    fleets: Mutex<HashMap<(String, String), FleetHistory>>,
    /// When the last sample was taken (a request samples when the sampler is late or
    /// absent).
    sampled: Mutex<Option<Instant>>,
}

#[derive(Debug, Default)]
struct FleetHistory {
    /// The cumulative counters at the last sample.
    last: BTreeMap<String, TagCounters>,
    last_at: Option<Instant>,
    pulses: u64,
    last_pulse: Option<Instant>,
    policy_version: String,
    policy_since: Option<Instant>,
    frames: VecDeque<Frame>,
}

/// One sample of a fleet: per tag, rates and p95 over the period since the one before.
#[derive(Debug, Clone)]
struct Frame {
    at: Instant,
    tags: Vec<TagPoint>,
}

#[derive(Debug, Clone)]
struct TagPoint {
    tag: Arc<str>,
    admitted_rps: f64,
    shed_rps: f64,
    p95_ms: Option<f64>,
}

/// Every fleet this control plane holds, as `(org, site)`, from the `/metrics` text (the
/// only list of fleets the state offers), plus each configured org's default site.
fn fleets(state: &AppState) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in state.metrics().lines() {
        let Some(rest) = line.strip_prefix("waitstate_instances{") else {
            continue;
        };
        if let Some((org, site)) = parse_org_site(rest) {
            out.push((org, site));
        }
    }
    for key in &state.config().keys {
        let pair = (key.org_id.clone(), String::new());
        if !out.contains(&pair) && state.shard(&pair.0, "").is_some() {
            out.push(pair);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `org="a",site="b"} ...` → `("a", "b")`, unescaping `\\`, `\"` and `\n`.
fn parse_org_site(labels: &str) -> Option<(String, String)> {
    let (org, rest) = quoted(labels.strip_prefix("org=\"")?)?;
    let (site, _) = quoted(rest.strip_prefix(",site=\"")?)?;
    Some((org, site))
}

/// The escaped text up to the closing quote, unescaped, and what follows the quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn shed_of(c: &TagCounters) -> u64 {
    c.rejected.iter().fold(0u64, |a, b| a.saturating_add(*b))
}

/// A stable fingerprint of a policy ([`policy_version`]), as shown.
fn fingerprint(policy: &Policy) -> String {
    version_text(policy_version(policy))
}

fn version_text(v: u32) -> String {
    format!("{v:08x}")
}

impl Dashboard {
    /// Take one sample of every fleet.
    fn sample(&self, state: &AppState, now: Instant) {
        *lock(&self.sampled) = Some(now);
        let list = fleets(state);
        let views: Vec<((String, String), ShardView)> = list
            .into_iter()
            .filter_map(|(org, site)| {
                let view = state.shard(&org, &site)?;
                Some(((org, site), view))
            })
            .collect();
        let mut fleets = lock(&self.fleets);
        for (key, view) in views {
            fleets.entry(key).or_default().push(view, now);
        }
    }

    /// Sample now if the sampler has not for a period (no runtime, or a stalled one).
    fn catch_up(&self, state: &AppState, now: Instant) {
        let due = lock(&self.sampled)
            .is_none_or(|at| now.saturating_duration_since(at) >= SAMPLE_EVERY * 2);
        if due {
            self.sample(state, now);
        }
    }
}

impl FleetHistory {
    fn push(&mut self, view: ShardView, now: Instant) {
        if view.pulses != self.pulses {
            self.pulses = view.pulses;
            self.last_pulse = Some(now);
        }
        let version = fingerprint(&view.policy);
        if version != self.policy_version {
            self.policy_version = version;
            self.policy_since = Some(now);
        }
        if let Some(at) = self.last_at {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs > 0.0 {
                let frame = self.frame(&view.tags, now, secs);
                if self.frames.len() == HISTORY {
                    self.frames.pop_front();
                }
                self.frames.push_back(frame);
            }
        }
        self.last = view.tags;
        self.last_at = Some(now);
    }

    fn frame(&self, tags: &BTreeMap<String, TagCounters>, now: Instant, secs: f64) -> Frame {
        let mut points: Vec<(u64, TagPoint, Histogram)> = tags
            .iter()
            .map(|(tag, c)| {
                let delta = match self.last.get(tag) {
                    Some(before) => c.since(before),
                    None => c.clone(),
                };
                let offered = delta.admitted.saturating_add(shed_of(&delta));
                let point = TagPoint {
                    tag: Arc::from(tag.as_str()),
                    admitted_rps: delta.admitted as f64 / secs,
                    shed_rps: shed_of(&delta) as f64 / secs,
                    p95_ms: delta.latency.quantile_ms(0.95),
                };
                (offered, point, delta.latency)
            })
            .collect();
        points.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.tag.cmp(&b.1.tag)));
        let mut kept: Vec<TagPoint> = Vec::with_capacity(TAGS_PER_SAMPLE + 1);
        let mut rest: Option<(TagPoint, Histogram)> = None;
        for (i, (_, point, latency)) in points.into_iter().enumerate() {
            if i < TAGS_PER_SAMPLE {
                kept.push(point);
                continue;
            }
            let (acc, h) = rest.get_or_insert_with(|| {
                (
                    TagPoint {
                        tag: Arc::from(OTHER),
                        admitted_rps: 0.0,
                        shed_rps: 0.0,
                        p95_ms: None,
                    },
                    Histogram::new(),
                )
            });
            acc.admitted_rps += point.admitted_rps;
            acc.shed_rps += point.shed_rps;
            h.merge(&latency);
        }
        if let Some((mut acc, h)) = rest {
            acc.p95_ms = h.quantile_ms(0.95);
            kept.push(acc);
        }
        Frame {
            at: now,
            tags: kept,
        }
    }
}

/// The query of `/dashboard/api/fleet`.
#[derive(Debug, Default, PartialEq)]
struct FleetQuery {
    /// The fleet to show (default: the first).
    org: Option<String>,
    site: Option<String>,
    /// The page of its tags (from 0) and its size (default 20, at most 100).
    page: usize,
    per_page: Option<usize>,
    /// The page of the fleet list (20 a page).
    shards_page: usize,
    /// The instances' order (`id`, `stale`).
    sort: InstanceOrder,
}

impl FleetQuery {
    /// `org=a&site=b&page=1&per_page=20&shards_page=0&sort=stale`, percent-decoded; unknown keys and
    /// numbers that do not parse are ignored.
    fn parse(query: &str) -> Self {
        let mut q = Self::default();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            match k {
                "org" => q.org = Some(v),
                "site" => q.site = Some(v),
                "page" => q.page = v.parse().unwrap_or(0),
                "per_page" => q.per_page = v.parse().ok(),
                "shards_page" => q.shards_page = v.parse().unwrap_or(0),
                "sort" if v == "stale" => q.sort = InstanceOrder::Stalest,
                _ => {}
            }
        }
        q
    }
}

/// `%XX` and `+` decoded; invalid UTF-8 replaced.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match b[i] {
            b'%' if i + 2 < b.len() => hex(b[i + 1]).zip(hex(b[i + 2])),
            _ => None,
        };
        match (b[i], decoded) {
            (_, Some((hi, lo))) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (c, None) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Serialize)]
struct FleetAnswer {
    /// Seconds between samples of the charts.
    sample_seconds: f64,
    totals: Totals,
    shards: Paged<ShardRow>,
    selected: Option<Selected>,
}

#[derive(Debug, Default, Serialize)]
struct Totals {
    fleets: usize,
    instances: usize,
    rules_active: usize,
    admitted: u64,
    shed: u64,
}

#[derive(Debug, Serialize)]
struct Paged<T> {
    total: usize,
    page: usize,
    per_page: usize,
    items: Vec<T>,
}

#[derive(Debug, Serialize)]
struct ShardRow {
    org: String,
    site: String,
    instances: usize,
    rules_active: usize,
    admitted: u64,
    shed: u64,
}

#[derive(Debug, Serialize)]
struct Selected {
    org: String,
    site: String,
    instances: usize,
    pulses: u64,
    last_pulse_seconds_ago: Option<f64>,
    policy_version: String,
    policy_changed_seconds_ago: Option<f64>,
    lease_seconds: u64,
    pulse_interval_seconds: f64,
    policy: Policy,
    /// The fleet policy's concurrency limit, if a rule or `[limits]` sets one (each
    /// instance's learned admission limit is in its own `/metrics`, see waitstate-metrics).
    admission_limit: Option<u64>,
    rules: Vec<RuleRow>,
    tags: Paged<TagRow>,
    series: Series,
}

#[derive(Debug, Serialize)]
struct RuleRow {
    rule: String,
    state: &'static str,
    step: u32,
    active: bool,
    dry_run: bool,
    value: Option<f64>,
    shed_level: usize,
}

#[derive(Debug, Serialize)]
struct TagRow {
    tag: String,
    priority: i64,
    admitted: u64,
    shed: u64,
    errors: u64,
    p95_ms: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Series {
    /// Seconds before now of each point, oldest first.
    ago: Vec<f64>,
    tags: Vec<TagSeries>,
}

#[derive(Debug, Serialize)]
struct TagSeries {
    tag: String,
    admitted_rps: Vec<f64>,
    shed_rps: Vec<f64>,
    p95_ms: Vec<Option<f64>>,
}

fn page_of<T>(mut all: Vec<T>, page: usize, per_page: usize) -> Paged<T> {
    let total = all.len();
    let start = page.saturating_mul(per_page).min(total);
    let end = start.saturating_add(per_page).min(total);
    let items = all.drain(start..end).collect();
    Paged {
        total,
        page,
        per_page,
        items,
    }
}

fn rule_row(r: &waitstate_core::RuleStatus) -> RuleRow {
    let (state, step) = match r.phase {
        Phase::Idle => ("idle", 0),
        Phase::Pending => ("pending", 0),
        Phase::Firing => ("firing", 0),
        Phase::Cooling => ("cooling", 0),
        Phase::Releasing(k) => ("releasing", k),
        _ => ("firing", 0),
    };
    RuleRow {
        rule: r.rule.clone(),
        state,
        step,
        active: r.is_active(),
        dry_run: r.dry_run,
        value: r.value.filter(|v| v.is_finite()),
        shed_level: r.shed_level,
    }
}

/// The answer of `/dashboard/api/instances`.
#[derive(Debug, Serialize)]
struct InstancesAnswer {
    /// The fleet (`None`: none yet).
    org: Option<String>,
    site: Option<String>,
    /// `id` or `stale`.
    sort: &'static str,
    /// The lease every answer carries.
    lease_seconds: u64,
    /// The version of the fleet policy now.
    policy_version: Option<String>,
    instances: Paged<InstanceRow>,
}

#[derive(Debug, Serialize)]
struct InstanceRow {
    id: String,
    last_pulse_seconds_ago: f64,
    /// The version of the fleet policy its last pulse was answered with.
    policy_version: Option<String>,
    /// Whether that is the fleet policy now.
    current: bool,
    lease_left_seconds: f64,
}

async fn instances(state: &AppState, q: &FleetQuery) -> Response {
    let (org, site) = match &q.org {
        Some(org) => (org.clone(), q.site.clone().unwrap_or_default()),
        None => fleets(state).into_iter().next().unwrap_or_default(),
    };
    let per_page = q.per_page.unwrap_or(20);
    let found = if org.is_empty() {
        Ok(None)
    } else {
        state.instances(&org, &site, q.sort, q.page, per_page).await
    };
    let Ok(page) = found else {
        // With Redis: it does not answer.
        let mut res = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"store_unavailable"}"#,
        )
            .into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return res;
    };
    let now = state.shard(&org, &site).map(|v| fingerprint(&v.policy));
    let known = page.is_some();
    let page = page.unwrap_or(InstancePage {
        total: 0,
        page: q.page,
        per_page: crate::instances::bounds(0, 0, per_page).1,
        items: Vec::new(),
    });
    let items = page
        .items
        .into_iter()
        .map(|i| {
            let version = i.policy_version.map(version_text);
            InstanceRow {
                current: version.is_some() && version == now,
                id: i.id,
                last_pulse_seconds_ago: i.last_pulse_ago.as_secs_f64(),
                policy_version: version,
                lease_left_seconds: i.lease_left.as_secs_f64(),
            }
        })
        .collect();
    json(&InstancesAnswer {
        org: known.then(|| org.clone()),
        site: known.then(|| site.clone()),
        sort: match q.sort {
            InstanceOrder::Stalest => "stale",
            _ => "id",
        },
        lease_seconds: state.config().server.lease.as_secs(),
        policy_version: now,
        instances: Paged {
            total: page.total,
            page: page.page,
            per_page: page.per_page,
            items,
        },
    })
}

/// `200`, JSON, not cached.
fn json<T: Serialize>(answer: &T) -> Response {
    match serde_json::to_vec(answer) {
        Ok(body) => {
            let mut res = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn fleet(dash: &Dashboard, state: &AppState, q: &FleetQuery) -> Response {
    let now = Instant::now();
    dash.catch_up(state, now);
    let list = fleets(state);
    let mut totals = Totals {
        fleets: list.len(),
        ..Totals::default()
    };
    let mut rows = Vec::with_capacity(list.len());
    let mut selected_view = None;
    let want = match (&q.org, &q.site) {
        (Some(org), site) => Some((org.clone(), site.clone().unwrap_or_default())),
        (None, _) => None,
    };
    for (org, site) in list {
        let Some(view) = state.shard(&org, &site) else {
            continue;
        };
        let admitted = view
            .tags
            .values()
            .fold(0u64, |a, c| a.saturating_add(c.admitted));
        let shed = view
            .tags
            .values()
            .fold(0u64, |a, c| a.saturating_add(shed_of(c)));
        let rules_active = view.rules.iter().filter(|r| r.is_active()).count();
        totals.instances += view.instances;
        totals.rules_active += rules_active;
        totals.admitted = totals.admitted.saturating_add(admitted);
        totals.shed = totals.shed.saturating_add(shed);
        let pick = match &want {
            Some((o, s)) => *o == org && *s == site,
            None => selected_view.is_none(),
        };
        if pick {
            selected_view = Some((org.clone(), site.clone(), view.clone()));
        }
        rows.push(ShardRow {
            org,
            site,
            instances: view.instances,
            rules_active,
            admitted,
            shed,
        });
    }
    // Busiest fleets first.
    rows.sort_by(|a, b| {
        (b.admitted + b.shed)
            .cmp(&(a.admitted + a.shed))
            .then_with(|| (&a.org, &a.site).cmp(&(&b.org, &b.site)))
    });
    let per_page = q.per_page.unwrap_or(20).clamp(1, MAX_PER_PAGE);
    let selected = selected_view.map(|(org, site, view)| {
        let fleets = lock(&dash.fleets);
        let history = fleets.get(&(org.clone(), site.clone()));
        select(state, org, site, view, history, q.page, per_page, now)
    });
    json(&FleetAnswer {
        sample_seconds: SAMPLE_EVERY.as_secs_f64(),
        totals,
        shards: page_of(rows, q.shards_page, 20),
        selected,
    })
}

#[allow(clippy::too_many_arguments)]
fn select(
    state: &AppState,
    org: String,
    site: String,
    view: ShardView,
    history: Option<&FleetHistory>,
    page: usize,
    per_page: usize,
    now: Instant,
) -> Selected {
    let engine = &state.config().engine;
    let server = &state.config().server;
    let ago = |at: Option<Instant>| at.map(|at| now.saturating_duration_since(at).as_secs_f64());
    let mut tags: Vec<TagRow> = view
        .tags
        .iter()
        .map(|(tag, c)| TagRow {
            tag: tag.clone(),
            priority: engine.priority_of(tag),
            admitted: c.admitted,
            shed: shed_of(c),
            errors: c.errors,
            p95_ms: c.latency.quantile_ms(0.95),
        })
        .collect();
    tags.sort_by(|a, b| {
        (b.admitted + b.shed)
            .cmp(&(a.admitted + a.shed))
            .then_with(|| a.tag.cmp(&b.tag))
    });
    let series = history.map(series_of).unwrap_or_default();
    let series = Series {
        ago: history
            .map(|h| {
                h.frames
                    .iter()
                    .map(|f| now.saturating_duration_since(f.at).as_secs_f64())
                    .collect()
            })
            .unwrap_or_default(),
        ..series
    };
    Selected {
        org,
        site,
        instances: view.instances,
        pulses: view.pulses,
        last_pulse_seconds_ago: ago(history.and_then(|h| h.last_pulse)),
        policy_version: fingerprint(&view.policy),
        policy_changed_seconds_ago: ago(history.and_then(|h| h.policy_since)),
        lease_seconds: server.lease.as_secs(),
        pulse_interval_seconds: server.pulse_interval.as_secs_f64(),
        admission_limit: view.policy.concurrency_limit,
        policy: view.policy,
        rules: view.rules.iter().map(rule_row).collect(),
        tags: page_of(tags, page, per_page),
        series,
    }
}

/// The busiest [`CHART_TAGS`] tags over the history, each as one series per measure.
fn series_of(h: &FleetHistory) -> Series {
    let mut volume: HashMap<&str, f64> = HashMap::new();
    for f in &h.frames {
        for p in &f.tags {
            *volume.entry(&p.tag).or_default() += p.admitted_rps + p.shed_rps;
        }
    }
    let mut names: Vec<(&str, f64)> = volume.into_iter().collect();
    names.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    names.truncate(CHART_TAGS);
    let tags = names
        .into_iter()
        .map(|(name, _)| {
            let point = |f: &Frame| f.tags.iter().find(|p| &*p.tag == name).cloned();
            let points: Vec<Option<TagPoint>> = h.frames.iter().map(point).collect();
            TagSeries {
                tag: name.to_owned(),
                admitted_rps: points
                    .iter()
                    .map(|p| p.as_ref().map_or(0.0, |p| p.admitted_rps))
                    .collect(),
                shed_rps: points
                    .iter()
                    .map(|p| p.as_ref().map_or(0.0, |p| p.shed_rps))
                    .collect(),
                p95_ms: points
                    .iter()
                    .map(|p| p.as_ref().and_then(|p| p.p95_ms))
                    .collect(),
            }
        })
        .collect();
    Series {
        ago: Vec::new(),
        tags,
    }
}

#[cfg(test)]
mod tests;
