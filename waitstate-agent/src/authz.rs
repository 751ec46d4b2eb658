//! In front of any proxy: an authorization endpoint in the shape of nginx `auth_request`
//! and Envoy's HTTP `ext_authz`.
//!
//! The proxy sends the original request's headers (any method, no body needed) to
//! `/authz`, or to `/authz/<original path>` (Envoy's `path_prefix: /authz` appends it).
//! The tag is the `[agent.authz] tag_header` (default `x-waitstate-tag`), else the tag of
//! the longest `paths` prefix that the original path starts with (the path after `/authz`,
//! else the `path_header`, default `x-original-uri`), else `__default__`. The weight is
//! the `weight_header` (default `x-waitstate-weight`), else 1.
//!
//! The answer: `200` (empty body, `x-waitstate-tag: <tag>`) when allowed; `429` with
//! `Retry-After`, `x-waitstate-reason` and the JSON deny body when refused (`kill_signal`
//! included). The
//! decision is stateless (no slot is held: a proxy cannot report back), so in-flight and
//! latency rules need another source (`/report-latency`, or the tokens).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use waitstate_core::adapter::render;
use waitstate_core::{Decision, Demand};

use crate::agent::Agent;
use crate::routes::{header_str, header_weight};

/// `ANY /authz`, `ANY /authz/{*path}`.
pub(crate) async fn authz(State(agent): State<Agent>, request: Request) -> Response {
    let settings = &agent.inner.settings.authz;
    let headers = request.headers();
    let weight = match settings.weight_header.as_deref() {
        None => 1.0,
        Some(name) => match header_weight(headers, name) {
            Ok(w) => w.unwrap_or(1.0),
            Err(e) => return e.into_response(),
        },
    };
    let tag = match header_str(headers, &settings.tag_header) {
        Some(t) => t,
        None => {
            let suffix = request.uri().path().strip_prefix("/authz").unwrap_or("");
            let path = if suffix.is_empty() {
                header_str(headers, &settings.path_header).unwrap_or("")
            } else {
                suffix
            };
            tag_of_path(&settings.paths, path)
        }
    };
    match agent
        .waitstate()
        .decide_demand(&Demand::new(tag).weight(weight).declared_only(true))
    {
        Decision::Allowed { .. } => {
            let mut r = Response::new(Body::empty());
            if let Ok(v) = HeaderValue::from_str(tag) {
                r.headers_mut().insert("x-waitstate-tag", v);
            }
            r
        }
        Decision::Rejected(rejection) => {
            let rendered = render(&rejection, false, 429);
            let mut r = Response::new(Body::from(rendered.body));
            *r.status_mut() =
                StatusCode::from_u16(rendered.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            for (name, value) in rendered.headers {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    r.headers_mut().insert(name, v);
                }
            }
            // For nginx, which passes the subrequest's headers on but not its body.
            r.headers_mut().insert(
                "x-waitstate-reason",
                HeaderValue::from_static(rejection.reason().as_str()),
            );
            r.headers_mut()
                .entry(header::CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/json"));
            r
        }
    }
}

/// The tag of the longest prefix of `path` in `paths` (the query string ignored), or `""`.
fn tag_of_path<'a>(paths: &'a std::collections::BTreeMap<String, String>, path: &str) -> &'a str {
    let path = path.split(['?', '#']).next().unwrap_or("");
    paths
        .iter()
        .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len())
        .map_or("", |(_, tag)| tag.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::tag_of_path;

    #[test]
    fn longest_prefix_wins_and_the_query_is_ignored() {
        let paths: BTreeMap<String, String> = [("/api", "pro"), ("/api/search", "free")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        assert_eq!(tag_of_path(&paths, "/api/search?q=1"), "free");
        assert_eq!(tag_of_path(&paths, "/api/users"), "pro");
        assert_eq!(tag_of_path(&paths, "/other"), "");
        assert_eq!(tag_of_path(&paths, "/x?/api"), "");
    }
}
