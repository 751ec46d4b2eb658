//! The local engine (feature `runtime`): the [`WaitState`] handle, its builder, the RAII
//! [`Permit`], and the background task that evaluates the rules every tick. The control-plane
//! client (`control`, `lease`, `wire`) is the feature `control-plane`.

#[cfg(feature = "control-plane")]
mod control;
#[cfg(feature = "control-plane")]
mod lease;
mod permit;
mod wait;
#[cfg(feature = "control-plane")]
#[cfg_attr(docsrs, doc(cfg(feature = "control-plane")))]
pub mod wire;

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

#[cfg(feature = "control-plane")]
use self::control::ControlShared;
#[cfg(feature = "control-plane")]
pub use self::control::ControlStatus;
pub use self::permit::Permit;
pub use self::wait::{Entry, WaitForSlot};
use crate::admission::AdmissionState;
#[cfg(feature = "control-plane")]
use crate::config::ControlPlane;
use crate::config::{AdmissionConfig, Config, Limits, RuleConfig};
use crate::decision::{Decision, Rejection};
use crate::engine::{Admit, Demand, Engine, ReportError};
use crate::error::ConfigError;
use crate::policy::Policy;
use crate::reflex::{Reflex, RuleStatus};
use crate::registry::TagCounters;

/// The runtime's one clock. Every time reading of the runtime goes through here, so that
/// `tokio::time::pause()` drives it in tests.
#[allow(clippy::disallowed_methods)]
pub(crate) fn clock_now() -> Instant {
    Instant::now()
}

/// The runtime's one wall-clock read: Unix epoch milliseconds, for the wire (pulse
/// timestamps, token expiry). Never used to measure durations.
#[cfg(feature = "control-plane")]
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The handle to one engine. Cheap to clone: every clone shares one policy, one set of
/// counters and one background task, which stops when the last clone is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), waitstate_core::ConfigError> {
/// use waitstate_core::{Reason, WaitState};
///
/// let ws = WaitState::builder()
///     .tag("enterprise", 100)
///     .tag("free", 10)
///     .rule("when p95_latency > 500ms for 5s then block free")
///     .build()?;
///
/// let permit = ws.admit("free", 1.0).expect("nothing fires yet");
/// // ... call the backend ...
/// drop(permit); // records latency and outcome for `free`, frees the in-flight slot
///
/// let mut blocked = waitstate_core::Policy::default();
/// blocked.tag_max_weights.insert("free".into(), 0.0);
/// ws.engine().set_remote_policy(Some(blocked))?;
/// let rejection = ws.admit("free", 1.0).unwrap_err();
/// assert_eq!(rejection.reason(), Reason::TagBlocked);
/// assert!(ws.admit("enterprise", 1.0).is_ok());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub struct WaitState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    engine: Engine,
    origin: Instant,
    status: ArcSwap<Vec<RuleStatus>>,
    task: Mutex<Option<JoinHandle<()>>>,
    #[cfg(feature = "control-plane")]
    control: Option<Arc<ControlShared>>,
    #[cfg(feature = "control-plane")]
    control_task: Mutex<Option<JoinHandle<()>>>,
    admission_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        fn abort(task: &mut Mutex<Option<JoinHandle<()>>>) {
            let task = task.get_mut().unwrap_or_else(|p| p.into_inner());
            if let Some(task) = task.take() {
                task.abort();
            }
        }
        abort(&mut self.task);
        #[cfg(feature = "control-plane")]
        abort(&mut self.control_task);
        abort(&mut self.admission_task);
    }
}

impl Inner {
    fn now(&self) -> Duration {
        clock_now().saturating_duration_since(self.origin)
    }

    /// Safe mode's answer for `tag` while a control plane's lease has expired; `None` (decide
    /// as usual) otherwise, and always without the `control-plane` feature.
    #[inline]
    fn safe_mode_gate(&self, tag: &str) -> Option<Rejection> {
        #[cfg(feature = "control-plane")]
        if let Some(control) = &self.control {
            return control.safe_mode_gate(self, tag);
        }
        #[cfg(not(feature = "control-plane"))]
        let _ = tag;
        None
    }
}

impl WaitState {
    /// Start configuring an engine.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// An engine from a TOML file (the format in [`Config`]).
    ///
    /// # Errors
    /// [`ConfigError::Io`] if the file cannot be read, otherwise as
    /// [`Config::from_toml_str`] and [`Builder::build`].
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_config(Config::from_toml_str(&text)?)
    }

    /// An engine from a configuration.
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn from_config(config: Config) -> Result<Self, ConfigError> {
        Builder { config }.build()
    }

    /// Decide for one request of `tag` and `weight`, without holding an in-flight slot.
    pub fn decide(&self, tag: &str, weight: f64) -> Decision {
        self.decide_demand(&Demand::new(tag).weight(weight))
    }

    /// Decide for a [`Demand`] (tag, weight and cohort key).
    pub fn decide_demand(&self, demand: &Demand<'_>) -> Decision {
        let inner = &*self.inner;
        if let Some(rejection) = inner.safe_mode_gate(demand.tag) {
            return Decision::Rejected(rejection);
        }
        inner.engine.decide_lazy(demand, || inner.now())
    }

    /// Decide, and when allowed hold an in-flight slot: the [`Permit`] records latency and
    /// outcome for the tag when it is dropped.
    ///
    /// # Errors
    /// The [`Rejection`] (reason, tag, priority, retry-after) when turned away.
    pub fn admit(&self, tag: &str, weight: f64) -> Result<Permit, Rejection> {
        self.admit_demand(&Demand::new(tag).weight(weight))
    }

    /// [`WaitState::admit`] for a [`Demand`].
    ///
    /// # Errors
    /// As [`WaitState::admit`].
    pub fn admit_demand(&self, demand: &Demand<'_>) -> Result<Permit, Rejection> {
        if let Some(rejection) = self.inner.safe_mode_gate(demand.tag) {
            return Err(rejection);
        }
        let start = clock_now();
        let now = start.saturating_duration_since(self.inner.origin);
        let ticket = self.inner.engine.admit(demand, now)?;
        Ok(Permit::new(ticket, start))
    }

    /// Decide, and when allowed hold a slot; when the pool is full, wait for one (see
    /// [`crate::admission`]): the answer is an [`Entry`], at once or to await. What the
    /// tower and actix layers call.
    pub fn enter(&self, demand: &Demand<'_>) -> Entry {
        self.enter_lazy(demand, || demand.max_wait)
    }

    /// [`WaitState::enter`], with the client's deadline read only if the request must wait.
    pub(crate) fn enter_lazy(
        &self,
        demand: &Demand<'_>,
        client_deadline: impl FnOnce() -> Option<Duration>,
    ) -> Entry {
        if let Some(rejection) = self.inner.safe_mode_gate(demand.tag) {
            return Entry::Rejected(rejection);
        }
        let start = clock_now();
        let now = || start.saturating_duration_since(self.inner.origin);
        match self
            .inner
            .engine
            .admit_or_queue_lazy(demand, now, client_deadline)
        {
            Admit::Admitted(ticket) => Entry::Admitted(Permit::new(ticket, start)),
            Admit::Rejected(rejection) => Entry::Rejected(rejection),
            Admit::Queued(queued) => Entry::Waiting(WaitForSlot::new(queued)),
        }
    }

    /// [`WaitState::admit`], waiting for a slot when the pool is full (at most until the
    /// level's deadline).
    ///
    /// # Errors
    /// As [`WaitState::admit`].
    pub async fn acquire(&self, tag: &str, weight: f64) -> Result<Permit, Rejection> {
        self.enter(&Demand::new(tag).weight(weight)).resolve().await
    }

    /// Adaptive admission's state (limit, baseline, in flight, queues).
    pub fn admission(&self) -> AdmissionState {
        self.inner.engine.admission()
    }

    /// Record a request that ended elsewhere with the latency and ending its client
    /// measured (see [`Engine::record`]): no admission, no slot. For sidecars and agents
    /// whose clients report what they measured.
    pub fn record(&self, demand: &Demand<'_>, latency: Duration, ending: crate::Ending) {
        self.inner.engine.record(demand, latency, ending);
    }

    /// Feed a custom metric that rules can name, for a tag or the whole service.
    ///
    /// # Errors
    /// [`ReportError`] when the value is dropped (bad name, not finite, too many metrics).
    pub fn report(&self, metric: &str, value: f64, tag: Option<&str>) -> Result<(), ReportError> {
        self.inner.engine.report(metric, value, tag)
    }

    /// The effective policy now (local rules and remote merged).
    pub fn policy(&self) -> Arc<Policy> {
        self.inner.engine.policy()
    }

    /// Each rule's status after the last tick.
    pub fn rules(&self) -> Arc<Vec<RuleStatus>> {
        self.inner.status.load_full()
    }

    /// A tag's cumulative counters, if it is tracked.
    pub fn counters(&self, tag: &str) -> Option<TagCounters> {
        self.inner.engine.counters(tag)
    }

    /// Requests in flight across every tag.
    pub fn in_flight(&self) -> u64 {
        self.inner.engine.in_flight()
    }

    /// The engine underneath (policy merge point, counters, tags).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The control plane client's state (`None` without a control plane).
    #[cfg(feature = "control-plane")]
    #[cfg_attr(docsrs, doc(cfg(feature = "control-plane")))]
    pub fn control_status(&self) -> Option<ControlStatus> {
        self.inner.control.as_ref().map(|c| c.status())
    }

    /// Whether every background task is still running: the rule evaluator, adaptive
    /// admission's ticker and, with a control plane, its client's supervisor (they stop with
    /// the last handle). A control-plane task that panics is restarted by its supervisor
    /// (logged at error level), so this stays true through that.
    pub fn is_running(&self) -> bool {
        let running = |task: &Mutex<Option<JoinHandle<()>>>| {
            let task = task.lock().unwrap_or_else(|p| p.into_inner());
            task.as_ref().is_some_and(|t| !t.is_finished())
        };
        #[cfg(feature = "control-plane")]
        let control = self.inner.control.is_none() || running(&self.inner.control_task);
        #[cfg(not(feature = "control-plane"))]
        let control = true;
        running(&self.inner.task) && running(&self.inner.admission_task) && control
    }
}

/// Configures a [`WaitState`]. Every setting has a default; see [`Config`].
#[derive(Clone, Debug, Default)]
#[must_use]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// Start from a whole configuration (e.g. read from TOML), then adjust.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Give a tag a priority (higher is more important).
    pub fn tag(mut self, name: impl Into<String>, priority: i64) -> Self {
        self.config.tags.insert(name.into(), priority);
        self
    }

    /// The priority of tags not listed (default 0).
    pub fn default_priority(mut self, priority: i64) -> Self {
        self.config.default_priority = priority;
        self
    }

    /// Add a reflex rule from its text; a rule that does not parse fails [`Builder::build`].
    pub fn rule(mut self, text: impl Into<String>) -> Self {
        self.config.rules.push(RuleConfig::new(text));
        self
    }

    /// Add a rule with its options (dry run, cool-down).
    pub fn rule_config(mut self, rule: RuleConfig) -> Self {
        self.config.rules.push(rule);
        self
    }

    /// Limits always in force (`[limits]`), e.g.
    /// `Limits::default().concurrency(40).rate("free", 200.0)`; invalid ones fail
    /// [`Builder::build`].
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Adaptive admission's settings (`[admission]`; on by default), e.g.
    /// `AdmissionConfig::default().max_wait(Duration::from_millis(50))`.
    pub fn admission(mut self, admission: AdmissionConfig) -> Self {
        self.config.admission = admission;
        self
    }

    /// Declare a custom metric the service reports (`[metrics] custom`), so rules may name
    /// it; a rule naming an undeclared one fails [`Builder::build`].
    pub fn custom_metric(mut self, name: impl Into<String>) -> Self {
        self.config.metrics.custom.push(name.into());
        self
    }

    /// Most tags tracked one by one (default 256).
    pub fn tag_cap(mut self, cap: usize) -> Self {
        self.config.tag_cap = cap;
        self
    }

    /// Compute and count every decision, reject nothing.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.config.dry_run = yes;
        self
    }

    /// How often rules are evaluated (default 1 s).
    pub fn tick(mut self, every: Duration) -> Self {
        self.config.tick = every;
        self
    }

    /// The window rules read (default 5 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// Default cool-down before a rule releases (default 5 s).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.config.cooldown = cooldown;
        self
    }

    /// Length of each gradual release step (default 2 s).
    pub fn release_step(mut self, step: Duration) -> Self {
        self.config.release_step = step;
        self
    }

    /// Retry-after hint for rejections other than rate limits (default 1 s).
    pub fn retry_after(mut self, hint: Duration) -> Self {
        self.config.retry_after = hint;
        self
    }

    /// Pulse telemetry to, and take the fleet policy from, a WaitState v1 control plane
    /// (ours, `waitstate-control`, or any other). See [`ControlPlane`] for cadence, lease
    /// and safe mode.
    ///
    /// Needs the `control-plane` feature (of this crate, or of `waitstate-tower`,
    /// `waitstate-axum`, `waitstate-actix`): it adds the HTTPS client (reqwest, rustls).
    #[cfg(feature = "control-plane")]
    #[cfg_attr(docsrs, doc(cfg(feature = "control-plane")))]
    pub fn control_plane(mut self, control: ControlPlane) -> Self {
        self.config.control_plane = Some(control);
        self
    }

    /// Validate, build the engine and start its background tasks on the current tokio
    /// runtime.
    ///
    /// # Errors
    /// What [`Config::validate`] finds (a rule's column included),
    /// [`ConfigError::NoRuntime`] outside a tokio runtime, or [`ConfigError::Invalid`] for
    /// `control_plane` when a control plane is configured (e.g. a `[control_plane]` table in
    /// the TOML file) but the crate was built without the `control-plane` feature: never
    /// ignored in silence.
    pub fn build(self) -> Result<WaitState, ConfigError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let engine = Engine::new(&self.config)?;
        let reflex = Reflex::new(&self.config)?;
        #[cfg(not(feature = "control-plane"))]
        if self.config.control_plane.is_some() {
            return Err(ConfigError::invalid(
                "control_plane",
                "a control plane is configured, but this build has no control-plane client: \
                 enable the `control-plane` feature of waitstate-tower, waitstate-axum, \
                 waitstate-actix or waitstate-core",
            ));
        }
        #[cfg(feature = "control-plane")]
        let control = match &self.config.control_plane {
            Some(cp) => Some((
                Arc::new(ControlShared::new(cp.clone())),
                control::http_client(cp)?,
            )),
            None => None,
        };
        let origin = clock_now();
        let inner = Arc::new(Inner {
            status: ArcSwap::from_pointee(reflex.status()),
            engine,
            origin,
            task: Mutex::new(None),
            #[cfg(feature = "control-plane")]
            control: control.as_ref().map(|(shared, _)| shared.clone()),
            #[cfg(feature = "control-plane")]
            control_task: Mutex::new(None),
            admission_task: Mutex::new(None),
        });
        let first = origin + self.config.tick;
        let task = handle.spawn(run(Arc::downgrade(&inner), reflex, first, self.config.tick));
        *inner.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        let admission = handle.spawn(admission_ticks(Arc::downgrade(&inner)));
        *inner
            .admission_task
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(admission);
        #[cfg(feature = "control-plane")]
        if let Some((shared, http)) = control {
            let task = handle.spawn(supervise_control(Arc::downgrade(&inner), shared, http));
            *inner.control_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        Ok(WaitState { inner })
    }
}

/// The background task: every tick, close the window, evaluate, swap in the new policy.
/// It holds only a weak reference, so it ends when the last handle is dropped.
async fn run(inner: Weak<Inner>, mut reflex: Reflex, first: Instant, tick: Duration) {
    let mut interval = tokio::time::interval_at(first, tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { break };
        let now = inner.now();
        let status = reflex.tick(now, &inner.engine);
        #[cfg(feature = "control-plane")]
        let settled = inner.control.as_ref().map(|control| {
            // The tick took the custom metrics from the engine: keep them for the pulse.
            control.add_custom(reflex.last_custom());
            control.settled()
        });
        #[cfg(not(feature = "control-plane"))]
        let settled = None;
        inner.engine.reclaim_quiet(now, settled);
        inner.status.store(Arc::new(status));
    }
}

/// How long the supervisor waits before restarting a control task that panicked.
#[cfg(feature = "control-plane")]
const CONTROL_RESTART: Duration = Duration::from_secs(1);

/// Run the control-plane client, and run it again if it panics (a bug, or a policy no
/// check foresaw): without this one bad answer would leave the instance with its last policy
/// and no lease, no pulses and no syncs, for good. The restarted client keeps the instance
/// id and resumes from the telemetry the control plane acknowledged; its lease starts over,
/// as at start-up.
#[cfg(feature = "control-plane")]
async fn supervise_control(inner: Weak<Inner>, shared: Arc<ControlShared>, http: reqwest::Client) {
    /// Aborts the client when the supervisor is aborted (the last handle dropped).
    struct AbortOnDrop(JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    loop {
        let task = tokio::spawn(control::run(inner.clone(), shared.clone(), http.clone()));
        let mut guard = AbortOnDrop(task);
        match (&mut guard.0).await {
            Err(e) if e.is_panic() && inner.strong_count() > 0 => {
                tracing::error!(
                    "WaitState control plane task panicked; restarting it in {CONTROL_RESTART:?}"
                );
                tokio::time::sleep(CONTROL_RESTART).await;
            }
            // Ended with the last handle, or cancelled with the runtime.
            _ => break,
        }
    }
}

/// How often adaptive admission looks at its measuring window (it closes one every 100 ms to
/// 1 s, when it has enough samples).
const ADMISSION_TICK: Duration = Duration::from_millis(50);

/// The admission task: let the learned limit move, hand freed room to waiters.
async fn admission_ticks(inner: Weak<Inner>) {
    let mut interval = tokio::time::interval(ADMISSION_TICK);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else { break };
        inner.engine.tick_admission(inner.now());
    }
}
