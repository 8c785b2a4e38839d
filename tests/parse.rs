//! `flowspike parse` on the public sample files.

use std::io::Write;

use crate::util::{assert_code, flowspike, run, sample};

fn records(stdout: &[u8]) -> Vec<serde_json::Value> {
    stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("each stdout line is a JSON object"))
        .collect()
}

#[test]
fn parse_splunk_sample_counts_806_records_39_rejects() {
    let out =
        run(flowspike().arg("parse").arg(sample("splunk-aws-gdi-toolkit/sample-vpcflow.log.gz")));
    assert_code(&out, 0);
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 806);
    let rejects = recs.iter().filter(|r| r["action"] == "REJECT").count();
    let accepts = recs.iter().filter(|r| r["action"] == "ACCEPT").count();
    assert_eq!((accepts, rejects), (767, 39));
    assert_eq!(recs[0]["interface-id"], "eni-0b480000000000aaa");
    assert!(recs[0]["bytes"].is_u64(), "bytes is a JSON number: {}", recs[0]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("records: 806"));
}

#[test]
fn parse_cloudwatch_envelope_sample_needs_no_header() {
    let out = run(flowspike().arg("parse").arg(sample("otel-contrib/valid_vpc_flow_cw.json")));
    assert_code(&out, 0);
    assert_eq!(records(&out.stdout).len(), 2);
}

/// Also the regression test of #28 item 11: `parse` exited 0 although it skipped a line.
#[test]
fn parse_reports_malformed_lines_with_location_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("damaged.log");
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(f, "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status").unwrap();
    writeln!(
        f,
        "2 123456789010 eni-1 10.0.0.1 8.8.8.8 443 49152 6 10 840 1700000000 1700000060 REJECT OK"
    )
    .unwrap();
    writeln!(f, "2 123456789010 eni-1 10.0.0.1 too few").unwrap();
    writeln!(
        f,
        "2 123456789010 eni-1 10.0.0.2 8.8.4.4 443 49152 6 10 840 1700000000 1700000060 ACCEPT OK"
    )
    .unwrap();
    drop(f);
    let out = run(flowspike().arg("parse").arg(&p));
    assert_code(&out, 3);
    assert_eq!(records(&out.stdout).len(), 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed lines: 1"), "{err}");
    assert!(err.contains("damaged.log:3"), "{err}");
}

#[test]
fn parse_exits_nonzero_when_an_input_cannot_be_read() {
    let out = run(flowspike().args(["parse", "/nonexistent/flow.log"]));
    assert_eq!(out.status.code(), Some(1));
}

/// Regression (#28 item 3): a value that is not of its field's type (`44x3` as a port, an
/// address with an octet over 255) was printed as a JSON string; the line is now malformed:
/// not printed, reported with its location and the field, exit 3.
#[test]
fn parse_damaged_values_are_malformed_lines_not_strings() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("values.log");
    let good =
        "2 123456789010 eni-1 10.0.0.1 8.8.8.8 443 49152 6 10 840 1700000000 1700000060 REJECT OK";
    let text = format!(
        "{good}\n{}\n{}\n{good}\n",
        good.replace(" 443 ", " 44x3 "),
        good.replace("10.0.0.1", "10.0.0.999")
    );
    std::fs::write(&p, text).unwrap();
    let out = run(flowspike().arg("parse").arg(&p));
    assert_code(&out, 3);
    let recs = records(&out.stdout);
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r["srcport"] == 443 && r["srcaddr"] == "10.0.0.1"), "{recs:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("malformed lines: 2"), "{err}");
    assert!(err.contains("values.log:2") && err.contains("(srcport)"), "{err}");
    assert!(err.contains("values.log:3") && err.contains("(srcaddr)"), "{err}");
}

/// Regression (#28 item 11): an input that cannot be decoded (a truncated gzip object) made
/// `parse` exit 1 like a failure; it is skipped input, as in `replay`: the other inputs are
/// printed and the exit code is 3. A clean input still exits 0.
#[test]
fn parse_exits_3_when_an_input_cannot_be_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let good = "2 123456789010 eni-1 10.0.0.1 8.8.8.8 443 49152 6 10 840 1700000000 1700000060 REJECT OK\n";
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(good.repeat(100).as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    let cut = dir.path().join("cut.log.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let ok = dir.path().join("ok.log");
    std::fs::write(&ok, good).unwrap();
    let out = run(flowspike().arg("parse").arg(&cut).arg(&ok));
    assert_code(&out, 3);
    assert_eq!(records(&out.stdout).len(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.log.gz: cannot decode") && err.contains("undecodable inputs: 1"),
        "{err}"
    );
    assert_code(&run(flowspike().arg("parse").arg(&ok)), 0);
}
