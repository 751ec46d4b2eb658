//! What every HTTP adapter (`waitstate-tower`, `waitstate-axum`, `waitstate-actix`) shares,
//! framework-free: the gate step itself ([`gate`], feature `runtime`), the rendering of a
//! rejection as plain status, header fields and body ([`render`], or without an
//! intermediate list [`render_head`] and [`render_body`]), and the gRPC and dry-run
//! conventions. An adapter only moves these into its framework's types.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;

use crate::decision::{Reason, Rejection};

/// The response header that marks, in dry run, a response that would have been rejected:
/// `x-waitstate-dry-run: <reason>`.
pub const DRY_RUN_HEADER: &str = "x-waitstate-dry-run";

/// The header a gRPC client sends its deadline in (see [`grpc_timeout`]).
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The header names the gate reads on every request (the tag, a gRPC deadline), for an
/// adapter to parse once into its framework's header-name type: a lookup by a `&str`
/// checks and lower-cases the name first (measured: ~170 of the ~400 instructions of each
/// lookup). [`hot_header`] finds a name's index here.
pub const HOT_HEADERS: [&str; 2] = [crate::tagger::TAG_HEADER, GRPC_TIMEOUT_HEADER];

/// The index of `name` in [`HOT_HEADERS`], if it is one of them.
#[inline]
pub fn hot_header(name: &str) -> Option<usize> {
    HOT_HEADERS.iter().position(|h| *h == name)
}

/// Whether a `content-type` value is gRPC's (`application/grpc`, `application/grpc+proto`, ...).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value.starts_with(b"application/grpc")
}

/// Whether a `grpc-status` value means server trouble, the outcome the rules count as an
/// error: `UNKNOWN` (2), `DEADLINE_EXCEEDED` (4), `INTERNAL` (13), `UNAVAILABLE` (14),
/// `DATA_LOSS` (15). `None` when the value is not a status code.
pub fn grpc_status_is_error(value: &[u8]) -> Option<bool> {
    let code: u32 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
    Some(matches!(code, 2 | 4 | 13 | 14 | 15))
}

/// A rejection as an HTTP answer, before it becomes a framework's response type.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rendered {
    /// The status code.
    pub status: u16,
    /// Header fields, names in lower case; the usual values are static (no allocation).
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    /// The body (empty for gRPC: a trailers-only response).
    pub body: String,
}

/// The default answer to a rejection, the same in every adapter:
///
/// - HTTP: `429` (or `kill_signal_status` for `kill_signal`), `content-type:
///   application/json`, `Retry-After` ([`Rejection::retry_after_secs`]), `RateLimit-Policy`
///   and `RateLimit` when a rate limit applies ([`Rejection::rate_limit_fields`]), and the
///   JSON deny body ([`Rejection::deny_body`]).
/// - gRPC (`grpc = true`): HTTP 200, `content-type: application/grpc`, `grpc-status`
///   ([`Rejection::grpc_code`]), `grpc-message` ([`Rejection::grpc_message`]) and
///   `grpc-retry-pushback-ms` ([`Rejection::retry_after_ms`]), and no body (a trailers-only
///   response), as tonic's `Status::into_http` answers.
///
/// [`render_head`] and [`render_body`] give the same answer without the list and the
/// `String`, for an adapter that builds its response in place.
pub fn render(r: &Rejection, grpc: bool, kill_signal_status: u16) -> Rendered {
    let mut headers = Vec::with_capacity(4);
    let status = render_head(r, grpc, kill_signal_status, |name, value| {
        headers.push((name, value));
    });
    Rendered {
        status,
        headers,
        body: if grpc { String::new() } else { r.deny_body() },
    }
}

/// The status and header fields of [`render`], each field handed to `field` (name in lower
/// case, value) in the order `render` lists them; returns the status. The usual values are
/// static: nothing is allocated but for the `RateLimit` fields of a rate limit and gRPC's
/// `grpc-message` and `grpc-retry-pushback-ms`.
pub fn render_head(
    r: &Rejection,
    grpc: bool,
    kill_signal_status: u16,
    mut field: impl FnMut(&'static str, Cow<'static, str>),
) -> u16 {
    if grpc {
        field("content-type", Cow::Borrowed("application/grpc"));
        field(
            "grpc-status",
            Cow::Borrowed(if r.grpc_code() == 8 { "8" } else { "14" }),
        );
        field("grpc-message", Cow::Owned(r.grpc_message()));
        field(
            "grpc-retry-pushback-ms",
            Cow::Owned(r.retry_after_ms().to_string()),
        );
        return 200;
    }
    field("content-type", Cow::Borrowed("application/json"));
    field("retry-after", seconds_text(r.retry_after_secs()));
    if let Some((policy, state)) = r.rate_limit_fields() {
        field("ratelimit-policy", Cow::Owned(policy));
        field("ratelimit", Cow::Owned(state));
    }
    if r.reason() == Reason::KillSignal {
        kill_signal_status
    } else {
        429
    }
}

/// The body of [`render`] as [`Bytes`]: empty for gRPC, else the JSON deny body
/// ([`Rejection::deny_body`]), pre-rendered. Each thread keeps the last few bodies it
/// rendered (a flood of rejections is one tag, one reason, one `retryAfter`), so a body
/// already sent is a reference count, not an allocation; a new one costs two.
pub fn render_body(r: &Rejection, grpc: bool) -> Bytes {
    if grpc {
        return Bytes::new();
    }
    RECENT_BODIES
        .try_with(|recent| recent.borrow_mut().get(r))
        .unwrap_or_else(|_| Bytes::from(r.deny_body()))
}

thread_local! {
    static RECENT_BODIES: RefCell<RecentBodies> = const {
        RefCell::new(RecentBodies { scratch: String::new(), bodies: Vec::new(), next: 0 })
    };
}

/// The last few deny bodies a thread rendered.
struct RecentBodies {
    /// Where a body is rendered to be looked up (its capacity kept).
    scratch: String,
    bodies: Vec<Bytes>,
    /// The slot the next new body takes, once all are taken.
    next: usize,
}

impl RecentBodies {
    const SLOTS: usize = 4;

    fn get(&mut self, r: &Rejection) -> Bytes {
        // Rendered, then compared: what is sent is exactly what `deny_body` gives.
        self.scratch.clear();
        r.write_deny_body(&mut self.scratch);
        let text = self.scratch.as_bytes();
        if let Some(body) = self.bodies.iter().find(|b| b[..] == *text) {
            return body.clone();
        }
        let body = Bytes::copy_from_slice(text);
        if self.bodies.len() < Self::SLOTS {
            self.bodies.push(body.clone());
        } else {
            self.bodies[self.next] = body.clone();
            self.next = (self.next + 1) % Self::SLOTS;
        }
        body
    }
}

/// `secs` as text: from a table made once for the usual values (up to an hour), so the
/// reject path does not allocate for `Retry-After`.
fn seconds_text(secs: u64) -> Cow<'static, str> {
    static TABLE: std::sync::OnceLock<Box<[&'static str]>> = std::sync::OnceLock::new();
    const MAX: u64 = 3600;
    if secs > MAX {
        return Cow::Owned(secs.to_string());
    }
    let table = TABLE.get_or_init(|| {
        // One string of all the numbers, leaked once (a few KiB for the process's life).
        let all: &'static str = Box::leak(
            (0..=MAX)
                .map(|n| n.to_string())
                .collect::<String>()
                .into_boxed_str(),
        );
        let mut at = 0;
        (0..=MAX)
            .map(|n| {
                let len = if n == 0 { 1 } else { n.ilog10() as usize + 1 };
                let s = &all[at..at + len];
                at += len;
                s
            })
            .collect()
    });
    Cow::Borrowed(table[secs as usize])
}

/// A gRPC client's deadline, from its `grpc-timeout` header (`<up to 8 digits><unit>`, the
/// unit one of `H M S m u n`); `None` when absent or malformed. A request that must wait
/// for a slot waits no longer than its client will.
pub fn grpc_timeout(raw: &[u8]) -> Option<Duration> {
    let (&unit, digits) = raw.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(feature = "runtime")]
pub use self::ending::{StreamGuard, poll_recording_panic};
#[cfg(feature = "runtime")]
pub use self::gate_step::{GateConfig, Verdict, admission_for, gate};

/// How an adapter ends a request it admitted: cancelled when its client went away first,
/// panicked when the app panicked; one piece of code for every framework.
#[cfg(feature = "runtime")]
mod ending {
    use std::panic::{self, AssertUnwindSafe};
    use std::task::Poll;

    use crate::registry::Ending;
    use crate::runtime::Permit;

    /// Poll the app's future (or body) with `poll`; if it panics, record the request as
    /// [`Ending::Panicked`] (the permit, when there is one, is ended and its slot freed)
    /// and go on unwinding. Costs nothing unless it unwinds.
    pub fn poll_recording_panic<T>(
        permit: Option<&mut Permit>,
        poll: impl FnOnce() -> Poll<T>,
    ) -> Poll<T> {
        match panic::catch_unwind(AssertUnwindSafe(poll)) {
            Ok(polled) => polled,
            Err(payload) => {
                if let Some(permit) = permit {
                    permit.set_ending(Ending::Panicked);
                }
                panic::resume_unwind(payload)
            }
        }
    }

    /// Holds an admitted request's permit while its response body streams. Ended
    /// ([`StreamGuard::end`]) at the end of stream, it records the outcome set on the
    /// permit; dropped before, the client went away: [`Ending::Cancelled`].
    #[derive(Debug)]
    pub struct StreamGuard {
        permit: Permit,
        ended: bool,
    }

    impl StreamGuard {
        /// Guard `permit` until the body ends.
        pub fn new(permit: Permit) -> Self {
            Self {
                permit,
                ended: false,
            }
        }

        /// The permit, to set the outcome (from the trailers, a body error).
        pub fn permit_mut(&mut self) -> &mut Permit {
            &mut self.permit
        }

        /// The body reached its end: record the outcome set so far, free the slot.
        pub fn end(mut self) {
            self.ended = true;
        }
    }

    impl Drop for StreamGuard {
        fn drop(&mut self) {
            if !self.ended {
                self.permit.set_ending(Ending::Cancelled);
            }
        }
    }
}

#[cfg(feature = "runtime")]
mod gate_step {
    use std::fmt;

    use crate::decision::{Reason, Rejection};
    use crate::runtime::{Entry, Permit, WaitForSlot, WaitState};
    use crate::tagger::{Admission, RequestView, Tagger};

    /// What an adapter's layer holds and its service reads on every request: the engine,
    /// the tagger, the rejection builder (`R`) and the response classifier (`C`), each
    /// adapter's own traits, and the gate's switches. Cloning it clones the handle, not the
    /// engine: every copy gates with one policy and one set of counters.
    #[derive(Clone)]
    #[non_exhaustive]
    pub struct GateConfig<T, R, C> {
        /// The engine.
        pub waitstate: WaitState,
        /// Picks each request's tag and weight.
        pub tagger: T,
        /// Builds the response to a rejection.
        pub rejection: R,
        /// Tells a success from an error, for the rules' `error_rate`.
        pub classifier: C,
        /// In dry run, mark a response that would have been rejected with
        /// [`DRY_RUN_HEADER`](super::DRY_RUN_HEADER) (on by default).
        pub dry_run_header: bool,
        /// Put the [`Admission`] in each admitted request's extensions (off by default: it
        /// costs allocations on every request, and handlers get the admission without it,
        /// from the task-local scope the gate runs them in,
        /// [`current`](crate::tagger::current)).
        pub admission_extension: bool,
        /// Measure latency to the end of the response body instead of to its head (off by
        /// default: a stream's whole duration, SSE or a gRPC stream, says nothing of the
        /// backend's speed). The in-flight slot is held to the body's end either way.
        pub latency_to_end: bool,
    }

    impl<T, R, C> GateConfig<T, R, C> {
        /// Gate with this engine, tagger, rejection builder and classifier; the dry-run mark
        /// on, the admission extension off, latency to the response head.
        pub fn new(waitstate: WaitState, tagger: T, rejection: R, classifier: C) -> Self {
            Self {
                waitstate,
                tagger,
                rejection,
                classifier,
                dry_run_header: true,
                admission_extension: false,
                latency_to_end: false,
            }
        }

        /// The same, with another rejection builder.
        pub fn with_rejection<R2>(self, rejection: R2) -> GateConfig<T, R2, C> {
            GateConfig {
                waitstate: self.waitstate,
                tagger: self.tagger,
                rejection,
                classifier: self.classifier,
                dry_run_header: self.dry_run_header,
                admission_extension: self.admission_extension,
                latency_to_end: self.latency_to_end,
            }
        }

        /// The same, with another classifier.
        pub fn with_classifier<C2>(self, classifier: C2) -> GateConfig<T, R, C2> {
            GateConfig {
                waitstate: self.waitstate,
                tagger: self.tagger,
                rejection: self.rejection,
                classifier,
                dry_run_header: self.dry_run_header,
                admission_extension: self.admission_extension,
                latency_to_end: self.latency_to_end,
            }
        }

        /// The [`DRY_RUN_HEADER`](super::DRY_RUN_HEADER) value for an admitted request:
        /// the reason it would have been rejected, when the mark is on.
        pub fn dry_run_mark(&self, admission: &Admission) -> Option<Reason> {
            admission.would_reject.filter(|_| self.dry_run_header)
        }
    }

    impl<T, R, C> fmt::Debug for GateConfig<T, R, C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("GateConfig")
                .field("waitstate", &self.waitstate)
                .field("tagger", &std::any::type_name::<T>())
                .field("rejection", &std::any::type_name::<R>())
                .field("classifier", &std::any::type_name::<C>())
                .field("dry_run_header", &self.dry_run_header)
                .field("admission_extension", &self.admission_extension)
                .field("latency_to_end", &self.latency_to_end)
                .finish()
        }
    }

    /// What the gate decided for one request. The three cases are all there can be.
    #[derive(Debug)]
    pub enum Verdict {
        /// The tagger marked it exempt: pass it on, ungated and uncounted.
        Exempt,
        /// Admitted: hold the permit until the response body ends; put the admission in the
        /// request's extensions.
        Admitted {
            /// The in-flight slot; dropping it records latency and outcome.
            permit: Permit,
            /// Tag, weight and dry-run verdict, for handlers.
            admission: Admission,
        },
        /// The pool is full: the request waits for a slot (see [`crate::admission`]). Await
        /// `wait`, then go on as [`Verdict::Admitted`] with [`admission_for`] or answer the
        /// rejection. Only this case costs an allocation.
        Waiting {
            /// Resolves to the permit, or to a `concurrency_limited` rejection by the
            /// request's deadline.
            wait: WaitForSlot,
            /// The request's weight, for its [`Admission`].
            weight: f64,
            /// The request's cohort key, for its [`Admission`].
            cohort: Option<u64>,
        },
        /// Turned away.
        Rejected(Rejection),
    }

    /// The [`Admission`] of a request admitted with `permit` (after waiting).
    pub fn admission_for(permit: &Permit, weight: f64) -> Admission {
        Admission::new(permit.tag(), weight, permit.would_reject())
    }

    /// The gate step every adapter runs in `call`: tag the request, skip it if exempt, else
    /// ask the engine.
    pub fn gate<T: Tagger + ?Sized>(ws: &WaitState, tagger: &T, req: &dyn RequestView) -> Verdict {
        let tagging = tagger.tag(req);
        if tagging.exempt {
            return Verdict::Exempt;
        }
        let demand = tagging.demand();
        // The client's deadline matters only to a request that must wait for a slot.
        let deadline = || {
            req.header(super::GRPC_TIMEOUT_HEADER)
                .and_then(super::grpc_timeout)
        };
        match ws.enter_lazy(&demand, deadline) {
            Entry::Admitted(permit) => {
                let admission = admission_for(&permit, tagging.weight).with_cohort(tagging.cohort);
                Verdict::Admitted { permit, admission }
            }
            Entry::Waiting(wait) => Verdict::Waiting {
                wait,
                weight: tagging.weight,
                cohort: tagging.cohort,
            },
            Entry::Rejected(rejection) => Verdict::Rejected(rejection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            &b""[..],
            b"m",
            b"100",
            b"100x",
            b"123456789S",
            b"-1S",
            b"1.5S",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    fn rejection(tag: &str, rate_limited: bool) -> Rejection {
        let engine = crate::Engine::new(&crate::Config::default()).unwrap();
        let mut p = crate::Policy::default();
        if rate_limited {
            p.tag_rate_limits.insert(tag.into(), 1.0);
        } else {
            p.tag_max_weights.insert(tag.into(), 0.0);
        }
        engine.set_remote_policy(Some(p)).unwrap();
        let demand = crate::Demand::new(tag);
        (0..10)
            .find_map(|_| match engine.decide(&demand, Duration::ZERO) {
                crate::Decision::Rejected(r) => Some(r),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn render_is_render_head_and_render_body() {
        for r in [rejection("free", false), rejection("a\"b", true)] {
            for grpc in [false, true] {
                let rendered = render(&r, grpc, 503);
                let mut fields = Vec::new();
                let status = render_head(&r, grpc, 503, |n, v| fields.push((n, v)));
                assert_eq!(status, rendered.status);
                assert_eq!(fields, rendered.headers);
                assert_eq!(render_body(&r, grpc), rendered.body.as_bytes());
            }
        }
    }

    #[test]
    fn a_body_already_rendered_is_shared_not_copied() {
        let free = rejection("free", false);
        let first = render_body(&free, false);
        // Other bodies in between, fewer than the slots kept.
        let _ = render_body(&rejection("pro", false), false);
        let again = render_body(&free, false);
        assert_eq!(first, free.deny_body().as_bytes());
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same buffer");
        // More new bodies than the slots: the oldest is rendered anew, and still right.
        for i in 0..RecentBodies::SLOTS {
            let _ = render_body(&rejection(&format!("t{i}"), false), false);
        }
        assert_eq!(render_body(&free, false), free.deny_body().as_bytes());
        assert!(render_body(&free, true).is_empty());
    }

    #[test]
    fn grpc_conventions() {
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert_eq!(grpc_status_is_error(b"14"), Some(true));
        assert_eq!(grpc_status_is_error(b" 0 "), Some(false));
        assert_eq!(grpc_status_is_error(b"5"), Some(false));
        assert_eq!(grpc_status_is_error(b"x"), None);
    }
}
