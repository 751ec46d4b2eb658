//! A raw HTTP/1.1 client for the examples' socket tests: what a real client puts on the
//! wire, without a client library.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 request over raw TCP (with an `x-waitstate-tag`); the whole response,
/// lower-cased.
pub(crate) async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    tag: &str,
) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nx-waitstate-tag: {tag}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.to_ascii_lowercase()
}

/// The response (lower-cased, as [`send`] returns it) has this status.
#[track_caller]
pub(crate) fn assert_status(res: &str, status: u16) {
    assert!(res.starts_with(&format!("http/1.1 {status} ")), "{res}");
}
