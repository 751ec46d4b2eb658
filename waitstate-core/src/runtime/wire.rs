//! The v1 wire documents (PROTOCOL.md) and their signing, shared by the SDK's control plane
//! client and by `waitstate-control`.
//!
//! Every document reads leniently (unknown fields ignored, our extension fields optional),
//! so a v1 SDK's pulse reads here and our pulse reads in a v1 control plane.
//!
//! ```
//! use waitstate_core::wire::{sign, verify};
//!
//! let sig = sign(b"secret", br#"{"a":1}"#, "1700000000000");
//! assert_eq!(sig.len(), 64);
//! assert!(verify(b"secret", br#"{"a":1}"#, "1700000000000", &sig));
//! assert!(!verify(b"secret", br#"{"a":2}"#, "1700000000000", &sig));
//! assert!(!verify(b"secret", br#"{"a":1}"#, "1700000000000", "not hex"));
//! ```

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::histogram::SparseHistogram;
use crate::registry::Aggregate;

/// Header carrying the publish key.
pub const HEADER_ID: &str = "x-waitstate-id";
/// Header carrying the timestamp (epoch milliseconds, decimal).
pub const HEADER_TIMESTAMP: &str = "x-waitstate-timestamp";
/// Header carrying the signature (lowercase hex HMAC-SHA256 of `<body>.<timestamp>`).
pub const HEADER_SIGNATURE: &str = "x-waitstate-signature";
/// Extension header on `GET /v1/policy/{orgId}`: the instance asking, so a control plane can
/// answer with that instance's share of the fleet's rate budgets. v1 servers ignore it.
pub const HEADER_INSTANCE: &str = "x-waitstate-instance";
/// Extension header on `GET /v1/policy/{orgId}`: the instance's `siteId`.
pub const HEADER_SITE: &str = "x-waitstate-site";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], body: &[u8], timestamp: &str) -> HmacSha256 {
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac
}

/// The pulse signature: lowercase hex of HMAC-SHA256(key = `secret`, message =
/// `<body>.<timestamp>`).
pub fn sign(secret: &[u8], body: &[u8], timestamp: &str) -> String {
    hex::encode(mac(secret, body, timestamp).finalize().into_bytes())
}

/// Check a pulse signature in constant time. Malformed hex is simply a mismatch.
pub fn verify(secret: &[u8], body: &[u8], timestamp: &str, signature_hex: &str) -> bool {
    let mut given = [0u8; 32];
    if signature_hex.len() != 64 || hex::decode_to_slice(signature_hex, &mut given).is_err() {
        return false;
    }
    mac(secret, body, timestamp).verify_slice(&given).is_ok()
}

/// `metrics` of a pulse: the interval's mean latency (ms) and error count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PulseMetrics {
    /// Mean latency in milliseconds over the interval.
    #[serde(default)]
    pub latency: f64,
    /// Error count over the interval (a count, not a rate).
    #[serde(default)]
    pub errors: f64,
}

/// One tag's window in a pulse: the v1 fields, then our optional extensions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TagMetric {
    /// The tag.
    pub tag: String,
    /// Mean latency in milliseconds of the requests that ended.
    #[serde(default)]
    pub latency: f64,
    /// Gate calls (admitted and rejected).
    #[serde(default)]
    pub count: u64,
    /// The 8 v1 latency bucket counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets: Option<Vec<u64>>,
    /// Custom metrics by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metrics: Option<BTreeMap<String, Aggregate>>,

    // ---- extensions ----
    /// Requests admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted: Option<u64>,
    /// Weight admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_weight: Option<f64>,
    /// Rejections by reason (snake_case reason names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<BTreeMap<String, u64>>,
    /// Requests a dry-run rule would have rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_reject: Option<u64>,
    /// Admitted requests that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
    /// Ended requests that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// Requests in flight at the time of the pulse (a gauge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    /// The full mergeable latency histogram of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<SparseHistogram>,
}

/// The body of `POST /v1/pulse`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PulseBody {
    /// The sender's instance id (a v4 UUID for the SDKs).
    pub instance_id: String,
    /// Optional shard key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_id: Option<String>,
    /// Gate calls since the last successful pulse.
    #[serde(default)]
    pub usage_delta: u64,
    /// Rejections since the last successful pulse.
    #[serde(default)]
    pub bounced_units: u64,
    /// Whole-service metrics of the interval.
    #[serde(default)]
    pub metrics: PulseMetrics,
    /// Per-tag windows.
    #[serde(default)]
    pub tag_metrics: Vec<TagMetric>,
    /// When the pulse was built, epoch milliseconds.
    #[serde(default)]
    pub ts: u64,
    /// Extension: how many pulse windows this one carries (more than 1 after failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<u32>,
}

/// The body of `POST /v1/auth/token`. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TokenRequest {
    /// The publish key.
    pub publish_key: String,
    /// The secret key.
    pub secret_key: String,
}

impl TokenRequest {
    /// A request for these keys.
    pub fn new(publish_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            publish_key: publish_key.into(),
            secret_key: secret_key.into(),
        }
    }
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("publish_key", &self.publish_key)
            .field("secret_key", &"[REDACTED]")
            .finish()
    }
}

/// The answer of `POST /v1/auth/token`. `Debug` never shows the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TokenResponse {
    /// The bearer token (a JWT).
    pub token: String,
    /// When it expires, epoch milliseconds.
    pub expires_at: u64,
    /// The organisation the keys belong to (`GET /v1/policy/{orgId}`).
    pub org_id: String,
}

impl TokenResponse {
    /// A token answer.
    pub fn new(token: impl Into<String>, expires_at: u64, org_id: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            expires_at,
            org_id: org_id.into(),
        }
    }
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .field("org_id", &self.org_id)
            .finish()
    }
}

/// The 8 v1 latency buckets' upper bounds in milliseconds (the last is open).
pub const V1_BUCKET_UPPER_MS: [f64; 8] = [
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    f64::INFINITY,
];

/// A representative latency (ms) for each v1 bucket, to rebuild an approximate histogram
/// from a v1 pulse: the middle of the bucket (7.5 s for the open one).
pub const V1_BUCKET_REPRESENTATIVE_MS: [f64; 8] =
    [25.0, 75.0, 175.0, 375.0, 750.0, 1750.0, 3750.0, 7500.0];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_published_sdk() {
        let body = r#"{"instanceId":"x"}"#;
        let ours = sign(b"sec_456", body.as_bytes(), "1700000000000");
        let v1 = waitstate_v1::signing::sign_pulse(body, "1700000000000", "sec_456");
        assert_eq!(ours, v1);
        assert!(verify(b"sec_456", body.as_bytes(), "1700000000000", &v1));
        assert!(!verify(b"sec_457", body.as_bytes(), "1700000000000", &v1));
        assert!(!verify(b"sec_456", body.as_bytes(), "1700000000001", &v1));
        assert!(!verify(
            b"sec_456",
            body.as_bytes(),
            "1700000000000",
            &v1[..63]
        ));
        assert!(!verify(
            b"sec_456",
            body.as_bytes(),
            "1700000000000",
            &"zz".repeat(32)
        ));
    }

    #[test]
    fn a_v1_pulse_reads_and_ours_reads_in_v1() {
        let v1 = r#"{"instanceId":"i","usageDelta":3,"bouncedUnits":1,"metrics":{"latency":12.5,"errors":0.0},
            "tagMetrics":[{"tag":"free","latency":4.0,"count":3,"latencyBuckets":[3,0,0,0,0,0,0,0],
            "customMetrics":{"queue_depth":{"min":1,"max":2,"sum":3,"count":2}}}],"ts":1}"#;
        let p: PulseBody = serde_json::from_str(v1).unwrap();
        assert_eq!(p.tag_metrics[0].count, 3);
        assert_eq!(
            p.tag_metrics[0].custom_metrics.as_ref().unwrap()["queue_depth"].count,
            2
        );
        let mut ours = p.clone();
        ours.tag_metrics[0].admitted = Some(2);
        ours.tag_metrics[0].histogram = Some(crate::histogram::Histogram::new().to_sparse());
        let json = serde_json::to_string(&ours).unwrap();
        let back: waitstate_v1::types::PulsePayload = serde_json::from_str(&json).unwrap();
        assert_eq!(back.usage_delta, 3);
        assert_eq!(back.tag_metrics[0].tag, "free");
    }

    #[test]
    fn debug_hides_secrets() {
        let r = TokenRequest::new("pk", "super-secret");
        assert!(!format!("{r:?}").contains("super-secret"));
        let t = TokenResponse::new("eyJ.secret.token", 1, "org");
        assert!(!format!("{t:?}").contains("eyJ"));
    }
}
