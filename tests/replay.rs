//! `flowspike replay` and `flowspike demo` end to end on local archives: the history must hold exactly
//! the generator's ground-truth counts, the injected bursts must be found, and nothing is counted twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use flowspike_history::{History, LocalStore};
use flowspike_synth::{generate_to_dir, Manifest, SynthConfig};

use crate::util::{assert_code, files_under, flowspike, run, run_demo};

/// A small archive: 36 days, 40 hosts, 3 bursts, one object per flow log and hour.
pub fn small_config(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        hours: 36 * 24,
        hosts: 40,
        bursts: 3,
        file_minutes: 60,
        ..SynthConfig::default()
    }
}

/// Every (hour, src) → blocked_count in a local state's history.
pub fn history_counts(history: &History) -> BTreeMap<(i64, String), u64> {
    let hours = history.hours().expect("list hours");
    let (first, last) = (hours[0], hours[hours.len() - 1]);
    history
        .read_range(first, last + 3600)
        .expect("read history")
        .into_iter()
        .map(|r| ((r.hour, r.src_ip), r.blocked_count))
        .collect()
}

/// The generator's exact ground truth.
pub fn expected_counts(cfg: &SynthConfig) -> BTreeMap<(i64, String), u64> {
    flowspike_synth::expected_counts(cfg)
        .expect("expected counts")
        .into_iter()
        .map(|e| ((e.hour, e.src_ip), e.blocked_count))
        .collect()
}

/// Spike records of a JSON Lines file.
pub fn spikes(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("spikes file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON spike record"))
        .collect()
}

/// Asserts every injected burst is among the spikes.
pub fn assert_injected_found(manifest: &Manifest, spikes: &[serde_json::Value]) {
    for inj in &manifest.injected {
        let hour = flowspike_detect::format_hour(inj.hour);
        assert!(
            spikes.iter().any(|s| s["hour"] == hour.as_str() && s["src_ip"] == inj.src_ip.as_str()),
            "injected burst {hour} {} not detected; spikes: {spikes:?}",
            inj.src_ip
        );
    }
}

#[test]
fn replay_reproduces_ground_truth_and_rereplay_does_not_double_count() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(11);
    let manifest = generate_to_dir(&cfg, &dir.path().join("archive")).expect("generate");
    let state = dir.path().join("state");
    let spikes_path = dir.path().join("spikes.jsonl");
    let replay = || {
        run(flowspike()
            .args(["replay", "--mode", "window"])
            .arg(dir.path().join("archive"))
            .arg("--state")
            .arg(&state)
            .arg("--spikes")
            .arg(&spikes_path))
    };
    let out = replay();
    assert_code(&out, 0);
    let history = History::new(Arc::new(LocalStore::new(&state)));
    let expected = expected_counts(&cfg);
    assert!(expected.len() > 1000, "the generator made too little data: {}", expected.len());
    assert_eq!(history_counts(&history), expected);
    let first = spikes(&spikes_path);
    assert_injected_found(&manifest.manifest, &first);
    for s in &first {
        for key in [
            "id",
            "detection",
            "mode",
            "hour",
            "src_ip",
            "blocked_count",
            "unique_dest_count",
            "dest_ips",
            "resource_ids",
            "baseline_mean",
            "baseline_stdev",
            "data_points",
            "threshold",
        ] {
            assert!(s.get(key).is_some(), "spike lacks {key}: {s}");
        }
    }

    // The same input again: same history, same spikes (ids included).
    let out = replay();
    assert_code(&out, 0);
    assert_eq!(history_counts(&history), expected);
    assert_eq!(spikes(&spikes_path), first);
}

/// One large plain-text file (the archive inflated and concatenated), streamed in blocks: mapped
/// into memory (the default) and read (`--no-mmap`) give the ground truth and the same spikes.
#[test]
fn a_large_plain_file_mapped_or_read_gives_the_ground_truth() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(12);
    generate_to_dir(&cfg, &dir.path().join("archive")).expect("generate");
    let mut text = Vec::new();
    for o in files_under(&dir.path().join("archive")) {
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&o).unwrap())
            .read_to_end(&mut text)
            .unwrap();
    }
    let file = dir.path().join("all.log");
    std::fs::write(&file, &text).unwrap();
    let expected = expected_counts(&cfg);
    let mut outputs = Vec::new();
    for (name, extra) in [("mapped", None), ("read", Some("--no-mmap"))] {
        let state = dir.path().join(name);
        let spikes_path = dir.path().join(format!("{name}.jsonl"));
        let mut cmd = flowspike();
        cmd.args(["replay", "--mode", "window"])
            .arg(&file)
            .arg("--state")
            .arg(&state)
            .arg("--spikes")
            .arg(&spikes_path)
            .args(["--stream-min-bytes", "0", "--stream-block-bytes", "65536"])
            .args(extra);
        assert_code(&run(&mut cmd), 0);
        let history = History::new(Arc::new(LocalStore::new(&state)));
        assert_eq!(history_counts(&history), expected, "{name}");
        outputs.push(spikes(&spikes_path));
    }
    assert!(!outputs[0].is_empty());
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn replay_splunk_mode_finds_the_injected_bursts_and_saves_its_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(12);
    let manifest = generate_to_dir(&cfg, &dir.path().join("archive")).expect("generate");
    let state = dir.path().join("state");
    let spikes_path = dir.path().join("spikes.jsonl");
    let out = run(flowspike()
        .arg("replay")
        .arg(dir.path().join("archive"))
        .args(["--mode", "splunk", "--state"])
        .arg(&state)
        .arg("--spikes")
        .arg(&spikes_path));
    assert_code(&out, 0);
    let got = spikes(&spikes_path);
    assert!(got.iter().all(|s| s["mode"] == "splunk"));
    assert_injected_found(&manifest.manifest, &got);
    let baseline = std::fs::read(state.join("baseline/splunk.json")).expect("baseline saved");
    assert!(serde_json::from_slice::<serde_json::Value>(&baseline).is_ok());
}

#[test]
fn replay_counts_and_skips_damaged_input_and_says_so_in_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(13);
    let archive = dir.path().join("archive");
    generate_to_dir(&cfg, &archive).expect("generate");
    // A truncated gzip object and a plain file with one junk line among good ones.
    let bad = archive.join("AWSLogs/broken");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("truncated.log.gz"), [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2])
        .unwrap();
    std::fs::write(
        bad.join("junk.log"),
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n\
         \u{1}\u{2}binary junk\n\
         2 1 eni-1 10.9.9.9 not-an-ip 1 2 6 1 1 1700000000 1700000001 REJECT OK\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = run(flowspike()
        .args(["replay", "--mode", "window"])
        .arg(&archive)
        .arg("--state")
        .arg(&state)
        .args(["--spikes", "-", "--json"]));
    assert_code(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str(l).ok().filter(|v: &serde_json::Value| v.get("files").is_some())
        })
        .unwrap_or_else(|| panic!("no JSON summary in stderr: {stderr}"));
    assert_eq!(summary["unreadable_files"], 1, "{summary}");
    assert_eq!(summary["malformed"], 2, "{summary}");
    assert!(summary["unreadable_samples"][0].as_str().unwrap().contains("truncated.log.gz"));
    // The good data is still counted exactly.
    let history = History::new(Arc::new(LocalStore::new(&state)));
    assert_eq!(history_counts(&history), expected_counts(&cfg));
}

#[test]
fn replay_from_to_skips_prefixes_and_records_outside_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(14);
    generate_to_dir(&cfg, &dir.path().join("archive")).expect("generate");
    let state = dir.path().join("state");
    let from = cfg.start + 10 * 86400;
    let to = from + 2 * 86400;
    let out = run(flowspike()
        .args(["replay", "--mode", "window"])
        .arg(dir.path().join("archive"))
        .arg("--state")
        .arg(&state)
        .args(["--spikes", "-", "--json", "--from", &from.to_string(), "--to", &to.to_string()]));
    assert_code(&out, 0);
    let history = History::new(Arc::new(LocalStore::new(&state)));
    let want: BTreeMap<_, _> =
        expected_counts(&cfg).into_iter().filter(|((h, _), _)| *h >= from && *h < to).collect();
    assert!(!want.is_empty());
    assert_eq!(history_counts(&history), want);
}

#[test]
fn demo_runs_and_finds_every_injected_burst() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let (stdout, manifest) = run_demo(&demo);
    let n = manifest.injected.len();
    assert!(n > 0);
    assert!(stdout.contains(&format!("{n} of {n} injected bursts detected")), "{stdout}");
    // It writes the report of its records and prints where (tests/report.rs looks at one).
    let index = demo.join("report/index.html");
    assert!(stdout.contains(&format!("{}", index.display())), "{stdout}");
    let page = std::fs::read_to_string(&index).unwrap();
    let spikes = std::fs::read_to_string(demo.join("spikes.jsonl")).unwrap();
    let incidents = page.matches("<section class=\"incident").count();
    assert!(incidents >= n && incidents <= spikes.lines().count(), "{incidents} incidents");
    for burst in &manifest.injected {
        assert!(page.contains(&format!("· {}<", burst.src_ip)), "burst of {} listed", burst.src_ip);
    }
    // A second run replaces the demo directory it made.
    assert_code(&run(flowspike().arg("demo").arg("--dir").arg(&demo)), 0);
}

/// The hour files (path under the state → bytes) of a local state.
fn hour_files(state: &Path) -> BTreeMap<String, Vec<u8>> {
    files_under(&state.join("aggregates"))
        .into_iter()
        .map(|p| (p.strip_prefix(state).unwrap().display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Regression (#28 item 2): replaying a truncated gzip object read in blocks replaced the good
/// files of its hours with partial counts. Now those hours are left as they were, named in the
/// summary with the object, and the exit code is 3.
#[test]
fn regression_replaying_a_truncated_object_destroys_a_good_hour() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config(15);
    let archive = dir.path().join("archive");
    generate_to_dir(&cfg, &archive).expect("generate");
    let state = dir.path().join("state");
    let replay = || {
        run(flowspike()
            .args(["replay", "--mode", "window"])
            .arg(&archive)
            .arg("--state")
            .arg(&state)
            .args(["--spikes", "-", "--json", "--stream-min-bytes", "0"])
            .args(["--stream-block-bytes", "4096"]))
    };
    assert_code(&replay(), 0);
    let before = hour_files(&state);
    let history = History::new(Arc::new(LocalStore::new(&state)));
    assert_eq!(history_counts(&history), expected_counts(&cfg));

    // The largest object, cut in half.
    let victim = files_under(&archive)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".log.gz"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let gz = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &gz[..gz.len() / 2]).unwrap();
    let out = replay();
    assert_code(&out, 3);
    // The bug: the victim's hours held the partial counts of its first blocks.
    assert_eq!(history_counts(&history), expected_counts(&cfg), "an hour lost counts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str(l).ok().filter(|v: &serde_json::Value| v.get("files").is_some())
        })
        .unwrap_or_else(|| panic!("no JSON summary in stderr: {stderr}"));
    assert_eq!(summary["unreadable_files"], 1, "{summary}");
    let untouched = summary["untouched_hours"].as_array().unwrap();
    assert!(!untouched.is_empty(), "{summary}");
    let name = victim.file_name().unwrap().to_string_lossy().to_string();
    for u in untouched {
        assert!(u["objects"][0].as_str().unwrap().ends_with(&name), "{summary}");
        let hour = u["hour"].as_i64().unwrap();
        let dir = chrono::DateTime::from_timestamp(hour, 0)
            .unwrap()
            .format("date=%Y-%m-%d/hr=%H/")
            .to_string();
        let files = |m: &BTreeMap<String, Vec<u8>>| {
            m.iter()
                .filter(|(k, _)| k.contains(&dir))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert!(!files(&before).is_empty(), "{dir}");
        assert!(files(&hour_files(&state)) == files(&before), "{dir} was rewritten");
    }
    // Every other hour was rewritten.
    let after = hour_files(&state);
    assert!(after.keys().any(|k| !before.contains_key(k)));
}

/// Regression (#28 item 1): one line with a far-future `start` (9.3e12 is past what chrono and a
/// Parquet timestamp hold) made `replay` exit 1 after other hours were written. Now every `start`
/// past the clock plus `--max-future-secs` (or 9999-12-31) is malformed: counted, sampled in the
/// summary, exit 3, and the good hours are written.
#[test]
fn replay_far_future_start_is_malformed_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let line = |src: &str, start: u64| {
        format!("2 1 eni-1 {src} 8.8.8.8 1 2 6 1 40 {start} {start} REJECT OK\n")
    };
    let good = [line("10.0.0.1", 1_767_225_600), line("10.0.0.1", 1_767_229_300)];
    let soon = line("10.0.0.2", now + 600); // inside the slack: counts
    let mut text = String::from(
        "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n",
    );
    text.push_str(&good[0]);
    for start in [9_300_000_000_000, 8_300_000_000_000, u64::MAX, 253_402_300_800, now + 7200] {
        text.push_str(&line("10.0.0.1", start));
    }
    text.push_str(&good[1]);
    text.push_str(&soon);
    std::fs::write(dir.path().join("flows.log"), text).unwrap();
    let state = dir.path().join("state");
    let out = run(flowspike()
        .args(["replay", "--mode", "window"])
        .arg(dir.path().join("flows.log"))
        .arg("--state")
        .arg(&state)
        .args(["--spikes", "-", "--json"])
        .env("FLOWSPIKE_MAX_FUTURE_SECS", "3600"));
    assert_code(&out, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|l| {
            serde_json::from_str(l).ok().filter(|v: &serde_json::Value| v.get("files").is_some())
        })
        .unwrap_or_else(|| panic!("no JSON summary in stderr: {stderr}"));
    assert_eq!(summary["malformed"], 5, "{summary}");
    assert_eq!(summary["counted"], 3, "{summary}");
    let sample = summary["malformed_samples"][0].as_str().unwrap();
    assert!(sample.contains("flows.log:3:") && sample.contains("start"), "{sample}");
    let history = History::new(Arc::new(LocalStore::new(&state)));
    let soon_hour = (now + 600) as i64 / 3600 * 3600;
    let want: BTreeMap<(i64, String), u64> = [
        ((1_767_225_600, "10.0.0.1".to_string()), 1),
        ((1_767_229_200, "10.0.0.1".to_string()), 1),
        ((soon_hour, "10.0.0.2".to_string()), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(history_counts(&history), want);
}
