//! The detections beside the blocked spike (issue #32) through the real binary: `gen --cases`
//! writes labelled port scans, port sweeps, volume bursts and threat-list contacts (with
//! near-threshold negatives and the lists); `replay` with every detection finds every labelled
//! scan, sweep and list contact, alerts on none of their negatives, writes each detection's
//! Parquet table (read back by pyarrow, an independent reader), writes the findings in OCSF when
//! asked, and with `--detections blocked-spike` writes neither findings nor tables.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{assert_code, flowspike, run};

fn python() -> String {
    std::env::var("FLOWSPIKE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Generates the archive with 2 cases of each detection; returns its manifest.
fn generate(out: &Path) -> Value {
    let args = ["gen", "--hours", "400", "--hosts", "80", "--seed", "3", "--cases", "2", "--out"];
    assert_code(&run(flowspike().args(args).arg(out)), 0);
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

/// `replay` of `archive` into `state` with the archive's threat lists, fd00::/8 internal besides
/// RFC 1918 (the IPv6 cases), and `extra` arguments; the findings file's records.
fn replay(archive: &Path, state: &Path, findings: &Path, extra: &[&str]) -> Vec<Value> {
    let lists = ["tor-exits", "custom"]
        .map(|n| archive.join("threat-lists").join(format!("{n}.txt")).display().to_string())
        .join(",");
    let mut cmd: Command = flowspike();
    cmd.arg("replay")
        .arg(archive.join("AWSLogs"))
        .arg("--state")
        .arg(state)
        .arg("--spikes")
        .arg(state.with_extension("spikes.jsonl"))
        .arg("--findings-out")
        .arg(findings)
        .args(["--threat-list", &lists])
        .args(["--internal", "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fd00::/8"])
        .args(extra);
    assert_code(&run(&mut cmd), 0);
    std::fs::read_to_string(findings)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The (hour, src) of the labels of `kind`, positives or negatives.
fn labels(manifest: &Value, kind: &str, positive: bool) -> BTreeSet<(i64, String)> {
    manifest["cases"]
        .as_array()
        .expect("cases in the manifest")
        .iter()
        .filter(|c| c["kind"] == kind && c["positive"] == positive)
        .flat_map(|c| {
            let (h, n) = (c["hour"].as_i64().unwrap(), c["hours"].as_i64().unwrap());
            let src = c["src_ip"].as_str().unwrap().to_owned();
            (0..n).map(move |i| (h + i * 3600, src.clone()))
        })
        .collect()
}

fn hour_of(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().timestamp()
}

#[test]
fn replay_finds_the_labelled_cases_and_writes_the_tables() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    let manifest = generate(&archive);
    let state = dir.path().join("state");
    let findings = replay(&archive, &state, &dir.path().join("findings.jsonl"), &[]);
    for (kind, cli) in
        [("port_scan", "port-scan"), ("port_sweep", "port-sweep"), ("threat_list", "threat-list")]
    {
        let got: BTreeSet<(i64, String)> = findings
            .iter()
            .filter(|f| f["detection"] == kind)
            .map(|f| (hour_of(&f["hour"]), f["src_ip"].as_str().unwrap().to_owned()))
            .collect();
        let positives = labels(&manifest, kind, true);
        assert!(!positives.is_empty(), "{kind}: no positive label");
        // A positive spans its label's hours; the finding is in at least one of them.
        let first_hours: BTreeSet<(i64, String)> = manifest["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["kind"] == kind && c["positive"] == true)
            .map(|c| (c["hour"].as_i64().unwrap(), c["src_ip"].as_str().unwrap().to_owned()))
            .collect();
        for (hour, src) in &first_hours {
            assert!(
                got.iter().any(|(h, s)| s == src && *h >= *hour),
                "{cli}: labelled case {src} at {hour} not found; findings {got:?}"
            );
        }
        for neg in labels(&manifest, kind, false) {
            assert!(!got.contains(&neg), "{cli}: near-threshold negative {neg:?} alerted");
        }
        assert!(
            got.is_subset(&positives),
            "{cli}: findings outside the labels: {:?}",
            got.difference(&positives).collect::<Vec<_>>()
        );
    }
    // Every finding is well formed; a scan names its destination, a sweep its port, a list match
    // its list.
    for f in &findings {
        match f["detection"].as_str().unwrap() {
            "port_scan" => assert!(f["dst_ip"].is_string() && f["count"].as_u64() >= Some(500)),
            "port_sweep" => assert!(f["dst_port"].is_u64() && f["count"].as_u64() >= Some(250)),
            "threat_list" => assert!(f["list"].is_string()),
            "outbound_volume" => assert!(f["count"].as_u64() > Some(0)),
            other => panic!("unknown detection {other}"),
        }
        assert_eq!(f["id"].as_str().unwrap().len(), 16);
    }

    // The tables, read by pyarrow: one Hive-partitioned dataset per detection, every covered hour.
    let script = r#"
import json, sys, os
import pyarrow.dataset as ds
out = {}
for t in ["port_scans", "port_sweeps", "outbound_volume", "threat_matches"]:
    d = ds.dataset(os.path.join(sys.argv[1], t), format="parquet", partitioning="hive")
    tab = d.to_table()
    out[t] = {"files": len(d.files), "rows": tab.num_rows, "columns": tab.schema.names}
print(json.dumps(out))
"#;
    let out = run(Command::new(python()).args(["-c", script]).arg(&state));
    assert_code(&out, 0);
    let t: Value = serde_json::from_slice(&out.stdout).unwrap();
    for table in ["port_scans", "port_sweeps", "outbound_volume", "threat_matches"] {
        assert_eq!(t[table]["files"], 400, "{table}: one file per covered hour: {t}");
    }
    assert!(t["port_scans"]["rows"].as_u64() >= Some(2), "{t}");
    assert!(t["threat_matches"]["rows"].as_u64() >= Some(2), "{t}");
    for (table, col) in [
        ("port_scans", "distinct_ports"),
        ("port_sweeps", "distinct_dests"),
        ("outbound_volume", "bytes"),
        ("threat_matches", "list"),
    ] {
        assert!(
            t[table]["columns"].as_array().unwrap().iter().any(|c| c == col),
            "{table} lacks {col}: {t}"
        );
    }

    // Replaying again replaces the hours: same findings, same files.
    let again = replay(&archive, &state, &dir.path().join("again.jsonl"), &[]);
    assert_eq!(again, findings);

    // OCSF: the same findings as Detection Findings.
    let ocsf =
        replay(&archive, &state, &dir.path().join("ocsf.jsonl"), &["--output-format", "ocsf"]);
    assert_eq!(ocsf.len(), findings.len());
    assert!(ocsf.iter().all(|f| f["class_uid"] == 2004), "{:?}", ocsf.first());

    // Only the blocked spike: no findings and no table written.
    let only = dir.path().join("only");
    let none =
        replay(&archive, &only, &dir.path().join("none.jsonl"), &["--detections", "blocked-spike"]);
    assert!(none.is_empty());
    assert!(!only.join("port_scans").exists() && !only.join("threat_matches").exists());
    assert!(only.join("aggregates").exists());
}
