//! The README's nginx `auth_request` snippet, for real: nginx in front of a backend, asking
//! the agent's `/authz`. Skipped, with a message, when no `nginx` binary is installed
//! (Debian: `apt-get install nginx-light`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use waitstate_agent::{Agent, AgentConfig, AgentServer};

/// The README's snippet, with the ports of this run.
fn nginx_conf(dir: &std::path::Path, listen: u16, backend: u16, agent: u16) -> String {
    let d = dir.display();
    format!(
        r#"
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    upstream backend {{ server 127.0.0.1:{backend}; }}
    upstream waitstate_agent {{ server 127.0.0.1:{agent}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            auth_request /_waitstate;
            auth_request_set $waitstate_status $upstream_status;
            auth_request_set $waitstate_retry_after $upstream_http_retry_after;
            auth_request_set $waitstate_reason $upstream_http_x_waitstate_reason;
            # auth_request turns any answer but 2xx/401/403 into a 500: catch it.
            error_page 500 = @waitstate_refused;
            proxy_pass http://backend;
        }}
        location = /_waitstate {{
            internal;
            proxy_pass http://waitstate_agent/authz;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }}
        location @waitstate_refused {{
            default_type application/json;
            if ($waitstate_status = 429) {{
                add_header Retry-After $waitstate_retry_after always;
                return 429 '{{"error":"rate_limited","reason":"$waitstate_reason","retryAfter":$waitstate_retry_after}}\n';
            }}
            # The agent did not answer: fail open.
            proxy_pass http://backend;
        }}
    }}
}}
"#
    )
}

fn nginx_binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
    candidates.map(|d| d.join("nginx")).find(|p| p.is_file())
}

/// A backend that answers every request `200 backend ok`.
async fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nbackend ok\n";
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// One GET through nginx (a fresh connection, `connection: close`): the whole answer.
async fn get(port: u16, path: &str, headers: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_sheds_with_429_and_retry_after() {
    let Some(nginx) = nginx_binary() else {
        println!(
            "SKIPPED: nginx is not installed (Debian: `apt-get install nginx-light`); the \
             README's auth_request snippet is not exercised."
        );
        return;
    };
    let dir = std::env::temp_dir().join(format!("waitstate-agent-nginx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();

    let config = AgentConfig::from_toml_str(
        "[tags]\nenterprise = 100\nfree = 10\n[agent.authz]\npaths = { \"/search\" = \"free\" }\n",
    )
    .unwrap();
    let agent = Agent::new(config).unwrap();
    let server = AgentServer::serve(
        agent.clone(),
        Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        None,
    )
    .unwrap();
    let backend = backend().await;
    let listen = {
        // A free port for nginx (it cannot be handed a bound socket).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = dir.join("nginx.conf");
    let agent_port = server.local_addr().unwrap().port();
    std::fs::write(&conf, nginx_conf(&dir, listen, backend, agent_port)).unwrap();
    let mut child = tokio::process::Command::new(&nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-g")
        .arg("daemon off;")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx starts");
    // Wait for nginx to listen (an external process: polled, a bounded number of times).
    let mut up = false;
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", listen)).await.is_ok() {
            up = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err).await;
            }
            panic!("nginx exited ({status}): {err}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "nginx did not listen on {listen}");

    let a = get(listen, "/search?q=shoes", "").await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.ends_with("backend ok\n"), "{a}");

    let mut p = waitstate_core::Policy::default();
    p.tag_max_weights.insert("free".into(), 0.0);
    agent
        .waitstate()
        .engine()
        .set_remote_policy(Some(p))
        .unwrap();
    let a = get(listen, "/search?q=shoes", "").await;
    assert!(a.starts_with("HTTP/1.1 429"), "{a}");
    assert!(a.contains("\r\nRetry-After: 1\r\n"), "{a}");
    assert!(a.contains(r#""reason":"tag_blocked""#), "{a}");
    assert!(!a.contains("backend ok"), "{a}");
    // Another path, and a tag header, pass.
    assert!(get(listen, "/orders", "").await.ends_with("backend ok\n"));
    let a = get(listen, "/search", "x-waitstate-tag: enterprise\r\n").await;
    assert!(a.ends_with("backend ok\n"), "{a}");

    // The agent gone: nginx fails open.
    server.shutdown().await;
    let a = get(listen, "/search", "").await;
    assert!(a.starts_with("HTTP/1.1 200"), "fail-open: {a}");

    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(dir);
}
