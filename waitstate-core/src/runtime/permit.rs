use std::fmt;

use tokio::time::Instant;

use super::clock_now;
use crate::decision::Reason;
use crate::engine::Ticket;
use crate::registry::Tag;

/// An admitted request's hold on its in-flight slot. When it is dropped it records the
/// request's latency (from admission) and outcome for its tag and frees the slot: exactly
/// once, whether the request ended well, failed, or was abandoned half way.
///
/// Mark a failure with [`Permit::set_error`] (or end with [`Permit::failure`]); the
/// default outcome is success.
#[must_use = "dropping the permit ends the request at once"]
pub struct Permit {
    ticket: Ticket,
    start: Instant,
    error: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("ticket", &self.ticket)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl Permit {
    pub(super) fn new(ticket: Ticket, start: Instant) -> Self {
        Self {
            ticket,
            start,
            error: false,
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
        self.error = error;
    }

    /// End the request as a success.
    pub fn success(mut self) {
        self.error = false;
    }

    /// End the request as a failure.
    pub fn failure(mut self) {
        self.error = true;
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let latency = clock_now().saturating_duration_since(self.start);
        self.ticket.finish_in_place(latency, self.error);
    }
}
