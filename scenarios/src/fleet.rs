//! Scenarios 5 and 6: a fleet of three instances (three axum services on their own
//! listeners, each with its own WaitState engine) in front of one shared backend (the pool
//! of [`POOL`] connections: three replicas of a service in front of one database), and, for
//! the WaitState way, one in-process control plane (`waitstate-control`) they pulse and
//! sync with every second.
//!
//! 5. `fleet`: the surge hits instance 0 only (the fleet's offered load goes to 3x
//!    capacity, all of the extra on instance 0); instances 1 and 2 see calm load but share
//!    the backend.
//! 6. `cp-loss`: the same surge; the control plane is stopped 10 s into it and comes back
//!    (empty, as after a restart) 10 s after its end. The lease is 10 s: the cached policy
//!    holds for the lease, then safe mode (`open`: the control plane's policy is dropped,
//!    local rules stay) until the first sync after the restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep};
use waitstate_control::{AppState, ControlConfig, ControlServer};
use waitstate_core::{Config, ControlPlane, WaitState};

use crate::stats::{self, Figures, TIERS, Timeline, Window};
use crate::{
    Backend, Bucket, CALM_UTILISATION, MAX_OUTSTANDING, MIX, POOL, Shot, Way, Weather, app_on,
    capacity_rps, send, uniform,
};

/// Instances in the fleet.
pub(crate) const INSTANCES: usize = 3;

const PK: &str = "pk_scenarios";
const SK: &str = "sk_scenarios_secret";

/// The control plane's configuration: the fleet's rules, evaluated on the merged
/// telemetry of the three instances (the fleet p95 is a percentile of every request).
const CONTROL_TOML: &str = r#"
tick = "250ms"
window = "2s"
release_step = "1s"

[tags]
enterprise = 100
pro = 50
free = 10

# The backend is shared, and each instance learns its own limit from the backend's service
# time: an instance that is not pressed itself (demand under its limit) never queues or
# sheds, so its free and pro traffic keeps its share of the backend while the hit instance
# turns enterprise away. This rule is the fleet's priority: while enterprise is turned away
# anywhere in the fleet, shed the lowest priority still admitted on every instance, a level
# per window (free, then pro); release after 5 s calm, through the ramp (25%, 50%, 75%).
[[rules]]
rule = "when reject_rate of enterprise > 0.5% for 1s then shed"
cooldown = "5s"

# The backstop, for when the backend itself slows down: the same, while the fleet's p95 is
# high.
[[rules]]
rule = "when p95_latency > 800ms for 1s then shed"
cooldown = "5s"

[server]
listen = "127.0.0.1:0"
lease = "10s"
pulse_interval = "1s"
instance_ttl = "30s"

[[keys]]
publish_key = "pk_scenarios"
secret_key = "sk_scenarios_secret"
org_id = "scenarios"
"#;

/// A fleet scenario.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FleetScenario {
    pub(crate) name: &'static str,
    pub(crate) title: &'static str,
    calm_s: u64,
    incident_s: u64,
    after_s: u64,
    /// The fleet's offered load during the incident, as a multiple of capacity; the extra
    /// load all goes to instance 0.
    fleet_load: f64,
    /// Seconds from the start at which the control plane stops, and comes back.
    cp_stop_s: Option<u64>,
    cp_restart_s: Option<u64>,
}

impl FleetScenario {
    pub(crate) fn window(&self) -> Window {
        Window {
            onset_s: self.calm_s,
            end_s: self.calm_s + self.incident_s,
        }
    }

    pub(crate) fn total_s(&self) -> u64 {
        self.calm_s + self.incident_s + self.after_s
    }

    pub(crate) fn quick(mut self) -> Self {
        self.calm_s = 5;
        self.incident_s = self.incident_s.min(20);
        self.after_s = 15;
        self.cp_stop_s = self.cp_stop_s.map(|_| 10);
        self.cp_restart_s = self.cp_restart_s.map(|_| 35);
        self
    }

    /// Requests per second offered to `instance`'s `tier`.
    fn rate(&self, instance: usize, tier: usize, incident: bool) -> f64 {
        let calm = capacity_rps() * CALM_UTILISATION / INSTANCES as f64;
        let extra = if incident && instance == 0 {
            capacity_rps() * self.fleet_load - capacity_rps() * CALM_UTILISATION
        } else {
            0.0
        };
        (calm + extra) * MIX[tier]
    }
}

/// The fleet scenarios.
pub(crate) const FLEET_SCENARIOS: [FleetScenario; 2] = [
    FleetScenario {
        name: "fleet",
        title: "Fleet: 3 instances, 1 backend; surge hits instance 0",
        calm_s: 15,
        incident_s: 30,
        after_s: 25,
        fleet_load: 3.0,
        cp_stop_s: None,
        cp_restart_s: None,
    },
    FleetScenario {
        name: "cp-loss",
        title: "Control plane lost mid-surge (lease 10 s, safe mode open)",
        calm_s: 15,
        incident_s: 30,
        after_s: 25,
        fleet_load: 3.0,
        cp_stop_s: Some(25),
        cp_restart_s: Some(55),
    },
];

/// How one fleet run is gated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FleetWay {
    /// No gate on any instance.
    None,
    /// `tower_governor` on each instance at a third of the backend's capacity.
    Static,
    /// WaitState with `scenarios/waitstate.toml` on each instance, no control plane.
    Local,
    /// The same, plus the control plane and its fleet rule.
    Fleet,
}

impl FleetWay {
    pub(crate) const ALL: [FleetWay; 4] = [
        FleetWay::None,
        FleetWay::Static,
        FleetWay::Local,
        FleetWay::Fleet,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            FleetWay::None => "no gate",
            FleetWay::Static => "static 33/s each",
            FleetWay::Local => "WaitState local",
            FleetWay::Fleet => "WaitState + CP",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            FleetWay::None => "none",
            FleetWay::Static => "static",
            FleetWay::Local => "local",
            FleetWay::Fleet => "fleet",
        }
    }
}

/// One instance's state at the start of one second (WaitState ways).
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct InstanceState {
    /// A policy from the control plane has been received.
    synced: bool,
    /// That policy's lease holds.
    lease_valid: bool,
    /// Safe mode (the lease expired).
    safe_mode: bool,
    /// Tags the merged policy blocks (max weight 0).
    blocked: Vec<String>,
    /// The merged policy's priority floor (local `shed`).
    priority_floor: Option<i64>,
    /// Pulses and syncs that failed so far.
    pulses_failed: u64,
    syncs_failed: u64,
    /// Adaptive admission: the instance's learned limit, what it holds and queues, the
    /// waiters turned away so far (all levels), its baseline (ms) and whether it probes.
    limit: u64,
    in_flight: u64,
    waiting: u64,
    timed_out_total: u64,
    baseline_ms: Option<f64>,
    probing: bool,
}

fn state_of(ws: &WaitState) -> InstanceState {
    let policy = ws.policy();
    let status = ws.control_status();
    let a = ws.admission();
    InstanceState {
        limit: a.limit,
        in_flight: a.in_flight,
        waiting: a.levels.iter().map(|l| l.waiting).sum(),
        timed_out_total: a.levels.iter().map(|l| l.timed_out_total).sum(),
        baseline_ms: a.baseline.map(|d| d.as_secs_f64() * 1000.0),
        probing: a.probing,
        synced: status.as_ref().is_some_and(|s| s.synced),
        lease_valid: status.as_ref().is_some_and(|s| s.lease_valid),
        safe_mode: status.as_ref().is_some_and(|s| s.safe_mode),
        blocked: policy
            .tag_max_weights
            .iter()
            .filter(|(_, w)| **w <= 0.0)
            .map(|(t, _)| t.clone())
            .collect(),
        priority_floor: policy.priority_floor,
        pulses_failed: status.as_ref().map_or(0, |s| s.pulses_failed),
        syncs_failed: status.as_ref().map_or(0, |s| s.syncs_failed),
    }
}

/// One fleet run's result.
#[derive(Debug)]
pub(crate) struct FleetRun {
    /// Per instance.
    pub(crate) timelines: Vec<Timeline>,
    /// All instances merged.
    pub(crate) merged: Timeline,
    pub(crate) first_shed_s: Option<f64>,
    /// Per second, per instance (WaitState ways; empty otherwise).
    pub(crate) states: Vec<Vec<InstanceState>>,
    /// When the control plane stopped and came back (seconds from the start, measured).
    pub(crate) cp_events: Vec<(String, f64)>,
}

async fn start_control(listener: TcpListener) -> Result<ControlServer, Box<dyn std::error::Error>> {
    let config = ControlConfig::from_toml_str(CONTROL_TOML)?;
    Ok(ControlServer::serve(listener, AppState::new(config)?))
}

/// Runs one fleet scenario one way, in real time.
pub(crate) async fn run(
    scenario: &FleetScenario,
    way: FleetWay,
    config: &str,
) -> Result<FleetRun, Box<dyn std::error::Error>> {
    let weather = Arc::new(Weather::default());
    weather.service_factor_milli.store(1000, Relaxed);
    let backend = Backend::new(weather);

    let mut control = None;
    let mut control_addr = None;
    if way == FleetWay::Fleet {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        control_addr = Some(listener.local_addr()?);
        control = Some(start_control(listener).await?);
        if let Some(addr) = control_addr {
            crate::progress::note(&format!(
                "{} / fleet: the control plane's dashboard is at http://{addr}/",
                scenario.name
            ));
        }
    }
    let mut engines = Vec::new();
    let mut servers = Vec::new();
    let mut uris = Vec::new();
    for _ in 0..INSTANCES {
        let ws = match way {
            FleetWay::Local | FleetWay::Fleet => {
                let mut builder = WaitState::builder().config(Config::from_toml_str(config)?);
                if let Some(addr) = control_addr {
                    builder = builder.control_plane(
                        ControlPlane::new(format!("http://{addr}"), PK, SK)
                            .pulse_interval(Duration::from_secs(1))
                            .sync_interval(Duration::from_secs(1))
                            .timeout(Duration::from_millis(500))
                            .lease(Duration::from_secs(10)),
                    );
                }
                Some(builder.build()?)
            }
            _ => None,
        };
        let app_way = match way {
            FleetWay::None => Way::None,
            FleetWay::Static => Way::Static,
            _ => Way::WaitState,
        };
        let app = app_on(
            app_way,
            backend.clone(),
            ws.clone(),
            capacity_rps() / INSTANCES as f64,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        uris.push(format!("http://{}/", listener.local_addr()?).parse::<http::Uri>()?);
        servers.push(tokio::spawn(axum::serve(listener, app).into_future()));
        engines.extend(ws);
    }

    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(10))
        .build_http();
    let total = scenario.total_s();
    let buckets: Vec<Arc<[[Bucket; 3]]>> = (0..INSTANCES)
        .map(|_| (0..total).map(|_| Default::default()).collect())
        .collect();
    let outstanding = Arc::new(AtomicU64::new(0));
    let first_shed = Arc::new(AtomicU64::new(u64::MAX));
    let window = scenario.window();
    let onset = Duration::from_secs(window.onset_s);
    let end = Duration::from_secs(window.end_s);
    let rng = AtomicU64::new(0x1234_5678_9ABC_DEF0);
    let mut states = Vec::new();
    let mut cp_events = Vec::new();

    let start = Instant::now();
    let mut next = [[Duration::ZERO; 3]; INSTANCES];
    let mut second = u64::MAX;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= Duration::from_secs(total) {
            break;
        }
        let incident = elapsed >= onset && elapsed < end;
        if elapsed.as_secs() != second {
            second = elapsed.as_secs();
            if !engines.is_empty() {
                states.push(engines.iter().map(state_of).collect());
            }
            if scenario.cp_stop_s == Some(second)
                && let Some(server) = control.take()
            {
                server.shutdown().await?;
                cp_events.push((
                    "control plane stopped".to_owned(),
                    start.elapsed().as_secs_f64(),
                ));
            }
            if scenario.cp_restart_s == Some(second)
                && control.is_none()
                && let Some(addr) = control_addr
            {
                // The same address, new empty state (a restart). The port was ours a
                // moment ago; binding it again is retried a few times.
                for _ in 0..50 {
                    if let Ok(listener) = TcpListener::bind(addr).await {
                        control = Some(start_control(listener).await?);
                        cp_events.push((
                            "control plane back".to_owned(),
                            start.elapsed().as_secs_f64(),
                        ));
                        break;
                    }
                    sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let sec = elapsed.as_secs() as usize;
        for (instance, next) in next.iter_mut().enumerate() {
            for (tier, next) in next.iter_mut().enumerate() {
                let rate = scenario.rate(instance, tier, incident);
                while *next <= elapsed {
                    *next += Duration::from_secs_f64(-uniform(&rng).ln() / rate);
                    let b = &buckets[instance][sec][tier];
                    b.offered.fetch_add(1, Relaxed);
                    if outstanding.load(Relaxed) >= MAX_OUTSTANDING {
                        b.errors.fetch_add(1, Relaxed);
                        continue;
                    }
                    outstanding.fetch_add(1, Relaxed);
                    tokio::spawn(send(
                        Shot {
                            client: client.clone(),
                            uri: uris[instance].clone(),
                            buckets: buckets[instance].clone(),
                            outstanding: outstanding.clone(),
                            first_shed: first_shed.clone(),
                            start,
                            onset,
                        },
                        sec,
                        tier,
                        false,
                    ));
                }
            }
        }
        sleep(Duration::from_millis(2)).await;
    }
    crate::drain(&outstanding).await;
    for s in servers {
        s.abort();
    }
    if let Some(server) = control {
        server.shutdown().await?;
    }
    drop(engines);
    let timelines: Vec<Timeline> = buckets
        .iter()
        .map(|b| b.iter().map(|s| s.each_ref().map(Bucket::sample)).collect())
        .collect();
    let merged = merge(&timelines);
    let first = first_shed.load(Relaxed);
    Ok(FleetRun {
        timelines,
        merged,
        first_shed_s: (first != u64::MAX).then(|| first as f64 / 1e6 - onset.as_secs_f64()),
        states,
        cp_events,
    })
}

/// The instances' timelines added second by second (pure).
pub(crate) fn merge(timelines: &[Timeline]) -> Timeline {
    let len = timelines.iter().map(Vec::len).max().unwrap_or(0);
    (0..len)
        .map(|s| {
            std::array::from_fn(|tier| {
                let mut out = stats::TierSample::default();
                for t in timelines {
                    if let Some(second) = t.get(s) {
                        out.add(&second[tier]);
                    }
                }
                out
            })
        })
        .collect()
}

/// The figures of one fleet run: the fleet's (merged), then each instance's.
pub(crate) fn figures(scenario: &FleetScenario, run: &FleetRun) -> (Figures, Vec<Figures>) {
    let w = scenario.window();
    let fleet = stats::figures(&run.merged, &[], w, capacity_rps(), run.first_shed_s);
    // Per instance, goodput against a third of the backend (not meaningful for the hit
    // instance alone; the fleet's is the figure to read).
    let each = run
        .timelines
        .iter()
        .map(|t| stats::figures(t, &[], w, capacity_rps() / INSTANCES as f64, None))
        .collect();
    (fleet, each)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.0} ms"))
}

/// A Markdown table: one column per way; rows per instance for enterprise, then the
/// fleet's figures.
pub(crate) fn markdown_table(runs: &[(&str, &Figures, &[Figures])]) -> String {
    let mut out = String::from("| | ");
    out.push_str(
        &runs
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" |\n|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    let mut row = |label: String, cell: &dyn Fn(&Figures, &[Figures]) -> String| {
        out.push_str(&format!("| {label} |"));
        for (_, fleet, each) in runs {
            out.push_str(&format!(" {} |", cell(fleet, each)));
        }
        out.push('\n');
    };
    for i in 0..INSTANCES {
        let who = if i == 0 {
            "instance 0 (hit)"
        } else {
            "instance"
        };
        let label = if i == 0 {
            who.to_owned()
        } else {
            format!("{who} {i}")
        };
        row(
            format!("{label}: enterprise success (onset to end)"),
            &|_, e| {
                let g = stats::goals(&e[i]).enterprise_success;
                format!(
                    "{:.2}% ({})",
                    e[i].enterprise_success_pct,
                    if g { "met" } else { "missed" }
                )
            },
        );
        row(format!("{label}: enterprise p99 calm / surge"), &|_, e| {
            let g = stats::goals(&e[i]).enterprise_p99;
            format!(
                "{} / {} ({})",
                ms(e[i].enterprise_p99_calm_ms),
                ms(e[i].enterprise_p99_incident_ms),
                if g { "met" } else { "missed" }
            )
        });
    }
    row("fleet: enterprise success".to_owned(), &|f, _| {
        format!("{:.2}%", f.enterprise_success_pct)
    });
    row(
        "fleet: goodput (200 within 500 ms) during the surge".to_owned(),
        &|f, _| {
            format!(
                "{:.0}/s = {:.0}% of capacity ({})",
                f.goodput_rps,
                f.goodput_pct,
                if stats::goals(f).goodput {
                    "met"
                } else {
                    "missed"
                }
            )
        },
    );
    row("fleet: onset to first shed".to_owned(), &|f, _| {
        f.first_shed_s
            .map_or("never".to_owned(), |s| format!("{s:.2} s"))
    });
    row("fleet: shed episodes".to_owned(), &|f, _| {
        f.shed_episodes.to_string()
    });
    for (t, tier) in TIERS.iter().enumerate() {
        row(
            format!("fleet {tier}: offered / admitted / succeeded / shed / errors"),
            &|f, _| {
                let x = &f.totals[t];
                format!(
                    "{}/{}/{}/{}/{}",
                    x.offered, x.admitted, x.succeeded, x.shed, x.errors
                )
            },
        );
    }
    out
}

/// Tag names as Markdown code (`__default__` would otherwise render bold).
fn code(tags: &[String]) -> String {
    tags.iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The per-second control state of a run as a Markdown table (instance 1's view: the
/// instances agree on the fleet policy; safe mode and lease per instance are in the JSON),
/// with the fleet's per-second enterprise p99 and shed counts.
pub(crate) fn state_table(run: &FleetRun, from: u64, to: u64) -> String {
    let mut out = String::from(
        "| t (s) | synced | lease valid (3 instances) | safe mode | blocked on instance 0 | blocked on instance 1 | priority floor, merged policy (0 / 1 / 2) | enterprise p99 ms (0 / 1 / 2) | shed (all tiers) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in from..to.min(run.states.len() as u64) {
        let st = &run.states[s as usize];
        let yes = |f: &dyn Fn(&InstanceState) -> bool| {
            st.iter()
                .map(|i| if f(i) { "y" } else { "n" })
                .collect::<Vec<_>>()
                .join("")
        };
        let p99 = |i: usize| {
            run.timelines[i]
                .get(s as usize)
                .and_then(|t| t[0].latency.quantile_ms(0.99))
                .map_or("-".to_owned(), |v| format!("{v:.0}"))
        };
        let shed: u64 = run
            .merged
            .get(s as usize)
            .map_or(0, |t| t.iter().map(|x| x.shed).sum());
        out.push_str(&format!(
            "| {s} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {shed} |\n",
            yes(&|i| i.synced),
            yes(&|i| i.lease_valid),
            yes(&|i| i.safe_mode),
            code(&st[0].blocked),
            code(&st[1].blocked),
            st.iter()
                .map(|i| i.priority_floor.map_or("-".to_owned(), |f| f.to_string()))
                .collect::<Vec<_>>()
                .join(" / "),
            p99(0),
            p99(1),
            p99(2),
        ));
    }
    out
}

/// `fleet_load` in the header line.
pub(crate) fn describe(s: &FleetScenario) -> String {
    format!(
        "backend: one pool of {POOL} connections shared by {INSTANCES} instances, capacity {:.0} req/s; \
         calm load {:.0} req/s spread evenly; during the surge the fleet is offered {:.0} req/s, \
         instance 0 {:.0} of it; phases {} s calm, {} s surge, {} s after{}",
        capacity_rps(),
        capacity_rps() * CALM_UTILISATION,
        capacity_rps() * s.fleet_load,
        (0..3).map(|t| s.rate(0, t, true)).sum::<f64>(),
        s.calm_s,
        s.incident_s,
        s.after_s,
        match (s.cp_stop_s, s.cp_restart_s) {
            (Some(a), Some(b)) => format!(
                "; control plane stopped at {a} s, back at {b} s; lease 10 s, safe mode `open`"
            ),
            _ => String::new(),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_surge_lands_on_instance_0_and_adds_up_to_the_fleet_load() {
        let s = FLEET_SCENARIOS[0];
        let fleet: f64 = (0..INSTANCES)
            .flat_map(|i| (0..3).map(move |t| (i, t)))
            .map(|(i, t)| s.rate(i, t, true))
            .sum();
        assert!((fleet - 300.0).abs() < 1e-6, "{fleet}");
        let calm: f64 = (0..3).map(|t| s.rate(1, t, true)).sum();
        assert!((calm - 70.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn merge_adds_second_by_second() {
        let mut a: Timeline = vec![Default::default(); 2];
        a[0][0].offered = 3;
        let mut b: Timeline = vec![Default::default(); 3];
        b[0][0].offered = 4;
        b[2][1].shed = 1;
        let m = merge(&[a, b]);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0][0].offered, 7);
        assert_eq!(m[2][1].shed, 1);
    }

    #[test]
    fn the_control_plane_configuration_parses() {
        assert!(ControlConfig::from_toml_str(CONTROL_TOML).is_ok());
    }
}
