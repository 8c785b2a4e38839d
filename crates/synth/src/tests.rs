use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::net::IpAddr;

use super::*;

fn small() -> SynthConfig {
    SynthConfig { hours: 50, hosts: 25, bursts: 2, late_fraction: 0.05, ..SynthConfig::default() }
}

fn collect(cfg: &SynthConfig) -> (Generated, Vec<(String, Vec<u8>)>) {
    let mut objs = Vec::new();
    let g = generate(cfg, |k: &str, gz: Vec<u8>| {
        objs.push((k.to_string(), gz));
        Ok::<(), std::io::Error>(())
    })
    .unwrap();
    (g, objs)
}

fn gunzip(gz: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(gz).read_to_string(&mut s).unwrap();
    s
}

/// Independent statement of ESCU's filter on text fields.
fn escu_counts(action: &str, src: &str, dst: &str) -> bool {
    let private = |ip: &str| match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            Some(o[0] == 10 || (o[0] == 172 && o[1] & 0xf0 == 16) || (o[0] == 192 && o[1] == 168))
        }
        _ => None,
    };
    action == "REJECT" && private(src) == Some(true) && private(dst) == Some(false)
}

#[test]
fn archive_matches_ground_truth() {
    let cfg = small();
    let (g, objs) = collect(&cfg);
    let m = &g.manifest;
    assert_eq!(m.files as usize, objs.len());
    assert_eq!(m.bytes, objs.iter().map(|o| o.1.len() as u64).sum::<u64>());
    let mut counted: BTreeMap<(i64, String), u64> = BTreeMap::new();
    let (mut records, mut late, mut late_next_hour, mut nodata, mut v6) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut enis = HashSet::new();
    for (key, gz) in &objs {
        // AWSLogs/<acct>/vpcflowlogs/<region>/YYYY/MM/DD/<acct>_vpcflowlogs_<region>_<fl>_<stamp>_<hash>.log.gz
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(
            (parts.len(), parts[0], parts[2], parts[3]),
            (8, "AWSLogs", "vpcflowlogs", "us-east-1"),
            "{key}"
        );
        let acct = parts[1];
        assert!(acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit()), "{key}");
        let name: Vec<&str> = parts[7].strip_suffix(".log.gz").unwrap().split('_').collect();
        assert_eq!((name[0], name[1], name[2]), (acct, "vpcflowlogs", "us-east-1"), "{key}");
        assert!(name[3].starts_with("fl-") && name[3].len() == 20, "{key}");
        let stamp =
            chrono::NaiveDateTime::parse_from_str(name[4], "%Y%m%dT%H%MZ").unwrap().and_utc();
        assert_eq!(stamp.format("%Y/%m/%d").to_string(), parts[4..7].join("/"));
        assert_eq!(stamp.timestamp() % 600, 0);
        assert_eq!(name[5].len(), 8);
        let (win_start, win_end) = (stamp.timestamp(), stamp.timestamp() + 600);

        let text = gunzip(gz);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 14, "{line}");
            assert_eq!((f[0], f[1]), ("2", acct));
            assert!(f[2].starts_with("eni-") && f[2].len() == 21, "{line}");
            enis.insert(f[2].to_string());
            records += 1;
            let start: i64 = f[10].parse().unwrap();
            let end: i64 = f[11].parse().unwrap();
            assert!(start <= end);
            if f[13] != "OK" {
                assert!(f[13] == "NODATA" || f[13] == "SKIPDATA");
                assert_eq!(f[3..10], ["-"; 7]);
                nodata += 1;
            }
            v6 += u64::from(f[3].contains(':'));
            if !(win_start..win_end).contains(&start) {
                // Late: exactly one window late.
                assert!((win_start - 600..win_start).contains(&start), "{line} in {key}");
                late += 1;
                late_next_hour += u64::from(start.div_euclid(3600) != win_start.div_euclid(3600));
            }
            if escu_counts(f[12], f[3], f[4]) {
                *counted.entry((start - start.rem_euclid(3600), f[3].to_string())).or_default() +=
                    1;
            }
        }
    }
    assert_eq!(records, m.records);
    assert_eq!(late, m.late_records);
    assert!(
        late > 0 && late_next_hour > 0 && nodata > 0 && v6 > 0,
        "{late} {late_next_hour} {nodata} {v6}"
    );
    assert_eq!(enis.len(), cfg.hosts as usize);
    let expected: BTreeMap<(i64, String), u64> =
        g.expected.iter().map(|e| ((e.hour, e.src_ip.clone()), e.blocked_count)).collect();
    assert_eq!(counted, expected);
    assert_eq!(g.expected, expected_counts(&cfg).unwrap());
    assert_eq!(m.blocked_outbound_records, expected.values().sum::<u64>());
    // Bursts: the host's count in that hour includes the injected records.
    assert_eq!(m.injected.len(), 2);
    for s in &m.injected {
        assert!(expected[&(s.hour, s.src_ip.clone())] >= s.records && s.records >= 200);
        assert!(s.hour >= cfg.start + 25 * 3600, "second half of a short range");
    }
}

#[test]
fn output_is_deterministic_and_seeded() {
    let cfg = SynthConfig { hours: 4, hosts: 10, ..SynthConfig::default() };
    let (a, oa) = collect(&cfg);
    let (b, ob) = collect(&cfg);
    assert_eq!(a, b);
    assert_eq!(oa, ob);
    let (c, _) = collect(&SynthConfig { seed: 2, ..cfg });
    assert_ne!(a.expected, c.expected);
}

#[test]
fn hourly_files_and_scale() {
    let cfg = SynthConfig { hours: 6, hosts: 30, file_minutes: 60, ..SynthConfig::default() };
    let (g, objs) = collect(&cfg);
    // One object per account per hour, plus the late tail after the last hour.
    assert!(objs.len() <= 2 * 7 && objs.len() >= 2 * 6, "{}", objs.len());
    let bigger = SynthConfig { scale: 3.0, ..cfg.clone() };
    let (g3, _) = collect(&bigger);
    assert_eq!(g.expected, g3.expected, "scale must not change the ground truth");
    let uncounted = |g: &Generated| g.manifest.records - g.manifest.blocked_outbound_records;
    assert!(uncounted(&g3) > 2 * uncounted(&g), "{} vs {}", uncounted(&g3), uncounted(&g));
}

#[test]
fn default_config_bursts() {
    let cfg = SynthConfig::default();
    let inj = injected_spikes(&cfg).unwrap();
    assert_eq!(inj.len(), 6);
    let hosts: HashSet<_> = inj.iter().map(|s| &s.src_ip).collect();
    assert_eq!(hosts.len(), 6, "distinct hosts");
    for s in &inj {
        assert!(s.hour >= cfg.start + 31 * 86_400 && s.hour < cfg.start + 40 * 86_400);
        assert!((200..=2000).contains(&s.records));
    }
}

#[test]
fn lines_for_hour_matches_archive() {
    let cfg = SynthConfig { hours: 3, hosts: 15, ..SynthConfig::default() };
    let (g, _) = collect(&cfg);
    let mut s = Synth::new(&cfg).unwrap();
    let mut buf = Vec::new();
    let (mut records, mut counted) = (0, 0);
    for h in 0..3 {
        let (r, c) = s.lines_for_hour(h, &mut buf);
        records += r;
        counted += c;
    }
    assert_eq!((records, counted), (g.manifest.records, g.manifest.blocked_outbound_records));
    assert_eq!(buf.iter().filter(|&&b| b == b'\n').count() as u64, records);
}

#[test]
fn invalid_configs() {
    let d = SynthConfig::default;
    let table = [
        SynthConfig { start: 5, ..d() },
        SynthConfig { hosts: 0, ..d() },
        SynthConfig { accounts: 0, ..d() },
        SynthConfig { file_minutes: 7, ..d() },
        SynthConfig { file_minutes: 0, ..d() },
        SynthConfig { scale: f64::NAN, ..d() },
        SynthConfig { late_fraction: 1.5, ..d() },
        SynthConfig { region: "us/east".into(), ..d() },
        SynthConfig { start: i64::MAX - i64::MAX % 3600, ..d() },
    ];
    for cfg in table {
        assert!(matches!(cfg.validate(), Err(SynthError::InvalidConfig(_))), "{cfg:?}");
        assert!(expected_counts(&cfg).is_err());
    }
    assert!(d().validate().is_ok());
}

#[test]
fn sink_errors_carry_the_key() {
    let cfg = SynthConfig { hours: 1, hosts: 3, ..SynthConfig::default() };
    let err = generate(&cfg, |_k: &str, _gz: Vec<u8>| Err(std::io::Error::other("disk full")))
        .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("writing object AWSLogs/") && text.ends_with("disk full"), "{text}");
}

#[test]
fn generate_to_dir_writes_every_object() {
    let dir = std::env::temp_dir().join(format!("flowspike-synth-test-{}", std::process::id()));
    let cfg = SynthConfig { hours: 2, hosts: 5, ..SynthConfig::default() };
    let g = generate_to_dir(&cfg, &dir).unwrap();
    let (_, objs) = collect(&cfg);
    for (k, gz) in &objs {
        assert_eq!(&std::fs::read(dir.join(k)).unwrap(), gz);
    }
    assert_eq!(g.manifest.files as usize, objs.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn poisson_mean_and_variance() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for lambda in [0.3, 4.0, 50.0] {
        let xs: Vec<f64> = (0..20_000).map(|_| model::poisson(&mut rng, lambda) as f64).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((mean - lambda).abs() < 0.05 * lambda + 0.02, "{lambda}: mean {mean}");
        assert!((var - lambda).abs() < 0.1 * lambda + 0.05, "{lambda}: var {var}");
    }
}

fn small_fleet() -> SynthConfig {
    SynthConfig { hosts: 80, hours: 15 * 24, bursts: 2, ..SynthConfig::fleet(5) }
}

fn rows_of(cfg: &SynthConfig) -> Vec<ExpectedRow> {
    let mut all = Vec::new();
    let mut hours = Vec::new();
    expected_rows_by_hour(cfg, |h, rows| {
        hours.push(h);
        all.extend(rows);
    })
    .unwrap();
    let want: Vec<i64> = (0..i64::from(cfg.hours)).map(|h| cfg.start + h * 3600).collect();
    assert_eq!(hours, want, "one call per hour, in order");
    all
}

#[test]
fn fleet_archive_matches_expected_rows() {
    let cfg = small_fleet();
    let (g, objs) = collect(&cfg);
    // (hour, src) -> (count, destinations, interfaces), read back from the objects' text.
    type Seen = (u64, BTreeSet<u32>, BTreeSet<String>);
    let mut seen: BTreeMap<(i64, String), Seen> = BTreeMap::new();
    for (_, gz) in &objs {
        for line in gunzip(gz).lines().skip(1) {
            let f: Vec<&str> = line.split(' ').collect();
            if f[13] != "OK" || !escu_counts(f[12], f[3], f[4]) {
                continue;
            }
            let start: i64 = f[10].parse().unwrap();
            let e = seen.entry((start.div_euclid(3600) * 3600, f[3].to_string())).or_default();
            e.0 += 1;
            e.1.insert(u32::from(f[4].parse::<std::net::Ipv4Addr>().unwrap()));
            e.2.insert(f[2].to_string());
        }
    }
    let rows = rows_of(&cfg);
    assert!(rows.len() > 1000, "{}", rows.len());
    assert_eq!(rows.len(), seen.len());
    for r in &rows {
        let (n, dests, enis) = &seen[&(r.hour, r.src_ip.clone())];
        assert_eq!(r.blocked_count, *n, "{r:?}");
        let dests: Vec<String> =
            dests.iter().map(|&d| std::net::Ipv4Addr::from(d).to_string()).collect();
        assert_eq!((r.unique_dest_count, &r.dest_ips), (dests.len() as u64, &dests), "{r:?}");
        assert_eq!(enis.iter().collect::<Vec<_>>(), vec![&r.interface_id]);
    }
    // Same counts as the default path's ground truth, and the manifest carries the labels.
    let counts: Vec<(i64, String, u64)> =
        g.expected.iter().map(|e| (e.hour, e.src_ip.clone(), e.blocked_count)).collect();
    let mut from_rows: Vec<(i64, String, u64)> =
        rows.iter().map(|r| (r.hour, r.src_ip.clone(), r.blocked_count)).collect();
    from_rows.sort();
    assert_eq!(counts, from_rows);
    assert_eq!(g.manifest.labels, labels(&cfg).unwrap());
    let n_hours: usize =
        g.manifest.labels.as_ref().unwrap().anomalies.iter().map(|a| a.hours.len()).sum();
    assert_eq!(g.manifest.injected.len(), n_hours);
}

#[test]
fn fleet_labels_hold_in_the_counts() {
    let cfg = SynthConfig { hosts: 300, hours: 21 * 24, bursts: 4, ..SynthConfig::fleet(11) };
    let l = labels(&cfg).unwrap().unwrap();
    let rows = rows_of(&cfg);
    let count: HashMap<(i64, &str), &ExpectedRow> =
        rows.iter().map(|r| ((r.hour, r.src_ip.as_str()), r)).collect();
    let host: HashMap<&str, &HostLabel> = l.hosts.iter().map(|h| (h.src_ip.as_str(), h)).collect();
    let warm_end = cfg.start + i64::from(WARM_UP_HOURS) * 3600;
    let ev = &l.fleet_event;
    for kind in AnomalyKind::ALL {
        assert_eq!(l.anomalies.iter().filter(|a| a.kind == kind).count(), 4, "{kind:?}");
    }
    for a in &l.anomalies {
        assert!(a.hours[0] >= warm_end, "{a:?}");
        for (h, c) in a.hours.iter().zip(&a.counts) {
            assert_eq!(count[&(*h, a.src_ip.as_str())].blocked_count, *c, "{a:?}");
            assert!(!ev.hours.contains(h), "{a:?}");
        }
        let kind = host[a.src_ip.as_str()].kind;
        match a.kind {
            AnomalyKind::Large => assert!((200..=2000).contains(&a.counts[0])),
            AnomalyKind::Moderate => {
                assert!(a.counts[0] > a.p9999 && a.counts[0] <= a.p9999 * 11 / 10 + 1, "{a:?}")
            }
            AnomalyKind::Quiet => assert_eq!(kind, HostKind::Quiet),
            AnomalyKind::NewSource => {
                assert_eq!(host[a.src_ip.as_str()].born, Some(a.hours[0]));
                assert!(!rows.iter().any(|r| r.src_ip == a.src_ip && r.hour < a.hours[0]));
            }
            AnomalyKind::Ramp => {
                assert_eq!(a.hours.len(), 4);
                for i in 1..4 {
                    assert_eq!(a.hours[i], a.hours[i - 1] + 3600);
                    assert_eq!(a.counts[i], 2 * a.counts[i - 1]);
                }
            }
        }
    }
    // Births and retirements bound every host's rows.
    let (mut born, mut retired) = (0, 0);
    for h in &l.hosts {
        let mine = rows.iter().filter(|r| r.src_ip == h.src_ip);
        if let Some(b) = h.born {
            born += 1;
            assert!(mine.clone().all(|r| r.hour >= b), "{h:?}");
        }
        if let Some(t) = h.retired {
            retired += 1;
            assert!(mine.clone().all(|r| r.hour < t), "{h:?}");
        }
        if h.kind == HostKind::Silent {
            // Silent hosts are blocked only in the fleet event, if they are in it.
            assert!(mine.clone().all(|r| ev.hours.contains(&r.hour)), "{h:?}");
        }
        if h.kind == HostKind::Batch {
            let hods: HashSet<i64> = mine
                .filter(|r| !ev.hours.contains(&r.hour))
                .map(|r| r.hour.rem_euclid(86_400) / 3600)
                .collect();
            assert!(hods.len() <= 2, "{h:?}: {hods:?}");
        }
    }
    assert!(born >= 10 && retired >= 5, "{born} born, {retired} retired");
    // The event: 3 consecutive hours, ~30% of the hosts, its destination only then.
    assert_eq!(ev.hours.len(), 3);
    assert_eq!((ev.hours[1] - ev.hours[0], ev.hours[2] - ev.hours[1]), (3600, 3600));
    assert!((60..=120).contains(&ev.src_ips.len()), "{}", ev.src_ips.len());
    assert!(ev.src_ips.is_sorted());
    for &h in &ev.hours {
        for s in &ev.src_ips {
            let r = count[&(h, s.as_str())];
            assert!(r.dest_ips.contains(&ev.dest_ip), "{r:?}");
        }
    }
    let with_dest = rows.iter().filter(|r| r.dest_ips.contains(&ev.dest_ip));
    assert!(with_dest.clone().all(|r| ev.hours.contains(&r.hour)));
    assert_eq!(with_dest.count(), 3 * ev.src_ips.len());
}

#[test]
fn fleet_config_validation_and_default_manifest_unchanged() {
    let short = SynthConfig { hours: 100, ..SynthConfig::fleet(1) };
    assert!(matches!(short.validate(), Err(SynthError::InvalidConfig(_))));
    assert_eq!("fleet".parse::<Scenario>().unwrap(), Scenario::Fleet);
    assert!("flet".parse::<Scenario>().is_err());
    // The default scenario serialises as before: no scenario key, no labels.
    let m = collect(&small()).0.manifest;
    let json = serde_json::to_string(&m).unwrap();
    assert!(!json.contains("scenario") && !json.contains("labels"), "{json}");
    assert!(labels(&small()).unwrap().is_none());
}

#[test]
fn gamma_poisson_tail_matches_its_quantile() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for (mu, k) in [(2.0, 0.5), (3.0, 20.0), (1.5, f64::INFINITY)] {
        let n = 200_000;
        let xs: Vec<u64> = (0..n).map(|_| fleet::gamma_poisson(&mut rng, mu, k)).collect();
        let mean = xs.iter().sum::<u64>() as f64 / n as f64;
        assert!((mean - mu).abs() < 0.05 * mu, "mu {mu} k {k}: mean {mean}");
        let q99 = quantile(mu, k, 0.99);
        let above = xs.iter().filter(|&&x| x > q99).count() as f64 / n as f64;
        assert!(above <= 0.01 && above > 0.003, "mu {mu} k {k}: {above} above q99 {q99}");
        let q9999 = quantile(mu, k, 0.9999);
        let above = xs.iter().filter(|&&x| x > q9999).count();
        assert!(above <= 50, "mu {mu} k {k}: {above} above q9999 {q9999}");
    }
}
