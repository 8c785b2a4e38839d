#[path = "../tests/support/quality.rs"]
#[allow(dead_code)]
mod quality;
use flowspike_detect::{DetectConfig, Mode};
use flowspike_synth::SynthConfig;
fn main() {
    let alpha: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1e-6);
    let mc: u64 = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    for seed in 1..=3 {
        let cfg = DetectConfig { alpha, min_count: mc, ..DetectConfig::for_mode(Mode::Adaptive) };
        let t = std::time::Instant::now();
        let q = quality::evaluate(&SynthConfig { seed, ..SynthConfig::default() }, &cfg);
        println!(
            "{seed} recall {:.2} false {} /10k {:.2} sh {} ({:?})",
            q.recall(),
            q.false_alerts,
            q.false_per_10k(),
            q.source_hours,
            t.elapsed()
        );
    }
}
