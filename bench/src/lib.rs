//! Benchmarks: a deterministic generator of realistic VPC flow log lines (shared by the criterion
//! benches) and [`pipeline`], the stage-by-stage measurement behind `flowspike bench`.

pub mod pipeline;

/// A small deterministic PRNG (splitmix64), so the data set is the same on every machine.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Generated default-format text and what it holds by construction.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// The lines, each ending in `\n`, no header.
    pub data: Vec<u8>,
    /// Number of lines.
    pub lines: u64,
    /// Lines with action REJECT.
    pub rejects: u64,
    /// Lines with log-status NODATA or SKIPDATA (all other fields `-`).
    pub no_data: u64,
    /// Blocked-outbound lines: REJECT, OK, srcaddr in RFC1918, dstaddr outside RFC1918.
    pub blocked_outbound: u64,
}

/// `n` realistic version-2 default-format lines (14 fields, `\n`-terminated, no header),
/// deterministic for a given `seed`. About 2% NODATA/SKIPDATA, 12% REJECT, 2% IPv6 flows, a
/// mix of private and public addresses over a few hundred ENIs and one hour of start times.
pub fn default_format_lines(n: usize, seed: u64) -> Vec<u8> {
    generate(n, seed).data
}

/// Like [`default_format_lines`], with the counts known by construction.
pub fn generate(n: usize, seed: u64) -> Generated {
    use std::io::Write;
    let mut rng = SplitMix64::new(seed);
    let mut g = Generated { data: Vec::with_capacity(n * 120), ..Generated::default() };
    let base_start = 1_700_000_000 + rng.below(86_400 * 30);
    for i in 0..n as u64 {
        let account = 100_000_000_000 + rng.below(5) * 111_111_111;
        let eni = rng.below(300);
        let start = base_start + i * 3600 / (n as u64).max(1) + rng.below(5);
        let end = start + 1 + rng.below(59);
        g.lines += 1;
        if rng.chance(2) {
            g.no_data += 1;
            let status = if rng.chance(80) { "NODATA" } else { "SKIPDATA" };
            let _ = writeln!(
                g.data,
                "2 {account} eni-0{eni:016x} - - - - - - - {start} {end} - {status}"
            );
            continue;
        }
        let reject = rng.chance(12);
        let v6 = rng.chance(2);
        let (src_private, dst_private) = (rng.chance(60), rng.chance(40));
        let src = address(&mut rng, src_private, v6);
        let dst = address(&mut rng, dst_private, v6);
        let protocol = [6, 6, 6, 17, 17, 1][rng.below(6) as usize];
        let (srcport, dstport) = if protocol == 1 {
            (0, 0)
        } else if rng.chance(50) {
            (32768 + rng.below(28_000), [443, 80, 53, 22, 3389, 8080][rng.below(6) as usize])
        } else {
            ([443, 80, 53, 22][rng.below(4) as usize], 32768 + rng.below(28_000))
        };
        let packets = 1 + rng.below(2000);
        let bytes = packets * (40 + rng.below(1400));
        let action = if reject { "REJECT" } else { "ACCEPT" };
        let _ = writeln!(
            g.data,
            "2 {account} eni-0{eni:016x} {src} {dst} {srcport} {dstport} {protocol} {packets} \
             {bytes} {start} {end} {action} OK"
        );
        if reject {
            g.rejects += 1;
            if !v6 && src_private && !dst_private {
                g.blocked_outbound += 1;
            }
        }
    }
    g
}

fn address(rng: &mut SplitMix64, private: bool, v6: bool) -> String {
    if v6 {
        return format!(
            "2600:1f18:{:x}:{:x}::{:x}",
            rng.below(65536),
            rng.below(65536),
            rng.below(65536)
        );
    }
    let (a, b, c, d) = (rng.below(256), rng.below(256), rng.below(256), 1 + rng.below(254));
    if private {
        match rng.below(3) {
            0 => format!("10.{a}.{b}.{d}"),
            1 => format!("172.{}.{c}.{d}", 16 + rng.below(16)),
            _ => format!("192.168.{c}.{d}"),
        }
    } else {
        // Public: first octet outside 10, 127, 172, 192 and the multicast/reserved ranges.
        let first = [3, 13, 18, 34, 35, 44, 52, 54, 99, 104, 151, 185, 203][rng.below(13) as usize];
        format!("{first}.{a}.{c}.{d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let a = generate(2000, 7);
        assert_eq!(a.data, default_format_lines(2000, 7));
        assert_ne!(a.data, default_format_lines(2000, 8));
        assert_eq!(a.data.iter().filter(|b| **b == b'\n').count(), 2000);
        for line in a.data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            assert_eq!(line.split(|b| *b == b' ').count(), 14);
        }
        assert!(a.rejects > 100 && a.blocked_outbound > 20 && a.no_data > 10, "{a:?}");
    }
}
