//! Prints a Markdown table of detection quality on labelled synthetic data.
//!
//! `cargo run --release -p flowspike-detect --example quality -- [--seeds N] [--first-seed S] [--per-seed] [--explain-misses] [SPEC...]`
//!
//! Fleet scenario (default; `SynthConfig::fleet`, N seeds from S: `--seeds N` (default 5),
//! `--first-seed S` (default 1)): each SPEC
//! (`mode[:key=value]...`, e.g. `window`, `splunk`, `window:min_count=10`; default `window splunk`) is
//! run through the streaming `Detector` hour by hour and scored per anomaly kind: recall, false
//! alerts per 10,000 active source-hours after the one-week warm-up (outside the fleet event), and
//! the records emitted about the fleet event. `--per-seed` adds one row per seed.
//!
//! `--explain-misses` then prints, for each SPEC and seed, every missed anomaly (its count, the
//! model's expected count and threshold, the host's true mean, shape and 99.99th percentile), the
//! false alerts grouped by host kind, reason, hour of day and age of the source, and an *oracle*
//! row: what flagging every count above the source's true 99.99th percentile would score (the
//! `moderate` kind's definition), i.e. the best a perfectly known model can do on that kind.
//!
//! `--scenario default` prints the older table instead: recall of the injected bursts and false
//! alerts per 10k source-hours after the 720-hour warm-up on the default config, for window and
//! splunk with `min_count` 1 and 10.

#[path = "../../tests/support/quality.rs"]
#[allow(dead_code)] // shared with tests/quality.rs, which uses the rest
mod quality;

mod explain;

use std::time::Instant;

use flowspike_detect::Mode;
use flowspike_synth::SynthConfig;

/// (mode, min_count) pairs of the default-scenario table: the defaults, and a floor of 10.
const VARIANTS: [(Mode, u64); 4] =
    [(Mode::Window, 1), (Mode::Splunk, 1), (Mode::Window, 10), (Mode::Splunk, 10)];

fn main() {
    let mut seeds: u64 = 5;
    let mut first_seed: u64 = 1;
    let mut scenario = "fleet".to_string();
    let mut per_seed = false;
    let mut explain = false;
    let mut specs: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seeds" => {
                seeds = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
            }
            "--first-seed" => {
                first_seed = args.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
            }
            "--scenario" => scenario = args.next().unwrap_or_else(|| usage()),
            "--per-seed" => per_seed = true,
            "--explain-misses" => explain = true,
            "-h" | "--help" => usage(),
            s if s.starts_with('-') => usage(),
            s => specs.push(s.to_string()),
        }
    }
    match scenario.as_str() {
        "fleet" => fleet(first_seed..first_seed + seeds, per_seed, explain, specs),
        "default" => default_table(seeds),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: quality [--scenario fleet|default] [--seeds N] [--first-seed S] [--per-seed] [--explain-misses] [SPEC...]\n\
         SPEC: mode[:key=value]... (e.g. window, splunk, window:min_count=10)"
    );
    std::process::exit(2)
}

fn fleet(seeds: std::ops::Range<u64>, per_seed: bool, explain: bool, mut specs: Vec<String>) {
    if specs.is_empty() {
        specs = vec!["window".into(), "splunk".into()];
    }
    let cfgs: Vec<_> = specs
        .iter()
        .map(|s| {
            quality::parse_spec(s).unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(2)
            })
        })
        .collect();
    let mut scores = Vec::new();
    for seed in seeds {
        let t = Instant::now();
        let case = quality::fleet_case(&SynthConfig::fleet(seed));
        eprintln!("seed {seed}: truth in {:.2?}", t.elapsed());
        for (spec, cfg) in specs.iter().zip(&cfgs) {
            let t = Instant::now();
            let q = quality::evaluate_fleet(&case, spec, cfg);
            eprintln!(
                "seed {seed} {spec}: recall {:.3}, {} false ({:.1} / 10k of {} source-hours), {} fleet records, {} records, {:.2?}",
                q.recall(),
                q.false_alerts,
                q.false_per_10k(),
                q.source_hours,
                q.fleet_records,
                q.records,
                t.elapsed()
            );
            scores.push(q);
            if explain {
                explain::explain(&case, spec, cfg);
            }
        }
        if explain {
            explain::oracle(&case);
        }
    }
    print!("{}", quality::fleet_markdown(&scores));
    if per_seed {
        println!();
        let mut rows: Vec<quality::FleetScore> = scores.clone();
        for q in &mut rows {
            q.spec = format!("{} (seed {})", q.spec, q.seed);
        }
        print!("{}", quality::fleet_markdown(&rows));
    }
}

fn default_table(seeds: u64) {
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
