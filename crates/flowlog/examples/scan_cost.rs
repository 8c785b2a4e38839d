//! The cost per record of the structural scan and the value check, for instruction counts under
//! cachegrind (wall time on a shared machine is noise; instructions are not):
//!
//! ```text
//! cargo build --release -p flowlog --example scan_cost
//! for m in gen touch read; do
//!   valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
//!     target/release/examples/scan_cost $m 200000
//! done
//! ```
//!
//! A third argument repeats the decoding that many times (for `perf record`, where generating
//! the lines would otherwise dominate the samples).
//!
//! `gen` only generates the lines; `touch` also decodes them with a sink that reads nothing (the
//! scan and the check); `read` with a sink that reads `srcaddr`, `dstaddr`, `start` and `action`
//! (what the counter reads of every record). Instructions per record: (mode − gen) / lines.
//!
//! The lines are default-format version 2 records shaped like `flowspike bench`'s generator
//! (bench/src/lib.rs, which flowlog cannot depend on): 2% NODATA/SKIPDATA, 12% REJECT, 2% IPv6,
//! private and public addresses, ports, a few hundred ENIs.

use std::io::Write;

use flowlog::{DecodeOptions, Framing, LineError, RecordSink};

/// SplitMix64: deterministic lines without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = (self.0 ^ (self.0 >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `percent` times in 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn address(rng: &mut Rng, private: bool, v6: bool) -> String {
    if v6 {
        return format!("2600:1f18:{:x}::{:x}", rng.below(65536), rng.below(65536));
    }
    let (a, b, d) = (rng.below(256), rng.below(256), 1 + rng.below(254));
    // The first two octets: RFC 1918 networks, or public ones.
    let (w, x) = if !private {
        ([3, 13, 18, 34, 52, 54, 99, 104, 151, 185, 203][rng.below(11) as usize], a)
    } else {
        match rng.below(3) {
            0 => (10, a),
            1 => (172, 16 + rng.below(16)),
            _ => (192, 168),
        }
    };
    format!("{w}.{x}.{b}.{d}")
}

/// `n` default-format lines.
fn generate(n: u64) -> Vec<u8> {
    let mut rng = Rng(42);
    let mut out = Vec::with_capacity(n as usize * 120);
    for i in 0..n {
        let account = 100_000_000_000 + rng.below(5) * 111_111_111;
        let eni = rng.below(300);
        let start = 1_700_000_000 + i * 3600 / n.max(1) + rng.below(5);
        let end = start + 1 + rng.below(59);
        if rng.chance(2) {
            let status = if rng.chance(80) { "NODATA" } else { "SKIPDATA" };
            let _ =
                writeln!(out, "2 {account} eni-0{eni:016x} - - - - - - - {start} {end} - {status}");
            continue;
        }
        let action = if rng.chance(12) { "REJECT" } else { "ACCEPT" };
        let v6 = rng.chance(2);
        let (sp, dp) = (rng.chance(60), rng.chance(40));
        let (src, dst) = (address(&mut rng, sp, v6), address(&mut rng, dp, v6));
        let protocol = [6, 6, 6, 17, 17, 1][rng.below(6) as usize];
        let (srcport, dstport) = match protocol {
            1 => (0, 0),
            _ => (32768 + rng.below(28_000), [443, 80, 53, 22][rng.below(4) as usize]),
        };
        let packets = 1 + rng.below(2000);
        let bytes = packets * (40 + rng.below(1400));
        let _ = writeln!(
            out,
            "2 {account} eni-0{eni:016x} {src} {dst} {srcport} {dstport} {protocol} {packets} \
             {bytes} {start} {end} {action} OK"
        );
    }
    out
}

/// Reads nothing.
struct Touch(u64);

impl RecordSink for Touch {
    fn record(&mut self, rec: &flowlog::FlowRecord<'_>) {
        self.0 += u64::from(!rec.line().is_empty());
    }
    fn malformed(&mut self, _: &LineError) {}
}

/// Reads what the counter reads of every record.
struct Read(u64);

impl RecordSink for Read {
    fn record(&mut self, rec: &flowlog::FlowRecord<'_>) {
        let src = rec.srcaddr().ok().flatten().map_or(0, |a| u64::from(a.is_ipv4()));
        let dst = rec.dstaddr().ok().flatten().map_or(0, |a| u64::from(a.is_ipv4()));
        let start = rec.start().ok().flatten().unwrap_or(0);
        let reject = u64::from(rec.action().ok().flatten() == Some(flowlog::Action::Reject));
        self.0 = self.0.wrapping_add(src + dst + (start & 7) + reject);
    }
    fn malformed(&mut self, _: &LineError) {}
}

/// The last of `reps` (at least one) runs of `decode`.
fn repeat<T>(reps: u64, mut decode: impl FnMut() -> T) -> T {
    for _ in 1..reps {
        let _ = decode();
    }
    decode()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "touch".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    // Decodes repeated this many times (for `perf record`, where the generator would dominate).
    let reps: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let text = generate(n);
    let opts = DecodeOptions { framing: Framing::Lines, ..DecodeOptions::default() };
    let (summary, value) = match mode.as_str() {
        "gen" => {
            println!("generated {} lines, {} bytes", n, text.len());
            return;
        }
        "touch" => {
            let mut s = Touch(0);
            (repeat(reps, || flowlog::for_each_record(&text, &opts, &mut s)), s.0)
        }
        "read" => {
            let mut s = Read(0);
            (repeat(reps, || flowlog::for_each_record(&text, &opts, &mut s)), s.0)
        }
        other => {
            eprintln!("usage: scan_cost gen|touch|read [LINES [REPS]] (not {other:?})");
            std::process::exit(2);
        }
    };
    match summary {
        Ok(s) => {
            println!("{mode}: {} records, {} malformed, value {value}", s.records, s.malformed)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
