use super::*;

const GOOD: &str = r#"
window = "30s"
[server]
listen = "127.0.0.1:0"
lease = "60s"

[[keys]]
publish_key = "pk_1"
secret_key = "sk_1"
org_id = "acme"

[tags]
enterprise = 100
free = 10
[[rules]]
rule = "when p95_latency > 500ms then block free"
"#;

#[test]
fn a_good_file_reads() {
    let c = ControlConfig::from_toml_str(GOOD).unwrap();
    assert_eq!(c.server.lease, Duration::from_secs(60));
    assert_eq!(c.keys[0].org_id, "acme");
    assert_eq!(c.engine.tags["free"], 10);
    assert_eq!(c.engine.window, Duration::from_secs(30));
    assert!(!format!("{c:?}").contains("sk_1"));
    // The server table alone redacts its secrets too.
    let secret = GOOD.replace(
        "lease = \"60s\"",
        "lease = \"60s\"\njwt_secret = \"jwt-0123456789-0123456789-0123456789\"\nmetrics_token = \"scrape-me-secretly\"",
    );
    let c = ControlConfig::from_toml_str(&secret).unwrap();
    for shown in [format!("{:?}", c.server), format!("{c:?}")] {
        assert!(!shown.contains("jwt-0123456789"), "{shown}");
        assert!(!shown.contains("scrape-me-secretly"), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
    }
}

#[test]
fn redis_settings_are_checked() {
    let with = |extra: &str| GOOD.replace("lease = \"60s\"", &format!("lease = \"60s\"\n{extra}"));
    let bad_url = ControlConfig::from_toml_str(&with("redis_url = \"http://r:6379\""));
    assert_eq!(bad_url.unwrap_err().key, "server.redis_url");
    let bad_prefix = ControlConfig::from_toml_str(&with("redis_prefix = \"a b\""));
    assert_eq!(bad_prefix.unwrap_err().key, "server.redis_prefix");
    let bad_history = ControlConfig::from_toml_str(&with("redis_history = 1"));
    assert_eq!(bad_history.unwrap_err().key, "server.redis_history");
    let url = ControlConfig::from_toml_str(&with("redis_url = \"redis://:pw@r:6379/0\""));
    if cfg!(feature = "redis") {
        let c = url.unwrap();
        assert!(
            !format!("{c:?}").contains("pw@"),
            "the URL may hold a password"
        );
    } else {
        let e = url.unwrap_err();
        assert!(e.message.contains("--features redis"), "{e}");
    }
}

#[test]
fn the_state_file_needs_redis_and_a_path() {
    let with = |extra: &str| GOOD.replace("lease = \"60s\"", &format!("lease = \"60s\"\n{extra}"));
    let d = ControlConfig::from_toml_str(GOOD).unwrap().server;
    assert_eq!(
        (d.state_file, d.state_file_interval),
        (None, Duration::from_secs(10))
    );
    // In memory there is no shared state to keep a copy of.
    let e =
        ControlConfig::from_toml_str(&with("state_file = \"/var/lib/ws/state.json\"")).unwrap_err();
    assert_eq!((e.key.as_str(), e.line), ("server.state_file", Some(6)));
    assert!(e.message.contains("redis_url"), "{e}");
    let e = ControlConfig::from_toml_str(&with("state_file_interval = \"10ms\"")).unwrap_err();
    assert_eq!(e.key, "server.state_file_interval");
    if cfg!(feature = "redis") {
        let redis = "redis_url = \"redis://127.0.0.1:6379\"\n";
        let c = ControlConfig::from_toml_str(&with(&format!(
            "{redis}state_file = \"/var/lib/ws/state.json\"\nstate_file_interval = \"30s\""
        )))
        .unwrap();
        assert_eq!(
            c.server.state_file.as_deref(),
            Some(Path::new("/var/lib/ws/state.json"))
        );
        assert_eq!(c.server.state_file_interval, Duration::from_secs(30));
        let e =
            ControlConfig::from_toml_str(&with(&format!("{redis}state_file = \"/\""))).unwrap_err();
        assert_eq!(e.key, "server.state_file");
    }
}

#[test]
fn secrets_come_from_the_environment_or_a_file() {
    let dir = std::env::temp_dir().join(format!("ws-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sk");
    std::fs::write(&file, "sk_from_a_file\n").unwrap();
    let text = GOOD.replace(
        "secret_key = \"sk_1\"",
        &format!("secret_key = \"file:{}\"", file.display()),
    );
    let c = ControlConfig::from_toml_str(&text).unwrap();
    assert_eq!(c.keys[0].secret_key, "sk_from_a_file");
    assert!(!format!("{c:?}").contains("sk_from_a_file"));
    // `PATH` is set wherever tests run: no `set_var` (unsafe) needed.
    let text = GOOD.replace(
        "lease = \"60s\"",
        "lease = \"60s\"\nmetrics_token = \"env:PATH\"",
    );
    let c = ControlConfig::from_toml_str(&text).unwrap();
    assert_eq!(c.server.metrics_token, std::env::var("PATH").ok());
    // Missing: an error naming the key and the variable or file, on the right line.
    let text = GOOD.replace("sk_1", "env:WAITSTATE_SURELY_NOT_SET_4711");
    let e = ControlConfig::from_toml_str(&text).unwrap_err();
    assert_eq!(e.key, "keys[0].secret_key");
    assert!(e.message.contains("WAITSTATE_SURELY_NOT_SET_4711"), "{e}");
    assert_eq!(e.line, Some(9));
    let text = GOOD.replace("sk_1", "file:/nonexistent/ws/secret");
    let e = ControlConfig::from_toml_str(&text).unwrap_err();
    assert!(e.message.contains("cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[track_caller]
fn fails(text: &str, key: &str, line: usize) {
    let e = ControlConfig::from_toml_str(text).unwrap_err();
    assert!(e.key == key || e.message.contains(key), "{e}");
    assert_eq!(e.line, Some(line), "{e}");
}

#[test]
fn errors_name_the_key_and_the_line() {
    fails(&GOOD.replace("sk_1", ""), "keys[0].secret_key", 9);
    fails(&GOOD.replace("127.0.0.1:0", "nowhere"), "server.listen", 4);
    fails(&GOOD.replace("lease = ", "leese = "), "leese", 5);
    fails(&GOOD.replace("free = 10", "free = \"ten\""), "", 14);
    fails(&GOOD.replace("then block", "than block"), "rules[0]", 16);
    // The SDK's checks: a fleet rule naming an undeclared tag or metric fails too.
    fails(&GOOD.replace("block free", "block fre"), "rules[0]", 16);
    fails(
        &GOOD.replace("p95_latency > 500ms", "p95 > 500"),
        "rules[0]",
        16,
    );
    let e = ControlConfig::from_toml_str(&GOOD.replace("block free", "block fre")).unwrap_err();
    assert!(e.message.contains("did you mean `free`?"), "{e}");
    fails(&GOOD.replace("window", "windoe"), "windoe", 2);
    let e = ControlConfig::from_toml_str("[server]\n").unwrap_err();
    assert_eq!(e.key, "keys");
    let dup =
        format!("{GOOD}\n[[keys]]\npublish_key = \"pk_1\"\nsecret_key = \"x\"\norg_id = \"o\"\n");
    let e = ControlConfig::from_toml_str(&dup).unwrap_err();
    assert_eq!(e.key, "keys[1].publish_key");
    assert_eq!(e.line, Some(19));
}

#[test]
fn the_example_file_reads() {
    let c =
        ControlConfig::from_toml_str(include_str!("../../waitstate-control.example.toml")).unwrap();
    assert_eq!(c.engine.rules.len(), 3);
    assert_eq!(c.server.listen, "0.0.0.0:7700");
}

#[test]
fn hardening_options_read_and_are_checked() {
    let with = |extra: &str| {
        ControlConfig::from_toml_str(
            &GOOD.replace("lease = \"60s\"", &format!("lease = \"60s\"\n{extra}")),
        )
    };
    let c = with(
        "header_read_timeout = \"2s\"\nrequest_timeout = \"5s\"\nmax_connections = 8\nmetrics_token = \"0123456789abcdef\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
    )
    .unwrap();
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(2));
    assert_eq!(c.server.request_timeout, Duration::from_secs(5));
    assert_eq!(c.server.max_connections, 8);
    assert_eq!(c.server.tls_key.as_deref(), Some(Path::new("k.pem")));
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
    let d = ControlConfig::from_toml_str(GOOD).unwrap().server;
    assert_eq!(
        (d.header_read_timeout, d.request_timeout, d.max_connections),
        (Duration::from_secs(10), Duration::from_secs(30), 1024)
    );
    assert!(d.metrics_token.is_none() && d.tls_cert.is_none());
    for (bad, key) in [
        ("metrics_token = \"short\"", "server.metrics_token"),
        ("tls_cert = \"c.pem\"", "server.tls_cert"),
        ("tls_key = \"k.pem\"", "server.tls_key"),
        ("max_connections = 0", "server.max_connections"),
        (
            "header_read_timeout = \"10ms\"",
            "server.header_read_timeout",
        ),
    ] {
        assert_eq!(with(bad).unwrap_err().key, key, "{bad}");
    }
}

#[test]
fn blanking_keeps_lines() {
    let b = blank_control_sections(GOOD);
    assert_eq!(b.lines().count(), GOOD.lines().count());
    assert!(b.contains("#secret_key"));
    assert!(b.contains("\nwindow = \"30s\""));
}
