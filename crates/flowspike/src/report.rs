//! `flowspike explain` and `flowspike report`: arguments to `flowspike-report`, which does the work.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use flowspike_detect::{DetectConfig, Mode, Spike};
use flowspike_history::{History, Store};
use flowspike_report::{OutputKind, ReportInput, ReportSummary};

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
    let text = match kind {
        OutputKind::Svg => e.svg((1000, 380))?,
        OutputKind::Html | OutputKind::Text => e.to_html()?,
    };
    std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("explain {}: {}", a.src_ip, out.display());
    Ok(0)
}

/// `flowspike report`.
pub fn report(a: ReportArgs) -> anyhow::Result<u8> {
    let (_, _, cfg) = detect_settings(&a.detect)?;
    let from = a.from.as_deref().map(parse_time).transpose()?;
    let to = a.to.as_deref().map(parse_time).transpose()?;
    let store = existing_state(&a.state)?;
    let (spikes, records_from) = if a.spikes.is_empty() {
        let found = flowspike_report::read_state_spikes(store.as_ref())?;
        if found.bad_lines > 0 {
            eprintln!(
                "warning: {} lines of {} are not spike records (skipped)",
                found.bad_lines,
                found.files.join(", ")
            );
        }
        if found.files.is_empty() {
            (None, format!("no spike records in {}/spikes/", a.state.trim_end_matches('/')))
        } else {
            let n = found.files.len();
            (
                Some(found.spikes),
                format!(
                    "{n} file{} in {}/spikes/",
                    if n == 1 { "" } else { "s" },
                    a.state.trim_end_matches('/')
                ),
            )
        }
    } else {
        let mut spikes = Vec::new();
        for p in &a.spikes {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            let (s, bad) = flowspike_report::read_spike_lines(&bytes);
            if bad > 0 {
                eprintln!(
                    "warning: {bad} lines of {} are not spike records (skipped)",
                    p.display()
                );
            }
            spikes.extend(s);
        }
        let names: Vec<String> = a.spikes.iter().map(|p| p.display().to_string()).collect();
        (Some(spikes), names.join(", "))
    };
    let history = History::new(store);
    let summary = write(
        &history,
        a.detect.min_count,
        &cfg,
        spikes,
        (from, to),
        records_from,
        &a.state,
        &a.out,
    )?;
    eprintln!(
        "report: {} incident{}{}",
        summary.incidents,
        if summary.incidents == 1 { "" } else { "s" },
        if summary.recomputed { " (replayed from the history: no spike records)" } else { "" },
    );
    println!("{}", summary.index.display());
    Ok(0)
}

/// Writes the report of `spikes` (`None`: replayed from the history) into `out`, the detection
/// settings being `cfg` and, for records of another mode, [`config_for`] with `min_count`.
#[allow(clippy::too_many_arguments)] // reason: two call sites (report, demo), each argument named there
pub fn write(
    history: &History,
    min_count: Option<u64>,
    cfg: &DetectConfig,
    spikes: Option<Vec<Spike>>,
    (from, to): (Option<i64>, Option<i64>),
    records_from: String,
    state: &str,
    out: &Path,
) -> anyhow::Result<ReportSummary> {
    let config_for = |m: Mode| config_for(min_count, cfg, m);
    let input = ReportInput {
        history,
        config_for: &config_for,
        mode: cfg.mode,
        spikes,
        from,
        to,
        records_from,
        state: state.to_string(),
    };
    flowspike_report::write_report(&input, out)
        .with_context(|| format!("cannot write the report into {}", out.display()))
}
