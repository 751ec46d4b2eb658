//! Waiting for a slot of the admission pool, bounded by the request's deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{Permit, clock_now};
use crate::decision::Rejection;
use crate::engine::Queued;

/// What [`WaitState::enter`](super::WaitState::enter) answers: at once, or after a wait.
#[derive(Debug)]
#[must_use = "an admitted request holds a slot until its permit is dropped"]
pub enum Entry {
    /// Admitted: go ahead.
    Admitted(Permit),
    /// The pool is full: await the [`WaitForSlot`] (it ends by the request's deadline).
    Waiting(WaitForSlot),
    /// Turned away.
    Rejected(Rejection),
}

impl Entry {
    /// Wait if needed; the permit or the rejection.
    ///
    /// # Errors
    /// The rejection, at once or when the wait ran out.
    pub async fn resolve(self) -> Result<Permit, Rejection> {
        match self {
            Self::Admitted(p) => Ok(p),
            Self::Rejected(r) => Err(r),
            Self::Waiting(w) => w.await,
        }
    }
}

/// A request waiting for a slot, at most until its deadline (the level's maximum wait, or
/// the client's own). Resolves to a [`Permit`] (its latency counted from the slot's grant,
/// so time in the queue never teaches admission a slower backend) or to a
/// `concurrency_limited` rejection. Dropping it leaves the queue and leaks nothing.
pub struct WaitForSlot {
    future: Pin<Box<dyn Future<Output = Result<Permit, Rejection>> + Send>>,
}

impl fmt::Debug for WaitForSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitForSlot").finish_non_exhaustive()
    }
}

impl WaitForSlot {
    pub(super) fn new(queued: Queued) -> Self {
        // Boxed once, on the slow path only: a request that finds a slot free never gets here.
        Self {
            future: Box::pin(wait(queued)),
        }
    }
}

async fn wait(mut queued: Queued) -> Result<Permit, Rejection> {
    let enqueued = clock_now();
    let outcome = match tokio::time::timeout(queued.max_wait(), &mut queued).await {
        Ok(outcome) => outcome,
        Err(_) => queued.give_up(),
    };
    let ticket = outcome?;
    let start = clock_now();
    ticket.note_waited(start.saturating_duration_since(enqueued));
    Ok(Permit::new(ticket, start))
}

impl Future for WaitForSlot {
    type Output = Result<Permit, Rejection>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}
