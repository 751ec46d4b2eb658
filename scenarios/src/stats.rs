//! The pure part of the runner: a run's per-second samples and the figures of its table.
//! No clock, no I/O: the unit tests below feed it made-up timelines.

use serde::Serialize;
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

/// The figures of a run. `capacity_rps` is what the backend can serve during the incident;
/// `first_shed_s` is measured by the runner to the millisecond.
pub(crate) fn figures(
    timeline: &Timeline,
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
    /// Goodput >= 90% of capacity.
    pub(crate) goodput: bool,
    /// First shed within 2 s of the onset.
    pub(crate) shed_within_2s: bool,
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
        goodput: f.goodput_pct >= 90.0,
        shed_within_2s: f.first_shed_s.is_some_and(|s| s <= 2.0),
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
    let rows: [Row; 9] = [
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
            Some(s) => format!("{s:.2} s ({})", mark(goals(f).shed_within_2s)),
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
        let f = figures(&t, W, 30.0, Some(0.4));
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
        assert!(g.goodput && g.shed_within_2s && g.recovery_without_oscillation);
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
        let f = figures(&t, W, 30.0, None);
        assert_eq!(f.shed_episodes, 2);
        // The last second is 4x the calm p95: never recovered within the run.
        assert_eq!(f.recovery_s, None);
        let g = goals(&f);
        assert!(!g.recovery_without_oscillation && !g.shed_within_2s);
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
        assert_eq!(figures(&t, W, 30.0, None).recovery_s, Some(0));
        // A window that holds a shed is not calm: recovery waits for it to leave.
        after.extend([
            second(10, 0, 0, 100),
            second(10, 0, 0, 100),
            second(10, 0, 0, 100),
        ]);
        after[4] = second(10, 1, 0, 100);
        let t = timeline(second(30, 20, 0, 120), &after);
        assert_eq!(figures(&t, W, 30.0, None).recovery_s, Some(5));
    }

    #[test]
    fn no_gate_errors_and_slow_answers_are_not_goodput() {
        let t = timeline(second(30, 0, 10, 900), &[second(10, 0, 0, 100)]);
        let f = figures(&t, W, 30.0, None);
        assert_eq!(f.goodput_rps, 0.0);
        assert_eq!(f.shed_episodes, 0);
        assert_eq!(f.recovery_s, Some(0));
        let table = markdown_table(&[("no gate", &f), ("again", &f)]);
        assert!(table.starts_with("| | no gate | again |\n|---|---|---|\n"));
        assert!(table.contains("never (missed)"));
        assert_eq!(table.lines().count(), 2 + 9);
    }
}
