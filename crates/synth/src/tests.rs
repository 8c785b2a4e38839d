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

// ---- Labelled cases (issue #32) ----

/// One OK record of an archive, from its text.
struct Line {
    start: i64,
    hour: i64,
    src: IpAddr,
    dst: IpAddr,
    dstport: u16,
    proto: u8,
    bytes: u64,
    accept: bool,
}

fn lines_of(objs: &[(String, Vec<u8>)]) -> Vec<Line> {
    let mut v = Vec::new();
    for (_, gz) in objs {
        for line in gunzip(gz).lines().skip(1) {
            let f: Vec<&str> = line.split(' ').collect();
            if f[13] != "OK" {
                continue;
            }
            let start: i64 = f[10].parse().unwrap();
            v.push(Line {
                start,
                hour: start.div_euclid(3600) * 3600,
                src: f[3].parse().unwrap(),
                dst: f[4].parse().unwrap(),
                dstport: f[6].parse().unwrap(),
                proto: f[7].parse().unwrap(),
                bytes: f[9].parse().unwrap(),
                accept: f[12] == "ACCEPT",
            });
        }
    }
    v
}

fn private_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if is_rfc1918(v4))
}

/// A list entry or CIDR as (first, last) numbers and family.
fn parse_net(s: &str) -> (bool, u128, u128) {
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().unwrap())),
        None => (s, None),
    };
    let ip: IpAddr = a.parse().unwrap();
    let (v6, n, w) = match ip {
        IpAddr::V4(v) => (false, u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (true, u128::from(v), 128),
    };
    let host = (1u128 << (w - len.unwrap_or(w))) - 1;
    assert_eq!(n & host, 0, "{s}: host bits set");
    (v6, n, n | host)
}

fn ip_num(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v) => (false, u128::from(u32::from(v))),
        IpAddr::V6(v) => (true, u128::from(v)),
    }
}

fn in_net(net: (bool, u128, u128), ip: IpAddr) -> bool {
    let (v6, n) = ip_num(ip);
    v6 == net.0 && (net.1..=net.2).contains(&n)
}

/// Generates `cfg`, then checks every case label against a naive reading of the records, and the
/// blocked outbound ground truth against the records as before.
fn check_cases(cfg: &SynthConfig) -> (Generated, Vec<Line>) {
    let (g, objs) = collect(cfg);
    let recs = lines_of(&objs);
    let labels = &g.manifest.cases;
    assert_eq!(labels, &case_labels(cfg).unwrap());

    // The blocked outbound truth is still exact with the cases' REJECTs in it.
    let mut counted: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for r in &recs {
        let action = if r.accept { "ACCEPT" } else { "REJECT" };
        if escu_counts(action, &r.src.to_string(), &r.dst.to_string()) {
            *counted.entry((r.hour, r.src.to_string())).or_default() += 1;
        }
    }
    let expected: BTreeMap<(i64, String), u64> =
        g.expected.iter().map(|e| ((e.hour, e.src_ip.clone()), e.blocked_count)).collect();
    assert_eq!(counted, expected);
    assert_eq!(g.expected, expected_counts(cfg).unwrap());

    // Naive aggregates of every record.
    let mut ports: HashMap<(i64, IpAddr, IpAddr), HashSet<u16>> = HashMap::new();
    let mut sweeps: HashMap<(i64, IpAddr, u16, u8), HashSet<IpAddr>> = HashMap::new();
    let mut out_bytes: HashMap<IpAddr, BTreeMap<i64, u64>> = HashMap::new();
    for r in &recs {
        ports.entry((r.hour, r.src, r.dst)).or_default().insert(r.dstport);
        sweeps.entry((r.hour, r.src, r.dstport, r.proto)).or_default().insert(r.dst);
        if r.accept && private_v4(r.src) && matches!(r.dst, IpAddr::V4(_)) && !private_v4(r.dst) {
            *out_bytes.entry(r.src).or_default().entry(r.hour).or_default() += r.bytes;
        }
    }
    let scan_of = |h: i64, src: &str, dst: &str| {
        let key = (h, src.parse().unwrap(), dst.parse().unwrap());
        let set = ports.get(&key).cloned().unwrap_or_default();
        let low = set.iter().filter(|&&p| p < 1024).count();
        (set, low)
    };
    fn hour_range(l: &CaseLabel) -> impl Iterator<Item = i64> {
        let (first, n) = (l.hour, i64::from(l.hours));
        (0..n).map(move |k| first + k * 3600)
    }

    // Every vertical scan and every sweep in the archive is a labelled positive.
    for ((h, src, dst), set) in &ports {
        let low = set.iter().filter(|&&p| p < 1024).count();
        if set.len() >= PORT_SCAN_PORTS && low >= PORT_SCAN_LOW_PORTS {
            assert!(
                labels.iter().any(|l| l.kind == CaseKind::PortScan
                    && l.positive
                    && l.hour == *h
                    && l.src_ip == src.to_string()
                    && l.dst_ip == Some(dst.to_string())),
                "unlabelled scan {h} {src} {dst}: {} ports",
                set.len()
            );
        }
    }
    for ((h, src, port, proto), set) in &sweeps {
        if set.len() >= PORT_SWEEP_ADDRESSES {
            assert!(
                labels.iter().any(|l| l.kind == CaseKind::PortSweep
                    && l.positive
                    && l.hour == *h
                    && l.src_ip == src.to_string()
                    && l.dst_port == Some(*port)
                    && l.protocol == Some(*proto)),
                "unlabelled sweep {h} {src} {port}/{proto}: {} addresses",
                set.len()
            );
        }
    }

    let lists = threat_lists(cfg).unwrap();
    let entries: Vec<(&str, (bool, u128, u128))> = lists
        .iter()
        .flat_map(|l| l.entries.iter().map(move |e| (l.name.as_str(), parse_net(e))))
        .collect();
    let listed = |ip: IpAddr| -> BTreeSet<&str> {
        entries.iter().filter(|(_, n)| in_net(*n, ip)).map(|(name, _)| *name).collect()
    };
    // (hour, internal end) -> (lists, remote, outbound, accept) of every record touching a list.
    /// The lists, remote address, outbound, ACCEPT.
    type Hit<'a> = (BTreeSet<&'a str>, IpAddr, bool, bool);
    let mut hits: HashMap<(i64, IpAddr), Vec<Hit>> = HashMap::new();
    for r in &recs {
        for (remote, local, outbound) in [(r.dst, r.src, true), (r.src, r.dst, false)] {
            let on = listed(remote);
            if !on.is_empty() {
                hits.entry((r.hour, local)).or_default().push((on, remote, outbound, r.accept));
            }
        }
    }
    let mut threat_hits = 0;

    for l in labels {
        let src: IpAddr = l.src_ip.parse().unwrap();
        match l.kind {
            CaseKind::PortScan => {
                let dst = l.dst_ip.as_deref().unwrap();
                let per_hour: Vec<(HashSet<u16>, usize)> =
                    hour_range(l).map(|h| scan_of(h, &l.src_ip, dst)).collect();
                let meets = |(s, low): &(HashSet<u16>, usize)| {
                    s.len() >= PORT_SCAN_PORTS && *low >= PORT_SCAN_LOW_PORTS
                };
                if l.positive {
                    assert!(per_hour.iter().all(meets) && per_hour[0].0.len() <= 3000, "{l:?}");
                } else {
                    assert!(!per_hour.iter().any(meets), "{l:?}");
                    // Near the threshold: 450+ ports, or 1000 with too few low ones, or a scan
                    // that meets it over its two hours together.
                    let all: HashSet<u16> = per_hour.iter().flat_map(|p| p.0.clone()).collect();
                    let low = all.iter().filter(|&&p| p < 1024).count();
                    assert!(all.len() >= 450, "{l:?}");
                    assert!(l.hours == 2 || all.len() < PORT_SCAN_PORTS || low < 20, "{l:?}");
                    if l.hours == 2 {
                        assert!(all.len() >= PORT_SCAN_PORTS && low >= 20, "{l:?}");
                    }
                }
                // Scans look like scans: REJECTs and ACCEPTs both, spread over the hour (a
                // server's responses are ACCEPTs).
                let mine: Vec<&Line> = recs
                    .iter()
                    .filter(|r| r.hour == l.hour && r.src == src && r.dst.to_string() == dst)
                    .collect();
                let actions: HashSet<bool> = mine.iter().map(|r| r.accept).collect();
                let responses = l.what.contains("responses");
                assert_eq!(actions.len(), if responses { 1 } else { 2 }, "{l:?}");
                let (first, last) = (
                    mine.iter().map(|r| r.start).min().unwrap(),
                    mine.iter().map(|r| r.start).max().unwrap(),
                );
                assert!(last - first > 3000, "{l:?}: {first}..{last}");
            }
            CaseKind::PortSweep => {
                type Key = (i64, IpAddr, u16, u8);
                let mine: Vec<(&Key, &HashSet<IpAddr>)> =
                    sweeps.iter().filter(|(k, _)| k.0 == l.hour && k.1 == src).collect();
                let max = mine.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
                if l.positive {
                    let key = (l.hour, src, l.dst_port.unwrap(), l.protocol.unwrap());
                    let set = &sweeps[&key];
                    assert!((PORT_SWEEP_ADDRESSES..=2000).contains(&set.len()), "{l:?}");
                    if let Some(net) = &l.dst_ip {
                        let net = parse_net(net);
                        assert!(set.iter().all(|&a| in_net(net, a)), "{l:?}");
                    }
                } else {
                    assert!(max < PORT_SWEEP_ADDRESSES, "{l:?}: {max}");
                    // Near the threshold: 200+ on one port, or 250+ over ports or protocols.
                    let net = parse_net(l.dst_ip.as_deref().unwrap());
                    let all: HashSet<IpAddr> = mine
                        .iter()
                        .flat_map(|(_, s)| s.iter().copied())
                        .filter(|&a| in_net(net, a))
                        .collect();
                    assert!(max >= 200 || all.len() >= PORT_SWEEP_ADDRESSES, "{l:?}");
                }
            }
            CaseKind::OutboundVolume => {
                let series = &out_bytes[&src];
                let hours: HashSet<i64> = hour_range(l).collect();
                let all_hours = (0..i64::from(cfg.hours)).map(|k| cfg.start + k * 3600);
                let others: Vec<u64> = all_hours
                    .filter(|h| !hours.contains(h))
                    .map(|h| series.get(&h).copied().unwrap_or(0))
                    .collect();
                let base = others.iter().sum::<u64>() as f64 / others.len().max(1) as f64;
                if l.hours == cfg.hours {
                    // Always heavy: its every-hour mean dwarfs the typical host's.
                    let mut means: Vec<f64> = out_bytes
                        .iter()
                        .filter(|(ip, _)| **ip != src)
                        .map(|(_, s)| s.values().sum::<u64>() as f64 / f64::from(cfg.hours))
                        .collect();
                    means.sort_by(f64::total_cmp);
                    let mean = series.values().sum::<u64>() as f64 / f64::from(cfg.hours);
                    assert!(!l.positive && mean > 5.0 * means[means.len() / 2], "{l:?}");
                    let busy = series.values().filter(|&&b| b > 0).count();
                    assert!(busy as f64 > 0.5 * f64::from(cfg.hours), "{l:?}: {busy}");
                    continue;
                }
                for h in hour_range(l) {
                    let v = series.get(&h).copied().unwrap_or(0) as f64;
                    if l.positive {
                        assert!(v >= 5.0 * base, "{l:?}: {v} vs baseline {base}");
                    } else {
                        assert!(v <= 4.0 * base && v >= base, "{l:?}: {v} vs baseline {base}");
                    }
                    // The case's flows all go to its destination.
                    let to: u64 = recs
                        .iter()
                        .filter(|r| r.hour == h && r.src == src && r.accept)
                        .filter(|r| Some(r.dst.to_string()) == l.dst_ip)
                        .map(|r| r.bytes)
                        .sum();
                    assert_eq!(to as f64, v, "{l:?}: the host's other outbound flows are replaced");
                }
            }
            CaseKind::ThreatList => {
                if let IpAddr::V6(v6) = src {
                    assert_eq!(v6.octets()[0], 0xfd, "{l:?}: an fd00::/8 host");
                } else {
                    assert!(private_v4(src), "{l:?}");
                }
                let net = parse_net(l.dst_ip.as_deref().unwrap());
                let mine = hits.get(&(l.hour, src)).cloned().unwrap_or_default();
                if l.positive {
                    let want: BTreeSet<&str> = l.list.as_deref().unwrap().split(',').collect();
                    assert!(!mine.is_empty(), "{l:?}");
                    assert!(mine.iter().all(|(on, ..)| *on == want), "{l:?}");
                    assert!(
                        mine.iter().any(|m| m.2) && mine.iter().any(|m| !m.2),
                        "{l:?}: both ways"
                    );
                    assert!(
                        mine.iter().any(|m| m.3) && mine.iter().any(|m| !m.3),
                        "{l:?}: both actions"
                    );
                    let remotes: BTreeSet<u128> = mine.iter().map(|m| ip_num(m.1).1).collect();
                    assert!(remotes.iter().all(|&n| (net.1..=net.2).contains(&n)), "{l:?}");
                    if net.1 != net.2 {
                        assert!(
                            remotes.contains(&net.1) && remotes.contains(&net.2),
                            "{l:?}: edges"
                        );
                    }
                    threat_hits += mine.len();
                } else {
                    assert!(mine.is_empty(), "{l:?}: {} list hits", mine.len());
                    // It does talk to one past each end of the CIDR.
                    let near: BTreeSet<u128> = recs
                        .iter()
                        .filter(|r| r.hour == l.hour && (r.src == src || r.dst == src))
                        .map(|r| ip_num(if r.src == src { r.dst } else { r.src }).1)
                        .filter(|&n| n == net.1.wrapping_sub(1) || n == net.2.wrapping_add(1))
                        .collect();
                    assert_eq!(near.len(), 2, "{l:?}");
                }
            }
        }
    }
    // Every record touching a list is in a positive label's hits.
    assert_eq!(hits.values().map(Vec::len).sum::<usize>(), threat_hits);
    // cases positives and as many negatives of each kind (sweeps: plus the bursts that are sweeps).
    for kind in CaseKind::ALL {
        let planned = |pos: bool| {
            labels
                .iter()
                .filter(move |l| l.kind == kind && l.positive == pos && !l.what.contains("burst"))
        };
        assert_eq!(planned(true).count(), cfg.cases as usize, "{kind:?}");
        assert_eq!(planned(false).count(), cfg.cases as usize, "{kind:?}");
    }
    (g, recs)
}

fn with_cases() -> SynthConfig {
    SynthConfig { hours: 8 * 24, hosts: 80, bursts: 2, cases: 3, ..SynthConfig::default() }
}

#[test]
fn cases_hold_in_the_records() {
    let cfg = with_cases();
    let (g, _) = check_cases(&cfg);
    let labels = &g.manifest.cases;
    // The bursts of 250+ random destinations are labelled as the sweeps they are.
    let burst_sweeps = labels.iter().filter(|l| l.what.contains("burst")).count();
    let big_bursts = g.manifest.injected.iter().filter(|s| s.records >= 250).count();
    assert!(burst_sweeps <= big_bursts && burst_sweeps + 1 >= big_bursts, "{labels:?}");
    // Internal and external scan targets, /24 and /20 sweeps, exfiltration over 1-3 hours.
    let scans: Vec<&CaseLabel> =
        labels.iter().filter(|l| l.kind == CaseKind::PortScan && l.positive).collect();
    assert!(scans.iter().any(|l| private_v4(l.dst_ip.as_ref().unwrap().parse().unwrap())));
    assert!(scans.iter().any(|l| !private_v4(l.dst_ip.as_ref().unwrap().parse().unwrap())));
    let nets: HashSet<&str> = labels
        .iter()
        .filter(|l| l.kind == CaseKind::PortSweep && l.positive)
        .filter_map(|l| l.dst_ip.as_deref()?.rsplit_once('/').map(|x| x.1))
        .collect();
    assert_eq!(nets, HashSet::from(["24", "20"]));
    // The blocked outbound counts the cases add are where their labels say.
    let base: HashMap<(i64, String), u64> = collect(&SynthConfig { cases: 0, ..cfg.clone() })
        .0
        .expected
        .into_iter()
        .map(|e| ((e.hour, e.src_ip), e.blocked_count))
        .collect();
    let mut added = 0;
    for e in &g.expected {
        let before = base.get(&(e.hour, e.src_ip.clone())).copied().unwrap_or(0);
        if e.blocked_count != before {
            added += 1;
            assert!(g.manifest.cases_at(e.hour, &e.src_ip).next().is_some(), "{e:?}");
        }
    }
    assert!(added >= 3, "scans to the internet are blocked outbound: {added}");
    // Label JSON: snake_case kinds, the config carries the count.
    let json = serde_json::to_string(&g.manifest).unwrap();
    for k in
        ["\"port_scan\"", "\"port_sweep\"", "\"outbound_volume\"", "\"threat_list\"", "\"cases\":3"]
    {
        assert!(json.contains(k), "{k}");
    }
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, g.manifest);
}

#[test]
fn cases_in_the_fleet_scenario_keep_its_labels() {
    let cfg = SynthConfig { cases: 2, ..small_fleet() };
    let (g, _) = check_cases(&cfg);
    let without = collect(&small_fleet()).0;
    // The fleet's own ground truth is unchanged outside the case hosts, and its labels hold.
    assert_eq!(g.manifest.labels, without.manifest.labels);
    assert_eq!(g.manifest.injected, without.manifest.injected);
    let count: HashMap<(i64, &str), u64> =
        g.expected.iter().map(|e| ((e.hour, e.src_ip.as_str()), e.blocked_count)).collect();
    for a in &g.manifest.labels.as_ref().unwrap().anomalies {
        for (h, c) in a.hours.iter().zip(&a.counts) {
            assert_eq!(count[&(*h, a.src_ip.as_str())], *c, "{a:?}");
        }
    }
    let case_srcs: HashSet<&str> = g.manifest.cases.iter().map(|l| l.src_ip.as_str()).collect();
    let before: BTreeMap<(i64, &str), u64> =
        without.expected.iter().map(|e| ((e.hour, e.src_ip.as_str()), e.blocked_count)).collect();
    for (k, c) in &count {
        if !case_srcs.contains(k.1) {
            assert_eq!(before.get(k), Some(c), "{k:?}");
        }
    }
    assert_eq!(rows_of(&cfg).len(), g.expected.len());
}

#[test]
fn threat_list_cases_cover_ipv6_cidr_edges_and_both_lists() {
    let cfg =
        SynthConfig { hours: 4 * 24, hosts: 60, bursts: 0, cases: 5, ..SynthConfig::default() };
    let (g, _) = check_cases(&cfg);
    let threat: Vec<&CaseLabel> =
        g.manifest.cases.iter().filter(|l| l.kind == CaseKind::ThreatList).collect();
    let pos = |f: &dyn Fn(&CaseLabel) -> bool| threat.iter().any(|l| l.positive && f(l));
    assert!(pos(&|l| l.src_ip.starts_with("fd") && l.dst_ip.as_ref().unwrap().contains('/')));
    assert!(pos(&|l| l.src_ip.starts_with("fd") && !l.dst_ip.as_ref().unwrap().contains('/')));
    assert!(pos(&|l| !l.src_ip.contains(':') && l.dst_ip.as_ref().unwrap().contains('/')));
    assert!(pos(&|l| l.list.as_deref() == Some("custom,tor-exits")));
    let negs: HashSet<&str> =
        threat.iter().filter(|l| !l.positive).map(|l| l.dst_ip.as_deref().unwrap()).collect();
    assert_eq!(negs.len(), 4, "edges of every listed CIDR: {negs:?}");

    // The files: two lists with comments; single IPv4, IPv4 CIDRs, IPv6 and IPv6 CIDRs; one
    // address on both.
    let dir = std::env::temp_dir().join(format!("flowspike-synth-lists-{}", std::process::id()));
    let paths = write_threat_lists(&cfg, &dir).unwrap();
    let names: Vec<String> =
        paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["tor-exits.txt", "custom.txt"]);
    let mut sets = Vec::new();
    for p in &paths {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.starts_with("# "), "{text}");
        let entries: BTreeSet<&str> =
            text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        let has = |v6: bool, cidr: bool| {
            entries.iter().any(|e| e.contains(':') == v6 && e.contains('/') == cidr)
        };
        assert!(has(false, false) && has(false, true) && has(true, false) && has(true, true));
        for e in &entries {
            parse_net(e);
        }
        sets.push(entries.into_iter().map(str::to_string).collect::<BTreeSet<String>>());
    }
    assert_eq!(sets[0].intersection(&sets[1]).count(), 1);
    // No entry of one list overlaps another entry (one past a CIDR is in no list).
    let all: Vec<(bool, u128, u128)> = sets.iter().flatten().map(|e| parse_net(e)).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert!(a == b || a.0 != b.0 || a.2 + 1 < b.1 || b.2 + 1 < a.1, "{a:?} {b:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Without cases, nothing is written.
    assert!(write_threat_lists(&SynthConfig::default(), &dir).unwrap().is_empty());
    assert!(!dir.exists());
}

#[test]
fn cases_are_deterministic_and_absent_when_zero() {
    let cfg = SynthConfig { hours: 3 * 24, hosts: 50, cases: 1, ..SynthConfig::default() };
    let (a, oa) = collect(&cfg);
    let (b, ob) = collect(&cfg);
    assert_eq!((&a, &oa), (&b, &ob));
    assert_eq!(threat_lists(&cfg).unwrap(), threat_lists(&cfg).unwrap());
    let other = SynthConfig { seed: 9, ..cfg.clone() };
    assert_ne!(threat_lists(&cfg).unwrap(), threat_lists(&other).unwrap());
    assert_ne!(a.manifest.cases, collect(&other).0.manifest.cases);
    // Without cases: no key in the config or the manifest, and the records are those of a
    // generator without cases (same counts; the case config only adds records).
    let zero = SynthConfig { cases: 0, ..cfg.clone() };
    let (z, oz) = collect(&zero);
    let json = serde_json::to_string(&z.manifest).unwrap();
    assert!(!json.contains("cases"), "{json}");
    assert!(case_labels(&zero).unwrap().is_empty());
    assert!(a.manifest.records > z.manifest.records);
    assert_eq!(oz.len(), oa.len());
    assert!(matches!(
        SynthConfig { cases: 1001, ..SynthConfig::default() }.validate(),
        Err(SynthError::InvalidConfig(_))
    ));
}

#[test]
fn score_cases_counts_recall_and_false_alerts() {
    let cfg =
        SynthConfig { hours: 4 * 24, hosts: 60, bursts: 0, cases: 2, ..SynthConfig::default() };
    let labels = case_labels(&cfg).unwrap();
    let scans: Vec<&CaseLabel> = labels.iter().filter(|l| l.kind == CaseKind::PortScan).collect();
    let pos: Vec<&&CaseLabel> = scans.iter().filter(|l| l.positive).collect();
    let neg: Vec<&&CaseLabel> = scans.iter().filter(|l| !l.positive).collect();
    // One positive found, one negative alerted (in its last hour), one alert elsewhere, one a
    // day late.
    let last = |l: &CaseLabel| l.hour + (i64::from(l.hours) - 1) * 3600;
    let alerts = vec![
        (pos[0].hour, pos[0].src_ip.clone()),
        (last(neg[1]), neg[1].src_ip.clone()),
        (cfg.start, "10.9.9.9".to_string()),
        (pos[1].hour + 86_400, pos[1].src_ip.clone()),
    ];
    let s = score_cases(&labels, CaseKind::PortScan, &alerts);
    let want =
        CaseScore { positives: 2, found: 1, negatives: 2, negatives_alerted: 1, other_alerts: 2 };
    assert_eq!(s, want);
    assert_eq!(s.recall(), 0.5);
    // The same alerts are all "other" for another kind.
    let s = score_cases(&labels, CaseKind::ThreatList, &alerts);
    assert_eq!((s.positives, s.found, s.other_alerts), (2, 0, 4));
}
