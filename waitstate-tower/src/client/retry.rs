//! Retries within a budget, after the server's hint, never against its wish.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::LocalRejection;
use super::manners::{Pushback, read_answer};

/// When to retry a call, from its response head: only an overload answer with a hint
/// (`Retry-After`, `grpc-retry-pushback-ms` >= 0) no longer than `max_delay`, never one the
/// server asked not to retry, never one throttled locally. `Some(delay)` to retry after
/// `delay`.
pub(crate) fn retry_after(
    status: u16,
    headers: &HeaderMap,
    local: Option<&LocalRejection>,
    max_delay: Duration,
) -> Option<Duration> {
    if matches!(local, Some(LocalRejection::Throttled)) {
        return None;
    }
    let answer = read_answer(status, headers);
    match answer.pushback {
        Pushback::After(d) if answer.overloaded && d <= max_delay => Some(d),
        _ => None,
    }
}

/// Whether a response is a success for the budget (anything but an overload answer).
pub(crate) fn deposits(status: u16, headers: &HeaderMap) -> bool {
    !read_answer(status, headers).overloaded
}

/// A tower retry [`Policy`] for polite clients: retries an overload answer after the
/// server's hint, within a retry budget (tower's [`TpsBudget`]: by default retries may add
/// 20% to the calls, plus 10 per second), at most twice per call, and never:
///
/// - a call the server asked not to retry (a negative or unreadable
///   `grpc-retry-pushback-ms`, as gRPC's retry design defines it),
/// - an overload answer without a hint, or with one longer than `max_delay` (10 s),
/// - a call the [`ClientLayer`](super::ClientLayer) throttled locally,
/// - a transport error (whether the server saw the call is unknown).
///
/// The request body must be `Clone` (`Full<Bytes>`, `String`); streaming bodies (a tonic
/// `Channel`'s) cannot be retried this way. Clones of the policy share one budget.
///
/// ```
/// use tower::ServiceBuilder;
/// use waitstate_tower::client::{ClientLayer, RetryPolicy};
///
/// # fn build<S>(client: S) {
/// let polite = ServiceBuilder::new()
///     .retry(RetryPolicy::new())
///     .layer(ClientLayer::new())
///     .service(client);
/// # let _ = polite; }
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    budget: Arc<TpsBudget>,
    max_delay: Duration,
    retries_left: u32,
    deposited: bool,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("budget", &self.budget)
            .field("max_delay", &self.max_delay)
            .field("retries_left", &self.retries_left)
            .finish()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryPolicy {
    /// A budget of 20% of calls plus 10 retries per second over 10 s; at most 2 retries
    /// per call; hints up to 10 s.
    pub fn new() -> Self {
        Self::with_budget(TpsBudget::new(Duration::from_secs(10), 10, 0.2))
    }

    /// With this budget (see [`TpsBudget::new`]).
    pub fn with_budget(budget: TpsBudget) -> Self {
        Self {
            budget: Arc::new(budget),
            max_delay: Duration::from_secs(10),
            retries_left: 2,
            deposited: false,
        }
    }

    /// Retry at most `n` times per call.
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.retries_left = n;
        self
    }

    /// Do not retry when the server's hint is longer than this.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Whether to retry a response, and after how long: the decision the reqwest
    /// middleware shares.
    pub(crate) fn decide(
        &mut self,
        status: u16,
        headers: &HeaderMap,
        local: Option<&LocalRejection>,
    ) -> Option<Duration> {
        if local.is_none() && !self.deposited && deposits(status, headers) {
            // Only first attempts that the backend served earn retries.
            self.budget.deposit();
            self.deposited = true;
        }
        let delay = retry_after(status, headers, local, self.max_delay)?;
        if self.retries_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.retries_left -= 1;
        Some(delay)
    }

    /// A fresh copy for one call: its own retry count, the shared budget.
    pub(crate) fn for_call(&self) -> Self {
        self.clone()
    }
}

impl<B: Clone, RB, E> Policy<Request<B>, Response<RB>, E> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<RB>, E>,
    ) -> Option<Self::Future> {
        let res = result.as_ref().ok()?;
        let local = res.extensions().get::<LocalRejection>();
        let delay = self.decide(res.status().as_u16(), res.headers(), local)?;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::StatusCode;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;

    /// A server answering `status` with `headers`; counts its calls.
    fn server(
        calls: Arc<AtomicUsize>,
        status: u16,
        headers: &'static [(&'static str, &'static str)],
    ) -> impl tower::Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        service_fn(move |_req: Request<String>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut res = Response::builder().status(status);
            for (n, v) in headers {
                res = res.header(*n, *v);
            }
            std::future::ready(Ok::<_, Infallible>(res.body(String::new()).unwrap()))
        })
    }

    async fn calls_made(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        policy: RetryPolicy,
    ) -> usize {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc =
            ServiceBuilder::new()
                .retry(policy)
                .service(server(calls.clone(), status, headers));
        let res = svc.oneshot(Request::new(String::new())).await.unwrap();
        assert_eq!(res.status(), StatusCode::from_u16(status).unwrap());
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_after_the_hint_within_limits() {
        let start = tokio::time::Instant::now();
        let n = calls_made(429, &[("retry-after", "1")], RetryPolicy::new()).await;
        assert_eq!(n, 3, "the call and two retries");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(2),
            "one hint's wait each"
        );
        let grpc: &[(&str, &str)] = &[
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
            ("grpc-retry-pushback-ms", "30"),
        ];
        assert_eq!(
            calls_made(200, grpc, RetryPolicy::new().max_retries(1)).await,
            2
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_what_the_server_asked_not_to() {
        let no: &[(&str, &str)] = &[
            ("content-type", "application/grpc"),
            ("grpc-status", "14"),
            ("grpc-retry-pushback-ms", "-1"),
        ];
        assert_eq!(calls_made(200, no, RetryPolicy::new()).await, 1);
        assert_eq!(calls_made(429, &[], RetryPolicy::new()).await, 1, "no hint");
        let long = RetryPolicy::new().max_delay(Duration::from_secs(5));
        assert_eq!(calls_made(429, &[("retry-after", "60")], long).await, 1);
        assert_eq!(
            calls_made(500, &[("retry-after", "1")], RetryPolicy::new()).await,
            1
        );
        assert_eq!(calls_made(200, &[], RetryPolicy::new()).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_runs_out() {
        // No reserve, no share: only deposits would pay for a retry.
        let policy = RetryPolicy::with_budget(TpsBudget::new(Duration::from_secs(10), 1, 0.0));
        let mut total = 0;
        for _ in 0..20 {
            total += calls_made(429, &[("retry-after", "0")], policy.clone()).await;
        }
        assert!(total < 20 * 3, "the budget capped retries: {total} calls");
        assert!(total >= 20, "every call was made once: {total}");
    }

    #[test]
    fn a_local_throttle_is_never_retried() {
        let mut p = RetryPolicy::new();
        let h = HeaderMap::new();
        assert_eq!(p.decide(429, &h, Some(&LocalRejection::Throttled)), None);
        let mut h = HeaderMap::new();
        h.insert("retry-after", http::HeaderValue::from_static("1"));
        let backing_off = LocalRejection::BackingOff {
            retry_after: Duration::from_secs(1),
        };
        assert_eq!(
            p.decide(429, &h, Some(&backing_off)),
            Some(Duration::from_secs(1))
        );
    }
}
