//! The peer's address as the cohort, over a real socket: axum's `ConnectInfo` (served with
//! `into_make_service_with_connect_info`) reaches `PeerCohort`, so throttling turns away
//! the same clients each time, by IP.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use waitstate_axum::{Admitted, GateLayer, HeaderTagger, PeerCohort, WaitState, cohort_of};

#[tokio::test]
async fn the_peer_ip_from_connect_info_is_the_cohort() {
    let ws = WaitState::builder().tag("free", 10).build().unwrap();
    let app = Router::new()
        .route(
            "/",
            get(|Admitted(a): Admitted| async move { format!("{:?}", a.cohort) }),
        )
        .layer(GateLayer::new(ws, PeerCohort::new(HeaderTagger::new())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let body = reqwest_free_get(addr).await;
    // The cohort is the hash of the peer's IP (127.0.0.1's octets), not of its port.
    let expected = format!("{:?}", Some(cohort_of(&[127, 0, 0, 1])));
    assert_eq!(body, expected);
    server.abort();
}

/// One HTTP/1.1 GET over a plain TCP stream: the body.
async fn reqwest_free_get(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-waitstate-tag: free\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
}
