//! The polite client as `reqwest-middleware` middleware (feature `reqwest`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use reqwest_middleware::{Middleware, Next, Result};
use waitstate_core::tagger::Admission;

use super::future::local_response;
use super::manners::{self, Manners, read_answer};
use super::{LocalRejection, RetryPolicy, Settings};

/// [`ClientLayer`](super::ClientLayer)'s manners for a `reqwest` client, as
/// `reqwest-middleware` middleware: the current request's tag (and cohort) carried as
/// `x-waitstate-tag` (and `x-waitstate-cohort`), pushback honoured, adaptive throttling,
/// and, with [`ClientMiddleware::retry`], retries within a budget. See the
/// [module docs](super) for each; a call answered locally is a `429` response whose
/// extensions hold a [`LocalRejection`].
///
/// An [`Admission`] in the request's extensions
/// (`client.get(url).with_extension(admission)`) wins over the current one.
///
/// ```no_run
/// use reqwest_middleware::ClientBuilder;
/// use waitstate_tower::client::{ClientMiddleware, RetryPolicy};
///
/// let client = ClientBuilder::new(reqwest::Client::new())
///     .with(ClientMiddleware::new().retry(RetryPolicy::new()))
///     .build();
/// // In a gated handler: the call carries the handler's tag.
/// # async fn call(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
/// let res = client.get("http://127.0.0.1:3001/inventory").send().await?;
/// # let _ = res; Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct ClientMiddleware {
    settings: Settings,
    shared: Arc<Manners>,
    retry: Option<RetryPolicy>,
}

impl fmt::Debug for ClientMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientMiddleware")
            .field("settings", &self.settings)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Default for ClientMiddleware {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientMiddleware {
    /// Propagation, pushback and adaptive throttling on (`K = 2`, a 2-minute window); no
    /// retries.
    pub fn new() -> Self {
        Self::with(Settings::default(), None)
    }

    fn with(settings: Settings, retry: Option<RetryPolicy>) -> Self {
        Self {
            settings,
            shared: settings.build(),
            retry,
        }
    }

    /// The throttle's multiplier (see [`ClientLayer::k`](super::ClientLayer::k)).
    pub fn k(self, k: f64) -> Self {
        Self::with(self.settings.k(k), self.retry)
    }

    /// The throttle's sliding window (default 2 minutes).
    pub fn window(self, window: Duration) -> Self {
        Self::with(self.settings.window(window), self.retry)
    }

    /// Turn adaptive throttling on or off (on by default).
    pub fn throttling(mut self, yes: bool) -> Self {
        self.settings.throttling = yes;
        Self::with(self.settings, self.retry)
    }

    /// Honour `Retry-After` and `grpc-retry-pushback-ms` (on by default).
    pub fn pushback(mut self, yes: bool) -> Self {
        self.settings.pushback = yes;
        Self::with(self.settings, self.retry)
    }

    /// Carry the current request's tag and cohort downstream (on by default).
    pub fn propagate(mut self, yes: bool) -> Self {
        self.settings.propagate = yes;
        Self::with(self.settings, self.retry)
    }

    /// Retry as `policy` says (requests whose body can be cloned).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

#[async_trait::async_trait]
impl Middleware for ClientMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<reqwest::Response> {
        let tag = manners::propagate(
            req.headers_mut(),
            extensions.get::<Admission>(),
            self.shared.propagate,
        );
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| waitstate_core::adapter::is_grpc_content_type(v.as_bytes()));
        let class = manners::class_of_call(tag, grpc, req.url().path());
        let mut policy = self.retry.as_ref().map(RetryPolicy::for_call);
        loop {
            let again = policy.as_ref().and_then(|_| req.try_clone());
            let res = match self.shared.before(&class) {
                Err(why) => {
                    let res = local_response::<()>(why, grpc).map(|_| reqwest::Body::from(""));
                    reqwest::Response::from(res)
                }
                Ok(()) => {
                    let res = next.clone().run(req, extensions).await?;
                    self.shared
                        .after(&class, read_answer(res.status().as_u16(), res.headers()));
                    res
                }
            };
            let (Some(p), Some(again)) = (policy.as_mut(), again) else {
                return Ok(res);
            };
            let local = res.extensions().get::<LocalRejection>();
            let Some(delay) = p.decide(res.status().as_u16(), res.headers(), local) else {
                return Ok(res);
            };
            tokio::time::sleep(delay).await;
            req = again;
        }
    }
}
