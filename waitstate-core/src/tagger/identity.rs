//! Identity taggers: who is asking (an API key, the peer's address, a user or the claims
//! an auth layer established) chooses the tag or the cohort.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

use super::{ExemptPaths, RequestView, Tagger, Tagging, cohort_of};
use crate::registry::DEFAULT_TAG;

/// How a framework's extensions are searched by type. Each adapter has one
/// (`waitstate_tower::HttpExtensions` for hyper, axum and tonic;
/// `waitstate_actix::ActixExtensions`), because each framework keeps its own map; a pair
/// `(A, B)` tries `A`, then `B`, for a tagger that serves both.
pub trait ExtensionReader {
    /// The value of type `T` in `extensions` (what [`RequestView::extensions`] returned),
    /// if the framework's map is there and holds one.
    fn read<T: Send + Sync + 'static>(extensions: &dyn Any) -> Option<&T>;
}

impl<A: ExtensionReader, B: ExtensionReader> ExtensionReader for (A, B) {
    fn read<T: Send + Sync + 'static>(extensions: &dyn Any) -> Option<&T> {
        A::read(extensions).or_else(|| B::read(extensions))
    }
}

/// The typed extension `T` of a request, read with the adapter's reader `R`.
pub fn extension<R: ExtensionReader, T: Send + Sync + 'static>(
    req: &dyn RequestView,
) -> Option<&T> {
    R::read(req.extensions()?)
}

fn fallback_tag(fallback: &str) -> &str {
    if fallback.is_empty() {
        DEFAULT_TAG
    } else {
        fallback
    }
}

/// Tag by API key: a header's value (default `x-api-key`; or the token of
/// `authorization: Bearer <key>`) looked up in a map of keys to tags. The key's hash is the
/// cohort, so a throttled tier turns away the same customers each time.
///
/// A missing, empty, non-UTF-8 or unknown key gets the fallback tag (default
/// `__default__`) and no cohort. The map is built once (from code, or deserialized from a
/// configuration file: `{ header, fallback, keys = { key = tag } }`); a lookup allocates
/// nothing. Keys are never logged: `Debug` shows how many there are.
///
/// This classifies requests; it does not authenticate them. Put it behind the layer that
/// rejects bad keys, or accept that an unknown key is simply the fallback tier.
///
/// ```
/// use waitstate_core::tagger::{ApiKeyTagger, RequestView, Tagger, cohort_of};
///
/// let tagger = ApiKeyTagger::new()
///     .key("k-acme", "enterprise")
///     .key("k-hobby", "free")
///     .fallback("anonymous");
///
/// struct Req(Option<&'static [u8]>);
/// impl RequestView for Req {
///     fn method(&self) -> &str { "GET" }
///     fn path(&self) -> &str { "/" }
///     fn header(&self, name: &str) -> Option<&[u8]> { (name == "x-api-key").then_some(self.0).flatten() }
/// }
/// let t = tagger.tag(&Req(Some(b"k-acme")));
/// assert_eq!((t.tag, t.cohort), ("enterprise", Some(cohort_of(b"k-acme"))));
/// assert_eq!(tagger.tag(&Req(Some(b"forged"))).tag, "anonymous");
/// assert_eq!(tagger.tag(&Req(None)).tag, "anonymous");
///
/// // From a configuration file.
/// let from_toml: ApiKeyTagger = toml::from_str(r#"
///     header = "x-api-key"
///     fallback = "anonymous"
///     [keys]
///     k-acme = "enterprise"
/// "#)?;
/// assert_eq!(from_toml.tag(&Req(Some(b"k-acme"))).tag, "enterprise");
/// # Ok::<(), toml::de::Error>(())
/// ```
#[derive(Clone, serde::Deserialize)]
#[serde(from = "ApiKeyConfig")]
pub struct ApiKeyTagger {
    header: String,
    bearer: bool,
    keys: HashMap<Box<[u8]>, Box<str>>,
    fallback: String,
    cohort: bool,
    exempt: ExemptPaths,
}

/// The configuration-file form of an [`ApiKeyTagger`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiKeyConfig {
    #[serde(default = "default_key_header")]
    header: String,
    #[serde(default)]
    bearer: bool,
    #[serde(default)]
    fallback: Option<String>,
    #[serde(default)]
    keys: HashMap<String, String>,
}

fn default_key_header() -> String {
    ApiKeyTagger::DEFAULT_HEADER.to_owned()
}

impl From<ApiKeyConfig> for ApiKeyTagger {
    fn from(c: ApiKeyConfig) -> Self {
        let mut t = Self::new().header(&c.header).keys(c.keys);
        if c.bearer {
            t = t.bearer();
        }
        if let Some(f) = c.fallback {
            t.fallback = f;
        }
        t
    }
}

impl fmt::Debug for ApiKeyTagger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyTagger")
            .field("header", &self.header)
            .field("bearer", &self.bearer)
            .field("keys", &self.keys.len())
            .field("fallback", &self.fallback)
            .field("cohort", &self.cohort)
            .finish_non_exhaustive()
    }
}

impl Default for ApiKeyTagger {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiKeyTagger {
    /// The default header: `x-api-key`.
    pub const DEFAULT_HEADER: &'static str = "x-api-key";

    /// Read `x-api-key`; no keys yet; fallback `__default__`; cohort from the key.
    pub fn new() -> Self {
        Self {
            header: Self::DEFAULT_HEADER.to_owned(),
            bearer: false,
            keys: HashMap::new(),
            fallback: DEFAULT_TAG.to_owned(),
            cohort: true,
            exempt: ExemptPaths::default(),
        }
    }

    /// Read the key from this header instead.
    #[must_use]
    pub fn header(mut self, name: &str) -> Self {
        self.header = name.trim().to_ascii_lowercase();
        self.bearer = false;
        self
    }

    /// Read the key from `authorization: Bearer <key>` (in a configuration file:
    /// `bearer = true`, which wins over `header`).
    #[must_use]
    pub fn bearer(mut self) -> Self {
        self.header = "authorization".to_owned();
        self.bearer = true;
        self
    }

    /// Requests with `key` get `tag`. Given twice, the last one counts.
    #[must_use]
    pub fn key(mut self, key: &str, tag: &str) -> Self {
        self.keys.insert(key.as_bytes().into(), tag.into());
        self
    }

    /// Many keys at once (a map from a configuration file).
    #[must_use]
    pub fn keys<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        keys: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in keys {
            self.keys
                .insert(k.as_ref().as_bytes().into(), v.as_ref().into());
        }
        self
    }

    /// The tag of requests without a known key.
    #[must_use]
    pub fn fallback(mut self, tag: &str) -> Self {
        self.fallback = tag.to_owned();
        self
    }

    /// Do not use the key's hash as the cohort.
    #[must_use]
    pub fn without_cohort(mut self) -> Self {
        self.cohort = false;
        self
    }

    /// Never gate or count this path, or paths under a prefix (`/metrics*`).
    #[must_use]
    pub fn exempt_path(mut self, path: &str) -> Self {
        self.exempt.0.push(path.to_owned());
        self
    }

    fn key_of<'a>(&self, req: &'a dyn RequestView) -> Option<&'a [u8]> {
        let raw = req.header(&self.header)?;
        let key = if self.bearer {
            let (scheme, token) = raw.split_at_checked(7)?;
            if !scheme.eq_ignore_ascii_case(b"bearer ") {
                return None;
            }
            token
        } else {
            raw
        };
        let key = key.trim_ascii();
        (!key.is_empty()).then_some(key)
    }
}

impl Tagger for ApiKeyTagger {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        if self.exempt.matches(req.path()) {
            return Tagging::exempt();
        }
        match self.key_of(req).and_then(|k| Some((k, self.keys.get(k)?))) {
            Some((key, tag)) if self.cohort => Tagging::new(tag).cohort(cohort_of(key)),
            Some((_, tag)) => Tagging::new(tag),
            None => Tagging::new(fallback_tag(&self.fallback)),
        }
    }
}

/// Wraps a tagger and makes the peer's IP address the cohort (when the inner tagger gave
/// none): a throttled tier then turns away the same clients each time, not a random share
/// of every client's requests. IPv6 addresses count by their /64 prefix (what one host
/// usually holds). The port never counts.
///
/// The peer address is what the framework saw ([`RequestView::peer_addr`]: axum's
/// `ConnectInfo<SocketAddr>`, which needs `into_make_service_with_connect_info`; tonic's
/// `TcpConnectInfo`; actix-web's `peer_addr`). Behind a proxy it is the proxy's: read
/// the client's address from the proxy's header in your own tagger instead, and only if
/// the proxy sets it.
///
/// ```
/// use std::net::SocketAddr;
/// use waitstate_core::tagger::{ConstTagger, PeerCohort, RequestView, Tagger, cohort_of};
///
/// struct Req(SocketAddr);
/// impl RequestView for Req {
///     fn method(&self) -> &str { "GET" }
///     fn path(&self) -> &str { "/" }
///     fn header(&self, _: &str) -> Option<&[u8]> { None }
///     fn peer_addr(&self) -> Option<SocketAddr> { Some(self.0) }
/// }
/// let tagger = PeerCohort::new(ConstTagger::new("free"));
/// let (first, second) = (Req("192.0.2.7:5000".parse().unwrap()), Req("192.0.2.7:6000".parse().unwrap()));
/// let (a, b) = (tagger.tag(&first), tagger.tag(&second));
/// assert_eq!(a.tag, "free");
/// assert_eq!(a.cohort, b.cohort, "same address, same cohort, whatever the port");
/// assert!(a.cohort.is_some());
/// ```
#[derive(Clone, Debug)]
pub struct PeerCohort<T> {
    inner: T,
    replace: bool,
}

impl<T> PeerCohort<T> {
    /// The cohort of `inner`'s requests is their peer's address (unless `inner` set one).
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            replace: false,
        }
    }

    /// Use the peer's address even where `inner` set a cohort (when the peer is known).
    #[must_use]
    pub fn always(mut self) -> Self {
        self.replace = true;
        self
    }

    /// The tagger that picks the tag.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

/// The cohort of an IP address: IPv4 whole, IPv6 by its /64.
fn ip_cohort(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => cohort_of(&v4.octets()),
        IpAddr::V6(v6) => cohort_of(&v6.octets()[..8]),
    }
}

impl<T: Tagger> Tagger for PeerCohort<T> {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        let mut tagging = self.inner.tag(req);
        if tagging.exempt || (tagging.cohort.is_some() && !self.replace) {
            return tagging;
        }
        if let Some(addr) = req.peer_addr() {
            tagging.cohort = Some(ip_cohort(addr.ip()));
        }
        tagging
    }
}

/// Tag by a typed value an auth layer put in the request's extensions (a `User`, an
/// account, verified claims): `map` turns it into a tagging; a request without one gets
/// the fallback tag (default `__default__`).
///
/// `R` is the framework's [`ExtensionReader`]; the adapters name it for you
/// (`waitstate_tower::ExtensionTagger<T, F>`, `waitstate_actix::ExtensionTagger<T, F>`).
/// The tag may borrow from the value (`Tagging::new(&user.plan)`): nothing is copied.
/// The auth layer must run before the gate (in axum, a layer added after the gate's, or a
/// `route_layer`/`middleware::from_fn` that runs first).
pub struct ExtensionTagger<T, F, R> {
    map: F,
    fallback: String,
    exempt: ExemptPaths,
    _marker: PhantomData<fn(&T, R)>,
}

impl<T, F: Clone, R> Clone for ExtensionTagger<T, F, R> {
    fn clone(&self) -> Self {
        Self {
            map: self.map.clone(),
            fallback: self.fallback.clone(),
            exempt: self.exempt.clone(),
            _marker: PhantomData,
        }
    }
}

impl<T, F, R> fmt::Debug for ExtensionTagger<T, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExtensionTagger")
            .field("extension", &std::any::type_name::<T>())
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

impl<T, F, R> ExtensionTagger<T, F, R>
where
    F: for<'a> Fn(&'a T) -> Tagging<'a>,
{
    /// Tag requests that carry a `T` with `map`.
    pub fn new(map: F) -> Self {
        Self {
            map,
            fallback: DEFAULT_TAG.to_owned(),
            exempt: ExemptPaths::default(),
            _marker: PhantomData,
        }
    }
}

impl<T, F, R> ExtensionTagger<T, F, R> {
    /// The tag of requests without a `T` (anonymous ones).
    #[must_use]
    pub fn fallback(mut self, tag: &str) -> Self {
        self.fallback = tag.to_owned();
        self
    }

    /// Never gate or count this path, or paths under a prefix (`/metrics*`).
    #[must_use]
    pub fn exempt_path(mut self, path: &str) -> Self {
        self.exempt.0.push(path.to_owned());
        self
    }
}

impl<T, F, R> Tagger for ExtensionTagger<T, F, R>
where
    T: Send + Sync + 'static,
    F: for<'a> Fn(&'a T) -> Tagging<'a>,
    R: ExtensionReader,
{
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        if self.exempt.matches(req.path()) {
            return Tagging::exempt();
        }
        match extension::<R, T>(req) {
            Some(value) => (self.map)(value),
            None => Tagging::new(fallback_tag(&self.fallback)),
        }
    }
}

/// The claims of a token an auth layer verified, by name. Implemented for
/// `serde_json::Value` (an object), `serde_json::Map` and string maps; implement it for
/// your own claims type in a line.
pub trait Claims: Send + Sync + 'static {
    /// The claim's value, when it is a string.
    fn claim(&self, name: &str) -> Option<&str>;
}

impl Claims for serde_json::Value {
    fn claim(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }
}

impl Claims for serde_json::Map<String, serde_json::Value> {
    fn claim(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }
}

impl<S: std::hash::BuildHasher + Send + Sync + 'static> Claims for HashMap<String, String, S> {
    fn claim(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Claims for BTreeMap<String, String> {
    fn claim(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

/// Tag by a claim of a JWT that an auth layer has **already verified** and put in the
/// request's extensions as `C` (WaitState verifies nothing: it reads what the auth layer
/// established). The tag claim's value is looked up in a map (`"plan": "ent"` ->
/// `enterprise`), or, with no map, is the tag itself; the subject claim (default `sub`)
/// hashed is the cohort. No claims, no tag claim or an unmapped value: the fallback tag.
///
/// `R` is the framework's [`ExtensionReader`]; the adapters name it for you
/// (`waitstate_tower::ClaimTagger<C>`, `waitstate_actix::ClaimTagger<C>`).
pub struct ClaimTagger<C, R> {
    claim: String,
    values: HashMap<Box<str>, Box<str>>,
    cohort_claim: Option<String>,
    fallback: String,
    _marker: PhantomData<fn(&C, R)>,
}

impl<C, R> Clone for ClaimTagger<C, R> {
    fn clone(&self) -> Self {
        Self {
            claim: self.claim.clone(),
            values: self.values.clone(),
            cohort_claim: self.cohort_claim.clone(),
            fallback: self.fallback.clone(),
            _marker: PhantomData,
        }
    }
}

impl<C, R> fmt::Debug for ClaimTagger<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimTagger")
            .field("claims", &std::any::type_name::<C>())
            .field("claim", &self.claim)
            .field("values", &self.values)
            .field("cohort_claim", &self.cohort_claim)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<R> ClaimTagger<serde_json::Value, R> {
    /// Tag by the claim `claim` of `serde_json::Value` claims.
    pub fn new(claim: &str) -> Self {
        Self::of(claim)
    }
}

impl<C, R> ClaimTagger<C, R> {
    /// Tag by the claim `claim` of claims of type `C`.
    pub fn of(claim: &str) -> Self {
        Self {
            claim: claim.to_owned(),
            values: HashMap::new(),
            cohort_claim: Some("sub".to_owned()),
            fallback: DEFAULT_TAG.to_owned(),
            _marker: PhantomData,
        }
    }

    /// The claim's `value` means `tag`. Once one value is mapped, unmapped values get the
    /// fallback (a token cannot name a tier that is not in the map).
    #[must_use]
    pub fn value(mut self, value: &str, tag: &str) -> Self {
        self.values.insert(value.into(), tag.into());
        self
    }

    /// Hash this claim into the cohort instead of `sub`.
    #[must_use]
    pub fn cohort_claim(mut self, claim: &str) -> Self {
        self.cohort_claim = Some(claim.to_owned());
        self
    }

    /// No cohort from the claims.
    #[must_use]
    pub fn without_cohort(mut self) -> Self {
        self.cohort_claim = None;
        self
    }

    /// The tag of requests without usable claims.
    #[must_use]
    pub fn fallback(mut self, tag: &str) -> Self {
        self.fallback = tag.to_owned();
        self
    }
}

impl<C: Claims, R: ExtensionReader> Tagger for ClaimTagger<C, R> {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        let fallback = Tagging::new(fallback_tag(&self.fallback));
        let Some(claims) = extension::<R, C>(req) else {
            return fallback;
        };
        let value = claims.claim(&self.claim).map(str::trim);
        let tag = match value {
            Some(v) if self.values.is_empty() && !v.is_empty() => v,
            Some(v) => match self.values.get(v) {
                Some(tag) => &**tag,
                None => return fallback,
            },
            None => return fallback,
        };
        let cohort = self
            .cohort_claim
            .as_deref()
            .and_then(|c| claims.claim(c))
            .map(|sub| cohort_of(sub.as_bytes()));
        Tagging {
            cohort,
            ..Tagging::new(tag)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tagger::tests::req;
    use crate::tagger::{ConstTagger, HeaderTagger};

    /// A reader over a test map: a `Vec<Box<dyn Any + Send + Sync>>`.
    struct VecReader;
    type Exts = Vec<Box<dyn Any + Send + Sync>>;
    impl ExtensionReader for VecReader {
        fn read<T: Send + Sync + 'static>(e: &dyn Any) -> Option<&T> {
            e.downcast_ref::<Exts>()?
                .iter()
                .find_map(|b| b.downcast_ref::<T>())
        }
    }
    /// A reader that never finds anything.
    struct Nothing;
    impl ExtensionReader for Nothing {
        fn read<T: Send + Sync + 'static>(_: &dyn Any) -> Option<&T> {
            None
        }
    }

    struct WithExt(Exts, Option<std::net::SocketAddr>);
    impl RequestView for WithExt {
        fn method(&self) -> &str {
            "GET"
        }
        fn path(&self) -> &str {
            "/x"
        }
        fn header(&self, _: &str) -> Option<&[u8]> {
            None
        }
        fn peer_addr(&self) -> Option<std::net::SocketAddr> {
            self.1
        }
        fn extensions(&self) -> Option<&dyn Any> {
            Some(&self.0)
        }
    }

    struct User {
        plan: String,
        id: u64,
    }

    #[test]
    fn api_keys_map_to_tags_with_a_cohort() {
        let t = ApiKeyTagger::new()
            .keys([("k1", "enterprise"), ("k2", "pro")])
            .fallback("free");
        let r = req(&[("x-api-key", b" k1 ")]);
        let got = t.tag(&r);
        assert_eq!(
            (got.tag, got.cohort),
            ("enterprise", Some(cohort_of(b"k1")))
        );
        for bad in [&b""[..], b"\xff\xfe", b"K1", b"k3"] {
            let r = req(&[("x-api-key", bad)]);
            let got = t.tag(&r);
            assert_eq!((got.tag, got.cohort), ("free", None), "{bad:?}");
        }
        assert_eq!(t.tag(&req(&[])).tag, "free");
        assert!(!format!("{t:?}").contains("k1"), "keys never shown");
        let t = t.without_cohort();
        assert_eq!(t.tag(&req(&[("x-api-key", b"k2")])).cohort, None);
    }

    #[test]
    fn bearer_keys() {
        let t = ApiKeyTagger::new().bearer().key("tok", "pro");
        assert_eq!(t.tag(&req(&[("authorization", b"Bearer tok")])).tag, "pro");
        assert_eq!(
            t.tag(&req(&[("authorization", b"bearer  tok ")])).tag,
            "pro"
        );
        for bad in [&b"Basic tok"[..], b"Bearer", b"tok", b"Bearer \xff", b""] {
            assert_eq!(
                t.tag(&req(&[("authorization", bad)])).tag,
                DEFAULT_TAG,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn api_keys_from_config_reject_unknown_fields() {
        let t: ApiKeyTagger =
            serde_json::from_str(r#"{"bearer":true,"keys":{"a":"pro"},"fallback":"free"}"#)
                .unwrap();
        assert_eq!(t.tag(&req(&[("authorization", b"Bearer a")])).tag, "pro");
        assert_eq!(t.tag(&req(&[])).tag, "free");
        assert!(serde_json::from_str::<ApiKeyTagger>(r#"{"kyes":{}}"#).is_err());
    }

    #[test]
    fn peer_address_is_the_cohort() {
        let t = PeerCohort::new(ConstTagger::new("free"));
        let at = |a: &str| t.tag(&WithExt(Vec::new(), Some(a.parse().unwrap()))).cohort;
        assert_eq!(at("10.0.0.1:1"), at("10.0.0.1:2"));
        assert_ne!(at("10.0.0.1:1"), at("10.0.0.2:1"));
        assert_eq!(at("[2001:db8::1]:1"), at("[2001:db8::ffff]:1"), "same /64");
        assert_ne!(at("[2001:db8::1]:1"), at("[2001:db8:0:1::1]:1"));
        assert_eq!(at("[::ffff:10.0.0.1]:1"), at("10.0.0.1:9"), "mapped v4");
        assert_eq!(t.tag(&WithExt(Vec::new(), None)).cohort, None);
        // The inner tagger's cohort stays, unless told otherwise.
        let inner = HeaderTagger::new().cohort_header("x-api-key");
        let keyed = req(&[("x-api-key", b"k")]);
        assert_eq!(
            PeerCohort::new(inner.clone()).tag(&keyed).cohort,
            Some(cohort_of(b"k"))
        );
        let kept = PeerCohort::new(inner).always().tag(&keyed).cohort;
        assert_eq!(
            kept,
            Some(cohort_of(b"k")),
            "no peer: the inner cohort stays"
        );
    }

    #[test]
    fn extension_tagger_reads_what_the_auth_layer_put() {
        let t = ExtensionTagger::<User, _, VecReader>::new(|u: &User| {
            Tagging::new(&u.plan).cohort(u.id)
        })
        .fallback("anonymous");
        let user: Box<dyn Any + Send + Sync> = Box::new(User {
            plan: "enterprise".into(),
            id: 7,
        });
        let r = WithExt(vec![Box::new(3u8), user], None);
        let got = t.tag(&r);
        assert_eq!((got.tag, got.cohort), ("enterprise", Some(7)));
        assert_eq!(t.tag(&WithExt(Vec::new(), None)).tag, "anonymous");
        assert_eq!(t.tag(&req(&[])).tag, "anonymous", "no extensions at all");
        let other = ExtensionTagger::<User, _, Nothing>::new(|u: &User| Tagging::new(&u.plan));
        assert_eq!(other.tag(&r).tag, DEFAULT_TAG);
        let both =
            ExtensionTagger::<User, _, (Nothing, VecReader)>::new(|u: &User| Tagging::new(&u.plan));
        assert_eq!(both.tag(&r).tag, "enterprise");
    }

    #[test]
    fn claims_choose_tag_and_cohort() {
        let claims: Box<dyn Any + Send + Sync> =
            Box::new(serde_json::json!({"plan": "ent", "sub": "user-1", "n": 3}));
        let r = WithExt(vec![claims], None);
        let mapped = ClaimTagger::<_, VecReader>::new("plan")
            .value("ent", "enterprise")
            .fallback("free");
        let got = mapped.tag(&r);
        assert_eq!(
            (got.tag, got.cohort),
            ("enterprise", Some(cohort_of(b"user-1")))
        );
        let raw = ClaimTagger::<serde_json::Value, VecReader>::new("plan");
        assert_eq!(raw.tag(&r).tag, "ent");
        let unmapped = ClaimTagger::<serde_json::Value, VecReader>::new("plan")
            .value("pro", "pro")
            .fallback("free");
        assert_eq!(
            unmapped.tag(&r).tag,
            "free",
            "a token cannot pick its own tier"
        );
        let not_a_string = ClaimTagger::<serde_json::Value, VecReader>::new("n").fallback("free");
        assert_eq!(not_a_string.tag(&r).tag, "free");
        let no_claims = ClaimTagger::<serde_json::Value, VecReader>::new("plan");
        assert_eq!(no_claims.tag(&WithExt(Vec::new(), None)).tag, DEFAULT_TAG);
        let map: Box<dyn Any + Send + Sync> =
            Box::new(BTreeMap::from([("tier".to_owned(), "pro".to_owned())]));
        let typed = ClaimTagger::<BTreeMap<String, String>, VecReader>::of("tier").without_cohort();
        let r = WithExt(vec![map], None);
        let got = typed.tag(&r);
        assert_eq!((got.tag, got.cohort), ("pro", None));
    }
}
