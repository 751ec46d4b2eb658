//! Serving: TCP (loopback by default) and a unix-domain socket, HTTP/1.1 by hyper, with
//! bounds whatever clients send:
//!
//! | bound | past it |
//! |---|---|
//! | `max_connections` open at once (TCP and unix together) | a new connection is closed at once |
//! | `header_read_timeout` for a request's head, and for an idle keep-alive connection | the connection is closed |
//! | `max_body_bytes` | `413` |
//! | `max_body_memory`, the bodies being read at once, all connections together | `503` + `Retry-After` |
//! | `max_tokens` alive | `/v1/admit` answers `429 concurrency_limited` |
//!
//! Shutdown ([`AgentServer::shutdown`], what SIGTERM and ctrl-c do in the binary) stops
//! accepting, lets the requests in flight finish (at most `header_read_timeout`), and
//! removes the unix socket file.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tower_service::Service;
use tracing::{debug, info, warn};

use crate::agent::Agent;

/// A running agent: its listeners and their accept loops.
#[derive(Debug)]
pub struct AgentServer {
    agent: Agent,
    tcp: Option<SocketAddr>,
    unix: Option<PathBuf>,
    stop: watch::Sender<bool>,
    loops: Vec<JoinHandle<()>>,
}

/// A listener the agent accepts on.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl AgentServer {
    /// Bind what the `[agent]` table says (`listen`, `unix_socket`) and serve. A stale
    /// socket file at `unix_socket` is replaced.
    ///
    /// # Errors
    /// An address that cannot be bound.
    pub async fn bind(agent: Agent) -> io::Result<Self> {
        let settings = &agent.inner.settings;
        let tcp = match settings.tcp_listen() {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let unix = match &settings.unix_socket {
            Some(path) => Some(bind_unix(path)?),
            None => None,
        };
        Self::serve(agent, tcp, unix)
    }

    /// Serve on listeners already bound (tests bind `127.0.0.1:0` and a socket in a
    /// temporary directory).
    ///
    /// # Errors
    /// A listener whose address cannot be read.
    pub fn serve(
        agent: Agent,
        tcp: Option<TcpListener>,
        unix: Option<UnixListener>,
    ) -> io::Result<Self> {
        let (stop, _) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(agent.inner.settings.max_connections));
        let app = crate::routes::router(agent.clone());
        let mut loops = Vec::new();
        let mut tcp_addr = None;
        let mut unix_path = None;
        if let Some(l) = tcp {
            tcp_addr = Some(l.local_addr()?);
            loops.push(tokio::spawn(accept_loop(
                Listener::Tcp(l),
                app.clone(),
                permits.clone(),
                agent.inner.settings.header_read_timeout,
                stop.subscribe(),
            )));
        }
        if let Some(l) = unix {
            unix_path = l.local_addr()?.as_pathname().map(Path::to_path_buf);
            loops.push(tokio::spawn(accept_loop(
                Listener::Unix(l),
                app,
                permits,
                agent.inner.settings.header_read_timeout,
                stop.subscribe(),
            )));
        }
        info!(tcp = ?tcp_addr, unix = ?unix_path, "waitstate-agent listening");
        Ok(Self {
            agent,
            tcp: tcp_addr,
            unix: unix_path,
            stop,
            loops,
        })
    }

    /// The TCP address served, if any.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }

    /// `http://<tcp address>`: the `agent_url` for SDKs.
    pub fn url(&self) -> Option<String> {
        self.tcp.map(|a| format!("http://{a}"))
    }

    /// The unix socket served, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        self.unix.as_deref()
    }

    /// The agent served.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Stop accepting, let the requests in flight finish (at most `header_read_timeout`),
    /// remove the unix socket file.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.loops.drain(..) {
            let _ = task.await;
        }
        if let Some(path) = self.unix.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Bind a unix socket, replacing a stale socket file (never another kind of file).
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            use std::os::unix::fs::FileTypeExt;
            let is_socket = std::fs::symlink_metadata(path)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            // A live agent answers a connection: leave it alone.
            if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
                std::fs::remove_file(path)?;
                UnixListener::bind(path)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

async fn accept_loop(
    listener: Listener,
    app: Router,
    permits: Arc<Semaphore>,
    header_read: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = accept(&listener) => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin or stop.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            debug!("max_connections open: connection closed");
            continue;
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match io {
                Accepted::Tcp(s) => serve_connection(s, app, header_read, watcher).await,
                Accepted::Unix(s) => serve_connection(s, app, header_read, watcher).await,
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(header_read, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("connections still open at shutdown: closed");
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(Accepted::Tcp(s))
        }
        Listener::Unix(l) => Ok(Accepted::Unix(l.accept().await?.0)),
    }
}

async fn serve_connection<I>(
    io: I,
    app: Router,
    header_read: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut app = app.clone();
        async move { app.call(req.map(axum::body::Body::new)).await }
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read);
    let conn = http.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        debug!(error = %e, "connection ended");
    }
}
