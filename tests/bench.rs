//! `flowspike bench`: every stage runs, agrees with the others and reports figures.

use crate::util::{flowspike, run};

#[test]
fn bench_reports_every_stage_with_consistent_counts() {
    for framing in ["lines", "gzip", "cwlogs"] {
        let out = run(flowspike().args([
            "bench",
            "--records",
            "30000",
            "--records-per-object",
            "7000",
            "--runs",
            "1",
            "--threads",
            "2",
            "--json",
            "--framing",
            framing,
        ]));
        assert!(out.status.success(), "{framing}: {}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["records"], 30_000, "{framing}");
        assert!(r["counted"].as_u64().unwrap() > 100, "{framing}: {r}");
        let stages: Vec<&str> =
            r["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
        let mut want =
            vec!["parse", "parse+filter", "parse+filter+count", "parquet write", "end to end"];
        if framing != "lines" {
            want.insert(0, "decompress");
            // The consumer's own decode path, from the compressed objects.
            want.insert(4, "consumer decode");
        }
        assert_eq!(stages, want, "{framing}");
        for s in r["stages"].as_array().unwrap() {
            assert!(s["seconds"].as_f64().unwrap() > 0.0, "{s}");
        }
        // 5 objects of lines/gzip; cwlogs envelopes hold 1,000 events each.
        let objects = r["objects"].as_u64().unwrap();
        assert_eq!(objects, if framing == "cwlogs" { 30 } else { 5 }, "{framing}");
    }
}

#[test]
fn bench_measures_given_files_and_rejects_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.log"),
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n\
         2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1767225600 1767225660 REJECT OK\n\
         2 123 eni-1 10.0.0.2 10.0.0.3 1 53 17 1 60 1767225600 1767225660 REJECT OK\n",
    )
    .unwrap();
    let out = run(flowspike().args(["bench", "--runs", "1", "--json", "--input"]).arg(dir.path()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["records"].as_u64(), r["counted"].as_u64()), (Some(2), Some(1)), "{r}");
    let out = run(flowspike().args(["bench", "--framing", "xml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown framing"));
}
