//! `flowspike replay`: archives (local or S3) to the history and spikes.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use flowspike_aws::sinks::ExtraSinks;
use flowspike_aws::{Policy, S3Archive, S3Url, S3};
use flowspike_detect::Spike;
use flowspike_engine::SpikeSink;
use flowspike_findings::Encoder;
use flowspike_history::{History, Store};
use flowspike_replay::{
    LocalArchive, Progress, ReplayConfig, ReplayOutcome, Source, StreamSettings,
};

use crate::args::ReplayArgs;
use crate::settings::{open_state_with, output, parse_time, pipeline, s3_client};

/// A progress bar on a terminal, nothing otherwise.
struct Bar(Option<indicatif::ProgressBar>);

impl Progress for Bar {
    fn start(&self, objects: u64, bytes: u64) {
        if let Some(b) = &self.0 {
            b.set_length(bytes);
            b.set_message(format!("{objects} objects"));
        }
    }
    fn object_done(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
}

impl Bar {
    fn new() -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        Bar(Some(b))
    }
}

/// Replays `sources` into `state` with the given settings.
pub fn replay_sources(
    sources: &[String],
    state: &Arc<dyn Store>,
    s3: &mut Option<S3>,
    cfg: ReplayConfig,
) -> anyhow::Result<ReplayOutcome> {
    let retry = Policy::For(flowspike_aws::DEFAULT_REPLAY_RETRY);
    replay_sources_with(sources, state, s3, cfg, retry)
}

/// [`replay_sources`] with the retry policy of S3 sources. An S3 source with no object under its
/// prefix is an error (a mistyped prefix must not look like a quiet archive).
pub fn replay_sources_with(
    sources: &[String],
    state: &Arc<dyn Store>,
    s3: &mut Option<S3>,
    cfg: ReplayConfig,
    retry: Policy,
) -> anyhow::Result<ReplayOutcome> {
    let mut cfg = cfg;
    for src in sources {
        let source = if src.starts_with("s3://") {
            let url = S3Url::parse(src)?;
            // The key prefix exactly as given: `s3://b/dir/` is a prefix, `s3://b/dir/x.log.gz` one object.
            let root = src["s3://".len() + url.bucket.len()..].trim_start_matches('/').to_string();
            let archive = S3Archive::new(s3_client(s3)?, url.bucket).with_policy(retry);
            if !archive.has_objects(&root)? {
                bail!("no objects under {src}: check the bucket and the prefix");
            }
            Source { archive: Arc::new(archive), root }
        } else {
            Source { archive: Arc::new(LocalArchive), root: src.clone() }
        };
        cfg.sources.push(source);
    }
    let history = History::new(state.clone());
    let bar = Bar::new();
    let outcome = flowspike_replay::replay(&cfg, &history, &bar)?;
    if let Some(b) = &bar.0 {
        b.finish_and_clear();
    }
    Ok(outcome)
}

/// Writes spike records as JSON lines of `encoder`'s format.
pub fn write_spikes(
    spikes: &[Spike],
    encoder: &Encoder,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    for s in spikes {
        out.write_all(encoder.to_json_line(s).as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes `findings` as JSON Lines in `encoder`'s format to `to` (a path, or `-` for standard output).
pub fn write_findings_to(
    findings: &[flowspike_detections::Finding],
    encoder: &Encoder,
    to: &str,
) -> anyhow::Result<()> {
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        for f in findings {
            out.write_all(encoder.finding_line(f).as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()
    };
    if to == "-" {
        write(&mut std::io::stdout().lock()).context("cannot write findings to standard output")
    } else {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(to).with_context(|| format!("cannot create {to}"))?,
        );
        write(&mut f).with_context(|| format!("cannot write {to}"))
    }
}

/// Where a replay's records go: `explicit` when given, else standard output for an S3 state and
/// `<state>/<dir>/replay-<time>.jsonl` for a local one (the directory made).
fn records_to(explicit: Option<&str>, state: &str, dir: &str) -> anyhow::Result<String> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if state.starts_with("s3://") {
        return Ok("-".to_owned());
    }
    let dir = std::path::Path::new(state).join(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = chrono::Utc::now().format("replay-%Y%m%dT%H%M%SZ.jsonl");
    Ok(dir.join(name.to_string()).display().to_string())
}

/// Runs the command.
pub fn run(a: ReplayArgs) -> anyhow::Result<u8> {
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().ok();
    }
    let mut pipeline = pipeline(&a.pipeline)?;
    let output = output(&a.findings, None)?;
    // A replay's clock is the wall clock when it starts (`--max-future-secs` past it).
    pipeline.rule = pipeline.rule.at_clock(chrono::Utc::now().timestamp());
    let from = a.from.as_deref().map(parse_time).transpose()?;
    let to = a.to.as_deref().map(parse_time).transpose()?;
    let mut s3 = None;
    let retry = Policy::For(std::time::Duration::from_secs(a.retry_secs));
    let state = open_state_with(&a.state, &mut s3, retry)?;
    let cfg = ReplayConfig {
        sources: Vec::new(),
        from,
        to,
        pipeline,
        detections: crate::settings::detections(&a.detections, &mut s3)?,
        fetchers: if a.sources.iter().any(|s| s.starts_with("s3://")) { 8 } else { 2 },
        stream: StreamSettings {
            min_object_bytes: a.stream_min_bytes,
            block_bytes: usize::try_from(a.stream_block_bytes).unwrap_or(usize::MAX),
            map_files: !a.no_mmap,
        },
    };
    let outcome = replay_sources_with(&a.sources, &state, &mut s3, cfg, retry)?;
    let spikes_to = records_to(a.spikes.as_deref(), &a.state, "spikes")?;
    if spikes_to == "-" {
        write_spikes(&outcome.spikes, &output.encoder, &mut std::io::stdout().lock())
            .context("cannot write spikes to standard output")?;
    } else {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&spikes_to)
                .with_context(|| format!("cannot create {spikes_to}"))?,
        );
        write_spikes(&outcome.spikes, &output.encoder, &mut f)
            .with_context(|| format!("cannot write {spikes_to}"))?;
    }
    let findings_to = records_to(a.findings_out.as_deref(), &a.state, "findings")?;
    write_findings_to(&outcome.findings, &output.encoder, &findings_to)?;
    // Then Security Hub and EventBridge, the spikes first and then the findings, retried like the
    // S3 calls (--retry-secs): both files are written first, so a sink that fails for good still
    // leaves every record on disk.
    if let Some(mut sinks) = ExtraSinks::new(&output, retry)? {
        sinks.emit(&outcome.spikes).context("delivering the spikes")?;
        sinks.emit_findings(&outcome.findings).context("delivering the findings")?;
    }
    print_summary(&outcome, a.json, &spikes_to);
    if !outcome.findings.is_empty() || a.findings_out.is_some() {
        eprintln!("findings {} -> {}", outcome.findings.len(), findings_to);
    }
    Ok(if outcome.summary.skipped_anything() { crate::EXIT_SKIPPED } else { 0 })
}

/// The end-of-run summary on stderr.
pub fn print_summary(o: &ReplayOutcome, json: bool, spikes_to: &str) {
    let s = &o.summary;
    if json {
        eprintln!("{}", serde_json::to_string(s).unwrap_or_default());
        return;
    }
    eprintln!(
        "replayed {} objects ({:.1} MB stored, {:.1} MB decoded) in {:.2} s: {:.0} MB/s",
        s.files,
        s.bytes as f64 / 1e6,
        s.decoded_bytes as f64 / 1e6,
        s.elapsed_ms as f64 / 1000.0,
        s.mb_per_s()
    );
    eprintln!(
        "records {}, counted {}, malformed {}, control messages {}, outside --from/--to {}, unreadable objects {}",
        s.records, s.counted, s.malformed, s.control_messages, s.out_of_range, s.unreadable_files
    );
    eprintln!("hours written {}, spikes {} -> {}", s.hours_written, s.spikes, spikes_to);
    for m in &s.malformed_samples {
        eprintln!("  malformed: {m}");
    }
    for m in &s.unreadable_samples {
        eprintln!("  unreadable: {m}");
    }
    let hour = |h: i64| {
        chrono::DateTime::from_timestamp(h, 0)
            .map_or_else(|| h.to_string(), |t| t.format("%Y-%m-%dT%H").to_string())
    };
    for u in &s.untouched_hours {
        eprintln!(
            "  hour {} left untouched (not rewritten): damaged object {}",
            hour(u.hour),
            u.objects.join(", ")
        );
    }
    if !s.hours_over_source_cap.is_empty() {
        let hours: Vec<String> = s.hours_over_source_cap.iter().map(|h| hour(*h)).collect();
        eprintln!(
            "  over --max-sources-per-hour: {} records of about {} sources not counted, hours {}",
            s.records_over_source_cap,
            s.sources_over_source_cap,
            hours.join(", ")
        );
    }
    if !s.hours_over_scan_cap.is_empty() {
        let hours: Vec<String> = s.hours_over_scan_cap.iter().map(|h| hour(*h)).collect();
        eprintln!(
            "  over the port-scan tap's per-hour cap: {} records not judged for scans, hours {}",
            s.records_over_scan_cap,
            hours.join(", ")
        );
    }
}
