//! `flowspike explain` and `flowspike report`: arguments to `flowspike-report`, which does the work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use flowspike_detect::{DetectConfig, Mode, Spike};
use flowspike_findings::Finding;
use flowspike_history::{History, Store};
use flowspike_report::{OutputKind, RecordFiles, ReportError, ReportInput, ReportSummary};

use crate::args::{ExplainArgs, ReportArgs};
use crate::settings::{detect_settings, open_state, parse_time};

/// The state, which must exist: explain and report only read it.
fn existing_state(state: &str) -> anyhow::Result<Arc<dyn Store>> {
    if !state.starts_with("s3://") && !Path::new(state).is_dir() {
        bail!("no state at {state}: pass the --state a replay or a service wrote");
    }
    open_state(state, &mut None)
}

/// The detection settings of `mode`: `base` (the mode in force), or for records of another mode
/// `base` with that mode and its `min_count` (`min_count` when one was given).
fn config_for(min_count: Option<u64>, base: &DetectConfig, mode: Mode) -> DetectConfig {
    if mode == base.mode {
        return base.clone();
    }
    let min_count = min_count.unwrap_or(DetectConfig::for_mode(mode).min_count);
    DetectConfig { mode, min_count, ..base.clone() }
}

/// `flowspike explain`.
pub fn explain(a: ExplainArgs) -> anyhow::Result<u8> {
    let (_, _, cfg) = detect_settings(&a.detect)?;
    let hour = a.hour.as_deref().map(parse_time).transpose()?;
    let kind = a.out.as_deref().map(OutputKind::from_path).transpose()?;
    let history = History::new(existing_state(&a.state)?);
    let e = flowspike_report::explain(&history, &cfg, &a.src_ip, hour)?;
    let (Some(out), Some(kind)) = (&a.out, kind) else {
        print!("{}", e.to_text());
        return Ok(0);
    };
    let bytes = match kind {
        OutputKind::Svg => e.svg((1000, 380))?.into_bytes(),
        OutputKind::Png => e.png((1000, 380))?,
        OutputKind::Html | OutputKind::Text => e.to_html()?.into_bytes(),
    };
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("explain {}: {}", a.src_ip, out.display());
    Ok(0)
}

/// The records of one kind a report lists: those of `files` when some are given, else every
/// `*.jsonl` under the state's `<dir>/` (`from_state`); `noun` names the kind. Returns them (`None`: no file holds any
/// of that kind) and where they came from, in words; lines of neither kind are warned about.
fn gather<T>(
    files: &[PathBuf],
    (state, dir, noun): (&str, &str, &str),
    from_state: impl FnOnce() -> Result<RecordFiles<T>, ReportError>,
    parse: fn(&[u8]) -> (Vec<T>, usize),
) -> anyhow::Result<(Option<Vec<T>>, String)> {
    let warn = |bad: usize, of: &str| {
        if bad > 0 {
            eprintln!("warning: {bad} lines of {of} are not {noun} (skipped)");
        }
    };
    if files.is_empty() {
        let found = from_state()?;
        warn(found.bad_lines, &found.files.join(", "));
        let at = format!("{}/{dir}/", state.trim_end_matches('/'));
        if found.files.is_empty() {
            return Ok((None, format!("no {noun} in {at}")));
        }
        let n = found.files.len();
        return Ok((Some(found.records), format!("{n} file{} in {at}", plural(n))));
    }
    let mut records = Vec::new();
    for p in files {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        let (r, bad) = parse(&bytes);
        warn(bad, &p.display().to_string());
        records.extend(r);
    }
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    Ok((Some(records), names.join(", ")))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `flowspike report`.
pub fn report(a: ReportArgs) -> anyhow::Result<u8> {
    let (_, _, cfg) = detect_settings(&a.detect)?;
    let from = a.from.as_deref().map(parse_time).transpose()?;
    let to = a.to.as_deref().map(parse_time).transpose()?;
    let store = existing_state(&a.state)?;
    let (spikes, spikes_from) = gather(
        &a.spikes,
        (&a.state, "spikes", "spike records"),
        || flowspike_report::read_state_spikes(store.as_ref()),
        flowspike_report::read_spike_lines,
    )?;
    let (findings, findings_from) = gather(
        &a.findings,
        (&a.state, "findings", "findings"),
        || flowspike_report::read_state_findings(store.as_ref()),
        flowspike_report::read_finding_lines,
    )?;
    let findings_from = match &findings {
        Some(_) => format!("from {findings_from}"),
        // The report does not run the other detections: they read flow records, not the history.
        None => format!(
            "none: {findings_from} (replay writes them there; give a service's saved output with --findings)"
        ),
    };
    let records =
        Records { spikes, spikes_from, findings: findings.unwrap_or_default(), findings_from };
    let history = History::new(store);
    let summary = write(&history, a.detect.min_count, &cfg, records, (from, to), &a.state, &a.out)?;
    eprintln!(
        "report: {} incident{}{}",
        summary.incidents,
        plural(summary.incidents),
        if summary.recomputed { " (replayed from the history: no spike records)" } else { "" },
    );
    eprintln!("{}", findings_line(&summary));
    println!("{}", summary.index.display());
    Ok(0)
}

/// The other detections' incidents of a report in one line:
/// `findings: 4 incidents (port_scan 1, port_sweep 1, outbound_volume 1, threat_list 1)`.
pub fn findings_line(summary: &ReportSummary) -> String {
    let n = summary.finding_incidents_total();
    let each: Vec<String> =
        summary.finding_incidents.iter().map(|(d, c)| format!("{d} {c}")).collect();
    format!("findings: {n} incident{} ({})", plural(n), each.join(", "))
}

/// What a report lists, and where each kind came from (in words, shown on the page).
pub struct Records {
    /// The spike records; `None`: the detection is replayed over the history.
    pub spikes: Option<Vec<Spike>>,
    /// Where the spike records came from.
    pub spikes_from: String,
    /// The other detections' findings.
    pub findings: Vec<Finding>,
    /// Where the findings came from, or where they were looked for.
    pub findings_from: String,
}

/// Writes the report of `records` into `out`, the detection settings being `cfg` and, for
/// records of another mode, [`config_for`] with `min_count`.
pub fn write(
    history: &History,
    min_count: Option<u64>,
    cfg: &DetectConfig,
    records: Records,
    (from, to): (Option<i64>, Option<i64>),
    state: &str,
    out: &Path,
) -> anyhow::Result<ReportSummary> {
    let config_for = |m: Mode| config_for(min_count, cfg, m);
    let input = ReportInput {
        history,
        config_for: &config_for,
        mode: cfg.mode,
        spikes: records.spikes,
        from,
        to,
        records_from: records.spikes_from,
        findings: records.findings,
        findings_from: records.findings_from,
        state: state.to_string(),
    };
    flowspike_report::write_report(&input, out)
        .with_context(|| format!("cannot write the report into {}", out.display()))
}
