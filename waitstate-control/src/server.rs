//! The server's lifecycle: bind, serve the routes, tick the fleet rules, shut down.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::ControlConfig;
use crate::routes::router;
use crate::state::AppState;

/// A running control plane: the HTTP server and the task evaluating the fleet rules.
#[derive(Debug)]
pub struct ControlServer {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
    ticker: JoinHandle<()>,
}

impl ControlServer {
    /// Bind `server.listen` and serve.
    ///
    /// # Errors
    /// The address cannot be bound, or no random key can be made.
    pub async fn bind(config: ControlConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(&config.server.listen).await?;
        Ok(Self::serve(listener, AppState::new(config)?))
    }

    /// Serve `state` on a bound listener (tests bind `127.0.0.1:0`).
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn serve(listener: TcpListener, state: AppState) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        let tick = state.config().engine.tick;
        let ticking = state.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                ticking.tick();
            }
        });
        let config = state.config();
        if config.engine.window < config.server.pulse_interval * 2 {
            warn!(
                window = ?config.engine.window,
                pulse_interval = ?config.server.pulse_interval,
                "the fleet window is shorter than two pulse intervals: fleet metrics will be jumpy (set `window` higher)"
            );
        }
        info!(%addr, keys = config.keys.len(), rules = config.engine.rules.len(), "waitstate-control listening");
        Self {
            addr,
            state,
            stop: Some(tx),
            server: Some(server),
            ticker,
        }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, the `base_url` for SDKs.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its state (fleets, configuration).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stop accepting, finish the requests in flight, close every connection.
    ///
    /// # Errors
    /// What the server loop ended with.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.ticker.abort();
        match self.server.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.ticker.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
