//! The gRPC preset: tag by full method name, by service, or by a metadata key.

use std::collections::HashMap;

use super::{ExemptPaths, RequestView, Tagger, Tagging};
use crate::registry::DEFAULT_TAG;

/// Tag gRPC calls by full method name (`/shop.Checkout/Pay`), by service
/// (`shop.Catalog`, every method), or by a metadata key (`x-tier: enterprise`).
///
/// A call's tag is, first found: its method's entry, its service's entry, the value of the
/// metadata key, the fallback (default `__default__`). gRPC carries the method in the
/// HTTP/2 path and metadata in the headers, so under
/// [`GateLayer`](https://docs.rs/waitstate-tower) (tonic's `Server::builder().layer(...)`)
/// every rule applies. Under `waitstate-tower`'s tonic interceptor only the metadata key and
/// the fallback do: tonic does not show an interceptor the method (see its docs).
///
/// ```
/// use waitstate_core::tagger::{GrpcTagger, RequestView, Tagger};
///
/// let tagger = GrpcTagger::new("free")
///     .method("/shop.Checkout/Pay", "checkout", 1.0)
///     .service("shop.Reports", "batch", 20.0)
///     .metadata_key("x-tier")
///     .exempt_service("grpc.health.v1.Health");
///
/// struct Call(&'static str, Option<&'static [u8]>);
/// impl RequestView for Call {
///     fn method(&self) -> &str { "POST" }
///     fn path(&self) -> &str { self.0 }
///     fn header(&self, name: &str) -> Option<&[u8]> { (name == "x-tier").then_some(self.1).flatten() }
/// }
/// assert_eq!(tagger.tag(&Call("/shop.Checkout/Pay", None)).tag, "checkout");
/// let report = tagger.tag(&Call("/shop.Reports/Monthly", None));
/// assert_eq!((report.tag, report.weight), ("batch", 20.0));
/// assert_eq!(tagger.tag(&Call("/shop.Catalog/Search", Some(b"enterprise"))).tag, "enterprise");
/// assert_eq!(tagger.tag(&Call("/shop.Catalog/Search", None)).tag, "free");
/// assert!(tagger.tag(&Call("/grpc.health.v1.Health/Check", None)).exempt);
/// ```
///
/// **Metadata is whatever the client sent**: see the [module docs](super) on trusting
/// headers.
#[derive(Clone, Debug)]
pub struct GrpcTagger {
    methods: HashMap<Box<str>, Entry>,
    services: HashMap<Box<str>, Entry>,
    metadata_key: Option<String>,
    fallback: String,
    fallback_weight: f64,
    exempt: ExemptPaths,
}

#[derive(Clone, Debug)]
struct Entry {
    tag: Box<str>,
    weight: f64,
}

/// `/pkg.Service/Method` from `pkg.Service/Method` or `/pkg.Service/Method`.
fn method_path(name: &str) -> String {
    let name = name.trim();
    if name.starts_with('/') {
        name.to_owned()
    } else {
        format!("/{name}")
    }
}

/// `pkg.Service` from `pkg.Service`, `/pkg.Service` or `/pkg.Service/`.
fn service_name(name: &str) -> &str {
    name.trim().trim_matches('/')
}

/// The service of a gRPC path (`/pkg.Service/Method` -> `pkg.Service`), if it is one.
fn service_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some(service)
}

impl GrpcTagger {
    /// No entries: every call gets `fallback`, weight 1.
    pub fn new(fallback: &str) -> Self {
        Self {
            methods: HashMap::new(),
            services: HashMap::new(),
            metadata_key: None,
            fallback: fallback.to_owned(),
            fallback_weight: 1.0,
            exempt: ExemptPaths::default(),
        }
    }

    /// Calls of one method (`/shop.Checkout/Pay`, the leading `/` optional) get `tag` and
    /// `weight`. Given twice, the last one counts.
    #[must_use]
    pub fn method(mut self, full_name: &str, tag: &str, weight: f64) -> Self {
        let entry = Entry {
            tag: tag.into(),
            weight,
        };
        self.methods.insert(method_path(full_name).into(), entry);
        self
    }

    /// Calls of every method of a service (`shop.Catalog`) without an entry of its own get
    /// `tag` and `weight`.
    #[must_use]
    pub fn service(mut self, service: &str, tag: &str, weight: f64) -> Self {
        let entry = Entry {
            tag: tag.into(),
            weight,
        };
        self.services.insert(service_name(service).into(), entry);
        self
    }

    /// Calls without a method or service entry take their tag from this metadata key
    /// (ASCII metadata; lower case), when present, non-empty and UTF-8.
    #[must_use]
    pub fn metadata_key(mut self, key: &str) -> Self {
        self.metadata_key = Some(key.to_ascii_lowercase());
        self
    }

    /// The weight of calls that take the fallback tag or a metadata tag (default 1).
    #[must_use]
    pub fn fallback_weight(mut self, weight: f64) -> Self {
        self.fallback_weight = weight;
        self
    }

    /// Never gate or count the calls of this service (`grpc.health.v1.Health`).
    #[must_use]
    pub fn exempt_service(mut self, service: &str) -> Self {
        self.exempt.0.push(format!("/{}/*", service_name(service)));
        self
    }

    /// Never gate or count the calls of this method (`/grpc.health.v1.Health/Check`).
    #[must_use]
    pub fn exempt_method(mut self, full_name: &str) -> Self {
        self.exempt.0.push(method_path(full_name));
        self
    }
}

impl Tagger for GrpcTagger {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        let path = req.path();
        if self.exempt.matches(path) {
            return Tagging::exempt();
        }
        let entry = self
            .methods
            .get(path)
            .or_else(|| service_of(path).and_then(|service| self.services.get(service)));
        if let Some(e) = entry {
            return Tagging::new(&e.tag).weight(e.weight);
        }
        let from_metadata = self
            .metadata_key
            .as_deref()
            .and_then(|key| req.header(key))
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let tag = from_metadata.unwrap_or(if self.fallback.is_empty() {
            DEFAULT_TAG
        } else {
            &self.fallback
        });
        // A tag from metadata is the client's word: it takes no slot unless declared.
        Tagging::new(tag)
            .weight(self.fallback_weight)
            .declared_only(from_metadata.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tagger::tests::req;

    #[test]
    fn method_then_service_then_metadata_then_fallback() {
        let t = GrpcTagger::new("free")
            .method("shop.Checkout/Pay", "checkout", 2.0)
            .service("/shop.Checkout/", "pro", 1.0)
            .metadata_key("X-Tier")
            .exempt_service("grpc.health.v1.Health")
            .exempt_method("/shop.Checkout/Ping");
        let mut r = req(&[("x-tier", b"enterprise")]);
        r.path = "/shop.Checkout/Pay";
        assert_eq!((t.tag(&r).tag, t.tag(&r).weight), ("checkout", 2.0));
        r.path = "/shop.Checkout/Refund";
        assert_eq!(t.tag(&r).tag, "pro");
        r.path = "/shop.Catalog/Search";
        assert_eq!(t.tag(&r).tag, "enterprise");
        r.path = "/grpc.health.v1.Health/Watch";
        assert!(t.tag(&r).exempt);
        r.path = "/shop.Checkout/Ping";
        assert!(t.tag(&r).exempt);
    }

    #[test]
    fn bad_paths_and_metadata_fall_back() {
        let t = GrpcTagger::new("free")
            .service("a", "pro", 1.0)
            .metadata_key("x-tier");
        for path in ["", "/", "//", "/a", "/a/", "/a/b/c", "a/b"] {
            let mut r = req(&[("x-tier", b"\xff")]);
            r.path = path;
            assert_eq!(t.tag(&r).tag, "free", "{path:?}");
        }
        let mut r = req(&[("x-tier", b"  ")]);
        r.path = "/a/b";
        assert_eq!(t.tag(&r).tag, "pro");
        r.path = "/z/b";
        assert_eq!(t.tag(&r).tag, "free");
        assert_eq!(GrpcTagger::new("").tag(&r).tag, DEFAULT_TAG);
    }
}
