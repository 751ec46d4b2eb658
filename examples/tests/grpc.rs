//! The gRPC example answered by a real tonic client: each rejection reason arrives as the
//! gRPC status DESIGN.md names, with a message.

#[path = "../grpc.rs"]
#[allow(dead_code)]
mod grpc;

use tokio::net::TcpListener;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waitstate_core::Policy;

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    tag: &str,
) -> Result<(), tonic::Status> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    req.metadata_mut()
        .insert("x-waitstate-tag", tag.parse().unwrap());
    client.check(req).await.map(|_| ())
}

#[tokio::test]
async fn tonic_client_sees_grpc_statuses() {
    let ws = grpc::waitstate();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(grpc::serve(listener, ws.clone()));
    let channel = tonic::transport::Endpoint::try_from(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    check(&mut client, "free")
        .await
        .expect("open policy: served");

    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    policy.tag_rate_limits.insert("enterprise".into(), 1.0);
    ws.engine().set_remote_policy(Some(policy)).unwrap();

    let status = check(&mut client, "free").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("tag_blocked"), "{status:?}");
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());

    check(&mut client, "enterprise")
        .await
        .expect("within the budget");
    let status = check(&mut client, "enterprise").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("rate_limited"), "{status:?}");

    let mut kill = Policy::default();
    kill.kill_signal = true;
    ws.engine().set_remote_policy(Some(kill)).unwrap();
    let status = check(&mut client, "enterprise").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("kill_signal"));

    assert_eq!(ws.in_flight(), 0);
    server.abort();
}
