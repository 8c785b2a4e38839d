#![allow(missing_docs)]
#[path = "../tests/support/quality.rs"]
#[allow(dead_code)]
mod quality;
use std::collections::HashMap;
use flowspike_synth::SynthConfig;
fn main() {
    for seed in 1..=3 {
    let case = quality::fleet_case(&SynthConfig::fleet(seed));
    let kinds: HashMap<&str, _> = case.labels.hosts.iter().map(|h| (h.src_ip.as_str(), h)).collect();
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    let mut nk: HashMap<String, usize> = HashMap::new();
    for h in &case.labels.hosts { *nk.entry(format!("{:?}", h.kind)).or_default() += 1; }
    for (hour, rows) in &case.hours {
        for r in rows {
            if seen.insert(r.src_ip.clone()) && *hour >= case.warm_end {
                let h = kinds[r.src_ip.as_str()];
                out.push(format!("{:?}:{}", h.kind, r.blocked_count));
            }
        }
    }
    println!("seed {seed} kinds {nk:?}\n births after warm-up: {}", out.join(" "));
    }
}
