//! `--explain-misses`: why a detector misses the anomalies it misses and what its false alerts
//! are, measured against the generator's own distribution of each source's hour (the oracle).

use std::collections::{BTreeMap, HashMap, HashSet};

use flowspike_detect::{DetectConfig, Detector, Spike};
use flowspike_model::AggregateRow;
use flowspike_synth::{background_truth, quantile, BackgroundTruth, HostKind};

use crate::quality::{self, FleetCase};

fn truth_of(case: &FleetCase) -> BackgroundTruth {
    background_truth(&case.synth).expect("valid synth config").expect("a fleet-scenario config")
}

fn kind_name(k: Option<HostKind>) -> &'static str {
    match k {
        Some(HostKind::Silent) => "silent",
        Some(HostKind::Quiet) => "quiet",
        Some(HostKind::Steady) => "steady",
        Some(HostKind::Bursty) => "bursty",
        Some(HostKind::Batch) => "batch",
        None => "?",
    }
}

/// The model's view of `src` in `hour` before the hour is fed: (threshold, expected count), the
/// expected count read from the record of a probe count far above any threshold.
fn model_view(d: &Detector, hour: i64, rows: &[AggregateRow], src: &str) -> (Option<u64>, f64) {
    let t = d.threshold(hour, src);
    let mut probe = d.clone();
    let mut rows: Vec<AggregateRow> = rows.iter().filter(|r| r.src_ip != src).cloned().collect();
    rows.push(AggregateRow {
        hour,
        src_ip: src.to_string(),
        blocked_count: 10_000_000,
        ..AggregateRow::default()
    });
    let spikes = probe.observe_hour(hour, &rows);
    let e = spikes.iter().find(|s| s.src_ip == src).and_then(|s| s.expected).unwrap_or(f64::NAN);
    (t, e)
}

/// Prints the misses and the false alerts of `cfg` on `case`.
pub fn explain(case: &FleetCase, spec: &str, cfg: &DetectConfig) {
    let truth = truth_of(case);
    let l = &case.labels;
    let mut at_hour: HashMap<i64, Vec<(usize, usize)>> = HashMap::new();
    for (i, a) in l.anomalies.iter().enumerate() {
        for (j, &h) in a.hours.iter().enumerate() {
            at_hour.entry(h).or_default().push((i, j));
        }
    }
    let mut first_seen: HashMap<String, i64> = HashMap::new();
    let mut views: HashMap<(usize, usize), (Option<u64>, f64)> = HashMap::new();
    let mut d = Detector::new(cfg.clone());
    let mut spikes: Vec<Spike> = Vec::new();
    for (hour, rows) in &case.hours {
        for &(i, j) in at_hour.get(hour).map(Vec::as_slice).unwrap_or_default() {
            views.insert((i, j), model_view(&d, *hour, rows, &l.anomalies[i].src_ip));
        }
        for r in rows {
            first_seen.entry(r.src_ip.clone()).or_insert(*hour);
        }
        spikes.extend(d.try_observe_hour(*hour, rows).expect("hours in increasing order"));
    }
    let flagged: HashSet<(i64, &str)> =
        spikes.iter().map(|s| (s.hour, s.src_ip.as_str())).collect();
    println!("\n### {spec}, seed {}: missed anomalies\n", case.synth.seed);
    println!(
        "| kind | host | src | hour | age (h) | count | p9999 (true) | true mean | true shape | true P(X>=c) | expected (model) | threshold (model) |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, a) in l.anomalies.iter().enumerate() {
        if a.hours.iter().any(|h| flagged.contains(&(*h, a.src_ip.as_str()))) {
            continue;
        }
        for (j, (&h, &c)) in a.hours.iter().zip(&a.counts).enumerate() {
            let (mu, k) = truth.distribution(&a.src_ip, h).unwrap_or((f64::NAN, f64::NAN));
            let (t, e) = views.get(&(i, j)).copied().unwrap_or((None, f64::NAN));
            let age = first_seen.get(&a.src_ip).map_or(0, |&f| (h - f) / 3600);
            println!(
                "| {} | {} | {} | {} | {age} | {c} | {} | {mu:.2} | {k:.2} | {:.1e} | {e:.2} | {} |",
                a.kind.as_str(),
                kind_name(truth.kind(&a.src_ip)),
                a.src_ip,
                flowspike_detect::format_hour(h),
                quantile(mu, k, 0.9999),
                quality::tail(c, mu, k),
                t.map_or("-".into(), |t| t.to_string()),
            );
        }
    }
    // False alerts, as the scoring counts them.
    let labelled: HashSet<(i64, &str)> = l
        .anomalies
        .iter()
        .flat_map(|a| a.hours.iter().map(move |&h| (h, a.src_ip.as_str())))
        .collect();
    let ev = &l.fleet_event;
    let mut groups: BTreeMap<(&str, String), usize> = BTreeMap::new();
    let mut rows_out = Vec::new();
    for s in spikes.iter().filter(|s| s.hour >= case.warm_end) {
        if quality::is_fleet_record(s)
            || labelled.contains(&(s.hour, s.src_ip.as_str()))
            || (ev.hours.contains(&s.hour)
                && (ev.src_ips.contains(&s.src_ip) || s.dest_ips.contains(&ev.dest_ip)))
        {
            continue;
        }
        let kind = kind_name(truth.kind(&s.src_ip));
        let age_w = first_seen.get(&s.src_ip).map_or(0, |&f| (s.hour - f) / (168 * 3600));
        let reason = s.reason.map_or("-", |r| r.as_str());
        *groups.entry(("host", kind.to_string())).or_default() += 1;
        *groups.entry(("reason", reason.to_string())).or_default() += 1;
        *groups.entry(("age (weeks)", age_w.to_string())).or_default() += 1;
        *groups.entry(("hour of day", ((s.hour / 3600) % 24).to_string())).or_default() += 1;
        let (mu, k) = truth.distribution(&s.src_ip, s.hour).unwrap_or((f64::NAN, f64::NAN));
        rows_out.push(format!(
            "| {kind} | {reason} | {} | {} | {age_w} | {} | {:.2} | {mu:.2} | {k:.2} | {:.1e} | {} |",
            s.src_ip,
            flowspike_detect::format_hour(s.hour),
            s.blocked_count,
            s.expected.unwrap_or(f64::NAN),
            quality::tail(s.blocked_count, mu, k),
            s.threshold + 1.0,
        ));
    }
    println!("\n### {spec}, seed {}: {} false alerts\n", case.synth.seed, rows_out.len());
    let mut line = String::new();
    for ((what, key), n) in &groups {
        line.push_str(&format!("{what} {key}: {n}; "));
    }
    println!("{line}\n");
    println!(
        "| host | reason | src | hour | age (weeks) | count | expected (model) | true mean | true shape | true P(X>=c) | threshold (model) |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows_out {
        println!("{r}");
    }
}

/// Prints what the oracle scores (see [`quality::oracle`]).
pub fn oracle(case: &FleetCase) {
    let o = quality::oracle(case);
    println!(
        "\n### oracle, seed {}: counts above the true 99.99th percentile\n\n\
         moderate found {} of {}; other source-hours flagged {} \
         ({:.2} / 10k of {} active source-hours; expected {:.1}, {:.2} / 10k); by host: {:?}",
        case.synth.seed,
        o.found,
        o.moderate,
        o.flagged,
        o.flagged as f64 * 1e4 / o.active.max(1) as f64,
        o.active,
        o.expected,
        o.expected_per_10k(),
        o.by_kind,
    );
}
