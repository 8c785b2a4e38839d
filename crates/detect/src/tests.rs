use proptest::prelude::*;

use super::*;
use flowspike_model::Columns;

const H: i64 = 3600;

/// `(hour index, count)` pairs.
type Points = Vec<(i64, u64)>;

fn row(hour: i64, src: &str, c: u64) -> AggregateRow {
    AggregateRow {
        hour: hour * H,
        src_ip: src.to_string(),
        blocked_count: c,
        unique_dest_count: c.min(3),
        dest_ips: (0..c.min(3)).map(|i| format!("203.0.113.{i}")).collect(),
        interface_ids: vec![format!("eni-{src}")],
        bytes: c.saturating_mul(40),
        packets: c,
        ..AggregateRow::default()
    }
}

/// Rows of one source from `(hour index, count)` pairs.
fn series(src: &str, pts: &[(i64, u64)]) -> Vec<AggregateRow> {
    pts.iter().map(|&(h, c)| row(h, src, c)).collect()
}

fn cfg(mode: Mode) -> DetectConfig {
    DetectConfig::for_mode(mode)
}

/// The (hour index, count) of every spike.
fn flagged(cfg: &DetectConfig, rows: &[AggregateRow]) -> Vec<(i64, u64)> {
    detect(cfg, rows).iter().map(|s| (s.hour / H, s.blocked_count)).collect()
}

/// Table tests of window mode: (name, config change, points, expected flagged (hour, count)).
#[test]
fn window_rules() {
    let five_ones: Vec<(i64, u64)> = (0..5).map(|h| (h, 1)).collect();
    let with = |extra: &[(i64, u64)]| {
        let mut v = five_ones.clone();
        v.extend_from_slice(extra);
        v
    };
    let table: Vec<(&str, DetectConfig, Points, Points)> = vec![
        (
            "4 prior points are too few",
            cfg(Mode::Window),
            vec![(0, 1), (1, 1), (2, 1), (3, 1), (4, 9)],
            vec![],
        ),
        ("5 prior points suffice", cfg(Mode::Window), with(&[(5, 2)]), vec![(5, 2)]),
        ("equal to mean with stdev 0 is not a spike", cfg(Mode::Window), with(&[(5, 1)]), vec![]),
        // mean 10, sample stdev exactly 2: threshold exactly 16.
        (
            "exact threshold is not a spike",
            cfg(Mode::Window),
            vec![(0, 7), (1, 9), (2, 11), (3, 11), (4, 12), (5, 16)],
            vec![],
        ),
        (
            "one above the threshold is",
            cfg(Mode::Window),
            vec![(0, 7), (1, 9), (2, 11), (3, 11), (4, 12), (5, 17)],
            vec![(5, 17)],
        ),
        (
            "point at H-720h is inside the window",
            cfg(Mode::Window),
            with(&[(720, 5)]),
            vec![(720, 5)],
        ),
        ("point at H-721h is evicted", cfg(Mode::Window), with(&[(721, 5)]), vec![]),
        (
            "quiet hours are not points",
            cfg(Mode::Window),
            vec![(0, 1), (10, 1), (20, 1), (30, 1), (40, 1), (50, 3)],
            vec![(50, 3)],
        ),
        (
            "min_count floor",
            DetectConfig { min_count: 4, ..cfg(Mode::Window) },
            with(&[(5, 3), (6, 40)]),
            vec![(6, 40)],
        ),
        (
            "min_points and deviations are configurable",
            DetectConfig { min_points: 2, deviations: 1.0, ..cfg(Mode::Window) },
            vec![(0, 4), (1, 6), (2, 7), (3, 9)],
            // (2): mean 5 sd 1.414 -> 6.41 < 7; (3): mean 5.67 sd 1.53 -> 7.19 < 9.
            vec![(2, 7), (3, 9)],
        ),
        (
            "window_hours is configurable",
            DetectConfig { window_hours: 10, ..cfg(Mode::Window) },
            with(&[(10, 5), (11, 5)]),
            vec![(10, 5)],
        ),
        // A burst becomes a point too: later hours compare against it.
        ("spikes join the baseline", cfg(Mode::Window), with(&[(5, 50), (6, 20)]), vec![(5, 50)]),
    ];
    for (name, cfg, pts, expected) in table {
        let rows = series("10.0.0.1", &pts);
        assert_eq!(flagged(&cfg, &rows), expected, "{name}");
        let reference: Vec<(i64, u64)> =
            reference::window(&cfg, &rows).iter().map(|s| (s.hour / H, s.blocked_count)).collect();
        assert_eq!(reference, expected, "reference: {name}");
    }
}

#[test]
fn window_spike_record_fields() {
    let rows = series("10.0.0.1", &[(0, 7), (1, 9), (2, 11), (3, 11), (4, 12), (5, 30)]);
    let s = &detect(&cfg(Mode::Window), &rows)[0];
    assert_eq!(
        (s.baseline_mean, s.baseline_stdev, s.data_points, s.threshold),
        (10.0, 2.0, 5, 16.0)
    );
    assert_eq!(s.resource_ids, vec!["eni-10.0.0.1".to_string()]);
    assert_eq!(s.unique_dest_count, 3);
    assert_eq!(s.id, spike_id(Mode::Window, 5 * H, "10.0.0.1"));
}

/// ESCU's update, by hand: returns (avg', stdev').
fn escu_update(avg: f64, stdev: f64, c: f64) -> (f64, f64) {
    let a = avg + (c - avg) / 720.0;
    (a, ((stdev * stdev * 719.0 + (c - a) * (c - avg)) / 720.0).sqrt())
}

#[test]
fn splunk_rules() {
    let c = cfg(Mode::Splunk);
    // Bootstrap points at hours 0..k with count 2; the bootstrap covers hours 0..=719.
    let boot = |k: i64| -> Vec<(i64, u64)> { (0..k).map(|h| (h, 2)).collect() };
    let with = |mut v: Vec<(i64, u64)>, extra: &[(i64, u64)]| {
        v.extend_from_slice(extra);
        v
    };
    let table: Vec<(&str, Points, Points)> = vec![
        ("last bootstrap hour gives no verdict", with(boot(6), &[(719, 100)]), vec![]),
        (
            "first hour after the bootstrap is judged",
            with(boot(6), &[(720, 100)]),
            vec![(720, 100)],
        ),
        ("n' = 6 > 5 is enough", with(boot(5), &[(720, 100)]), vec![(720, 100)]),
        ("n' = 5 is not > 5", with(boot(4), &[(720, 100)]), vec![]),
        (
            "bootstrap-only history never alerts",
            (0..720).map(|h| (h, if h % 100 == 99 { 500 } else { 1 })).collect(),
            vec![],
        ),
        ("constant count is not a spike", with(boot(10), &[(800, 2)]), vec![]),
    ];
    for (name, pts, expected) in table {
        let rows = series("10.0.0.1", &pts);
        assert_eq!(flagged(&c, &rows), expected, "{name}");
        let reference: Vec<(i64, u64)> =
            reference::splunk(&c, &rows).iter().map(|s| (s.hour / H, s.blocked_count)).collect();
        assert_eq!(reference, expected, "reference: {name}");
    }
}

#[test]
fn splunk_compares_with_updated_values() {
    // Bootstrap: 2,4,2,4,2,4 -> avg 3, sample stdev sqrt(1.2).
    let pts = [(0, 2), (1, 4), (2, 2), (3, 4), (4, 2), (5, 4), (720, 9)];
    let spikes = detect(&cfg(Mode::Splunk), &series("10.0.0.1", &pts));
    let (a, s) = escu_update(3.0, 1.2f64.sqrt(), 9.0);
    assert_eq!(spikes.len(), 1);
    let sp = &spikes[0];
    assert!(
        (sp.baseline_mean - a).abs() < 1e-12 && (sp.baseline_stdev - s).abs() < 1e-12,
        "{sp:?}"
    );
    assert_eq!(sp.data_points, 7);
    assert!((sp.threshold - (a + 3.0 * s)).abs() < 1e-12);
}

#[test]
fn splunk_new_source_after_bootstrap() {
    let mut rows = series("10.0.0.1", &[(0, 1)]); // starts the bootstrap at hour 0
                                                  // New source at hour 800: no verdict; then 5 equal hours (n = 6, stdev 0), then 6.
    rows.extend(series(
        "10.0.0.2",
        &[(800, 50), (801, 50), (802, 50), (803, 50), (804, 50), (805, 50), (806, 51)],
    ));
    let spikes = detect(&cfg(Mode::Splunk), &rows);
    let (a, s) = escu_update(50.0, 0.0, 51.0);
    assert_eq!(spikes.len(), 1, "{spikes:?}");
    assert_eq!((spikes[0].hour / H, spikes[0].data_points), (806, 7));
    assert!(
        (spikes[0].baseline_mean - a).abs() < 1e-12 && (spikes[0].baseline_stdev - s).abs() < 1e-12
    );
    // Its first hour gave no verdict even with a huge count.
    let mut rows2 = series("10.0.0.1", &[(0, 1)]);
    rows2.extend(series("10.0.0.2", &[(800, 5000)]));
    assert!(detect(&cfg(Mode::Splunk), &rows2).is_empty());
}

#[test]
fn splunk_min_count() {
    let pts = [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (720, 3)];
    assert_eq!(flagged(&cfg(Mode::Splunk), &series("s", &pts)), vec![(720, 3)]);
    let c4 = DetectConfig { min_count: 4, ..cfg(Mode::Splunk) };
    assert!(flagged(&c4, &series("s", &pts)).is_empty());
}

#[test]
fn out_of_order_hours_are_rejected() {
    let mut d = Detector::new(DetectConfig::default());
    assert!(d.try_observe_hour(10 * H, &[row(10, "a", 1)]).is_ok());
    assert_eq!(
        d.try_observe_hour(10 * H, &[]),
        Err(DetectError::OutOfOrder { hour: 10 * H, last: 10 * H })
    );
    assert!(d.observe_hour(9 * H, &[row(9, "a", 100)]).is_empty());
    assert!(d.warm(3 * H, &[]).is_err());
    assert_eq!(d.rejected_hours(), 3);
    assert_eq!(d.last_hour(), Some(10 * H));
}

#[test]
fn duplicate_rows_of_a_source_are_summed() {
    let mut rows = series("a", &[(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)]);
    let mut r1 = row(5, "a", 3);
    r1.dest_ips = vec!["198.51.100.1".into()];
    r1.interface_ids = vec!["eni-2".into()];
    let mut r2 = row(5, "a", 4);
    r2.dest_ips = vec!["198.51.100.1".into(), "198.51.100.2".into()];
    r2.interface_ids = vec!["eni-1".into()];
    rows.extend([r1, r2, row(5, "a", 0)]);
    let s = &detect(&cfg(Mode::Window), &rows)[0];
    assert_eq!(s.blocked_count, 7);
    assert_eq!(s.dest_ips, vec!["198.51.100.1".to_string(), "198.51.100.2".to_string()]);
    assert_eq!(s.resource_ids, vec!["eni-1".to_string(), "eni-2".to_string()]);
    assert_eq!(s.unique_dest_count, 3); // max of the rows' estimates (3) and the union (2)
                                        // The same hours as columns give the same spike.
    let mut distinct: Vec<i64> = rows.iter().map(|r| r.hour).collect();
    distinct.dedup();
    let hours: Vec<(i64, Columns)> = distinct
        .into_iter()
        .map(|h| {
            let of_hour: Vec<AggregateRow> = rows.iter().filter(|r| r.hour == h).cloned().collect();
            (h, Columns::from_rows(&of_hour))
        })
        .collect();
    let input: Vec<HourInput<'_>> =
        hours.iter().map(|(h, c)| HourInput { hour: *h, rows: c.into(), verdicts: true }).collect();
    assert_eq!(detect_hours(&cfg(Mode::Window), &input, 1).unwrap(), std::slice::from_ref(s));
}

#[test]
fn mode_and_config() {
    assert_eq!("adaptive".parse::<Mode>(), Ok(Mode::Adaptive));
    assert_eq!(DetectConfig::default().mode, Mode::Adaptive);
    assert!(DetectConfig { alpha: 0.0, ..DetectConfig::default() }.validate().is_err());
    assert!(DetectConfig { alpha: f64::NAN, ..DetectConfig::default() }.validate().is_err());
    assert_eq!("window".parse::<Mode>(), Ok(Mode::Window));
    assert_eq!("splunk".parse::<Mode>(), Ok(Mode::Splunk));
    assert!(matches!("Splunk".parse::<Mode>(), Err(DetectError::UnknownMode(_))));
    assert!(DetectConfig::default().validate().is_ok());
    assert!(DetectConfig { window_hours: 0, ..DetectConfig::default() }.validate().is_err());
    assert!(DetectConfig { deviations: f64::NAN, ..DetectConfig::default() }.validate().is_err());
}

#[test]
fn huge_counts_do_not_panic_and_stay_exact() {
    let big = u64::MAX / 2;
    let pts: Vec<(i64, u64)> = (0..8).map(|h| (h, big - h as u64)).collect();
    for mode in [Mode::Window, Mode::Splunk] {
        let c = DetectConfig { window_hours: 4, ..cfg(mode) };
        let mut rows = series("a", &pts);
        rows.push(row(9, "a", u64::MAX));
        rows.push(row(9, "a", u64::MAX)); // saturating merge
        let fast = detect(&c, &rows);
        let slow = if mode == Mode::Window {
            reference::window(&c, &rows)
        } else {
            reference::splunk(&c, &rows)
        };
        assert_agree(&fast, &slow);
    }
}

/// A reproducible generator for tests (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random bursty rows: `sources` sources over `hours` hours.
fn random_rows(seed: u64, sources: u64, hours: i64, p_active: u64) -> Vec<AggregateRow> {
    let mut r = Rng(seed);
    let mut rows = Vec::new();
    for h in 0..hours {
        for s in 0..sources {
            if r.below(100) < p_active {
                let c = match r.below(50) {
                    0 => 20 + r.below(500),
                    1..=5 => 0,
                    _ => 1 + r.below(2 + s * 3),
                };
                rows.push(row(h, &format!("10.0.{s}.1"), c));
            }
        }
    }
    rows
}

fn rel_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Same spike set (except exact near-ties where two float evaluations of one threshold may round
/// differently), and the same baselines within 1e-9 relative.
fn assert_agree(fast: &[Spike], slow: &[Spike]) {
    let key = |s: &Spike| (s.hour, s.src_ip.clone());
    let f: BTreeMap<_, _> = fast.iter().map(|s| (key(s), s)).collect();
    let r: BTreeMap<_, _> = slow.iter().map(|s| (key(s), s)).collect();
    assert_eq!(f.len(), fast.len(), "duplicate spike in fast output");
    for (k, a) in &f {
        match r.get(k) {
            Some(b) => {
                assert_eq!(
                    (&a.id, a.blocked_count, a.data_points, &a.dest_ips),
                    (&b.id, b.blocked_count, b.data_points, &b.dest_ips)
                );
                assert!(rel_close(a.baseline_mean, b.baseline_mean), "mean {a:?} vs {b:?}");
                assert!(rel_close(a.baseline_stdev, b.baseline_stdev), "stdev {a:?} vs {b:?}");
                assert!(rel_close(a.threshold, b.threshold), "threshold {a:?} vs {b:?}");
            }
            None => assert!(rel_close(a.blocked_count as f64, a.threshold), "only in fast: {a:?}"),
        }
    }
    for (k, b) in &r {
        if !f.contains_key(k) {
            assert!(rel_close(b.blocked_count as f64, b.threshold), "only in reference: {b:?}");
        }
    }
}

#[test]
fn big_seeded_case_agrees_with_reference() {
    let rows = random_rows(42, 6, 2500, 60);
    for mode in [Mode::Window, Mode::Splunk] {
        let c = cfg(mode);
        let fast = detect(&c, &rows);
        let slow = if mode == Mode::Window {
            reference::window(&c, &rows)
        } else {
            reference::splunk(&c, &rows)
        };
        assert!(fast.len() > 10, "{mode}: too few spikes to be a meaningful test: {}", fast.len());
        assert_agree(&fast, &slow);
    }
}

#[test]
fn warm_then_observe_equals_full_run() {
    let rows = random_rows(7, 4, 1600, 50);
    for mode in [Mode::Window, Mode::Splunk] {
        let c = cfg(mode);
        let full = detect(&c, &rows);
        let split = 1000 * H;
        let mut d = Detector::new(c.clone());
        let mut got = Vec::new();
        let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
        for r in &rows {
            by_hour.entry(r.hour).or_default().push(r.clone());
        }
        for (h, rs) in &by_hour {
            if *h < split {
                d.warm(*h, rs).unwrap();
            } else {
                got.extend(d.observe_hour(*h, rs));
            }
        }
        let expected: Vec<Spike> = full.into_iter().filter(|s| s.hour >= split).collect();
        assert!(!expected.is_empty(), "{mode}");
        assert_eq!(got, expected, "{mode}");
    }
}

/// `detect_hours` on several shards gives exactly the spikes of one detector (warm-up hours
/// included), in the same order, in both modes.
#[test]
fn detect_hours_on_shards_equals_one_detector() {
    let rows = random_rows(11, 40, 900, 50);
    let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
    for r in &rows {
        by_hour.entry(r.hour).or_default().push(r.clone());
    }
    let split = 300 * H;
    let input: Vec<HourInput<'_>> = by_hour
        .iter()
        .map(|(h, rs)| HourInput { hour: *h, rows: rs.into(), verdicts: *h >= split })
        .collect();
    for mode in [Mode::Window, Mode::Splunk] {
        let c = cfg(mode);
        let mut d = Detector::new(c.clone());
        let mut one = Vec::new();
        for (h, rs) in &by_hour {
            if *h < split {
                d.warm(*h, rs).unwrap();
            } else {
                one.extend(d.observe_hour(*h, rs));
            }
        }
        assert!(one.len() > 20, "{mode}: too few spikes to be a meaningful test: {}", one.len());
        for shards in [1, 2, 7] {
            assert_eq!(detect_hours(&c, &input, shards).unwrap(), one, "{mode}, {shards} shards");
        }
        // The same hours as columns (every other hour, so both kinds meet in one run), in the
        // rows' order: duplicates and unsorted sources included.
        let columns: Vec<Columns> = by_hour.values().map(|rs| Columns::from_rows(rs)).collect();
        let mixed: Vec<HourInput<'_>> = input
            .iter()
            .zip(&columns)
            .enumerate()
            .map(|(i, (&h, c))| HourInput { rows: if i % 2 == 0 { c.into() } else { h.rows }, ..h })
            .collect();
        for shards in [1, 3] {
            assert_eq!(detect_hours(&c, &mixed, shards).unwrap(), one, "{mode}, columns, {shards}");
        }
    }
    let backwards = [input[1], input[0]];
    assert!(matches!(
        detect_hours(&cfg(Mode::Window), &backwards, 4),
        Err(DetectError::OutOfOrder { .. })
    ));
}

#[test]
fn snapshot_restore_continues_exactly() {
    let rows = random_rows(11, 4, 1500, 50);
    let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
    for r in &rows {
        by_hour.entry(r.hour).or_default().push(r.clone());
    }
    // Splits inside and after the splunk bootstrap.
    for (mode, split) in [
        (Mode::Window, 900),
        (Mode::Splunk, 300),
        (Mode::Splunk, 1000),
        (Mode::Adaptive, 300),
        (Mode::Adaptive, 1000),
    ] {
        let c = DetectConfig::for_mode(mode);
        let full = detect(&c, &rows);
        let mut d = Detector::new(c.clone());
        let mut got = Vec::new();
        for (h, rs) in &by_hour {
            if *h == split * H {
                let bytes = d.snapshot().to_json_bytes();
                d = Detector::restore(c.clone(), DetectorState::from_json_bytes(&bytes).unwrap())
                    .unwrap();
            }
            got.extend(d.observe_hour(*h, rs));
        }
        assert!(!full.is_empty());
        assert_eq!(got, full, "{mode} split at {split}");
    }
}

/// The shared state encoder writes, for every mode, the bytes serde_json wrote before it was
/// shared, and a restored detector snapshots to the same bytes again.
#[test]
fn state_json_bytes_same_for_every_mode() {
    let rows = random_rows(7, 3, 400, 50);
    for mode in [Mode::Window, Mode::Splunk, Mode::Adaptive] {
        let c = cfg(mode);
        let mut d = Detector::new(c.clone());
        let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
        for r in &rows {
            by_hour.entry(r.hour).or_default().push(r.clone());
        }
        for (h, rs) in &by_hour {
            d.observe_hour(*h, rs);
        }
        let state = d.snapshot();
        let bytes = state.to_json_bytes();
        assert_eq!(bytes, serde_json::to_vec(&state).unwrap(), "{mode}");
        let back = Detector::restore(c, DetectorState::from_json_bytes(&bytes).unwrap()).unwrap();
        assert_eq!(back.snapshot().to_json_bytes(), bytes, "{mode}");
        match state {
            DetectorState::Window(st) => {
                assert_eq!(st.to_json_bytes(), serde_json::to_vec(&st).unwrap());
                assert_eq!(WindowState::from_json_bytes(&st.to_json_bytes()).unwrap(), st);
            }
            DetectorState::Splunk(st) => {
                assert_eq!(st.to_json_bytes(), serde_json::to_vec(&st).unwrap());
                assert_eq!(SplunkState::from_json_bytes(&st.to_json_bytes()).unwrap(), st);
            }
            DetectorState::Adaptive(_) => {}
        }
    }
    for (err, what) in [
        (DetectorState::from_json_bytes(b"{").unwrap_err(), "detector state"),
        (SplunkState::from_json_bytes(b"{").unwrap_err(), "splunk state"),
        (WindowState::from_json_bytes(b"{").unwrap_err(), "window state"),
    ] {
        let text = err.to_string();
        assert!(text.starts_with(&format!("invalid detector state: decoding {what}: ")), "{text}");
    }
}

#[test]
fn splunk_state_json_names_and_errors() {
    let mut d = Detector::new(cfg(Mode::Splunk));
    d.warm(0, &[row(0, "10.0.0.1", 3)]).unwrap();
    let DetectorState::Splunk(st) = d.snapshot() else {
        panic!("splunk detector gave a window state")
    };
    let text = String::from_utf8(st.to_json_bytes()).unwrap();
    for name in [
        "\"src_ip\"",
        "\"numDataPoints\"",
        "\"latestCount\"",
        "\"avgBlockedConnections\"",
        "\"stdevBlockedConnections\"",
        "\"bootstrapSums\":[\"3\",\"9\"]",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
    assert_eq!(SplunkState::from_json_bytes(text.as_bytes()).unwrap(), st);
    assert!(SplunkState::from_json_bytes(b"{").is_err());
    // Wrong mode, wrong window.
    assert!(Detector::restore(cfg(Mode::Window), DetectorState::Splunk(st.clone())).is_err());
    let other = DetectConfig { window_hours: 24, ..cfg(Mode::Splunk) };
    assert!(Detector::restore(other, DetectorState::Splunk(st)).is_err());
}

fn arb_rows() -> impl Strategy<Value = Vec<AggregateRow>> {
    let point = (0i64..120, 0usize..3, prop_oneof![8 => 0u64..6, 2 => 0u64..40, 1 => 0u64..400]);
    proptest::collection::vec(point, 0..160).prop_map(|pts| {
        pts.into_iter()
            .map(|(h, s, c)| row(h, ["10.0.0.1", "10.0.0.2", "192.168.1.9"][s], c))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn fast_agrees_with_reference(
        rows in arb_rows(),
        window_hours in 1u32..60,
        min_points in 0u64..7,
        deviations in prop_oneof![Just(3.0), Just(0.0), Just(1.5), 0.0f64..4.0],
        min_count in 1u64..4,
        splunk in any::<bool>(),
    ) {
        let mode = if splunk { Mode::Splunk } else { Mode::Window };
        let c = DetectConfig { mode, window_hours, min_points, deviations, min_count, alpha: 1e-6 };
        let fast = detect(&c, &rows);
        let slow = if splunk { reference::splunk(&c, &rows) } else { reference::window(&c, &rows) };
        assert_agree(&fast, &slow);
    }

    #[test]
    fn row_order_does_not_matter(mut rows in arb_rows(), seed in any::<u64>()) {
        let w = DetectConfig::for_mode(Mode::Window);
        let a = detect(&w, &rows);
        let ad = detect(&DetectConfig::default(), &rows);
        let mut r = Rng(seed);
        for i in (1..rows.len()).rev() {
            rows.swap(i, r.below(i as u64 + 1) as usize);
        }
        prop_assert_eq!(a, detect(&w, &rows));
        prop_assert_eq!(ad, detect(&DetectConfig::default(), &rows));
    }
}

#[test]
fn warm_from_is_the_window_before_the_hour_or_all_history() {
    let window = DetectConfig { window_hours: 24, ..DetectConfig::for_mode(Mode::Window) };
    assert_eq!(window.warm_from(100 * 3600), 76 * 3600);
    assert_eq!(window.warm_from(i64::MIN + 5), i64::MIN);
    let splunk = DetectConfig { mode: Mode::Splunk, ..window };
    assert_eq!(splunk.warm_from(100 * 3600), i64::MIN);
    assert_eq!(DetectConfig::default().warm_from(100 * 3600), i64::MIN);
}

/// `Detector::expectation`'s `alert_at` is exactly the boundary of the verdicts: in every mode, a
/// source alerts in an hour iff its count is at least the `alert_at` asked for just before.
#[test]
fn expectation_alert_at_is_the_verdict_boundary() {
    let short = |mode: Mode| DetectConfig { window_hours: 48, ..cfg(mode) };
    for (c, hours) in
        [(short(Mode::Window), 200), (short(Mode::Splunk), 200), (cfg(Mode::Adaptive), 600)]
    {
        let rows = random_rows(11, 12, hours, 70);
        let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
        for r in rows {
            by_hour.entry(r.hour).or_default().push(r);
        }
        let mut d = Detector::new(c.clone());
        let (mut alerts, mut judged) = (0, 0);
        for (hour, rows) in &by_hour {
            let expected: Vec<Option<Expectation>> =
                rows.iter().map(|r| d.expectation(*hour, &r.src_ip)).collect();
            // At the boundary itself: the source alone at `alert_at` alerts, one below does not.
            for (r, at) in
                rows.iter().zip(&expected).filter_map(|(r, e)| Some((r, (*e)?.alert_at?)))
            {
                let alone = |count: u64| {
                    let row = AggregateRow { blocked_count: count, ..r.clone() };
                    !d.clone().observe_hour(*hour, &[row]).is_empty()
                };
                assert!(alone(at), "{} hour {} {}: {at} must alert", c.mode, hour / H, r.src_ip);
                assert!(at == 1 || !alone(at - 1), "{}: {} must not alert", c.mode, at - 1);
            }
            let spikes = d.observe_hour(*hour, rows);
            assert!(d.expectation(*hour, "10.0.0.1").is_none(), "an hour fed has none");
            let alerted: std::collections::BTreeSet<&str> = spikes
                .iter()
                .flat_map(|s| std::iter::once(&s.src_ip).chain(&s.src_ips))
                .map(String::as_str)
                .collect();
            for (r, e) in rows.iter().zip(expected) {
                if r.blocked_count == 0 {
                    continue;
                }
                let at = e.and_then(|e| e.alert_at);
                judged += usize::from(at.is_some());
                let by_threshold = at.is_some_and(|t| r.blocked_count >= t);
                assert_eq!(
                    alerted.contains(r.src_ip.as_str()),
                    by_threshold,
                    "{} hour {} {} count {} alert_at {at:?}",
                    c.mode,
                    hour / H,
                    r.src_ip,
                    r.blocked_count
                );
                alerts += usize::from(by_threshold);
            }
        }
        assert!(alerts > 5 && judged > 500, "{}: {alerts} alerts of {judged} judged", c.mode);
    }
}
