//! Custom metrics and counters: what the reflex tick and the pulse read.

use std::time::Duration;

use super::{Engine, ReportError};
use crate::admission::AdmissionState;
use crate::registry::{Aggregate, MAX_CUSTOM_METRICS, Tag, TagCounters};

impl Engine {
    /// Feed a custom metric (queue depth, pool wait, ...) that rules can name, for one tag or
    /// for the whole service (`tag = None`).
    ///
    /// # Errors
    /// [`ReportError`] when the value was dropped: a bad name, a non-finite value, or too
    /// many distinct metrics.
    pub fn report(&self, metric: &str, value: f64, tag: Option<&str>) -> Result<(), ReportError> {
        if !value.is_finite() {
            return Err(ReportError::NotFinite);
        }
        let index = match self.snapshot.load().metrics.get(metric) {
            Some(i) => *i,
            None => self.register_metric(metric)?,
        };
        match tag {
            None => self.untagged.record(index, value),
            Some(tag) => self.with_entry(tag, false, |e| e.slot.custom.record(index, value)),
        }
        Ok(())
    }

    fn register_metric(&self, metric: &str) -> Result<usize, ReportError> {
        if !crate::names::is_valid_metric(metric) {
            return Err(ReportError::InvalidName);
        }
        let mut w = self.lock();
        if let Some(i) = w.metrics.iter().position(|m| &**m == metric) {
            return Ok(i);
        }
        if w.metrics.len() >= MAX_CUSTOM_METRICS {
            return Err(ReportError::TooManyMetrics);
        }
        w.metrics.push(metric.into());
        let i = w.metrics.len() - 1;
        self.rebuild(&mut w);
        Ok(i)
    }

    /// Take the custom metrics' window aggregates: `(tag or None, metric name, aggregate)`.
    /// Each call starts a new window.
    pub fn take_custom(&self, out: &mut Vec<(Option<Tag>, String, Aggregate)>) {
        let (slots, names) = {
            let w = self.lock();
            (w.slots.clone(), w.metrics.clone())
        };
        let mut buf = Vec::new();
        self.untagged.take(&mut buf);
        for (i, agg) in buf.drain(..) {
            out.push((None, names[i].to_string(), agg));
        }
        for slot in slots.iter().chain(std::iter::once(&self.overflow)) {
            slot.custom.take(&mut buf);
            for (i, agg) in buf.drain(..) {
                out.push((Some(Tag(slot.clone())), names[i].to_string(), agg));
            }
        }
    }

    /// Every tracked tag (the overflow tag last).
    pub fn tags(&self) -> Vec<Tag> {
        let w = self.lock();
        w.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .map(|s| Tag(s.clone()))
            .collect()
    }

    /// The cumulative counters of every tracked tag, into `out` (reusing its buffers).
    pub fn load_counters(&self, out: &mut Vec<(Tag, TagCounters)>) {
        let tags = self.tags();
        out.truncate(tags.len());
        for (i, tag) in tags.into_iter().enumerate() {
            if i == out.len() {
                out.push((tag.clone(), TagCounters::default()));
            }
            let (t, c) = &mut out[i];
            tag.0.load_into(c);
            *t = tag;
        }
    }

    /// The cumulative counters of one tag, if it is tracked.
    pub fn counters(&self, tag: &str) -> Option<TagCounters> {
        let w = self.lock();
        let slot = w
            .slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .find(|s| &*s.name == tag)?;
        let mut c = TagCounters::default();
        slot.load_into(&mut c);
        Some(c)
    }

    /// Requests in flight across every tag.
    pub fn in_flight(&self) -> u64 {
        let w = self.lock();
        w.slots
            .iter()
            .chain(std::iter::once(&self.overflow))
            .map(|s| s.in_flight())
            .sum()
    }

    /// Adaptive admission's state: the limit, the learned baseline, slots in use, and each
    /// level's queue.
    pub fn admission(&self) -> AdmissionState {
        self.global.pool.state(self.global.levels())
    }

    /// Let adaptive admission learn: close the measuring window if it is due, move the
    /// limit, hand freed room to waiters. Call it often (the runtime does, every 50 ms);
    /// it is cheap when nothing is due.
    pub fn tick_admission(&self, now: Duration) {
        self.global.pool.tick(now);
    }
}
