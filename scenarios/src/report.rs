//! The printed tables and the JSON of a run.

use super::*;

/// A scenario's own figures, as printed lines and JSON: for the pool change, the gate's limit
/// (and the backend's utilisation) before and after it; for the creep, the learned limit of
/// the second minute against the last.
pub(crate) fn own_figures(
    scenario: &Scenario,
    results: &[(Way, Run, stats::Figures)],
) -> (Vec<String>, serde_json::Value) {
    let limit = |g: &Gauges| g.limit.map(|l| l as f64);
    let mut lines = Vec::new();
    let mut json = Vec::new();
    let w = scenario.window();
    if let Some(at) = scenario.pool_change_s() {
        let (before, after) = (stats::steady(w.onset_s, at), stats::steady(at, w.end_s));
        for (way, r, _) in results {
            let mean = |(from, to), f: &dyn Fn(&Gauges) -> Option<f64>| {
                stats::mean_of(&r.gauges, from, to, f)
            };
            let (l0, l1) = (mean(before, &limit), mean(after, &limit));
            let util = |g: &Gauges| Some(g.utilisation);
            let (u0, u1) = (mean(before, &util), mean(after, &util));
            let rose = l0.zip(l1).map(|(a, b)| b > a);
            lines.push(format!(
                "{}: limit with {POOL} connections {} (seconds {}-{}), with {} {} (seconds {}-{}){}; utilisation {} then {}",
                way.name(),
                opt(l0, 1),
                before.0,
                before.1,
                2 * POOL,
                opt(l1, 1),
                after.0,
                after.1,
                match rose {
                    Some(true) => ": rose",
                    Some(false) => ": did not rise",
                    None => "",
                },
                opt(u0.map(|u| 100.0 * u), 0) + "%",
                opt(u1.map(|u| 100.0 * u), 0) + "%",
            ));
            json.push(serde_json::json!({
                "way": way.key(),
                "limit_before": l0, "limit_after": l1, "limit_rose": rose,
                "utilisation_before": u0, "utilisation_after": u1,
                "before_s": before, "after_s": after,
            }));
        }
    }
    if scenario.name == "creep" {
        // The second minute against the last (a tenth of the run each when it is shorter
        // than 10 minutes).
        let span = (w.end_s / 10).clamp(1, 60);
        for (way, r, _) in results {
            let second = stats::mean_of(&r.gauges, span, 2 * span, limit);
            let last = stats::mean_of(&r.gauges, w.end_s - span, w.end_s, limit);
            let ratio = second.zip(last).map(|(a, b)| b / a);
            let met = ratio.is_some_and(|r| (r - 1.0).abs() <= 0.1);
            lines.push(format!(
                "{}: mean limit, seconds {span}-{}: {}; last {span} s: {}; last / second = {} ({})",
                way.name(),
                2 * span,
                opt(second, 1),
                opt(last, 1),
                opt(ratio, 3),
                if met { "met: within 10%" } else { "missed" },
            ));
            json.push(serde_json::json!({
                "way": way.key(), "span_s": span,
                "second_span_limit": second, "last_span_limit": last,
                "ratio": ratio, "within_10pct": met,
            }));
        }
    }
    (lines, serde_json::Value::Array(json))
}

pub(crate) fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Per second (every `every`th), per way: busy connections / pool, and the gate's limit,
/// requests waiting and waiters timed out, where the way has them.
pub(crate) fn gauge_table(results: &[(Way, Run, stats::Figures)], every: u64) -> String {
    let mut out = String::from("| t |");
    for (w, _, _) in results {
        out.push_str(&format!(
            " {}: busy / limit / waiting / timed out |",
            w.key()
        ));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(results.len()));
    out.push('\n');
    let len = results
        .iter()
        .map(|(_, r, _)| r.gauges.len())
        .max()
        .unwrap_or(0);
    for s in (0..len).step_by(every as usize) {
        out.push_str(&format!("| {s} |"));
        for (_, r, _) in results {
            let Some(g) = r.gauges.get(s) else {
                out.push_str(" |");
                continue;
            };
            let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
            out.push_str(&format!(
                " {:.1}/{} / {} / {} / {} |",
                g.busy,
                g.pool,
                n(g.limit),
                n(g.waiting),
                n(g.timed_out)
            ));
        }
        out.push('\n');
    }
    out
}

/// Per second, per tier: the counts and latency percentiles the JSON results hold.
pub(crate) fn timeline_json(timeline: &stats::Timeline) -> Vec<serde_json::Value> {
    timeline
        .iter()
        .enumerate()
        .map(|(s, tiers)| {
            serde_json::json!({
                "t": s,
                "tiers": tiers.iter().zip(TIERS).map(|(t, name)| serde_json::json!({
                    "tier": name,
                    "offered": t.offered,
                    "admitted": t.admitted(),
                    "succeeded": t.succeeded,
                    "shed": t.shed,
                    "errors": t.errors,
                    "p50_ms": t.latency.quantile_ms(0.5),
                    "p95_ms": t.latency.quantile_ms(0.95),
                    "p99_ms": t.latency.quantile_ms(0.99),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}
