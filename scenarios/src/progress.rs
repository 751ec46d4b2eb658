//! A progress bar per run with the time left (`indicatif`): every run lasts a known time,
//! so the bar follows the clock. On a terminal only; piped or in CI, one plain line per run.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// The bar shown now, so that [`note`] prints above it instead of through it.
static CURRENT: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Print a line without breaking the bar (e.g. where the dashboard is).
pub(crate) fn note(line: &str) {
    match &*CURRENT.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(bar) if !bar.is_hidden() => bar.println(line),
        _ => eprintln!("{line}"),
    }
}

/// Run `work`, a run of `name` that takes about `about`, with a bar of its progress.
pub(crate) async fn run<T>(name: &str, about: Duration, work: impl Future<Output = T>) -> T {
    let bar = ProgressBar::with_draw_target(
        Some(about.as_millis().max(1) as u64),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>22} [{wide_bar}] {elapsed:>4} / ~{len_s}, {eta} left",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "len_s",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}s", s.len().unwrap_or(0) / 1000);
            },
        )
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_owned());
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
    let start = Instant::now();
    let ticking = bar.clone();
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            every.tick().await;
            ticking.set_position(start.elapsed().as_millis() as u64);
        }
    });
    let out = work.await;
    ticker.abort();
    let took = start.elapsed();
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = None;
    if bar.is_hidden() {
        eprintln!("{name}: done in {:.0} s", took.as_secs_f64());
    } else {
        bar.finish_and_clear();
        eprintln!("{name}: done in {:.0} s", took.as_secs_f64());
    }
    out
}
