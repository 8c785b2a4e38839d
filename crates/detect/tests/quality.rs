//! Detection quality on the default synthetic archive: every injected burst is found.

#[path = "support/quality.rs"]
#[allow(dead_code)]
mod quality;

use flowspike_detect::{detect, Detector, DetectorState, Mode, Spike};
use flowspike_synth::{AnomalyKind, SynthConfig};

#[test]
fn window_mode_finds_every_injected_burst_on_the_default_config() {
    let q = quality::evaluate(&SynthConfig::default(), &quality::config(Mode::Window, 1));
    assert_eq!(q.injected, 6);
    assert_eq!(q.recall(), 1.0, "{q:?}");
    // The background is Poisson with a diurnal cycle, so mean + 3 stdev over sparse small counts
    // raises false alerts (about 150 per 10k source-hours, seeded: this pins a regression).
    assert!(q.false_per_10k() < 200.0, "{q:?}");
    let floored = quality::evaluate(&SynthConfig::default(), &quality::config(Mode::Window, 10));
    assert_eq!(floored.recall(), 1.0, "{floored:?}");
    assert!(
        floored.false_per_10k() < 40.0,
        "a floor of 10 records removes most of them: {floored:?}"
    );
}

/// The default (adaptive) mode on the demo's archive (`flowspike demo` asserts "N of N injected
/// bursts detected" with the default mode): every burst found, two orders fewer other alerts than
/// ESCU's rule.
#[test]
fn adaptive_default_finds_every_injected_burst_on_the_default_config() {
    let q = quality::evaluate(&SynthConfig::default(), &flowspike_detect::DetectConfig::default());
    assert_eq!(q.injected, 6);
    assert_eq!(q.recall(), 1.0, "{q:?}");
    // 4 other alerts in 25,578 source-hours (1.6 per 10k; window mode about 150).
    assert!(q.false_per_10k() < 5.0, "{q:?}");
}

#[test]
fn splunk_mode_is_scored_too() {
    let q = quality::evaluate(&SynthConfig::default(), &quality::config(Mode::Splunk, 1));
    assert_eq!(q.injected, 6);
    assert!(q.source_hours > 10_000, "{q:?}");
    // Bursts are > 200 records over baselines of a few per hour: ESCU's update finds them as well.
    assert_eq!(q.recall(), 1.0, "{q:?}");
}

fn small_fleet() -> SynthConfig {
    SynthConfig { hosts: 200, hours: 21 * 24, bursts: 3, ..SynthConfig::fleet(2) }
}

#[test]
fn fleet_specs_parse_modes_by_name_and_set_keys() {
    let c = quality::parse_spec("window:min_count=10:deviations=2.5").unwrap();
    assert_eq!((c.mode, c.min_count, c.deviations), (Mode::Window, 10, 2.5));
    assert_eq!(quality::parse_spec("splunk").unwrap().mode, Mode::Splunk);
    for bad in ["windw", "window:nokey=1", "window:min_count", "window:window_hours=0"] {
        assert!(quality::parse_spec(bad).is_err(), "{bad}");
    }
}

#[test]
fn fleet_scoring_follows_the_matching_rule() {
    let case = quality::fleet_case(&small_fleet());
    let spikes = detect(&quality::parse_spec("window").unwrap(), &case.rows());
    let with = |hour: i64, src: &str| {
        let mut s = spikes[0].clone();
        s.hour = hour;
        s.src_ip = src.to_string();
        s.dest_ips.clear();
        s
    };
    let l = &case.labels;
    let ramp = l.anomalies.iter().find(|a| a.kind == AnomalyKind::Ramp).unwrap();
    let ev = &l.fleet_event;
    let outsider = l
        .hosts
        .iter()
        .find(|h| {
            !ev.src_ips.contains(&h.src_ip) && l.anomalies.iter().all(|a| a.src_ip != h.src_ip)
        })
        .unwrap();
    let mut to_event_dest = with(ev.hours[1], &outsider.src_ip);
    to_event_dest.dest_ips.push(ev.dest_ip.clone());
    let mine = vec![
        // The last hour of a ramp finds it; a second hour of it adds nothing.
        with(ramp.hours[3], &ramp.src_ip),
        with(ramp.hours[2], &ramp.src_ip),
        // An event source in an event hour, and any source naming the event's destination then.
        with(ev.hours[0], &ev.src_ips[0]),
        to_event_dest,
        // A fleet record (no src_ip) in the event, and one outside it: a false alert.
        with(ev.hours[2], ""),
        with(ev.hours[2] + 3600, ""),
        // The same outsider in an ordinary hour, and an hour of the warm-up (not scored).
        with(ev.hours[0] + 86_400, &outsider.src_ip),
        with(case.warm_end - 3600, &outsider.src_ip),
    ];
    let q = quality::score_fleet(&case, "test", &mine);
    let found: usize = q.found.values().map(|v| v.0).sum();
    let labelled: usize = q.found.values().map(|v| v.1).sum();
    assert_eq!((found, labelled), (1, 15), "{q:?}");
    assert_eq!(q.found[&AnomalyKind::Ramp], (1, 3));
    assert_eq!((q.fleet_records, q.false_alerts, q.records), (3, 2, 8), "{q:?}");
    // Active source-hours: scored hours, outside the event's (hour, source) pairs.
    let active: usize = case
        .hours
        .iter()
        .filter(|(h, _)| *h >= case.warm_end)
        .map(|(h, rows)| {
            rows.iter()
                .filter(|r| !(ev.hours.contains(h) && ev.src_ips.contains(&r.src_ip)))
                .count()
        })
        .sum();
    assert_eq!(q.source_hours, active);
    assert!(active > 10_000, "{active}");
}

#[test]
fn fleet_harness_scores_window_mode() {
    let case = quality::fleet_case(&small_fleet());
    let q = quality::evaluate_fleet(&case, "window", &quality::parse_spec("window").unwrap());
    // ESCU's rule finds the large bursts, never a source without 5 prior active hours, and alerts
    // on most of the event's source-hours (one record each).
    assert_eq!(q.recall_of(AnomalyKind::Large), Some(1.0), "{q:?}");
    assert_eq!(q.recall_of(AnomalyKind::NewSource), Some(0.0), "{q:?}");
    let event_source_hours = 3 * case.labels.fleet_event.src_ips.len();
    assert!(q.fleet_records * 2 > event_source_hours, "{q:?}");
    assert!(q.false_per_10k() > 50.0, "{q:?}");
    let table = quality::fleet_markdown(&[q]);
    assert!(table.lines().nth(2).unwrap().starts_with("| window | 2 | 1.00 |"), "{table}");
}

/// The default mode on seed 1 of the fleet scenario (SynthConfig::fleet, 500 hosts, 42 days):
/// pins its figures so a regression fails (docs/detection-quality.md has every seed; seed 1 scores
/// recall 0.90 — moderate 0.6, ramp 0.9, every other kind 1.0 — at 0.8 false alerts per 10k and 3
/// fleet records). The recall target (0.95 at 1 false alert per 10k) is not reached:
/// `moderate` anomalies sit just above a host's own 99.99th percentile, where even the generator's
/// own distributions raise about 1.1 false alerts per 10k (the quality example's oracle).
#[test]
fn adaptive_default_on_the_fleet_scenario() {
    let case = quality::fleet_case(&SynthConfig::fleet(1));
    let cfg = quality::parse_spec("adaptive").unwrap();
    assert_eq!(cfg, flowspike_detect::DetectConfig::default());
    let q = quality::evaluate_fleet(&case, "adaptive", &cfg);
    let recall = |k| q.recall_of(k).unwrap_or(1.0);
    use flowspike_synth::AnomalyKind::*;
    assert_eq!(recall(Large), 1.0, "{q:?}");
    assert_eq!(recall(Quiet), 1.0, "{q:?}");
    assert_eq!(recall(NewSource), 1.0, "{q:?}");
    assert!(recall(Ramp) >= 0.8, "{q:?}");
    assert!(recall(Moderate) >= 0.5, "{q:?}");
    assert!(q.recall() >= 0.88, "{q:?}");
    assert!(q.false_per_10k() <= 1.0, "{q:?}");
    assert!((1..=3).contains(&q.fleet_records), "{q:?}");
    // ESCU's rule on the same case: more recall of moderate bursts, two orders more false alerts.
    let w = quality::evaluate_fleet(&case, "window", &quality::parse_spec("window").unwrap());
    assert!(w.false_per_10k() > 50.0 * q.false_per_10k().max(0.5), "{w:?}");
}

/// Why the recall target is out of reach on this harness (docs/detection-quality.md): a detector
/// that knows every host's true distribution and flags every count above its 99.99th percentile
/// finds every `moderate` anomaly, but already raises about 1.1 false alerts per 10k active
/// source-hours in expectation (the target is at most 1). A model estimated from weeks of data can
/// only do worse on that kind.
#[test]
fn moderate_anomalies_cost_an_oracle_the_whole_false_alert_budget() {
    let case = quality::fleet_case(&SynthConfig::fleet(1));
    let o = quality::oracle(&case);
    assert_eq!((o.found, o.moderate), (10, 10), "{o:?}");
    let per_10k = o.expected_per_10k();
    assert!((1.0..1.3).contains(&per_10k), "expected {per_10k} / 10k: {o:?}");
    // The realised count is that expectation's Poisson draw (16 on seed 1).
    assert!(o.flagged as f64 > 0.5 * o.expected && (o.flagged as f64) < 2.0 * o.expected, "{o:?}");
}

fn adaptive_run(case: &quality::FleetCase, restart_at: Option<i64>) -> Vec<Spike> {
    let cfg = quality::parse_spec("adaptive").unwrap();
    let mut d = Detector::new(cfg.clone());
    let mut spikes = Vec::new();
    for (hour, rows) in &case.hours {
        if Some(*hour) == restart_at {
            let state = DetectorState::from_json_bytes(&d.snapshot().to_json_bytes()).unwrap();
            d = Detector::restore(cfg.clone(), state).unwrap();
        }
        spikes.extend(d.try_observe_hour(*hour, rows).unwrap());
    }
    spikes
}

#[test]
fn adaptive_fleet_event_is_one_record_an_hour_and_episodes_keep_their_first_id() {
    let mut case = quality::fleet_case(&small_fleet());
    // Two consecutive burst hours of one source, two days before the end, so that an episode
    // spans hours whatever the seed's own anomalies do.
    let n = case.hours.len();
    let src = case.hours[n - 48].1.first().expect("an active source").src_ip.clone();
    for (_, rows) in &mut case.hours[n - 48..n - 46] {
        rows.retain(|r| r.src_ip != src);
        rows.push(flowspike_model::AggregateRow {
            hour: 0,
            src_ip: src.clone(),
            blocked_count: 5000,
            unique_dest_count: 1,
            dest_ips: vec!["203.0.113.77".into()],
            ..Default::default()
        });
        rows.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
    }
    for (hour, rows) in &mut case.hours {
        for r in rows.iter_mut() {
            r.hour = *hour;
        }
    }
    let ev = &case.labels.fleet_event;
    let spikes = adaptive_run(&case, None);
    let q = quality::score_fleet(&case, "adaptive", &spikes);
    // Without the incident layer every alerting source of the event is its own record (window:
    // one per source-hour, over a hundred here).
    assert!((1..=3).contains(&q.fleet_records), "{q:?}");
    let fleet: Vec<&Spike> = spikes.iter().filter(|s| !s.src_ips.is_empty()).collect();
    assert!(!fleet.is_empty());
    for f in &fleet {
        assert!(ev.hours.contains(&f.hour), "{f:?}");
        assert_eq!(f.dest_ips, vec![ev.dest_ip.clone()]);
        assert_eq!((f.src_ip.as_str(), f.source_count), ("", f.src_ips.len() as u64));
        assert!(f.src_ips.iter().all(|s| ev.src_ips.contains(s)), "{f:?}");
        assert_eq!(f.id, fleet[0].id, "one incident, one id");
    }
    // Episodes: a source's records at most 2 hours apart share the first one's id.
    let mut by_src: std::collections::BTreeMap<&str, Vec<&Spike>> = Default::default();
    for s in spikes.iter().filter(|s| s.src_ips.is_empty()) {
        by_src.entry(&s.src_ip).or_default().push(s);
    }
    let mut continued = 0;
    for recs in by_src.values() {
        for w in recs.windows(2) {
            let e = w[1].episode.as_ref().unwrap();
            assert_eq!(e.last_hour, w[1].hour);
            if w[1].hour - w[0].hour <= 7200 {
                continued += 1;
                assert_eq!(w[1].id, w[0].id, "{:?}", w[1]);
                assert_eq!(e.first_hour, w[0].episode.as_ref().unwrap().first_hour);
            } else {
                assert_eq!((e.first_hour, e.hours), (w[1].hour, 1));
            }
        }
    }
    assert!(continued > 0, "the two burst hours are one episode");
    // Restart-safe: a detector restored from its snapshot in the middle of the event continues
    // the same incident and the same episodes.
    assert_eq!(adaptive_run(&case, Some(ev.hours[1])), spikes);
}
