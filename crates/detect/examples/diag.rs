#![allow(missing_docs)]
#[path = "../tests/support/quality.rs"]
#[allow(dead_code)]
mod quality;
use std::collections::HashMap;
use flowspike_detect::Detector;
use flowspike_synth::SynthConfig;
fn main() {
    let seed: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let spec = std::env::args().nth(2).unwrap_or("adaptive".into());
    let cfg = quality::parse_spec(&spec).unwrap();
    let case = quality::fleet_case(&SynthConfig::fleet(seed));
    let kinds: HashMap<&str, _> = case.labels.hosts.iter().map(|h| (h.src_ip.as_str(), h)).collect();
    let mut want: HashMap<(i64, &str), (&str, u64, u64)> = HashMap::new();
    for a in &case.labels.anomalies {
        for (h, c) in a.hours.iter().zip(&a.counts) {
            want.insert((*h, a.src_ip.as_str()), (a.kind.as_str(), *c, a.p9999));
        }
    }
    let mut d = Detector::new(cfg);
    let mut spikes = Vec::new();
    for (hour, rows) in &case.hours {
        for r in rows {
            if let Some((k, c, p)) = want.get(&(*hour, r.src_ip.as_str())) {
                let h = kinds.get(r.src_ip.as_str());
                println!("ANOM {k} {} c={c} p9999={p} thr={:?} kind={:?} mean={:.2}", r.src_ip, d.threshold(*hour, &r.src_ip), h.map(|h| h.kind), h.map_or(0.0, |h| h.weekly_mean));
            }
        }
        spikes.extend(d.observe_hour(*hour, rows));
    }
    let ev = &case.labels.fleet_event;
    let mut by_kind: HashMap<String, usize> = HashMap::new();
    for s in spikes.iter().filter(|s| s.hour >= case.warm_end) {
        if want.contains_key(&(s.hour, s.src_ip.as_str())) { continue; }
        if ev.hours.contains(&s.hour) && ev.src_ips.contains(&s.src_ip) { continue; }
        let h = kinds.get(s.src_ip.as_str());
        let k = format!("{:?}", h.map(|h| h.kind));
        *by_kind.entry(k.clone()).or_default() += 1;
        if std::env::var("V").is_ok() {
            println!("FALSE {k} {} {} c={} exp={:.2} sd={:.2} thr={} p={:.2e} n={} reason={:?} wmean={:.2} born={:?}", s.src_ip, flowspike_detect::format_hour(s.hour), s.blocked_count, s.baseline_mean, s.baseline_stdev, s.threshold, s.p_value.unwrap_or(1.0), s.data_points, s.reason, h.map_or(0.0, |h| h.weekly_mean), h.and_then(|h| h.born));
        }
    }
    println!("false by kind: {by_kind:?}");
}
