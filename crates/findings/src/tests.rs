use std::path::PathBuf;
use std::process::Command;

use flowspike_detect::incident::Episode;
use flowspike_detect::{spike_id, Mode, Reason, Spike, DETECTION};
use serde_json::Value;

use super::*;

pub(crate) const H: i64 = 1_772_719_200; // 2026-03-05T14:00:00Z

pub(crate) fn aws() -> AwsContext {
    AwsContext::new("123456789012", "eu-west-1").unwrap()
}

fn window_spike() -> Spike {
    let mut s: Spike = serde_json::from_value(serde_json::json!({
        "id": "", "detection": DETECTION, "mode": "window", "hour": "2026-03-05T14:00:00Z",
        "src_ip": "10.1.2.3", "blocked_count": 57, "unique_dest_count": 2,
        "dest_ips": ["8.8.8.8", "1.1.1.1"], "resource_ids": ["eni-0123456789abcdef0"],
        "baseline_mean": 3.2, "baseline_stdev": 1.4, "data_points": 212, "threshold": 7.4
    }))
    .unwrap();
    s.id = spike_id(Mode::Window, H, &s.src_ip);
    s
}

fn adaptive(reason: Reason) -> Spike {
    let mut s = window_spike();
    s.mode = Mode::Adaptive;
    s.id = spike_id(Mode::Adaptive, H, &s.src_ip);
    s.reason = Some(reason);
    s.expected = Some(2.5);
    s.p_value = Some(1.5e-7);
    s.episode =
        Some(Episode { first_hour: H, last_hour: H, peak_hour: H, peak_count: 57, hours: 1 });
    s
}

/// Every kind of record the detection writes: window, splunk, each adaptive reason (a ramp in
/// its third hour, an early alert, one without interface ids, one on two interfaces), a fleet
/// incident, an IPv6 source and one whose texts exceed ASFF's limits.
fn every_kind() -> Vec<Spike> {
    let mut out = vec![window_spike()];
    let mut splunk = window_spike();
    splunk.mode = Mode::Splunk;
    splunk.resource_ids.clear();
    out.push(splunk);
    out.push(adaptive(Reason::Spike));
    let mut new_source = adaptive(Reason::NewSource);
    new_source.resource_ids = vec!["eni-1".into(), "eni-2".into()];
    out.push(new_source);
    let mut ramp = adaptive(Reason::Ramp);
    ramp.hour = H + 2 * 3600;
    ramp.episode = Some(Episode {
        first_hour: H,
        last_hour: H + 2 * 3600,
        peak_hour: H + 3600,
        peak_count: 80,
        hours: 3,
    });
    out.push(ramp);
    let mut early = adaptive(Reason::Spike);
    early.early = true;
    out.push(early);
    let mut fleet = adaptive(Reason::Fleet);
    fleet.src_ip.clear();
    fleet.src_ips = (1..=6).map(|i| format!("10.0.0.{i}")).collect();
    fleet.source_count = 6;
    fleet.dest_ips = vec!["203.0.113.9".into()];
    fleet.unique_dest_count = 1;
    fleet.id = spike_id(Mode::Adaptive, H, "fleet:203.0.113.9");
    fleet.resource_ids = (1..=40).map(|i| format!("eni-{i:017x}")).collect();
    out.push(fleet);
    let mut v6 = window_spike();
    v6.src_ip = "fd00::1".into();
    v6.dest_ips = vec!["2001:db8::1".into()];
    out.push(v6);
    let mut long = window_spike();
    long.dest_ips = (0..500).map(|i| format!("198.51.{}.{}", i / 250, i % 250)).collect();
    long.unique_dest_count = 500;
    out.push(long);
    out
}

#[test]
fn formats_parse_and_print() {
    for (text, f) in [("native", Format::Native), ("ocsf", Format::Ocsf), ("asff", Format::Asff)] {
        assert_eq!(text.parse::<Format>().unwrap(), f);
        assert_eq!(f.to_string(), text);
    }
    assert_eq!("json".parse::<Format>(), Err(FindingsError::UnknownFormat("json".into())));
}

#[test]
fn native_is_the_spike_record_byte_for_byte() {
    let e = Encoder::new(Format::Native, Some(aws())).unwrap();
    for s in every_kind() {
        assert_eq!(e.to_json_line(&s), s.to_json_line());
        assert_eq!(Encoder::default().to_json_line(&s), s.to_json_line());
    }
}

#[test]
fn asff_needs_an_account_and_checks_it() {
    assert_eq!(
        Encoder::new(Format::Asff, None),
        Err(FindingsError::MissingAccount("--output-format asff"))
    );
    let check = |account: &str, region: &str, ok: bool| {
        assert_eq!(AwsContext::new(account, region).is_ok(), ok, "{account} {region}");
    };
    check("123456789012", "us-east-1", true);
    check("12345678901", "us-east-1", false);
    check("12345678901a", "us-east-1", false);
    check("123456789012", "", false);
    check("123456789012", "EU West", false);
    assert_eq!(AwsContext::new("123456789012", "cn-north-1").unwrap().partition(), "aws-cn");
    assert_eq!(AwsContext::new("123456789012", "us-gov-west-1").unwrap().partition(), "aws-us-gov");
}

/// ASFF's documented required attributes and limits (Security Hub user guide, "Required
/// top-level attributes in ASFF"), checked on every kind of record.
#[test]
fn asff_has_the_required_attributes_within_limits() {
    let e = Encoder::new(Format::Asff, Some(aws())).unwrap();
    for s in every_kind() {
        let f: Value = serde_json::from_str(&e.to_json_line(&s)).unwrap();
        assert_eq!(
            f["ProductArn"],
            "arn:aws:securityhub:eu-west-1:123456789012:product/123456789012/default"
        );
        assert_eq!(f["AwsAccountId"], "123456789012");
        assert_eq!(f["Id"], format!("flowspike/eu-west-1/123456789012/{}", s.id));
        for t in f["Types"].as_array().unwrap() {
            assert!(t.as_str().unwrap().starts_with("Unusual Behaviors/"), "{t}");
        }
        assert_asff_within_limits(&f);
    }
}

/// ASFF's required attributes and their documented limits (Security Hub user guide, "Required
/// top-level attributes in ASFF"), whatever record `f` was made of.
pub(crate) fn assert_asff_within_limits(f: &Value) {
    for k in asff::REQUIRED_ATTRIBUTES {
        assert!(f.get(k).is_some(), "{k} missing in {f}");
    }
    assert_eq!(f["SchemaVersion"], "2018-10-08");
    for k in ["Id", "GeneratorId"] {
        assert!(f[k].as_str().unwrap().len() <= 512, "{k}");
    }
    assert!(f["Title"].as_str().unwrap().chars().count() <= 256);
    assert!(f["Description"].as_str().unwrap().chars().count() <= 1024);
    let types = f["Types"].as_array().unwrap();
    assert!(!types.is_empty() && types.len() <= 50);
    for t in types {
        // namespace/category/classifier, with one of ASFF's namespaces.
        let t = t.as_str().unwrap();
        let namespace = t.split('/').next().unwrap();
        assert!(
            [
                "Software and Configuration Checks",
                "TTPs",
                "Effects",
                "Unusual Behaviors",
                "Sensitive Data Identifications"
            ]
            .contains(&namespace)
                && t.split('/').count() <= 3,
            "{t}"
        );
    }
    for k in ["CreatedAt", "UpdatedAt", "FirstObservedAt", "LastObservedAt"] {
        assert!(flowspike_detect::parse_hour(f[k].as_str().unwrap()).is_some(), "{k}");
    }
    assert!(f["CreatedAt"].as_str() <= f["UpdatedAt"].as_str());
    assert!(["LOW", "MEDIUM", "HIGH", "CRITICAL", "INFORMATIONAL"]
        .contains(&f["Severity"]["Label"].as_str().unwrap()));
    let resources = f["Resources"].as_array().unwrap();
    assert!((1..=32).contains(&resources.len()));
    for r in resources {
        assert!(r["Type"].is_string() && r["Id"].is_string(), "{r}");
    }
    let fields = f["ProductFields"].as_object().unwrap();
    assert!(fields.len() <= 50);
    for (k, v) in fields {
        assert!(k.len() <= 128 && v.as_str().unwrap().chars().count() <= 2048, "{k}");
    }
}

#[test]
fn asff_resources_are_the_interfaces_or_the_source() {
    let f = asff::finding(&window_spike(), &aws());
    assert_eq!(f.resources.len(), 1);
    assert_eq!(f.resources[0].kind, "AwsEc2NetworkInterface");
    assert_eq!(
        f.resources[0].id,
        "arn:aws:ec2:eu-west-1:123456789012:network-interface/eni-0123456789abcdef0"
    );
    assert_eq!(f.network.source_ip_v4.as_deref(), Some("10.1.2.3"));
    assert_eq!(f.network.destination_ip_v4.as_deref(), Some("8.8.8.8"));
    let mut none = window_spike();
    none.resource_ids.clear();
    let f = asff::finding(&none, &aws());
    assert_eq!((f.resources[0].kind.as_str(), f.resources[0].id.as_str()), ("Other", "10.1.2.3"));
    let fleet = every_kind().into_iter().find(|s| s.reason == Some(Reason::Fleet)).unwrap();
    let f = asff::finding(&fleet, &aws());
    assert_eq!(f.resources.len(), asff::RESOURCES_MAX);
    assert_eq!(f.network.source_ip_v4, None);
    assert_eq!(f.severity.label, "HIGH");
    assert_eq!(f.product_fields["flowspike/source_count"], "6");
}

/// An episode's later record keeps the first record's id: the ASFF `Id` (and the OCSF
/// `finding_info.uid`) stay, so Security Hub updates the finding instead of adding one.
#[test]
fn a_continued_episode_updates_the_same_finding() {
    let first = adaptive(Reason::Spike);
    let mut later = first.clone();
    later.hour = H + 3600;
    later.blocked_count = 90;
    later.episode = Some(Episode {
        first_hour: H,
        last_hour: H + 3600,
        peak_hour: H + 3600,
        peak_count: 90,
        hours: 2,
    });
    let (a, b) = (asff::finding(&first, &aws()), asff::finding(&later, &aws()));
    assert_eq!(a.id, b.id);
    assert_eq!(a.created_at, b.created_at);
    assert!(b.updated_at > a.updated_at);
    let (a, b) = (ocsf::detection_finding(&first, None), ocsf::detection_finding(&later, None));
    assert_eq!(a["finding_info"]["uid"], b["finding_info"]["uid"]);
}

#[test]
fn texts_are_clipped_to_asff_limits() {
    let long = every_kind().pop().unwrap();
    let d = description(&long);
    assert_eq!(d.chars().count(), DESCRIPTION_MAX);
    assert!(d.ends_with('…'));
    assert_eq!(clip("abc".into(), 3), "abc");
    assert_eq!(clip("abcd".into(), 3), "ab…");
    assert_eq!(clip("ééééé".into(), 4), "ééé…");
}

#[test]
fn ocsf_carries_the_detection() {
    let s = adaptive(Reason::Spike);
    let f = ocsf::detection_finding(&s, Some(&aws()));
    for (k, v) in [
        ("class_uid", 2004),
        ("category_uid", 2),
        ("activity_id", 1),
        ("type_uid", 200401),
        ("severity_id", 3),
        ("status_id", 1),
    ] {
        assert_eq!(f[k], v, "{k}");
    }
    assert_eq!(f["time"], H * 1000);
    assert_eq!(f["finding_info"]["uid"], s.id.as_str());
    assert_eq!(f["evidences"][0]["src_endpoint"]["ip"], "10.1.2.3");
    assert_eq!(f["evidences"][0]["src_endpoint"]["interface_uid"], "eni-0123456789abcdef0");
    assert_eq!(f["evidences"][0]["dst_endpoint"]["ip"], "8.8.8.8");
    assert_eq!(f["evidences"][0]["data"]["blocked_count"], 57);
    assert_eq!(f["resources"][0]["uid"], "eni-0123456789abcdef0");
    assert_eq!(f["unmapped"]["flowspike"]["baseline"]["threshold"], 7.4);
    assert_eq!(f["unmapped"]["flowspike"]["baseline"]["expected"], 2.5);
    assert_eq!(f["unmapped"]["flowspike"]["reason"], "spike");
    assert_eq!(f["cloud"]["account"]["uid"], "123456789012");
    assert_eq!(f["metadata"]["profiles"][0], "cloud");
    let fleet = every_kind().into_iter().find(|s| s.reason == Some(Reason::Fleet)).unwrap();
    let f = ocsf::detection_finding(&fleet, None);
    // The counts, then one evidence per source towards the shared destination.
    assert_eq!(f["evidences"].as_array().unwrap().len(), 1 + 6);
    assert_eq!(f["evidences"][3]["src_endpoint"]["ip"], "10.0.0.3");
    assert_eq!(f["evidences"][3]["dst_endpoint"]["ip"], "203.0.113.9");
    assert_eq!(f["severity_id"], 4);
    assert!(f.get("cloud").is_none());
}

/// `tests/ocsf/validate.py` over the OCSF 1.1.0 schema source vendored in `tests/ocsf/`: `$FLOWSPIKE_PYTHON`
/// (default `python3`; no package needed) validates `records`, and must report them all valid.
pub(crate) fn assert_valid_ocsf(records: &[Value]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/ocsf/validate.py");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("findings.jsonl");
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let python = std::env::var("FLOWSPIKE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(&root)
        .arg("detection_finding")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (set FLOWSPIKE_PYTHON): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "OCSF validation failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{} events valid", records.len())), "{stdout}");
}

#[test]
fn ocsf_findings_validate_against_the_schema() {
    let mut records = Vec::new();
    for s in every_kind() {
        records.push(ocsf::detection_finding(&s, None));
        records.push(ocsf::detection_finding(&s, Some(&aws())));
    }
    assert_valid_ocsf(&records);
}

/// The validator is no rubber stamp: each of these damages makes it fail.
#[test]
fn the_ocsf_validator_rejects_damaged_findings() {
    let good = ocsf::detection_finding(&adaptive(Reason::Spike), Some(&aws()));
    type Damage = (&'static str, fn(&mut Value));
    let damages: [Damage; 8] = [
        ("required finding_info.uid missing", |f| {
            f["finding_info"].as_object_mut().unwrap().remove("uid");
        }),
        ("severity_id out of its enum", |f| f["severity_id"] = 7.into()),
        ("unknown top-level attribute", |f| f["baseline"] = 1.into()),
        ("type_uid not class_uid*100+activity", |f| f["type_uid"] = 200402.into()),
        ("time as a string", |f| f["time"] = "2026-03-05".into()),
        ("bad IP", |f| f["evidences"][0]["src_endpoint"]["ip"] = "10.1.2".into()),
        ("evidence with nothing of its at_least_one", |f| {
            f["evidences"] = serde_json::json!([{}]);
        }),
        ("cloud without the cloud profile", |f| {
            f["metadata"].as_object_mut().unwrap().remove("profiles");
        }),
    ];
    for (what, damage) in damages {
        let mut f = good.clone();
        damage(&mut f);
        let r = std::panic::catch_unwind(|| assert_valid_ocsf(&[f]));
        assert!(r.is_err(), "the validator accepted: {what}");
    }
}
