//! The configuration's tests.

use super::*;

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    for bad in ["", "5", "s", "5 parsecs", "-1s", "1e999s", "NaNs"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[cfg(feature = "toml")]
#[test]
fn limits_parse_and_bad_ones_are_config_errors() {
    let c = Config::from_toml_str(
        "[limits]\nconcurrency = 40\nrate = { free = 200, \"pro.v2\" = 0.5 }\n",
    )
    .unwrap();
    assert_eq!(
        c.limits,
        Limits::default()
            .concurrency(40)
            .rate("free", 200.0)
            .rate("pro.v2", 0.5)
    );
    let p = c.limits.to_policy();
    assert_eq!(p.concurrency_limit, Some(40));
    assert_eq!(p.tag_rate_limits.get("free"), Some(&200.0));
    for (bad, key) in [
        ("concurrency = 0", "limits.concurrency"),
        ("concurrency = -1", ""),
        ("rate = { free = 0 }", "limits.rate.free"),
        ("rate = { free = -5 }", "limits.rate.free"),
        ("rate = { free = nan }", "limits.rate.free"),
        ("rate = { free = inf }", "limits.rate.free"),
        ("rate = { \"\" = 5 }", "limits.rate."),
        ("rate = { \"a\\u0007b\" = 5 }", "control characters"),
        ("burst = 5", ""),
    ] {
        let err = Config::from_toml_str(&format!("[limits]\n{bad}\n")).unwrap_err();
        assert!(err.to_string().contains(key), "{bad}: {err}");
    }
}

#[test]
fn a_rule_typo_names_the_rule_and_column() {
    let mut c = Config::default();
    c.tags.insert("free".into(), 10);
    c.rules
        .push(RuleConfig::new("when p95_latency > 500ms then block free"));
    c.rules
        .push(RuleConfig::new("when p95_latency > 500ms than block free"));
    let err = c.validate().unwrap_err();
    let ConfigError::Rule { index, error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*index, 1);
    assert_eq!(error.column(), 26);
    assert!(err.to_string().starts_with("rules[1]"), "{err}");
}

#[test]
fn settings_are_checked() {
    let mut c = Config::default();
    c.tag_cap = 2;
    c.tags.insert("a".into(), 1);
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "tag_cap"));
    let mut c = Config::default();
    c.tags.insert(String::new(), 1);
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.tick = Duration::ZERO;
    assert!(c.validate().is_err());
    let mut c = Config::default();
    c.tags.insert(OVERFLOW_TAG.into(), 1);
    assert!(c.validate().is_err());
}

#[cfg(feature = "toml")]
#[test]
fn the_design_file_reads() {
    let c = Config::from_toml_str(
        r#"
default_priority = 0
[tags]
enterprise = 100
pro = 50
free = 10
[[rules]]
rule = "when p95_latency > 500ms for 5s then block free"
[[rules]]
rule = "when error_rate > 5% then throttle pro to 50%"
dry_run = true
[[rules]]
rule = "when p95_latency > 1s then shed"
cooldown = "10s"
"#,
    )
    .unwrap();
    assert_eq!(c.tags["pro"], 50);
    assert_eq!(c.rules.len(), 3);
    assert!(c.rules[1].dry_run);
    assert_eq!(c.rules[2].cooldown, Some(Duration::from_secs(10)));
    assert_eq!(c.tick, Duration::from_secs(1));
}

#[cfg(feature = "toml")]
#[test]
fn toml_errors_say_where() {
    let err = Config::from_toml_str("[tags]\nfree = \"ten\"\n").unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
    let err = Config::from_toml_str("tag_capp = 3\n").unwrap_err();
    assert!(err.to_string().contains("tag_capp"), "{err}");
    let err = Config::from_toml_str("window = \"soon\"\n").unwrap_err();
    assert!(err.to_string().contains("duration"), "{err}");
}

/// Issue 15, item 6: the SDK sends its secret key to `POST /v1/auth/token`, so a plain
/// `http://` control plane is refused unless it is on this machine (loopback).
mod insecure_http_tests {
    use super::*;

    fn with(url: &str) -> Result<(), ConfigError> {
        let mut c = Config::default();
        c.control_plane = Some(ControlPlane::new(url, "pk", "sk"));
        c.validate()
    }

    #[test]
    fn a_plain_http_control_plane_is_refused_off_loopback() {
        for ok in [
            "https://control.example.com",
            "https://10.0.0.1:7700/",
            "http://127.0.0.1:7700",
            "http://127.5.6.7",
            "http://[::1]:7700/",
            "http://localhost:7700",
            "http://LocalHost/base",
            "http://user@localhost:7700",
        ] {
            assert!(with(ok).is_ok(), "{ok}: {:?}", with(ok));
        }
        for bad in [
            "http://control.example.com",
            "http://10.0.0.1:7700",
            "http://0.0.0.0:7700",
            "http://[::2]:7700",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "http://localhost@example.com",
            "http://localhost:7700@example.com/",
            "http://example.com\\@localhost",
            "http://example.com#@localhost",
            "http://example.com?@127.0.0.1",
            "http://example.com/@localhost",
            "HTTP://example.com",
        ] {
            let err = with(bad).unwrap_err();
            let ConfigError::Invalid { key, reason } = &err else {
                panic!("{bad}: {err:?}");
            };
            assert_eq!(key, "control_plane.base_url", "{bad}");
            assert!(reason.contains("allow_insecure_http"), "{bad}: {reason}");
        }
    }

    #[test]
    fn plain_http_off_loopback_needs_the_explicit_option() {
        let mut c = Config::default();
        c.control_plane =
            Some(ControlPlane::new("http://10.0.0.1:7700", "pk", "sk").allow_insecure_http(true));
        assert_eq!(c.validate(), Ok(()));
        assert!(format!("{c:?}").contains("allow_insecure_http: true"));
    }

    #[cfg(feature = "toml")]
    #[test]
    fn the_option_reads_from_toml() {
        let table = "[control_plane]\nbase_url = \"http://10.0.0.1:7700\"\npublish_key = \"p\"\nsecret_key = \"s\"\n";
        let err = Config::from_toml_str(table).unwrap_err();
        assert!(err.to_string().contains("allow_insecure_http"), "{err}");
        let c = Config::from_toml_str(&format!("{table}allow_insecure_http = true\n")).unwrap();
        assert!(c.control_plane.unwrap().allow_insecure_http);
    }
}

#[cfg(feature = "toml")]
#[test]
fn a_rule_naming_an_undeclared_metric_or_tag_fails_to_load() {
    let tiers = "[tags]\nenterprise = 100\nfree = 10\n";
    let err = Config::from_toml_str(&format!(
        "{tiers}[[rules]]\nrule = \"when p95 > 500 then shed\"\n"
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("did you mean `p95_latency`?"),
        "{err}"
    );
    let err = Config::from_toml_str(&format!(
        "{tiers}[[rules]]\nrule = \"when p95_latency > 500ms then block fre\"\n"
    ))
    .unwrap_err();
    assert!(err.to_string().starts_with("rules[0]"), "{err}");
    assert!(err.to_string().contains("did you mean `free`?"), "{err}");
    // Declared, it loads.
    let ok = Config::from_toml_str(&format!(
        "{tiers}[metrics]\ncustom = [\"queue_depth\"]\n[[rules]]\nrule = \"when queue_depth of free > 5 then block free\"\n"
    ));
    assert!(ok.is_ok(), "{ok:?}");
    // A declared name must itself be a metric name.
    let err = Config::from_toml_str("[metrics]\ncustom = [\"Queue\"]\n").unwrap_err();
    assert!(err.to_string().contains("metrics.custom[0]"), "{err}");
}
