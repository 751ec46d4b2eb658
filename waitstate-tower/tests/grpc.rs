//! tonic end to end on 127.0.0.1: the interceptor and the layer on a real server, and a
//! tonic `Channel` behind the polite client carrying the tag as metadata.
#![cfg(all(feature = "tonic", feature = "client"))]

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;
use waitstate_core::tagger::current;
use waitstate_core::{Policy, WaitState};
use waitstate_tower::client::{ClientLayer, ClientService};
use waitstate_tower::{Admission, GateInterceptor, GateLayer, GrpcTagger};

fn ws() -> WaitState {
    WaitState::builder()
        .tag("enterprise", 100)
        .tag("free", 10)
        .tag("watch", 1)
        .build()
        .unwrap()
}

fn tagger() -> GrpcTagger {
    GrpcTagger::new("free")
        .method("/grpc.health.v1.Health/Watch", "watch", 1.0)
        .metadata_key("x-waitstate-tag")
}

async fn server(ws: WaitState, intercepted: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = TcpIncoming::from(listener);
    tokio::spawn(async move {
        let _reporter = _reporter;
        if intercepted {
            let gated = InterceptedService::new(health, GateInterceptor::new(ws, tagger()));
            Server::builder()
                .add_service(gated)
                .serve_with_incoming(incoming)
                .await
        } else {
            Server::builder()
                .layer(GateLayer::new(ws, tagger()))
                .add_service(health)
                .serve_with_incoming(incoming)
                .await
        }
    });
    addr
}

async fn polite_client(addr: SocketAddr) -> HealthClient<ClientService<Channel>> {
    let channel = Endpoint::try_from(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(
        ServiceBuilder::new()
            .layer(ClientLayer::new().throttling(false))
            .service(channel),
    )
}

fn admission(ws: &WaitState, tag: &str) -> Admission {
    let permit = ws.admit(tag, 1.0).unwrap();
    Admission::new(permit.tag(), 1.0, None)
}

async fn check(client: &mut HealthClient<ClientService<Channel>>) -> Result<(), tonic::Status> {
    let req = HealthCheckRequest {
        service: String::new(),
    };
    client.check(req).await.map(|_| ())
}

#[tokio::test]
async fn the_interceptor_gates_by_the_propagated_tag_and_the_client_backs_off() {
    let down = ws();
    let addr = server(down.clone(), true).await;
    let mut client = polite_client(addr).await;
    let upstream = ws();

    // A handler serving an enterprise request calls downstream: the Channel carries the
    // tag as metadata, the interceptor admits it as enterprise.
    current::scope(admission(&upstream, "enterprise"), check(&mut client))
        .await
        .unwrap();
    assert_eq!(down.counters("enterprise").unwrap().offered(), 1);
    assert_eq!(down.in_flight(), 0, "the permit ended with the call");

    let mut policy = Policy::default();
    policy.tag_max_weights.insert("free".into(), 0.0);
    down.engine().set_remote_policy(Some(policy)).unwrap();
    let status = current::scope(admission(&upstream, "free"), check(&mut client))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("tag_blocked"), "{status:?}");
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_some());

    // The server pushed back on free: the next free call is answered by the client.
    let status = current::scope(admission(&upstream, "free"), check(&mut client))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("backing off"), "{status:?}");
    assert_eq!(down.counters("free").unwrap().rejected_total(), 1);
    // Enterprise still passes.
    current::scope(admission(&upstream, "enterprise"), check(&mut client))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_layer_tags_by_method() {
    let down = ws();
    let addr = server(down.clone(), false).await;
    let mut client = polite_client(addr).await;
    let req = HealthCheckRequest {
        service: String::new(),
    };
    let stream = client.watch(req).await.unwrap();
    drop(stream);
    assert_eq!(
        down.counters("watch").unwrap().offered(),
        1,
        "Watch is `watch`"
    );
    let mut policy = Policy::default();
    policy.tag_max_weights.insert("watch".into(), 0.0);
    down.engine().set_remote_policy(Some(policy)).unwrap();
    let req = HealthCheckRequest {
        service: String::new(),
    };
    let status = current::scope(admission(&ws(), "enterprise"), client.watch(req))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "per method, whoever calls"
    );
    current::scope(admission(&ws(), "enterprise"), check(&mut client))
        .await
        .unwrap();
}
