//! A tonic [`Interceptor`](tonic::service::Interceptor) that gates each call (feature
//! `tonic`).
//!
//! For services wired with tonic's interceptors (`FooServer::with_interceptor`,
//! `InterceptedService`, `InterceptorLayer`), next to an auth interceptor:
//!
//! ```
//! use waitstate_tower::{GateInterceptor, HeaderTagger, WaitState};
//!
//! # fn wire() -> Result<(), waitstate_core::ConfigError> {
//! let ws = WaitState::builder().tag("enterprise", 100).tag("free", 10).build()?;
//! let gate = GateInterceptor::new(ws, HeaderTagger::new());
//! // FooServer::with_interceptor(MyFoo::default(), gate)
//! # let _ = gate; Ok(()) }
//! ```
//!
//! A rejected call fails with the same status the tower gate sends: `UNAVAILABLE` (14) for
//! overload shedding, `RESOURCE_EXHAUSTED` (8) for quotas, a `grpc-message` saying why and a
//! `grpc-retry-pushback-ms` hint. An admitted call carries an [`Admission`] and an
//! [`InterceptedPermit`] in its extensions.
//!
//! # What an interceptor cannot do
//!
//! tonic shows an interceptor a call's metadata and extensions, not its method, and never
//! its response. So, compared with [`GateLayer`](crate::GateLayer):
//!
//! - **Tagging** sees metadata (and extensions, and the peer address), not the method path:
//!   a [`GrpcTagger`](crate::GrpcTagger)'s per-method entries do not apply here, its
//!   metadata key and fallback do. For per-method tags, use the layer.
//! - **Latency and outcome** cannot be measured: the call's in-flight slot is held by the
//!   [`InterceptedPermit`] in the request's extensions. A handler that takes it
//!   ([`InterceptedPermit::take`]) and drops it when the work is done (after
//!   `set_error(true)` on a failure) gives the rules the handler's real latency and errors.
//!   Otherwise the slot ends when tonic drops the request's extensions (when the handler
//!   calls `into_inner()`, or returns), and the rules see only that time and no errors:
//!   latency rules then need the layer.
//! - **No wait for a slot**: an interceptor is synchronous, so when adaptive admission's
//!   pool is full the call is turned away at once (`concurrency_limited`) instead of waiting
//!   in its priority's queue as it would under the layer.
//!
//! Put [`GateLayer`](crate::GateLayer) on `Server::builder().layer(...)` when you can; use
//! the interceptor where only an interceptor fits, or to gate after an auth interceptor
//! whose extensions pick the tag.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tonic::{Request, Status};
use waitstate_core::tagger::{Admission, RequestView, Tagger};
use waitstate_core::{Permit, Rejection, WaitState};

use crate::rejection::grpc_response;

/// Gates each tonic call: see the [module docs](self) for what it does and its limits.
#[derive(Clone)]
#[must_use]
pub struct GateInterceptor<T> {
    waitstate: WaitState,
    tagger: T,
}

impl<T> fmt::Debug for GateInterceptor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateInterceptor")
            .field("waitstate", &self.waitstate)
            .field("tagger", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> GateInterceptor<T> {
    /// Gate with this engine and tagger.
    pub fn new(waitstate: WaitState, tagger: T) -> Self {
        Self { waitstate, tagger }
    }

    /// The engine.
    pub fn waitstate(&self) -> &WaitState {
        &self.waitstate
    }
}

/// The in-flight slot of a call an interceptor admitted, in the call's extensions. Take it
/// in the handler and drop it when the work is done, so the rules see the handler's
/// latency and outcome (see the [module docs](self)).
///
/// ```
/// use waitstate_tower::InterceptedPermit;
///
/// async fn handler(req: tonic::Request<()>) -> Result<tonic::Response<()>, tonic::Status> {
///     let permit = InterceptedPermit::take_from(&req);
///     let result = Ok(tonic::Response::new(())); // the work
///     if let Some(mut p) = permit {
///         p.set_error(result.is_err());
///     } // dropped here: latency and outcome recorded
///     result
/// }
/// ```
#[derive(Clone)]
pub struct InterceptedPermit(Arc<Mutex<Option<Permit>>>);

impl fmt::Debug for InterceptedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.0.lock().map(|p| p.is_some()).unwrap_or(false);
        f.debug_struct("InterceptedPermit")
            .field("held", &held)
            .finish()
    }
}

impl InterceptedPermit {
    /// The permit, once: `None` if it was taken already.
    pub fn take(&self) -> Option<Permit> {
        // A poisoned lock still holds a valid `Option<Permit>`.
        match self.0.lock() {
            Ok(mut p) => p.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    /// The permit of `req`, if an interceptor admitted it and nobody took it yet.
    pub fn take_from<M>(req: &Request<M>) -> Option<Permit> {
        req.extensions().get::<Self>()?.take()
    }
}

/// The status a rejected call gets: the gRPC answer of the tower gate
/// ([`grpc_response`]), as a [`Status`] (its metadata holds `grpc-retry-pushback-ms`; its
/// source is the [`Rejection`]).
pub fn rejection_status(rejection: &Rejection) -> Status {
    let mut headers = grpc_response(rejection).into_parts().0.headers;
    // The status's metadata keeps the hint, not the response's framing.
    headers.remove(http::header::CONTENT_TYPE);
    let mut status = Status::from_header_map(&headers)
        .unwrap_or_else(|| Status::unavailable(rejection.to_string()));
    status.set_source(Arc::new(rejection.clone()));
    status
}

/// [`RequestView`] over a tonic request seen by an interceptor: method `POST`, no path.
struct TonicView<'a>(&'a Request<()>);

impl RequestView for TonicView<'_> {
    fn method(&self) -> &str {
        "POST"
    }

    fn path(&self) -> &str {
        // tonic does not show an interceptor the call's path.
        ""
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.metadata().as_ref().get(name).map(|v| v.as_bytes())
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.0
            .remote_addr()
            .or_else(|| crate::identity::peer_addr(self.0.extensions()))
    }

    fn extensions(&self) -> Option<&dyn std::any::Any> {
        Some(self.0.extensions())
    }
}

impl<T: Tagger> tonic::service::Interceptor for GateInterceptor<T> {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let view = TonicView(&req);
        let tagging = self.tagger.tag(&view);
        if tagging.exempt {
            return Ok(req);
        }
        let permit = self
            .waitstate
            .admit_demand(&tagging.demand())
            .map_err(|r| rejection_status(&r))?;
        let admission = waitstate_core::adapter::admission_for(&permit, tagging.weight)
            .with_cohort(tagging.cohort);
        let ext = req.extensions_mut();
        ext.insert::<Admission>(admission);
        ext.insert(InterceptedPermit(Arc::new(Mutex::new(Some(permit)))));
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::service::Interceptor;
    use waitstate_core::Policy;

    use super::*;
    use crate::{GrpcTagger, HeaderTagger};

    fn call(gate: &mut GateInterceptor<impl Tagger>, tag: &str) -> Result<Request<()>, Status> {
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("x-waitstate-tag", tag.parse().unwrap());
        gate.call(req)
    }

    #[tokio::test]
    async fn admits_with_an_admission_and_rejects_with_the_gates_status() {
        let ws = WaitState::builder()
            .tag("enterprise", 100)
            .tag("free", 10)
            .build()
            .unwrap();
        let mut gate = GateInterceptor::new(ws.clone(), HeaderTagger::new());
        let req = call(&mut gate, "enterprise").unwrap();
        let admission = req.extensions().get::<Admission>().unwrap();
        assert_eq!(admission.tag.as_str(), "enterprise");
        assert_eq!(ws.in_flight(), 1, "the permit holds the slot");
        let permit = InterceptedPermit::take_from(&req).unwrap();
        assert!(InterceptedPermit::take_from(&req).is_none(), "taken once");
        drop(permit);
        assert_eq!(ws.in_flight(), 0);
        let req = call(&mut gate, "enterprise").unwrap();
        drop(req);
        assert_eq!(ws.in_flight(), 0, "untaken, it ends with the request");

        let mut policy = Policy::default();
        policy.tag_max_weights.insert("free".into(), 0.0);
        policy.tag_rate_limits.insert("enterprise".into(), 1.0);
        ws.engine().set_remote_policy(Some(policy)).unwrap();
        let status = call(&mut gate, "free").unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.message().contains("tag_blocked"), "{status:?}");
        assert!(
            status.message().contains("for tag free"),
            "decoded: {status:?}"
        );
        assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());
        assert!(status.metadata().get("content-type").is_none());
        let source = std::error::Error::source(&status).unwrap();
        assert!(source.downcast_ref::<Rejection>().is_some());
        drop(call(&mut gate, "enterprise").unwrap());
        let status = call(&mut gate, "enterprise").unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(ws.in_flight(), 0);
    }

    #[tokio::test]
    async fn grpc_tagger_uses_metadata_and_exempts_nothing_by_path() {
        let ws = WaitState::builder().tag("enterprise", 100).build().unwrap();
        let tagger = GrpcTagger::new("free")
            .method("/a.B/C", "enterprise", 1.0)
            .metadata_key("x-tier");
        let mut gate = GateInterceptor::new(ws, tagger);
        let mut req = Request::new(());
        req.metadata_mut()
            .insert("x-tier", "enterprise".parse().unwrap());
        let req = gate.call(req).unwrap();
        assert_eq!(
            req.extensions().get::<Admission>().unwrap().tag.as_str(),
            "enterprise"
        );
        let req = gate.call(Request::new(())).unwrap();
        assert_eq!(
            req.extensions().get::<Admission>().unwrap().tag.as_str(),
            "free"
        );
    }
}
