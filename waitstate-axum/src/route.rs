//! Per-route weights: what a request costs, by the route it matched.

use std::collections::HashMap;
use std::fmt;

use axum::http::Method;
use waitstate_core::tagger::{RequestView, Tagger, Tagging};

/// The cost of one request, in weight units: finite and not negative.
///
/// Whole units convert infallibly (`100u32.into()`); fractional ones are checked
/// (`Weight::try_from(0.5)?`), so a route table cannot hold a NaN or negative weight.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Weight(f64);

impl Weight {
    /// The weight in units.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl From<u32> for Weight {
    fn from(units: u32) -> Self {
        Self(f64::from(units))
    }
}

impl TryFrom<f64> for Weight {
    type Error = InvalidWeight;

    fn try_from(units: f64) -> Result<Self, InvalidWeight> {
        if units.is_finite() && units >= 0.0 {
            Ok(Self(units))
        } else {
            Err(InvalidWeight(units))
        }
    }
}

/// A weight that is NaN, infinite or negative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InvalidWeight(pub f64);

impl fmt::Display for InvalidWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid weight {}: a weight is a finite number of units, 0 or more",
            self.0
        )
    }
}

impl std::error::Error for InvalidWeight {}

/// A tagger that keeps another tagger's tag (who is asking) and sets the weight from a
/// route table (what it costs): `POST /search` costs 100, `GET /users/{id}` costs 5.
///
/// Routes are axum's route patterns, as written in `Router::route`, matched against the
/// request's matched route ([`RequestView::route`], axum's `MatchedPath`) when the gate
/// knows it (under `Router::layer` and `route_layer`), else against the path: static
/// routes always match, routes with parameters only where the pattern is known, not in a
/// gate wrapped around the whole router (see the
/// [crate docs](crate#where-to-put-the-gate)). In a nested router, write the full
/// pattern (`/api/users/{id}`). A route given with a method wins over the same route
/// given for any method; a request that matches no entry keeps the inner tagger's weight;
/// exempt requests stay exempt.
///
/// The table is built once; a lookup hashes the route, allocates nothing and never fails.
///
/// ```
/// use axum::http::Method;
/// use waitstate_axum::{HeaderTagger, RouteWeights, Weight};
///
/// let tagger = RouteWeights::new(HeaderTagger::new().exempt_path("/healthz"))
///     .route(Method::POST, "/search", 100u32)
///     .route(Method::GET, "/reports/{id}", Weight::try_from(2.5)?)
///     .any_method("/upload", 20u32);
/// # let _ = tagger;
/// # Ok::<(), waitstate_axum::InvalidWeight>(())
/// ```
#[derive(Clone)]
pub struct RouteWeights<T> {
    inner: T,
    routes: HashMap<Box<str>, Entry>,
}

/// The weights of one route pattern.
#[derive(Clone, Debug, Default)]
struct Entry {
    any: Option<Weight>,
    by_method: Vec<(Method, Weight)>,
}

impl<T> fmt::Debug for RouteWeights<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteWeights")
            .field("inner", &std::any::type_name::<T>())
            .field("routes", &self.routes)
            .finish()
    }
}

impl<T> RouteWeights<T> {
    /// Weigh by route the requests that `inner` tags.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            routes: HashMap::new(),
        }
    }

    /// Requests of `method` to `route` (an axum route pattern: `/search`,
    /// `/users/{id}`) weigh `weight`. Given twice, the last one counts.
    #[must_use]
    pub fn route(mut self, method: Method, route: &str, weight: impl Into<Weight>) -> Self {
        let weight = weight.into();
        let entry = self.routes.entry(route.into()).or_default();
        match entry.by_method.iter_mut().find(|(m, _)| *m == method) {
            Some(slot) => slot.1 = weight,
            None => entry.by_method.push((method, weight)),
        }
        self
    }

    /// Requests of any method to `route` weigh `weight`, unless the route is also given
    /// for their method.
    #[must_use]
    pub fn any_method(mut self, route: &str, weight: impl Into<Weight>) -> Self {
        self.routes.entry(route.into()).or_default().any = Some(weight.into());
        self
    }

    /// The tagger that picks the tag.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn weight_of(&self, method: &str, target: &str) -> Option<Weight> {
        let entry = self.routes.get(target)?;
        entry
            .by_method
            .iter()
            .find(|(m, _)| m.as_str() == method)
            .map(|(_, w)| *w)
            .or(entry.any)
    }
}

impl<T: Tagger> Tagger for RouteWeights<T> {
    fn tag<'a>(&'a self, req: &'a dyn RequestView) -> Tagging<'a> {
        let tagging = self.inner.tag(req);
        if tagging.exempt {
            return tagging;
        }
        let target = req.route().unwrap_or_else(|| req.path());
        match self.weight_of(req.method(), target) {
            Some(w) => tagging.weight(w.get()),
            None => tagging,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use waitstate_core::tagger::{ConstTagger, HeaderTagger};

    struct Req {
        method: &'static str,
        path: &'static str,
        route: Option<&'static str>,
    }

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.method
        }
        fn path(&self) -> &str {
            self.path
        }
        fn header(&self, _name: &str) -> Option<&[u8]> {
            None
        }
        fn route(&self) -> Option<&str> {
            self.route
        }
    }

    fn req(method: &'static str, path: &'static str, route: Option<&'static str>) -> Req {
        Req {
            method,
            path,
            route,
        }
    }

    #[test]
    fn weights_by_method_and_route_keep_the_inner_tag() {
        let t = RouteWeights::new(ConstTagger::new("pro").weight(3.0))
            .any_method("/search", 10u32)
            .route(Method::POST, "/search", 100u32)
            .route(Method::GET, "/users/{id}", 5u32);
        let search = req("POST", "/search", Some("/search"));
        let got = t.tag(&search);
        assert_eq!((got.tag, got.weight), ("pro", 100.0));
        assert_eq!(t.tag(&req("GET", "/search", None)).weight, 10.0);
        assert_eq!(
            t.tag(&req("GET", "/users/7", Some("/users/{id}"))).weight,
            5.0
        );
        // No matched route: the path is no pattern, so the inner weight stays.
        assert_eq!(t.tag(&req("GET", "/users/7", None)).weight, 3.0);
        assert_eq!(
            t.tag(&req("DELETE", "/users/7", Some("/users/{id}")))
                .weight,
            3.0
        );
        assert_eq!(t.tag(&req("GET", "/", Some("/"))).weight, 3.0);
    }

    #[test]
    fn last_entry_wins_and_exempt_stays_exempt() {
        let t = RouteWeights::new(HeaderTagger::new().exempt_path("/healthz"))
            .route(Method::POST, "/search", 100u32)
            .route(Method::POST, "/search", 7u32)
            .any_method("/healthz", 50u32);
        assert_eq!(t.tag(&req("POST", "/search", None)).weight, 7.0);
        let healthz = req("GET", "/healthz", Some("/healthz"));
        let health = t.tag(&healthz);
        assert!(health.exempt);
        assert_eq!(health.weight, 0.0);
    }

    #[test]
    fn weights_are_checked() {
        assert_eq!(Weight::try_from(2.5).map(Weight::get), Ok(2.5));
        assert_eq!(Weight::try_from(0.0).map(Weight::get), Ok(0.0));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            let err = Weight::try_from(bad).unwrap_err();
            assert!(err.to_string().contains("invalid weight"), "{err}");
        }
        assert_eq!(Weight::from(u32::MAX).get(), f64::from(u32::MAX));
    }
}
