use http::HeaderName;
use waitstate_core::adapter::{HOT_HEADERS, hot_header};
use waitstate_core::tagger::RequestView;

/// The matched route pattern of a request (`/users/{id}`), for route-aware taggers.
///
/// A router that has matched the request puts it in the request's extensions. With the
/// `axum` feature (on in `waitstate-axum`), axum's `MatchedPath` is read too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchedRoute(pub std::sync::Arc<str>);

/// [`RequestView`] over an `http::Request`.
pub(crate) struct HttpView<'a, B>(pub(crate) &'a http::Request<B>);

impl<B> RequestView for HttpView<'_, B> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn path(&self) -> &str {
        self.0.uri().path()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        let headers = self.0.headers();
        static HOT: [HeaderName; 2] = [
            HeaderName::from_static(HOT_HEADERS[0]),
            HeaderName::from_static(HOT_HEADERS[1]),
        ];
        let value = match hot_header(name) {
            Some(i) => headers.get(&HOT[i]),
            None => headers.get(name),
        };
        value.map(http::HeaderValue::as_bytes)
    }

    fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        crate::identity::peer_addr(self.0.extensions())
    }

    fn extensions(&self) -> Option<&dyn std::any::Any> {
        Some(self.0.extensions())
    }

    fn route(&self) -> Option<&str> {
        let ext = self.0.extensions();
        if let Some(r) = ext.get::<MatchedRoute>() {
            return Some(&r.0);
        }
        #[cfg(feature = "axum")]
        if let Some(p) = ext.get::<axum::extract::MatchedPath>() {
            return Some(p.as_str());
        }
        None
    }
}

/// Whether a request is gRPC (`content-type: application/grpc*`).
pub(crate) fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| waitstate_core::adapter::is_grpc_content_type(v.as_bytes()))
}
