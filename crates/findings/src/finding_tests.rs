//! The other detections' [`Finding`]s through each format: one of each detection (and the edge
//! cases: IPv6, a threat list whose flows were all rejected, oversized texts, an unknown
//! detection), checked like the spike records in `tests.rs`.

use serde_json::{json, Value};

use super::tests::{assert_asff_within_limits, assert_valid_ocsf, aws, H};
use super::*;

fn finding(detection: &str, subject: &str, summary: &str, count: u64, threshold: f64) -> Finding {
    Finding::new(detection, H, "10.1.2.3", subject, summary.into(), (count, threshold), json!({}))
}

fn port_scan() -> Finding {
    let mut f =
        finding("port_scan", "10.1.9.9", "10.1.2.3 probed 812 ports of 10.1.9.9", 812, 500.0);
    f.dst_ip = Some("10.1.9.9".into());
    f.evidence = json!({ "ports": 812, "low_ports": 140, "flows": 1650, "rejected_flows": 1602 });
    f
}

fn port_sweep() -> Finding {
    let mut f =
        finding("port_sweep", "6/443", "10.1.2.3 reached 300 addresses on tcp/443", 300, 250.0);
    f.dst_port = Some(443);
    f.protocol = Some(6);
    f.evidence = json!({ "destinations": 300, "flows": 310 });
    f
}

fn outbound_volume() -> Finding {
    let mut f = finding(
        "outbound_volume",
        "",
        "10.1.2.3 sent 9.3 GiB to external destinations in ACCEPTed flows, usually 120.0 MiB",
        10_000_000_000,
        900_000_000.0,
    );
    f.evidence = json!({
        "bytes": 10_000_000_000u64, "packets": 7_000_000, "mode": "adaptive", "unit_bytes": 1_000_000,
        "expected_bytes": 125_829_120.0, "baseline_mean_bytes": 120_000_000.0,
        "baseline_stdev_bytes": 30_000_000.0, "p_value": null, "fleet_sources": 0,
    });
    f
}

fn threat_list() -> Finding {
    let mut f = finding("threat_list", "tor", "10.1.2.3 exchanged 4 flows with tor exits", 4, 1.0);
    f.dst_ip = Some("198.51.100.7".into());
    f.dst_port = Some(9001);
    f.protocol = Some(6);
    f.list = Some("tor".into());
    f.evidence = json!({
        "flows": 4, "accepted_flows": 4, "rejected_flows": 0, "outbound_flows": 4,
        "first_seen": H + 50, "last_seen": H + 200, "remote_ips": ["198.51.100.7"],
        "remote_ip_count": 1, "ports": [9001], "truncated": false,
    });
    f
}

/// One finding of each detection, then the edge cases.
fn every_kind() -> Vec<Finding> {
    let mut out = vec![port_scan(), port_sweep(), outbound_volume(), threat_list()];
    // All flows rejected: medium; times as RFC 3339 text; an IPv6 source and list entry.
    let mut rejected = threat_list();
    rejected.severity = "medium".into();
    rejected.src_ip = "fd00::7".into();
    rejected.dst_ip = Some("2001:db8::66".into());
    rejected.dst_port = None;
    rejected.protocol = None;
    rejected.evidence["first_seen"] = json!("2026-03-05T14:10:00Z");
    rejected.evidence["last_seen"] = json!("2026-03-05T14:20:00Z");
    out.push(rejected);
    let mut sweep_v6 = port_sweep();
    sweep_v6.src_ip = "fd00::9".into();
    sweep_v6.protocol = Some(17);
    sweep_v6.dst_port = Some(53);
    out.push(sweep_v6);
    // Texts and evidence past every ASFF limit.
    let mut long = port_scan();
    long.summary = "x".repeat(3000);
    long.list = Some("l".repeat(400));
    long.evidence = (0..80).map(|i| (format!("field_{i}"), json!("v".repeat(3000)))).collect();
    out.push(long);
    out.push(finding("dns_tunnel", "", "something new", 3, 1.0));
    out
}

#[test]
fn native_is_the_finding_record_and_reads_back() {
    let e = Encoder::new(Format::Native, Some(aws())).unwrap();
    for f in every_kind() {
        let line = e.finding_line(&f);
        assert_eq!(line, f.to_json_line());
        assert_eq!(Encoder::default().finding_line(&f), line);
        let back: Finding = serde_json::from_str(&line).unwrap();
        assert_eq!(back, f);
    }
    let v: Value = serde_json::from_str(&port_sweep().to_json_line()).unwrap();
    assert_eq!(v["hour"], "2026-03-05T14:00:00Z");
    // Absent options are left out, not written as null.
    assert!(v.get("dst_ip").is_none() && v.get("list").is_none());
}

#[test]
fn ocsf_findings_of_every_detection_validate_against_the_schema() {
    let e = Encoder::new(Format::Ocsf, None).unwrap();
    let records: Vec<Value> = every_kind()
        .iter()
        .flat_map(|f| {
            let line: Value = serde_json::from_str(&e.finding_line(f)).unwrap();
            assert_eq!(line, ocsf::detection_finding_of(f, None));
            [line, ocsf::detection_finding_of(f, Some(&aws()))]
        })
        .collect();
    assert_valid_ocsf(&records);
}

#[test]
fn ocsf_names_the_detection_and_its_attack() {
    for (f, technique, tactic) in [
        (port_scan(), "T1046", "TA0007"),
        (port_sweep(), "T1046", "TA0007"),
        (outbound_volume(), "T1048", "TA0010"),
        (threat_list(), "T1071", "TA0011"),
    ] {
        let o = ocsf::detection_finding_of(&f, None);
        let info = &o["finding_info"];
        assert_eq!(info["uid"], f.id.as_str());
        assert_eq!(info["types"], json!([format!("flowspike/{}", f.detection)]));
        assert_eq!(info["desc"].as_str().unwrap().split(". ").next(), Some(f.summary.as_str()));
        assert_eq!(info["attacks"][0]["technique"]["uid"], technique, "{}", f.detection);
        assert_eq!(info["attacks"][0]["tactic"]["uid"], tactic, "{}", f.detection);
        assert_eq!(o["severity_id"], 4);
        assert_eq!(o["metadata"]["log_name"], f.detection.as_str());
        assert_eq!(o["evidences"][0]["src_endpoint"]["ip"], "10.1.2.3");
        assert_eq!(o["unmapped"]["flowspike"]["count"], f.count);
        assert_eq!(o["unmapped"]["flowspike"]["threshold"], f.threshold);
        assert_eq!(o["unmapped"]["flowspike"]["evidence"], f.evidence);
    }
    let unknown = every_kind().pop().unwrap();
    let o = ocsf::detection_finding_of(&unknown, None);
    assert!(o["finding_info"].get("attacks").is_none());
    assert_eq!(o["finding_info"]["types"][0], "flowspike/dns_tunnel");
}

#[test]
fn ocsf_evidence_has_the_destination_where_known() {
    let scan = ocsf::detection_finding_of(&port_scan(), None);
    assert_eq!(scan["evidences"][0]["dst_endpoint"], json!({ "ip": "10.1.9.9" }));
    assert!(scan["evidences"][0].get("connection_info").is_none());
    assert_eq!(
        (scan["time"].as_i64(), scan["end_time"].as_i64()),
        (Some(H * 1000), Some((H + 3600) * 1000))
    );
    let sweep = ocsf::detection_finding_of(&port_sweep(), None);
    assert_eq!(
        sweep["evidences"][0]["dst_endpoint"],
        json!({ "port": 443, "svc_name": "tcp/443" })
    );
    assert_eq!(sweep["evidences"][0]["connection_info"]["protocol_num"], 6);
    assert_eq!(sweep["finding_info"]["analytic"]["type_id"], 1);
    let volume = ocsf::detection_finding_of(&outbound_volume(), None);
    assert!(volume["evidences"][0].get("dst_endpoint").is_none());
    assert_eq!(volume["finding_info"]["analytic"]["type"], "Statistical");
    let list = ocsf::detection_finding_of(&threat_list(), Some(&aws()));
    assert_eq!(list["evidences"][0]["dst_endpoint"], json!({ "ip": "198.51.100.7", "port": 9001 }));
    assert_eq!(list["unmapped"]["flowspike"]["list"], "tor");
    assert_eq!(list["cloud"]["account"]["uid"], "123456789012");
    // A threat list's row says when its flows were seen.
    assert_eq!(list["finding_info"]["first_seen_time"], (H + 50) * 1000);
    assert_eq!(list["finding_info"]["last_seen_time"], (H + 200) * 1000);
    assert_eq!(
        (list["start_time"].as_i64(), list["end_time"].as_i64()),
        (Some((H + 50) * 1000), Some((H + 200) * 1000))
    );
    let rejected = ocsf::detection_finding_of(&every_kind()[4], None);
    assert_eq!(rejected["severity_id"], 3);
    assert_eq!(rejected["finding_info"]["first_seen_time"], (H + 600) * 1000);
    // Other detections' rows may carry such fields too; only a threat list's are its times.
    let mut scan = port_scan();
    scan.evidence["first_seen"] = json!(H + 50);
    scan.evidence["last_seen"] = json!(H + 60);
    let o = ocsf::detection_finding_of(&scan, None);
    assert_eq!(o["finding_info"]["first_seen_time"], H * 1000);
}

/// The validator checks what this mapping adds: a damaged ATT&CK entry or endpoint fails.
#[test]
fn the_ocsf_validator_rejects_damaged_findings_of_detections() {
    let good = ocsf::detection_finding_of(&port_sweep(), Some(&aws()));
    type Damage = (&'static str, fn(&mut Value));
    let damages: [Damage; 4] = [
        ("attack with none of tactic, technique, sub_technique", |f| {
            f["finding_info"]["attacks"] = json!([{ "version": "14" }]);
        }),
        ("technique uid as a number", |f| {
            f["finding_info"]["attacks"][0]["technique"]["uid"] = 1046.into();
        }),
        ("endpoint with a port only", |f| {
            f["evidences"][0]["dst_endpoint"] = json!({ "port": 443 });
        }),
        ("connection_info without its direction_id", |f| {
            f["evidences"][0]["connection_info"].as_object_mut().unwrap().remove("direction_id");
        }),
    ];
    for (what, damage) in damages {
        let mut f = good.clone();
        damage(&mut f);
        let r = std::panic::catch_unwind(|| assert_valid_ocsf(&[f]));
        assert!(r.is_err(), "the validator accepted: {what}");
    }
}

#[test]
fn asff_findings_of_every_detection_are_within_limits() {
    let e = Encoder::new(Format::Asff, Some(aws())).unwrap();
    for f in every_kind() {
        let a: Value = serde_json::from_str(&e.finding_line(&f)).unwrap();
        assert_asff_within_limits(&a);
        assert_eq!(a["Id"], format!("flowspike/eu-west-1/123456789012/{}", f.id));
        assert_eq!(a["GeneratorId"], format!("flowspike/{}", f.detection));
        assert_eq!(
            a["Resources"],
            json!([{
                "Type": "Other", "Id": f.src_ip, "Partition": "aws", "Region": "eu-west-1"
            }])
        );
    }
    let long: Value = serde_json::from_str(&e.finding_line(&every_kind()[6])).unwrap();
    assert_eq!(long["Description"].as_str().unwrap().chars().count(), DESCRIPTION_MAX);
    assert_eq!(long["ProductFields"].as_object().unwrap().len(), asff::PRODUCT_FIELDS_MAX);
}

#[test]
fn asff_types_and_network_follow_the_detection() {
    let check = |f: Finding, asff_type: &str| {
        let a = asff::finding_of(&f, &aws());
        assert_eq!(a.types, vec![asff_type.to_string()], "{}", f.detection);
        assert_eq!(a.network.source_ip_v4.as_deref(), Some("10.1.2.3"));
        assert_eq!(a.product_fields["flowspike/count"], f.count.to_string());
        assert_eq!(a.product_fields["flowspike/threshold"], f.threshold.to_string());
        assert_eq!(a.severity.label, "HIGH");
        a
    };
    let scan = check(port_scan(), "TTPs/Discovery/Vertical Port Scan");
    assert_eq!(scan.network.destination_ip_v4.as_deref(), Some("10.1.9.9"));
    assert_eq!(scan.product_fields["flowspike/evidence/low_ports"], "140");
    let sweep = check(port_sweep(), "TTPs/Discovery/Port Sweep");
    assert_eq!(
        (sweep.network.destination_port, sweep.network.protocol.as_deref()),
        (Some(443), Some("tcp"))
    );
    assert_eq!(sweep.network.destination_ip_v4, None);
    let volume = check(outbound_volume(), "Effects/Data Exfiltration/Unusual Outbound Volume");
    assert_eq!(volume.product_fields["flowspike/evidence/mode"], "adaptive");
    assert!(!volume.product_fields.contains_key("flowspike/evidence/p_value"));
    assert_eq!(
        (volume.created_at.as_str(), volume.updated_at.as_str()),
        ("2026-03-05T14:00:00Z", "2026-03-05T14:00:00Z")
    );
    let list = check(threat_list(), "TTPs/Command and Control/Threat List Contact");
    assert_eq!(list.product_fields["flowspike/list"], "tor");
    assert_eq!(list.first_observed_at, "2026-03-05T14:00:50Z");
    assert_eq!(list.last_observed_at, "2026-03-05T14:03:20Z");
    let v6 = asff::finding_of(&every_kind()[4], &aws());
    assert_eq!(v6.severity.label, "MEDIUM");
    assert_eq!(v6.network.source_ip_v6.as_deref(), Some("fd00::7"));
    assert_eq!(v6.network.destination_ip_v6.as_deref(), Some("2001:db8::66"));
    // The same hour replayed gives the same finding (Security Hub updates it).
    assert_eq!(asff::finding_of(&port_scan(), &aws()), asff::finding_of(&port_scan(), &aws()));
}

#[test]
fn titles_fit_asff_and_say_what_was_seen() {
    let check = |f: Finding, want: &str| assert_eq!(finding_title(&f), want);
    check(port_scan(), "Vertical port scan from 10.1.2.3 to 10.1.9.9: 812 ports in an hour");
    check(port_sweep(), "Port sweep from 10.1.2.3 on port tcp/443: 300 destinations in an hour");
    check(threat_list(), "10.1.2.3 exchanged 4 flows with addresses on threat list tor");
    let mut long = threat_list();
    long.list = Some("l".repeat(400));
    assert_eq!(finding_title(&long).chars().count(), TITLE_MAX);
}
