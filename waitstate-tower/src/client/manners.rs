//! What every polite client shares (the tower layer and the reqwest middleware): which tag
//! a call carries, what a response says about the backend, and the per-tag state of
//! adaptive throttling and pushback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;
use waitstate_core::tagger::{Admission, COHORT_HEADER, TAG_HEADER, current};

use super::LocalRejection;
use super::throttle::AdaptiveThrottle;

/// Past this many traffic classes, new ones share one state (a caller that puts user ids
/// in the tag header cannot grow the map without bound).
const MAX_CLASSES: usize = 256;

/// The class of a call: the tag it carries downstream (empty when none).
#[derive(Clone, Debug)]
pub(crate) enum Class {
    /// The tag of an admission (no allocation: the engine's tag).
    Tag(waitstate_core::Tag),
    /// A tag header the caller set by hand.
    Named(Box<str>),
    /// No tag.
    None,
}

impl Class {
    fn as_str(&self) -> &str {
        match self {
            Self::Tag(t) => t.as_str(),
            Self::Named(n) => n,
            Self::None => "",
        }
    }
}

/// Sets `x-waitstate-tag` (and `x-waitstate-cohort`) on an outgoing request from the
/// admission in its extensions, else the current one; a tag header the caller set wins.
/// Returns the call's class.
pub(crate) fn propagate(
    headers: &mut HeaderMap,
    explicit: Option<&Admission>,
    enabled: bool,
) -> Class {
    if let Some(v) = headers.get(TAG_HEADER) {
        return match v.to_str() {
            Ok(s) if !s.trim().is_empty() => Class::Named(s.trim().into()),
            _ => Class::None,
        };
    }
    if !enabled {
        return Class::None;
    }
    let admission = match explicit {
        Some(a) => a.clone(),
        None => match current::current() {
            Some(a) => a,
            None => return Class::None,
        },
    };
    // A tag that is not a valid header value (the engine allows any UTF-8) is not sent.
    let Ok(value) = HeaderValue::from_str(admission.tag.as_str()) else {
        return Class::None;
    };
    headers.insert(TAG_HEADER, value);
    if let Some(hex) = admission.cohort_header_value()
        && !headers.contains_key(COHORT_HEADER)
        && let Ok(v) = HeaderValue::from_bytes(&hex)
    {
        headers.insert(COHORT_HEADER, v);
    }
    Class::Tag(admission.tag)
}

/// The class a call's pushback and throttling count under: its tag, and for a gRPC call its
/// method too (a gRPC server often tags by method, and sheds one method of a tag while
/// another passes), bounded like every class.
pub(crate) fn class_of_call(tag: Class, grpc: bool, path: &str) -> Class {
    if !grpc {
        return tag;
    }
    Class::Named(format!("{} {path}", tag.as_str()).into())
}

/// What a response head says about the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// An overload answer: HTTP 429 or 503, gRPC `RESOURCE_EXHAUSTED` or `UNAVAILABLE`.
    pub(crate) overloaded: bool,
    /// The server's hint.
    pub(crate) pushback: Pushback,
}

/// The server's retry hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// None given.
    None,
    /// Wait this long (`Retry-After`, `grpc-retry-pushback-ms` >= 0).
    After(Duration),
    /// Do not retry (`grpc-retry-pushback-ms` negative or not a number, as gRPC's retry
    /// design says).
    DoNotRetry,
}

/// Reads a response head: status, `Retry-After` (delta-seconds; an HTTP date gives no
/// hint), gRPC's `grpc-status` and `grpc-retry-pushback-ms` (from the headers of a
/// trailers-only response, the form every rejection before the first message takes).
pub(crate) fn read_answer(status: u16, headers: &HeaderMap) -> Answer {
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| waitstate_core::adapter::is_grpc_content_type(v.as_bytes()));
    if grpc && status == 200 {
        let code = headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u32>().ok());
        let overloaded = matches!(code, Some(8 | 14));
        let pushback = match headers.get("grpc-retry-pushback-ms") {
            None => Pushback::None,
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<i64>().ok()) {
                Some(ms) if ms >= 0 => Pushback::After(Duration::from_millis(ms as u64)),
                _ => Pushback::DoNotRetry,
            },
        };
        return Answer {
            overloaded,
            pushback,
        };
    }
    let overloaded = status == 429 || status == 503;
    let pushback = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(Pushback::None, |s| Pushback::After(Duration::from_secs(s)));
    Answer {
        overloaded,
        pushback,
    }
}

/// One traffic class's state.
#[derive(Debug)]
struct ClassState {
    throttle: AdaptiveThrottle,
    /// No call of this class before this time (since the origin).
    backoff_until: Duration,
}

/// The settings and state every clone of a client shares.
#[derive(Debug)]
pub(crate) struct Manners {
    pub(crate) k: f64,
    pub(crate) window: Duration,
    pub(crate) throttling: bool,
    pub(crate) pushback: bool,
    pub(crate) propagate: bool,
    origin: Instant,
    classes: Mutex<HashMap<Box<str>, ClassState>>,
}

impl Manners {
    pub(crate) fn new(
        k: f64,
        window: Duration,
        throttling: bool,
        pushback: bool,
        propagate: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            k,
            window,
            throttling,
            pushback,
            propagate,
            origin: Instant::now(),
            classes: Mutex::new(HashMap::new()),
        })
    }

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    fn classes(&self) -> MutexGuard<'_, HashMap<Box<str>, ClassState>> {
        // The state is counters: after a panic elsewhere they are still usable.
        self.classes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_class<R>(&self, class: &Class, f: impl FnOnce(&mut ClassState) -> R) -> R {
        let mut map = self.classes();
        let mut key = class.as_str();
        if !map.contains_key(key) && map.len() >= MAX_CLASSES {
            key = "";
        }
        if !map.contains_key(key) {
            let state = ClassState {
                throttle: AdaptiveThrottle::new(self.k, self.window),
                backoff_until: Duration::ZERO,
            };
            map.insert(key.into(), state);
        }
        match map.get_mut(key) {
            Some(state) => f(state),
            // Just inserted; unreachable, answered without a panic.
            None => f(&mut ClassState {
                throttle: AdaptiveThrottle::new(self.k, self.window),
                backoff_until: Duration::ZERO,
            }),
        }
    }

    /// Whether a call of `class` may be sent now, or why not.
    pub(crate) fn before(&self, class: &Class) -> Result<(), LocalRejection> {
        if !self.throttling && !self.pushback {
            return Ok(());
        }
        let now = self.now();
        self.with_class(class, |s| {
            if self.pushback && now < s.backoff_until {
                return Err(LocalRejection::BackingOff {
                    retry_after: s.backoff_until - now,
                });
            }
            if self.throttling && !s.throttle.try_send(now) {
                return Err(LocalRejection::Throttled);
            }
            Ok(())
        })
    }

    /// Counts the backend's answer to a call of `class` that was sent.
    pub(crate) fn after(&self, class: &Class, answer: Answer) {
        if !self.throttling && !self.pushback {
            return;
        }
        let now = self.now();
        self.with_class(class, |s| {
            if self.throttling {
                s.throttle.record(now, !answer.overloaded);
            }
            if self.pushback
                && answer.overloaded
                && let Pushback::After(wait) = answer.pushback
            {
                s.backoff_until = s.backoff_until.max(now.saturating_add(wait));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn answers() {
        let a = read_answer(429, &headers(&[("retry-after", "3")]));
        assert_eq!(a.pushback, Pushback::After(Duration::from_secs(3)));
        assert!(a.overloaded);
        let date = read_answer(
            503,
            &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
        );
        assert_eq!((date.overloaded, date.pushback), (true, Pushback::None));
        assert!(!read_answer(200, &HeaderMap::new()).overloaded);
        assert!(!read_answer(500, &HeaderMap::new()).overloaded);
        let grpc = |status: &'static str, pushback: &'static str| {
            read_answer(
                200,
                &headers(&[
                    ("content-type", "application/grpc"),
                    ("grpc-status", status),
                    ("grpc-retry-pushback-ms", pushback),
                ]),
            )
        };
        assert_eq!(
            grpc("14", "250"),
            Answer {
                overloaded: true,
                pushback: Pushback::After(Duration::from_millis(250))
            }
        );
        assert!(grpc("8", "1").overloaded);
        assert!(!grpc("0", "1").overloaded);
        assert_eq!(grpc("14", "-1").pushback, Pushback::DoNotRetry);
        assert_eq!(grpc("14", "soon").pushback, Pushback::DoNotRetry);
        let no_hint = read_answer(
            200,
            &headers(&[("content-type", "application/grpc"), ("grpc-status", "14")]),
        );
        assert_eq!(no_hint.pushback, Pushback::None);
    }

    #[test]
    fn a_hand_set_tag_header_wins_and_bad_ones_are_no_tag() {
        let mut h = headers(&[("x-waitstate-tag", " batch ")]);
        assert_eq!(propagate(&mut h, None, true).as_str(), "batch");
        let mut h = HeaderMap::new();
        h.insert("x-waitstate-tag", HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(propagate(&mut h, None, true).as_str(), "");
        let mut h = HeaderMap::new();
        assert_eq!(propagate(&mut h, None, true).as_str(), "", "no admission");
        assert!(h.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pushback_is_per_class_and_expires() {
        let m = Manners::new(2.0, Duration::from_secs(60), false, true, true);
        let free = Class::Named("free".into());
        let ent = Class::Named("enterprise".into());
        m.after(
            &free,
            Answer {
                overloaded: true,
                pushback: Pushback::After(Duration::from_secs(2)),
            },
        );
        assert_eq!(
            m.before(&free),
            Err(LocalRejection::BackingOff {
                retry_after: Duration::from_secs(2)
            })
        );
        assert_eq!(m.before(&ent), Ok(()), "enterprise was not pushed back");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(m.before(&free), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_class_map_is_bounded() {
        let m = Manners::new(2.0, Duration::from_secs(60), true, true, true);
        for i in 0..(MAX_CLASSES * 2) {
            let _ = m.before(&Class::Named(i.to_string().into()));
        }
        assert!(m.classes().len() <= MAX_CLASSES + 1);
    }
}
