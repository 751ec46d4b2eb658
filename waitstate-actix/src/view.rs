use std::any::Any;
use std::cell::{OnceCell, Ref};
use std::net::SocketAddr;

use actix_web::HttpMessage;
use actix_web::dev::{Extensions, ServiceRequest};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use waitstate_core::adapter::{HOT_HEADERS, hot_header};
use waitstate_core::tagger::RequestView;

/// [`RequestView`] over an actix-web `ServiceRequest`.
///
/// The matched route pattern costs an allocation in actix-web (`match_pattern` returns a
/// `String`), so it is computed only when a tagger asks for it, at most once per request.
pub(crate) struct ActixView<'a> {
    req: &'a ServiceRequest,
    route: OnceCell<Option<String>>,
    // Borrowed only if a tagger reads the extensions, for as long as the view lives (the
    // gate step).
    extensions: OnceCell<Ref<'a, Extensions>>,
}

impl<'a> ActixView<'a> {
    pub(crate) fn new(req: &'a ServiceRequest) -> Self {
        Self {
            req,
            route: OnceCell::new(),
            extensions: OnceCell::new(),
        }
    }
}

impl RequestView for ActixView<'_> {
    fn method(&self) -> &str {
        self.req.method().as_str()
    }

    fn path(&self) -> &str {
        self.req.path()
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        let headers = self.req.headers();
        static HOT: [HeaderName; 2] = [
            HeaderName::from_static(HOT_HEADERS[0]),
            HeaderName::from_static(HOT_HEADERS[1]),
        ];
        let value = match hot_header(name) {
            Some(i) => headers.get(&HOT[i]),
            None => headers.get(name),
        };
        value.map(HeaderValue::as_bytes)
    }

    fn route(&self) -> Option<&str> {
        self.route
            .get_or_init(|| self.req.match_pattern())
            .as_deref()
    }

    fn peer_addr(&self) -> Option<SocketAddr> {
        self.req.peer_addr()
    }

    fn extensions(&self) -> Option<&dyn Any> {
        let ext: &Extensions = self.extensions.get_or_init(|| self.req.extensions());
        Some(ext)
    }
}

/// Whether a request is gRPC (`content-type: application/grpc*`).
pub(crate) fn is_grpc(req: &ServiceRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| waitstate_core::adapter::is_grpc_content_type(v.as_bytes()))
}
