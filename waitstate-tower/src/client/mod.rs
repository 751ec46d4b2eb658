//! Polite clients (feature `client`): priority that travels downstream, and a client that
//! backs off when the server says so.
//!
//! [`ClientLayer`] wraps an outgoing tower client (hyper-util's legacy `Client`, a tonic
//! `Channel`, anything that is a `Service<http::Request<B>>`). For each call it:
//!
//! 1. **Carries the tag downstream**: the tag (and cohort) of the request being served, as
//!    `x-waitstate-tag` (and `x-waitstate-cohort`) headers, which gRPC sends as metadata. The
//!    downstream service's [`HeaderTagger`](crate::HeaderTagger) reads them, so an
//!    enterprise request upstream is still enterprise downstream. The handler threads
//!    nothing by hand: the gate runs each handler inside a task-local scope that holds the
//!    request's [`Admission`] (see [`waitstate_core::tagger::current`] for
//!    why a task-local, and where it stops: a `tokio::spawn`ed task needs
//!    `current::scope`). An `Admission` in the outgoing request's extensions wins, and a
//!    tag header set by hand wins over both.
//! 2. **Honours pushback**: after a 429 or 503 with `Retry-After`, or a gRPC
//!    `RESOURCE_EXHAUSTED` / `UNAVAILABLE` with `grpc-retry-pushback-ms`, calls of that tag
//!    are answered locally until the time is up. Per tag (and per method for gRPC, whose
//!    servers often tag by method): a server that sheds `free` does not stop
//!    `enterprise` calls.
//! 3. **Throttles adaptively** (Google SRE, "Handling Overload"): per tag, over a sliding
//!    window (2 minutes by default), it counts the calls tried (`requests`) and those the
//!    backend accepted (`accepts`: anything but an overload answer), and answers locally a
//!    share `max(0, (requests - K * accepts) / (requests + 1))` of the calls, `K = 2` by
//!    default ([`ClientLayer::k`]). The share is applied deterministically (credit
//!    accumulation), not by a random draw.
//!
//! A call answered locally is a response, not an error, as the gate's rejections are: a
//! `429` (with `Retry-After` while backing off), or for a gRPC request
//! (`content-type: application/grpc*`) a trailers-only `UNAVAILABLE` with
//! `grpc-retry-pushback-ms`, so a tonic client sees a `Status`. Its extensions hold a
//! [`LocalRejection`]; the body is empty. The service's error stays the inner one.
//!
//! Retries are [`RetryPolicy`]'s (tower's `Retry` with its `TpsBudget`): put
//! `ServiceBuilder::new().retry(RetryPolicy::new())` outside the `ClientLayer`. It retries
//! only overload answers that carry a hint (`Retry-After`, `grpc-retry-pushback-ms` >= 0),
//! after that hint, within a retry budget; never a call the server asked not to retry
//! (negative or unreadable `grpc-retry-pushback-ms`), never one throttled locally.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use waitstate_tower::client::{ClientLayer, LocalRejection};
//!
//! // A downstream that sheds everything, with a 2 s hint.
//! let downstream = service_fn(|_req: Request<String>| async {
//!     let res = Response::builder().status(429).header("retry-after", "2").body(String::new());
//!     Ok::<_, Infallible>(res.unwrap())
//! });
//! let client = ServiceBuilder::new().layer(ClientLayer::new()).service(downstream);
//!
//! let res = client.clone().oneshot(Request::new(String::new())).await?;
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert!(res.extensions().get::<LocalRejection>().is_none(), "the server's answer");
//!
//! // For the next 2 s, calls are answered locally, without reaching the server.
//! let res = client.oneshot(Request::new(String::new())).await?;
//! assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert!(matches!(res.extensions().get::<LocalRejection>(), Some(LocalRejection::BackingOff { .. })));
//! # Ok(()) }
//! ```

mod body;
mod future;
mod manners;
#[cfg(feature = "reqwest")]
mod middleware;
mod retry;
mod throttle;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;
use waitstate_core::tagger::Admission;

pub use body::ClientBody;
pub use future::ResponseFuture;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use middleware::ClientMiddleware;
pub use retry::RetryPolicy;

use manners::Manners;

/// Why a call was answered locally, without reaching the server. In the extensions of the
/// response a [`ClientService`] makes up for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalRejection {
    /// The server pushed back on this tag (`Retry-After`, `grpc-retry-pushback-ms`); the
    /// time is not up.
    BackingOff {
        /// How much longer.
        retry_after: Duration,
    },
    /// Adaptive throttling: the server has been refusing much of this tag's traffic.
    Throttled,
}

impl fmt::Display for LocalRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BackingOff { retry_after } => write!(
                f,
                "waitstate client: backing off, the server asked to wait {} ms more",
                retry_after.as_millis()
            ),
            Self::Throttled => f.write_str(
                "waitstate client: throttled locally, the server is refusing this traffic",
            ),
        }
    }
}

impl std::error::Error for LocalRejection {}

/// The settings of a polite client; see the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    k: f64,
    window: Duration,
    throttling: bool,
    pushback: bool,
    propagate: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            k: 2.0,
            window: Duration::from_secs(120),
            throttling: true,
            pushback: true,
            propagate: true,
        }
    }
}

impl Settings {
    pub(crate) fn k(mut self, k: f64) -> Self {
        // K below 1 would throttle a backend that accepts everything; NaN means nothing.
        self.k = if k.is_nan() { 2.0 } else { k.max(1.0) };
        self
    }

    pub(crate) fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(20));
        self
    }

    pub(crate) fn build(self) -> Arc<Manners> {
        Manners::new(
            self.k,
            self.window,
            self.throttling,
            self.pushback,
            self.propagate,
        )
    }
}

/// The polite client layer: see the [module docs](self).
///
/// Every service it builds, and every clone of them, shares one state (one throttle and one
/// pushback clock per tag): build the layer once per downstream service.
#[derive(Clone)]
#[must_use]
pub struct ClientLayer {
    settings: Settings,
    shared: Arc<Manners>,
}

impl fmt::Debug for ClientLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLayer")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Default for ClientLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientLayer {
    /// Propagation, pushback and adaptive throttling on; `K = 2`, a 2-minute window.
    pub fn new() -> Self {
        Self::with(Settings::default())
    }

    fn with(settings: Settings) -> Self {
        Self {
            settings,
            shared: settings.build(),
        }
    }

    /// The throttle's multiplier `K` (default 2): the backend may refuse up to
    /// `1 - 1/K` of the calls before the client starts answering locally. Lower is more
    /// aggressive; values below 1 count as 1 (NaN as the default).
    pub fn k(self, k: f64) -> Self {
        Self::with(self.settings.k(k))
    }

    /// The throttle's sliding window (default 2 minutes; at least 20 ms).
    pub fn window(self, window: Duration) -> Self {
        Self::with(self.settings.window(window))
    }

    /// Turn adaptive throttling on or off (on by default).
    pub fn throttling(mut self, yes: bool) -> Self {
        self.settings.throttling = yes;
        Self::with(self.settings)
    }

    /// Honour `Retry-After` and `grpc-retry-pushback-ms` (on by default).
    pub fn pushback(mut self, yes: bool) -> Self {
        self.settings.pushback = yes;
        Self::with(self.settings)
    }

    /// Carry the current request's tag and cohort downstream (on by default).
    pub fn propagate(mut self, yes: bool) -> Self {
        self.settings.propagate = yes;
        Self::with(self.settings)
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`ClientLayer`] builds. See the [module docs](self).
#[derive(Clone)]
pub struct ClientService<S> {
    inner: S,
    shared: Arc<Manners>,
}

impl<S: fmt::Debug> fmt::Debug for ClientService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> ClientService<S> {
    /// The inner client.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner client, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner client, without the layer.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, RB> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<ClientBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let explicit = parts.extensions.get::<Admission>();
        let tag = manners::propagate(&mut parts.headers, explicit, self.shared.propagate);
        let req = Request::from_parts(parts, body);
        let grpc = is_grpc(&req);
        let class = manners::class_of_call(tag, grpc, req.uri().path());
        match self.shared.before(&class) {
            Ok(()) => ResponseFuture::sent(self.inner.call(req), self.shared.clone(), class),
            Err(why) => ResponseFuture::local(why, grpc),
        }
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| waitstate_core::adapter::is_grpc_content_type(v.as_bytes()))
}
