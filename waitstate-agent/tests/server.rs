//! The served agent: TCP on loopback, a unix socket, keep-alive, bounds, shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use waitstate_agent::{Agent, AgentConfig, AgentServer};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("waitstate-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Send raw HTTP/1.1 requests on one connection and read `n` answers' heads and bodies.
async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S, request: &str) -> String {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    // Read until the answer's body (content-length) is complete.
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some((head, body)) = got.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    got
}

fn gate(tag: &str) -> String {
    let body = format!(r#"{{"tag":"{tag}","weight":1.0}}"#);
    format!(
        "POST /gate HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn serves_tcp_and_a_unix_socket_and_shuts_down_cleanly() {
    let dir = temp_dir("serve");
    let sock = dir.join("agent.sock");
    let agent =
        Agent::new(AgentConfig::from_toml_str("[tags]\nfree = 10\npro = 50\n").unwrap()).unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let unix = UnixListener::bind(&sock).unwrap();
    let server = AgentServer::serve(agent, Some(tcp), Some(unix)).unwrap();
    let addr = server.local_addr().unwrap();
    assert_eq!(server.url().unwrap(), format!("http://{addr}"));

    // Keep-alive: two requests on one TCP connection.
    let mut c = TcpStream::connect(addr).await.unwrap();
    let a = exchange(&mut c, &gate("free")).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.contains(r#"{"allowed":true,"reason":"allowed"}"#), "{a}");
    let b = exchange(&mut c, &gate("pro")).await;
    assert!(b.starts_with("HTTP/1.1 200"), "{b}");

    let mut u = UnixStream::connect(&sock).await.unwrap();
    let a = exchange(&mut u, &gate("free")).await;
    assert!(a.contains(r#""allowed":true"#), "{a}");
    drop((c, u));

    assert_eq!(
        server
            .agent()
            .waitstate()
            .counters("free")
            .unwrap()
            .admitted,
        2,
        "one engine behind both sockets"
    );
    server.shutdown().await;
    assert!(!sock.exists(), "the socket file is removed");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_connections_are_bounded() {
    let dir = temp_dir("bounds");
    let sock = dir.join("agent.sock");
    // A socket file left behind by a dead agent.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let config = AgentConfig::from_toml_str(&format!(
        "[agent]\nunix_socket = \"{}\"\nmax_connections = 1\n",
        sock.display()
    ))
    .unwrap();
    let server = AgentServer::bind(Agent::new(config).unwrap())
        .await
        .unwrap();
    assert_eq!(
        server.local_addr(),
        None,
        "only the socket when only it is set"
    );

    let mut first = UnixStream::connect(&sock).await.unwrap();
    let a = exchange(&mut first, &gate("free")).await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    // The second connection is closed at once: nothing comes back.
    let mut second = UnixStream::connect(&sock).await.unwrap();
    let _ = second.write_all(gate("free").as_bytes()).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("closed, not hanging")
        .unwrap_or(0);
    assert_eq!(n, 0);
    drop(first);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_live_agents_socket_is_not_taken_over() {
    let dir = temp_dir("live");
    let sock = dir.join("agent.sock");
    let config = format!("[agent]\nunix_socket = \"{}\"\n", sock.display());
    let one = AgentServer::bind(Agent::new(AgentConfig::from_toml_str(&config).unwrap()).unwrap())
        .await
        .unwrap();
    let two =
        AgentServer::bind(Agent::new(AgentConfig::from_toml_str(&config).unwrap()).unwrap()).await;
    assert!(two.is_err(), "one process per node");
    one.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `GET /v1/status`'s JSON.
async fn status(addr: std::net::SocketAddr) -> serde_json::Value {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let got = exchange(
        &mut c,
        "GET /v1/status HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n",
    )
    .await;
    let body = got.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn request_bodies_share_one_memory_budget() {
    let config = AgentConfig::from_toml_str(
        "[tags]\nfree = 10\n[agent]\nmax_body_bytes = 1024\nmax_body_memory = 2048\n",
    )
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = AgentServer::serve(Agent::new(config).unwrap(), Some(tcp), None).unwrap();
    let addr = server.local_addr().unwrap();
    let body = r#"{"tag":"free","weight":1.0}"#;
    let head = |len: usize| {
        format!(
            "POST /gate HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    // Two slow clients announce bodies of 1,000 bytes and send only their heads: the
    // budget (2 KiB) is all reserved while their bodies are awaited.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(head(1000).as_bytes()).await.unwrap();
        slow.push(c);
    }
    let mut reserved = 0;
    for _ in 0..1000 {
        reserved = status(addr).await["bodyMemoryKib"]["reserved"]
            .as_u64()
            .unwrap();
        if reserved == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(reserved, 2, "both slow bodies hold their reservation");
    // A third request with a body finds no room: 503 at once, its body never read.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let refused = exchange(&mut third, &gate("free")).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(refused.contains(r#""error":"busy""#), "{refused}");
    // Requests without a body are not held back.
    assert_eq!(status(addr).await["bodyMemoryKib"]["max"], 2);
    // The slow bodies arrive (padded to the length announced): both are served, and the
    // memory is given back.
    for c in &mut slow {
        let padded = format!("{body:<1000}");
        let got = exchange(c, &padded).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    }
    let mut after = TcpStream::connect(addr).await.unwrap();
    let served = exchange(&mut after, &gate("free")).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert_eq!(status(addr).await["bodyMemoryKib"]["reserved"], 0);
    server.shutdown().await;
}

#[test]
fn the_body_budget_must_hold_one_body() {
    let err =
        AgentConfig::from_toml_str("[agent]\nmax_body_bytes = 4096\nmax_body_memory = 2048\n")
            .unwrap_err();
    assert!(err.to_string().contains("max_body_memory"), "{err}");
}
