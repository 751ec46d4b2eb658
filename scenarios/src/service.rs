//! The backend the scenarios drive, and the ways in front of it (no gate, a static limit,
//! tower-acc, WaitState).

use super::*;

// ---------------------------------------------------------------- the backend

/// The incident's effect on the backend, switched on and off by the driver.
#[derive(Debug, Default)]
pub(crate) struct Weather {
    pub(crate) service_factor_milli: AtomicU64,
    pub(crate) error_rate_ppm: AtomicU64,
}

/// The backend: a pool of connections, a log-normal service time per request.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    pub(crate) pool: Arc<Semaphore>,
    /// Connections in the pool (the capacity scenario adds some mid-run).
    pub(crate) size: Arc<AtomicU64>,
    pub(crate) rng: Arc<AtomicU64>,
    pub(crate) weather: Arc<Weather>,
}

/// A cheap shared pseudo-random sequence (splitmix64), uniform in (0, 1).
pub(crate) fn uniform(seed: &AtomicU64) -> f64 {
    let x = seed.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A standard normal draw (Box-Muller).
pub(crate) fn normal(seed: &AtomicU64) -> f64 {
    let (u, v) = (uniform(seed), uniform(seed));
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

impl Backend {
    pub(crate) fn new(weather: Arc<Weather>) -> Self {
        Self {
            pool: Arc::new(Semaphore::new(POOL)),
            size: Arc::new(AtomicU64::new(POOL as u64)),
            rng: Arc::new(AtomicU64::new(0x2545_F491_4F6C_DD1D)),
            weather,
        }
    }

    /// Connections in the pool now.
    pub(crate) fn size(&self) -> u64 {
        self.size.load(Relaxed)
    }

    /// Connections held now.
    pub(crate) fn busy(&self) -> u64 {
        self.size()
            .saturating_sub(self.pool.available_permits() as u64)
    }

    /// Grows the pool to `to` connections (never shrinks it).
    pub(crate) fn grow(&self, to: u64) {
        let now = self.size();
        if to > now {
            self.pool.add_permits((to - now) as usize);
            self.size.store(to, Relaxed);
        }
    }

    /// Log-normal with mean `SERVICE_MEAN_MS`, times the weather's factor and `cost`.
    pub(crate) fn service_time(&self, cost: f64) -> Duration {
        let mu = SERVICE_MEAN_MS.ln() - SERVICE_SIGMA * SERVICE_SIGMA / 2.0;
        let ms = (mu + SERVICE_SIGMA * normal(&self.rng)).exp();
        let factor = self.weather.service_factor_milli.load(Relaxed) as f64 / 1000.0;
        Duration::from_secs_f64(ms * factor * cost / 1000.0)
    }

    pub(crate) fn fails(&self) -> bool {
        let ppm = self.weather.error_rate_ppm.load(Relaxed);
        ppm > 0 && uniform(&self.rng) * 1e6 < ppm as f64
    }
}

pub(crate) async fn handler(State(backend): State<Backend>, headers: HeaderMap) -> StatusCode {
    let cost = if headers.contains_key("x-search") {
        SEARCH_COST
    } else {
        1.0
    };
    match timeout(POOL_TIMEOUT, backend.pool.acquire()).await {
        Ok(Ok(_connection)) => {
            if backend.fails() {
                // A failing dependency answers fast.
                sleep(backend.service_time(cost) / 5).await;
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                sleep(backend.service_time(cost)).await;
                StatusCode::OK
            }
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The ways a scenario runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    /// Nothing in front of the backend.
    None,
    /// `tower_governor`, one global bucket at the calm-weather capacity.
    Static,
    /// `tower-acc`: Gradient2's adaptive concurrency limit, priority-blind (see [`acc_layer`]).
    Acc,
    /// WaitState with `scenarios/waitstate.toml`.
    WaitState,
    /// WaitState with `scenarios/waitstate.toml`, learning off and `[limits] concurrency`
    /// at this cap (`--static-caps`).
    Cap(u64),
}

impl Way {
    pub(crate) const ALL: [Way; 4] = [Way::None, Way::Static, Way::Acc, Way::WaitState];

    pub(crate) fn name(self) -> String {
        match self {
            Way::None => "no gate".to_owned(),
            Way::Static => "static limit (tower_governor)".to_owned(),
            Way::Acc => "adaptive limit (tower-acc)".to_owned(),
            Way::WaitState => "WaitState".to_owned(),
            Way::Cap(n) => format!("WaitState, static cap {n}"),
        }
    }

    pub(crate) fn key(self) -> String {
        match self {
            Way::None => "none".to_owned(),
            Way::Static => "static".to_owned(),
            Way::Acc => "acc".to_owned(),
            Way::WaitState => "waitstate".to_owned(),
            Way::Cap(n) => format!("cap{n}"),
        }
    }

    /// The WaitState of this way, from `config` (`None`: the way is not WaitState).
    pub(crate) fn waitstate(
        self,
        config: &str,
    ) -> Result<Option<WaitState>, Box<dyn std::error::Error>> {
        let mut config = match self {
            Way::WaitState | Way::Cap(_) => Config::from_toml_str(config)?,
            _ => return Ok(None),
        };
        if let Way::Cap(n) = self {
            config.admission.adaptive = false;
            config.limits.concurrency = Some(n);
        }
        Ok(Some(WaitState::from_config(config)?))
    }
}

/// Gradient2 with its defaults, its limit published after every update so the runner can
/// record it (tower-acc has no getter for it).
#[derive(Clone, Debug)]
pub(crate) struct WatchedGradient2 {
    pub(crate) inner: Gradient2,
    pub(crate) limit: Arc<AtomicU64>,
}

impl Algorithm for WatchedGradient2 {
    fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency()
    }

    fn update(&mut self, rtt: Duration, in_flight: usize, is_error: bool, is_canceled: bool) {
        self.inner.update(rtt, in_flight, is_error, is_canceled);
        self.limit
            .store(self.inner.max_concurrency() as u64, Relaxed);
    }
}

/// The app for one way, and tower-acc's limit (its way only).
pub(crate) fn app(way: Way, backend: Backend, ws: Option<WaitState>) -> (Router, Arc<AtomicU64>) {
    let acc_limit = Arc::new(AtomicU64::new(0));
    if way != Way::Acc {
        return (app_on(way, backend, ws, capacity_rps()), acc_limit);
    }
    // tower-acc as its server examples (`examples/hyper.rs`, `examples/tower.rs`) set it up:
    // `LoadShed` over a `Buffer` of ACC_BUFFER over `ConcurrencyLimit` with Gradient2's
    // defaults (initial limit 20, never below 20 nor above 200, tolerance 1.5).
    //
    // Alone, `ConcurrencyLimit` never rejects: `poll_ready` waits for a permit of a FIFO tokio
    // semaphore, with no bound, so under overload a request waits until a permit frees or its
    // client gives up (5 s here), every tier alike. The examples put a bounded `Buffer` in
    // front and `LoadShed` over it: when the buffer is full, a request is turned away at once
    // (`Overloaded`, which the example answers with 503). Here it is answered 429, so the
    // runner files it as shed by the gate, as it does the other gates' rejections. A request
    // let into the buffer waits behind at most the 16 ahead of it, then holds a permit.
    // Gradient2 learns from every request that ends, from `call` (so the buffer's wait is not
    // in its RTT, the backend's pool wait is), and not while fewer than half its permits are
    // in use; its floor of 20 is twice this backend's pool.
    let inner = Gradient2::default();
    acc_limit.store(inner.max_concurrency() as u64, Relaxed);
    let gate = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|e: tower::BoxError| async move {
            if e.is::<tower::load_shed::error::Overloaded>() {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }))
        .load_shed()
        .buffer(ACC_BUFFER)
        .layer(ConcurrencyLimitLayer::new(WatchedGradient2 {
            inner,
            limit: acc_limit.clone(),
        }));
    let router = Router::new()
        .route("/", get(handler))
        .with_state(backend)
        .layer(gate);
    (router, acc_limit)
}

/// The app for one way, in front of `backend` (shared by a fleet's instances), the static
/// limit at `static_rps`.
pub(crate) fn app_on(way: Way, backend: Backend, ws: Option<WaitState>, static_rps: f64) -> Router {
    let router = Router::new().route("/", get(handler)).with_state(backend);
    match (way, ws) {
        (Way::WaitState | Way::Cap(_), Some(ws)) => router.layer(GateLayer::new(
            ws,
            HeaderTagger::new().weight_header("x-waitstate-weight"),
        )),
        (Way::Static, _) => {
            // The rate that fits capacity in calm weather, a burst of a tenth of a second.
            let config = GovernorConfigBuilder::default()
                .per_nanosecond((1e9 / static_rps) as u64)
                .burst_size(((static_rps / 10.0) as u32).max(1))
                .key_extractor(GlobalKeyExtractor)
                .finish()
                .expect("a valid governor configuration");
            router.layer(GovernorLayer::new(config))
        }
        _ => router,
    }
}
