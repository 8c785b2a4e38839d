//! The reference implementation: every set held whole in `BTreeMap`s / `BTreeSet`s, no buffers,
//! no folding. [`ScanTap`](crate::ScanTap) is property-tested against it: equal below the
//! exact caps; past them the fast one estimates (`estimated`) within the HyperLogLog's error.
//! It also applies the key cap ([`ScanConfig::max_keys_per_hour`]) with the same slot accounting,
//! computed once on the whole hour.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::sets::{BITMAP_BYTES, HLL_BYTES};
use crate::tap::SLOT_BYTES;
use crate::{HorizontalRow, HourScans, Overflow, ScanConfig, VerticalRow};

/// One record as [`ScanTap::add`](crate::ScanTap::add) takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Hour key.
    pub hour: i64,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// The keys of one source on one path (IPv4 → IPv4, or any record with an IPv6 side).
#[derive(Default)]
struct Path {
    vert: BTreeMap<IpAddr, (u64, BTreeSet<u16>)>,
    horiz: BTreeMap<(u8, u16), (u64, BTreeSet<IpAddr>)>,
}

impl Path {
    fn slots(&self, cfg: &ScanConfig, addr_bytes: usize) -> usize {
        let port_cap = (cfg.exact_ports as usize).min(BITMAP_BYTES / 2);
        let dest_cap = (cfg.exact_dests as usize).min(HLL_BYTES / addr_bytes);
        let port_bytes =
            |n: usize| if n > port_cap { BITMAP_BYTES } else { (2 * n).min(BITMAP_BYTES) };
        let dest_bytes =
            |n: usize| if n > dest_cap { HLL_BYTES } else { (addr_bytes * n).min(HLL_BYTES) };
        self.vert.values().map(|(_, s)| 1 + port_bytes(s.len()) / SLOT_BYTES).sum::<usize>()
            + self.horiz.values().map(|(_, s)| 1 + dest_bytes(s.len()) / SLOT_BYTES).sum::<usize>()
    }
}

#[derive(Default)]
struct Source {
    flows: u64,
    v4: Path,
    wide: Path,
}

/// The rows of every hour of `records`, as [`ScanTap`](crate::ScanTap) gives them.
pub fn scans(records: &[Record], cfg: &ScanConfig) -> BTreeMap<i64, HourScans> {
    let mut hours: BTreeMap<i64, BTreeMap<IpAddr, Source>> = BTreeMap::new();
    for r in records {
        let s = hours.entry(r.hour).or_default().entry(r.src).or_default();
        s.flows += 1;
        let path = if r.src.is_ipv4() && r.dst.is_ipv4() { &mut s.v4 } else { &mut s.wide };
        let v = path.vert.entry(r.dst).or_default();
        v.0 += 1;
        v.1.insert(r.port);
        let h = path.horiz.entry((r.proto, r.port)).or_default();
        h.0 += 1;
        h.1.insert(r.dst);
    }
    let keep_ports = u64::from(cfg.keep_ports.min(cfg.vertical_min_ports));
    let keep_dests = u64::from(cfg.keep_dests.min(cfg.horizontal_min_dests));
    let wide_bytes = std::mem::size_of::<IpAddr>();
    hours
        .into_iter()
        .map(|(hour, sources)| {
            // The key cap: the longest prefix of sources (in address order) whose slots fit.
            let mut total = 0usize;
            let mut cutoff = None;
            for (&src, s) in &sources {
                total += s.v4.slots(cfg, 4) + s.wide.slots(cfg, wide_bytes);
                if total > cfg.max_keys_per_hour {
                    cutoff = Some(src);
                    break;
                }
            }
            let mut out = HourScans::default();
            for (src, s) in sources {
                if cutoff.is_some_and(|c| src >= c) {
                    out.overflow.dropped_flows += s.flows;
                    continue;
                }
                let is_wide = !s.wide.vert.is_empty();
                let dest_cap = (cfg.exact_dests as usize)
                    .min(HLL_BYTES / if is_wide { wide_bytes } else { 4 });
                let mut horiz = s.v4.horiz;
                for (k, (f, set)) in s.wide.horiz {
                    let e = horiz.entry(k).or_default();
                    e.0 += f;
                    e.1.extend(set);
                }
                for (dst, (flows, ports)) in s.v4.vert.into_iter().chain(s.wide.vert) {
                    if (ports.len() as u64) < keep_ports {
                        continue;
                    }
                    out.vertical.push(VerticalRow {
                        hour,
                        src_ip: src.to_string(),
                        dst_ip: dst.to_string(),
                        distinct_ports: ports.len() as u64,
                        low_ports: ports.range(..1024).count() as u64,
                        flows,
                        ports: ports.iter().take(cfg.sample).copied().collect(),
                        estimated: false,
                    });
                }
                let mut rows: Vec<HorizontalRow> = horiz
                    .into_iter()
                    .filter(|(_, (_, d))| d.len() as u64 >= keep_dests)
                    .map(|((proto, port), (flows, dests))| HorizontalRow {
                        hour,
                        src_ip: src.to_string(),
                        dst_port: port,
                        protocol: proto,
                        distinct_dests: dests.len() as u64,
                        flows,
                        dest_ips: dests.iter().take(cfg.sample).map(|d| d.to_string()).collect(),
                        estimated: dests.len() > dest_cap,
                    })
                    .collect();
                rows.sort_by_key(|r| (r.dst_port, r.protocol));
                out.horizontal.extend(rows);
            }
            out.overflow = Overflow {
                dropped_flows: out.overflow.dropped_flows,
                cutoff: cutoff.map(|c| c.to_string()),
            };
            (hour, out)
        })
        .collect()
}
