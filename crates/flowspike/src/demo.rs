//! `flowspike gen` and `flowspike demo`.

use std::collections::BTreeSet;

use anyhow::Context;
use flowspike_replay::ReplayConfig;
use flowspike_synth::{generate_to_dir, Manifest, Scenario, SynthConfig};

use crate::args::{DemoArgs, DetectArgs, GenArgs, InputArgs, PipelineArgs};
use crate::replay::replay_sources;
use crate::settings::{open_state, parse_time, pipeline};

/// A file that marks a directory as made by `flowspike demo`, so a re-run may replace it.
const DEMO_MARKER: &str = ".flowspike-demo";

fn synth_config(
    seed: u64,
    hours: Option<u32>,
    hosts: Option<u32>,
    bursts: Option<u32>,
) -> SynthConfig {
    let mut cfg = SynthConfig { seed, ..SynthConfig::default() };
    if let Some(h) = hours {
        cfg.hours = h;
    }
    if let Some(h) = hosts {
        cfg.hosts = h;
    }
    if let Some(b) = bursts {
        cfg.bursts = b;
    }
    cfg
}

/// Generates an archive into `dir` and writes its ground truth to `dir/manifest.json`.
fn generate(cfg: &SynthConfig, dir: &std::path::Path) -> anyhow::Result<Manifest> {
    let generated = generate_to_dir(cfg, dir)
        .with_context(|| format!("cannot generate into {}", dir.display()))?;
    let path = dir.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&generated.manifest)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(generated.manifest)
}

/// `flowspike gen`.
pub fn gen(a: GenArgs) -> anyhow::Result<u8> {
    let mut cfg = match a.scenario.parse::<Scenario>()? {
        Scenario::Default => SynthConfig { seed: a.seed, ..SynthConfig::default() },
        Scenario::Fleet => SynthConfig::fleet(a.seed),
    };
    cfg.hours = a.hours.unwrap_or(cfg.hours);
    cfg.hosts = a.hosts.unwrap_or(cfg.hosts);
    cfg.bursts = a.bursts.unwrap_or(cfg.bursts);
    cfg.cases = a.cases;
    if let Some(s) = &a.start {
        cfg.start = parse_time(s)?.div_euclid(3600) * 3600;
    }
    let manifest = generate(&cfg, &a.out)?;
    eprintln!(
        "generated {} records in {} objects ({:.1} MB) under {}; ground truth in {}",
        manifest.records,
        manifest.files,
        manifest.bytes as f64 / 1e6,
        a.out.display(),
        a.out.join("manifest.json").display()
    );
    Ok(0)
}

/// `flowspike demo`: generate, replay, print the spikes.
pub fn run(a: DemoArgs) -> anyhow::Result<u8> {
    let dir = &a.dir;
    if dir.exists() {
        let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
        if !empty && !dir.join(DEMO_MARKER).exists() {
            anyhow::bail!(
                "{} exists and was not made by flowspike demo; pass --dir with a new directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(DEMO_MARKER), b"made by flowspike demo\n")?;
    let archive = dir.join("archive");
    let state = dir.join("state");
    // One labelled case of each other detection, so the demo shows every detection.
    let cfg = SynthConfig { cases: 1, ..synth_config(a.seed, None, None, None) };
    eprintln!(
        "generating {} hours of flow logs for {} internal hosts with {} injected bursts ...",
        cfg.hours, cfg.hosts, cfg.bursts
    );
    let manifest = generate(&cfg, &archive)?;

    let input = InputArgs { format: None, framing: "auto".into() };
    let detect = DetectArgs {
        mode: a.mode.clone(),
        window_hours: 720,
        min_points: 5,
        deviations: 3.0,
        min_count: None,
        alpha: None,
        internal: Vec::new(),
        dest_cap: 10_000,
        max_sources_per_hour: flowspike_counter::DEFAULT_MAX_SOURCES_PER_HOUR,
        max_future_secs: flowspike_counter::DEFAULT_MAX_FUTURE_SECS,
    };
    let pipeline = pipeline(&PipelineArgs { input, detect })?;
    let report_cfg = pipeline.detect.clone();
    let mut s3 = None;
    let store = open_state(&state.display().to_string(), &mut s3)?;
    let rcfg = ReplayConfig {
        sources: Vec::new(),
        from: None,
        to: None,
        pipeline,
        detections: demo_detections(&archive)?,
        fetchers: 2,
        stream: Default::default(),
    };
    let outcome =
        replay_sources(&[archive.join("AWSLogs").display().to_string()], &store, &mut s3, rcfg)?;
    let spikes_path = dir.join("spikes.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&spikes_path)?);
    crate::replay::write_spikes(&outcome.spikes, &Default::default(), &mut f)?;
    print_table(&outcome.spikes, &manifest);
    println!(
        "mode: {}{}",
        a.mode,
        if a.mode == "adaptive" {
            " (the default); Splunk ESCU's rule is --mode window (exact 720-hour window) or --mode splunk (its running update)"
        } else {
            "; the default is --mode adaptive"
        }
    );
    let findings_path = dir.join("findings.jsonl");
    crate::replay::write_findings_to(
        &outcome.findings,
        &Default::default(),
        &findings_path.display().to_string(),
    )?;
    print_findings(&outcome.findings, &manifest);
    crate::replay::print_summary(&outcome, false, &spikes_path.display().to_string());
    eprintln!("findings {} -> {}", outcome.findings.len(), findings_path.display());
    // The report of this run's records: the page a person opens first.
    let records = crate::report::Records {
        spikes: Some(outcome.spikes.clone()),
        spikes_from: format!("{} (this run)", spikes_path.display()),
        findings: outcome.findings.clone(),
        findings_from: format!("from {} (this run)", findings_path.display()),
    };
    let report = crate::report::write(
        &flowspike_history::History::new(store.clone()),
        None,
        &report_cfg,
        records,
        (None, None),
        &state.display().to_string(),
        &dir.join("report"),
    )?;
    println!(
        "report ({} incidents; {}): {}",
        report.incidents,
        crate::report::findings_line(&report),
        report.index.display()
    );
    eprintln!("Parquet history: {}", state.join("aggregates").display());
    eprintln!(
        "query it:  duckdb -c \"select * from read_parquet('{}/aggregates/*/*/*.parquet', hive_partitioning=true) order by blocked_count desc limit 10\"",
        state.display()
    );
    Ok(0)
}

/// Every detection, with the threat lists the generator wrote next to the archive.
fn demo_detections(
    archive: &std::path::Path,
) -> anyhow::Result<flowspike_detections::DetectionsConfig> {
    let mut lists: Vec<String> = std::fs::read_dir(archive.join("threat-lists"))
        .map(|d| d.flatten().map(|e| e.path().display().to_string()).collect())
        .unwrap_or_default();
    lists.sort();
    Ok(flowspike_detections::DetectionsConfig {
        threat_lists: crate::settings::threat_lists(&lists, &mut None)?,
        ..Default::default()
    })
}

/// The other detections' findings, each marked with the labelled case it finds.
fn print_findings(findings: &[flowspike_detections::Finding], manifest: &Manifest) {
    println!("\nother detections ({} findings):", findings.len());
    println!("{:<16} {:<21} {:<16} {:<10}  summary", "detection", "hour", "src_ip", "case");
    let mut found = BTreeSet::new();
    for f in findings {
        let case = manifest.cases_at(f.hour, &f.src_ip).find(|c| {
            c.positive
                && serde_json::to_value(c.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .as_deref()
                    == Some(f.detection.as_str())
        });
        if let Some(c) = case {
            found.insert((c.hour, c.src_ip.clone(), f.detection.clone()));
        }
        println!(
            "{:<16} {:<21} {:<16} {:<10}  {}",
            f.detection,
            flowspike_detect::format_hour(f.hour),
            f.src_ip,
            if case.is_some() { "yes" } else { "" },
            f.summary
        );
    }
    let positives = manifest.cases.iter().filter(|c| c.positive).count();
    println!("{} of {} labelled cases found", found.len(), positives);
}

fn print_table(spikes: &[flowspike_detect::Spike], manifest: &Manifest) {
    let injected: BTreeSet<(i64, &str)> =
        manifest.injected.iter().map(|i| (i.hour, i.src_ip.as_str())).collect();
    println!(
        "{:<21} {:<16} {:>7} {:>6} {:>9} {:>9} {:>9} {:>6} {:<10}  injected",
        "hour", "src_ip", "blocked", "dests", "mean", "stdev", "threshold", "points", "reason"
    );
    let mut found = 0;
    for s in spikes {
        let hour = chrono::DateTime::from_timestamp(s.hour, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        let was_injected = injected.contains(&(s.hour, s.src_ip.as_str()));
        found += usize::from(was_injected);
        println!(
            "{:<21} {:<16} {:>7} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>6} {:<10}  {}",
            hour,
            s.src_ip,
            s.blocked_count,
            s.unique_dest_count,
            s.baseline_mean,
            s.baseline_stdev,
            s.threshold,
            s.data_points,
            s.reason.map_or("", |r| r.as_str()),
            if was_injected {
                "yes".to_owned()
            } else {
                // A labelled case of another detection (a scan's REJECTed probes count as blocked).
                manifest
                    .cases_at(s.hour, &s.src_ip)
                    .next()
                    .map(|c| format!("case: {}", c.what))
                    .unwrap_or_default()
            }
        );
    }
    println!(
        "\n{} spikes; {} of {} injected bursts detected; {} other alerts",
        spikes.len(),
        found,
        injected.len(),
        spikes.len() - found
    );
}
