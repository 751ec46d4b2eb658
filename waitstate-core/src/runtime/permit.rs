use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::clock_now;
use crate::decision::Reason;
use crate::engine::Ticket;
use crate::registry::{Ending, Tag};

/// An admitted request's hold on its in-flight slot. When it is dropped it records the
/// request's latency (from admission) and outcome for its tag and frees the slot: exactly
/// once, whether the request ended well, failed, or was abandoned half way.
///
/// Mark a failure with [`Permit::set_error`] (or end with [`Permit::failure`]); the
/// default outcome is success. A permit dropped while its thread unwinds from a panic counts
/// as [`Ending::Panicked`]; adapters mark a request whose client went away as
/// [`Ending::Cancelled`] ([`Permit::set_ending`]). For a streamed answer,
/// [`Permit::head_sent`] makes the latency the time to the response head, while the slot is
/// held until the stream ends.
#[must_use = "dropping the permit ends the request at once"]
pub struct Permit {
    ticket: Ticket,
    start: Instant,
    ending: Ending,
    head: Option<Duration>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("ticket", &self.ticket)
            .field("ending", &self.ending)
            .finish_non_exhaustive()
    }
}

impl Permit {
    pub(super) fn new(ticket: Ticket, start: Instant) -> Self {
        Self {
            ticket,
            start,
            ending: Ending::Success,
            head: None,
        }
    }

    /// The tag this request counts under.
    pub fn tag(&self) -> Tag {
        self.ticket.tag()
    }

    /// In dry run: what enforcement would have done with this request.
    pub fn would_reject(&self) -> Option<Reason> {
        self.ticket.would_reject()
    }

    /// Mark the outcome: `true` for a failure the rules should count (`error_rate`).
    pub fn set_error(&mut self, error: bool) {
        self.ending = Ending::of_error(error);
    }

    /// Mark how the request ends (it is recorded when the permit is dropped).
    pub fn set_ending(&mut self, ending: Ending) {
        self.ending = ending;
    }

    /// How the request will be recorded if the permit is dropped now.
    pub fn ending(&self) -> Ending {
        self.ending
    }

    /// The response head is out: the latency recorded is the time to here (the first call
    /// counts), whenever the permit is dropped. For streams (SSE, a gRPC stream), whose
    /// whole duration says nothing of the backend's speed.
    pub fn head_sent(&mut self) {
        if self.head.is_none() {
            self.head = Some(clock_now().saturating_duration_since(self.start));
        }
    }

    /// End the request as a success.
    pub fn success(mut self) {
        self.ending = Ending::Success;
    }

    /// End the request as a failure.
    pub fn failure(mut self) {
        self.ending = Ending::Error;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let latency = self
            .head
            .unwrap_or_else(|| clock_now().saturating_duration_since(self.start));
        let ending = if std::thread::panicking() {
            Ending::Panicked
        } else {
            self.ending
        };
        self.ticket.end_in_place(latency, ending);
    }
}
