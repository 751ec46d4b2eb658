//! A request waiting for a slot of the admission pool.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use super::Ticket;
use super::check::{grant, refuse};
use crate::admission::{CellState, WaitCell};
use crate::decision::{Reason, Rejection};
use crate::registry::TagSlot;

/// The answer of [`Engine::admit_or_queue`](crate::Engine::admit_or_queue).
#[derive(Debug)]
#[must_use = "an admitted request holds a slot until its ticket ends"]
pub enum Admit {
    /// A slot was free: go ahead.
    Admitted(Ticket),
    /// The pool is full: wait for a slot (await it, bounded by [`Queued::max_wait`]).
    Queued(Queued),
    /// Turned away.
    Rejected(Rejection),
}

/// A request in its priority level's queue. Await it: it resolves to a [`Ticket`] when a
/// slot is handed over, or to a `concurrency_limited` [`Rejection`] when the request can no
/// longer be served in time. The engine has no timer: bound the wait with
/// [`Queued::max_wait`] and call [`Queued::give_up`] when it passes.
///
/// Dropping it leaves the queue (and gives back a slot handed over meanwhile): nothing
/// leaks.
#[must_use = "dropping it leaves the queue"]
pub struct Queued {
    slot: Arc<TagSlot>,
    cell: Arc<WaitCell>,
    weight: f64,
    would_reject: Option<Reason>,
    retry_after: Duration,
    max_wait: Duration,
    done: bool,
}

impl fmt::Debug for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queued")
            .field("tag", &&*self.slot.name)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl Queued {
    pub(super) fn new(
        slot: Arc<TagSlot>,
        cell: Arc<WaitCell>,
        weight: f64,
        would_reject: Option<Reason>,
        retry_after: Duration,
        max_wait: Duration,
    ) -> Self {
        Self {
            slot,
            cell,
            weight,
            would_reject,
            retry_after,
            max_wait,
            done: false,
        }
    }

    /// How long this request may wait, from when it was queued.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The tag's name.
    pub fn tag_name(&self) -> &str {
        &self.slot.name
    }

    /// The slot, if it was handed over already; else the request back.
    pub(super) fn try_take(mut self) -> Result<Ticket, Self> {
        match self.take(None) {
            Some(Ok(ticket)) => Ok(ticket),
            _ => Err(self),
        }
    }

    /// Its wait is over: the ticket if a slot was handed over in the meantime, else the
    /// (counted) `concurrency_limited` rejection.
    ///
    /// # Errors
    /// The rejection, when no slot came in time.
    pub fn give_up(mut self) -> Result<Ticket, Rejection> {
        self.done = true;
        let pool = &self.slot.global.pool;
        if pool.leave(&self.cell, true) {
            // Handed over at the last moment: use it rather than waste it.
            let ticket = grant(&self.slot, self.weight, self.would_reject);
            return Ok(ticket);
        }
        Err(refuse(
            &self.slot,
            Reason::ConcurrencyLimited,
            self.retry_after,
            None,
        ))
    }

    /// The outcome, if settled; `waker` is stored while waiting.
    fn take(&mut self, waker: Option<&std::task::Waker>) -> Option<Result<Ticket, Rejection>> {
        if self.done {
            // Polled after it resolved: a defined answer, not a panic.
            return Some(Err(refuse(
                &self.slot,
                Reason::ConcurrencyLimited,
                self.retry_after,
                None,
            )));
        }
        let mut state = self.cell.lock();
        match &mut *state {
            CellState::Waiting(w) => {
                if let Some(waker) = waker {
                    match w {
                        Some(old) if old.will_wake(waker) => {}
                        _ => *w = Some(waker.clone()),
                    }
                }
                None
            }
            CellState::Granted => {
                *state = CellState::Done;
                drop(state);
                self.done = true;
                Some(Ok(grant(&self.slot, self.weight, self.would_reject)))
            }
            CellState::Evicted | CellState::Done => {
                *state = CellState::Done;
                drop(state);
                self.done = true;
                Some(Err(refuse(
                    &self.slot,
                    Reason::ConcurrencyLimited,
                    self.retry_after,
                    None,
                )))
            }
        }
    }
}

impl Future for Queued {
    type Output = Result<Ticket, Rejection>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.take(Some(cx.waker())) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let pool = &self.slot.global.pool;
            if pool.leave(&self.cell, false) {
                // A slot was handed over as the request went away: pass it on.
                pool.release();
            }
            // Offered, never admitted nor rejected: counted, so offered adds up.
            self.slot.abandoned.fetch_add(1, Relaxed);
        }
    }
}
