//! Counter benchmarks: add of pre-parsed hits, parse + classify + count, on 1 and 2 rayon threads,
//! and memory per tracked source measured with a counting global allocator.
//!
//! Every benchmark checks its result against a count computed once outside the timed loop.
#![allow(
    unsafe_code,
    reason = "a counting GlobalAlloc needs `unsafe impl`; it only forwards to System"
)]

use criterion::{BenchmarkId, Criterion, Throughput};
use flowlog::{for_each_record, DecodeOptions};
use flowspike_counter::rayon::ThreadPoolBuilder;
use flowspike_counter::{par_count, CountSink, Counter, CounterConfig, Hit, Rule};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

/// Forwards to `System` and tracks live heap bytes.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the only
// addition is a relaxed counter update (a statistic: no other memory is ordered by it).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l` (all allocations go through us).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A tiny deterministic generator (splitmix64), so the bench needs no extra dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const HITS: usize = 400_000;
const SOURCES: u64 = 20_000;
const T0: u64 = 1_704_171_600;

/// Pre-parsed hits over 3 hours, 20k sources, 5k destinations.
fn hits() -> Vec<Hit<'static>> {
    let mut r = Rng(1);
    (0..HITS)
        .map(|_| {
            let x = r.next();
            Hit {
                hour: (T0 + (x % 3) * 3600) as i64,
                src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + ((x >> 8) % SOURCES) as u32)),
                dst: IpAddr::V4(Ipv4Addr::from(0x0800_0000 + ((x >> 32) % 5_000) as u32)),
                interface_id: Some(if x & 0x80 == 0 {
                    b"eni-0123456789abcdef0"
                } else {
                    b"eni-0fedcba987654321f"
                }),
                bytes: 40 + (x >> 48) % 1000,
                packets: 1 + (x >> 58),
            }
        })
        .collect()
}

/// Default-format lines (about 60 % REJECT, 80 % internal sources), cut into 16 chunks at line ends.
fn lines() -> Vec<Vec<u8>> {
    let mut r = Rng(2);
    let mut chunks = vec![Vec::new(); 16];
    for i in 0..HITS {
        let x = r.next();
        let src = if x % 10 < 8 {
            Ipv4Addr::from(0x0a00_0000 + ((x >> 8) % SOURCES) as u32)
        } else {
            Ipv4Addr::from(0x0808_0000 + ((x >> 8) % 100) as u32)
        };
        let dst = Ipv4Addr::from(0x0800_0000 + ((x >> 32) % 5_000) as u32);
        let start = T0 + (x >> 40) % 10_800;
        let action = if (x >> 4) % 10 < 6 { "REJECT" } else { "ACCEPT" };
        let line = format!(
            "2 123456789012 eni-0123456789abcdef0 {src} {dst} {} 443 6 {} {} {start} {} {action} OK\n",
            1024 + (x >> 16) % 60_000,
            1 + (x >> 58),
            40 + (x >> 48) % 1000,
            start + 60,
        );
        chunks[i % 16].extend_from_slice(line.as_bytes());
    }
    chunks
}

/// Naive expected (keys, counted records) of the parse + count input.
fn expected_of_lines(chunks: &[Vec<u8>]) -> (usize, u64) {
    let rule = Rule::default();
    let mut keys = BTreeSet::new();
    let mut n = 0;
    for line in chunks.iter().flat_map(|c| c.split(|&b| b == b'\n')).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = std::str::from_utf8(line).unwrap().split(' ').collect();
        let (src, dst): (IpAddr, IpAddr) = (f[3].parse().unwrap(), f[4].parse().unwrap());
        if f[12] == "REJECT" && rule.is_internal(src) && !rule.is_internal(dst) {
            keys.insert((f[10].parse::<i64>().unwrap() / 3600, src));
            n += 1;
        }
    }
    (keys.len(), n)
}

fn bench_add(c: &mut Criterion) {
    let hits = hits();
    let mut expect: BTreeMap<(i64, IpAddr), u64> = BTreeMap::new();
    for h in &hits {
        *expect.entry((h.hour, h.src)).or_default() += 1;
    }
    let check = |rows: Vec<flowspike_counter::AggregateRow>| {
        assert_eq!(rows.len(), expect.len());
        assert_eq!(rows.iter().map(|r| r.blocked_count).sum::<u64>(), HITS as u64);
    };
    let mut g = c.benchmark_group("counter_add");
    g.throughput(Throughput::Elements(HITS as u64)).sample_size(10);
    g.bench_function("counter_single", |b| {
        b.iter(|| {
            let mut c = Counter::new(CounterConfig::default());
            for h in &hits {
                c.add(h);
            }
            black_box(c.len())
        })
    });
    let chunks: Vec<&[Hit<'static>]> = hits.chunks(HITS / 16).collect();
    for threads in [1, 2] {
        let pool = ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let run = || {
            pool.install(|| {
                par_count(&chunks, 16, CounterConfig::default(), |chunk, acc| {
                    for h in chunk.iter() {
                        acc.add(h);
                    }
                })
            })
        };
        check(run().into_rows());
        g.bench_with_input(BenchmarkId::new("sharded_par_count", threads), &threads, |b, _| {
            b.iter(|| black_box(run().len()))
        });
    }
    g.finish();
}

fn bench_parse_count(c: &mut Criterion) {
    let chunks = lines();
    let total_bytes: usize = chunks.iter().map(Vec::len).sum();
    let (keys, counted) = expected_of_lines(&chunks);
    let rule = Rule::default();
    let opts = DecodeOptions::default();
    let mut g = c.benchmark_group("parse_and_count");
    g.throughput(Throughput::Elements(HITS as u64)).sample_size(10);
    for threads in [1, 2] {
        let pool = ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let run = || {
            pool.install(|| {
                par_count(&chunks, 16, CounterConfig::default(), |chunk, acc| {
                    let mut sink = CountSink::new(&rule, acc);
                    let _ = for_each_record(chunk, &opts, &mut sink);
                })
            })
        };
        let rows = run().into_rows();
        assert_eq!(rows.len(), keys);
        assert_eq!(rows.iter().map(|r| r.blocked_count).sum::<u64>(), counted);
        g.bench_with_input(BenchmarkId::new("lines", threads), &threads, |b, _| {
            b.iter(|| black_box(run().len()))
        });
    }
    g.finish();
    println!(
        "parse_and_count input: {HITS} lines, {total_bytes} bytes, {counted} counted, {keys} keys"
    );
}

/// Live heap bytes per (hour, source) key, from the counting allocator: the difference in live bytes
/// before and after filling a counter, divided by the number of keys.
fn memory_report() {
    for (label, dests_per_key, cap) in
        [("1 dest", 1u32, 10_000), ("10 dests", 10, 10_000), ("200 dests, cap 100", 200, 100)]
    {
        let keys = if dests_per_key > 100 { 1_000u32 } else { 100_000 };
        let before = LIVE.load(Ordering::Relaxed);
        let mut c = Counter::new(CounterConfig { dest_cap: cap, ..CounterConfig::default() });
        for k in 0..keys {
            for d in 0..dests_per_key {
                c.add(&Hit {
                    hour: T0 as i64,
                    src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + k)),
                    dst: IpAddr::V4(Ipv4Addr::from(0x0800_0000 + d)),
                    interface_id: Some(b"eni-0123456789abcdef0"),
                    bytes: 1,
                    packets: 1,
                });
            }
        }
        let bytes = LIVE.load(Ordering::Relaxed) - before;
        assert_eq!(c.len(), keys as usize);
        println!(
            "memory per tracked source ({label}): {} bytes ({keys} keys, {bytes} live bytes)",
            bytes / keys as isize
        );
        drop(black_box(c));
    }
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    bench_add(&mut c);
    bench_parse_count(&mut c);
    c.final_summary();
}
