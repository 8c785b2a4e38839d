//! ns per record of `ScanTap::add` and `ScanTap::finish` on traffic shaped like bench/compare's
//! 10 M-record data set (bench/compare/gen_dataset.py): the 7 M records with an internal source,
//! 4,000 internal hosts Zipf-skewed (s = 1.0, none above 1 %), 55 % to 200,000 external
//! addresses (Zipf s = 1.05, none above 2 %) and 45 % to a uniform internal host, well-known
//! ports by its weights and 5 % ephemeral ones, 48 hours in time order; plus a /16 sweep on
//! 445/tcp and one host scanned on 1,000 ports, injected in hour 20.
//!
//! Each benchmark checks its result: the two injected scans alert and nothing else did.
//!
//! `cargo bench -p flowspike-scan` (`SCAN_BENCH_RECORDS` changes the 7 M).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use flowspike_scan::{ScanConfig, ScanTap};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The seeded generator the synthetic archives use too (`flowspike-synth`).
type Rng = ChaCha8Rng;

fn unit(rng: &mut Rng) -> f64 {
    rng.random::<f64>()
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.random_range(0..n)
}

/// gen_dataset.py's `skewed_cdf`: weights `1 / (i + 10)^s`, capped, in random order.
fn skewed_cdf(n: usize, s: f64, cap: f64, rng: &mut Rng) -> Vec<f64> {
    let mut w: Vec<f64> = (0..n).map(|i| 1.0 / (i as f64 + 10.0).powf(s)).collect();
    let sum: f64 = w.iter().sum();
    w.iter_mut().for_each(|x| *x = (*x / sum).min(cap));
    let sum: f64 = w.iter().sum();
    for i in (1..n).rev() {
        w.swap(i, below(rng, i as u64 + 1) as usize);
    }
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = w
        .iter()
        .map(|x| {
            acc += x / sum;
            acc
        })
        .collect();
    if let Some(l) = cdf.last_mut() {
        *l = 1.0;
    }
    cdf
}

fn pick(cdf: &[f64], rng: &mut Rng) -> usize {
    let u = unit(rng);
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

type Rec = (i64, IpAddr, IpAddr, u16, u8);

const SCANNER_H: &str = "10.200.0.1";
const SCANNER_V: &str = "10.200.0.2";

fn dataset(n: usize) -> Vec<Rec> {
    let mut rng = Rng::seed_from_u64(0x5ca9);
    let internal: Vec<u32> =
        (0..4000).map(|_| (10 << 24) | below(&mut rng, 1 << 24) as u32).collect();
    let external: Vec<u32> =
        (0..200_000).map(|_| (20 << 24) + below(&mut rng, 180 << 24) as u32).collect();
    let src_cdf = skewed_cdf(internal.len(), 1.0, 0.01, &mut rng);
    let ext_cdf = skewed_cdf(external.len(), 1.05, 0.02, &mut rng);
    let ports = [443u16, 80, 53, 123, 22, 8080, 3389, 5432, 25, 0];
    let port_p = [0.55, 0.12, 0.1, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02, 0.05];
    let port_cdf: Vec<f64> = port_p
        .iter()
        .scan(0.0, |a, p| {
            *a += p;
            Some(*a)
        })
        .collect();
    let base = 1_717_200_000i64;
    let mut out = Vec::with_capacity(n + 70_000);
    for i in 0..n {
        let hour = base + (i as i64 * 48 / n as i64) * 3600;
        let src = internal[pick(&src_cdf, &mut rng)];
        let dst = if unit(&mut rng) < 0.55 {
            external[pick(&ext_cdf, &mut rng)]
        } else {
            internal[below(&mut rng, internal.len() as u64) as usize]
        };
        let mut port = ports[pick(&port_cdf, &mut rng)];
        if port == 0 {
            port = 1024 + below(&mut rng, 64_512) as u16;
        }
        let proto = if port == 53 || port == 123 { 17 } else { 6 };
        out.push((hour, v4(src), v4(dst), port, proto));
    }
    let at = out.iter().position(|r| r.0 == base + 20 * 3600).unwrap_or(0);
    let h = base + 20 * 3600;
    let sweep = (0..65_536u32).map(|i| (h, ip(SCANNER_H), v4(0x0a30_0000 + i), 445, 6));
    let ports = (1..=1000u16).map(|p| (h, ip(SCANNER_V), ip("10.0.0.9"), p, 6));
    out.splice(at..at, sweep.chain(ports));
    out
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn fill(cfg: &ScanConfig, recs: &[Rec]) -> ScanTap {
    let mut tap = ScanTap::new(cfg);
    for &(h, s, d, p, pr) in recs {
        tap.add(h, s, d, p, pr);
    }
    tap
}

/// The injected scans alert; ordinary traffic raises no vertical alert.
fn check(cfg: &ScanConfig, hours: &std::collections::BTreeMap<i64, flowspike_scan::HourScans>) {
    let vertical: Vec<_> =
        hours.values().flat_map(|h| &h.vertical).filter(|r| r.alerts(cfg)).collect();
    assert_eq!(vertical.len(), 1);
    assert_eq!(vertical[0].src_ip, SCANNER_V);
    assert!(hours
        .values()
        .flat_map(|h| &h.horizontal)
        .any(|r| r.alerts(cfg) && r.src_ip == SCANNER_H && r.dst_port == 445 && r.estimated));
}

/// CPU seconds this process has used (user + system, from /proc/self/stat; Linux, 10 ms ticks).
/// The machine the figures come from is shared, so wall time overstates the cost; CPU time does not.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 11 and 12 after the name (from 0).
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU ns per record of `run` on what `setup` makes, the best of three runs (setup not timed).
fn cpu_ns_per_record<T>(n: usize, setup: impl Fn() -> T, run: impl Fn(T)) -> f64 {
    (0..3)
        .map(|_| {
            let input = setup();
            let t = cpu_secs();
            run(input);
            (cpu_secs() - t) * 1e9 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn bench(c: &mut Criterion) {
    let n =
        std::env::var("SCAN_BENCH_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(7_000_000);
    let recs = dataset(n);
    let cfg = ScanConfig::default();
    let full = fill(&cfg, &recs);
    eprintln!("tap after add: {} MiB for {} records", full.approx_bytes() >> 20, recs.len());
    let t = std::time::Instant::now();
    let hours = full.clone().finish();
    let (v, h) =
        hours.values().fold((0, 0), |a, x| (a.0 + x.vertical.len(), a.1 + x.horizontal.len()));
    eprintln!("finish once: {:?}, rows: {v} vertical, {h} horizontal", t.elapsed());
    check(&cfg, &hours);
    let add = cpu_ns_per_record(recs.len(), || (), |()| drop(black_box(fill(&cfg, &recs))));
    let fin = cpu_ns_per_record(recs.len(), || full.clone(), |t| drop(black_box(t.finish())));
    eprintln!("CPU ns per record (all threads): add {add:.1}, finish {fin:.1}");

    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.throughput(Throughput::Elements(recs.len() as u64));
    g.bench_function("add", |b| b.iter(|| black_box(fill(&cfg, &recs))));
    g.bench_function("finish", |b| {
        b.iter_batched(|| full.clone(), |t| black_box(t.finish()), BatchSize::LargeInput)
    });
    // The CPU the finish takes: the same on one thread.
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build();
    if let Ok(pool) = one {
        g.bench_function("finish_1thread", |b| {
            b.iter_batched(
                || full.clone(),
                |t| pool.install(|| black_box(t.finish())),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
