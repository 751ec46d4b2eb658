//! `waitstate-control --config waitstate-control.toml`: the self-hosted control plane.

use std::process::ExitCode;

use waitstate_control::{ControlConfig, ControlServer};

const USAGE: &str = "usage: waitstate-control --config <waitstate-control.toml>";

fn config_path() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => path = args.next(),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "-V" | "--version" => {
                return Err(format!("waitstate-control {}", env!("CARGO_PKG_VERSION")));
            }
            other => match other.strip_prefix("--config=") {
                Some(p) => path = Some(p.to_owned()),
                None => return Err(format!("unknown argument `{other}`\n{USAGE}")),
            },
        }
    }
    path.ok_or_else(|| USAGE.to_owned())
}

/// Ctrl-C, or SIGTERM on Unix (what `kill` and container runtimes send).
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("waitstate-control: cannot wait for Ctrl-C: {e}");
    }
}

/// Logs on stderr: the level from `RUST_LOG` (default `info`, e.g.
/// `RUST_LOG=info,waitstate::rule=debug`), one JSON object per line when
/// `WAITSTATE_LOG_FORMAT=json` (for log collectors), text otherwise.
fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("WAITSTATE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logs();
    let path = match config_path() {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let config = match ControlConfig::from_file(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("waitstate-control: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let listen = config.server.listen.clone();
    let server = match ControlServer::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("waitstate-control: cannot serve on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    stopped().await;
    tracing::info!("shutting down");
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("waitstate-control: {e}");
            ExitCode::FAILURE
        }
    }
}
