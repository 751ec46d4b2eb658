//! The pure core's RAII guard for an admitted request.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::decision::Reason;
use crate::registry::{Ending, Tag, TagSlot};

/// An admitted request's hold on its in-flight slot (the pure core's RAII guard).
///
/// [`Ticket::finish`] records the latency and outcome; dropping it without finishing only
/// releases the slot. The runtime's `Permit` wraps it and measures the latency itself.
#[must_use = "dropping the ticket releases the in-flight slot at once"]
pub struct Ticket {
    pub(super) slot: Arc<TagSlot>,
    pub(super) would_reject: Option<Reason>,
    pub(super) done: bool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("tag", &&*self.slot.name)
            .field("would_reject", &self.would_reject)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    /// The tag the request counts under.
    pub fn tag(&self) -> Tag {
        Tag(self.slot.clone())
    }

    /// The tag's name.
    pub fn tag_name(&self) -> &str {
        &self.slot.name
    }

    /// Count `waited` as this request's wait for its slot (the runtime measures it).
    #[cfg(feature = "runtime")]
    pub(crate) fn note_waited(&self, waited: Duration) {
        self.slot.global.pool.note_wait(self.slot.level, waited);
    }

    /// In dry run: the reason enforcement would have rejected this request.
    pub fn would_reject(&self) -> Option<Reason> {
        self.would_reject
    }

    /// End the request: record its latency and whether it failed, release the slot.
    pub fn finish(self, latency: Duration, error: bool) {
        self.end(latency, Ending::of_error(error));
    }

    /// End the request with any [`Ending`] (a cancellation or a panic counts apart, and
    /// teaches admission nothing), release the slot.
    pub fn end(mut self, latency: Duration, ending: Ending) {
        self.end_in_place(latency, ending);
    }

    /// [`Ticket::end`] without consuming the ticket (for a guard's `Drop`): records and
    /// releases once; later calls, and the drop, do nothing.
    pub(crate) fn end_in_place(&mut self, latency: Duration, ending: Ending) {
        if !self.done {
            let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
            self.slot.record_end(us, ending);
            if ending == Ending::Success {
                // Only successes teach admission the backend's service time: a failure that
                // came back fast says nothing about capacity.
                self.slot.global.pool.record(us);
            }
            self.release();
        }
    }

    fn release(&mut self) {
        if !self.done {
            self.done = true;
            self.slot.hot.local().in_flight.fetch_sub(1, Relaxed);
            self.slot.global.pool.release();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.release();
    }
}
