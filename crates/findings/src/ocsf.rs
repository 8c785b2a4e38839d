//! The OCSF 1.1 Detection Finding of a spike record (class_uid 2004, category Findings, activity
//! Create, type_uid 200401), checked by the tests against the vendored OCSF 1.1.0 schema
//! (`tests/ocsf/`).
//!
//! Where the record's fields go:
//! - `finding_info`: `uid` the spike's id (an episode keeps its first id, so a consumer keyed by it
//!   updates one incident), `title`, `desc`, `types`, first/last seen, the `analytic` (statistical);
//! - `evidences`: the source endpoint (its address and interface id), the destinations and the
//!   counts (`data`); a fleet record has one evidence per source towards the shared destination;
//! - `resources`: the network interfaces (ENIs) that logged the flows;
//! - `unmapped.flowspike`: what OCSF 1.1 has no attribute for — the mode, the reason and the
//!   baseline (mean, stdev, data points, threshold, expected count, p-value), `early`, the episode.
//!   (OCSF 1.5 added `anomaly_analyses`; 1.1 is what Security Lake takes from custom sources.)
//! - with an [`AwsContext`]: the `cloud` profile (provider, region, account).

use flowspike_detect::{format_hour, Spike};
use serde_json::{json, Map, Value};

use crate::{description, first_hour, is_fleet, title, AwsContext, Severity, FINDING_TYPE};

/// The OCSF version the findings follow (`metadata.version`).
pub const OCSF_VERSION: &str = "1.1.0";
/// Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// Findings.
pub const CATEGORY_UID: u32 = 2;
/// Create: every record is the creation (or, keeping its uid, the continuation) of a finding.
pub const ACTIVITY_CREATE: u32 = 1;
/// `class_uid * 100 + activity_id`.
pub const TYPE_UID: u32 = CLASS_UID * 100 + ACTIVITY_CREATE;

/// Milliseconds since the epoch (OCSF's `timestamp_t`).
fn ms(secs: i64) -> i64 {
    secs.saturating_mul(1000)
}

/// The OCSF Detection Finding of `s`; `aws` adds the `cloud` profile.
pub fn detection_finding(s: &Spike, aws: Option<&AwsContext>) -> Value {
    let (severity_id, severity) = match Severity::of(s) {
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
    };
    let title = title(s);
    let mut types = vec![FINDING_TYPE.to_string()];
    if let Some(r) = s.reason {
        types.push(r.as_str().to_string());
    }
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "vendor_name": "flowspike",
            "name": "flowspike",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "log_name": s.detection,
    });
    let mut f = json!({
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": TYPE_UID,
        "type_name": "Detection Finding: Create",
        "time": ms(s.hour),
        "start_time": ms(first_hour(s)),
        "end_time": ms(s.hour + 3600),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "confidence_id": 3,
        "message": title,
        "count": s.blocked_count,
        "finding_info": {
            "uid": s.id,
            "title": title,
            "desc": description(s),
            "types": types,
            "first_seen_time": ms(first_hour(s)),
            "last_seen_time": ms(s.hour),
            "analytic": {
                "uid": format!("{}/{}", s.detection, s.mode.as_str()),
                "name": s.detection,
                "type_id": 3,
                "type": "Statistical",
            },
        },
        "evidences": evidences(s),
        "unmapped": { "flowspike": unmapped(s) },
    });
    let resources: Vec<Value> = s
        .resource_ids
        .iter()
        .map(|eni| {
            let mut r = json!({ "uid": eni, "type": "AWS::EC2::NetworkInterface" });
            if let Some(a) = aws {
                r["region"] = json!(a.region());
                r["cloud_partition"] = json!(a.partition());
            }
            r
        })
        .collect();
    if !resources.is_empty() {
        f["resources"] = Value::Array(resources);
    }
    if let Some(a) = aws {
        metadata["profiles"] = json!(["cloud"]);
        f["cloud"] = json!({
            "provider": "AWS",
            "region": a.region(),
            "account": { "uid": a.account_id(), "type_id": 10, "type": "AWS Account" },
        });
    }
    f["metadata"] = metadata;
    f
}

/// The network endpoint of an address.
fn endpoint(ip: &str) -> Value {
    json!({ "ip": ip })
}

/// The evidences: the source (or, for a fleet, each source) with its interface and destination,
/// and the counts.
fn evidences(s: &Spike) -> Vec<Value> {
    let mut data = Map::new();
    data.insert("blocked_count".into(), json!(s.blocked_count));
    data.insert("unique_dest_count".into(), json!(s.unique_dest_count));
    data.insert("dest_ips".into(), json!(s.dest_ips));
    data.insert("interface_uids".into(), json!(s.resource_ids));
    if is_fleet(s) {
        data.insert("source_count".into(), json!(s.source_count));
        let shared = s.dest_ips.first();
        let mut out = vec![];
        let mut head = json!({ "data": Value::Object(data) });
        if let Some(d) = shared {
            head["dst_endpoint"] = endpoint(d);
        } else {
            head["src_endpoint"] = endpoint(&s.src_ips[0]);
        }
        out.push(head);
        for src in &s.src_ips {
            let mut e = json!({ "src_endpoint": endpoint(src) });
            if let Some(d) = shared {
                e["dst_endpoint"] = endpoint(d);
            }
            out.push(e);
        }
        return out;
    }
    let mut src = endpoint(&s.src_ip);
    // One interface is the endpoint's own; several (a source seen on more than one ENI) are
    // listed in `data` and `resources` only.
    if let [eni] = s.resource_ids.as_slice() {
        src["interface_uid"] = json!(eni);
    }
    let mut e = json!({ "src_endpoint": src, "data": Value::Object(data) });
    if let Some(d) = s.dest_ips.first() {
        e["dst_endpoint"] = endpoint(d);
    }
    vec![e]
}

/// What OCSF 1.1 has no attribute for: the detection's mode, reason and baseline.
fn unmapped(s: &Spike) -> Value {
    let mut u = json!({
        "detection": s.detection,
        "mode": s.mode.as_str(),
        "hour": format_hour(s.hour),
        "baseline": {
            "mean": s.baseline_mean,
            "stdev": s.baseline_stdev,
            "data_points": s.data_points,
            "threshold": s.threshold,
        },
    });
    if let Some(r) = s.reason {
        u["reason"] = json!(r.as_str());
    }
    if let Some(e) = s.expected {
        u["baseline"]["expected"] = json!(e);
    }
    if let Some(p) = s.p_value {
        u["baseline"]["p_value"] = json!(p);
    }
    if s.early {
        u["early"] = json!(true);
    }
    if let Some(e) = &s.episode {
        u["episode"] = json!(e);
    }
    u
}
