//! The compiled lists: a two-level prefix table per address family.
//!
//! Every list's networks become address ranges; the ranges of all lists cut the address space
//! into segments of constant [`ListMask`] (sorted segment starts, a mask each, adjacent equal
//! masks coalesced). That is exact for any prefix length and any overlap. A lookup then needs the
//! segment holding the address. To make the usual miss cost one load, a 65,536-bit bitmap
//! (8 KiB: stays in L1) indexed by the top 16 bits of the address says whether any list covers
//! that /16 at all; then a 2 MiB bitmap answers the same of the /24 (with 100 k entries most
//! /16s hold one, few /24s do). Where one does, a radix index finds the segment: the first level has a
//! bucket per /16 (the segment holding its first address, as the boundaries inside it lie
//! between it and the next bucket's); a bucket with more than a few boundaries has a node of
//! its own, which skips the bits its boundaries share (path compression, so IPv6 lists clustered
//! in a few /32s do not make deep trees) and indexes the next bits, as many as it has
//! boundaries (at most 12); a bucket with few boundaries is scanned.

use crate::{ListMask, ThreatError, ThreatList};
use ipnet::IpNet;
use std::net::IpAddr;

/// Most lists a [`ThreatLists`] holds: the bits of a [`ListMask`].
pub const MAX_LISTS: usize = 64;

/// Lists compiled for matching at line rate.
///
/// Memory: about 1 MiB of fixed tables (per family a first level of 512 KiB and an 8 KiB
/// bitmap), 2 MiB per family that has entries (the /24 bitmap; untouched, so not resident, otherwise), plus 16 bytes (IPv4) or 32 bytes (IPv6) per segment (at most two segments per
/// entry) and the nodes below the first level, at most about 16 bytes per segment per level.
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
trait Key: Copy + Ord + Default + std::ops::Shr<u32, Output = Self> {
    /// Bits of an address.
    const BITS: u32;
    /// The last address.
    const MAX: Self;
    /// `self + 1`, `None` past the last address.
    fn succ(self) -> Option<Self>;
    /// `self - 1` (never called on address 0: a segment start after the first).
    fn pred(self) -> Self;
    /// The low 32 bits (bucket numbers are taken from them after a shift).
    fn low32(self) -> u32;
    /// The highest bit in which `self` and `other` differ (`None` when equal).
    fn highest_difference(self, other: Self) -> Option<u32>;
    /// `self` with bits `0..n` cleared (`n <= BITS`).
    fn clear_low(self, n: u32) -> Self;
    /// `self` with bits `0..n` set (`n <= BITS`).
    fn set_low(self, n: u32) -> Self;
    /// `self + (j << shift)` (never overflows where used: inside a node's range).
    fn add_shifted(self, j: u32, shift: u32) -> Self;
}

macro_rules! key {
    ($t:ty) => {
        impl Key for $t {
            const BITS: u32 = <$t>::BITS;
            const MAX: Self = <$t>::MAX;
            #[inline]
            fn succ(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn pred(self) -> Self {
                self.saturating_sub(1)
            }
            #[inline]
            fn low32(self) -> u32 {
                self as u32
            }
            fn highest_difference(self, other: Self) -> Option<u32> {
                let x = self ^ other;
                (x != 0).then(|| Self::BITS - 1 - x.leading_zeros())
            }
            fn clear_low(self, n: u32) -> Self {
                self.checked_shr(n).and_then(|x| x.checked_shl(n)).unwrap_or(0)
            }
            fn set_low(self, n: u32) -> Self {
                self | (1 as $t).checked_shl(n).map_or(<$t>::MAX, |b| b - 1)
            }
            fn add_shifted(self, j: u32, shift: u32) -> Self {
                self.wrapping_add(<$t>::from(j).checked_shl(shift).unwrap_or(0))
            }
        }
    };
}
key!(u32);
key!(u128);

/// Bits of the second bitmap's index (/20s).
const MID_BITS: u32 = 20;
/// Bits of the third bitmap's index (/24s).
const FINE_BITS: u32 = 24;

/// Bit `b` set when a segment with a list overlaps block `b` of the blocks the top `bits` bits
/// of an address number. An all-zero bitmap costs no memory until read (zeroed allocation).
fn cover_bitmap<K: Key>(segments: &[(K, ListMask)], bits: u32) -> Vec<u64> {
    let mut map = vec![0u64; (1usize << bits) / 64];
    let shift = K::BITS - bits;
    for (i, &(start, mask)) in segments.iter().enumerate() {
        if mask == 0 {
            continue;
        }
        // The segment ends just before the next one starts (or at the last address).
        let end = segments.get(i + 1).map_or(K::MAX, |n| n.0.pred());
        let (lo, hi) = ((start >> shift).low32() as usize, (end >> shift).low32() as usize);
        // Whole words at once: a /0 sets 2^24 bits.
        let (lw, hw) = (lo / 64, hi / 64);
        if lw == hw {
            map[lw] |= (u64::MAX >> (63 - hi % 64)) & (u64::MAX << (lo % 64));
        } else {
            map[lw] |= u64::MAX << (lo % 64);
            map[lw + 1..hw].fill(u64::MAX);
            map[hw] |= u64::MAX >> (63 - hi % 64);
        }
    }
    map
}

/// Per bucket of a node, the first and last segment it holds: `buckets[j].0` holds its first
/// address; the next bucket's first segment holds its last, unless that segment starts exactly
/// at the next bucket (then the one before does). `start(j)` is bucket `j`'s first address.
fn bucket_ends<K: Key>(
    buckets: &[(u32, u32)],
    segments: &[(K, ListMask)],
    start: impl Fn(usize) -> K,
) -> Vec<(usize, usize)> {
    let n = buckets.len() - 1;
    (0..n)
        .map(|j| {
            let (a, z) = (buckets[j].0 as usize, buckets[j + 1].0 as usize);
            let z = if j + 1 < n && z > a && segments[z].0 == start(j + 1) { z - 1 } else { z };
            (a, z)
        })
        .collect()
}

/// Bits of the first level (its buckets are the /16 blocks of the address space).
const ROOT_BITS: u32 = 16;
/// Buckets of the first level.
const BLOCKS: usize = 1 << ROOT_BITS;
/// A bucket holding at most this many segment boundaries is scanned, not indexed further.
const LEAF: u32 = 4;
/// Most bits a node below the first level indexes.
const MAX_NODE_BITS: u32 = 12;

/// One level of the index: the addresses `first..=last` cut into `2^bits` buckets of
/// `2^shift` addresses. Addresses of the node's parent bucket outside `first..=last` lie before
/// or after every segment boundary inside it (path compression: a node skips the bits all its
/// boundaries share).
#[derive(Debug, Clone)]
struct Node<K> {
    first: K,
    last: K,
    /// The segment of addresses below `first` / above `last` within the parent's bucket.
    below: u32,
    above: u32,
    shift: u32,
    bits: u32,
    /// Per bucket `j`: the segment holding the bucket's first address and the child node
    /// (0: none, else index + 1); entry `2^bits` holds the segment of `last`. Interleaved so
    /// that a lookup reads one cache line.
    buckets: Box<[(u32, u32)]>,
}

/// One address family's table.
#[derive(Debug, Clone)]
struct Table<K> {
    /// Bit `b`: some list covers part of first-level block `b` (/16).
    any: Box<[u64; BLOCKS / 64]>,
    /// Bit `b`: some list covers part of the /20 `b`: 128 KiB, which stays in a core's L2
    /// cache where `fine` does not (with 100,000 random entries 9 in 10 misses end here).
    mid: Box<[u64]>,
    /// Bit `b`: some list covers part of the /24 (IPv4) or /24 (IPv6) `b`: 2 MiB, never
    /// touched (so never in memory) when no list has an entry of this family.
    fine: Box<[u64]>,
    /// `nodes[0]` is the first level (the whole address space in /16 buckets).
    nodes: Vec<Node<K>>,
    /// Segments: start (ascending; the first is address 0) and mask.
    segments: Vec<(K, ListMask)>,
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
        let mut segments: Vec<(K, ListMask)> = vec![(K::default(), 0)];
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
            match segments.last_mut() {
                // Only at address 0, the first segment's start.
                Some(last) if last.0 == pos => last.1 = mask,
                Some(last) if last.1 == mask => {}
                _ => segments.push((pos, mask)),
            }
        }
        let mut any = Box::new([0u64; BLOCKS / 64]);
        any.copy_from_slice(&cover_bitmap(&segments, ROOT_BITS));
        let mid = cover_bitmap(&segments, MID_BITS).into_boxed_slice();
        let fine = cover_bitmap(&segments, FINE_BITS).into_boxed_slice();
        let mut t = Table { any, mid, fine, nodes: Vec::new(), segments };
        let last = t.segments.len() - 1;
        t.node(K::default(), K::MAX, 0, last, Some(K::BITS - ROOT_BITS));
        t
    }

    /// Builds the node over `first..=last` holding segments `lo..=hi` (`lo` holds `first`,
    /// `hi` holds `last`) and returns its index. `root_shift`: the first level's fixed layout
    /// (no path compression) instead of one fitted to the boundaries.
    fn node(&mut self, first: K, last: K, lo: usize, hi: usize, root_shift: Option<u32>) -> u32 {
        let (first, last, shift, bits) = match root_shift {
            Some(shift) => (first, last, shift, K::BITS - shift),
            None => {
                // The boundaries inside are `segments[lo + 1..=hi]`: the node covers the
                // addresses sharing every bit above the highest one in which they differ.
                let (a, z) = (self.segments[lo + 1].0, self.segments[hi].0);
                let width = a.highest_difference(z).map_or(0, |d| d + 1);
                let count = (hi - lo) as u32;
                let bits = (u32::BITS - count.leading_zeros()).clamp(1, MAX_NODE_BITS).min(width);
                (a.clear_low(width), a.set_low(width), width - bits, bits)
            }
        };
        let index = self.nodes.len();
        let n = 1usize << bits;
        // Bucket starts ascend: one walk over the segments finds the segment of each.
        let mut buckets = Vec::with_capacity(n + 1);
        let mut cur = lo;
        let mut walk = |k: K, segments: &[(K, ListMask)]| {
            while cur < hi && segments[cur + 1].0 <= k {
                cur += 1;
            }
            cur as u32
        };
        for j in 0..n {
            buckets.push((walk(first.add_shifted(j as u32, shift), &self.segments), 0));
        }
        buckets.push((walk(last, &self.segments), 0));
        let exact = bucket_ends(&buckets, &self.segments, |j| first.add_shifted(j as u32, shift));
        self.nodes.push(Node {
            first,
            last,
            below: lo as u32,
            above: hi as u32,
            shift,
            bits,
            buckets: buckets.into_boxed_slice(),
        });
        for (j, (a, z)) in exact.into_iter().enumerate() {
            if (z - a) as u32 > LEAF {
                let bucket_first = first.add_shifted(j as u32, shift);
                let child = self.node(bucket_first, bucket_first.set_low(shift), a, z, None);
                self.nodes[index].buckets[j].1 = child + 1;
            }
        }
        index as u32
    }

    /// The mask of the segment holding `k`.
    #[inline]
    fn get(&self, k: K) -> ListMask {
        let b = (k >> (K::BITS - ROOT_BITS)).low32() as usize;
        // `b < 2^16`, so `b / 64 < 1024`: the index is in bounds (and the check elided).
        if (self.any[(b / 64) % (BLOCKS / 64)] >> (b % 64)) & 1 == 0 {
            return 0;
        }
        self.get_covered(k)
    }

    /// [`Table::get`] for an address in a block some list covers: out of line, so the miss
    /// path stays small enough to inline everywhere.
    #[inline(never)]
    fn get_covered(&self, k: K) -> ListMask {
        // With many entries most /16s hold one, yet few /24s do: one more load spares the
        // index's two or three on most misses.
        let m = (k >> (K::BITS - MID_BITS)).low32() as usize;
        if (self.mid.get(m / 64).copied().unwrap_or(0) >> (m % 64)) & 1 == 0 {
            return 0;
        }
        let f = (k >> (K::BITS - FINE_BITS)).low32() as usize;
        if (self.fine.get(f / 64).copied().unwrap_or(0) >> (f % 64)) & 1 == 0 {
            return 0;
        }
        let mut node = 0usize;
        // Each level's node covers fewer addresses than its parent: the loop ends.
        while let Some(n) = self.nodes.get(node) {
            if k < n.first {
                return self.mask(n.below as usize);
            }
            if k > n.last {
                return self.mask(n.above as usize);
            }
            let j = ((k >> n.shift).low32() & ((1u32 << n.bits) - 1)) as usize;
            let (Some(&(a, child)), Some(&(z, _))) = (n.buckets.get(j), n.buckets.get(j + 1))
            else {
                return 0;
            };
            if child != 0 {
                node = child as usize - 1;
                continue;
            }
            // At most `LEAF` + 1 boundaries: a scan beats a binary search.
            let (a, z) = (a as usize, z as usize);
            let later = self
                .segments
                .get(a + 1..=z)
                .map_or(0, |s| s.iter().take_while(|s| s.0 <= k).count());
            return self.mask(a + later);
        }
        0
    }

    fn mask(&self, segment: usize) -> ListMask {
        self.segments.get(segment).map_or(0, |s| s.1)
    }

    /// Number of segments (for tests and memory figures).
    #[cfg(test)]
    fn segments(&self) -> usize {
        self.segments.len()
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
