//! The adapter parity table: one list of cases, each an engine state and a request, run
//! through `waitstate-tower` (a `GateLayer` on a `tower::service_fn`), `waitstate-axum` (a
//! `Router` with the layer) and `waitstate-actix` (`App::wrap(Gate)` through
//! `actix_web::test`). Every adapter must give the same [`Answer`]: status, header fields,
//! body, and the rejection in the response's extensions (or, when admitted, the admission
//! the handler saw).
//!
//! actix-web 4 is on `http` 0.2, tower and axum on `http` 1: an [`Answer`] holds plain
//! strings and numbers, so the three compare directly.
//!
//! Each adapter gets its own engine in the case's state ([`prepare`]), so one adapter's
//! traffic never spends another's budget. Run under `tokio::time::pause()` (inside
//! `#[actix_web::test]`, which the actix driver needs): the engines read tokio's clock.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use actix_web::HttpMessage as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt};
use waitstate_axum::Admitted;
use waitstate_core::tagger::{Admission, HeaderTagger};
use waitstate_core::{Config, Permit, Policy, Quota, Reason, Rejection, WaitState, adapter};

/// The tag header every case's tagger reads (the default tagger's).
pub const TAG_HEADER: &str = "x-waitstate-tag";
/// The weight header every case's tagger reads.
pub const WEIGHT_HEADER: &str = "x-weight";
/// The path the tagger exempts.
pub const EXEMPT_PATH: &str = "/healthz";
/// The content type of the gRPC requests.
pub const GRPC_CONTENT_TYPE: &str = "application/grpc+proto";

/// The tiers every case's engine knows.
const TIERS: [(&str, i64); 3] = [("enterprise", 100), ("pro", 50), ("free", 10)];

/// The tagger every adapter gets: tag from [`TAG_HEADER`], weight from [`WEIGHT_HEADER`],
/// [`EXEMPT_PATH`] exempt.
pub fn tagger() -> HeaderTagger {
    HeaderTagger::new()
        .weight_header(WEIGHT_HEADER)
        .exempt_path(EXEMPT_PATH)
}

/// How a case's engine is made and put in its state.
#[derive(Clone, Copy, Debug)]
pub enum Engine {
    /// The tiers, and this policy installed as the control plane's
    /// (`engine.set_remote_policy`).
    Remote(fn(&mut Policy)),
    /// The tiers, and this policy installed as the local rules' (`engine.set_local_policy`).
    Local(fn(&mut Policy)),
    /// The tiers in dry run, and this policy installed as the control plane's.
    DryRun(fn(&mut Policy)),
    /// This TOML configuration after the tiers (a `[limits]` table, say).
    Toml(&'static str),
    /// An instance whose control plane lease has expired: safe mode `fixed_rps`, at this
    /// many requests a second.
    LeaseExpired(f64),
}

/// What happens between making the engine and the request.
#[derive(Clone, Copy, Debug)]
pub enum Before {
    /// Nothing.
    Nothing,
    /// Admit requests of this tag (weight 1) until one is rejected: the budget is spent.
    Spend(&'static str),
    /// Admit this many requests of this tag and hold them in flight during the request.
    Hold(&'static str, usize),
}

/// The request: path, tag and weight headers; gRPC or not is the run's choice.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// The path.
    pub path: &'static str,
    /// The [`TAG_HEADER`], if any.
    pub tag: Option<&'static str>,
    /// The [`WEIGHT_HEADER`], if any.
    pub weight: Option<&'static str>,
}

impl Request {
    /// `GET /` (`POST /` for gRPC) with this tag.
    pub const fn tag(tag: &'static str) -> Self {
        Self {
            path: "/",
            tag: Some(tag),
            weight: None,
        }
    }

    /// With this weight header.
    pub const fn weight(mut self, weight: &'static str) -> Self {
        self.weight = Some(weight);
        self
    }
}

/// What the gate must do with a case's request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    /// Reject it for this reason.
    Rejected(Reason),
    /// Let it through; the handler sees this admission (tag, weight, dry-run verdict).
    Admitted(&'static str, f64, Option<Reason>),
    /// Let it through ungated: the handler sees no admission.
    Exempt,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// What it shows.
    pub name: &'static str,
    /// The engine and its state.
    pub engine: Engine,
    /// What happens before the request.
    pub before: Before,
    /// The request.
    pub request: Request,
    /// Answer `kill_signal` with 503 instead of 429 (`DefaultRejection::kill_signal_status`).
    pub kill_signal_503: bool,
    /// What the gate must do.
    pub expect: Expect,
}

impl Case {
    const fn new(name: &'static str, engine: Engine, request: Request, expect: Expect) -> Self {
        Self {
            name,
            engine,
            before: Before::Nothing,
            request,
            kill_signal_503: false,
            expect,
        }
    }

    const fn before(mut self, before: Before) -> Self {
        self.before = before;
        self
    }

    const fn kill_signal_503(mut self) -> Self {
        self.kill_signal_503 = true;
        self
    }

    /// The status a kill-signal rejection has in this case.
    pub fn kill_signal_status(&self) -> u16 {
        if self.kill_signal_503 { 503 } else { 429 }
    }
}

/// The table: every [`Reason`] at least once, and the admitted, dry-run and exempt cases.
pub fn cases() -> Vec<Case> {
    use Engine::{DryRun, LeaseExpired, Local, Remote, Toml};
    use Expect::{Admitted, Exempt, Rejected};
    let free = Request::tag("free");
    vec![
        Case::new(
            "admitted",
            Remote(|_| {}),
            Request::tag("enterprise").weight("2.5"),
            Admitted("enterprise", 2.5, None),
        ),
        Case::new(
            "untagged requests count under the default tag",
            Remote(|_| {}),
            Request {
                path: "/",
                tag: None,
                weight: None,
            },
            Admitted(waitstate_core::DEFAULT_TAG, 1.0, None),
        ),
        Case::new(
            "exempt path",
            Remote(|p| p.kill_signal = true),
            Request {
                path: EXEMPT_PATH,
                ..free
            },
            Exempt,
        ),
        Case::new(
            "dry run marks what it would reject",
            DryRun(|p| {
                p.tag_max_weights.insert("free".into(), 0.0);
            }),
            free,
            Admitted("free", 1.0, Some(Reason::TagBlocked)),
        ),
        Case::new(
            "kill_signal",
            Remote(|p| p.kill_signal = true),
            Request::tag("enterprise"),
            Rejected(Reason::KillSignal),
        ),
        Case::new(
            "kill_signal answered 503",
            Remote(|p| p.kill_signal = true),
            Request::tag("enterprise"),
            Rejected(Reason::KillSignal),
        )
        .kill_signal_503(),
        Case::new(
            "a 503 for kill_signal leaves other reasons at 429",
            Remote(|p| {
                p.tag_max_weights.insert("free".into(), 0.0);
            }),
            free,
            Rejected(Reason::TagBlocked),
        )
        .kill_signal_503(),
        Case::new(
            "global_block",
            Remote(|p| p.global_max_weight = 0.0),
            Request::tag("enterprise"),
            Rejected(Reason::GlobalBlock),
        ),
        Case::new(
            "tag_blocked",
            Remote(|p| {
                p.tag_max_weights.insert("free".into(), 0.0);
            }),
            free,
            Rejected(Reason::TagBlocked),
        ),
        Case::new(
            "tag_blocked by a local rule's policy",
            Local(|p| {
                p.tag_max_weights.insert("free".into(), 0.0);
            }),
            free,
            Rejected(Reason::TagBlocked),
        ),
        Case::new(
            "over_weight",
            Remote(|p| p.global_max_weight = 5.0),
            Request::tag("pro").weight("10"),
            Rejected(Reason::OverWeight),
        ),
        Case::new(
            "over_weight: a NaN weight",
            Remote(|_| {}),
            Request::tag("pro").weight("NaN"),
            Rejected(Reason::OverWeight),
        ),
        Case::new(
            "lease_expired",
            LeaseExpired(0.5),
            Request::tag("enterprise"),
            Rejected(Reason::LeaseExpired),
        )
        .before(Before::Spend("enterprise")),
        Case::new(
            "throttled",
            Remote(|p| {
                p.tag_throttles.insert("free".into(), 0.0);
            }),
            free,
            Rejected(Reason::Throttled),
        ),
        Case::new(
            "rate_limited by [limits]",
            Toml("[limits]\nrate = { free = 2 }\n"),
            free,
            Rejected(Reason::RateLimited),
        )
        .before(Before::Spend("free")),
        Case::new(
            "rate_limited by a control plane's policy",
            Remote(|p| {
                p.tag_rate_limits.insert("pro".into(), 0.25);
            }),
            Request::tag("pro"),
            Rejected(Reason::RateLimited),
        )
        .before(Before::Spend("pro")),
        Case::new(
            "concurrency_limited by [limits]",
            Toml("[limits]\nconcurrency = 2\n"),
            Request::tag("enterprise"),
            Rejected(Reason::ConcurrencyLimited),
        )
        .before(Before::Hold("enterprise", 2)),
        Case::new(
            "priority_shed",
            Remote(|p| p.priority_floor = Some(50)),
            free,
            Rejected(Reason::PriorityShed),
        ),
        Case::new(
            "above the priority floor",
            Remote(|p| p.priority_floor = Some(50)),
            Request::tag("pro"),
            Admitted("pro", 1.0, None),
        ),
    ]
}

/// An engine in a case's state, and what keeps it there.
#[derive(Debug)]
pub struct Prepared {
    /// The engine the adapter gates with.
    pub ws: WaitState,
    /// Requests held in flight ([`Before::Hold`]) until the request is answered.
    pub held: Vec<Permit>,
}

/// Make a case's engine and put it in the case's state.
///
/// # Panics
/// When the case's engine cannot be made, or its state cannot be reached.
pub async fn prepare(case: &Case) -> Prepared {
    let tiers = || {
        TIERS
            .iter()
            .fold(WaitState::builder(), |b, (t, p)| b.tag(*t, *p))
    };
    let remote = |ws: &WaitState, edit: fn(&mut Policy)| {
        let mut p = Policy::default();
        edit(&mut p);
        ws.engine().set_remote_policy(Some(p)).unwrap();
    };
    let ws = match case.engine {
        Engine::Remote(edit) => {
            let ws = tiers().build().unwrap();
            remote(&ws, edit);
            ws
        }
        Engine::DryRun(edit) => {
            let ws = tiers().dry_run(true).build().unwrap();
            remote(&ws, edit);
            ws
        }
        Engine::Local(edit) => {
            let ws = tiers().build().unwrap();
            let mut p = Policy::default();
            edit(&mut p);
            ws.engine().set_local_policy(p, Policy::default()).unwrap();
            ws
        }
        Engine::Toml(text) => {
            let tags: String = TIERS.iter().map(|(t, p)| format!("{t} = {p}\n")).collect();
            let config = Config::from_toml_str(&format!("[tags]\n{tags}{text}")).unwrap();
            WaitState::from_config(config).unwrap()
        }
        Engine::LeaseExpired(max_rps) => crate::control::lapsed_instance(max_rps).await,
    };
    let held = match case.before {
        Before::Nothing => Vec::new(),
        Before::Spend(tag) => {
            let spent = (0..1000).find(|_| ws.admit(tag, 1.0).is_err());
            assert!(
                spent.is_some(),
                "{}: the budget of {tag} never ran out",
                case.name
            );
            Vec::new()
        }
        Before::Hold(tag, n) => (0..n).map(|_| ws.admit(tag, 1.0).unwrap()).collect(),
    };
    Prepared { ws, held }
}

/// The rejection in a response's extensions. Two are equal when reason, tag, priority,
/// retry hint and quota are.
#[derive(Clone, Debug)]
pub struct Seen(pub Rejection);

impl Seen {
    fn key(&self) -> (Reason, &str, i64, Duration, Option<Quota>) {
        let r = &self.0;
        (
            r.reason(),
            r.tag(),
            r.priority(),
            r.retry_after(),
            r.quota(),
        )
    }
}

impl PartialEq for Seen {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

/// What an adapter answered, free of its `http` version.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Every header field but `content-length` (framing, which axum sets and the others
    /// leave to the server), names in lower case, one value per name (the gate sets each
    /// once).
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
    /// The [`Rejection`] in the response's extensions.
    pub rejection: Option<Seen>,
}

impl Answer {
    /// What the gate must answer to `rejection`: `waitstate-core`'s rendering
    /// ([`adapter::render`]), the rejection in the extensions.
    pub fn rendered(rejection: &Rejection, grpc: bool, kill_signal_status: u16) -> Self {
        let r = adapter::render(rejection, grpc, kill_signal_status);
        Self {
            status: r.status,
            headers: r
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.into_owned()))
                .collect(),
            body: r.body,
            rejection: Some(Seen(rejection.clone())),
        }
    }
}

/// The body the handler answers: the admission it saw (`tag weight would_reject`), or
/// `exempt` when it saw none.
pub fn handler_body(admission: Option<&Admission>) -> String {
    admission.map_or_else(
        || "exempt".to_owned(),
        |a| format!("{} {} {:?}", a.tag, a.weight, a.would_reject),
    )
}

/// The header fields of the handler's answer (besides the gate's dry-run mark).
pub const HANDLER_CONTENT_TYPE: &str = "text/plain";

fn collect_headers<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> BTreeMap<String, String> {
    fields
        .filter(|(n, _)| *n != "content-length")
        .map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn http1_request<B>(req: &Request, grpc: bool, body: B) -> http::Request<B> {
    let mut b = http::Request::builder()
        .method(if grpc { "POST" } else { "GET" })
        .uri(req.path);
    if let Some(t) = req.tag {
        b = b.header(TAG_HEADER, t);
    }
    if let Some(w) = req.weight {
        b = b.header(WEIGHT_HEADER, w);
    }
    if grpc {
        b = b.header(http::header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    }
    b.body(body).unwrap()
}

async fn http1_answer<B>(res: http::Response<B>) -> Answer
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: collect_headers(
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        ),
        body: String::from_utf8(body.to_vec()).unwrap(),
        rejection: parts.extensions.get::<Rejection>().cloned().map(Seen),
    }
}

/// `waitstate-tower`: a [`GateLayer`](waitstate_tower::GateLayer) on a `tower::service_fn`.
pub async fn tower(case: &Case, ws: &WaitState, grpc: bool) -> Answer {
    let status = http::StatusCode::from_u16(case.kill_signal_status()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(
            waitstate_tower::GateLayer::new(ws.clone(), tagger()).with_rejection(
                waitstate_tower::DefaultRejection::default().kill_signal_status(status),
            ),
        )
        .service(tower::service_fn(
            |req: http::Request<Full<Bytes>>| async move {
                let body = handler_body(
                    waitstate_core::tagger::current::found_or_current(
                        req.extensions().get::<Admission>(),
                    )
                    .as_ref(),
                );
                let res = http::Response::builder()
                    .header(http::header::CONTENT_TYPE, HANDLER_CONTENT_TYPE)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                Ok::<_, Infallible>(res)
            },
        ));
    let res = svc
        .oneshot(http1_request(&case.request, grpc, Full::default()))
        .await
        .unwrap();
    http1_answer(res).await
}

/// `waitstate-axum`: a `Router` with the layer (`Router::layer`).
pub async fn axum(case: &Case, ws: &WaitState, grpc: bool) -> Answer {
    use axum::response::IntoResponse;
    async fn handler(admitted: Option<Admitted>) -> axum::response::Response {
        let body = handler_body(admitted.as_ref().map(|a| &a.0));
        ([(http::header::CONTENT_TYPE, HANDLER_CONTENT_TYPE)], body).into_response()
    }
    let status = http::StatusCode::from_u16(case.kill_signal_status()).unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::any(handler))
        .route(EXEMPT_PATH, axum::routing::any(handler))
        .layer(
            waitstate_axum::GateLayer::new(ws.clone(), tagger()).with_rejection(
                waitstate_axum::DefaultRejection::default().kill_signal_status(status),
            ),
        );
    let req = http1_request(&case.request, grpc, axum::body::Body::empty());
    let res = app.oneshot(req).await.unwrap();
    http1_answer(res).await
}

/// `waitstate-actix`: `App::wrap(Gate)` through `actix_web::test::init_service`.
pub async fn actix(case: &Case, ws: &WaitState, grpc: bool) -> Answer {
    use actix_web::{App, HttpRequest, HttpResponse, test, web};
    let status = actix_web::http::StatusCode::from_u16(case.kill_signal_status()).unwrap();
    let gate = waitstate_actix::Gate::new(ws.clone(), tagger())
        .with_rejection(waitstate_actix::DefaultRejection::default().kill_signal_status(status));
    let app = test::init_service(App::new().wrap(gate).default_service(web::to(
        |req: HttpRequest| async move {
            let body = handler_body(
                waitstate_core::tagger::current::found_or_current(
                    req.extensions().get::<Admission>(),
                )
                .as_ref(),
            );
            HttpResponse::Ok()
                .content_type(HANDLER_CONTENT_TYPE)
                .body(body)
        },
    )))
    .await;
    let r = &case.request;
    let mut req = if grpc {
        test::TestRequest::post()
    } else {
        test::TestRequest::get()
    }
    .uri(r.path);
    if let Some(t) = r.tag {
        req = req.insert_header((TAG_HEADER, t));
    }
    if let Some(w) = r.weight {
        req = req.insert_header((WEIGHT_HEADER, w));
    }
    if grpc {
        req = req.insert_header(("content-type", GRPC_CONTENT_TYPE));
    }
    let res = test::call_service(&app, req.to_request()).await;
    let status = res.status().as_u16();
    let headers = collect_headers(
        res.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let rejection = res
        .response()
        .extensions()
        .get::<Rejection>()
        .cloned()
        .map(Seen);
    let body = test::read_body(res).await;
    Answer {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
        rejection,
    }
}

/// The adapters, by name.
pub const ADAPTERS: [&str; 3] = ["tower", "axum", "actix"];

/// Run `case` through every adapter, each on its own engine in the case's state.
pub async fn run(case: &Case, grpc: bool) -> [(Answer, Prepared); 3] {
    let mut out = Vec::with_capacity(3);
    for name in ADAPTERS {
        let prepared = prepare(case).await;
        let answer = match name {
            "tower" => tower(case, &prepared.ws, grpc).await,
            "axum" => axum(case, &prepared.ws, grpc).await,
            _ => actix(case, &prepared.ws, grpc).await,
        };
        out.push((answer, prepared));
    }
    out.try_into().unwrap()
}
