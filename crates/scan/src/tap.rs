//! [`ScanTap`]: the per-worker accumulator. Records are appended to the buffer of their (hour,
//! source) group; a group is folded into per-key sets only when it grows past `compact_at`, when
//! its hour passes the key cap, or in [`ScanTap::finish`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use rayon::prelude::*;

use crate::sets::{Addr, DestSet, PortSet, BITMAP_BYTES, HLL_BYTES};
use crate::{HorizontalRow, HourScans, Overflow, ScanConfig, VerticalRow};

mod snapshot;
pub(crate) use snapshot::bitmap_serde;
pub use snapshot::ScanSnapshot;

/// A hash map with `ahash`'s hasher (the keys are addresses, not attacker-chosen text worth
/// SipHash's cost; ahash is still randomly seeded).
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Bytes of one key slot of [`ScanConfig::max_keys_per_hour`].
pub(crate) const SLOT_BYTES: usize = 64;

/// The settings a group needs, derived once from [`ScanConfig`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    keep_ports: u64,
    keep_dests: u64,
    /// Ports kept as a vector before the bitmap (at most 4,096: the bitmap's size).
    port_cap: usize,
    /// IPv4 destinations kept exactly before the sketch.
    dest_cap_v4: usize,
    /// Other destinations kept exactly before the sketch.
    dest_cap_wide: usize,
    sample: usize,
    compact_at: usize,
    max_keys: usize,
    /// Largest number of slots one buffered record can add once folded (see `ScanTap::add`).
    slots_per_record: usize,
    /// IPv4 records an hour holds unsorted before they go to their groups ([`HourState::flat`]).
    flat_cap: usize,
}

impl Limits {
    fn new(cfg: &ScanConfig) -> Limits {
        let port_cap = (cfg.exact_ports as usize).min(BITMAP_BYTES / 2);
        let dest_cap = |bytes: usize| (cfg.exact_dests as usize).min(HLL_BYTES / bytes);
        let (dest_cap_v4, dest_cap_wide) = (dest_cap(u32::BYTES), dest_cap(IpAddr::BYTES));
        // A record adds at most one key or one element to a vertical and to a horizontal key: at
        // most one slot each, plus the jump from a vector to the bitmap or sketch when the exact
        // caps are set below the sizes where both cost the same.
        let jump =
            |cap_bytes: usize, max: usize| max.saturating_sub(cap_bytes).div_ceil(SLOT_BYTES);
        let jump_h = jump(dest_cap_v4 * u32::BYTES, HLL_BYTES)
            .max(jump(dest_cap_wide * IpAddr::BYTES, HLL_BYTES));
        let slots_per_record = 2 + jump(port_cap * 2, BITMAP_BYTES) + jump_h;
        // Well below the key cap's check (`HourState::check` counts buffered records at their
        // largest cost), and at most 8 MiB an hour.
        // (Small caps — tests — flush at small sizes, so every path runs.)
        let flat_cap = (cfg.max_keys_per_hour / slots_per_record / 4)
            .min(1 << 19)
            .max(cfg.compact_at.min(1024));
        Limits {
            // A row that alerts is always kept.
            keep_ports: u64::from(cfg.keep_ports.min(cfg.vertical_min_ports)),
            keep_dests: u64::from(cfg.keep_dests.min(cfg.horizontal_min_dests)),
            port_cap,
            dest_cap_v4,
            dest_cap_wide,
            sample: cfg.sample,
            compact_at: cfg.compact_at.max(1),
            max_keys: cfg.max_keys_per_hour,
            slots_per_record,
            flat_cap,
        }
    }

    fn dest_cap<A: Addr>(&self) -> usize {
        if A::BYTES == u32::BYTES {
            self.dest_cap_v4
        } else {
            self.dest_cap_wide
        }
    }
}

/// Slots one key takes: one, plus one per 64 bytes its set is charged.
fn slots(charged_bytes: usize) -> usize {
    1 + charged_bytes / SLOT_BYTES
}

/// A vertical key's state: (hour, source) are the group's, the destination is here.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
struct VKey<A: Addr> {
    dst: A,
    flows: u64,
    ports: PortSet,
}

/// A horizontal key's state: (hour, source) are the group's.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
struct HKey<A: Addr> {
    proto: u8,
    port: u16,
    flows: u64,
    dests: DestSet<A>,
}

/// Everything one (hour, source) holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
struct Group<A: Addr> {
    /// Records not yet folded: (destination, port, protocol), packed.
    raw: Vec<A::Raw>,
    /// Every record of the group, folded or not.
    flows: u64,
    /// Sorted by destination.
    vert: Vec<VKey<A>>,
    /// Sorted by (protocol, port).
    horiz: Vec<HKey<A>>,
    /// Key slots of `vert` and `horiz` (see [`ScanConfig::max_keys_per_hour`]).
    slots: usize,
}

impl<A: Addr> Default for Group<A> {
    fn default() -> Self {
        Group { raw: Vec::new(), flows: 0, vert: Vec::new(), horiz: Vec::new(), slots: 0 }
    }
}

/// The records whose key could have `keep` records: counts per bucket of `hash` (the high bits;
/// about one bucket per record), then keeps the records of buckets with at least `keep`.
/// Written into `out`; `counts` is scratch.
fn select<R: Copy>(
    raw: &[R],
    hash: impl Fn(R) -> u64,
    keep: u64,
    counts: &mut Vec<u32>,
    out: &mut Vec<R>,
) {
    out.clear();
    if keep <= 1 {
        out.extend_from_slice(raw);
        return;
    }
    let bits = raw.len().next_power_of_two().clamp(64, 1 << 16).trailing_zeros();
    let bucket = |r| (hash(r) >> (64 - bits)) as usize;
    counts.clear();
    counts.resize(1 << bits, 0);
    for &r in raw {
        if let Some(c) = counts.get_mut(bucket(r)) {
            *c += 1;
        }
    }
    out.extend(
        raw.iter()
            .copied()
            .filter(|&r| counts.get(bucket(r)).is_some_and(|&c| u64::from(c) >= keep)),
    );
}

/// Sorts `records`, then calls `f(key, records, distinct items)` for each run of one key, where
/// `split` gives a record's (key, item): the sort order makes a run's items sorted, so distinct
/// items are the changes from one to the next. `items` is scratch.
fn for_each_run<R: Copy + Ord, K: PartialEq + Copy, T: PartialEq + Copy>(
    records: &mut [R],
    split: impl Fn(R) -> (K, T),
    items: &mut Vec<T>,
    mut f: impl FnMut(K, u64, &[T]),
) {
    records.sort_unstable();
    let mut i = 0;
    while let Some(&first) = records.get(i) {
        let (key, _) = split(first);
        let start = i;
        items.clear();
        while let Some(&r) = records.get(i) {
            let (k, t) = split(r);
            if k != key {
                break;
            }
            if items.last() != Some(&t) {
                items.push(t);
            }
            i += 1;
        }
        f(key, (i - start) as u64, items);
    }
}

/// Buffers a fold reuses from group to group (one per worker thread in `finish`): without them,
/// allocation was the largest cost of folding many small groups.
struct Scratch<A: Addr> {
    selected: Vec<A::Raw>,
    counts: Vec<u32>,
    ports: Vec<u16>,
    dests: Vec<A>,
}

impl<A: Addr> Default for Scratch<A> {
    fn default() -> Self {
        Scratch { selected: Vec::new(), counts: Vec::new(), ports: Vec::new(), dests: Vec::new() }
    }
}

/// Merge-join of two vectors sorted by a unique key.
fn merge_keyed<T, K: Ord>(
    a: Vec<T>,
    b: Vec<T>,
    key: impl Fn(&T) -> K,
    mut combine: impl FnMut(&mut T, T),
) -> Vec<T> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut bi = b.into_iter().peekable();
    for mut x in a {
        while let Some(y) = bi.next_if(|y| key(y) < key(&x)) {
            out.push(y);
        }
        if let Some(y) = bi.next_if(|y| key(y) == key(&x)) {
            combine(&mut x, y);
        }
        out.push(x);
    }
    out.extend(bi);
    out
}

impl<A: Addr> Group<A> {
    /// Folds the buffered records into the keys. `last`: no record will follow (after every
    /// merge, in `finish`), so a new key with fewer records than its keep threshold (which then
    /// cannot reach it) is left out instead of stored.
    fn compact(&mut self, lim: &Limits, last: bool, scratch: &mut Scratch<A>) {
        if self.raw.is_empty() {
            return;
        }
        let Scratch { selected, counts, ports, dests } = scratch;
        let mut raw = std::mem::take(&mut self.raw);
        let dest_cap = lim.dest_cap::<A>();

        // In the last fold of a group with no folded keys, a key with fewer records than its
        // keep threshold makes no row. Records are counted per hash bucket of their key (a
        // bucket's count is at least each of its keys' count, so this drops no key that could
        // make a row) and only the records of buckets that reach the threshold are sorted.
        // Ordinary traffic spreads a source over many destinations: most skip the vertical sort.
        let filter = last && self.vert.is_empty();
        if filter {
            select(&raw, |r| A::unpack(r).0.spread(), lim.keep_ports, counts, selected);
        }
        let v = if filter { &mut *selected } else { &mut raw };
        let mut new_v = Vec::new();
        let old = &self.vert;
        let dst_port = |r| {
            let (d, p, _) = A::unpack(r);
            (d, p)
        };
        for_each_run(v, dst_port, ports, |dst, flows, ports| {
            if last && flows < lim.keep_ports && old.binary_search_by_key(&dst, |k| k.dst).is_err()
            {
                return;
            }
            let ports = PortSet::from_sorted(ports.to_vec(), lim.port_cap);
            new_v.push(VKey { dst, flows, ports });
        });
        self.vert = merge_keyed(
            std::mem::take(&mut self.vert),
            new_v,
            |k| k.dst,
            |a, b| {
                a.flows += b.flows;
                a.ports.merge(b.ports, lim.port_cap);
            },
        );

        for r in raw.iter_mut() {
            *r = A::to_horizontal(*r);
        }
        let filter = last && self.horiz.is_empty();
        if filter {
            let key = |r| {
                let (_, p, pr) = A::unpack_horizontal(r);
                ((u64::from(pr) << 16) | u64::from(p)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            };
            select(&raw, key, lim.keep_dests, counts, selected);
        }
        let h = if filter { &mut *selected } else { &mut raw };
        let mut new_h = Vec::new();
        let old = &self.horiz;
        let key_dst = |r| {
            let (d, p, pr) = A::unpack_horizontal(r);
            ((pr, p), d)
        };
        for_each_run(h, key_dst, dests, |(proto, port), flows, dests| {
            if last
                && flows < lim.keep_dests
                && old.binary_search_by_key(&(proto, port), |k| (k.proto, k.port)).is_err()
            {
                return;
            }
            let dests = DestSet::from_sorted(dests.to_vec(), dest_cap, lim.sample);
            new_h.push(HKey { proto, port, flows, dests });
        });
        self.horiz = merge_keyed(
            std::mem::take(&mut self.horiz),
            new_h,
            |k| (k.proto, k.port),
            |a, b| {
                a.flows += b.flows;
                a.dests.merge(b.dests, dest_cap, lim.sample);
            },
        );

        // Keep a small buffer for the next records; a large one would outlive its use.
        if raw.capacity() <= 4096 {
            raw.clear();
            self.raw = raw;
        }
        self.slots = self.vert.iter().map(|k| slots(k.ports.charged_bytes())).sum::<usize>()
            + self.horiz.iter().map(|k| slots(k.dests.charged_bytes())).sum::<usize>();
    }

    /// Adds another partial of the same (hour, source).
    fn merge(&mut self, other: Group<A>, lim: &Limits) {
        let dest_cap = lim.dest_cap::<A>();
        self.raw.extend_from_slice(&other.raw);
        self.flows += other.flows;
        self.vert = merge_keyed(
            std::mem::take(&mut self.vert),
            other.vert,
            |k| k.dst,
            |a, b| {
                a.flows += b.flows;
                a.ports.merge(b.ports, lim.port_cap);
            },
        );
        self.horiz = merge_keyed(
            std::mem::take(&mut self.horiz),
            other.horiz,
            |k| (k.proto, k.port),
            |a, b| {
                a.flows += b.flows;
                a.dests.merge(b.dests, dest_cap, lim.sample);
            },
        );
        self.slots = self.vert.iter().map(|k| slots(k.ports.charged_bytes())).sum::<usize>()
            + self.horiz.iter().map(|k| slots(k.dests.charged_bytes())).sum::<usize>();
    }

    /// Heap and inline bytes held.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.raw.capacity() * std::mem::size_of::<A::Raw>()
            + self.vert.capacity() * std::mem::size_of::<VKey<A>>()
            + self.vert.iter().map(|k| k.ports.heap_bytes()).sum::<usize>()
            + self.horiz.capacity() * std::mem::size_of::<HKey<A>>()
            + self.horiz.iter().map(|k| k.dests.heap_bytes()).sum::<usize>()
    }

    /// The rows of a group folded with `last` set.
    fn rows(&self, hour: i64, src: IpAddr, lim: &Limits) -> (Vec<VerticalRow>, Vec<HorizontalRow>) {
        let src_ip = src.to_string();
        let vertical = self
            .vert
            .iter()
            .filter(|k| k.ports.len() >= lim.keep_ports)
            .map(|k| VerticalRow {
                hour,
                src_ip: src_ip.clone(),
                dst_ip: k.dst.text(),
                distinct_ports: k.ports.len(),
                low_ports: k.ports.low(),
                flows: k.flows,
                ports: k.ports.sample(lim.sample),
                estimated: false,
            })
            .collect();
        let horizontal = self
            .horiz
            .iter()
            .filter_map(|k| {
                let (n, estimated) = k.dests.count();
                (n >= lim.keep_dests).then(|| HorizontalRow {
                    hour,
                    src_ip: src_ip.clone(),
                    dst_port: k.port,
                    protocol: k.proto,
                    distinct_dests: n,
                    flows: k.flows,
                    dest_ips: k.dests.sample(lim.sample).into_iter().map(A::text).collect(),
                    estimated,
                })
            })
            .collect();
        (vertical, horizontal)
    }
}

impl Group<u32> {
    /// The same group on the general path (for an IPv4 source that also reached IPv6
    /// destinations: both halves must be one group for its horizontal keys to be exact).
    fn widen(self, lim: &Limits) -> Group<IpAddr> {
        let wide = |a: u32| a.ip();
        let dest_cap = lim.dest_cap::<IpAddr>();
        Group {
            raw: self
                .raw
                .into_iter()
                .map(|r| {
                    let (d, p, pr) = u32::unpack(r);
                    IpAddr::pack(wide(d), p, pr)
                })
                .collect(),
            flows: self.flows,
            vert: self
                .vert
                .into_iter()
                .map(|k| VKey { dst: wide(k.dst), flows: k.flows, ports: k.ports })
                .collect(),
            horiz: self
                .horiz
                .into_iter()
                .map(|k| HKey {
                    proto: k.proto,
                    port: k.port,
                    flows: k.flows,
                    dests: match k.dests {
                        DestSet::Small(v) => DestSet::from_sorted(
                            v.into_iter().map(wide).collect(),
                            dest_cap,
                            lim.sample,
                        ),
                        DestSet::Sketch(h, s) => {
                            DestSet::Sketch(h, s.into_iter().map(wide).collect())
                        }
                    },
                })
                .collect(),
            slots: self.slots,
        }
    }
}

/// What [`HourState::flush`] does with the buffered records of sources that have fewer than
/// the smallest keep threshold there and nothing elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// Everything goes to its group (before the key cap counts every source's keys).
    All,
    /// They stay buffered (more records may follow).
    KeepSmall,
    /// They are left out: no record follows, and they cannot make a row.
    DropSmall,
}

/// The bucket of IPv4 source `s` among `n` (a power of two) for [`HourState::flush`]'s counts.
#[inline]
fn flat_bucket(s: u32, n: usize) -> usize {
    ((u64::from(s).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize) & (n - 1)
}

/// One hour of a tap.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct HourState {
    hour: i64,
    /// IPv4 source and destination: the fast path.
    v4: Map<u32, Group<u32>>,
    /// IPv4 records not yet in their group, in arrival order: the source and the packed record.
    /// Appending costs no lookup; most sources of an hour never reach a row's threshold, and the
    /// last flush ([`Flush::DropSmall`]) leaves their records out after one counting pass, so
    /// their groups are never made (a group lookup per record was the tap's largest cost).
    flat: Vec<(u32, u64)>,
    /// Everything else (an IPv6 address on either side).
    wide: Map<IpAddr, Group<IpAddr>>,
    /// Buffered (unfolded) records in all groups.
    pending: usize,
    /// Key slots of the folded keys in all groups.
    slots: usize,
    /// Every source at or above this address is dropped (see [`Overflow`]).
    cutoff: Option<IpAddr>,
    /// Records of dropped sources.
    dropped_flows: u64,
}

impl HourState {
    fn new(hour: i64) -> HourState {
        HourState {
            hour,
            v4: Map::default(),
            flat: Vec::new(),
            wide: Map::default(),
            pending: 0,
            slots: 0,
            cutoff: None,
            dropped_flows: 0,
        }
    }

    /// An upper bound of the slots the hour holds once every buffered record is folded.
    fn slots_bound(&self, lim: &Limits) -> usize {
        self.slots.saturating_add(self.pending.saturating_mul(lim.slots_per_record))
    }

    /// Folds every group and applies the key cap: past it, the sources with the lowest addresses
    /// whose keys fit are kept whole and every other source is dropped, now and for the rest of
    /// the tap's life. Slots only grow as records arrive, so a cutoff found on part of the
    /// records is never below the one found on all of them: the sources kept in the end are the
    /// same whatever the order of records, merges and compactions.
    #[inline(never)]
    fn enforce(&mut self, lim: &Limits) {
        self.flush(lim, Flush::All);
        for g in self.v4.values_mut() {
            g.compact(lim, false, &mut Scratch::default());
        }
        for g in self.wide.values_mut() {
            g.compact(lim, false, &mut Scratch::default());
        }
        self.pending = 0;
        self.recount();
        if self.slots <= lim.max_keys {
            return;
        }
        let mut per_src: Vec<(IpAddr, usize)> = self
            .v4
            .iter()
            .map(|(&s, g)| (s.ip(), g.slots))
            .chain(self.wide.iter().map(|(&s, g)| (s, g.slots)))
            .collect();
        per_src.sort_unstable();
        let mut total = 0usize;
        let mut cutoff = None;
        for (s, n) in per_src {
            total += n;
            if total > lim.max_keys {
                cutoff = Some(s);
                break;
            }
        }
        if let Some(c) = cutoff {
            self.cutoff = Some(self.cutoff.map_or(c, |old| old.min(c)));
            self.drop_from_cutoff();
        }
    }

    /// Drops every group at or above the cutoff, counting its records.
    fn drop_from_cutoff(&mut self) {
        let Some(c) = self.cutoff else { return };
        let mut dropped = 0;
        let before = self.flat.len();
        self.flat.retain(|&(s, _)| s.ip() < c);
        dropped += (before - self.flat.len()) as u64;
        self.v4.retain(|&s, g| {
            let keep = s.ip() < c;
            if !keep {
                dropped += g.flows;
            }
            keep
        });
        self.wide.retain(|&s, g| {
            let keep = s < c;
            if !keep {
                dropped += g.flows;
            }
            keep
        });
        self.dropped_flows += dropped;
        self.recount();
    }

    fn recount(&mut self) {
        self.pending = self.flat.len()
            + self.v4.values().map(|g| g.raw.len()).sum::<usize>()
            + self.wide.values().map(|g| g.raw.len()).sum::<usize>();
        self.slots = self.v4.values().map(|g| g.slots).sum::<usize>()
            + self.wide.values().map(|g| g.slots).sum::<usize>();
    }

    /// Applies the key cap when the hour may be past it (with room to spare so that a full
    /// hour is not folded at every record).
    #[inline]
    fn check(&mut self, lim: &Limits) {
        if self.slots_bound(lim) > lim.max_keys.saturating_add(lim.max_keys / 4) {
            self.enforce(lim);
        }
    }

    fn merge(&mut self, other: HourState, lim: &Limits) {
        self.cutoff = match (self.cutoff, other.cutoff) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.dropped_flows += other.dropped_flows;
        let c = self.cutoff;
        self.flat.extend_from_slice(&other.flat);
        for (s, g) in other.v4 {
            if c.is_some_and(|c| s.ip() >= c) {
                self.dropped_flows += g.flows;
            } else {
                self.v4.entry(s).or_default().merge(g, lim);
            }
        }
        for (s, g) in other.wide {
            if c.is_some_and(|c| s >= c) {
                self.dropped_flows += g.flows;
            } else {
                self.wide.entry(s).or_default().merge(g, lim);
            }
        }
        self.drop_from_cutoff();
        if self.flat.len() >= lim.flat_cap {
            self.flush(lim, Flush::KeepSmall);
        }
        self.recount();
        self.check(lim);
    }

    /// Hands the buffered IPv4 records to their groups (see [`Flush`]), folding a group whose
    /// buffer fills.
    #[inline(never)]
    fn flush(&mut self, lim: &Limits, how: Flush) {
        if self.flat.is_empty() {
            return;
        }
        let flat = std::mem::take(&mut self.flat);
        let min_keep = lim.keep_ports.min(lim.keep_dests);
        let mut counts = Vec::new();
        let small = |counts: &Vec<u32>, v4: &Map<u32, Group<u32>>, wide: &Map<IpAddr, _>, s| {
            // A bucket's count is at least its every source's: a source below the threshold in
            // it has fewer records here; with no group (nor an IPv6 half) it has no others.
            u64::from(counts.get(flat_bucket(s, counts.len())).copied().unwrap_or(0)) < min_keep
                && !v4.contains_key(&s)
                && !wide.contains_key(&s.ip())
        };
        if how != Flush::All && min_keep > 1 {
            counts.resize(flat.len().next_power_of_two().clamp(64, 1 << 16), 0u32);
            let n = counts.len();
            for &(s, _) in &flat {
                if let Some(c) = counts.get_mut(flat_bucket(s, n)) {
                    *c += 1;
                }
            }
        }
        let mut rest = Vec::new();
        for &(s, r) in &flat {
            if !counts.is_empty() && small(&counts, &self.v4, &self.wide, s) {
                if how == Flush::KeepSmall {
                    rest.push((s, r));
                }
                continue;
            }
            // `pending` and `slots` are recounted below.
            push(&mut self.v4, s, r, lim);
        }
        self.flat = rest;
        // Records kept back must leave room for the next ones, or every append would flush.
        if self.flat.len() > lim.flat_cap / 2 {
            self.flush(lim, Flush::All);
        } else {
            self.recount();
        }
    }

    fn bytes(&self) -> usize {
        let map = |n: usize, entry: usize| n * (entry + 1);
        std::mem::size_of::<Self>()
            + map(self.v4.capacity(), std::mem::size_of::<(u32, Group<u32>)>())
            + self.flat.capacity() * std::mem::size_of::<(u32, u64)>()
            + map(self.wide.capacity(), std::mem::size_of::<(IpAddr, Group<IpAddr>)>())
            + self.v4.values().map(|g| g.bytes() - std::mem::size_of::<Group<u32>>()).sum::<usize>()
            + self
                .wide
                .values()
                .map(|g| g.bytes() - std::mem::size_of::<Group<IpAddr>>())
                .sum::<usize>()
    }

    /// The hour's rows, sorted; consumes the hour.
    fn finish(mut self, lim: &Limits) -> HourScans {
        if self.slots_bound(lim) > lim.max_keys {
            self.enforce(lim);
        }
        // Under the cap nothing is dropped, so records that cannot make a row may be left out
        // (`enforce` above folded everything first, as the cap counts every source's keys).
        self.flush(lim, Flush::DropSmall);
        // An IPv4 source with IPv6 destinations: one group on the general path.
        let mixed: Vec<IpAddr> = self.wide.keys().filter(|s| s.is_ipv4()).copied().collect();
        for s in mixed {
            let IpAddr::V4(a) = s else { continue };
            if let Some(g) = self.v4.remove(&u32::from(a)) {
                let wide = g.widen(lim);
                self.wide.entry(s).or_default().merge(wide, lim);
            }
        }
        let hour = self.hour;
        let v4: Vec<(u32, Group<u32>)> = self.v4.into_iter().collect();
        let wide: Vec<(IpAddr, Group<IpAddr>)> = self.wide.into_iter().collect();
        let min_keep = lim.keep_ports.min(lim.keep_dests);
        let mut groups: Vec<(IpAddr, Vec<VerticalRow>, Vec<HorizontalRow>)> = v4
            .into_par_iter()
            .filter(|(_, g)| g.flows >= min_keep)
            .map_init(Scratch::default, |scratch, (s, mut g)| {
                g.compact(lim, true, scratch);
                let (v, h) = g.rows(hour, s.ip(), lim);
                (s.ip(), v, h)
            })
            .chain(wide.into_par_iter().filter(|(_, g)| g.flows >= min_keep).map_init(
                Scratch::default,
                |scratch, (s, mut g)| {
                    g.compact(lim, true, scratch);
                    let (v, h) = g.rows(hour, s, lim);
                    (s, v, h)
                },
            ))
            .filter(|(_, v, h)| !v.is_empty() || !h.is_empty())
            .collect();
        // A group's rows come sorted by destination and by (protocol, port); each source is one
        // group: sorting the groups by source sorts the rows.
        groups.sort_unstable_by_key(|g| g.0);
        let mut vertical = Vec::new();
        let mut horizontal = Vec::new();
        for (_, v, mut h) in groups {
            vertical.extend(v);
            h.sort_by_key(|r| (r.dst_port, r.protocol));
            horizontal.extend(h);
        }
        HourScans {
            vertical,
            horizontal,
            overflow: Overflow {
                dropped_flows: self.dropped_flows,
                cutoff: self.cutoff.map(|c| c.to_string()),
            },
        }
    }
}

/// The per-worker accumulator of the port-scan aggregates.
///
/// One per worker thread (it is `Send`; nothing is shared, nothing locked); partials of parallel
/// workers are combined with [`ScanTap::merge`], then [`ScanTap::finish`] makes the rows. The
/// result does not depend on how the records were split among taps nor in which order taps were
/// merged (property-tested against [`crate::naive`]).
///
/// ```
/// use flowspike_scan::{ScanConfig, ScanTap};
/// let cfg = ScanConfig { keep_ports: 3, ..ScanConfig::default() };
/// let mut tap = ScanTap::new(&cfg);
/// for port in [22, 80, 443] {
///     tap.add(0, "10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), port, 6);
/// }
/// let hours = tap.finish();
/// assert_eq!(hours[&0].vertical[0].distinct_ports, 3);
/// ```
#[derive(Debug, Clone)]
pub struct ScanTap {
    lim: Limits,
    /// Hours in order of first record (few: records arrive nearly in time order).
    hours: Vec<HourState>,
    /// Index of the hour of the last record.
    last: usize,
}

impl ScanTap {
    /// An empty tap.
    pub fn new(cfg: &ScanConfig) -> ScanTap {
        ScanTap { lim: Limits::new(cfg), hours: Vec::new(), last: 0 }
    }

    #[inline]
    fn hour_index(&mut self, hour: i64) -> usize {
        if let Some(h) = self.hours.get(self.last) {
            if h.hour == hour {
                return self.last;
            }
        }
        self.other_hour(hour)
    }

    /// [`ScanTap::hour_index`] of an hour other than the last record's (rare: out of line).
    #[cold]
    #[inline(never)]
    fn other_hour(&mut self, hour: i64) -> usize {
        let i = match self.hours.iter().position(|h| h.hour == hour) {
            Some(i) => i,
            None => {
                self.hours.push(HourState::new(hour));
                self.hours.len() - 1
            }
        };
        self.last = i;
        i
    }

    /// Adds one record: `hour` (any key for the hour; the history uses its start in Unix
    /// seconds), the source (the caller has checked it is internal), the destination, its port
    /// and the IP protocol number.
    ///
    /// Cost: a hash lookup of the (hour, source) group, in a map of the sources of one hour, and
    /// an 8-byte append (IPv4) to its buffer; the sorting and counting happen in bulk.
    #[inline]
    pub fn add(&mut self, hour: i64, src: IpAddr, dst: IpAddr, dst_port: u16, protocol: u8) {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => self.add_v4(hour, s, d, dst_port, protocol),
            _ => self.add_wide(hour, src, dst, dst_port, protocol),
        }
    }

    /// [`ScanTap::add`] with an IPv6 address on either side: out of line, so that `add` stays
    /// small enough to inline where its callers know the addresses are IPv4.
    #[inline(never)]
    fn add_wide(&mut self, hour: i64, src: IpAddr, dst: IpAddr, dst_port: u16, protocol: u8) {
        let i = self.hour_index(hour);
        let (lim, hours) = (&self.lim, &mut self.hours);
        let Some(h) = hours.get_mut(i) else { return };
        if let Some(c) = h.cutoff {
            if src >= c {
                h.dropped_flows += 1;
                return;
            }
        }
        let folded = push(&mut h.wide, src, IpAddr::pack(dst, dst_port, protocol), lim);
        match folded {
            None => h.pending += 1,
            Some((pending, slots_before, slots_after)) => {
                h.pending = h.pending + 1 - pending;
                h.slots = h.slots + slots_after - slots_before;
            }
        }
        h.check(lim);
    }

    /// [`ScanTap::add`] of an IPv4 source and destination (nearly every record).
    #[inline]
    fn add_v4(&mut self, hour: i64, src: Ipv4Addr, dst: Ipv4Addr, dst_port: u16, protocol: u8) {
        let i = self.hour_index(hour);
        let (lim, hours) = (&self.lim, &mut self.hours);
        let Some(h) = hours.get_mut(i) else { return };
        if let Some(c) = h.cutoff {
            if IpAddr::V4(src) >= c {
                h.dropped_flows += 1;
                return;
            }
        }
        h.flat.push((u32::from(src), u32::pack(u32::from(dst), dst_port, protocol)));
        h.pending += 1;
        if h.flat.len() >= lim.flat_cap {
            h.flush(lim, Flush::KeepSmall);
        }
        h.check(lim);
    }

    /// Adds the records of another tap (a partial of a parallel worker).
    pub fn merge(&mut self, other: ScanTap) {
        let lim = self.lim;
        for h in other.hours {
            match self.hours.iter_mut().find(|x| x.hour == h.hour) {
                Some(mine) => mine.merge(h, &lim),
                None => {
                    let mut h = h;
                    h.check(&lim);
                    self.hours.push(h);
                }
            }
        }
    }

    /// The rows of every hour, each hour's sorted by (source, destination) and (source, port,
    /// protocol), addresses in `IpAddr` order. Groups are folded in parallel (rayon).
    pub fn finish(self) -> BTreeMap<i64, HourScans> {
        let lim = self.lim;
        self.hours.into_par_iter().map(|h| (h.hour, h.finish(&lim))).collect()
    }

    /// Bytes held (an estimate from sizes and capacities, allocator overhead left out).
    pub fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.hours.capacity() * std::mem::size_of::<HourState>()
            + self.hours.iter().map(|h| h.bytes() - std::mem::size_of::<HourState>()).sum::<usize>()
    }
}

/// Appends a record (packed by [`Addr::pack`]) to its group, folding the group when its buffer
/// is full. Returns, when it folded, the records folded and the group's slots before and after.
#[inline]
fn push<A: Addr>(
    map: &mut Map<A, Group<A>>,
    src: A,
    record: A::Raw,
    lim: &Limits,
) -> Option<(usize, usize, usize)> {
    let g = map.entry(src).or_default();
    if g.raw.capacity() == 0 {
        // Skips the first doublings (4, 8, 16 records): each is an allocation and a copy.
        g.raw.reserve(32);
    }
    g.raw.push(record);
    g.flows += 1;
    if g.raw.len() < lim.compact_at {
        return None;
    }
    let (pending, before) = (g.raw.len(), g.slots);
    g.compact(lim, false, &mut Scratch::default());
    Some((pending, before, g.slots))
}
