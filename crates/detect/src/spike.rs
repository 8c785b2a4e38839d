//! The spike record written as JSON Lines, and its deterministic id.

use serde::{Deserialize, Serialize};

use crate::incident::Episode;
use crate::Mode;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Name of the detection carried by every [`Spike`].
pub const DETECTION: &str = "blocked_outbound_spike";

/// One alert: a source whose blocked outbound count in an hour exceeds its baseline.
///
/// Serialised (field order as declared) as one JSON object per line by [`Spike::to_json_line`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spike {
    /// Deterministic id: [`spike_id`] of detection, mode, hour and source.
    pub id: String,
    /// Always [`DETECTION`].
    pub detection: String,
    /// The baseline mode that raised it.
    pub mode: Mode,
    /// Start of the hour, unix seconds; serialised as RFC 3339 (`2026-03-05T14:00:00Z`).
    #[serde(with = "hour_rfc3339")]
    pub hour: i64,
    /// Source address; empty (and absent from the JSON) in a fleet record, which has `src_ips`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub src_ip: String,
    /// Adaptive mode, fleet record: the sources of the incident, sorted (absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub src_ips: Vec<String>,
    /// Adaptive mode, fleet record: the number of sources, `src_ips.len()` (absent otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub source_count: u64,
    /// Blocked outbound records of the source in the hour.
    pub blocked_count: u64,
    /// Distinct blocked destinations in the hour.
    pub unique_dest_count: u64,
    /// The blocked destinations (as delivered by the counter, possibly capped).
    pub dest_ips: Vec<String>,
    /// Interface ids (ENIs) that logged the blocked records.
    pub resource_ids: Vec<String>,
    /// Adaptive mode: the incident this record belongs to; a later hour of an episode keeps the
    /// episode's first `id` (absent in window and splunk modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<Episode>,
    /// Mean of the baseline compared against (splunk mode: the updated average).
    pub baseline_mean: f64,
    /// Standard deviation of the baseline (splunk mode: the updated value).
    pub baseline_stdev: f64,
    /// Data points of the baseline (window mode: prior active hours; splunk mode: updated count).
    pub data_points: u64,
    /// `baseline_mean + deviations * baseline_stdev`; a spike has `blocked_count > threshold`
    /// (adaptive mode: the largest count that would not have alerted).
    pub threshold: f64,
    /// Adaptive mode: why the record was raised (absent in window and splunk modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Adaptive mode: the expected count of the source in this hour under its model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<f64>,
    /// Adaptive mode: `P(X >= blocked_count)` under the model's predictive distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Adaptive mode, streaming services: raised while its hour was still open, as soon as the
    /// source's running count was a clear case ([`crate::Detector::evaluate_open`]); the hour's
    /// close does not repeat it (same `id`). Absent (false) in every other record.
    #[serde(default, skip_serializing_if = "is_false")]
    pub early: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why an adaptive-mode record was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The hour is far above the source's own model for that hour.
    Spike,
    /// A source first seen after the warm-up whose first hour is far above what new sources of
    /// the fleet do.
    NewSource,
    /// The last few hours together are far above the model (a ramp).
    Ramp,
    /// Many sources rose together towards a shared destination (the incident layer).
    Fleet,
}

impl Reason {
    /// The name in the JSON record: `spike`, `new_source`, `ramp` or `fleet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Spike => "spike",
            Reason::NewSource => "new_source",
            Reason::Ramp => "ramp",
            Reason::Fleet => "fleet",
        }
    }
}

impl Spike {
    /// The record as one line of JSON, without the trailing newline.
    pub fn to_json_line(&self) -> String {
        // Serialising plain strings, integers and finite floats cannot fail; non-finite floats
        // become `null` in serde_json, which still cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Formats an hour as RFC 3339 UTC (`2026-03-05T14:00:00Z`); out-of-range values fall back to
/// the decimal number of seconds so this never fails.
pub fn format_hour(hour: i64) -> String {
    match chrono::DateTime::from_timestamp(hour, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => hour.to_string(),
    }
}

/// Parses what [`format_hour`] writes.
pub fn parse_hour(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    s.parse().ok()
}

/// 64-bit FNV-1a of `bytes`: small, stable across runs, platforms and Rust versions.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The deterministic id of a spike: 16 hex digits of FNV-1a over
/// `"blocked_outbound_spike|<mode>|<RFC 3339 hour>|<src_ip>"`.
///
/// ```
/// use flowspike_detect::{spike_id, Mode};
/// let a = spike_id(Mode::Window, 1_772_719_200, "10.1.2.3");
/// assert_eq!(a.len(), 16);
/// assert_eq!(a, spike_id(Mode::Window, 1_772_719_200, "10.1.2.3"));
/// assert_ne!(a, spike_id(Mode::Splunk, 1_772_719_200, "10.1.2.3"));
/// ```
pub fn spike_id(mode: Mode, hour: i64, src_ip: &str) -> String {
    let key = format!("{DETECTION}|{}|{}|{src_ip}", mode.as_str(), format_hour(hour));
    format!("{:016x}", fnv1a64(key.as_bytes()))
}

pub(crate) mod hour_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hour: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_hour(*hour))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hour(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid hour {s:?}: expected RFC 3339"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn hour_format_round_trips() {
        for (hour, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_772_719_200, "2026-03-05T14:00:00Z"),
            (i64::MAX, "9223372036854775807"),
        ] {
            assert_eq!(format_hour(hour), text);
            assert_eq!(parse_hour(text), Some(hour));
        }
    }

    #[test]
    fn json_line_field_order_and_round_trip() {
        let s = Spike {
            id: spike_id(Mode::Window, 1_772_719_200, "10.1.2.3"),
            detection: DETECTION.into(),
            mode: Mode::Window,
            hour: 1_772_719_200,
            src_ip: "10.1.2.3".into(),
            src_ips: Vec::new(),
            source_count: 0,
            blocked_count: 57,
            unique_dest_count: 31,
            dest_ips: vec!["8.8.8.8".into()],
            resource_ids: vec!["eni-0123456789abcdef0".into()],
            episode: None,
            baseline_mean: 3.2,
            baseline_stdev: 1.4,
            data_points: 212,
            threshold: 7.4,
            reason: None,
            expected: None,
            p_value: None,
            early: false,
        };
        let line = s.to_json_line();
        let expected = format!(
            "{{\"id\":\"{}\",\"detection\":\"blocked_outbound_spike\",\"mode\":\"window\",\
             \"hour\":\"2026-03-05T14:00:00Z\",\"src_ip\":\"10.1.2.3\",\"blocked_count\":57,\
             \"unique_dest_count\":31,\"dest_ips\":[\"8.8.8.8\"],\
             \"resource_ids\":[\"eni-0123456789abcdef0\"],\"baseline_mean\":3.2,\
             \"baseline_stdev\":1.4,\"data_points\":212,\"threshold\":7.4}}",
            s.id
        );
        assert_eq!(line, expected);
        let back: Spike = serde_json::from_str(&line).unwrap();
        assert_eq!(back, s);
    }
}
