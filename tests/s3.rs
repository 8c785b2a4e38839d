//! Replay from S3 into an S3 state, through the real AWS SDK against `moto_server` on 127.0.0.1.

use std::sync::Arc;

use flowspike_aws::{S3Store, S3Url};
use flowspike_history::History;
use flowspike_synth::generate_to_dir;

use crate::replay::{assert_injected_found, expected_counts, history_counts, small_config};
use crate::util::{assert_code, files_under, flowspike, run, Moto};

/// Uploads every file under `dir` to `bucket`, keys relative to `dir`.
fn upload_dir(s3: &flowspike_aws::S3, bucket: &str, dir: &std::path::Path) -> usize {
    let files = files_under(dir);
    for p in &files {
        let key = p.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
        s3.put_object(bucket, &key, std::fs::read(p).unwrap()).expect("upload");
    }
    files.len()
}

#[test]
fn replay_from_s3_into_s3_state_matches_ground_truth() {
    let moto = Moto::start();
    let s3 = moto.s3();
    s3.create_bucket("flow-archive").expect("create bucket");
    s3.create_bucket("flowspike-state").expect("create bucket");
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(21);
    let manifest = generate_to_dir(&cfg, dir.path()).expect("generate");
    let uploaded = upload_dir(&s3, "flow-archive", &dir.path().join("AWSLogs"));
    assert!(uploaded > 100);

    let out = run(moto.env(&mut flowspike()).args([
        "replay",
        "--mode",
        "window",
        "s3://flow-archive/",
        "--state",
        "s3://flowspike-state/prod",
        "--spikes",
        "-",
        "--json",
    ]));
    assert_code(&out, 0);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains(&format!("\"files\":{uploaded}")), "{summary}");

    // The history on S3 holds exactly the ground truth, in the documented layout.
    let store = S3Store::new(s3.clone(), S3Url::parse("s3://flowspike-state/prod").unwrap());
    let history = History::new(Arc::new(store));
    assert_eq!(history_counts(&history), expected_counts(&cfg));
    let keys = s3.list_objects("flowspike-state", "prod/aggregates/").unwrap();
    assert!(keys.iter().all(|o| {
        let k = &o.key;
        k.contains("/date=") && k.contains("/hr=") && k.ends_with(".parquet")
    }));

    let out_of_replay = out.stdout.clone();
    let spikes: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON spike"))
        .collect();
    assert_injected_found(&manifest.manifest, &spikes);

    // The report and explain read the S3 state through the same store. Its records went to
    // standard output, not to the state: the report replays the detection over the history.
    let report = dir.path().join("report");
    let state = ["--state", "s3://flowspike-state/prod", "--mode", "window"];
    let out = run(moto.env(&mut flowspike()).arg("report").args(state).arg("--out").arg(&report));
    assert_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("replayed from the history"));
    let page = std::fs::read_to_string(report.join("index.html")).unwrap();
    // The same records as the replay's, grouped into incidents.
    let (records, _) = flowspike_report::read_spike_lines(&out_of_replay);
    let incidents = flowspike_report::group_incidents(records).len();
    assert!(incidents > 0 && incidents <= spikes.len());
    assert_eq!(page.matches("<section class=\"incident").count(), incidents);
    let burst = &manifest.manifest.injected[0];
    assert!(page.contains(&format!("· {}<", burst.src_ip)), "the burst of {} listed", burst.src_ip);
    let out = run(moto.env(&mut flowspike()).arg("explain").args(state).arg(&burst.src_ip));
    assert_code(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("alerts in the window: "));
}
