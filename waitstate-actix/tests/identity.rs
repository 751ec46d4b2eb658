//! actix-web: the peer address as cohort, the `Admitted` extractor, `Rejected` as an error.

use actix_web::{App, HttpResponse, http::StatusCode, test, web};
use waitstate_actix::{
    Admitted, ConstTagger, Gate, PeerCohort, Rejected, Rejection, WaitState, cohort_of,
};

#[actix_web::test]
async fn peer_cohort_extractor_and_rejected() {
    let ws = WaitState::builder().tag("free", 10).build().unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(ws.clone()))
            .wrap(Gate::new(
                ws.clone(),
                PeerCohort::new(ConstTagger::new("free")),
            ))
            .route(
                "/",
                web::get().to(|a: Admitted| async move {
                    HttpResponse::Ok().body(format!("{} {:?}", a.tag, a.cohort))
                }),
            )
            .route(
                "/export",
                web::get().to(|ws: web::Data<WaitState>| async move {
                    let _permit = ws.admit("exports", f64::NAN)?;
                    Ok::<_, Rejected>(HttpResponse::Ok().finish())
                }),
            ),
    )
    .await;
    let req = test::TestRequest::get()
        .peer_addr("192.0.2.7:4000".parse().unwrap())
        .to_request();
    let body = test::read_body(test::call_service(&app, req).await).await;
    let expected = format!("free Some({})", cohort_of(&[192, 0, 2, 7]));
    assert_eq!(body, expected.as_bytes());

    let req = test::TestRequest::get().uri("/export").to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().get("retry-after").is_some());
    assert!(res.response().extensions().get::<Rejection>().is_some());
    drop(res); // the gate's slot rides the response body
    assert_eq!(ws.in_flight(), 0);
}

#[actix_web::test]
async fn admitted_without_a_gate_is_a_500() {
    let app = test::init_service(App::new().route(
        "/",
        web::get().to(|_a: Admitted| async { HttpResponse::Ok().finish() }),
    ))
    .await;
    let res = test::call_service(&app, test::TestRequest::get().to_request()).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
