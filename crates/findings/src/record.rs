//! The record of an alert of the detections other than the blocked spike (port scans, port
//! sweeps, outbound volume, threat lists; made by `flowspike-detections`).

use serde::{Deserialize, Serialize};

use flowspike_detect::{fnv1a64, format_hour};

/// One alert of a detection other than the blocked-outbound spike, written as one JSON object per
/// line next to the spike records (same file, same `id`/`detection`/`hour`/`src_ip` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Deterministic id: [`finding_id`] of detection, hour, source and subject.
    pub id: String,
    /// `port_scan`, `port_sweep`, `outbound_volume` or `threat_list`.
    pub detection: String,
    /// Start of the hour, unix seconds; serialised as RFC 3339 (`2026-03-05T14:00:00Z`).
    #[serde(with = "hour_text")]
    pub hour: i64,
    /// The internal address the finding is about (the scanner, the sender, the host talking to a
    /// listed address).
    pub src_ip: String,
    /// One line for a person: what was seen.
    pub summary: String,
    /// `high` (scans, threat-list flows that were accepted, volume) or `medium` (threat-list flows
    /// that were all rejected).
    pub severity: String,
    /// The destination scanned (port scan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<String>,
    /// The port swept (port sweep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// The IANA protocol number of the sweep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    /// The threat list matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// The figure judged: distinct ports (scan), distinct destinations (sweep), bytes (volume),
    /// flows (threat list).
    pub count: u64,
    /// What `count` was compared with: the alert fires at `count >= threshold` (scans, threat
    /// lists: 1) or, for volume, `count > threshold` (the largest volume that would not alert).
    pub threshold: f64,
    /// The hour's aggregate behind the finding (the row of the detection's table), and for volume
    /// the baseline.
    pub evidence: serde_json::Value,
}

impl Finding {
    /// A `high` finding of `detection` (its record name, `port_scan`) about `src_ip` in `hour`, its
    /// id made of `subject` (the destination scanned, the port swept, the list); `judged` is its
    /// (count, threshold). No destination, port, protocol or list yet: each detection sets its own.
    pub fn new(
        detection: &str,
        hour: i64,
        src_ip: &str,
        subject: &str,
        summary: String,
        (count, threshold): (u64, f64),
        evidence: serde_json::Value,
    ) -> Finding {
        Finding {
            id: finding_id(detection, hour, src_ip, subject),
            detection: detection.to_owned(),
            hour,
            src_ip: src_ip.to_owned(),
            summary,
            severity: "high".to_owned(),
            dst_ip: None,
            dst_port: None,
            protocol: None,
            list: None,
            count,
            threshold,
            evidence,
        }
    }

    /// The finding as one line of JSON (no newline).
    pub fn to_json_line(&self) -> String {
        // A struct of strings, numbers and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The id of a finding: 16 hex digits of FNV-1a over detection (its record name, `port_scan`),
/// hour, source and `subject` (the destination scanned, the port swept, the list), so that
/// replaying an hour again gives the same ids.
pub fn finding_id(detection: &str, hour: i64, src_ip: &str, subject: &str) -> String {
    let key = format!("{detection}|{}|{src_ip}|{subject}", format_hour(hour));
    format!("{:016x}", fnv1a64(key.as_bytes()))
}

mod hour_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hour: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&flowspike_detect::format_hour(*hour))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        flowspike_detect::parse_hour(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad hour {s:?}")))
    }
}
