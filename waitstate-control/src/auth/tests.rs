use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::StatusCode;

use super::*;
use crate::config::ControlConfig;

const PK: &str = "pk_1";
const SK: &str = "sk_1_secret";
const ORG: &str = "acme";
const NOW_MS: u64 = 1_700_000_000_000;

fn state() -> (AppState, Arc<AtomicU64>) {
    let text = format!(
        "[server]\nskew = \"60s\"\n\n[[keys]]\npublish_key = \"{PK}\"\nsecret_key = \"{SK}\"\norg_id = \"{ORG}\"\n"
    );
    let config = ControlConfig::from_toml_str(&text).unwrap();
    let clock = Arc::new(AtomicU64::new(NOW_MS));
    let c = clock.clone();
    let state =
        AppState::with_wall_clock(config, Box::new(move || c.load(Ordering::Relaxed))).unwrap();
    (state, clock)
}

fn signed(key: &str, secret: &str, ts: &str, body: &str) -> Request {
    Request::builder()
        .method("POST")
        .uri("/v1/pulse")
        .header(HEADER_ID, key)
        .header(HEADER_TIMESTAMP, ts)
        .header(
            HEADER_SIGNATURE,
            wire::sign(secret.as_bytes(), body.as_bytes(), ts),
        )
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn pulse(state: &AppState, req: Request) -> Result<SignedPulse, Refusal> {
    match SignedPulse::from_request(req, state).await {
        Ok(p) => Ok(p),
        Err(BodyRejection::Refused(r)) => Err(r),
        Err(BodyRejection::Body(e)) => panic!("{e:?}"),
    }
}

const BODY: &str = r#"{"instanceId":"i-1","tagMetrics":[]}"#;

#[tokio::test]
async fn a_signed_fresh_pulse_is_taken_once() {
    let (state, _) = state();
    let ts = NOW_MS.to_string();
    let p = pulse(&state, signed(PK, SK, &ts, BODY)).await.unwrap();
    assert_eq!(p.org, ORG);
    assert_eq!(p.body.instance_id, "i-1");
    let again = pulse(&state, signed(PK, SK, &ts, BODY)).await;
    assert_eq!(again.unwrap_err(), Refusal::Replay);
}

#[tokio::test]
async fn pulses_are_refused_in_order() {
    let (state, _) = state();
    let ts = NOW_MS.to_string();
    // Unknown key before anything else, even with a bad body.
    let r = pulse(&state, signed("pk_nope", SK, &ts, "not json")).await;
    assert_eq!(r.unwrap_err(), Refusal::Unauthorized);
    // No timestamp or signature.
    let bare = Request::builder()
        .header(HEADER_ID, PK)
        .body(Body::from(BODY))
        .unwrap();
    assert_eq!(
        pulse(&state, bare).await.unwrap_err(),
        Refusal::Unauthorized
    );
    // A wrong secret.
    let r = pulse(&state, signed(PK, "wrong", &ts, BODY)).await;
    assert_eq!(r.unwrap_err(), Refusal::BadSignature);
    // Signed, but the timestamp is not a number.
    let r = pulse(&state, signed(PK, SK, "soon", BODY)).await;
    assert_eq!(r.unwrap_err(), Refusal::Malformed);
    // Outside the skew window, both ways.
    for ts in [NOW_MS - 60_001, NOW_MS + 60_001] {
        let r = pulse(&state, signed(PK, SK, &ts.to_string(), BODY)).await;
        assert_eq!(r.unwrap_err(), Refusal::StaleTimestamp);
    }
    // At the edge of the window: taken.
    let edge = (NOW_MS - 60_000).to_string();
    assert!(pulse(&state, signed(PK, SK, &edge, BODY)).await.is_ok());
    // A bad body is checked last: the replay is noticed first.
    let r = pulse(&state, signed(PK, SK, &ts, "not json")).await;
    assert_eq!(r.unwrap_err(), Refusal::Malformed);
    let r = pulse(&state, signed(PK, SK, &ts, "not json")).await;
    assert_eq!(r.unwrap_err(), Refusal::Replay);
}

#[tokio::test]
async fn the_skew_window_follows_the_wall_clock() {
    let (state, clock) = state();
    let ts = NOW_MS.to_string();
    clock.fetch_add(60_001, Ordering::Relaxed);
    let r = pulse(&state, signed(PK, SK, &ts, BODY)).await;
    assert_eq!(r.unwrap_err(), Refusal::StaleTimestamp);
}

async fn credentials(state: &AppState, body: &str) -> Result<Credentials, Refusal> {
    let req = Request::builder()
        .body(Body::from(body.to_owned()))
        .unwrap();
    match Credentials::from_request(req, state).await {
        Ok(c) => Ok(c),
        Err(BodyRejection::Refused(r)) => Err(r),
        Err(BodyRejection::Body(e)) => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn credentials_need_a_known_key_and_its_secret() {
    let (state, _) = state();
    let ok = credentials(
        &state,
        &format!(r#"{{"publishKey":"{PK}","secretKey":"{SK}"}}"#),
    )
    .await
    .unwrap();
    assert_eq!((ok.publish_key.as_str(), ok.org_id.as_str()), (PK, ORG));
    for bad in [
        format!(r#"{{"publishKey":"{PK}","secretKey":"nope"}}"#),
        format!(r#"{{"publishKey":"pk_nope","secretKey":"{SK}"}}"#),
        r#"{"publishKey":"pk_nope","secretKey":"\u0000no key\u0000"}"#.to_owned(),
    ] {
        let r = credentials(&state, &bad).await;
        assert_eq!(r.unwrap_err(), Refusal::Unauthorized, "{bad}");
    }
    assert_eq!(
        credentials(&state, "{").await.unwrap_err(),
        Refusal::Malformed
    );
}

#[test]
fn secrets_compare_whatever_their_length() {
    assert!(same_secret("abc", "abc"));
    assert!(!same_secret("abc", "abd"));
    assert!(!same_secret("abc", "abcd"));
    assert!(!same_secret("", "a"));
}

async fn bearer(state: &AppState, authorization: Option<&str>) -> Result<Claims, Refusal> {
    let mut req = Request::builder();
    if let Some(v) = authorization {
        req = req.header("authorization", v);
    }
    let (mut parts, _) = req.body(Body::empty()).unwrap().into_parts();
    Claims::from_request_parts(&mut parts, state).await
}

#[tokio::test]
async fn bearer_tokens_are_verified_and_tied_to_their_org() {
    let (state, clock) = state();
    let token = state.issue_token(PK, ORG).token;
    for form in [format!("Bearer {token}"), format!("bearer  {token} ")] {
        let claims = bearer(&state, Some(&form)).await.unwrap();
        assert_eq!((claims.sub.as_str(), claims.org.as_str()), (PK, ORG));
        assert_eq!(claims.require_org(ORG), Ok(()));
        assert_eq!(claims.require_org("other"), Err(Refusal::WrongOrg));
    }
    for bad in [None, Some("x.y.z"), Some("Basic abc"), Some(token.as_str())] {
        assert_eq!(
            bearer(&state, bad).await.unwrap_err(),
            Refusal::Unauthorized,
            "{bad:?}"
        );
    }
    // Signed here, but for a key that is not configured (or not for that org).
    for (pk, org) in [("pk_gone", ORG), (PK, "other")] {
        let stray = state.issue_token(pk, org).token;
        let r = bearer(&state, Some(&format!("Bearer {stray}"))).await;
        assert_eq!(r.unwrap_err(), Refusal::Unauthorized, "{pk} {org}");
    }
    // Expired.
    let ttl_ms = state.config().server.token_ttl.as_millis() as u64;
    clock.fetch_add(ttl_ms, Ordering::Relaxed);
    let r = bearer(&state, Some(&format!("Bearer {token}"))).await;
    assert_eq!(r.unwrap_err(), Refusal::Unauthorized);
}

#[tokio::test]
async fn the_reader_is_optional() {
    let (mut parts, _) = Request::builder()
        .header(HEADER_SITE, "eu")
        .header(HEADER_INSTANCE, "i-9")
        .body(Body::empty())
        .unwrap()
        .into_parts();
    let r = Reader::from_request_parts(&mut parts, &()).await.unwrap();
    assert_eq!(
        (r.site.as_str(), r.instance.as_deref()),
        ("eu", Some("i-9"))
    );
    let (mut parts, _) = Request::new(Body::empty()).into_parts();
    let r = Reader::from_request_parts(&mut parts, &()).await.unwrap();
    assert_eq!((r.site.as_str(), r.instance), ("", None));
}

#[tokio::test]
async fn refusals_answer_with_their_status() {
    let (state, _) = state();
    let r = pulse(&state, signed(PK, "wrong", &NOW_MS.to_string(), BODY)).await;
    let response = BodyRejection::from(r.unwrap_err()).into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// Issue 15, item 2: hex is decoded case-insensitively, so the replay cache must not key on
/// the signature's text: the same pulse with its signature's letters re-cased is a replay.
#[tokio::test]
async fn a_pulse_replayed_with_its_signature_re_cased_is_a_replay() {
    let (state, _) = state();
    let ts = NOW_MS.to_string();
    let sig = wire::sign(SK.as_bytes(), BODY.as_bytes(), &ts);
    assert!(sig.chars().any(|c| c.is_ascii_alphabetic()), "{sig}");
    let with_signature = |sig: String| {
        Request::builder()
            .method("POST")
            .uri("/v1/pulse")
            .header(HEADER_ID, PK)
            .header(HEADER_TIMESTAMP, ts.as_str())
            .header(HEADER_SIGNATURE, sig)
            .body(Body::from(BODY))
            .unwrap()
    };
    assert!(pulse(&state, with_signature(sig.clone())).await.is_ok());
    // Every letter upper case, then each single letter flipped: all the same MAC.
    let mut variants = vec![sig.to_ascii_uppercase()];
    for (i, c) in sig.char_indices().filter(|(_, c)| c.is_ascii_alphabetic()) {
        let mut v = sig.clone();
        v.replace_range(i..=i, &c.to_ascii_uppercase().to_string());
        variants.push(v);
    }
    for v in variants {
        let r = pulse(&state, with_signature(v.clone())).await;
        assert_eq!(r.unwrap_err(), Refusal::Replay, "{v}");
    }
}

#[tokio::test]
async fn metrics_need_the_token_when_one_is_configured() {
    let scrape = |state: AppState, authorization: Option<&'static str>| async move {
        let mut req = Request::builder();
        if let Some(v) = authorization {
            req = req.header("authorization", v);
        }
        let (mut parts, _) = req.body(Body::empty()).unwrap().into_parts();
        MetricsScraper::from_request_parts(&mut parts, &state)
            .await
            .map(|_| ())
    };
    let (open, _) = state();
    assert_eq!(scrape(open, None).await, Ok(()));
    let text = format!(
        "[server]\nmetrics_token = \"scrape-0123456789\"\n\n[[keys]]\npublish_key = \"{PK}\"\nsecret_key = \"{SK}\"\norg_id = \"{ORG}\"\n"
    );
    let closed = AppState::new(ControlConfig::from_toml_str(&text).unwrap()).unwrap();
    assert_eq!(
        scrape(closed.clone(), Some("Bearer scrape-0123456789")).await,
        Ok(())
    );
    for bad in [
        None,
        Some("Bearer scrape-012345678"),
        Some("Bearer scrape-0123456789x"),
        Some("Basic scrape-0123456789"),
        Some("scrape-0123456789"),
    ] {
        assert_eq!(
            scrape(closed.clone(), bad).await,
            Err(Refusal::Unauthorized),
            "{bad:?}"
        );
    }
}
