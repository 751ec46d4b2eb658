//! `waitstate-agent [--config waitstate.toml] [--listen 127.0.0.1:7300] [--unix PATH]`:
//! the WaitState engine as a sidecar or per-node agent.

use std::path::PathBuf;
use std::process::ExitCode;

use waitstate_agent::{Agent, AgentConfig, AgentServer};

const USAGE: &str = "usage: waitstate-agent [--config <waitstate.toml>] [--listen <addr:port>] [--unix <socket path>]
  --config   the SDK's TOML file (tags, rules, limits, admission, control plane) with an optional [agent] table
  --listen   TCP address (default 127.0.0.1:7300, or [agent] listen)
  --unix     unix-domain socket path (or [agent] unix_socket)";

struct Args {
    config: Option<String>,
    listen: Option<String>,
    unix: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        config: None,
        listen: None,
        unix: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "-c" | "--config" => out.config = Some(value()?),
            "-l" | "--listen" => out.listen = Some(value()?),
            "-u" | "--unix" => out.unix = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.to_owned()),
            "-V" | "--version" => {
                return Err(format!("waitstate-agent {}", env!("CARGO_PKG_VERSION")));
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    Ok(out)
}

/// Ctrl-C, or SIGTERM (what `kill` and container runtimes send).
async fn stopped() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            eprintln!("waitstate-agent: cannot wait for SIGTERM ({e}); waiting for ctrl-c");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let mut config = match &args.config {
        Some(path) => match AgentConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("waitstate-agent: {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => AgentConfig::default(),
    };
    if args.listen.is_some() {
        config.agent.listen = args.listen;
    }
    if args.unix.is_some() {
        config.agent.unix_socket = args.unix;
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    // One process per node, a few cores of work at most: two worker threads keep the
    // agent small (the engine's hot path does not need more).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("waitstate-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let agent = match Agent::new(config) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("waitstate-agent: {e}");
                return ExitCode::from(2);
            }
        };
        let server = match AgentServer::bind(agent).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("waitstate-agent: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(url) = server.url() {
            eprintln!("waitstate-agent: agent_url = {url}");
        }
        if let Some(path) = server.unix_path() {
            eprintln!("waitstate-agent: unix socket {}", path.display());
        }
        stopped().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}
