//! Per-worker aggregation of list matches into rows per (hour, internal address, list).

use crate::{ListMask, ThreatError, ThreatLists};
use ahash::AHashMap;
use flowspike_model::Hll;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

mod snapshot;
pub use snapshot::ThreatSnapshot;

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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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
            let mut h =
                self.hll.take().map_or_else(|| sketch_of(&self.remotes.items, None), |h| *h);
            match &other.hll {
                Some(o) => h.merge(o),
                None => other.remotes.items.iter().for_each(|&ip| h.insert(ip)),
            }
            self.hll = Some(Box::new(h));
        }
        self.remotes.merge(other.remotes, cfg.max_remote_ips);
        self.ports.merge(other.ports, cfg.max_ports);
    }

    /// The state a row was made from, as far as merging needs it (`row` is index `index` of
    /// the caller's rows, for errors).
    fn from_row(row: &MatchRow, index: usize) -> Result<RowState, ThreatError> {
        let bad = |column, message: String| ThreatError::Column { column, row: index, message };
        let remotes = row
            .remote_ips
            .iter()
            .map(|t| t.parse::<IpAddr>().map_err(|_| bad("remote_ips", format!("{t:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let hll = match &row.remote_hll {
            Some(b) => {
                Some(Box::new(Hll::from_bytes(b).map_err(|e| bad("remote_hll", e.to_string()))?))
            }
            None => None,
        };
        let mut remotes = Lowest { items: remotes, dropped: hll.is_some() };
        remotes.items.sort_unstable();
        let mut ports =
            Lowest { items: row.ports.clone(), dropped: row.truncated && hll.is_none() };
        ports.items.sort_unstable();
        let count = |v: u64, column| {
            (v <= row.flows).then_some(v).ok_or_else(|| bad(column, format!("{v} > flows")))
        };
        Ok(RowState {
            flows: row.flows,
            outbound: count(row.outbound_flows, "outbound_flows")?,
            accepted: count(row.accepted_flows, "accepted_flows")?,
            bytes: row.bytes,
            packets: row.packets,
            first: u64::try_from(row.first_seen).unwrap_or(0),
            last: u64::try_from(row.last_seen).unwrap_or(0),
            remotes,
            ports,
            hll,
        })
    }

    fn into_row(self, hour: i64, src: IpAddr, list: &str, cfg: &ThreatConfig) -> MatchRow {
        let remote_ip_count = match &self.hll {
            None => self.remotes.items.len() as u64,
            Some(h) => estimate_count(h, cfg.max_remote_ips, self.flows),
        };
        MatchRow {
            hour,
            src_ip: flowspike_model::ip_string(src),
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
/// Memory per row: 168 bytes of key and counters in the map's table (plus the hash table's
/// slack: up to twice that right after it grows), the remote addresses (17 bytes each, at most
/// [`ThreatConfig::max_remote_ips`]) and ports (2 bytes each, at most
/// [`ThreatConfig::max_ports`]) in their vectors, and a 16 KiB HyperLogLog once the row has seen
/// more remote addresses than its cap: with the defaults (16 and 32) at most 168 + 272 + 64 ≈
/// 0.5 KiB per row that stays under the caps and ≈ 16.9 KiB per row past the address cap. Rows are
/// made only by flows that matched a list: a /16 sweep from one host to listed addresses is one
/// row per list and hour.
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
            self.rows
                .entry((f.hour, f.internal, i))
                .or_insert_with(|| RowState::new(f))
                .add(f, &self.cfg);
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
        keyed.sort_unstable_by(|(a, _), (b, _)| (a.0, a.1, name(a.2)).cmp(&(b.0, b.1, name(b.2))));
        let mut out: BTreeMap<i64, Vec<MatchRow>> = BTreeMap::new();
        for ((hour, ip, i), state) in keyed {
            out.entry(hour).or_default().push(state.into_row(hour, ip, name(i), &self.cfg));
        }
        out
    }
}

/// Merges rows of the same (hour, internal address, list) into one, as one tap fed all their
/// flows would have made it (exact, the remote addresses' sketches included, when every row was
/// made with caps `cfg`): for the late records of an hour already written, or rows of two
/// partial runs. Output in [`ThreatTap::finish`]'s order; an undecodable row (address text,
/// sketch, a count above `flows`) is an error naming its index.
pub fn merge_match_rows(
    rows: &[MatchRow],
    cfg: &ThreatConfig,
) -> Result<Vec<MatchRow>, ThreatError> {
    let mut merged: BTreeMap<(i64, IpAddr, &str), RowState> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        let src = r.src_ip.parse::<IpAddr>().map_err(|_| ThreatError::Column {
            column: "src_ip",
            row: i,
            message: format!("{:?}", r.src_ip),
        })?;
        let state = RowState::from_row(r, i)?;
        match merged.entry((r.hour, src, r.list.as_str())) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().merge(state, cfg),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(state);
            }
        }
    }
    Ok(merged.into_iter().map(|((hour, src, list), s)| s.into_row(hour, src, list, cfg)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{naive, ThreatList};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn lists(specs: &[(&str, &str)]) -> Vec<ThreatList> {
        specs.iter().map(|(n, t)| ThreatList::parse(n, t.as_bytes()).unwrap()).collect()
    }

    /// A flow at `start` between `internal` and `remote:port`.
    fn flow(hour: i64, internal: &str, remote: &str, port: u16, start: u64) -> Flow {
        Flow {
            hour,
            internal: ip(internal),
            remote: ip(remote),
            outbound: true,
            internal_port: 40000,
            remote_port: port,
            protocol: 6,
            accepted: true,
            start,
            end: start + 10,
            bytes: 100,
            packets: 2,
        }
    }

    /// Feeds `flows` to one tap and checks its rows against the naive aggregation.
    fn check(
        lists: Vec<ThreatList>,
        flows: &[Flow],
        cfg: &ThreatConfig,
    ) -> BTreeMap<i64, Vec<MatchRow>> {
        let mut tap = ThreatTap::new(Arc::new(ThreatLists::new(lists.clone()).unwrap()), cfg);
        flows.iter().for_each(|f| tap.add(f));
        let rows = tap.finish();
        assert_eq!(rows, naive::naive_rows(&lists, flows, cfg));
        rows
    }

    #[test]
    fn a_flow_on_two_lists_makes_a_row_in_each() {
        let l = lists(&[("tor", "198.51.100.0/24\n"), ("custom", "198.51.100.7\n")]);
        let mut f = flow(3600, "10.0.0.5", "198.51.100.7", 443, 3700);
        let mut g = flow(3600, "10.0.0.5", "198.51.100.8", 9001, 3650);
        g.outbound = false;
        g.accepted = false;
        f.end = 3800;
        let rows = check(l, &[f, g], &ThreatConfig::default());
        let hour = &rows[&3600];
        assert_eq!(hour.len(), 2);
        // Sorted by list name within one internal address.
        let (custom, tor) = (&hour[0], &hour[1]);
        assert_eq!(
            (custom.list.as_str(), custom.flows, custom.ports.as_slice()),
            ("custom", 1, &[443][..])
        );
        assert_eq!(custom.remote_ips, ["198.51.100.7"]);
        assert_eq!(tor.list, "tor");
        assert_eq!((tor.flows, tor.outbound_flows, tor.inbound_flows), (2, 1, 1));
        assert_eq!((tor.accepted_flows, tor.rejected_flows), (1, 1));
        assert_eq!((tor.bytes, tor.packets, tor.first_seen, tor.last_seen), (200, 4, 3650, 3800));
        assert_eq!(tor.remote_ips, ["198.51.100.7", "198.51.100.8"]);
        assert_eq!(
            (tor.remote_ip_count, tor.ports.as_slice(), tor.truncated),
            (2, &[443, 9001][..], false)
        );
        assert_eq!(tor.src_ip, "10.0.0.5");
    }

    #[test]
    fn ipv6_flows_match_ipv6_entries_only() {
        let l = lists(&[("six", "2001:db8::/32\n"), ("four", "192.0.2.0/24\n")]);
        let flows = [
            flow(0, "fd00::1", "2001:db8::99", 22, 5),
            flow(0, "fd00::1", "::ffff:192.0.2.1", 22, 5),
            flow(0, "10.1.1.1", "2001:db8:ffff::1", 80, 5),
        ];
        let rows = check(l, &flows, &ThreatConfig::default());
        let got: Vec<(&str, &str, u64)> =
            rows[&0].iter().map(|r| (r.src_ip.as_str(), r.list.as_str(), r.flows)).collect();
        // IPv4 internal addresses sort before IPv6 ones.
        assert_eq!(got, [("10.1.1.1", "six", 1), ("fd00::1", "six", 1)]);
    }

    #[test]
    fn rows_sort_by_hour_then_internal_address_numerically() {
        let l = lists(&[("l", "203.0.113.0/24\n")]);
        let flows = [
            flow(7200, "10.0.0.10", "203.0.113.1", 1, 7200),
            flow(3600, "10.0.0.10", "203.0.113.1", 1, 3600),
            flow(3600, "10.0.0.9", "203.0.113.1", 1, 3600),
            flow(3600, "10.0.0.9", "8.8.8.8", 1, 3600),
        ];
        let rows = check(l, &flows, &ThreatConfig::default());
        let keys: Vec<(i64, &str)> =
            rows.values().flatten().map(|r| (r.hour, r.src_ip.as_str())).collect();
        assert_eq!(keys, [(3600, "10.0.0.9"), (3600, "10.0.0.10"), (7200, "10.0.0.10")]);
    }

    #[test]
    fn caps_keep_the_lowest_and_estimate_past_them() {
        let l = lists(&[("big", "100.64.0.0/10\n")]);
        let cfg = ThreatConfig { max_remote_ips: 4, max_ports: 3 };
        // 1000 distinct remotes in descending order, ports cycling over 10 values.
        let flows: Vec<Flow> = (0..1000u32)
            .rev()
            .map(|i| {
                let remote = std::net::Ipv4Addr::from(0x6440_0000 + i).to_string();
                flow(0, "10.0.0.1", &remote, (i % 10) as u16 + 1000, 100)
            })
            .collect();
        let rows = check(l, &flows, &cfg);
        let r = &rows[&0][0];
        assert_eq!(r.remote_ips, ["100.64.0.0", "100.64.0.1", "100.64.0.2", "100.64.0.3"]);
        assert_eq!(r.ports, [1000, 1001, 1002]);
        assert!(r.truncated && r.remote_hll.is_some());
        let err = (r.remote_ip_count as f64 - 1000.0).abs() / 1000.0;
        assert!(err < 3.0 * flowspike_model::hll::STANDARD_ERROR, "{}", r.remote_ip_count);
    }

    #[test]
    fn ports_alone_can_truncate() {
        let l = lists(&[("one", "192.0.2.1\n")]);
        let cfg = ThreatConfig { max_remote_ips: 4, max_ports: 2 };
        let flows: Vec<Flow> = (0..5).map(|p| flow(0, "10.0.0.1", "192.0.2.1", 5 - p, 0)).collect();
        let r = &check(l, &flows, &cfg)[&0][0];
        assert_eq!((r.ports.as_slice(), r.truncated, r.remote_ip_count), (&[1, 2][..], true, 1));
        assert!(r.remote_hll.is_none());
    }

    #[test]
    fn merge_equals_one_tap_and_maps_lists_by_name() {
        let l = lists(&[("a", "192.0.2.0/24\n"), ("b", "192.0.2.128/25\n")]);
        let cfg = ThreatConfig { max_remote_ips: 3, max_ports: 3 };
        let flows: Vec<Flow> = (0..300u16)
            .map(|i| flow(0, "10.0.0.1", &format!("192.0.2.{}", i % 256), i, 9))
            .collect();
        let lists_arc = Arc::new(ThreatLists::new(l.clone()).unwrap());
        let mut one = ThreatTap::new(lists_arc.clone(), &cfg);
        flows.iter().for_each(|f| one.add(f));
        // The second half through a tap whose lists are in the other order (after a reload).
        let swapped = Arc::new(ThreatLists::new(vec![l[1].clone(), l[0].clone()]).unwrap());
        let mut x = ThreatTap::new(lists_arc, &cfg);
        let mut y = ThreatTap::new(swapped, &cfg);
        flows[..150].iter().for_each(|f| x.add(f));
        flows[150..].iter().for_each(|f| y.add(f));
        x.merge(y);
        assert_eq!(x.finish(), one.finish());
    }

    #[test]
    fn misses_make_no_rows() {
        let mut tap = ThreatTap::new(
            Arc::new(ThreatLists::new(lists(&[("l", "192.0.2.0/24")])).unwrap()),
            &ThreatConfig::default(),
        );
        tap.add(&flow(0, "10.0.0.1", "192.0.3.0", 1, 0));
        assert!(tap.is_empty());
        assert!(tap.finish().is_empty());
    }

    #[test]
    fn merging_rows_refuses_what_no_tap_makes() {
        let l = lists(&[("l", "192.0.2.0/24\n")]);
        let cfg = ThreatConfig::default();
        let rows = check(l, &[flow(0, "10.0.0.1", "192.0.2.1", 1, 0)], &cfg)[&0].clone();
        assert_eq!(merge_match_rows(&rows, &cfg).unwrap(), rows);
        let broken = |f: fn(&mut MatchRow)| {
            let mut r = rows.clone();
            f(&mut r[0]);
            merge_match_rows(&r, &cfg).unwrap_err()
        };
        for (e, column) in [
            (broken(|r| r.src_ip = "host".into()), "src_ip"),
            (broken(|r| r.remote_ips.push("x".into())), "remote_ips"),
            (broken(|r| r.remote_hll = Some(vec![1, 14])), "remote_hll"),
            (broken(|r| r.outbound_flows = 2), "outbound_flows"),
        ] {
            assert!(
                matches!(e, ThreatError::Column { column: c, row: 0, .. } if c == column),
                "{e}"
            );
        }
    }

    /// One tap per worker thread: it must move between threads.
    #[test]
    fn tap_is_send_and_lists_are_shared() {
        fn send<T: Send>() {}
        fn shared<T: Send + Sync>() {}
        send::<ThreatTap>();
        shared::<ThreatLists>();
        shared::<crate::Reloader>();
    }

    /// The per-row figure stated in [`ThreatTap`]'s docs: key and state in the map.
    #[test]
    fn row_state_size() {
        let entry = std::mem::size_of::<(Key, RowState)>();
        assert!(entry <= 168, "{entry} bytes: update the figure in the docs");
        assert_eq!(std::mem::size_of::<IpAddr>(), 17);
    }
}
