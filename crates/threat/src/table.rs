//! The compiled lists: a two-level prefix table per address family.
//!
//! Every list's networks become address ranges; the ranges of all lists cut the address space
//! into segments of constant [`ListMask`] (sorted segment starts, a mask each, adjacent equal
//! masks coalesced). That is exact for any prefix length and any overlap. A lookup then needs the
//! segment holding the address; to make the usual miss cost one load, a first level indexed by
//! the top 16 bits of the address says whether any list covers that /16 (IPv4) or /16 (IPv6) at
//! all (a 65,536-bit bitmap, 8 KiB: stays in L1), and where it does, either which single segment
//! holds the whole block or which range of segments to binary-search.

use crate::{ListMask, ThreatError, ThreatList};
use ipnet::IpNet;
use std::net::IpAddr;

/// Most lists a [`ThreatLists`] holds: the bits of a [`ListMask`].
pub const MAX_LISTS: usize = 64;

/// Lists compiled for matching at line rate.
///
/// Memory: about 0.5 MiB of fixed tables (two first levels of 256 KiB and two 8 KiB bitmaps),
/// plus 12 bytes (IPv4) or 24 bytes (IPv6) per segment: at most two segments per entry.
#[derive(Debug, Clone)]
pub struct ThreatLists {
    names: Vec<String>,
    lens: Vec<usize>,
    v4: Table<u32>,
    v6: Table<u128>,
}

impl Default for ThreatLists {
    fn default() -> Self {
        ThreatLists {
            names: Vec::new(),
            lens: Vec::new(),
            v4: Table::build(Vec::new()),
            v6: Table::build(Vec::new()),
        }
    }
}

impl ThreatLists {
    /// Compiles lists; list `i` is bit `i` of [`ThreatLists::matches`]. At most [`MAX_LISTS`]
    /// lists, with distinct names. Builds in `O(n log n)` for `n` entries in all.
    pub fn new(lists: Vec<ThreatList>) -> Result<ThreatLists, ThreatError> {
        if lists.len() > MAX_LISTS {
            return Err(ThreatError::TooManyLists { count: lists.len(), max: MAX_LISTS });
        }
        let mut names: Vec<String> = Vec::with_capacity(lists.len());
        for l in &lists {
            if names.iter().any(|n| n == l.name()) {
                return Err(ThreatError::DuplicateName { name: l.name().to_owned() });
            }
            names.push(l.name().to_owned());
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, l) in lists.iter().enumerate() {
            let bit: ListMask = 1 << i;
            let mut r4 = Vec::new();
            let mut r6 = Vec::new();
            for net in l.networks() {
                match net {
                    IpNet::V4(n) => r4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                    IpNet::V6(n) => r6.push((u128::from(n.network()), u128::from(n.broadcast()))),
                }
            }
            v4.extend(union(r4).into_iter().map(|(a, b)| (a, b, bit)));
            v6.extend(union(r6).into_iter().map(|(a, b)| (a, b, bit)));
        }
        let lens = lists.iter().map(ThreatList::len).collect();
        Ok(ThreatLists { names, lens, v4: Table::build(v4), v6: Table::build(v6) })
    }

    /// The lists `ip` is on (bit `i`: list `i`), `0` for none.
    ///
    /// The naive equivalent: bit `i` set iff some network `n` of list `i` has
    /// `n.contains(&ip)` (`ipnet`); so an IPv4-mapped IPv6 address matches IPv6 entries only.
    #[inline]
    pub fn matches(&self, ip: IpAddr) -> ListMask {
        match ip {
            IpAddr::V4(a) => self.v4.get(u32::from(a)),
            IpAddr::V6(a) => self.v6.get(u128::from(a)),
        }
    }

    /// The lists' names, in bit order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Entries of each list (as [`ThreatList::len`]), in bit order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Number of lists.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there is no list (every address then matches nothing).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The union of inclusive ranges as sorted, disjoint, non-adjacent ranges: within one list, the
/// mask sweep of [`Table::build`] may then toggle the list's bit at each boundary.
fn union<K: Key>(mut ranges: Vec<(K, K)>) -> Vec<(K, K)> {
    ranges.sort_unstable();
    let mut out: Vec<(K, K)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match out.last_mut() {
            // Overlapping or adjacent (`a <= last + 1`) ranges join.
            Some(last) if last.1.succ().is_none_or(|next| a <= next) => {
                last.1 = last.1.max(b);
            }
            _ => out.push((a, b)),
        }
    }
    out
}

/// An address as an integer: `u32` for IPv4, `u128` for IPv6.
trait Key: Copy + Ord + Default {
    /// Bits below the first-level index: 16 (IPv4) or 112 (IPv6).
    const LOW_BITS: u32;
    /// `self + 1`, `None` past the last address.
    fn succ(self) -> Option<Self>;
    /// The top 16 bits: the first-level index.
    fn top16(self) -> usize;
    /// The first and last address of first-level block `b`.
    fn block(b: usize) -> (Self, Self);
}

impl Key for u32 {
    const LOW_BITS: u32 = 16;
    #[inline]
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    #[inline]
    fn top16(self) -> usize {
        (self >> Self::LOW_BITS) as usize
    }
    fn block(b: usize) -> (Self, Self) {
        let first = (b as u32) << Self::LOW_BITS;
        (first, first | ((1 << Self::LOW_BITS) - 1))
    }
}

impl Key for u128 {
    const LOW_BITS: u32 = 112;
    #[inline]
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    #[inline]
    fn top16(self) -> usize {
        (self >> Self::LOW_BITS) as usize
    }
    fn block(b: usize) -> (Self, Self) {
        let first = (b as u128) << Self::LOW_BITS;
        (first, first | ((1 << Self::LOW_BITS) - 1))
    }
}

/// First-level entries with this bit index `mixed`; without it they are a segment index.
const MIXED: u32 = 1 << 31;
/// First-level blocks.
const BLOCKS: usize = 1 << 16;

/// One address family's table.
#[derive(Debug, Clone)]
struct Table<K> {
    /// Bit `b`: some list covers part of first-level block `b`.
    any: Box<[u64; BLOCKS / 64]>,
    /// Per block (meaningful where `any` is set): the segment holding the whole block, or
    /// `MIXED | i` where `mixed[i]` is the block's range of segments.
    first: Box<[u32]>,
    /// Segment index ranges `[lo, hi)` of blocks cut by a segment boundary.
    mixed: Vec<(u32, u32)>,
    /// Segment starts, ascending; `starts[0]` is address 0.
    starts: Vec<K>,
    /// Each segment's mask.
    masks: Vec<ListMask>,
}

impl<K: Key> Table<K> {
    /// Compiles inclusive ranges `(first, last, bit)`, each bit's ranges disjoint and
    /// non-adjacent (as [`union`] makes them).
    fn build(ranges: Vec<(K, K, ListMask)>) -> Table<K> {
        // A bit flips on where its range starts and off just past its end.
        let mut events: Vec<(K, ListMask)> = Vec::with_capacity(2 * ranges.len());
        for (a, b, bit) in ranges {
            events.push((a, bit));
            if let Some(past) = b.succ() {
                events.push((past, bit));
            }
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut starts = vec![K::default()];
        let mut masks: Vec<ListMask> = vec![0];
        let mut mask: ListMask = 0;
        let mut i = 0;
        while let Some(&(pos, _)) = events.get(i) {
            while let Some(&(p, bit)) = events.get(i) {
                if p != pos {
                    break;
                }
                mask ^= bit;
                i += 1;
            }
            if starts.last() == Some(&pos) {
                // Only at address 0, the first segment's start.
                if let Some(m) = masks.last_mut() {
                    *m = mask;
                }
            } else if masks.last() != Some(&mask) {
                starts.push(pos);
                masks.push(mask);
            }
        }
        let mut any = Box::new([0u64; BLOCKS / 64]);
        let mut first = vec![0u32; BLOCKS].into_boxed_slice();
        let mut mixed = Vec::new();
        // `partition_point(..) >= 1` always: `starts[0]` is address 0.
        let segment_of = |k: K| starts.partition_point(|&s| s <= k) - 1;
        for b in 0..BLOCKS {
            let (lo_addr, hi_addr) = K::block(b);
            let (lo, hi) = (segment_of(lo_addr), segment_of(hi_addr));
            if lo == hi && masks[lo] == 0 {
                continue;
            }
            any[b / 64] |= 1 << (b % 64);
            // Segment counts stay below 2^31: two per entry at most, and entries are in memory.
            first[b] = if lo == hi {
                lo as u32
            } else {
                mixed.push((lo as u32, hi as u32 + 1));
                MIXED | (mixed.len() - 1) as u32
            };
        }
        Table { any, first, mixed, starts, masks }
    }

    /// The mask of the segment holding `k`.
    #[inline]
    fn get(&self, k: K) -> ListMask {
        let b = k.top16();
        // `b < 2^16` by `top16`, so `b / 64 < 1024`: no bounds check is emitted.
        if (self.any[(b / 64) % (BLOCKS / 64)] >> (b % 64)) & 1 == 0 {
            return 0;
        }
        self.get_covered(k, b)
    }

    /// [`Table::get`] for an address in a block some list covers: out of line, so the miss
    /// path stays small enough to inline everywhere.
    #[inline(never)]
    fn get_covered(&self, k: K, b: usize) -> ListMask {
        let e = self.first.get(b).copied().unwrap_or(0);
        let segment = if e & MIXED == 0 {
            e as usize
        } else {
            let (lo, hi) = self.mixed.get((e & !MIXED) as usize).copied().unwrap_or((0, 1));
            let (lo, hi) = (lo as usize, hi as usize);
            // The block's segments are lo..hi and `starts[lo] <= k`: the segment holding `k` is
            // `lo` plus the number of later starts at or below `k`.
            lo + self.starts.get(lo + 1..hi).map_or(0, |s| s.partition_point(|&s| s <= k))
        };
        self.masks.get(segment).copied().unwrap_or(0)
    }

    /// Number of segments (for tests and memory figures).
    #[cfg(test)]
    fn segments(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(specs: &[(&str, &str)]) -> ThreatLists {
        ThreatLists::new(
            specs.iter().map(|(n, t)| ThreatList::parse(n, t.as_bytes()).unwrap()).collect(),
        )
        .unwrap()
    }

    /// Looks up every `(address, mask)` pair.
    fn check(l: &ThreatLists, cases: &[(&str, ListMask)]) {
        for &(ip, want) in cases {
            assert_eq!(l.matches(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn ipv4_prefixes_and_overlaps() {
        let l = lists(&[
            ("a", "10.0.0.0/8\n10.1.0.0/16\n192.168.1.1\n"),
            ("b", "10.1.2.0/24\n192.168.1.0/31\n255.255.255.255\n"),
        ]);
        check(
            &l,
            &[
                ("9.255.255.255", 0),
                ("10.0.0.0", 0b01),
                ("10.1.2.0", 0b11),
                ("10.1.2.255", 0b11),
                ("10.1.3.0", 0b01),
                ("10.255.255.255", 0b01),
                ("11.0.0.0", 0),
                ("192.168.1.0", 0b10),
                ("192.168.1.1", 0b11),
                ("192.168.1.2", 0),
                ("255.255.255.254", 0),
                ("255.255.255.255", 0b10),
                ("0.0.0.0", 0),
            ],
        );
    }

    #[test]
    fn slash_zero_covers_everything_of_its_family() {
        let l = lists(&[("all4", "0.0.0.0/0\n"), ("all6", "::/0\n"), ("one", "1.2.3.4\n")]);
        check(
            &l,
            &[
                ("0.0.0.0", 0b001),
                ("1.2.3.4", 0b101),
                ("255.255.255.255", 0b001),
                ("::", 0b010),
                ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0b010),
            ],
        );
        assert_eq!(l.v4.segments(), 3);
    }

    #[test]
    fn ipv6_entries_and_edges() {
        let l = lists(&[
            ("six", "2001:db8::/32\n2001:db8:1::1\nfe80::/10\n"),
            ("host", "2001:db8:1::1/128\nffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n"),
        ]);
        check(
            &l,
            &[
                ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", 0),
                ("2001:db8::", 0b01),
                ("2001:db8:1::1", 0b11),
                ("2001:db8:1::2", 0b01),
                ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 0b01),
                ("2001:db9::", 0),
                ("fe80::1", 0b01),
                ("febf:ffff::", 0b01),
                ("fec0::", 0),
                ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0b10),
                ("10.0.0.1", 0),
            ],
        );
    }

    /// An IPv4-mapped IPv6 address is an IPv6 address: it matches no IPv4 entry.
    #[test]
    fn ipv4_mapped_ipv6_is_not_an_ipv4_match() {
        let l = lists(&[("v4", "1.2.3.0/24\n"), ("mapped", "::ffff:5.6.7.8\n")]);
        check(
            &l,
            &[
                ("1.2.3.4", 0b01),
                ("::ffff:1.2.3.4", 0),
                ("::1.2.3.4", 0),
                ("::ffff:5.6.7.8", 0b10),
                ("5.6.7.8", 0),
            ],
        );
    }

    #[test]
    fn many_entries_in_one_block_are_searched() {
        let text: String =
            (0..3000u32).map(|i| format!("10.20.{}.{}\n", i / 128, 2 * (i % 128))).collect();
        let l = lists(&[("dense", &text)]);
        for i in 0..3000u32 {
            let hit = format!("10.20.{}.{}", i / 128, 2 * (i % 128));
            let miss = format!("10.20.{}.{}", i / 128, 2 * (i % 128) + 1);
            check(&l, &[(&hit, 1), (&miss, 0)]);
        }
    }

    #[test]
    fn limits_and_names() {
        let many: Vec<ThreatList> =
            (0..65).map(|i| ThreatList::parse(&format!("l{i}"), b"").unwrap()).collect();
        assert!(matches!(
            ThreatLists::new(many),
            Err(ThreatError::TooManyLists { count: 65, max: 64 })
        ));
        let full: Vec<ThreatList> =
            (0..64).map(|i| ThreatList::parse(&format!("l{i}"), b"8.8.8.8").unwrap()).collect();
        let l = ThreatLists::new(full).unwrap();
        assert_eq!(l.matches("8.8.8.8".parse().unwrap()), u64::MAX);
        assert_eq!(l.names()[63], "l63");
        let dup = vec![ThreatList::parse("x", b"").unwrap(), ThreatList::parse("x", b"").unwrap()];
        assert!(matches!(ThreatLists::new(dup), Err(ThreatError::DuplicateName { .. })));
        let empty = ThreatLists::default();
        assert_eq!(empty.matches("1.1.1.1".parse().unwrap()), 0);
        assert!(empty.is_empty());
    }
}
