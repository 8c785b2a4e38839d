//! Prints a Markdown table of detection quality (recall of injected bursts, false alerts per 10,000
//! active source-hours after the 720-hour warm-up) for several seeds of the default synthetic archive.
//!
//! `cargo run --release -p flowspike-detect --example quality [seeds]`

#[path = "../tests/support/quality.rs"]
mod quality;

use flowspike_detect::Mode;
use flowspike_synth::SynthConfig;

/// (mode, min_count) pairs evaluated: the defaults, and a floor of 10 blocked records.
const VARIANTS: [(Mode, u64); 4] =
    [(Mode::Window, 1), (Mode::Splunk, 1), (Mode::Window, 10), (Mode::Splunk, 10)];

fn main() {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut results = Vec::new();
    for seed in 1..=seeds {
        for (mode, min_count) in VARIANTS {
            let synth = SynthConfig { seed, ..SynthConfig::default() };
            results.push(quality::evaluate(&synth, &quality::config(mode, min_count)));
        }
    }
    let total = |(mode, min_count): (Mode, u64)| {
        let r: Vec<_> =
            results.iter().filter(|q| q.mode == mode && q.min_count == min_count).collect();
        let (inj, det, fa, sh) = r.iter().fold((0, 0, 0, 0), |a, q| {
            (a.0 + q.injected, a.1 + q.detected, a.2 + q.false_alerts, a.3 + q.source_hours)
        });
        quality::Quality {
            seed: 0,
            mode,
            min_count,
            injected: inj,
            detected: det,
            false_alerts: fa,
            source_hours: sh,
        }
    };
    let mut table = quality::markdown(&results);
    let totals = quality::markdown(&VARIANTS.map(total));
    for line in totals.lines().skip(2) {
        table.push_str(&line.replacen("| 0 |", "| all |", 1));
        table.push('\n');
    }
    print!("{table}");
}
