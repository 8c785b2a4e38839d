//! Detection quality on labelled synthetic data (shared by `tests/quality.rs` and
//! `examples/quality.rs`).

use std::collections::HashSet;

use flowspike_counter::AggregateRow;
use flowspike_detect::{detect, DetectConfig, Mode};

/// Detection settings of `mode` with a `min_count` floor, defaults otherwise.
pub fn config(mode: Mode, min_count: u64) -> DetectConfig {
    DetectConfig { mode, min_count, ..DetectConfig::default() }
}
use flowspike_synth::{expected_counts, injected_spikes, SynthConfig};

/// Quality figures of one (seed, mode).
#[derive(Debug, Clone)]
pub struct Quality {
    pub seed: u64,
    pub mode: Mode,
    pub min_count: u64,
    pub injected: usize,
    pub detected: usize,
    pub false_alerts: usize,
    /// Active (hour, source) pairs after the warm-up.
    pub source_hours: usize,
}

impl Quality {
    pub fn recall(&self) -> f64 {
        if self.injected == 0 {
            1.0
        } else {
            self.detected as f64 / self.injected as f64
        }
    }

    pub fn false_per_10k(&self) -> f64 {
        self.false_alerts as f64 * 10_000.0 / self.source_hours.max(1) as f64
    }
}

/// Generates `synth`'s ground truth, detects with `mode` and scores spikes after a warm-up of
/// `cfg.window_hours` (injected bursts all lie after it).
pub fn evaluate(synth: &SynthConfig, cfg: &DetectConfig) -> Quality {
    let counts = expected_counts(synth).expect("valid synth config");
    let injected = injected_spikes(synth).expect("valid synth config");
    let rows: Vec<AggregateRow> = counts
        .iter()
        .map(|e| AggregateRow {
            hour: e.hour,
            src_ip: e.src_ip.clone(),
            blocked_count: e.blocked_count,
            ..AggregateRow::default()
        })
        .collect();
    let warm_end = synth.start + i64::from(cfg.window_hours) * 3600;
    let spikes = detect(cfg, &rows);
    let truth: HashSet<(i64, &str)> =
        injected.iter().map(|s| (s.hour, s.src_ip.as_str())).collect();
    let flagged: HashSet<(i64, &str)> =
        spikes.iter().filter(|s| s.hour >= warm_end).map(|s| (s.hour, s.src_ip.as_str())).collect();
    Quality {
        seed: synth.seed,
        mode: cfg.mode,
        min_count: cfg.min_count,
        injected: truth.len(),
        detected: truth.intersection(&flagged).count(),
        false_alerts: flagged.difference(&truth).count(),
        source_hours: rows.iter().filter(|r| r.hour >= warm_end).count(),
    }
}

/// A Markdown table of the results.
pub fn markdown(results: &[Quality]) -> String {
    let mut s = String::from(
        "| seed | mode | min_count | injected | detected | recall | false alerts | source-hours | false alerts / 10k source-hours |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for q in results {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.1} |\n",
            q.seed,
            q.mode,
            q.min_count,
            q.injected,
            q.detected,
            q.recall(),
            q.false_alerts,
            q.source_hours,
            q.false_per_10k()
        ));
    }
    s
}
