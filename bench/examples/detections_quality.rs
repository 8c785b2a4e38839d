//! Detection quality of the detections beside the blocked spike, on labelled synthetic cases.
//!
//! For each seed: generates the default synthetic archive with `--cases` labelled cases of each
//! detection (`flowspike_synth::SynthConfig::cases`: positives hidden in ordinary traffic and as
//! many near-threshold negatives), replays it through the real replay pipeline with every
//! detection on, and scores each detection's findings against the labels
//! (`flowspike_synth::score_cases`): recall, near-threshold negatives alerted, and alerts on
//! ordinary traffic per 10,000 active source-hours (an internal source with any flow in an hour).
//! Prints one row per detection with the worst seed. docs/detections.md holds the table.
//!
//! ```text
//! cargo run --release -p flowspike-bench --example detections_quality -- --seeds 5 [--cases 3]
//!     [--volume-unit BYTES] [--volume-alpha A] [--volume-min-count N]
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use flowlog::{DecodeOptions, FlowRecord, LineError, LogStatus, RecordSink};
use flowspike_counter::Rule;
use flowspike_detections::{Detection, DetectionsConfig};
use flowspike_history::{History, LocalStore};
use flowspike_replay::{replay, LocalArchive, ReplayConfig, Source};
use flowspike_synth::{generate_to_dir, score_cases, CaseKind, CaseScore, SynthConfig};

struct Args {
    seeds: u64,
    cases: u32,
    volume_unit: Option<u64>,
    volume_alpha: Option<f64>,
    volume_min_count: Option<u64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: detections_quality [--seeds N] [--cases N] [--volume-unit BYTES] [--volume-alpha A] [--volume-min-count N]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a =
        Args { seeds: 5, cases: 3, volume_unit: None, volume_alpha: None, volume_min_count: None };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--seeds" => a.seeds = v().parse().unwrap_or_else(|_| usage()),
            "--cases" => a.cases = v().parse().unwrap_or_else(|_| usage()),
            "--volume-unit" => a.volume_unit = Some(v().parse().unwrap_or_else(|_| usage())),
            "--volume-alpha" => a.volume_alpha = Some(v().parse().unwrap_or_else(|_| usage())),
            "--volume-min-count" => {
                a.volume_min_count = Some(v().parse().unwrap_or_else(|_| usage()))
            }
            _ => usage(),
        }
    }
    a
}

/// The (hour, source) of every record with an internal source and log-status OK.
struct Active<'r> {
    rule: &'r Rule,
    seen: HashSet<(i64, IpAddr)>,
}

impl RecordSink for Active<'_> {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        if rec.log_status() != Ok(Some(LogStatus::Ok)) {
            return;
        }
        let (Ok(Some(src)), Ok(Some(start))) = (rec.srcaddr(), rec.start()) else { return };
        if self.rule.is_internal(src) {
            self.seen.insert((start as i64 - start as i64 % 3600, src));
        }
    }

    fn malformed(&mut self, _: &LineError) {}
}

fn active_source_hours(dir: &Path, rule: &Rule) -> u64 {
    let mut sink = Active { rule, seen: HashSet::new() };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read archive dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "gz") {
                let bytes = std::fs::read(&p).expect("read object");
                flowlog::for_each_record(&bytes, &DecodeOptions::default(), &mut sink)
                    .expect("decode object");
            }
        }
    }
    sink.seen.len() as u64
}

fn kind_of(d: Detection) -> Option<CaseKind> {
    match d {
        Detection::PortScan => Some(CaseKind::PortScan),
        Detection::PortSweep => Some(CaseKind::PortSweep),
        Detection::OutboundVolume => Some(CaseKind::OutboundVolume),
        Detection::ThreatList => Some(CaseKind::ThreatList),
        Detection::BlockedSpike => None,
    }
}

fn main() {
    let a = parse_args();
    let mut cfg = DetectionsConfig::default();
    if let Some(u) = a.volume_unit {
        cfg.volume.unit_bytes = u;
    }
    if let Some(x) = a.volume_alpha {
        cfg.volume.detect.alpha = x;
    }
    if let Some(m) = a.volume_min_count {
        cfg.volume.detect.min_count = m;
    }
    let mut rows: BTreeMap<Detection, Vec<(u64, CaseScore, u64)>> = BTreeMap::new();
    for seed in 1..=a.seeds {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = dir.path().join("archive");
        let synth = SynthConfig { seed, cases: a.cases, ..SynthConfig::default() };
        let generated = generate_to_dir(&synth, &archive).expect("generate");
        let labels = generated.manifest.cases.clone();
        // RFC 1918 and fd00::/8: the IPv6 threat-list cases have an fd00::/8 host.
        let mut nets = Rule::default().networks().to_vec();
        nets.push("fd00::/8".parse().expect("network"));
        let rule = Rule::new(nets);
        let active = active_source_hours(&archive.join("AWSLogs"), &rule);
        let store = Arc::new(LocalStore::new(dir.path().join("state")));
        let history = History::new(store);
        let mut dcfg = cfg.clone();
        add_threat_lists(&mut dcfg, &archive);
        let rcfg = ReplayConfig {
            sources: vec![Source {
                archive: Arc::new(LocalArchive),
                root: archive.join("AWSLogs").display().to_string(),
            }],
            from: None,
            to: None,
            pipeline: flowspike_counter::Pipeline { rule: rule.clone(), ..Default::default() },
            detections: dcfg,
            fetchers: 2,
            stream: Default::default(),
        };
        let out = replay(&rcfg, &history, &()).expect("replay");
        for d in Detection::ALL {
            let Some(kind) = kind_of(d) else { continue };
            let alerts: Vec<(i64, String)> = out
                .findings
                .iter()
                .filter(|f| f.detection == d.record_name())
                .map(|f| (f.hour, f.src_ip.clone()))
                .collect();
            let score = score_cases(&labels, kind, &alerts);
            rows.entry(d).or_default().push((seed, score, active));
        }
    }
    println!(
        "{:<16} {:>5} {:>9} {:>8} {:>12} {:>12} {:>14} {:>14}",
        "detection",
        "seeds",
        "positives",
        "found",
        "recall(min)",
        "neg alerted",
        "false/10k max",
        "false/10k mean"
    );
    for (d, per_seed) in &rows {
        let pos: usize = per_seed.iter().map(|(_, s, _)| s.positives).sum();
        let found: usize = per_seed.iter().map(|(_, s, _)| s.found).sum();
        let negs: usize = per_seed.iter().map(|(_, s, _)| s.negatives).sum();
        let neg_alerted: usize = per_seed.iter().map(|(_, s, _)| s.negatives_alerted).sum();
        let min_recall = per_seed.iter().map(|(_, s, _)| s.recall()).fold(1.0, f64::min);
        let rate = |s: &CaseScore, active: u64| s.other_alerts as f64 * 1e4 / active.max(1) as f64;
        let max_rate = per_seed.iter().map(|(_, s, a)| rate(s, *a)).fold(0.0, f64::max);
        let mean_rate =
            per_seed.iter().map(|(_, s, a)| rate(s, *a)).sum::<f64>() / per_seed.len() as f64;
        println!(
            "{:<16} {:>5} {:>9} {:>8} {:>12.3} {:>12} {:>14.2} {:>14.2}",
            d.as_str(),
            per_seed.len(),
            pos,
            found,
            min_recall,
            format!("{neg_alerted}/{negs}"),
            max_rate,
            mean_rate
        );
    }
    let active: Vec<u64> =
        rows.values().next().map(|v| v.iter().map(|(_, _, a)| *a).collect()).unwrap_or_default();
    println!("active source-hours per seed: {active:?}");
}

/// The threat lists the generator wrote next to the archive (`threat-lists/<name>.txt`), and
/// fd00::/8 as internal besides RFC 1918 for the IPv6 cases (the synth labels say so).
fn add_threat_lists(cfg: &mut DetectionsConfig, archive: &Path) {
    use flowspike_threat::{FileSource, ListSource, Reloader};
    let mut paths: Vec<_> = std::fs::read_dir(archive.join("threat-lists"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    let sources: Vec<Box<dyn ListSource>> = paths
        .iter()
        .map(|p| Box::new(FileSource::named_by_stem(p)) as Box<dyn ListSource>)
        .collect();
    if !sources.is_empty() {
        cfg.threat_lists = Some(Reloader::load(sources).expect("threat lists").current());
    }
}
