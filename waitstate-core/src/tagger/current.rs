//! The admission of the request being served, for the calls it makes downstream.
//!
//! The gates (`waitstate-tower`'s `GateService`, `waitstate-actix`'s `Gate`) run the inner
//! service's future inside a tokio task-local scope that holds the request's
//! [`Admission`]. A client layer (`waitstate-tower`'s `ClientLayer`, its `reqwest-middleware`
//! middleware) reads it with [`current`] when a handler makes a call, and sends the tag
//! (and cohort) downstream: the handler threads nothing by hand.
//!
//! # Why a task-local, and where it stops
//!
//! A call made deep in a handler (a repository, a client wrapper) should carry the tier of
//! the request that caused it, without every function between the handler and the client
//! taking an extra argument. tokio's task-locals are the tool the ecosystem uses for such
//! ambient context (`tracing` spans work the same way): setting one costs no allocation
//! and nothing when nobody reads it. The scope covers everything the handler's future
//! polls, however deep. It does **not** follow work moved to another task: a
//! `tokio::spawn`ed future (or a `spawn_blocking` closure) starts outside it. Carry it there
//! with [`scope`] (`tokio::spawn(current::scope(admission, fut))`), or attach it to one
//! outgoing request explicitly: an [`Admission`] in the outgoing request's extensions
//! wins over the task-local.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use waitstate_core::WaitState;
//! use waitstate_core::tagger::{Admission, current};
//!
//! let ws = WaitState::builder().tag("enterprise", 100).build()?;
//! let permit = ws.admit("enterprise", 1.0)?;
//! let admission = Admission::new(permit.tag(), 1.0, None);
//!
//! assert!(current::current().is_none(), "outside any gate");
//! let tag = current::scope(admission.clone(), async {
//!     // What a client layer sees in a handler.
//!     current::current().map(|a| a.tag.to_string())
//! })
//! .await;
//! assert_eq!(tag.as_deref(), Some("enterprise"));
//!
//! // A spawned task starts outside the scope: carry it there.
//! let spawned = tokio::spawn(current::scope(admission, async {
//!     current::current().map(|a| a.tag.to_string())
//! }));
//! assert_eq!(spawned.await?.as_deref(), Some("enterprise"));
//! # Ok(()) }
//! ```

use std::future::Future;

use super::Admission;

tokio::task_local! {
    static CURRENT: Admission;
}

/// A clone of the current request's admission, if code runs inside a gate's scope (or
/// [`scope`]).
pub fn current() -> Option<Admission> {
    CURRENT.try_with(Admission::clone).ok()
}

/// The admission an adapter found in a request's extensions (when the gate puts it there,
/// `admission_extension(true)`), else the current one: what the extractors read.
pub fn found_or_current(found: Option<&Admission>) -> Option<Admission> {
    found.cloned().or_else(current)
}

/// Runs `fut` with `admission` as the current one (for a spawned task, or a test).
pub async fn scope<F: Future>(admission: Admission, fut: F) -> F::Output {
    CURRENT.scope(admission, fut).await
}

/// `fut`, run with `admission` as the current one at every poll: what a gate's response
/// future holds. (tokio's `TaskLocalFuture`; it allocates nothing.)
pub fn scoped<F: Future>(admission: Admission, fut: F) -> Scoped<F> {
    CURRENT.scope(admission, fut)
}

/// The future [`scoped`] returns.
pub type Scoped<F> = tokio::task::futures::TaskLocalFuture<Admission, F>;

/// Runs `f` with `admission` as the current one.
pub fn sync_scope<R>(admission: Admission, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(admission, f)
}
