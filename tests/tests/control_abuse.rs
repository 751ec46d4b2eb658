//! The control plane under abuse, over real sockets on 127.0.0.1 (issue 15): slow and
//! greedy clients, a `/metrics` hammer while instances pulse, oversized bodies, replays
//! (exact, re-encoded, cross-key), expired and forged tokens, JWT `alg` tricks, and TLS.
//!
//! The pulse and token cases run on an injected wall clock and assert answers only. The
//! connection cases need real sockets and real time: each waits within a stated bound and
//! asserts an outcome (the connection was closed, the answer was 408), never a duration.
//! SECURITY.md's table counts the inputs tried here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use waitstate_control::{AppState, ControlConfig, ControlServer};
use waitstate_core::wire;
use waitstate_tests::control::{ORG, PK, SK};

const NOW_MS: u64 = 1_700_000_000_000;
const PK2: &str = "pk_test_2";
const SK2: &str = "sk_test_2_secret";
const JWT_SECRET: &str = "jwt-secret-for-the-abuse-tests-0123456789";
/// How long a test waits for an outcome that should come within a second or two.
const BOUND: Duration = Duration::from_secs(10);

/// Two orgs' keys, a known JWT secret (so tokens can be forged with the right key), small
/// bodies, tight connection bounds; `extra` goes into `[server]`.
fn config(extra: &str) -> ControlConfig {
    let body_cap = if extra.contains("max_body_bytes") {
        ""
    } else {
        "max_body_bytes = 4096"
    };
    let text = format!(
        r#"
[tags]
free = 10

[server]
listen = "127.0.0.1:0"
{body_cap}
skew = "60s"
token_ttl = "10m"
jwt_secret = "{JWT_SECRET}"
{extra}

[[keys]]
publish_key = "{PK}"
secret_key = "{SK}"
org_id = "{ORG}"

[[keys]]
publish_key = "{PK2}"
secret_key = "{SK2}"
org_id = "other"
"#
    );
    ControlConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

async fn server(extra: &str) -> (ControlServer, Arc<AtomicU64>) {
    let clock = Arc::new(AtomicU64::new(NOW_MS));
    let c = clock.clone();
    let state =
        AppState::with_wall_clock(config(extra), Box::new(move || c.load(Ordering::Relaxed)))
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (ControlServer::try_serve(listener, state).unwrap(), clock)
}

fn pulse_body(instance: &str, tags: usize) -> String {
    let metrics: Vec<String> = (0..tags)
        .map(|i| {
            format!(
                r#"{{"tag":"t{i}","latency":1.0,"count":3,"latencyBuckets":[3,0,0,0,0,0,0,0]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"instanceId":"{instance}","usageDelta":3,"bouncedUnits":0,"metrics":{{"latency":1.0,"errors":0}},"tagMetrics":[{}],"ts":{NOW_MS}}}"#,
        metrics.join(",")
    )
}

/// POST a pulse with these exact headers.
async fn post_raw(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    ts: &str,
    signature: &str,
    body: &str,
) -> StatusCode {
    http.post(format!("{url}/v1/pulse"))
        .header(wire::HEADER_ID, key)
        .header(wire::HEADER_TIMESTAMP, ts)
        .header(wire::HEADER_SIGNATURE, signature)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
}

/// Read until the server closes the connection (or `BOUND` passes): what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

/// Slowloris: a request head trickled a header at a time, and a connection that never
/// sends anything, are closed once `header_read_timeout` (1 s) has passed; a body trickled
/// after a quick head is answered 408 at `request_timeout` (1 s). Waits at most 10 s each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let (server, _) = server("header_read_timeout = \"1s\"\nrequest_timeout = \"1s\"").await;
    let addr = server.local_addr();

    // A head that never ends: one header line every 200 ms, for up to 10 s.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"POST /v1/pulse HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let cut = tokio::time::timeout(BOUND, async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if trickle
                .write_all(format!("x-slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut probe = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut probe));
            if let Ok(Ok(0) | Err(_)) = read.await {
                return;
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a trickled request head was never cut off");

    // A connection that sends nothing at all.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(
        read_until_closed(&mut idle).await.is_some(),
        "an idle connection was never closed"
    );

    // A quick head, then a body that never comes: 408.
    let mut slow_body = TcpStream::connect(addr).await.unwrap();
    slow_body
        .write_all(b"POST /v1/auth/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"publishKey\":")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow_body)
        .await
        .expect("a trickled body was never cut off");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // The server still serves, and counted the timeout.
    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("waitstate_requests_timed_out_total 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// `max_connections = 2`: with two connections held open, a third is closed at once
/// (the header-read bound is 60 s, so it is the cap that closes it), and counted; once
/// they go, the server serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_at_once() {
    let (server, _) = server("max_connections = 2\nheader_read_timeout = \"60s\"").await;
    let addr = server.local_addr();
    let held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let answer = read_until_closed(&mut third)
        .await
        .expect("the connection past the cap was not closed");
    assert!(answer.is_empty(), "served past the cap: {answer}");
    drop(held);
    // The held connections' permits come back when the server sees them close.
    let http = reqwest::Client::new();
    let mut metrics = String::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{}/metrics", server.url())).send().await
            && let Ok(text) = r.text().await
        {
            metrics = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.contains("waitstate_connections_refused_total ")
            && !metrics.contains("waitstate_connections_refused_total 0"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// A `/metrics` hammer (4 scrapers, back to back) while 8 instances pulse 25 times each,
/// over a fleet of 200 tags with histograms. The bound: every pulse is answered 200 within
/// 2 s (the client's timeout: a pulse past it counts as a failure), so pulse p99 < 2 s; the
/// measured p50/p99 are printed. The scrapes must actually have interleaved with the pulses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_hammer_does_not_stall_pulses() {
    let (server, _) = server("max_body_bytes = 1048576").await;
    let url = server.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scrapes = Arc::new(AtomicU64::new(0));
    let mut scrapers = Vec::new();
    for _ in 0..4 {
        let (http, url, stop, scrapes) = (http.clone(), url.clone(), stop.clone(), scrapes.clone());
        scrapers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http.get(format!("{url}/metrics")).send().await
                    && r.status() == StatusCode::OK
                    && r.bytes().await.is_ok()
                {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut pulsers = Vec::new();
    for i in 0..8 {
        let (http, url) = (http.clone(), url.clone());
        pulsers.push(tokio::spawn(async move {
            let body = pulse_body(&format!("i-{i}"), 200);
            let mut answers = Vec::new();
            for n in 0..25u64 {
                let ts = (NOW_MS + n).to_string();
                let sig = wire::sign(SK.as_bytes(), body.as_bytes(), &ts);
                let started = std::time::Instant::now();
                let status = http
                    .post(format!("{url}/v1/pulse"))
                    .header(wire::HEADER_ID, PK)
                    .header(wire::HEADER_TIMESTAMP, &ts)
                    .header(wire::HEADER_SIGNATURE, sig)
                    .body(body.clone())
                    .send()
                    .await
                    .map(|r| r.status());
                answers.push((status.ok(), started.elapsed()));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    let scrapes_before = scrapes.load(Ordering::Relaxed);
    for p in pulsers {
        answers.extend(p.await.unwrap());
    }
    let scrapes_during = scrapes.load(Ordering::Relaxed) - scrapes_before;
    stop.store(true, Ordering::Relaxed);
    for s in scrapers {
        s.await.unwrap();
    }
    let failed = answers
        .iter()
        .filter(|(s, _)| *s != Some(StatusCode::OK))
        .count();
    let mut took: Vec<Duration> = answers.iter().map(|(_, d)| *d).collect();
    took.sort();
    eprintln!(
        "pulses: {} (failed {failed}), p50 {:?}, p99 {:?}; scrapes during: {scrapes_during}",
        took.len(),
        took[took.len() / 2],
        took[took.len() * 99 / 100]
    );
    assert_eq!(failed, 0, "pulses not answered 200 within 2 s");
    assert!(
        scrapes_during > 0,
        "the scrapes did not run beside the pulses"
    );
    assert_eq!(server.state().shard(ORG, "").unwrap().pulses, 200);
    server.shutdown().await.unwrap();
}

/// `/metrics` with a token configured: 401 without it or with a wrong one, 200 with it.
#[tokio::test]
async fn metrics_can_require_a_token() {
    let (server, _) = server("metrics_token = \"scrape-token-0123456789\"").await;
    let url = format!("{}/metrics", server.url());
    let http = reqwest::Client::new();
    for bad in [
        None,
        Some("Bearer nope"),
        Some("Bearer scrape-token-012345678"),
    ] {
        let mut req = http.get(&url);
        if let Some(v) = bad {
            req = req.header("authorization", v);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{bad:?}"
        );
    }
    let ok = http
        .get(&url)
        .header("authorization", "Bearer scrape-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(
        ok.text()
            .await
            .unwrap()
            .contains(r#"waitstate_refused_total{reason="unauthorized"} 3"#)
    );
    server.shutdown().await.unwrap();
}

/// Bodies past `max_body_bytes` (4096), with and without a content-length: 413 on every
/// endpoint that reads one, before anything is parsed or stored.
#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (server, _) = server("").await;
    let url = server.url();
    let http = reqwest::Client::new();
    let mut tried = 0;
    for size in [4097, 8192, 65_536, 1 << 20] {
        let big = format!(r#"{{"instanceId":"i","pad":"{}"}}"#, "x".repeat(size));
        let ts = NOW_MS.to_string();
        let sig = wire::sign(SK.as_bytes(), big.as_bytes(), &ts);
        let s = post_raw(&http, &url, PK, &ts, &sig, &big).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "pulse of {size}");
        let r = http
            .post(format!("{url}/v1/auth/token"))
            .body(format!(
                r#"{{"publishKey":"{PK}","secretKey":"{}"}}"#,
                "x".repeat(size)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "token of {size}");
        // Chunked: no content-length to refuse on sight.
        let mut raw = TcpStream::connect(server.local_addr()).await.unwrap();
        let head = format!(
            "POST /v1/pulse HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{}: {PK}\r\n{}: {ts}\r\n{}: {sig}\r\ntransfer-encoding: chunked\r\n\r\n",
            wire::HEADER_ID,
            wire::HEADER_TIMESTAMP,
            wire::HEADER_SIGNATURE
        );
        let _ = raw.write_all(head.as_bytes()).await;
        for chunk in big.as_bytes().chunks(1000) {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            if raw.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = raw.write_all(b"0\r\n\r\n").await;
        let answer = read_until_closed(&mut raw).await.unwrap_or_default();
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "chunked pulse of {size}: {answer}"
        );
        tried += 3;
    }
    assert_eq!(tried, 12);
    assert!(server.state().shard(ORG, "").is_none(), "nothing stored");
    server.shutdown().await.unwrap();
}

/// Replays: the same signed pulse again (exact), with its signature re-cased or its
/// timestamp re-written (re-encoded), and under another key (cross-key). Only the first
/// is taken.
#[tokio::test]
async fn replays_are_refused() {
    let (server, _) = server("").await;
    let url = server.url();
    let http = reqwest::Client::new();
    let body = pulse_body("i-1", 1);
    let ts = NOW_MS.to_string();
    let sig = wire::sign(SK.as_bytes(), body.as_bytes(), &ts);
    assert_eq!(
        post_raw(&http, &url, PK, &ts, &sig, &body).await,
        StatusCode::OK
    );
    let mut tried = 0;
    // Exact, 5 times.
    for _ in 0..5 {
        assert_eq!(
            post_raw(&http, &url, PK, &ts, &sig, &body).await,
            StatusCode::CONFLICT
        );
        tried += 1;
    }
    // Re-cased signatures: all upper, and each letter flipped on its own.
    let mut recased = vec![sig.to_ascii_uppercase()];
    for (i, c) in sig.char_indices().filter(|(_, c)| c.is_ascii_alphabetic()) {
        let mut v = sig.clone();
        v.replace_range(i..=i, &c.to_ascii_uppercase().to_string());
        recased.push(v);
    }
    for v in &recased {
        assert_eq!(
            post_raw(&http, &url, PK, &ts, v, &body).await,
            StatusCode::CONFLICT,
            "{v}"
        );
        tried += 1;
    }
    // Re-written timestamps (the signature covers the text): not the pulse that was signed.
    for t in [
        format!("0{ts}"),
        format!("+{ts}"),
        format!("{ts}.0"),
        format!("{ts} 0"),
    ] {
        let s = post_raw(&http, &url, PK, &t, &sig, &body).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{t:?}");
        tried += 1;
    }
    // Whitespace around header values is not part of them (HTTP trims it): the same pulse.
    for t in [format!(" {ts}"), format!("{ts} "), format!("\t{ts}")] {
        let s = post_raw(&http, &url, PK, &t, &sig, &body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{t:?}");
        let s = post_raw(&http, &url, PK, &ts, &t.replace(&ts, &sig), &body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{t:?}");
        tried += 2;
    }
    // Signature padded or cut: not 64 hex digits.
    for v in [
        format!("{sig}00"),
        sig[..62].to_owned(),
        format!("0x{}", &sig[2..]),
    ] {
        assert_eq!(
            post_raw(&http, &url, PK, &ts, &v, &body).await,
            StatusCode::UNAUTHORIZED,
            "{v}"
        );
        tried += 1;
    }
    // Cross-key: org A's signed pulse under org B's publish key is a bad signature; the
    // same body signed by B is B's own pulse (taken once, into B's fleet, never A's), and
    // B's signature under A's key is a bad signature again.
    assert_eq!(
        post_raw(&http, &url, PK2, &ts, &sig, &body).await,
        StatusCode::UNAUTHORIZED
    );
    let sig2 = wire::sign(SK2.as_bytes(), body.as_bytes(), &ts);
    assert_eq!(
        post_raw(&http, &url, PK2, &ts, &sig2, &body).await,
        StatusCode::OK
    );
    assert_eq!(
        post_raw(&http, &url, PK2, &ts, &sig2, &body).await,
        StatusCode::CONFLICT
    );
    assert_eq!(
        post_raw(&http, &url, PK, &ts, &sig2, &body).await,
        StatusCode::UNAUTHORIZED
    );
    tried += 4;
    assert_eq!(server.state().shard(ORG, "").unwrap().pulses, 1);
    assert_eq!(server.state().shard("other", "").unwrap().pulses, 1);
    eprintln!("replays tried: {tried}");
    server.shutdown().await.unwrap();
}

type HmacSha256 = Hmac<sha2::Sha256>;
type HmacSha512 = Hmac<sha2::Sha512>;

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

/// A JWT with this header and payload, signed by `sign` (over `header.payload`).
fn jwt(header: &str, payload: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = b64(&sign(input.as_bytes()));
    format!("{input}.{sig}")
}

fn hs256(key: &str) -> impl Fn(&[u8]) -> Vec<u8> {
    let key = key.to_owned();
    move |m| {
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).unwrap();
        mac.update(m);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Tokens: a good one works until it expires; forged, tampered and `alg`-tricked ones never
/// do, even signed with the server's real key.
#[tokio::test]
async fn forged_expired_and_alg_tricked_tokens_are_refused() {
    let (server, clock) = server("").await;
    let url = server.url();
    let http = reqwest::Client::new();
    let policy = |bearer: String| {
        http.get(format!("{url}/v1/policy/{ORG}"))
            .header("authorization", format!("Bearer {bearer}"))
            .send()
    };
    let now = NOW_MS / 1000;
    let claims = |sub: &str, org: &str, exp: u64| {
        format!(r#"{{"sub":"{sub}","org":"{org}","iat":{now},"exp":{exp}}}"#)
    };
    let good = claims(PK, ORG, now + 600);
    let hs256_header = r#"{"alg":"HS256","typ":"JWT"}"#;
    // The control: a token made the server's way with its real key is taken.
    let real = jwt(hs256_header, &good, hs256(JWT_SECRET));
    assert_eq!(policy(real.clone()).await.unwrap().status(), StatusCode::OK);

    let hs512 = |m: &[u8]| {
        let mut mac = HmacSha512::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
        mac.update(m);
        mac.finalize().into_bytes().to_vec()
    };
    let (real_head, rest) = real.split_once('.').unwrap();
    let (real_payload, real_sig) = rest.split_once('.').unwrap();
    let mut forged: BTreeMap<&str, String> = BTreeMap::new();
    forged.insert(
        "alg none, no signature",
        jwt(r#"{"alg":"none","typ":"JWT"}"#, &good, |_| vec![]),
    );
    forged.insert("alg None", jwt(r#"{"alg":"None"}"#, &good, |_| vec![]));
    forged.insert(
        "alg none, real signature kept",
        format!(
            "{}.{real_payload}.{real_sig}",
            b64(br#"{"alg":"none","typ":"JWT"}"#)
        ),
    );
    forged.insert(
        "alg HS512 with the real key",
        jwt(r#"{"alg":"HS512","typ":"JWT"}"#, &good, hs512),
    );
    forged.insert(
        "alg hs256 lower case",
        jwt(r#"{"alg":"hs256","typ":"JWT"}"#, &good, hs256(JWT_SECRET)),
    );
    forged.insert(
        "alg RS256",
        jwt(r#"{"alg":"RS256","typ":"JWT"}"#, &good, hs256(JWT_SECRET)),
    );
    forged.insert(
        "header without alg",
        jwt(r#"{"typ":"JWT"}"#, &good, hs256(JWT_SECRET)),
    );
    forged.insert(
        "header tampered, signature kept",
        format!(
            "{}.{real_payload}.{real_sig}",
            b64(br#"{"alg":"HS256","typ":"JWT","kid":"x"}"#)
        ),
    );
    forged.insert(
        "payload tampered, signature kept",
        format!(
            "{real_head}.{}.{real_sig}",
            b64(claims(PK, ORG, now + 99_999).as_bytes())
        ),
    );
    forged.insert(
        "signed with another key",
        jwt(hs256_header, &good, hs256("guessed-secret")),
    );
    forged.insert(
        "signed with a publish key's secret",
        jwt(hs256_header, &good, hs256(SK)),
    );
    forged.insert("signature stripped", format!("{real_head}.{real_payload}."));
    forged.insert(
        "signature truncated",
        format!("{real_head}.{real_payload}.{}", &real_sig[..20]),
    );
    forged.insert("four parts", format!("{real}.x"));
    forged.insert("two parts", format!("{real_head}.{real_payload}"));
    forged.insert(
        "padded base64",
        format!("{real_head}=.{real_payload}.{real_sig}"),
    );
    forged.insert(
        "expired",
        jwt(hs256_header, &claims(PK, ORG, now), hs256(JWT_SECRET)),
    );
    forged.insert(
        "unknown key",
        jwt(
            hs256_header,
            &claims("pk_gone", ORG, now + 600),
            hs256(JWT_SECRET),
        ),
    );
    forged.insert(
        "other org's key",
        jwt(
            hs256_header,
            &claims(PK2, ORG, now + 600),
            hs256(JWT_SECRET),
        ),
    );
    forged.insert(
        "claims not JSON",
        jwt(hs256_header, "not json", hs256(JWT_SECRET)),
    );
    forged.insert("oversized", "a".repeat(5000));
    for (what, token) in &forged {
        let s = policy(token.clone()).await.unwrap().status();
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {token}");
    }
    // The real token, for another org: forbidden.
    let r = http
        .get(format!("{url}/v1/policy/other"))
        .header("authorization", format!("Bearer {real}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // And the real token, once its ten minutes are up.
    clock.fetch_add(600_000, Ordering::Relaxed);
    assert_eq!(
        policy(real).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    eprintln!("tokens tried: {}", forged.len() + 2);
    server.shutdown().await.unwrap();
}

/// TLS: a self-signed certificate made here (rcgen) in a temporary folder; a client that
/// trusts it buys a token, reads the policy and pulses over HTTPS; plain HTTP to the same
/// port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_with_a_self_signed_certificate() {
    let dir = std::env::temp_dir().join(format!("waitstate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let extra = format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert_path.display().to_string(),
        key_path.display().to_string()
    );
    let (server, _) = server(&extra).await;
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let token: serde_json::Value = http
        .post(format!("{url}/v1/auth/token"))
        .json(&serde_json::json!({"publishKey": PK, "secretKey": SK}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = token["token"].as_str().unwrap();
    let r = http
        .get(format!("{url}/v1/policy/{ORG}"))
        .header("authorization", format!("Bearer {bearer}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = pulse_body("i-tls", 1);
    let ts = NOW_MS.to_string();
    let sig = wire::sign(SK.as_bytes(), body.as_bytes(), &ts);
    assert_eq!(
        post_raw(&http, &url, PK, &ts, &sig, &body).await,
        StatusCode::OK
    );

    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.local_addr()))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // A client that does not trust the certificate: refused by the client.
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err());

    // A key that does not match, or a missing file: the server does not start.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&key_path, other.signing_key.serialize_pem()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = AppState::new(config(&extra)).unwrap();
    assert!(ControlServer::try_serve(listener, state).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let state = AppState::new(config(&extra)).unwrap();
    assert!(ControlServer::try_serve(listener, state).is_err());
    server.shutdown().await.unwrap();
}
