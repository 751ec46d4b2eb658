//! The pure part of the runner: a run's per-second samples and the figures of its table.
//! No clock, no I/O: the unit tests below feed it made-up timelines.

use serde::{Deserialize, Serialize};
use waitstate_core::histogram::Histogram;

/// The tiers, highest priority first, as the load generator tags them.
pub(crate) const TIERS: [&str; 3] = ["enterprise", "pro", "free"];

/// One tier's requests sent during one second (outcomes are filed under the second the
/// request was sent, so a slow answer still counts where its load was offered).
#[derive(Clone, Debug, Default)]
pub(crate) struct TierSample {
    /// Requests sent.
    pub(crate) offered: u64,
    /// Answered 200.
    pub(crate) succeeded: u64,
    /// Answered 200 within the latency objective.
    pub(crate) good: u64,
    /// Answered 429 (turned away by the gate).
    pub(crate) shed: u64,
    /// Anything else: 5xx, client timeout, connection error, or dropped by the generator.
    pub(crate) errors: u64,
    /// Latency of every answer that was not a 429.
    pub(crate) latency: Histogram,
}

impl TierSample {
    /// Requests the gate let through (offered minus shed).
    pub(crate) fn admitted(&self) -> u64 {
        self.offered.saturating_sub(self.shed)
    }

    pub(crate) fn add(&mut self, other: &TierSample) {
        self.offered += other.offered;
        self.succeeded += other.succeeded;
        self.good += other.good;
        self.shed += other.shed;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }
}

/// Per second, per tier (in [`TIERS`] order).
pub(crate) type Timeline = Vec<[TierSample; 3]>;

/// The backend and the gate during one second.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Gauges {
    /// Connections in the backend's pool.
    pub(crate) pool: u64,
    /// Connections busy, on average over the second.
    pub(crate) busy: f64,
    /// `busy / pool`.
    pub(crate) utilisation: f64,
    /// The gate's concurrency limit at the end of the second: WaitState's (learned, or its
    /// static cap) or tower-acc's; `None` for the other ways.
    pub(crate) limit: Option<u64>,
    /// WaitState: slots in use at the end of the second.
    pub(crate) in_flight: Option<u64>,
    /// WaitState: requests waiting for a slot at the end of the second (all levels).
    pub(crate) waiting: Option<u64>,
    /// WaitState: waiters turned away during the second (deadline passed, or made late by a
    /// higher level).
    pub(crate) timed_out: Option<u64>,
    /// WaitState: the learned no-load baseline at the end of the second (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) baseline_ms: Option<f64>,
    /// WaitState: the median service time of the last window that moved the limit (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service_ms: Option<f64>,
    /// WaitState: a probe (the limit held at 3/4) was under way at the end of the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) probing: Option<bool>,
}

/// Seconds of the incident left out of its steady part: the first ones (the gate is still
/// reacting to the onset) and the last ones.
pub(crate) const STEADY_SKIP: (u64, u64) = (3, 2);

/// The steady part of `from..to`: [`STEADY_SKIP`] seconds off each end (empty if too short).
pub(crate) fn steady(from: u64, to: u64) -> (u64, u64) {
    let (from, to) = (from + STEADY_SKIP.0, to.saturating_sub(STEADY_SKIP.1));
    (from, to.max(from))
}

/// Coefficient of variation (population standard deviation / mean); `None` with no values
/// or a zero mean.
pub(crate) fn cv(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return None;
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Some(var.sqrt() / mean)
}

/// The mean of `f` over the gauges of seconds `from..to` that have a value.
pub(crate) fn mean_of(
    gauges: &[Gauges],
    from: u64,
    to: u64,
    f: impl Fn(&Gauges) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = gauges
        .iter()
        .take(to as usize)
        .skip(from as usize)
        .filter_map(f)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// When the incident starts and ends, in seconds from the start of the run.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Window {
    /// Onset.
    pub(crate) onset_s: u64,
    /// End of the incident (the load or the backend is back to calm).
    pub(crate) end_s: u64,
}

/// The figures of one run (one way of one scenario).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figures {
    /// Enterprise: succeeded / offered from the onset to the end of the run (%).
    pub(crate) enterprise_success_pct: f64,
    /// Enterprise p99 latency before the onset (ms).
    pub(crate) enterprise_p99_calm_ms: Option<f64>,
    /// Enterprise p99 latency from the onset to the end of the incident (ms).
    pub(crate) enterprise_p99_incident_ms: Option<f64>,
    /// Successes within the latency objective per second during the incident, as a
    /// percentage of what the backend can serve during it.
    pub(crate) goodput_pct: f64,
    /// Same, in requests per second.
    pub(crate) goodput_rps: f64,
    /// First 429 after the onset, in seconds after it (`None`: never shed).
    pub(crate) first_shed_s: Option<f64>,
    /// Requests shed before the onset (a static limit may shed in calm weather too).
    pub(crate) shed_before_onset: u64,
    /// Seconds after the end of the incident until every later second is calm again (no
    /// 429, no error, every tier's p95 within 1.5x its calm p95); `None`: not within the run.
    pub(crate) recovery_s: Option<u64>,
    /// Separate stretches of seconds with shedding (> 1% of the offered load) from the
    /// onset on; 1 is a clean shed-and-release, more is oscillation.
    pub(crate) shed_episodes: u32,
    /// Per tier, over the whole run: offered, admitted, succeeded, shed, errors.
    pub(crate) totals: Vec<TierTotals>,
    /// Per tier: coefficient of variation of admitted per second over the steady part of the
    /// incident ([`steady`]); Poisson arrivals alone give about 1/sqrt(mean).
    pub(crate) admitted_cv: [Option<f64>; 3],
    /// Backend utilisation (busy connections / pool) averaged over the incident.
    pub(crate) utilisation: Option<f64>,
    /// The gate's limit over the steady part of the incident: mean, lowest, highest.
    pub(crate) limit: Option<(f64, u64, u64)>,
    /// WaitState: requests waiting for a slot, averaged over the incident's seconds.
    pub(crate) waiting_mean: Option<f64>,
    /// WaitState: waiters turned away during the incident.
    pub(crate) timed_out: Option<u64>,
}

/// One tier's totals over a run.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct TierTotals {
    /// The tier.
    pub(crate) tier: &'static str,
    /// Requests sent.
    pub(crate) offered: u64,
    /// Let through by the gate.
    pub(crate) admitted: u64,
    /// Answered 200.
    pub(crate) succeeded: u64,
    /// Answered 429.
    pub(crate) shed: u64,
    /// Failed otherwise.
    pub(crate) errors: u64,
    /// p50, p95, p99 of the answers that were not 429 (ms).
    pub(crate) p50_ms: Option<f64>,
    /// p95 (ms).
    pub(crate) p95_ms: Option<f64>,
    /// p99 (ms).
    pub(crate) p99_ms: Option<f64>,
}

/// The sum of one tier over the seconds `from..to` (clamped to the timeline).
pub(crate) fn sum(timeline: &Timeline, tier: usize, from: u64, to: u64) -> TierSample {
    let mut out = TierSample::default();
    let to = (to as usize).min(timeline.len());
    for second in timeline.iter().take(to).skip(from as usize) {
        out.add(&second[tier]);
    }
    out
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The rolling window of the recovery figure, in seconds.
pub(crate) const RECOVERY_WINDOW_S: u64 = 3;

/// Is second `s` calm, measured against the calm p95 of each tier?
fn is_calm(second: &[TierSample; 3], calm_p95: &[Option<f64>; 3]) -> bool {
    second.iter().zip(calm_p95).all(|(t, calm)| {
        let latency_ok = match (t.latency.quantile_ms(0.95), calm) {
            (Some(now), Some(calm)) => now <= calm * 1.5,
            _ => true,
        };
        t.shed == 0 && t.errors == 0 && latency_ok
    })
}

/// Seconds with shedding above 1% of the offered load.
fn shedding(second: &[TierSample; 3]) -> bool {
    let offered: u64 = second.iter().map(|t| t.offered).sum();
    let shed: u64 = second.iter().map(|t| t.shed).sum();
    offered > 0 && shed * 100 > offered
}

/// The figures of a run. `gauges` may be empty (not measured); `capacity_rps` is what the
/// backend can serve during the incident; `first_shed_s` is measured by the runner to the
/// millisecond.
pub(crate) fn figures(
    timeline: &Timeline,
    gauges: &[Gauges],
    window: Window,
    capacity_rps: f64,
    first_shed_s: Option<f64>,
) -> Figures {
    let len = timeline.len() as u64;
    let ent_after = sum(timeline, 0, window.onset_s, len);
    let ent_calm = sum(timeline, 0, 0, window.onset_s);
    let ent_incident = sum(timeline, 0, window.onset_s, window.end_s);
    let good: u64 = (0..3)
        .map(|t| sum(timeline, t, window.onset_s, window.end_s).good)
        .sum();
    let incident_s = window.end_s.saturating_sub(window.onset_s).max(1) as f64;
    let goodput_rps = good as f64 / incident_s;
    let shed_before_onset = (0..3)
        .map(|t| sum(timeline, t, 0, window.onset_s).shed)
        .sum();

    // Calm reference: the seconds before the onset, skipping the first (warm-up).
    let calm_p95: [Option<f64>; 3] = std::array::from_fn(|t| {
        sum(timeline, t, 1, window.onset_s)
            .latency
            .quantile_ms(0.95)
    });
    // Recovered from the first second after which every rolling window of RECOVERY_WINDOW_S
    // seconds is calm: one second holds ~15 requests of a tier, too few for a p95 that is
    // not noise (a single slow request fails it; calm weather fails it now and then).
    let mut recovery_s = None;
    for s in (window.end_s..len).rev() {
        let to = (s + RECOVERY_WINDOW_S).min(len);
        let from = s
            .min(to.saturating_sub(RECOVERY_WINDOW_S))
            .max(window.end_s);
        let pooled: [TierSample; 3] = std::array::from_fn(|t| sum(timeline, t, from, to));
        if is_calm(&pooled, &calm_p95) {
            recovery_s = Some(s - window.end_s);
        } else {
            break;
        }
    }

    let mut shed_episodes = 0;
    let mut was = false;
    for second in timeline.iter().skip(window.onset_s as usize) {
        let now = shedding(second);
        if now && !was {
            shed_episodes += 1;
        }
        was = now;
    }

    let totals = TIERS
        .iter()
        .enumerate()
        .map(|(t, tier)| {
            let s = sum(timeline, t, 0, len);
            TierTotals {
                tier,
                offered: s.offered,
                admitted: s.admitted(),
                succeeded: s.succeeded,
                shed: s.shed,
                errors: s.errors,
                p50_ms: s.latency.quantile_ms(0.50),
                p95_ms: s.latency.quantile_ms(0.95),
                p99_ms: s.latency.quantile_ms(0.99),
            }
        })
        .collect();

    let (from, to) = steady(window.onset_s, window.end_s);
    let admitted_cv = std::array::from_fn(|t| {
        let per_second: Vec<f64> = (from..to.min(len))
            .map(|s| timeline[s as usize][t].admitted() as f64)
            .collect();
        cv(&per_second)
    });
    let incident = gauges
        .iter()
        .take(window.end_s as usize)
        .skip(window.onset_s as usize);
    let limits: Vec<u64> = gauges
        .iter()
        .take(to as usize)
        .skip(from as usize)
        .filter_map(|g| g.limit)
        .collect();
    let limit = (!limits.is_empty()).then(|| {
        let mean = limits.iter().sum::<u64>() as f64 / limits.len() as f64;
        let (lo, hi) = (limits.iter().min(), limits.iter().max());
        (mean, *lo.unwrap_or(&0), *hi.unwrap_or(&0))
    });

    Figures {
        enterprise_success_pct: pct(ent_after.succeeded, ent_after.offered),
        enterprise_p99_calm_ms: ent_calm.latency.quantile_ms(0.99),
        enterprise_p99_incident_ms: ent_incident.latency.quantile_ms(0.99),
        goodput_pct: 100.0 * goodput_rps / capacity_rps,
        goodput_rps,
        first_shed_s,
        shed_before_onset,
        recovery_s,
        shed_episodes,
        totals,
        admitted_cv,
        utilisation: mean_of(gauges, window.onset_s, window.end_s, |g| {
            Some(g.utilisation)
        }),
        limit,
        waiting_mean: mean_of(gauges, window.onset_s, window.end_s, |g| {
            g.waiting.map(|w| w as f64)
        }),
        timed_out: incident.filter_map(|g| g.timed_out).reduce(|a, b| a + b),
    }
}

/// Which of the goals a run meets (the surge's goals; other scenarios reuse them as
/// the yardstick).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Goals {
    /// Enterprise success >= 99.9%.
    pub(crate) enterprise_success: bool,
    /// Enterprise p99 during the incident <= 1.5x calm.
    pub(crate) enterprise_p99: bool,
    /// Goodput >= 95% of capacity (issue 14).
    pub(crate) goodput: bool,
    /// First shed within 1 s of the onset (issue 14).
    pub(crate) shed_within_1s: bool,
    /// Recovered within the run, in one shed episode.
    pub(crate) recovery_without_oscillation: bool,
}

/// Checks [`Figures`] against the goals.
pub(crate) fn goals(f: &Figures) -> Goals {
    Goals {
        enterprise_success: f.enterprise_success_pct >= 99.9,
        enterprise_p99: match (f.enterprise_p99_calm_ms, f.enterprise_p99_incident_ms) {
            (Some(calm), Some(incident)) => incident <= 1.5 * calm,
            _ => false,
        },
        goodput: f.goodput_pct >= 95.0,
        shed_within_1s: f.first_shed_s.is_some_and(|s| s <= 1.0),
        recovery_without_oscillation: f.recovery_s.is_some() && f.shed_episodes <= 1,
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.0} ms"))
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

/// A Markdown table, one column per way the scenario ran.
pub(crate) fn markdown_table(runs: &[(&str, &Figures)]) -> String {
    let mut out = String::from("| | ");
    out.push_str(&runs.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" | "));
    out.push_str(" |\n|---|");
    out.push_str(&"---|".repeat(runs.len()));
    out.push('\n');
    type Row = (&'static str, fn(&Figures) -> String);
    let rows: [Row; 13] = [
        ("enterprise success (onset to end)", |f| {
            format!(
                "{:.2}% ({})",
                f.enterprise_success_pct,
                mark(goals(f).enterprise_success)
            )
        }),
        ("enterprise p99 calm", |f| opt_ms(f.enterprise_p99_calm_ms)),
        ("enterprise p99 during the incident", |f| {
            format!(
                "{} ({})",
                opt_ms(f.enterprise_p99_incident_ms),
                mark(goals(f).enterprise_p99)
            )
        }),
        ("goodput (200 within 500 ms) during the incident", |f| {
            format!(
                "{:.0}/s = {:.0}% of capacity ({})",
                f.goodput_rps,
                f.goodput_pct,
                mark(goals(f).goodput)
            )
        }),
        ("onset to first shed", |f| match f.first_shed_s {
            Some(s) => format!("{s:.2} s ({})", mark(goals(f).shed_within_1s)),
            None => "never (missed)".to_owned(),
        }),
        ("shed in calm weather", |f| f.shed_before_onset.to_string()),
        (
            "end of incident to full recovery (3 s windows)",
            |f| match f.recovery_s {
                Some(s) => format!("{s} s"),
                None => "not within the run".to_owned(),
            },
        ),
        ("shed episodes (1 = no oscillation)", |f| {
            format!(
                "{} ({})",
                f.shed_episodes,
                mark(goals(f).recovery_without_oscillation)
            )
        }),
        ("offered / admitted / succeeded / shed / errors", |f| {
            f.totals
                .iter()
                .map(|t| {
                    format!(
                        "{}: {}/{}/{}/{}/{}",
                        t.tier, t.offered, t.admitted, t.succeeded, t.shed, t.errors
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        }),
        ("admitted/s, coefficient of variation (steady part)", |f| {
            TIERS
                .iter()
                .zip(f.admitted_cv)
                .map(|(t, cv)| match cv {
                    Some(cv) => format!("{t}: {cv:.2}"),
                    None => format!("{t}: -"),
                })
                .collect::<Vec<_>>()
                .join("<br>")
        }),
        ("backend utilisation during the incident", |f| {
            f.utilisation
                .map_or("-".to_owned(), |u| format!("{:.0}%", 100.0 * u))
        }),
        ("limit (steady part): mean (lowest-highest)", |f| {
            match f.limit {
                Some((mean, lo, hi)) => format!("{mean:.1} ({lo}-{hi})"),
                None => "-".to_owned(),
            }
        }),
        ("queue: mean waiting / timed out, incident", |f| {
            match (f.waiting_mean, f.timed_out) {
                (Some(w), Some(t)) => format!("{w:.1} / {t}"),
                _ => "-".to_owned(),
            }
        }),
    ];
    for (name, cell) in rows {
        out.push_str("| ");
        out.push_str(name);
        out.push_str(" |");
        for (_, f) in runs {
            out.push(' ');
            out.push_str(&cell(f));
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(offered: u64, shed: u64, errors: u64, latency_ms: u64) -> [TierSample; 3] {
        std::array::from_fn(|_| {
            let mut latency = Histogram::new();
            let answered = offered - shed;
            latency.record_n_micros(latency_ms * 1000, answered);
            TierSample {
                offered,
                succeeded: answered - errors,
                good: if latency_ms <= 500 {
                    answered - errors
                } else {
                    0
                },
                shed,
                errors,
                latency,
            }
        })
    }

    /// 5 calm seconds, 5 of incident, 5 after.
    fn timeline(incident: [TierSample; 3], after: &[[TierSample; 3]]) -> Timeline {
        let mut t: Timeline = (0..5).map(|_| second(10, 0, 0, 100)).collect();
        t.extend((0..5).map(|_| incident.clone()));
        t.extend(after.iter().cloned());
        t
    }

    const W: Window = Window {
        onset_s: 5,
        end_s: 10,
    };

    #[test]
    fn a_clean_shed_and_release() {
        let after: Vec<_> = [second(10, 2, 0, 100), second(10, 0, 0, 100)]
            .into_iter()
            .chain((0..3).map(|_| second(10, 0, 0, 100)))
            .collect();
        let t = timeline(second(30, 20, 0, 120), &after);
        let f = figures(&t, &[], W, 30.0, Some(0.4));
        // enterprise: from the onset, 5 x 30 + 5 x 10 offered, 5 x 20 + 2 shed.
        assert_eq!(f.totals[0].offered, 50 + 150 + 50);
        assert_eq!(f.totals[0].shed, 102);
        assert_eq!(f.totals[0].admitted, 250 - 102);
        let ent_success = 100.0 * (150.0 - 100.0 + 50.0 - 2.0) / 200.0;
        assert!((f.enterprise_success_pct - ent_success).abs() < 1e-9);
        // goodput: 3 tiers x 10 successes per incident second, capacity 30.
        assert!((f.goodput_rps - 30.0).abs() < 1e-9);
        assert!((f.goodput_pct - 100.0).abs() < 1e-9);
        assert_eq!(f.recovery_s, Some(1));
        assert_eq!(f.shed_episodes, 1);
        assert_eq!(f.shed_before_onset, 0);
        let g = goals(&f);
        assert!(g.goodput && g.shed_within_1s && g.recovery_without_oscillation);
        assert!(g.enterprise_p99);
        assert!(!g.enterprise_success);
    }

    #[test]
    fn flapping_is_counted_and_slow_seconds_are_not_calm() {
        let after = [
            second(10, 0, 0, 100),
            second(10, 5, 0, 100),
            second(10, 0, 0, 100),
            second(10, 0, 0, 400),
        ];
        let t = timeline(second(30, 20, 0, 120), &after);
        let f = figures(&t, &[], W, 30.0, None);
        assert_eq!(f.shed_episodes, 2);
        // The last second is 4x the calm p95: never recovered within the run.
        assert_eq!(f.recovery_s, None);
        let g = goals(&f);
        assert!(!g.recovery_without_oscillation && !g.shed_within_1s);
    }

    #[test]
    fn one_slow_request_in_a_calm_second_is_not_a_relapse() {
        // After the incident: calm seconds, one of which holds a single 400 ms answer among
        // ten (its own p95 is 400 ms; over a 3 s window it is one answer in thirty).
        let mut noisy = second(10, 0, 0, 100);
        noisy[1].latency = Histogram::new();
        noisy[1].latency.record_n_micros(100_000, 9);
        noisy[1].latency.record_n_micros(400_000, 1);
        let mut after = vec![second(10, 0, 0, 100); 6];
        after[3] = noisy;
        let t = timeline(second(30, 20, 0, 120), &after);
        assert!(
            !is_calm(&t[13], &[Some(100.0); 3]),
            "one second alone is not calm"
        );
        assert_eq!(figures(&t, &[], W, 30.0, None).recovery_s, Some(0));
        // A window that holds a shed is not calm: recovery waits for it to leave.
        after.extend([
            second(10, 0, 0, 100),
            second(10, 0, 0, 100),
            second(10, 0, 0, 100),
        ]);
        after[4] = second(10, 1, 0, 100);
        let t = timeline(second(30, 20, 0, 120), &after);
        assert_eq!(figures(&t, &[], W, 30.0, None).recovery_s, Some(5));
    }

    #[test]
    fn no_gate_errors_and_slow_answers_are_not_goodput() {
        let t = timeline(second(30, 0, 10, 900), &[second(10, 0, 0, 100)]);
        let f = figures(&t, &[], W, 30.0, None);
        assert_eq!(f.goodput_rps, 0.0);
        assert_eq!(f.shed_episodes, 0);
        assert_eq!(f.recovery_s, Some(0));
        let table = markdown_table(&[("no gate", &f), ("again", &f)]);
        assert!(table.starts_with("| | no gate | again |\n|---|---|---|\n"));
        assert!(table.contains("never (missed)"));
        assert_eq!(table.lines().count(), 2 + 13);
    }

    #[test]
    fn steady_admission_utilisation_and_the_limit() {
        assert_eq!(cv(&[]), None);
        assert_eq!(cv(&[0.0, 0.0]), None);
        assert_eq!(cv(&[5.0; 4]), Some(0.0));
        // Mean 10, population standard deviation 5.
        assert!((cv(&[5.0, 15.0]).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(steady(10, 40), (13, 38));
        assert_eq!(steady(10, 14), (13, 13));

        // 20 s: incident 5..15, steady part 8..13. Enterprise's admitted alternates 20/40 in
        // the steady part only; free is all shed.
        let mut t: Timeline = (0..20).map(|_| second(30, 0, 0, 100)).collect();
        for (s, tiers) in t.iter_mut().enumerate() {
            tiers[0].offered = if (8..13).contains(&s) && s % 2 == 0 {
                20
            } else if (8..13).contains(&s) {
                40
            } else {
                30
            };
            tiers[2].shed = if (5..15).contains(&s) { 30 } else { 0 };
        }
        let gauges: Vec<Gauges> = (0..20u64)
            .map(|s| {
                let incident = (5..15).contains(&s);
                Gauges {
                    pool: 10,
                    busy: if incident { 9.0 } else { 5.0 },
                    utilisation: if incident { 0.9 } else { 0.5 },
                    limit: Some(if s == 9 { 20 } else { 12 }),
                    in_flight: Some(10),
                    waiting: Some(if incident { 4 } else { 0 }),
                    timed_out: Some(if incident { 3 } else { 1 }),
                    ..Gauges::default()
                }
            })
            .collect();
        let w = Window {
            onset_s: 5,
            end_s: 15,
        };
        let f = figures(&t, &gauges, w, 100.0, None);
        // 20, 40, 20, 40, 20 (seconds 8..13): mean 28, standard deviation sqrt(96).
        assert!((f.admitted_cv[0].unwrap() - 96f64.sqrt() / 28.0).abs() < 1e-12);
        assert_eq!(f.admitted_cv[1], Some(0.0));
        assert_eq!(f.admitted_cv[2], None);
        assert!((f.utilisation.unwrap() - 0.9).abs() < 1e-12);
        assert_eq!(f.limit, Some((13.6, 12, 20)));
        assert_eq!(f.waiting_mean, Some(4.0));
        assert_eq!(f.timed_out, Some(30));
        // Not measured: no gauge figure.
        let f = figures(&t, &[], w, 100.0, None);
        assert_eq!((f.utilisation, f.limit, f.timed_out), (None, None, None));
    }
}
