//! Serving the metrics in one line: an axum route, an actix-web resource.

#[cfg(any(feature = "axum", feature = "actix-web"))]
use waitstate_core::WaitState;

#[cfg(any(feature = "axum", feature = "actix-web"))]
use crate::{CONTENT_TYPE, Exporter};

/// `GET` the engine's metrics, for an axum router:
/// `Router::new().route("/metrics", waitstate_metrics::axum_route(&ws))`.
///
/// The route is open to anyone who reaches it: mount it on an internal listener, or behind
/// the service's own authentication, if tag names or rules are not for everyone's eyes.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub fn axum_route<S>(ws: &WaitState) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let exporter = Exporter::new(ws);
    axum::routing::get(move || {
        let body = exporter.render();
        async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], body) }
    })
}

/// `GET path` serves the engine's metrics, for an actix-web app:
/// `App::new().service(waitstate_metrics::actix_resource("/metrics", &ws))`.
///
/// The same caution as [`axum_route`](crate#the-metrics): anyone who reaches it reads it.
#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub fn actix_resource(path: &str, ws: &WaitState) -> actix_web::Resource {
    let exporter = Exporter::new(ws);
    actix_web::web::resource(path).route(actix_web::web::get().to(move || {
        let body = exporter.render();
        async move {
            actix_web::HttpResponse::Ok()
                .content_type(CONTENT_TYPE)
                .body(body)
        }
    }))
}
