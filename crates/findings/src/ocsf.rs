//! The OCSF 1.1 Detection Finding of a spike record or of another detection's [`Finding`]
//! (class_uid 2004, category Findings, activity Create, type_uid 200401), checked by the tests
//! against the vendored OCSF 1.1.0 schema (`tests/ocsf/`).
//!
//! Where a spike record's fields go (a [`Finding`]'s: [`detection_finding_of`]):
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

use crate::kind::{protocol_name, seen, service};
use crate::{
    description, finding_description, finding_title, first_hour, is_fleet, title, AwsContext,
    Finding, Kind, Severity, ATTACK_VERSION, FINDING_TYPE,
};

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

/// What every Detection Finding of flowspike has, whatever the record behind it.
struct Common<'a> {
    /// `finding_info.uid`.
    uid: &'a str,
    title: String,
    desc: String,
    types: Vec<String>,
    severity: Severity,
    /// `time`: the record's hour (seconds).
    time: i64,
    /// `start_time` and `finding_info.first_seen_time` (seconds).
    first: i64,
    /// `finding_info.last_seen_time` (seconds).
    last: i64,
    /// `end_time` (seconds).
    end: i64,
    /// `metadata.log_name`: the detection.
    log_name: &'a str,
    analytic: Value,
}

/// The finding of `c`, with the `cloud` profile when `aws` is given.
fn finding(c: Common<'_>, aws: Option<&AwsContext>) -> Value {
    let (severity_id, severity) = c.severity.ocsf();
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "vendor_name": "flowspike",
            "name": "flowspike",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "log_name": c.log_name,
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
        "time": ms(c.time),
        "start_time": ms(c.first),
        "end_time": ms(c.end),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": 1,
        "status": "New",
        "confidence_id": 3,
        "message": c.title,
        "finding_info": {
            "uid": c.uid,
            "title": c.title,
            "desc": c.desc,
            "types": c.types,
            "first_seen_time": ms(c.first),
            "last_seen_time": ms(c.last),
            "analytic": c.analytic,
        },
    });
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

/// The OCSF Detection Finding of `s`; `aws` adds the `cloud` profile.
pub fn detection_finding(s: &Spike, aws: Option<&AwsContext>) -> Value {
    let mut types = vec![FINDING_TYPE.to_string()];
    if let Some(r) = s.reason {
        types.push(r.as_str().to_string());
    }
    let mut f = finding(
        Common {
            uid: &s.id,
            title: title(s),
            desc: description(s),
            types,
            severity: Severity::of(s),
            time: s.hour,
            first: first_hour(s),
            last: s.hour,
            end: s.hour + 3600,
            log_name: &s.detection,
            analytic: json!({
                "uid": format!("{}/{}", s.detection, s.mode.as_str()),
                "name": s.detection,
                "type_id": 3,
                "type": "Statistical",
            }),
        },
        aws,
    );
    f["count"] = json!(s.blocked_count);
    f["evidences"] = Value::Array(evidences(s));
    f["unmapped"] = json!({ "flowspike": unmapped(s) });
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
    f
}

/// The OCSF Detection Finding of another detection's [`Finding`] (port scan, port sweep,
/// outbound volume, threat list); `aws` adds the `cloud` profile.
///
/// `finding_info.types` is `flowspike/<detection>`, `finding_info.attacks` the closest ATT&CK
/// technique ([`Kind`]); the evidence names the source and, where the finding has them, the
/// destination address and port (a sweep's port alone: `svc_name` `tcp/443`) and the protocol;
/// `unmapped.flowspike` keeps the figure, its threshold and the record's `evidence` whole.
pub fn detection_finding_of(f: &Finding, aws: Option<&AwsContext>) -> Value {
    let kind = Kind::of(&f.detection);
    let seen = seen(f);
    let analytic_type = if kind.analytic_type_id == 3 { "Statistical" } else { "Rule" };
    let mut out = finding(
        Common {
            uid: &f.id,
            title: finding_title(f),
            desc: finding_description(f),
            types: vec![format!("flowspike/{}", f.detection)],
            severity: Severity::of_finding(f),
            time: f.hour,
            first: seen.first,
            last: seen.last,
            end: seen.end,
            log_name: &f.detection,
            analytic: json!({
                "uid": f.detection,
                "name": f.detection,
                "type_id": kind.analytic_type_id,
                "type": analytic_type,
            }),
        },
        aws,
    );
    if let Some(a) = kind.attack {
        out["finding_info"]["attacks"] = json!([{
            "technique": { "uid": a.technique_uid, "name": a.technique },
            "tactic": { "uid": a.tactic_uid, "name": a.tactic },
            "version": ATTACK_VERSION,
        }]);
    }
    let mut evidence = json!({ "src_endpoint": endpoint(&f.src_ip) });
    let mut dst = Map::new();
    if let Some(ip) = &f.dst_ip {
        dst.insert("ip".into(), json!(ip));
    }
    if let Some(port) = f.dst_port {
        dst.insert("port".into(), json!(port));
        if f.dst_ip.is_none() {
            // A sweep has a port and many addresses; an endpoint needs one of its naming
            // attributes, and the service (`tcp/443`) is what the port stands for.
            dst.insert("svc_name".into(), json!(service(port, f.protocol)));
        }
    }
    if !dst.is_empty() {
        evidence["dst_endpoint"] = Value::Object(dst);
    }
    if let Some(p) = f.protocol {
        // The direction is not the finding's to say (a scan may be internal to internal).
        evidence["connection_info"] = json!({
            "protocol_num": p,
            "protocol_name": protocol_name(p),
            "direction_id": 0,
            "direction": "Unknown",
        });
    }
    out["evidences"] = json!([evidence]);
    let mut u = json!({
        "detection": f.detection,
        "hour": format_hour(f.hour),
        "count": f.count,
        "threshold": f.threshold,
        "evidence": f.evidence,
    });
    if let Some(l) = &f.list {
        u["list"] = json!(l);
    }
    out["unmapped"] = json!({ "flowspike": u });
    out
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
