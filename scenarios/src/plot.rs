//! One PNG per scenario: a column per way it ran; on top, p99 latency per tier over time;
//! below, successes per second per tier with the offered load; when the backend and the gate
//! were sampled, a third row: the gate's limit, requests waiting, busy connections and the
//! pool's size. The incident is shaded.
//!
//! Drawn with plotters' bitmap backend only; text comes from font8x8's 8x8 glyphs (public
//! domain), drawn pixel by pixel, so no font file or system library is involved.

use std::path::Path;

use font8x8::legacy::BASIC_LEGACY;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::stats::{Gauges, TIERS, Timeline, Window};

/// One column of the figure.
#[derive(Debug)]
pub(crate) struct Panel<'a> {
    /// The way the scenario ran.
    pub(crate) title: &'a str,
    /// Its samples.
    pub(crate) timeline: &'a Timeline,
    /// The backend and the gate per second (empty: not sampled, no third row).
    pub(crate) gauges: &'a [Gauges],
}

const WIDTH: u32 = 1500;
const HEIGHT: u32 = 860;
const COLORS: [RGBColor; 3] = [
    RGBColor(31, 90, 200),  // enterprise: blue
    RGBColor(230, 140, 20), // pro: orange
    RGBColor(200, 40, 40),  // free: red
];
const GREY: RGBColor = RGBColor(150, 150, 150);
const LIGHT: RGBColor = RGBColor(225, 225, 225);
const SHADE: RGBColor = RGBColor(255, 236, 236);
/// Latencies above this are drawn at it (the pool timeout is 1 s, the client's 5 s).
const LATENCY_CAP_MS: f64 = 2000.0;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Error = Box<dyn std::error::Error>;

/// Writes `text` with its top-left corner at `(x, y)` (absolute pixels), `scale` pixels per
/// glyph dot.
fn text(
    root: &Area<'_>,
    x: i32,
    y: i32,
    s: &str,
    scale: i32,
    color: &RGBColor,
) -> Result<(), Error> {
    for (i, c) in s.chars().enumerate() {
        let glyph = BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or(BASIC_LEGACY[b'?' as usize]);
        let left = x + i as i32 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (left + col * scale, y + row as i32 * scale);
                    for dx in 0..scale {
                        for dy in 0..scale {
                            root.draw_pixel((px + dx, py + dy), color)?;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn text_width(s: &str, scale: i32) -> i32 {
    s.chars().count() as i32 * 8 * scale
}

/// A "nice" step for about `n` grid lines up to `max`.
fn step(max: f64, n: f64) -> f64 {
    let raw = max / n;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// One chart: series per tier (and an optional grey series), the incident shaded, a grid
/// with labelled values.
#[allow(clippy::too_many_arguments)]
fn chart(
    root: &Area<'_>,
    area: &Area<'_>,
    label: &str,
    x_max: f64,
    y_max: f64,
    window: Window,
    series: &[Vec<(f64, f64)>; 3],
    grey: Option<&[(f64, f64)]>,
) -> Result<(), Error> {
    let mut c = ChartBuilder::on(area)
        .margin_left(56)
        .margin_right(12)
        .margin_top(22)
        .margin_bottom(24)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    c.draw_series(std::iter::once(Rectangle::new(
        [(window.onset_s as f64, 0.0), (window.end_s as f64, y_max)],
        SHADE.filled(),
    )))?;
    let ys = step(y_max, 5.0);
    let mut y = 0.0;
    while y <= y_max + 1e-9 {
        c.draw_series(LineSeries::new([(0.0, y), (x_max, y)], LIGHT))?;
        let (px, py) = c.backend_coord(&(0.0, y));
        let t = format!("{y:.0}");
        text(root, px - 6 - text_width(&t, 1), py - 4, &t, 1, &BLACK)?;
        y += ys;
    }
    let xs = step(x_max, 8.0);
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        c.draw_series(LineSeries::new([(x, 0.0), (x, y_max)], LIGHT))?;
        let (px, py) = c.backend_coord(&(x, 0.0));
        let t = format!("{x:.0}");
        text(root, px - text_width(&t, 1) / 2, py + 6, &t, 1, &BLACK)?;
        x += xs;
    }
    if let Some(g) = grey {
        c.draw_series(LineSeries::new(g.iter().copied(), GREY.stroke_width(2)))?;
    }
    for (s, color) in series.iter().zip(COLORS) {
        // One line per run of consecutive seconds: a second with no value (no answer of that
        // tier: all of it shed) is a gap, not a straight line across it.
        for run in s.chunk_by(|a, b| b.0 - a.0 < 1.5) {
            c.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2)))?;
        }
    }
    c.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (x_max, y_max)],
        BLACK.stroke_width(1),
    )))?;
    let (px, py) = c.backend_coord(&(0.0, y_max));
    text(root, px, py - 14, label, 1, &BLACK)?;
    Ok(())
}

/// Renders the figure of one scenario to `path`.
pub(crate) fn render(
    path: &Path,
    title: &str,
    window: Window,
    capacity_rps: f64,
    panels: &[Panel<'_>],
) -> Result<(), Error> {
    let gauged = panels.iter().any(|p| !p.gauges.is_empty());
    let height = if gauged { HEIGHT * 3 / 2 } else { HEIGHT };
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    text(&root, 12, 10, title, 2, &BLACK)?;
    // Legend.
    let mut lx = 12;
    for (tier, color) in TIERS.iter().zip(COLORS) {
        root.draw(&Rectangle::new([(lx, 36), (lx + 18, 40)], color.filled()))?;
        text(&root, lx + 24, 34, tier, 1, &BLACK)?;
        lx += 24 + text_width(tier, 1) + 24;
    }
    root.draw(&Rectangle::new([(lx, 36), (lx + 18, 40)], GREY.filled()))?;
    let note = format!(
        "offered, all tiers (req/s)    shaded: the incident    backend capacity {capacity_rps:.0} req/s    x: seconds"
    );
    text(&root, lx + 24, 34, &note, 1, &BLACK)?;

    let body = root.margin(52, 0, 0, 0);
    let columns = body.split_evenly((1, panels.len().max(1)));
    let x_max = panels.iter().map(|p| p.timeline.len()).max().unwrap_or(1) as f64;
    let rate_max = panels
        .iter()
        .flat_map(|p| p.timeline.iter())
        .map(|s| s.iter().map(|t| t.offered).sum::<u64>() as f64)
        .fold(capacity_rps, f64::max)
        * 1.05;
    for (panel, column) in panels.iter().zip(&columns) {
        let (x0, y0) = column.get_base_pixel();
        // Half size when the title would run into the next column.
        let fits = text_width(panel.title, 2) <= column.dim_in_pixel().0 as i32 - 64;
        let scale = if fits { 2 } else { 1 };
        text(&root, x0 + 56, y0 + 2, panel.title, scale, &BLACK)?;
        let inner = column.margin(22, 0, 0, 0);
        let rows = inner.split_evenly((if gauged { 3 } else { 2 }, 1));
        let (top, bottom) = (&rows[0], &rows[1]);
        let mid = |s: usize| s as f64 + 0.5;
        let latency: [Vec<(f64, f64)>; 3] = std::array::from_fn(|t| {
            panel
                .timeline
                .iter()
                .enumerate()
                .filter_map(|(s, tiers)| {
                    tiers[t]
                        .latency
                        .quantile_ms(0.99)
                        .map(|v| (mid(s), v.min(LATENCY_CAP_MS)))
                })
                .collect()
        });
        let y_lat = latency
            .iter()
            .flatten()
            .map(|(_, v)| *v)
            .fold(100.0, f64::max)
            * 1.1;
        chart(
            &root,
            top,
            "p99 latency (ms), answers that were not 429",
            x_max,
            y_lat,
            window,
            &latency,
            None,
        )?;
        let ok: [Vec<(f64, f64)>; 3] = std::array::from_fn(|t| {
            panel
                .timeline
                .iter()
                .enumerate()
                .map(|(s, tiers)| (mid(s), tiers[t].succeeded as f64))
                .collect()
        });
        let offered: Vec<(f64, f64)> = panel
            .timeline
            .iter()
            .enumerate()
            .map(|(s, tiers)| (mid(s), tiers.iter().map(|t| t.offered).sum::<u64>() as f64))
            .collect();
        chart(
            &root,
            bottom,
            "succeeded per second (200 OK) per tier",
            x_max,
            rate_max,
            window,
            &ok,
            Some(&offered),
        )?;
        if gauged {
            concurrency(&root, &rows[2], x_max, window, panel.gauges)?;
        }
    }
    root.present()?;
    Ok(())
}

/// The third row: the gate's limit (blue), requests waiting (orange), busy connections
/// (red), the pool's size (grey), per second.
fn concurrency(
    root: &Area<'_>,
    area: &Area<'_>,
    x_max: f64,
    window: Window,
    gauges: &[Gauges],
) -> Result<(), Error> {
    let mid = |s: usize| s as f64 + 0.5;
    let line = |f: &dyn Fn(&Gauges) -> Option<f64>| -> Vec<(f64, f64)> {
        gauges
            .iter()
            .enumerate()
            .filter_map(|(s, g)| f(g).map(|v| (mid(s), v)))
            .collect()
    };
    let series = [
        line(&|g| g.limit.map(|l| l as f64)),
        line(&|g| g.waiting.map(|w| w as f64)),
        line(&|g| Some(g.busy)),
    ];
    let pool = line(&|g| Some(g.pool as f64));
    let y_max = series
        .iter()
        .chain([&pool])
        .flatten()
        .map(|(_, v)| *v)
        .fold(10.0, f64::max)
        * 1.1;
    chart(root, area, "", x_max, y_max, window, &series, Some(&pool))?;
    // The label, each word in its line's colour (where `chart` puts its label).
    let (mut x, y) = area.get_base_pixel();
    x += 56;
    let words = [
        ("limit", COLORS[0]),
        ("waiting", COLORS[1]),
        ("busy connections", COLORS[2]),
        ("pool", GREY),
    ];
    for (word, color) in words {
        text(root, x, y + 8, word, 1, &color)?;
        x += text_width(word, 1) + 8;
    }
    Ok(())
}

/// The soak's figure: RSS (MB) on top, the engine's in-flight gauge below, one point per
/// sample (`(t_s, rss_kb, in_flight)`); the warm-up is shaded.
pub(crate) fn render_soak(
    path: &Path,
    title: &str,
    warm_up_s: u64,
    samples: &[(u64, u64, u64)],
) -> Result<(), Error> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT / 2 + 120)).into_drawing_area();
    root.fill(&WHITE)?;
    text(&root, 12, 10, title, 2, &BLACK)?;
    text(
        &root,
        12,
        34,
        "shaded: warm-up (not judged)    x: seconds    one point per 10 s sample",
        1,
        &BLACK,
    )?;
    let body = root.margin(52, 0, 0, 0);
    let (left, right) = body.split_horizontally(WIDTH / 2);
    let x_max = samples.iter().map(|s| s.0).max().unwrap_or(1).max(1) as f64;
    let shade = Window {
        onset_s: 0,
        end_s: warm_up_s,
    };
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.0 as f64, s.1 as f64 / 1024.0))
        .collect();
    let y_rss = rss.iter().map(|p| p.1).fold(1.0, f64::max) * 1.2;
    chart(
        &root,
        &left,
        "RSS of the process (MB): client, server and engine",
        x_max,
        y_rss,
        shade,
        &[rss, Vec::new(), Vec::new()],
        None,
    )?;
    let in_flight: Vec<(f64, f64)> = samples.iter().map(|s| (s.0 as f64, s.2 as f64)).collect();
    let y_in = in_flight.iter().map(|p| p.1).fold(5.0, f64::max) * 1.2;
    chart(
        &root,
        &right,
        "requests in flight (engine gauge)",
        x_max,
        y_in,
        shade,
        &[in_flight, Vec::new(), Vec::new()],
        None,
    )?;
    root.present()?;
    Ok(())
}
