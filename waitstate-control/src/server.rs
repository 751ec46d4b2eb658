//! The server's lifecycle: bind, serve the routes, tick the fleet rules, shut down.
//!
//! Connections are served by hyper's HTTP/1 server directly (not `axum::serve`, which has
//! no bound on a slow client), with these bounds from `[server]`:
//!
//! | bound | what happens past it |
//! |---|---|
//! | `max_connections` open at once | a new connection is closed at once (`waitstate_connections_refused_total`) |
//! | `header_read_timeout` for a TLS handshake, and for a whole request head (also: an idle keep-alive connection) | the connection is closed |
//! | `request_timeout` for a request, its body read included | `408 {"error":"timeout"}`, connection closed (`waitstate_requests_timed_out_total`) |
//! | `max_body_bytes` | `413` |
//!
//! With `tls_cert` and `tls_key`, every connection is TLS (rustls, TLS 1.2 and 1.3, the
//! `ring` provider); there is no plain listener beside it.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;
use tracing::{debug, error, info, warn};

use crate::config::{ControlConfig, ServerConfig};
use crate::routes::router;
use crate::state::AppState;

/// A running control plane: the HTTP server and the task evaluating the fleet rules.
#[derive(Debug)]
pub struct ControlServer {
    addr: SocketAddr,
    https: bool,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<io::Result<()>>>,
    ticker: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// Bind `server.listen` and serve.
    ///
    /// # Errors
    /// The TLS certificate or key cannot be read, the address cannot be bound, or no random
    /// key can be made.
    pub async fn bind(config: ControlConfig) -> io::Result<Self> {
        let tls = tls_acceptor(&config.server)?;
        let listener = TcpListener::bind(&config.server.listen).await?;
        Ok(Self::start(listener, AppState::connect(config).await?, tls))
    }

    /// Serve `state` on a bound listener (tests bind `127.0.0.1:0`), with TLS when the
    /// configuration names a certificate and a key.
    ///
    /// # Errors
    /// The TLS certificate or key cannot be read or do not match.
    pub fn try_serve(listener: TcpListener, state: AppState) -> io::Result<Self> {
        let tls = tls_acceptor(&state.config().server)?;
        Ok(Self::start(listener, state, tls))
    }

    /// Serve `state` on a bound listener (tests bind `127.0.0.1:0`). When TLS is
    /// configured and its files cannot be used, nothing is served (never plain HTTP in its
    /// place): the error is logged and [`ControlServer::shutdown`] returns it. Prefer
    /// [`ControlServer::try_serve`], which returns it at once.
    pub fn serve(listener: TcpListener, state: AppState) -> Self {
        match tls_acceptor(&state.config().server) {
            Ok(tls) => Self::start(listener, state, tls),
            Err(e) => {
                error!(error = %e, "TLS is configured but cannot be used: not serving");
                let mut failed = Self::start_with(listener, state, None, false);
                failed.server = Some(tokio::spawn(async move { Err(e) }));
                failed
            }
        }
    }

    /// Serve `state` without the background tick: the caller closes the fleet windows
    /// with [`AppState::step`] (tests that inject the wall clock and step it).
    ///
    /// # Errors
    /// As [`ControlServer::try_serve`].
    pub fn serve_without_ticks(listener: TcpListener, state: AppState) -> io::Result<Self> {
        let tls = tls_acceptor(&state.config().server)?;
        let mut server = Self::start(listener, state, tls);
        if let Some(t) = server.ticker.take() {
            t.abort();
        }
        Ok(server)
    }

    fn start(listener: TcpListener, state: AppState, tls: Option<TlsAcceptor>) -> Self {
        Self::start_with(listener, state, tls, true)
    }

    fn start_with(
        listener: TcpListener,
        state: AppState,
        tls: Option<TlsAcceptor>,
        accept: bool,
    ) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (tx, rx) = oneshot::channel::<()>();
        let https = tls.is_some();
        let server = accept.then(|| tokio::spawn(accept_loop(listener, state.clone(), tls, rx)));
        let tick = state.config().engine.tick;
        let ticking = state.clone();
        let ticker = tokio::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                ticking.step().await;
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
        info!(%addr, tls = https, keys = config.keys.len(), rules = config.engine.rules.len(), "waitstate-control listening");
        Self {
            addr,
            https,
            state,
            stop: Some(tx),
            server,
            ticker: Some(ticker),
        }
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, or `https://<addr>` with TLS: the `base_url` for SDKs.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Its state (fleets, configuration).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stop accepting, finish the requests in flight (for at most `request_timeout`), close
    /// every connection.
    ///
    /// # Errors
    /// What the server loop ended with.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.state.release().await;
        match self.server.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The TLS acceptor of `tls_cert` and `tls_key`, if both are set.
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or the key does not fit.
pub(crate) fn tls_acceptor(server: &ServerConfig) -> io::Result<Option<TlsAcceptor>> {
    let (Some(cert), Some(key)) = (&server.tls_cert, &server.tls_key) else {
        return Ok(None);
    };
    let bad = |path: &Path, what: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {what}", path.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no PEM certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// The bounds every connection is served with.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    header_read: Duration,
    request: Duration,
}

/// Accept connections until `stop`, each under [`Bounds`] and `max_connections`; then wait
/// (at most `request_timeout`) for the open ones to finish.
async fn accept_loop(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    let server = &state.config().server;
    let bounds = Bounds {
        header_read: server.header_read_timeout,
        request: server.request_timeout,
    };
    let permits = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    let app = router(state.clone());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin or stop.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            state.counters().connection_refused();
            debug!(%peer, "max_connections open: connection closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        let (app, state, tls) = (app.clone(), state.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, app, state, bounds, watcher).await,
                Some(tls) => {
                    match tokio::time::timeout(bounds.header_read, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, app, state, bounds, watcher).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(bounds.request, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open after request_timeout: closed");
    }
    Ok(())
}

/// One connection: HTTP/1 with the header-read bound, every request under the request
/// bound.
async fn serve_connection<I>(
    io: I,
    app: Router,
    state: AppState,
    bounds: Bounds,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut app = app.clone();
        let state = state.clone();
        async move {
            match tokio::time::timeout(bounds.request, app.call(req)).await {
                Ok(answer) => answer,
                Err(_) => {
                    state.counters().timed_out();
                    Ok::<_, Infallible>(timed_out())
                }
            }
        }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read);
    let conn = http.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        debug!(error = %e, "connection ended");
    }
}

/// `408 {"error":"timeout"}`, closing the connection.
fn timed_out() -> Response<Body> {
    let mut r = Response::new(Body::from(r#"{"error":"timeout"}"#));
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}
