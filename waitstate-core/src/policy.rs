//! The policy document: the v1 wire format, our optional extensions, validation and merge.
//!
//! A [`Policy`] is declarative: what is blocked, throttled, rate-limited, the priority floor
//! and the global limits. The engine compiles it, with its tag table, into the immutable
//! snapshot the hot path reads. It is produced by the local reflex evaluator, by a control
//! plane, or both; [`Policy::stricter`] merges two, the stricter wins.
//!
//! On the wire it is the v1 document (`globalMaxWeight`, `tagMaxWeights`, `pulseInterval`,
//! `killSignal`, `status`, `leaseDurationSeconds`), read and written exactly as v1 SDKs do
//! (`null` is +Infinity, unknown fields are ignored), plus optional fields that v1 readers
//! ignore.
//!
//! ```
//! use waitstate_core::Policy;
//!
//! let p: Policy = serde_json::from_str(
//!     r#"{"globalMaxWeight":null,"tagMaxWeights":{"free":0},"somethingNew":1}"#,
//! ).unwrap();
//! assert!(p.global_max_weight.is_infinite());
//! assert_eq!(p.tag_max_weights["free"], 0.0);
//! assert!(serde_json::to_string(&p).unwrap().contains(r#""globalMaxWeight":null"#));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ConfigError;
use crate::registry::check_tag_name;

/// The v1 default pulse interval hint, in milliseconds.
pub const DEFAULT_PULSE_INTERVAL_MS: u64 = 5000;

/// A policy document: the v1 fields first, then our optional extensions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Policy {
    /// A request whose weight is greater is rejected (`over_weight`); `<= 0` rejects
    /// everything (`global_block`). +Infinity (written `null`) means no limit. Always sent.
    #[serde(
        default = "infinity",
        deserialize_with = "null_as_infinity",
        serialize_with = "infinity_as_null"
    )]
    pub global_max_weight: f64,
    /// Per tag: a request of that tag whose weight is greater is rejected (`tag_blocked`);
    /// 0 blocks the tag (for requests of positive weight).
    #[serde(default)]
    pub tag_max_weights: BTreeMap<String, f64>,
    /// Hint for the pulse cadence, in milliseconds.
    #[serde(default = "default_pulse_interval")]
    pub pulse_interval: u64,
    /// Reject everything (`kill_signal`).
    #[serde(default)]
    pub kill_signal: bool,
    /// Free-form health label for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// How long this policy stays valid without a successful sync (v1 default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<u64>,

    // ---- extensions: optional, ignored by v1 readers ----
    /// Per tag: the share of requests admitted, in percent (0..=100), deterministically.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_throttles: BTreeMap<String, f64>,
    /// Every tag: the share of requests admitted, in percent (used while `kill` ramps back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_throttle: Option<f64>,
    /// Per tag: a rate budget in weight units per second (GCRA; `rate_limited`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_rate_limits: BTreeMap<String, f64>,
    /// Cap on requests in flight, counted exactly: it caps the admission pool's learned limit
    /// (see [`crate::admission`]); when the pool is full the highest priority is served
    /// first and the lowest turned away first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u64>,
    /// Tags whose priority is below this are shed (`priority_shed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_floor: Option<i64>,
    /// Per priority: the share of requests admitted, in percent, for every tag of that
    /// priority (used while `shed` readmits a level gradually).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub priority_throttles: BTreeMap<i64, f64>,
}

fn infinity() -> f64 {
    f64::INFINITY
}

fn default_pulse_interval() -> u64 {
    DEFAULT_PULSE_INTERVAL_MS
}

fn null_as_infinity<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

fn infinity_as_null<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if *v == f64::INFINITY || v.is_nan() {
        s.serialize_none()
    } else {
        s.serialize_f64(*v)
    }
}

impl Default for Policy {
    /// The open policy: nothing limited.
    fn default() -> Self {
        Self {
            global_max_weight: f64::INFINITY,
            tag_max_weights: BTreeMap::new(),
            pulse_interval: DEFAULT_PULSE_INTERVAL_MS,
            kill_signal: false,
            status: None,
            lease_duration_seconds: None,
            tag_throttles: BTreeMap::new(),
            global_throttle: None,
            tag_rate_limits: BTreeMap::new(),
            concurrency_limit: None,
            priority_floor: None,
            priority_throttles: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// The open policy: nothing limited.
    pub fn open() -> Self {
        Self::default()
    }

    /// Parse a policy document from JSON and validate it.
    ///
    /// # Errors
    /// [`ConfigError::Policy`] when the JSON does not parse or a field fails
    /// [`Policy::validate`].
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let p: Policy = serde_json::from_str(json)
            .map_err(|e| ConfigError::policy("(document)", e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Whether this policy limits nothing.
    pub fn is_open(&self) -> bool {
        let lease = self.lease_duration_seconds;
        let status = self.status.is_none();
        let interval = self.pulse_interval;
        let mut open = Policy::default();
        open.lease_duration_seconds = lease;
        open.pulse_interval = interval;
        status && *self == open
    }

    /// Check every number: NaN, an infinite limit where one is not allowed, a negative rate
    /// or a share out of range, a bad tag name.
    ///
    /// Negative `globalMaxWeight` and `tagMaxWeights` are valid v1 (they block), so they pass.
    ///
    /// # Errors
    /// [`ConfigError::Policy`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.global_max_weight.is_nan() {
            return Err(ConfigError::policy("globalMaxWeight", "is NaN"));
        }
        for (tag, w) in &self.tag_max_weights {
            check_policy_tag("tagMaxWeights", tag)?;
            if w.is_nan() {
                return Err(ConfigError::policy(
                    format!("tagMaxWeights.{tag}"),
                    "is NaN",
                ));
            }
        }
        for (tag, p) in &self.tag_throttles {
            check_policy_tag("tagThrottles", tag)?;
            check_percent(&format!("tagThrottles.{tag}"), *p)?;
        }
        if let Some(p) = self.global_throttle {
            check_percent("globalThrottle", p)?;
        }
        for (prio, p) in &self.priority_throttles {
            check_percent(&format!("priorityThrottles.{prio}"), *p)?;
        }
        for (tag, r) in &self.tag_rate_limits {
            check_policy_tag("tagRateLimits", tag)?;
            if !r.is_finite() || *r < 0.0 {
                return Err(ConfigError::policy(
                    format!("tagRateLimits.{tag}"),
                    format!("must be a finite rate >= 0 per second, got {r}"),
                ));
            }
        }
        if self.concurrency_limit == Some(0) {
            return Err(ConfigError::policy(
                "concurrencyLimit",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Merge two policies; on every field the stricter wins (the union of what either blocks,
    /// the lower of two limits, the higher priority floor). The lease and pulse hints come
    /// from `self` when set.
    pub fn stricter(&self, other: &Policy) -> Policy {
        fn min_map<K: Ord + Clone>(a: &BTreeMap<K, f64>, b: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
            let mut out = a.clone();
            for (k, v) in b {
                out.entry(k.clone())
                    .and_modify(|cur| *cur = cur.min(*v))
                    .or_insert(*v);
            }
            out
        }
        fn min_opt<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(x), Some(y)) => Some(if y < x { y } else { x }),
                (x, None) => x,
                (None, y) => y,
            }
        }
        Policy {
            global_max_weight: self.global_max_weight.min(other.global_max_weight),
            tag_max_weights: min_map(&self.tag_max_weights, &other.tag_max_weights),
            pulse_interval: self.pulse_interval.min(other.pulse_interval),
            kill_signal: self.kill_signal || other.kill_signal,
            status: self.status.clone().or_else(|| other.status.clone()),
            lease_duration_seconds: self.lease_duration_seconds.or(other.lease_duration_seconds),
            tag_throttles: min_map(&self.tag_throttles, &other.tag_throttles),
            global_throttle: min_opt(self.global_throttle, other.global_throttle),
            tag_rate_limits: min_map(&self.tag_rate_limits, &other.tag_rate_limits),
            concurrency_limit: min_opt(self.concurrency_limit, other.concurrency_limit),
            priority_floor: match (self.priority_floor, other.priority_floor) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            priority_throttles: min_map(&self.priority_throttles, &other.priority_throttles),
        }
    }

    /// Every tag this policy names.
    pub(crate) fn named_tags(&self) -> impl Iterator<Item = &str> {
        self.tag_max_weights
            .keys()
            .chain(self.tag_throttles.keys())
            .chain(self.tag_rate_limits.keys())
            .map(String::as_str)
    }
}

fn check_policy_tag(field: &str, tag: &str) -> Result<(), ConfigError> {
    check_tag_name(tag).map_err(|why| ConfigError::policy(format!("{field}.{tag:.64}"), why))
}

fn check_percent(field: &str, p: f64) -> Result<(), ConfigError> {
    if p.is_nan() || !(0.0..=100.0).contains(&p) {
        return Err(ConfigError::policy(
            field,
            format!("must be a percentage in 0..=100, got {p}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_document_round_trips_with_null_infinity() {
        let json = r#"{"globalMaxWeight":null,"tagMaxWeights":{"free":0,"pro":5},"pulseInterval":5000,"killSignal":false,"status":"degraded","leaseDurationSeconds":300}"#;
        let p: Policy = serde_json::from_str(json).unwrap();
        assert!(p.global_max_weight.is_infinite());
        assert_eq!(p.tag_max_weights["pro"], 5.0);
        assert_eq!(p.lease_duration_seconds, Some(300));
        let back = serde_json::to_string(&p).unwrap();
        assert_eq!(back, json.replace(":0,", ":0.0,").replace(":5}", ":5.0}"));
    }

    #[test]
    fn defaults_fill_in_and_unknown_fields_are_ignored() {
        let p: Policy = serde_json::from_str(r#"{"globalMaxWeight":42,"future":{"x":1}}"#).unwrap();
        assert_eq!(p.global_max_weight, 42.0);
        assert_eq!(p.pulse_interval, DEFAULT_PULSE_INTERVAL_MS);
        assert!(!p.kill_signal);
        assert!(p.tag_throttles.is_empty());
    }

    #[test]
    fn v1_reader_accepts_our_document() {
        let mut p = Policy::default();
        p.tag_throttles.insert("pro".into(), 50.0);
        p.tag_rate_limits.insert("free".into(), 100.0);
        p.priority_floor = Some(10);
        p.tag_max_weights.insert("free".into(), 0.0);
        let json = serde_json::to_string(&p).unwrap();
        let v1: waitstate_v1::Policy = serde_json::from_str(&json).unwrap();
        assert!(v1.global_max_weight.is_infinite());
        assert_eq!(v1.tag_max_weights["free"], 0.0);
    }

    #[test]
    fn extensions_are_validated() {
        let mut p = Policy::default();
        p.tag_rate_limits.insert("free".into(), -1.0);
        assert!(
            matches!(p.validate(), Err(ConfigError::Policy { field, .. }) if field == "tagRateLimits.free")
        );
        let mut p = Policy::default();
        p.tag_throttles.insert("pro".into(), 150.0);
        assert!(p.validate().is_err());
        let mut p = Policy::default();
        p.global_max_weight = f64::NAN;
        assert!(p.validate().is_err());
        let mut p = Policy::default();
        p.concurrency_limit = Some(0);
        assert!(p.validate().is_err());
        // Negative v1 limits are meaningful (they block), so they are valid.
        let mut p = Policy::default();
        p.global_max_weight = -1.0;
        p.tag_max_weights.insert("free".into(), -3.0);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        for doc in [
            "",
            "{",
            "null",
            r#"{"globalMaxWeight":"x"}"#,
            r#"{"tagMaxWeights":{"a":NaN}}"#,
            r#"{"tagRateLimits":{"a":-5}}"#,
        ] {
            assert!(Policy::from_json(doc).is_err(), "{doc}");
        }
    }

    #[test]
    fn stricter_wins_field_by_field() {
        let mut a = Policy::default();
        a.global_max_weight = 10.0;
        a.tag_max_weights.insert("free".into(), 5.0);
        a.tag_throttles.insert("pro".into(), 80.0);
        a.priority_floor = Some(10);
        let mut b = Policy::default();
        b.tag_max_weights.insert("free".into(), 0.0);
        b.tag_max_weights.insert("pro".into(), 3.0);
        b.tag_throttles.insert("pro".into(), 50.0);
        b.concurrency_limit = Some(100);
        b.priority_floor = Some(50);
        b.kill_signal = true;
        let m = a.stricter(&b);
        assert_eq!(m.global_max_weight, 10.0);
        assert_eq!(m.tag_max_weights["free"], 0.0);
        assert_eq!(m.tag_max_weights["pro"], 3.0);
        assert_eq!(m.tag_throttles["pro"], 50.0);
        assert_eq!(m.concurrency_limit, Some(100));
        assert_eq!(m.priority_floor, Some(50));
        assert!(m.kill_signal);
        assert_eq!(m, b.stricter(&a).with_status_of(&m));
        assert!(Policy::default().is_open());
        assert!(!m.is_open());
    }

    impl Policy {
        fn with_status_of(mut self, other: &Policy) -> Policy {
            self.status = other.status.clone();
            self
        }
    }
}
