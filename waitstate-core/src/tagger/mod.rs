//! Taggers: what traffic class (tag), cost (weight) and cohort a request belongs to, and
//! whether it is exempt from the gate.
//!
//! A [`Tagger`] reads a [`RequestView`]: a small read-only view of an HTTP request (method,
//! path, headers, matched route) that every framework can provide. `waitstate-tower` (http
//! 1: hyper, axum, tonic) and `waitstate-actix` (actix-web, http 0.2) both implement it, so
//! one tagger value serves every framework.
//!
//! Presets: [`HeaderTagger`] (the `x-waitstate-tag` header, as the existing WaitState SDKs'
//! middleware reads it), [`PathTagger`] (a route table), [`ConstTagger`], [`GrpcTagger`]
//! (by full gRPC method name or metadata key), and the identity taggers, which read who is
//! asking: [`ApiKeyTagger`] (an API key header mapped to a tag), [`PeerCohort`] (the peer's
//! IP address as the cohort), [`ExtensionTagger`] (a typed value an auth layer put in the
//! request's extensions, such as a user) and [`ClaimTagger`] (a claim of a JWT that an
//! auth layer verified and put in the extensions). Any
//! `Fn(&dyn RequestView) -> Tagging<'static>` closure is a tagger too.
//!
//! # Trusting headers
//!
//! A tag or weight read from a client-supplied header is whatever the client says: a free
//! user can send `x-waitstate-tag: enterprise`. Read tags from headers only when a layer in
//! front of the gate (an authenticating proxy, an auth middleware) sets or strips them; or
//! derive the tag from authenticated state in a closure tagger.
//!
//! ```
//! use waitstate_core::tagger::{HeaderTagger, RequestView, Tagger, Tagging};
//!
//! struct Req;
//! impl RequestView for Req {
//!     fn method(&self) -> &str { "GET" }
//!     fn path(&self) -> &str { "/search" }
//!     fn header(&self, name: &str) -> Option<&[u8]> {
//!         match name {
//!             "x-waitstate-tag" => Some(b"pro"),
//!             "x-waitstate-weight" => Some(b"5"),
//!             _ => None,
//!         }
//!     }
//! }
//!
//! let tagger = HeaderTagger::new().weight_header("x-waitstate-weight");
//! let t = tagger.tag(&Req);
//! assert_eq!((t.tag, t.weight), ("pro", 5.0));
//!
//! let by_logic = |req: &dyn RequestView| {
//!     if req.path().starts_with("/health") { Tagging::exempt() } else { Tagging::new("free") }
//! };
//! assert_eq!(by_logic.tag(&Req).tag, "free");
//! ```

use std::any::Any;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;

use crate::registry::DEFAULT_TAG;

#[cfg(feature = "runtime")]
pub mod current;
mod grpc;
mod identity;

pub use grpc::GrpcTagger;
pub use identity::{
    ApiKeyTagger, ClaimTagger, Claims, ExtensionReader, ExtensionTagger, PeerCohort, extension,
};

/// The header a downstream call carries the caller's tag in, and the tag header
/// [`HeaderTagger`] reads by default.
pub const TAG_HEADER: &str = "x-waitstate-tag";

/// The header a downstream call carries the caller's cohort key in (16 lower-case hex
/// digits). `HeaderTagger::new().cohort_header(COHORT_HEADER)` reads it back.
pub const COHORT_HEADER: &str = "x-waitstate-cohort";

/// A read-only view of an HTTP request, the same over every framework.
pub trait RequestView {
    /// The method, upper case (`GET`).
    fn method(&self) -> &str;
    /// The path, without the query.
    fn path(&self) -> &str;
    /// A header's raw value (the first, if repeated). `name` is lower case.
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// The matched route pattern (`/users/{id}`), when the framework has routed already.
    fn route(&self) -> Option<&str> {
        None
    }

    /// The address of the peer that sent the request, when the framework knows it
    /// (axum's `ConnectInfo<SocketAddr>`, tonic's `TcpConnectInfo`, actix-web's
    /// `peer_addr`). Behind a proxy it is the proxy's address.
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// The framework's typed request extensions, where an auth layer puts the identity it
    /// established (a user, verified JWT claims): `http::Extensions` in `waitstate-tower`
    /// (hyper, axum, tonic), actix-web's `Extensions` in `waitstate-actix`. Read a value
    /// with [`extension`] and the adapter's [`ExtensionReader`].
    fn extensions(&self) -> Option<&dyn Any> {
        None
    }
}

/// What a tagger says of one request.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Tagging<'a> {
    /// The traffic class.
    pub tag: &'a str,
    /// The cost in units (1.0 by default).
    pub weight: f64,
    /// A stable hash of the user or API key, for consistent throttling.
    pub cohort: Option<u64>,
    /// Never gated, never counted (health checks, probes, metrics scrapes).
    pub exempt: bool,
    /// The tag came from the client (a header, gRPC metadata): if it is not declared (in
    /// `[tags]`, named by a policy, or already tracked) it counts as the default tag
    /// instead of taking a slot of its own ([`crate::Demand::declared_only`]).
    pub declared_only: bool,
}

impl<'a> Tagging<'a> {
    /// `tag`, weight 1, no cohort.
    pub const fn new(tag: &'a str) -> Self {
        Self {
            tag,
            weight: 1.0,
            cohort: None,
            exempt: false,
            declared_only: false,
        }
    }

    /// The tag is the client's word for it: count it as the default tag unless declared.
    #[must_use]
    pub const fn declared_only(mut self, yes: bool) -> Self {
        self.declared_only = yes;
        self
    }

    /// An exempt request: passes ungated and uncounted.
    pub const fn exempt() -> Self {
        Self {
            tag: DEFAULT_TAG,
            weight: 0.0,
            cohort: None,
            exempt: true,
            declared_only: false,
        }
    }

    /// Set the weight.
    pub const fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Set the cohort key (see [`cohort_of`] to hash a user or key id).
    pub const fn cohort(mut self, cohort: u64) -> Self {
        self.cohort = Some(cohort);
        self
    }

    /// The engine's demand for this tagging.
    pub fn demand(&self) -> crate::Demand<'a> {
        crate::Demand {
            weight: self.weight,
            cohort: self.cohort,
            declared_only: self.declared_only,
            ..crate::Demand::new(self.tag)
        }
    }
}

/// What the gate decided for an admitted request. Adapters put it in the request's
/// extensions, for handlers to read.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Admission {
    /// The tag the request counts under.
    pub tag: crate::Tag,
    /// Its weight.
    pub weight: f64,
    /// In dry run: what enforcement would have done.
    pub would_reject: Option<crate::Reason>,
    /// The cohort key the tagger gave, carried to downstream calls with the tag.
    pub cohort: Option<u64>,
}

impl Admission {
    /// The admission of a request of `weight` under `tag`, with no cohort.
    pub fn new(tag: crate::Tag, weight: f64, would_reject: Option<crate::Reason>) -> Self {
        Self {
            tag,
            weight,
            would_reject,
            cohort: None,
        }
    }

    /// The same, with this cohort key.
    #[must_use]
    pub fn with_cohort(mut self, cohort: Option<u64>) -> Self {
        self.cohort = cohort;
        self
    }

    /// The cohort as [`COHORT_HEADER`] carries it: 16 lower-case hex digits.
    pub fn cohort_header_value(&self) -> Option<[u8; 16]> {
        self.cohort.map(hex16)
    }
}

/// `n` as 16 lower-case hex digits, without allocating.
fn hex16(n: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The cohort key of a user or API key: a hash that is the same on every instance and
/// every run (so a fleet turns away the same users), not a secure one.
pub fn cohort_of(id: &[u8]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x5741_4954_5354_4154).build_hasher();
    h.write(id);
    h.finish()
}

/// Picks tag, weight, cohort and exemption for a request. Takes `&self`: one tagger value
/// serves every request and every framework.
pub trait Tagger {
    /// Tag one request. Must not panic; bad input gets a defined tagging (for example the
    /// fallback tag, or a NaN weight that the engine rejects as `over_weight`).
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a>;
}

impl<F> Tagger for F
where
    F: Fn(&dyn RequestView) -> Tagging<'static>,
{
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        self(req)
    }
}

impl<T: Tagger + ?Sized> Tagger for std::sync::Arc<T> {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        (**self).tag(req)
    }
}

/// Parses a weight header's value: a finite number, or NaN for anything else (empty,
/// garbage, `1e309`), which the engine rejects as `over_weight`: a client that sends a
/// weight it cannot spell does not get the default.
fn parse_weight(raw: &[u8]) -> f64 {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|w| w.is_finite())
        .unwrap_or(f64::NAN)
}

/// Paths that are exempt, exactly or by prefix (a pattern ending in `*`).
#[derive(Clone, Debug, Default)]
struct ExemptPaths(Vec<String>);

impl ExemptPaths {
    fn matches(&self, path: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        })
    }
}

/// Tag from a header (default `x-waitstate-tag`, what the WaitState SDKs' middleware
/// reads), optionally weight and cohort from headers too.
///
/// A missing, empty or non-UTF-8 tag header gives the fallback tag (default
/// `__default__`). A weight header that is not a finite number gives a NaN weight (the
/// engine answers `over_weight`); a missing one, the default weight.
///
/// **The header is whatever the client sent**: see the [module docs](self) on trusting
/// headers.
#[derive(Clone)]
pub struct HeaderTagger {
    tag_header: String,
    weight_header: Option<String>,
    cohort_header: Option<String>,
    fallback: String,
    default_weight: f64,
    exempt: ExemptPaths,
    undeclared_tags: bool,
}

impl fmt::Debug for HeaderTagger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderTagger")
            .field("tag_header", &self.tag_header)
            .field("weight_header", &self.weight_header)
            .field("cohort_header", &self.cohort_header)
            .field("fallback", &self.fallback)
            .field("default_weight", &self.default_weight)
            .field("exempt", &self.exempt.0)
            .field("undeclared_tags", &self.undeclared_tags)
            .finish()
    }
}

impl Default for HeaderTagger {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderTagger {
    /// The default header name for the tag ([`TAG_HEADER`]).
    pub const DEFAULT_HEADER: &'static str = TAG_HEADER;

    /// Tag from `x-waitstate-tag`, fallback `__default__`, weight 1.
    pub fn new() -> Self {
        Self {
            tag_header: Self::DEFAULT_HEADER.to_owned(),
            weight_header: None,
            cohort_header: None,
            fallback: DEFAULT_TAG.to_owned(),
            default_weight: 1.0,
            exempt: ExemptPaths::default(),
            undeclared_tags: false,
        }
    }

    /// Give a tag the header names a slot of its own even when it is not declared (not in
    /// `[tags]`, not named by a policy). Off by default: any client can send any tag, and
    /// the registry is bounded, so by default an undeclared tag from the header counts as
    /// the default tag. Turn it on only when a layer you trust sets the header.
    #[must_use]
    pub fn undeclared_tags(mut self, yes: bool) -> Self {
        self.undeclared_tags = yes;
        self
    }

    /// Read the tag from this header instead.
    #[must_use]
    pub fn tag_header(mut self, name: &str) -> Self {
        self.tag_header = name.to_ascii_lowercase();
        self
    }

    /// Read the weight from this header (a decimal number).
    #[must_use]
    pub fn weight_header(mut self, name: &str) -> Self {
        self.weight_header = Some(name.to_ascii_lowercase());
        self
    }

    /// Hash this header's value (an API key, a user id) into the cohort key. The value is
    /// hashed, never stored or logged.
    #[must_use]
    pub fn cohort_header(mut self, name: &str) -> Self {
        self.cohort_header = Some(name.to_ascii_lowercase());
        self
    }

    /// The tag when the header is missing or unusable.
    #[must_use]
    pub fn fallback(mut self, tag: &str) -> Self {
        self.fallback = tag.to_owned();
        self
    }

    /// The weight when no weight header is configured or present.
    #[must_use]
    pub fn default_weight(mut self, weight: f64) -> Self {
        self.default_weight = weight;
        self
    }

    /// Never gate or count this path (`/healthz`), or paths under a prefix (`/metrics*`).
    #[must_use]
    pub fn exempt_path(mut self, path: &str) -> Self {
        self.exempt.0.push(path.to_owned());
        self
    }
}

impl Tagger for HeaderTagger {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        if self.exempt.matches(req.path()) {
            return Tagging::exempt();
        }
        let from_header = req
            .header(&self.tag_header)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let declared_only = from_header.is_some() && !self.undeclared_tags;
        let tag = from_header.unwrap_or(&self.fallback);
        let weight = match self.weight_header.as_deref().and_then(|h| req.header(h)) {
            Some(raw) => parse_weight(raw),
            None => self.default_weight,
        };
        let cohort = self
            .cohort_header
            .as_deref()
            .and_then(|h| req.header(h))
            .map(cohort_of);
        Tagging {
            tag,
            weight,
            cohort,
            exempt: false,
            declared_only,
        }
    }
}

/// One entry of a [`PathTagger`].
#[derive(Clone, Debug)]
struct RouteEntry {
    method: Option<String>,
    pattern: String,
    prefix: bool,
    tag: String,
    weight: f64,
}

/// Tag and weight from a route table: exact routes (`POST /search` costs 100), then the
/// longest matching prefix, then the fallback. Matches the framework's matched route
/// pattern when it has one (axum's `MatchedPath`), else the path.
///
/// ```
/// use waitstate_core::tagger::PathTagger;
/// let tagger = PathTagger::new("free")
///     .route("POST /search", "free", 100.0)
///     .prefix("/checkout", "checkout", 1.0)
///     .exempt_path("/healthz");
/// # let _ = tagger;
/// ```
#[derive(Clone, Debug)]
pub struct PathTagger {
    routes: Vec<RouteEntry>,
    fallback: String,
    fallback_weight: f64,
    exempt: ExemptPaths,
}

impl PathTagger {
    /// An empty table: every request gets `fallback` with weight 1.
    pub fn new(fallback: &str) -> Self {
        Self {
            routes: Vec::new(),
            fallback: fallback.to_owned(),
            fallback_weight: 1.0,
            exempt: ExemptPaths::default(),
        }
    }

    fn push(mut self, spec: &str, tag: &str, weight: f64, prefix: bool) -> Self {
        let (method, pattern) = match spec.split_once(' ') {
            Some((m, p)) => (Some(m.trim().to_ascii_uppercase()), p.trim()),
            None => (None, spec.trim()),
        };
        self.routes.push(RouteEntry {
            method,
            pattern: pattern.to_owned(),
            prefix,
            tag: tag.to_owned(),
            weight,
        });
        self
    }

    /// An exact route: `"/search"` or with a method, `"POST /search"`; or a route pattern
    /// as the framework writes it (`"/users/{id}"`).
    #[must_use]
    pub fn route(self, spec: &str, tag: &str, weight: f64) -> Self {
        self.push(spec, tag, weight, false)
    }

    /// A prefix (`"/api/v1/"`), optionally with a method; the longest prefix wins.
    #[must_use]
    pub fn prefix(self, spec: &str, tag: &str, weight: f64) -> Self {
        self.push(spec, tag, weight, true)
    }

    /// The weight of requests that match nothing.
    #[must_use]
    pub fn fallback_weight(mut self, weight: f64) -> Self {
        self.fallback_weight = weight;
        self
    }

    /// Never gate or count this path, or paths under a prefix (`/metrics*`).
    #[must_use]
    pub fn exempt_path(mut self, path: &str) -> Self {
        self.exempt.0.push(path.to_owned());
        self
    }
}

impl Tagger for PathTagger {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        let path = req.path();
        if self.exempt.matches(path) {
            return Tagging::exempt();
        }
        let target = req.route().unwrap_or(path);
        let method = req.method();
        let method_ok = |e: &RouteEntry| e.method.as_deref().is_none_or(|m| m == method);
        let exact = self
            .routes
            .iter()
            .find(|e| !e.prefix && method_ok(e) && e.pattern == target);
        let best = exact.or_else(|| {
            self.routes
                .iter()
                .filter(|e| e.prefix && method_ok(e) && path.starts_with(e.pattern.as_str()))
                .max_by_key(|e| e.pattern.len())
        });
        match best {
            Some(e) => Tagging::new(&e.tag).weight(e.weight),
            None => Tagging::new(&self.fallback).weight(self.fallback_weight),
        }
    }
}

/// The same tag and weight for every request.
#[derive(Clone, Debug)]
pub struct ConstTagger {
    tag: String,
    weight: f64,
}

impl ConstTagger {
    /// Every request is `tag`, weight 1.
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.to_owned(),
            weight: 1.0,
        }
    }

    /// Set the weight.
    #[must_use]
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }
}

impl Tagger for ConstTagger {
    fn tag<'a>(&'a self, _req: &'a dyn RequestView) -> Tagging<'a> {
        Tagging::new(&self.tag).weight(self.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) struct Req {
        pub(super) method: &'static str,
        pub(super) path: &'static str,
        pub(super) route: Option<&'static str>,
        pub(super) headers: Vec<(&'static str, Vec<u8>)>,
    }

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn path(&self) -> &str {
            self.path
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_slice())
        }
        fn route(&self) -> Option<&str> {
            self.route
        }
    }

    /// A live tag, from an engine.
    pub(super) fn tag(name: &str) -> crate::Tag {
        let engine = crate::Engine::new(&crate::Config::default()).unwrap();
        let ticket = engine.admit(&crate::Demand::new(name), std::time::Duration::ZERO);
        ticket.unwrap().tag()
    }

    pub(super) fn req(headers: &[(&'static str, &[u8])]) -> Req {
        Req {
            method: "GET",
            path: "/x",
            route: None,
            headers: headers.iter().map(|(n, v)| (*n, v.to_vec())).collect(),
        }
    }

    #[test]
    fn header_tagger_reads_tag_weight_and_cohort() {
        let t = HeaderTagger::new()
            .weight_header("X-Cost")
            .cohort_header("x-api-key");
        let r = req(&[
            ("x-waitstate-tag", b" pro "),
            ("x-cost", b"2.5"),
            ("x-api-key", b"k1"),
        ]);
        let got = t.tag(&r);
        assert_eq!(
            (got.tag, got.weight, got.cohort),
            ("pro", 2.5, Some(cohort_of(b"k1")))
        );
        assert!(!got.exempt);
    }

    #[test]
    fn header_tagger_bad_values_have_defined_answers() {
        let t = HeaderTagger::new().weight_header("x-cost").fallback("free");
        assert_eq!(t.tag(&req(&[])).tag, "free");
        assert_eq!(t.tag(&req(&[("x-waitstate-tag", b"")])).tag, "free");
        assert_eq!(t.tag(&req(&[("x-waitstate-tag", b"\xff\xfe")])).tag, "free");
        let long = vec![b'a'; 64 * 1024];
        assert_eq!(
            t.tag(&req(&[("x-waitstate-tag", &long)])).tag.len(),
            64 * 1024
        );
        for bad in [&b"NaN"[..], b"garbage", b"1e309", b"", b"\xff"] {
            assert!(t.tag(&req(&[("x-cost", bad)])).weight.is_nan(), "{bad:?}");
        }
        assert_eq!(t.tag(&req(&[("x-cost", b"-1")])).weight, -1.0);
        assert_eq!(t.tag(&req(&[])).weight, 1.0);
    }

    #[test]
    fn exempt_paths() {
        let t = HeaderTagger::new()
            .exempt_path("/healthz")
            .exempt_path("/metrics*");
        let mut r = req(&[]);
        r.path = "/healthz";
        assert!(t.tag(&r).exempt);
        r.path = "/metrics/prom";
        assert!(t.tag(&r).exempt);
        r.path = "/healthz/deep";
        assert!(!t.tag(&r).exempt);
    }

    #[test]
    fn path_tagger_exact_then_longest_prefix_then_fallback() {
        let t = PathTagger::new("free")
            .route("POST /search", "free", 100.0)
            .route("/users/{id}", "pro", 2.0)
            .prefix("/checkout", "checkout", 1.0)
            .prefix("/checkout/big", "checkout", 10.0);
        let mut r = req(&[]);
        r.method = "POST";
        r.path = "/search";
        assert_eq!((t.tag(&r).tag, t.tag(&r).weight), ("free", 100.0));
        r.method = "GET";
        assert_eq!(t.tag(&r).weight, 1.0, "GET /search is not the POST route");
        r.path = "/checkout/big/cart";
        assert_eq!(t.tag(&r).weight, 10.0);
        r.path = "/users/42";
        r.route = Some("/users/{id}");
        assert_eq!(t.tag(&r).tag, "pro");
    }

    #[test]
    fn closures_and_consts_are_taggers() {
        let by_method = |r: &dyn RequestView| {
            if r.method() == "GET" {
                Tagging::new("reads")
            } else {
                Tagging::new("writes").weight(3.0)
            }
        };
        assert_eq!(by_method.tag(&req(&[])).tag, "reads");
        let c = ConstTagger::new("batch").weight(7.0);
        assert_eq!(
            (c.tag(&req(&[])).tag, c.tag(&req(&[])).weight),
            ("batch", 7.0)
        );
        let shared = std::sync::Arc::new(c);
        assert_eq!(shared.tag(&req(&[])).tag, "batch");
    }

    #[test]
    fn cohort_header_value_is_hex() {
        let a = Admission::new(tag("pro"), 1.0, None);
        assert_eq!(a.cohort_header_value(), None);
        let a = a.with_cohort(Some(0x0123_4567_89ab_cdef));
        assert_eq!(&a.cohort_header_value().unwrap(), b"0123456789abcdef");
        assert_eq!(&hex16(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&hex16(0), b"0000000000000000");
    }

    #[test]
    fn cohort_hash_is_stable() {
        assert_eq!(cohort_of(b"user-1"), cohort_of(b"user-1"));
        assert_ne!(cohort_of(b"user-1"), cohort_of(b"user-2"));
    }
}
