//! What the gate answers: allowed, or rejected with a reason, the tag and a retry-after hint.

use std::fmt;
use std::time::Duration;

use crate::tags::Tag;

/// Why a request was rejected (or, in dry run, would have been).
///
/// The first six are the v1 protocol's reasons, spelled the same on the wire; the rest are
/// ours. [`Reason::as_str`] gives the snake_case wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The policy's kill switch is on: everything is rejected (v1).
    KillSignal,
    /// `globalMaxWeight <= 0`: everything is rejected (v1).
    GlobalBlock,
    /// The request's weight is over its tag's `tagMaxWeights` limit; a limit of 0 blocks the
    /// tag (v1). The `block <tag>` action produces it.
    TagBlocked,
    /// The weight is over `globalMaxWeight`, or is NaN, negative or infinite (v1).
    OverWeight,
    /// The control plane's lease expired and safe mode rejects (v1).
    LeaseExpired,
    /// The tag is throttled to a share of its traffic and this request is outside it.
    Throttled,
    /// The tag's rate budget (weight units per second) is spent.
    RateLimited,
    /// The in-flight cap is reached for this tag's priority.
    ConcurrencyLimited,
    /// Adaptive shedding has reached this tag's priority.
    PriorityShed,
}

impl Reason {
    /// Every reason, in the order used by counters.
    pub const ALL: [Reason; 9] = [
        Reason::KillSignal,
        Reason::GlobalBlock,
        Reason::TagBlocked,
        Reason::OverWeight,
        Reason::LeaseExpired,
        Reason::Throttled,
        Reason::RateLimited,
        Reason::ConcurrencyLimited,
        Reason::PriorityShed,
    ];

    /// The snake_case wire name (`"tag_blocked"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::KillSignal => "kill_signal",
            Reason::GlobalBlock => "global_block",
            Reason::TagBlocked => "tag_blocked",
            Reason::OverWeight => "over_weight",
            Reason::LeaseExpired => "lease_expired",
            Reason::Throttled => "throttled",
            Reason::RateLimited => "rate_limited",
            Reason::ConcurrencyLimited => "concurrency_limited",
            Reason::PriorityShed => "priority_shed",
        }
    }

    /// Whether the reason is a quota (the caller asked for too much) rather than overload
    /// shedding. gRPC maps quota to `RESOURCE_EXHAUSTED` and overload to `UNAVAILABLE`.
    pub const fn is_quota(self) -> bool {
        matches!(self, Reason::RateLimited | Reason::OverWeight)
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The rate a `rate_limited` rejection ran into, for `RateLimit-Policy` style headers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    /// Budget in weight units per second.
    pub per_second: f64,
    /// Burst in weight units (what may be spent at once).
    pub burst: f64,
}

/// A rejected request: why, which tag, its priority, and when to try again.
///
/// Cheap to clone (the tag is shared, not copied).
#[derive(Clone, Debug)]
pub struct Rejection {
    pub(crate) reason: Reason,
    pub(crate) tag: Tag,
    pub(crate) retry_after: Duration,
    pub(crate) quota: Option<Quota>,
}

impl Rejection {
    /// Why it was rejected.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The tag the request was counted under. Tags past the registry's cap, and oversized
    /// tags, are counted under [`OVERFLOW_TAG`](crate::OVERFLOW_TAG).
    pub fn tag(&self) -> &str {
        self.tag.as_str()
    }

    /// The tag's priority (higher is more important).
    pub fn priority(&self) -> i64 {
        self.tag.priority()
    }

    /// How long the client should wait before trying again (a hint; never zero).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `Retry-After` in whole seconds, rounded up (a sub-second wait is `1`, never `0`).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        secs.max(1)
    }

    /// The rate budget that was spent, when the reason is [`Reason::RateLimited`].
    pub fn quota(&self) -> Option<Quota> {
        self.quota
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rejected `{}` ({}), retry after {}s",
            self.tag(),
            self.reason,
            self.retry_after_secs()
        )
    }
}

impl std::error::Error for Rejection {}

/// The gate's answer for one request.
#[derive(Clone, Debug)]
#[must_use]
pub enum Decision {
    /// Let it through. In dry run, `would_reject` says what enforcement would have done.
    Allowed {
        /// The reason it would have been rejected, when a dry-run mode or rule caught it.
        would_reject: Option<Reason>,
    },
    /// Turn it away.
    Rejected(Rejection),
}

impl Decision {
    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    /// The rejection's reason, if rejected.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Decision::Allowed { .. } => None,
            Decision::Rejected(r) => Some(r.reason),
        }
    }
}
