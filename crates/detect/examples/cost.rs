//! Detection time per million source-hours: the streaming `Detector` over every hour of seed 1 of
//! the fleet scenario, adaptive (the default) and window mode, best of 5 runs.
//!
//! `cargo run --release -p flowspike-detect --example cost`

#[path = "../tests/support/quality.rs"]
#[allow(dead_code)]
mod quality;

use std::time::Instant;

use flowspike_detect::Detector;
use flowspike_synth::SynthConfig;

fn main() {
    let case = quality::fleet_case(&SynthConfig::fleet(1));
    let rows: usize = case.hours.iter().map(|(_, r)| r.len()).sum();
    for spec in ["adaptive", "window"] {
        let cfg = quality::parse_spec(spec).expect("a valid spec");
        let mut best = f64::MAX;
        let mut records = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let mut d = Detector::new(cfg.clone());
            records = case.hours.iter().map(|(h, r)| d.observe_hour(*h, r).len()).sum::<usize>();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{spec}: {rows} source-hours, {records} records in {best:.3} s = {:.2} s per million source-hours",
            best / rows as f64 * 1e6
        );
    }
}
