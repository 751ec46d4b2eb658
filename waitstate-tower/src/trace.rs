//! The optional span per gated request (feature `tracing`): `waitstate.gate` at DEBUG on
//! target `waitstate::request`, with the request's tag, its priority, the decision
//! (`admitted`, `waiting`, `rejected`) and the rejection's reason. The response future
//! enters it on every poll, so the inner service's own events nest under it.
//!
//! With the feature off it is a zero-sized stand-in; with the feature on and the level off
//! a disabled span is a `Span::none()`: one check of the callsite's cached interest, and
//! nothing recorded or entered per poll.

#[cfg(feature = "tracing")]
mod imp {
    use tracing::field::Empty;
    use waitstate_core::Rejection;
    use waitstate_core::tagger::Admission;

    /// The request's span (`Span::none()` when the level is off).
    pub(crate) type Span = tracing::Span;

    pub(crate) fn none() -> Span {
        tracing::Span::none()
    }

    pub(crate) fn start() -> Span {
        // No subscriber at DEBUG: no span at all. Checked before the macro because with
        // `tracing`'s `log` feature on (another crate of the app may turn it on) and no
        // subscriber set, the macro builds a disabled span that still goes through the
        // `log` bridge (measured: ~250 instructions per request, with no logger either).
        if tracing::Level::DEBUG > tracing::level_filters::STATIC_MAX_LEVEL
            || tracing::Level::DEBUG > tracing::level_filters::LevelFilter::current()
        {
            return none();
        }
        let span = tracing::debug_span!(
            target: "waitstate::request",
            "waitstate.gate",
            tag = Empty,
            priority = Empty,
            decision = Empty,
            reason = Empty,
        );
        // A subscriber that does not want it (another target or filter): a disabled span
        // still carries its metadata; recording into it would cost for nothing.
        if span.is_disabled() { none() } else { span }
    }

    pub(crate) fn admitted(span: &Span, admission: &Admission) {
        if !span.is_none() {
            span.record("tag", admission.tag.as_str());
            span.record("priority", admission.tag.priority());
            span.record("decision", "admitted");
        }
    }

    pub(crate) fn waiting(span: &Span) {
        if !span.is_none() {
            span.record("decision", "waiting");
        }
    }

    pub(crate) fn rejected(span: &Span, rejection: &Rejection) {
        if !span.is_none() {
            span.record("tag", rejection.tag());
            span.record("priority", rejection.priority());
            span.record("decision", "rejected");
            span.record("reason", rejection.reason().as_str());
        }
    }

    /// Enter for the length of one poll.
    pub(crate) fn enter(span: &Span) -> Option<tracing::span::EnteredSpan> {
        (!span.is_none()).then(|| span.clone().entered())
    }
}

#[cfg(not(feature = "tracing"))]
mod imp {
    use waitstate_core::Rejection;
    use waitstate_core::tagger::Admission;

    /// No span: the feature is off.
    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct Span;

    pub(crate) fn none() -> Span {
        Span
    }

    pub(crate) fn start() -> Span {
        Span
    }

    pub(crate) fn admitted(_: &Span, _: &Admission) {}

    pub(crate) fn waiting(_: &Span) {}

    pub(crate) fn rejected(_: &Span, _: &Rejection) {}

    /// What `enter` returns: nothing to exit.
    #[derive(Debug)]
    pub(crate) struct Entered;

    pub(crate) fn enter(_: &Span) -> Entered {
        Entered
    }
}

pub(crate) use imp::*;
