//! Per-worker aggregation of list matches into rows per (hour, internal address, list).

use crate::{ListMask, ThreatLists};
use ahash::AHashMap;
use flowspike_model::Hll;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// One flow record as the tap needs it: which side is internal is the caller's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The record's hour (seconds, a multiple of 3600).
    pub hour: i64,
    /// The internal side's address (the row's `src_ip`).
    pub internal: IpAddr,
    /// The other side's address, looked up in the lists.
    pub remote: IpAddr,
    /// The internal side is the record's source (else its destination).
    pub outbound: bool,
    /// The internal side's port.
    pub internal_port: u16,
    /// The remote side's port (collected in `ports`).
    pub remote_port: u16,
    /// IANA protocol number.
    pub protocol: u8,
    /// `action = ACCEPT`.
    pub accepted: bool,
    /// `start` (Unix seconds).
    pub start: u64,
    /// `end` (Unix seconds).
    pub end: u64,
    /// Bytes.
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
}

/// Caps that bound a row's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreatConfig {
    /// Remote addresses kept per row (the numerically lowest); past it `remote_ip_count` is a
    /// HyperLogLog estimate and the row is `truncated`.
    pub max_remote_ips: usize,
    /// Remote ports kept per row (the lowest); past it the row is `truncated`.
    pub max_ports: usize,
}

impl Default for ThreatConfig {
    /// 16 addresses and 32 ports: a row then holds at most about 0.5 KiB, plus 16 KiB once its
    /// addresses pass the cap (see [`ThreatTap`]).
    fn default() -> Self {
        ThreatConfig { max_remote_ips: 16, max_ports: 32 }
    }
}

/// One row of the threat-match table: the flows of one hour between one internal address and
/// addresses on one list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchRow {
    /// Hour start (Unix seconds).
    pub hour: i64,
    /// The internal address.
    pub src_ip: String,
    /// The list's name.
    pub list: String,
    /// Flows in all.
    pub flows: u64,
    /// Flows with the internal address as source.
    pub outbound_flows: u64,
    /// Flows with the internal address as destination.
    pub inbound_flows: u64,
    /// Flows accepted.
    pub accepted_flows: u64,
    /// Flows rejected.
    pub rejected_flows: u64,
    /// Bytes of all the flows.
    pub bytes: u64,
    /// Packets of all the flows.
    pub packets: u64,
    /// Earliest `start` (Unix seconds).
    pub first_seen: i64,
    /// Latest `end` (Unix seconds).
    pub last_seen: i64,
    /// Remote addresses on the list, numerically ascending (IPv4 before IPv6), at most
    /// [`ThreatConfig::max_remote_ips`]: the lowest ones.
    pub remote_ips: Vec<String>,
    /// Distinct remote addresses: exact up to the cap, then a HyperLogLog estimate (clamped to
    /// at least cap + 1 and at most `flows`).
    pub remote_ip_count: u64,
    /// Remote ports, ascending, at most [`ThreatConfig::max_ports`]: the lowest ones.
    pub ports: Vec<u16>,
    /// More remote addresses or ports were seen than the row keeps.
    pub truncated: bool,
    /// The remote addresses' sketch ([`Hll::to_bytes`]) when there were more than the cap, so
    /// rows of the same key can still be merged; `None` otherwise.
    pub remote_hll: Option<Vec<u8>>,
}

/// A sorted set of at most `cap` values: the lowest seen, and whether any was dropped.
#[derive(Debug, Clone)]
struct Lowest<T> {
    items: Vec<T>,
    dropped: bool,
}

impl<T> Default for Lowest<T> {
    fn default() -> Self {
        Lowest { items: Vec::new(), dropped: false }
    }
}

impl<T: Ord + Copy> Lowest<T> {
    /// Whether `x` is new and the set full (inserting it drops a value).
    fn overflows(&self, x: T, cap: usize) -> bool {
        self.items.len() >= cap && self.items.binary_search(&x).is_err()
    }

    fn insert(&mut self, x: T, cap: usize) {
        if let Err(pos) = self.items.binary_search(&x) {
            if self.items.len() < cap {
                self.items.insert(pos, x);
            } else {
                self.dropped = true;
                if pos < self.items.len() {
                    self.items.insert(pos, x);
                    self.items.pop();
                }
            }
        }
    }

    fn merge(&mut self, other: Lowest<T>, cap: usize) {
        self.dropped |= other.dropped;
        for x in other.items {
            self.insert(x, cap);
        }
    }
}

/// The running aggregate of one (hour, internal address, list).
#[derive(Debug, Clone, Default)]
struct RowState {
    flows: u64,
    outbound: u64,
    accepted: u64,
    bytes: u64,
    packets: u64,
    first: u64,
    last: u64,
    remotes: Lowest<IpAddr>,
    ports: Lowest<u16>,
    /// Every remote address, from the moment the row passed its cap.
    hll: Option<Box<Hll>>,
}

impl RowState {
    fn new(f: &Flow) -> RowState {
        RowState { first: f.start, last: f.end, ..RowState::default() }
    }

    fn add(&mut self, f: &Flow, cfg: &ThreatConfig) {
        self.flows += 1;
        self.outbound += u64::from(f.outbound);
        self.accepted += u64::from(f.accepted);
        self.bytes = self.bytes.saturating_add(f.bytes);
        self.packets = self.packets.saturating_add(f.packets);
        self.first = self.first.min(f.start);
        self.last = self.last.max(f.end);
        if let Some(h) = &mut self.hll {
            h.insert(f.remote);
        } else if self.remotes.overflows(f.remote, cfg.max_remote_ips) {
            self.hll = Some(Box::new(sketch_of(&self.remotes.items, Some(f.remote))));
        }
        self.remotes.insert(f.remote, cfg.max_remote_ips);
        self.ports.insert(f.remote_port, cfg.max_ports);
    }

    fn merge(&mut self, other: RowState, cfg: &ThreatConfig) {
        self.flows += other.flows;
        self.outbound += other.outbound;
        self.accepted += other.accepted;
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.packets = self.packets.saturating_add(other.packets);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        // The union of both sketches is the sketch of all addresses (HLL union is exact), so the
        // result does not depend on how flows were split between workers.
        let need = self.hll.is_some() || other.hll.is_some() || {
            let mut union = self.remotes.items.clone();
            union.extend_from_slice(&other.remotes.items);
            union.sort_unstable();
            union.dedup();
            union.len() > cfg.max_remote_ips
        };
        if need {
            let mut h = self.hll.take().map_or_else(|| sketch_of(&self.remotes.items, None), |h| *h);
            match &other.hll {
                Some(o) => h.merge(o),
                None => other.remotes.items.iter().for_each(|&ip| h.insert(ip)),
            }
            self.hll = Some(Box::new(h));
        }
        self.remotes.merge(other.remotes, cfg.max_remote_ips);
        self.ports.merge(other.ports, cfg.max_ports);
    }

    fn into_row(self, hour: i64, src: IpAddr, list: &str, cfg: &ThreatConfig) -> MatchRow {
        let remote_ip_count = match &self.hll {
            None => self.remotes.items.len() as u64,
            Some(h) => estimate_count(h, cfg.max_remote_ips, self.flows),
        };
        MatchRow {
            hour,
            src_ip: src.to_string(),
            list: list.to_owned(),
            flows: self.flows,
            outbound_flows: self.outbound,
            inbound_flows: self.flows - self.outbound,
            accepted_flows: self.accepted,
            rejected_flows: self.flows - self.accepted,
            bytes: self.bytes,
            packets: self.packets,
            first_seen: i64::try_from(self.first).unwrap_or(i64::MAX),
            last_seen: i64::try_from(self.last).unwrap_or(i64::MAX),
            remote_ips: self.remotes.items.iter().map(ToString::to_string).collect(),
            remote_ip_count,
            ports: self.ports.items,
            truncated: self.hll.is_some() || self.remotes.dropped || self.ports.dropped,
            remote_hll: self.hll.map(|h| h.to_bytes()),
        }
    }
}

/// The sketch of `items` and `extra`.
fn sketch_of(items: &[IpAddr], extra: Option<IpAddr>) -> Hll {
    let mut h = Hll::new();
    items.iter().chain(extra.as_ref()).for_each(|&ip| h.insert(ip));
    h
}

/// A truncated row's distinct remote count: the sketch's estimate, clamped to what is known for
/// sure (more than `cap` distinct addresses were seen, and no more than one per flow).
pub(crate) fn estimate_count(h: &Hll, cap: usize, flows: u64) -> u64 {
    let lower = cap as u64 + 1;
    (h.estimate().round() as u64).clamp(lower, flows.max(lower))
}

/// Key of a row: hour, internal address, index into the tap's list names.
type Key = (i64, IpAddr, usize);

/// One worker's matches, aggregated per (hour, internal address, list).
///
/// [`ThreatTap::add`] costs one [`ThreatLists::matches`] when the remote address is on no list
/// (almost always); a match updates one row per list it is on.
///
/// Memory per row: about 160 bytes of counters and key in the map, the remote addresses
/// (17 bytes each, at most [`ThreatConfig::max_remote_ips`]) and ports (2 bytes each, at most
/// [`ThreatConfig::max_ports`]) in their vectors, and a 16 KiB HyperLogLog once the row has seen
/// more remote addresses than its cap: with the defaults at most ~0.5 KiB per untruncated row and
/// ~17 KiB per truncated one. Rows are created only by flows that matched a list.
#[derive(Debug, Clone)]
pub struct ThreatTap {
    lists: Arc<ThreatLists>,
    cfg: ThreatConfig,
    /// Names of the lists rows refer to: the tap's lists first (bit `i` is name `i`), then those
    /// of merged taps built on other lists (a reload between them).
    names: Vec<String>,
    rows: AHashMap<Key, RowState>,
}

impl ThreatTap {
    /// An empty tap matching against `lists`.
    pub fn new(lists: Arc<ThreatLists>, cfg: &ThreatConfig) -> ThreatTap {
        let names = lists.names().to_vec();
        ThreatTap { lists, cfg: *cfg, names, rows: AHashMap::new() }
    }

    /// Adds one flow with exactly one side internal (the caller decides which; `outbound`: the
    /// internal side is the source). Returns at once when `f.remote` is on no list.
    #[inline]
    pub fn add(&mut self, f: &Flow) {
        let mask = self.lists.matches(f.remote);
        if mask != 0 {
            self.add_matched(f, mask);
        }
    }

    /// Adds a flow whose remote address is on the lists of `mask`.
    #[inline(never)]
    fn add_matched(&mut self, f: &Flow, mut mask: ListMask) {
        while mask != 0 {
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            self.rows.entry((f.hour, f.internal, i)).or_insert_with(|| RowState::new(f)).add(
                f,
                &self.cfg,
            );
        }
    }

    /// Adds another worker's tap. Exact: the result is what one tap fed both taps' flows would
    /// hold. Taps built on different lists (a reload between them) merge by list name.
    pub fn merge(&mut self, other: ThreatTap) {
        let map: Vec<usize> = other
            .names
            .iter()
            .map(|n| match self.names.iter().position(|m| m == n) {
                Some(i) => i,
                None => {
                    self.names.push(n.clone());
                    self.names.len() - 1
                }
            })
            .collect();
        for ((hour, ip, i), state) in other.rows {
            let i = map.get(i).copied().unwrap_or(i);
            match self.rows.entry((hour, ip, i)) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    e.get_mut().merge(state, &self.cfg)
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(state);
                }
            }
        }
    }

    /// Rows held so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no flow matched.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The lists this tap matches against.
    pub fn lists(&self) -> &Arc<ThreatLists> {
        &self.lists
    }

    /// The rows by hour, each hour's rows sorted by internal address (numerically: IPv4 before
    /// IPv6, then by value — not by text) and then list name.
    pub fn finish(self) -> BTreeMap<i64, Vec<MatchRow>> {
        let mut keyed: Vec<(Key, RowState)> = self.rows.into_iter().collect();
        let names = &self.names;
        let name = |i: usize| names.get(i).map_or("", String::as_str);
        keyed.sort_unstable_by(|(a, _), (b, _)| {
            (a.0, a.1, name(a.2)).cmp(&(b.0, b.1, name(b.2)))
        });
        let mut out: BTreeMap<i64, Vec<MatchRow>> = BTreeMap::new();
        for ((hour, ip, i), state) in keyed {
            out.entry(hour).or_default().push(state.into_row(hour, ip, name(i), &self.cfg));
        }
        out
    }
}
