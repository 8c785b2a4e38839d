//! Detection quality on labelled synthetic data (shared by `tests/quality.rs` and
//! `examples/quality/main.rs`).

use std::collections::HashSet;

use flowspike_detect::{detect, DetectConfig, Mode};
use flowspike_model::AggregateRow;

use flowspike_synth::{expected_counts, injected_spikes, SynthConfig};

/// Detection settings of `mode` with a `min_count` floor, defaults otherwise.
pub fn config(mode: Mode, min_count: u64) -> DetectConfig {
    DetectConfig { min_count, ..DetectConfig::for_mode(mode) }
}

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

// ---- The labelled fleet scenario (`SynthConfig::fleet`) ----

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use flowspike_detect::{Detector, Spike};
use flowspike_synth::{expected_rows_by_hour, labels, AnomalyKind, Labels, WARM_UP_HOURS};

/// A fleet scenario's ground truth, built once and scored against any number of configs.
#[derive(Debug, Clone)]
pub struct FleetCase {
    /// The generator's config.
    pub synth: SynthConfig,
    /// Every hour of the scenario in order, with its rows (as the counter would build them).
    pub hours: Vec<(i64, Vec<AggregateRow>)>,
    /// Anomalies, the fleet event and the hosts.
    pub labels: Labels,
    /// First scored hour: the start plus the one-week warm-up.
    pub warm_end: i64,
}

impl FleetCase {
    /// Every row of every hour, in order.
    pub fn rows(&self) -> Vec<AggregateRow> {
        self.hours.iter().flat_map(|(_, rows)| rows.iter().cloned()).collect()
    }
}

/// Builds the ground truth of `synth` (a fleet-scenario config) without writing any object.
pub fn fleet_case(synth: &SynthConfig) -> FleetCase {
    let labels = labels(synth).expect("valid synth config").expect("a fleet-scenario config");
    let mut hours = Vec::with_capacity(synth.hours as usize);
    expected_rows_by_hour(synth, |hour, rows| {
        let rows = rows
            .into_iter()
            .map(|e| AggregateRow {
                hour: e.hour,
                src_ip: e.src_ip,
                blocked_count: e.blocked_count,
                unique_dest_count: e.unique_dest_count,
                dest_ips: e.dest_ips,
                interface_ids: vec![e.interface_id],
                ..AggregateRow::default()
            })
            .collect();
        hours.push((hour, rows));
    })
    .expect("valid synth config");
    let warm_end = synth.start + i64::from(WARM_UP_HOURS) * 3600;
    FleetCase { synth: synth.clone(), hours, labels, warm_end }
}

/// Parses a detector spec `mode[:key=value]...` into a [`DetectConfig`]: the mode by its own
/// `FromStr` (so a new mode works unchanged), each `key=value` set on the serialised defaults of
/// that mode (`DetectConfig::for_mode`) (`value` as JSON, else as a string), e.g. `window:min_count=10`.
pub fn parse_spec(spec: &str) -> Result<DetectConfig, String> {
    let mut parts = spec.split(':');
    let mode = Mode::from_str(parts.next().unwrap_or_default()).map_err(|e| e.to_string())?;
    let mut v = serde_json::to_value(DetectConfig::for_mode(mode))
        .map_err(|e| format!("serialising the default config: {e}"))?;
    for kv in parts {
        let (k, val) = kv.split_once('=').ok_or_else(|| format!("{kv:?} is not key=value"))?;
        let obj = v.as_object_mut().ok_or("the config is not a json object")?;
        if !obj.contains_key(k) {
            let keys: Vec<&String> = obj.keys().collect();
            return Err(format!("unknown config key {k:?} in {spec:?}; keys: {keys:?}"));
        }
        let parsed = serde_json::from_str(val).unwrap_or(serde_json::Value::String(val.into()));
        obj.insert(k.to_string(), parsed);
    }
    let cfg: DetectConfig =
        serde_json::from_value(v).map_err(|e| format!("config of {spec:?}: {e}"))?;
    cfg.validate().map_err(|e| format!("config of {spec:?}: {e}"))?;
    Ok(cfg)
}

/// Scores of one detector config on one seed of the fleet scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetScore {
    /// The generator seed.
    pub seed: u64,
    /// The detector spec (see [`parse_spec`]).
    pub spec: String,
    /// Per kind: (anomalies found, anomalies labelled).
    pub found: BTreeMap<AnomalyKind, (usize, usize)>,
    /// Records after the warm-up that match no anomaly and are not about the fleet event.
    pub false_alerts: usize,
    /// Active (≥ 1 counted flow) source-hours after the warm-up, outside the fleet event's
    /// (hour, source) pairs.
    pub source_hours: usize,
    /// Records in the event's hours naming one of its sources or its destination, plus fleet
    /// records (`src_ips`) in those hours.
    pub fleet_records: usize,
    /// Every record emitted (warm-up included).
    pub records: usize,
}

impl FleetScore {
    /// Anomalies found over anomalies labelled, every kind together.
    pub fn recall(&self) -> f64 {
        let (f, n) = self.found.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
        if n == 0 {
            1.0
        } else {
            f as f64 / n as f64
        }
    }

    /// Recall of one kind (`None` when none is labelled).
    pub fn recall_of(&self, kind: AnomalyKind) -> Option<f64> {
        self.found.get(&kind).filter(|v| v.1 > 0).map(|&(f, n)| f as f64 / n as f64)
    }

    /// False alerts per 10,000 active source-hours.
    pub fn false_per_10k(&self) -> f64 {
        self.false_alerts as f64 * 10_000.0 / self.source_hours.max(1) as f64
    }
}

/// Runs `cfg` over the case through the streaming [`Detector`], hour by hour as replay does, and
/// scores its records.
pub fn evaluate_fleet(case: &FleetCase, spec: &str, cfg: &DetectConfig) -> FleetScore {
    let mut d = Detector::new(cfg.clone());
    let mut spikes = Vec::new();
    for (hour, rows) in &case.hours {
        spikes.extend(d.try_observe_hour(*hour, rows).expect("hours in increasing order"));
    }
    score_fleet(case, spec, &spikes)
}

/// True for a fleet record: one carrying `src_ips` (read from the JSON, so this does not depend
/// on the record's Rust fields) or no `src_ip`.
pub fn is_fleet_record(s: &Spike) -> bool {
    let v = serde_json::to_value(s).unwrap_or_default();
    let many = v.get("src_ips").and_then(|x| x.as_array()).is_some_and(|a| !a.is_empty());
    many || v.get("src_ip").and_then(|x| x.as_str()).is_none_or(str::is_empty)
}

/// Scores `spikes` against the case's labels. Matching rule: a record for (hour, src_ip) matches a
/// labelled anomaly of that source in that hour (an anomaly is found when any of its hours is
/// matched); a fleet record matches nothing but counts towards the fleet-event records in the
/// event's hours (and is a false alert elsewhere); only hours from `warm_end` on are scored.
pub fn score_fleet(case: &FleetCase, spec: &str, spikes: &[Spike]) -> FleetScore {
    let l = &case.labels;
    let mut by_hour_src: HashMap<(i64, &str), usize> = HashMap::new();
    for (i, a) in l.anomalies.iter().enumerate() {
        for &h in &a.hours {
            by_hour_src.insert((h, a.src_ip.as_str()), i);
        }
    }
    let ev = &l.fleet_event;
    let ev_srcs: HashSet<&str> = ev.src_ips.iter().map(String::as_str).collect();
    let in_event = |h: i64| ev.hours.contains(&h);
    let mut hit = vec![false; l.anomalies.len()];
    let (mut false_alerts, mut fleet_records) = (0, 0);
    for s in spikes.iter().filter(|s| s.hour >= case.warm_end) {
        if is_fleet_record(s) {
            if in_event(s.hour) {
                fleet_records += 1;
            } else {
                false_alerts += 1;
            }
        } else if let Some(&i) = by_hour_src.get(&(s.hour, s.src_ip.as_str())) {
            hit[i] = true;
        } else if in_event(s.hour)
            && (ev_srcs.contains(s.src_ip.as_str()) || s.dest_ips.contains(&ev.dest_ip))
        {
            fleet_records += 1;
        } else {
            false_alerts += 1;
        }
    }
    let mut found: BTreeMap<AnomalyKind, (usize, usize)> =
        AnomalyKind::ALL.iter().map(|&k| (k, (0, 0))).collect();
    for (a, &h) in l.anomalies.iter().zip(&hit) {
        let e = found.entry(a.kind).or_default();
        e.0 += usize::from(h);
        e.1 += 1;
    }
    let source_hours = case
        .hours
        .iter()
        .filter(|(h, _)| *h >= case.warm_end)
        .map(|(h, rows)| {
            rows.iter()
                .filter(|r| r.blocked_count > 0)
                .filter(|r| !(in_event(*h) && ev_srcs.contains(r.src_ip.as_str())))
                .count()
        })
        .sum();
    FleetScore {
        seed: case.synth.seed,
        spec: spec.to_string(),
        found,
        false_alerts,
        source_hours,
        fleet_records,
        records: spikes.len(),
    }
}

/// A Markdown table: one row per spec (in first-seen order) summarising its seeds — recall per
/// kind (pooled over the seeds), overall recall (mean, worst seed), false alerts per 10k active
/// source-hours (mean, worst) and fleet-event records (mean, worst).
pub fn fleet_markdown(scores: &[FleetScore]) -> String {
    let mut s = String::from("| mode | seeds |");
    for k in AnomalyKind::ALL {
        s.push_str(&format!(" {} |", k.as_str()));
    }
    s.push_str(
        " recall (mean) | recall (worst) | false / 10k (mean) | false / 10k (worst) | fleet records (mean) | fleet records (worst) |\n|---|---|",
    );
    s.push_str(&"---:|".repeat(AnomalyKind::ALL.len() + 6));
    s.push('\n');
    let mut specs: Vec<&str> = Vec::new();
    for q in scores {
        if !specs.contains(&q.spec.as_str()) {
            specs.push(&q.spec);
        }
    }
    for spec in specs {
        let r: Vec<&FleetScore> = scores.iter().filter(|q| q.spec == spec).collect();
        let n = r.len() as f64;
        let seeds: Vec<u64> = r.iter().map(|q| q.seed).collect();
        let seeds = match (seeds.first(), seeds.last()) {
            (Some(a), Some(b)) if seeds.len() > 1 && b - a + 1 == seeds.len() as u64 => {
                format!("{a}–{b}")
            }
            _ => seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        };
        s.push_str(&format!("| {spec} | {seeds} |"));
        for k in AnomalyKind::ALL {
            let (f, t) = r.iter().fold((0, 0), |a, q| {
                let v = q.found.get(&k).copied().unwrap_or_default();
                (a.0 + v.0, a.1 + v.1)
            });
            if t == 0 {
                s.push_str(" – |");
            } else {
                s.push_str(&format!(" {:.2} |", f as f64 / t as f64));
            }
        }
        let mean = |f: &dyn Fn(&FleetScore) -> f64| r.iter().map(|q| f(q)).sum::<f64>() / n;
        let worst_min = r.iter().map(|q| q.recall()).fold(f64::INFINITY, f64::min);
        let worst_max = |f: &dyn Fn(&FleetScore) -> f64| {
            r.iter().map(|q| f(q)).fold(f64::NEG_INFINITY, f64::max)
        };
        s.push_str(&format!(
            " {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {} |\n",
            mean(&|q| q.recall()),
            worst_min,
            mean(&|q| q.false_per_10k()),
            worst_max(&|q| q.false_per_10k()),
            mean(&|q| q.fleet_records as f64),
            worst_max(&|q| q.fleet_records as f64),
        ));
    }
    s
}

// ---- The oracle: the generator's own distributions (`flowspike_synth::BackgroundTruth`) ----

use flowspike_synth::{background_truth, quantile, HostKind};

/// `P(X >= c)` of a gamma-Poisson of mean `mu` and shape `k` (Poisson when `k` is infinite), by
/// summing the mass function below `c` (small counts only: a few thousand terms at most).
pub fn tail(c: u64, mu: f64, k: f64) -> f64 {
    if c == 0 {
        return 1.0;
    }
    if mu <= 0.0 {
        return 0.0;
    }
    let (mut p, finite) =
        if k.is_finite() { ((-k * (mu / k).ln_1p()).exp(), true) } else { ((-mu).exp(), false) };
    let mut cdf = 0.0;
    for x in 0..c {
        cdf += p;
        let x = x as f64;
        p *= if finite { (x + k) / (x + 1.0) * mu / (k + mu) } else { mu / (x + 1.0) };
    }
    (1.0 - cdf).max(0.0)
}

/// What the oracle scores on a case: flag every scored source-hour whose count is above the
/// source's true 99.99th percentile for that hour (the `moderate` kind's definition), knowing the
/// generator's mean and shape of every host and hour.
#[derive(Debug, Clone, Default)]
pub struct Oracle {
    /// Moderate anomalies found, and labelled.
    pub found: usize,
    pub moderate: usize,
    /// Ordinary (unlabelled) source-hours flagged, by host kind.
    pub flagged: usize,
    pub by_kind: BTreeMap<HostKind, usize>,
    /// Active ordinary source-hours: unlabelled, at least one flow, outside the fleet event.
    pub active: usize,
    /// Expected number of ordinary source-hours flagged: `Σ P(X > q)` over every host and hour.
    pub expected: f64,
}

impl Oracle {
    /// Expected false alerts per 10,000 active source-hours.
    pub fn expected_per_10k(&self) -> f64 {
        self.expected * 1e4 / self.active.max(1) as f64
    }
}

/// Scores the oracle on `case` (hours after the warm-up, outside the fleet event's source-hours).
pub fn oracle(case: &FleetCase) -> Oracle {
    let truth = background_truth(&case.synth).expect("valid config").expect("a fleet scenario");
    let l = &case.labels;
    let labelled: HashMap<(i64, &str), AnomalyKind> = l
        .anomalies
        .iter()
        .flat_map(|a| a.hours.iter().map(move |&h| ((h, a.src_ip.as_str()), a.kind)))
        .collect();
    let ev = &l.fleet_event;
    let mut o = Oracle::default();
    for (hour, rows) in case.hours.iter().filter(|(h, _)| *h >= case.warm_end) {
        let counts: HashMap<&str, u64> =
            rows.iter().map(|r| (r.src_ip.as_str(), r.blocked_count)).collect();
        for hl in &l.hosts {
            let src = hl.src_ip.as_str();
            if ev.hours.contains(hour) && ev.src_ips.iter().any(|s| s == src) {
                continue;
            }
            let c = counts.get(src).copied().unwrap_or(0);
            let Some((mu, k)) = truth.distribution(src, *hour) else { continue };
            if let Some(kind) = labelled.get(&(*hour, src)) {
                if *kind == AnomalyKind::Moderate {
                    o.moderate += 1;
                    o.found += usize::from(c > quantile(mu, k, 0.9999));
                }
                continue;
            }
            if mu <= 0.0 {
                continue;
            }
            let q = quantile(mu, k, 0.9999);
            o.expected += tail(q + 1, mu, k);
            o.active += usize::from(c > 0);
            if c > q {
                o.flagged += 1;
                *o.by_kind.entry(hl.kind).or_default() += 1;
            }
        }
    }
    o
}
