//! The hyper example answered over a real socket: a blocked tag gets 429 + Retry-After +
//! JSON, an important one passes.

#[path = "../hyper.rs"]
#[allow(dead_code)]
mod example;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use waitstate_core::Policy;

async fn get(addr: std::net::SocketAddr, path: &str, tag: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: x\r\nx-waitstate-tag: {tag}\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn blocked_free_gets_429_with_retry_after_and_json() {
    let ws = example::waitstate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(example::serve(listener, ws.clone()));

    assert!(get(addr, "/", "free").await.starts_with("HTTP/1.1 200"));
    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    ws.engine().set_remote_policy(Some(policy)).unwrap();

    let res = get(addr, "/", "free").await.to_ascii_lowercase();
    assert!(res.starts_with("http/1.1 429"), "{res}");
    assert!(res.contains("\r\nretry-after: 1\r\n"), "{res}");
    assert!(res.contains("content-type: application/json"), "{res}");
    assert!(
        res.ends_with(
            r#"{"error":"rate_limited","reason":"tag_blocked","retryafter":1,"tag":"free"}"#
        ),
        "{res}"
    );
    assert!(
        get(addr, "/", "enterprise")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        get(addr, "/healthz", "free")
            .await
            .starts_with("HTTP/1.1 200"),
        "exempt"
    );
    assert_eq!(ws.in_flight(), 0);
    server.abort();
}
