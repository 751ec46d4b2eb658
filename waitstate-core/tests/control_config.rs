//! The `[control_plane]` table: read, checked, and never printing the secret.
#![cfg(feature = "runtime")]

use std::time::Duration;

use waitstate_core::{Config, ConfigError, SafeMode, WaitState};

#[test]
fn the_control_plane_table_reads_with_v1_defaults() {
    let c = Config::from_toml_str(
        r#"
[tags]
free = 10
[control_plane]
base_url = "https://control.example.com"
publish_key = "pk_live_1"
secret_key = "sk_live_very_secret"
safe_mode = "fixed_rps"
"#,
    )
    .unwrap();
    let cp = c.control_plane.as_ref().unwrap();
    assert_eq!(cp.pulse_interval, Duration::from_secs(20));
    assert_eq!(cp.sync_interval, Duration::from_secs(30));
    assert_eq!(cp.lease, Duration::from_secs(300));
    assert_eq!(cp.safe_mode, SafeMode::FixedRps);
    assert_eq!(cp.safe_mode_max_rps, 50.0);
    assert_eq!(cp.carried_windows, 10);
    assert!(!format!("{c:?}").contains("very_secret"));
    assert!(!serde_json::to_string(&c).unwrap().contains("very_secret"));
}

#[test]
fn bad_control_plane_settings_name_the_key() {
    for (toml, key) in [
        (
            "base_url = \"ftp://x\"\npublish_key = \"p\"\nsecret_key = \"s\"",
            "control_plane.base_url",
        ),
        (
            "base_url = \"https://x.example\"\npublish_key = \"\"\nsecret_key = \"s\"",
            "control_plane.publish_key",
        ),
        (
            "base_url = \"https://x.example\"\npublish_key = \"p\"\nsecret_key = \"s\"\npulse_interval = \"0s\"",
            "control_plane.pulse_interval",
        ),
        (
            "base_url = \"https://x.example\"\npublish_key = \"p\"\nsecret_key = \"s\"\nsafe_mode_max_rps = -1",
            "control_plane.safe_mode_max_rps",
        ),
    ] {
        let err = Config::from_toml_str(&format!("[control_plane]\n{toml}\n")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
            "{err}"
        );
    }
    let err = Config::from_toml_str("[control_plane]\nbase_url = \"https://x.example\"\npublish_key = \"p\"\nsecret_key = \"s\"\nsafe_mode = \"panic\"\n").unwrap_err();
    assert!(err.to_string().contains("line 5"), "{err}");
}

#[cfg(feature = "control-plane")]
#[tokio::test(start_paused = true)]
async fn a_handle_with_a_control_plane_starts_fail_open() {
    let ws = WaitState::builder()
        .tag("free", 10)
        .control_plane(
            waitstate_core::ControlPlane::new("http://127.0.0.1:9", "pk", "sk-secret")
                .safe_mode(SafeMode::LastPolicy),
        )
        .build()
        .unwrap();
    assert!(ws.decide("free", 1.0).is_allowed());
    let s = ws.control_status().unwrap();
    assert!(!s.synced && !s.safe_mode);
    assert_eq!(s.instance_id.len(), 36);
    assert!(!format!("{ws:?}").contains("sk-secret"));
    assert!(
        WaitState::builder()
            .build()
            .unwrap()
            .control_status()
            .is_none()
    );
}

/// Without the `control-plane` feature the table still reads, but a handle is refused: a
/// configured control plane is never ignored in silence. (`cargo test -p waitstate-core
/// --test control_config` runs this; the workspace's test run turns the feature on.)
#[cfg(not(feature = "control-plane"))]
#[tokio::test(start_paused = true)]
async fn without_the_feature_a_configured_control_plane_is_refused_at_build() {
    let config = Config::from_toml_str(
        "[tags]\nfree = 10\n[control_plane]\nbase_url = \"https://control.example.com\"\n\
         publish_key = \"pk\"\nsecret_key = \"sk-secret\"\n",
    )
    .unwrap();
    assert!(config.control_plane.is_some());
    let err = WaitState::from_config(config).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "control_plane"),
        "{err}"
    );
    assert!(err.to_string().contains("`control-plane` feature"), "{err}");
    assert!(!err.to_string().contains("sk-secret"));
    // Without a control plane, the same build works.
    assert!(WaitState::builder().tag("free", 10).build().is_ok());
}
