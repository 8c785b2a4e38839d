//! The exact reference: matching by `ipnet::IpNet::contains` over every entry of every list, and
//! aggregation in `BTreeMap`s and `BTreeSet`s holding everything. Slow and unbounded; the fast
//! path ([`crate::ThreatLists`], [`crate::ThreatTap`]) is property-tested to agree with it.

use crate::{Flow, ListMask, MatchRow, ThreatConfig, ThreatList};
use flowspike_model::Hll;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The lists `ip` is on: bit `i` iff some network of `lists[i]` contains it.
pub fn naive_matches(lists: &[ThreatList], ip: IpAddr) -> ListMask {
    let mut mask = 0;
    for (i, l) in lists.iter().enumerate() {
        if l.networks().iter().any(|n| n.contains(&ip)) {
            mask |= 1 << i;
        }
    }
    mask
}

/// Everything one (hour, internal address, list) saw.
#[derive(Default)]
struct All {
    flows: u64,
    outbound: u64,
    inbound: u64,
    accepted: u64,
    rejected: u64,
    bytes: u64,
    packets: u64,
    first: Option<u64>,
    last: Option<u64>,
    remotes: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
}

/// The rows [`crate::ThreatTap`] must make of `flows`: every set kept whole, then cut to the
/// caps of `cfg` at the end (the lowest values kept; the count of a cut address set is the
/// HyperLogLog estimate of the whole set, clamped to `[cap + 1, flows]`).
pub fn naive_rows(
    lists: &[ThreatList],
    flows: &[Flow],
    cfg: &ThreatConfig,
) -> BTreeMap<i64, Vec<MatchRow>> {
    let mut all: BTreeMap<(i64, IpAddr, String), All> = BTreeMap::new();
    for f in flows {
        for l in lists {
            if !l.networks().iter().any(|n| n.contains(&f.remote)) {
                continue;
            }
            let a = all.entry((f.hour, f.internal, l.name().to_owned())).or_default();
            a.flows += 1;
            // Each of the four counted on its own, not derived from `flows`.
            *if f.outbound { &mut a.outbound } else { &mut a.inbound } += 1;
            *if f.accepted { &mut a.accepted } else { &mut a.rejected } += 1;
            a.bytes = a.bytes.saturating_add(f.bytes);
            a.packets = a.packets.saturating_add(f.packets);
            a.first = Some(a.first.map_or(f.start, |x| x.min(f.start)));
            a.last = Some(a.last.map_or(f.end, |x| x.max(f.end)));
            a.remotes.insert(f.remote);
            a.ports.insert(f.remote_port);
        }
    }
    let mut out: BTreeMap<i64, Vec<MatchRow>> = BTreeMap::new();
    for ((hour, ip, list), a) in all {
        let cut = a.remotes.len() > cfg.max_remote_ips;
        let hll = cut.then(|| {
            let mut h = Hll::new();
            a.remotes.iter().for_each(|&r| h.insert(r));
            h
        });
        let remote_ip_count = match &hll {
            None => a.remotes.len() as u64,
            Some(h) => {
                let lower = cfg.max_remote_ips as u64 + 1;
                let est = h.estimate().round() as u64;
                est.max(lower).min(a.flows.max(lower))
            }
        };
        out.entry(hour).or_default().push(MatchRow {
            hour,
            src_ip: ip.to_string(),
            list,
            flows: a.flows,
            outbound_flows: a.outbound,
            inbound_flows: a.inbound,
            accepted_flows: a.accepted,
            rejected_flows: a.rejected,
            bytes: a.bytes,
            packets: a.packets,
            first_seen: a.first.map_or(0, |x| i64::try_from(x).unwrap_or(i64::MAX)),
            last_seen: a.last.map_or(0, |x| i64::try_from(x).unwrap_or(i64::MAX)),
            remote_ips: a
                .remotes
                .iter()
                .take(cfg.max_remote_ips)
                .map(ToString::to_string)
                .collect(),
            remote_ip_count,
            ports: a.ports.iter().take(cfg.max_ports).copied().collect(),
            truncated: cut || a.ports.len() > cfg.max_ports,
            remote_hll: hll.map(|h| h.to_bytes()),
        });
    }
    out
}
