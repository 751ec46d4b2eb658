//! tower, axum and actix-web answer alike: the parity table of `waitstate_tests::parity`,
//! over plain HTTP and gRPC, in virtual time.

use std::collections::BTreeMap;
use std::sync::Arc;

use waitstate_core::Reason;
use waitstate_tests::parity::{self, ADAPTERS, Answer, Case, Expect, HANDLER_CONTENT_TYPE};

/// What `case` must answer, from what the first adapter put in its extensions.
#[track_caller]
fn expected(case: &Case, grpc: bool, first: &Answer) -> Answer {
    match case.expect {
        Expect::Rejected(reason) => {
            let seen = first
                .rejection
                .as_ref()
                .unwrap_or_else(|| panic!("{}: no rejection in {first:?}", case.name));
            assert_eq!(seen.0.reason(), reason, "{}", case.name);
            Answer::rendered(&seen.0, grpc, case.kill_signal_status())
        }
        Expect::Admitted(..) | Expect::Exempt => {
            let (body, dry) = match case.expect {
                Expect::Admitted(tag, weight, dry) => (format!("{tag} {weight} {dry:?}"), dry),
                _ => ("exempt".to_owned(), None),
            };
            let mut headers =
                BTreeMap::from([("content-type".to_owned(), HANDLER_CONTENT_TYPE.to_owned())]);
            if let Some(reason) = dry {
                headers.insert(
                    waitstate_core::adapter::DRY_RUN_HEADER.to_owned(),
                    reason.as_str().to_owned(),
                );
            }
            Answer {
                status: 200,
                headers,
                body,
                rejection: None,
            }
        }
    }
}

async fn check_table(grpc: bool) {
    tokio::time::pause();
    let kind = if grpc { "gRPC" } else { "HTTP" };
    for case in parity::cases() {
        let answers = parity::run(&case, grpc).await;
        let want = expected(&case, grpc, &answers[0].0);
        for (name, (got, _)) in ADAPTERS.iter().zip(&answers) {
            assert_eq!(got, &want, "{kind} {}: {name}", case.name);
        }
        for (name, (_, prepared)) in ADAPTERS.iter().zip(answers) {
            let held = prepared.held.len() as u64;
            drop(prepared.held);
            assert_eq!(
                prepared.ws.in_flight(),
                0,
                "{kind} {}: {name} released the request's slot (and {held} held)",
                case.name
            );
        }
    }
}

#[actix_web::test]
async fn every_adapter_answers_http_alike() {
    check_table(false).await;
}

#[actix_web::test]
async fn every_adapter_answers_grpc_alike() {
    check_table(true).await;
}

#[test]
fn the_table_covers_every_reason() {
    let covered: Vec<Reason> = parity::cases()
        .iter()
        .filter_map(|c| match c.expect {
            Expect::Rejected(r) => Some(r),
            _ => None,
        })
        .collect();
    for reason in Reason::ALL {
        assert!(covered.contains(&reason), "no case rejects with {reason}");
    }
    assert!(
        parity::cases()
            .iter()
            .any(|c| matches!(c.expect, Expect::Admitted(_, _, None)))
    );
}

/// One tagger value serves tower and actix-web at once (moved from `waitstate-actix`: it
/// crosses crates).
#[actix_web::test]
async fn one_header_tagger_value_serves_tower_and_actix() {
    use actix_web::{App, HttpResponse, test, web};
    use tower::{ServiceBuilder, ServiceExt};
    tokio::time::pause();
    let case = parity::cases()
        .into_iter()
        .find(|c| c.name == "tag_blocked")
        .unwrap();
    let ws = parity::prepare(&case).await.ws;
    // One tagger value, shared by both stacks.
    let tagger = Arc::new(parity::tagger());

    let tower_app = ServiceBuilder::new()
        .layer(waitstate_tower::GateLayer::new(ws.clone(), tagger.clone()))
        .service(tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from("ok"),
            )))
        }));
    let actix_app = test::init_service(
        App::new()
            .wrap(waitstate_actix::Gate::new(ws.clone(), tagger.clone()))
            .default_service(web::to(|| async { HttpResponse::Ok().body("ok") })),
    )
    .await;

    for (tag, weight, status) in [("free", "1", 429), ("pro", "1", 200), ("pro", "NaN", 429)] {
        let t = tower_app
            .clone()
            .oneshot(
                http::Request::get("/")
                    .header(parity::TAG_HEADER, tag)
                    .header(parity::WEIGHT_HEADER, weight)
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        let a = test::call_service(
            &actix_app,
            test::TestRequest::get()
                .insert_header((parity::TAG_HEADER, tag))
                .insert_header((parity::WEIGHT_HEADER, weight))
                .to_request(),
        )
        .await;
        assert_eq!(t.status().as_u16(), status, "tower {tag} {weight}");
        assert_eq!(a.status().as_u16(), status, "actix {tag} {weight}");
        if status == 429 {
            assert_eq!(
                t.headers()["retry-after"].as_bytes(),
                a.headers().get("retry-after").unwrap().as_bytes()
            );
            let t_body = http_body_util::BodyExt::collect(t.into_body())
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(t_body, test::read_body(a).await, "the same JSON body");
        }
    }
    assert_eq!(ws.in_flight(), 0);
}
