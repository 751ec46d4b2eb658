//! A real `redis-server` for the replica tests: started on a free port of 127.0.0.1, in a
//! directory of its own under the system's temp dir, stopped (and restarted on the same
//! port and data) on demand, killed on drop.
//!
//! `scripts/test` installs `redis-server` when it is missing and exports its path in
//! `WAITSTATE_REDIS_SERVER`. Set, a Redis that does not start fails the test; unset (a plain
//! `cargo test`), [`RedisServer::start`] returns `None` and says why, and the test skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The variable naming the `redis-server` binary.
pub const ENV: &str = "WAITSTATE_REDIS_SERVER";

/// A `redis-server` process of this test.
#[derive(Debug)]
pub struct RedisServer {
    binary: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Start one, or `None` (printing why) when [`ENV`] is not set.
    ///
    /// # Panics
    /// When [`ENV`] is set and Redis does not start and answer.
    pub fn start(test: &str) -> Option<Self> {
        let Some(binary) = std::env::var_os(ENV) else {
            eprintln!(
                "{test}: skipped: {ENV} is not set (scripts/test installs redis-server and sets it)"
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir =
            std::env::temp_dir().join(format!("waitstate-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir for Redis");
        let mut server = Self {
            binary: binary.to_string_lossy().into_owned(),
            port,
            dir,
            child: None,
        };
        server.run();
        Some(server)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stop it (SIGKILL: what an outage looks like; the append-only file keeps every write).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, with the same data.
    ///
    /// # Panics
    /// When it does not start and answer.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    fn run(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &self.dir.to_string_lossy(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--logfile",
                "redis.log",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{ENV}={}: cannot start: {e}", self.binary));
        self.child = Some(child);
        // Bounded wait for the first PONG (not a timing asserted).
        for _ in 0..200 {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        panic!(
            "{ENV}={}: Redis did not answer on port {}\n{log}",
            self.binary, self.port
        );
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
