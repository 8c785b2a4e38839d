//! [`Aggregate`]: the running aggregate of one (hour, source) key, and how it becomes rows
//! ([`rows_of_maps`]) or columns ([`columns_of_maps`]); rows back into aggregates
//! ([`Aggregate::from_row`], [`merge_rows`]).

use crate::columns::Columns;
use crate::destset::{Dests, Sketch};
use crate::hll::{Hll, HllError};
use crate::interfaces::Interfaces;
use crate::{AggregateRow, DEFAULT_INTERFACE_CAP, HOUR};
use ahash::AHashMap;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The caps that bound the memory of one key (the counter's `CounterConfig` holds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest destination set kept exactly; past it a sketch ([`Hll`]) and the lowest
    /// `dest_cap` addresses.
    pub dest_cap: usize,
    /// Largest interface id list kept (the lowest ids).
    pub interface_cap: usize,
}

/// A row that cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// `src_ip` is not an IP address.
    #[error("row hour={hour} src_ip={src_ip:?}: src_ip is not an ip address")]
    SrcIp {
        /// The row's hour.
        hour: i64,
        /// The row's source.
        src_ip: String,
    },
    /// An entry of `dest_ips` is not an IP address.
    #[error("row hour={hour} src_ip={src_ip}: dest_ips entry {value:?} is not an ip address")]
    DestIp {
        /// The row's hour.
        hour: i64,
        /// The row's source.
        src_ip: String,
        /// The bad entry.
        value: String,
    },
    /// `hour` is not a multiple of 3600.
    #[error("row hour={hour} src_ip={src_ip}: hour is not a multiple of 3600")]
    Hour {
        /// The row's hour.
        hour: i64,
        /// The row's source.
        src_ip: String,
    },
    /// `dest_hll` does not decode.
    #[error("row hour={hour} src_ip={src_ip}: dest_hll: {source}")]
    Hll {
        /// The row's hour.
        hour: i64,
        /// The row's source.
        src_ip: String,
        /// The cause.
        source: HllError,
    },
}

/// The running aggregate of one (hour, source) key: counts, the destination set (exact up to
/// the cap, then the lowest addresses and a sketch) and the interface ids. Nearly every key needs
/// no heap allocation (a few IPv4 destinations and one interface id are kept inline).
#[derive(Debug, Clone)]
pub struct Aggregate {
    blocked_count: u64,
    bytes: u64,
    packets: u64,
    dests: Dests,
    interfaces: Interfaces,
}

impl Default for Aggregate {
    #[inline]
    fn default() -> Self {
        Aggregate::new()
    }
}

impl Aggregate {
    /// An aggregate of no record.
    #[inline]
    pub fn new() -> Aggregate {
        Aggregate {
            blocked_count: 0,
            bytes: 0,
            packets: 0,
            dests: Dests::new(),
            interfaces: Interfaces::None,
        }
    }

    /// Adds one counted record to `dst`, of `bytes` and `packets`, seen on `interface_id`.
    /// Allocates only for a new destination or a new interface id past the inline ones.
    #[inline]
    pub fn add(
        &mut self,
        dst: IpAddr,
        bytes: u64,
        packets: u64,
        interface_id: Option<&[u8]>,
        limits: Limits,
    ) {
        self.blocked_count = self.blocked_count.saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
        self.packets = self.packets.saturating_add(packets);
        self.dests.insert(dst, limits.dest_cap);
        if let Some(id) = interface_id {
            self.interfaces.add(id, limits.interface_cap);
        }
    }

    /// The number of counted records.
    #[inline]
    pub fn blocked_count(&self) -> u64 {
        self.blocked_count
    }

    /// Adds `other` (union of the destination sets, caps re-applied, sketches max-merged).
    pub fn merge(&mut self, other: Aggregate, limits: Limits) {
        self.blocked_count = self.blocked_count.saturating_add(other.blocked_count);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.packets = self.packets.saturating_add(other.packets);
        self.dests.merge(other.dests, limits.dest_cap);
        other.interfaces.for_each(|id| self.interfaces.add(id, limits.interface_cap));
    }

    /// The aggregate of `row` and its source address, within `limits`.
    ///
    /// A row that is not truncated contributes its `dest_ips` as an exact set. A truncated row
    /// contributes its `dest_ips` as the lowest entries, its `dest_hll` registers (or, when absent,
    /// a sketch built from `dest_ips`) and its `unique_dest_count` as a lower bound.
    pub fn from_row(row: &AggregateRow, limits: Limits) -> Result<(IpAddr, Aggregate), RowError> {
        if row.hour % HOUR != 0 {
            return Err(RowError::Hour { hour: row.hour, src_ip: row.src_ip.clone() });
        }
        let mut dests = Vec::with_capacity(row.dest_ips.len());
        for d in &row.dest_ips {
            dests.push(d.parse::<IpAddr>().map_err(|_| RowError::DestIp {
                hour: row.hour,
                src_ip: row.src_ip.clone(),
                value: d.clone(),
            })?);
        }
        let dests = if row.dest_ips_truncated {
            let mut s = Sketch::from_set(dests.iter(), limits.dest_cap);
            if let Some(bytes) = &row.dest_hll {
                let h = Hll::from_bytes(bytes).map_err(|source| RowError::Hll {
                    hour: row.hour,
                    src_ip: row.src_ip.clone(),
                    source,
                })?;
                s.hll.merge(&h);
            }
            s.floor = row.unique_dest_count;
            Dests::Sketch(Box::new(s))
        } else {
            let mut d = Dests::new();
            for ip in dests {
                d.insert(ip, limits.dest_cap);
            }
            d
        };
        let mut agg = Aggregate {
            blocked_count: row.blocked_count,
            bytes: row.bytes,
            packets: row.packets,
            dests,
            interfaces: Interfaces::None,
        };
        for id in &row.interface_ids {
            agg.interfaces.add(id.as_bytes(), limits.interface_cap);
        }
        let src: IpAddr = row
            .src_ip
            .parse()
            .map_err(|_| RowError::SrcIp { hour: row.hour, src_ip: row.src_ip.clone() })?;
        Ok((src, agg))
    }

    /// The distinct destination count, the kept destinations in address order, and the sketch's
    /// registers when past the cap.
    fn sorted_dests(&self) -> (u64, Vec<IpAddr>, Option<Vec<u8>>) {
        let (unique, mut dests, hll) = match &self.dests {
            Dests::Sketch(s) => {
                (s.count(), s.lowest.iter().copied().collect(), Some(s.hll.to_bytes()))
            }
            exact => {
                let mut v = Vec::with_capacity(exact.exact_len());
                exact.for_each_exact(|ip| v.push(ip));
                (v.len() as u64, v, None)
            }
        };
        dests.sort_unstable();
        (unique, dests, hll)
    }

    /// The row of this aggregate as key (`hour`, `src`). `dest_ips` are in address order (IPv4
    /// before IPv6, numeric), which is what "the lowest entries" means past the cap;
    /// `interface_ids` in byte order.
    pub fn to_row(&self, hour: i64, src: IpAddr) -> AggregateRow {
        let (unique, dests, hll) = self.sorted_dests();
        AggregateRow {
            hour,
            src_ip: ip_string(src),
            blocked_count: self.blocked_count,
            unique_dest_count: unique,
            dest_ips: dests.iter().map(|d| ip_string(*d)).collect(),
            interface_ids: {
                let mut ids = Vec::with_capacity(self.interfaces.len());
                // Interface ids are ASCII: `from_utf8` checks them much faster than the lossy
                // conversion walks them; anything else is still converted lossily.
                self.interfaces.for_each(|b| {
                    ids.push(match std::str::from_utf8(b) {
                        Ok(s) => s.to_owned(),
                        Err(_) => String::from_utf8_lossy(b).into_owned(),
                    })
                });
                ids
            },
            bytes: self.bytes,
            packets: self.packets,
            dest_ips_truncated: hll.is_some(),
            dest_hll: hll,
        }
    }

    /// Appends the columns of one row: `hour`, `src`, and this aggregate. The same values as
    /// [`Aggregate::to_row`] (tested), written into the columns' buffers.
    fn push_columns(&self, hour: i64, src: IpAddr, c: &mut Columns) {
        c.hour.push(hour);
        with_ip_text(src, |t| c.src_ip.push(t));
        c.blocked_count.push(self.blocked_count);
        match &self.dests {
            // Nearly every key: a few IPv4 addresses, sorted on the stack (numeric order of
            // the `u32`s is address order).
            Dests::V4 { len, addrs } => {
                let mut sorted = *addrs;
                let sorted = &mut sorted[..usize::from(*len)];
                sorted.sort_unstable();
                c.unique_dest_count.push(sorted.len() as u64);
                for &a in sorted.iter() {
                    with_ip_text(IpAddr::V4(a.into()), |t| c.dest_ips.push_item(t));
                }
                c.dest_ips_truncated.push(false);
                c.dest_hll.push(None);
            }
            _ => {
                let (unique, dests, hll) = self.sorted_dests();
                c.unique_dest_count.push(unique);
                for d in dests {
                    with_ip_text(d, |t| c.dest_ips.push_item(t));
                }
                c.dest_ips_truncated.push(hll.is_some());
                c.dest_hll.push(hll);
            }
        }
        c.dest_ips.end_list();
        self.interfaces.for_each(|b| match std::str::from_utf8(b) {
            Ok(s) => c.interface_ids.push_item(s),
            Err(_) => c.interface_ids.push_item(&String::from_utf8_lossy(b)),
        });
        c.interface_ids.end_list();
        c.bytes.push(self.bytes);
        c.packets.push(self.packets);
    }
}

/// Calls `f` with the text form of `ip` ([`ip_string`]), made on the stack for IPv4.
#[inline]
fn with_ip_text<R>(ip: IpAddr, f: impl FnOnce(&str) -> R) -> R {
    match ip {
        IpAddr::V4(v4) => {
            let (buf, n) = v4_text(v4);
            f(std::str::from_utf8(&buf[..n]).unwrap_or_default())
        }
        IpAddr::V6(_) => f(&ip.to_string()),
    }
}

/// `ip.to_string()`, without the formatting machinery for IPv4 (the common case; rows hold
/// hundreds of thousands of addresses).
pub fn ip_string(ip: IpAddr) -> String {
    with_ip_text(ip, str::to_owned)
}

/// The dotted-decimal text of `v4` (at most 15 bytes) and its length; the rest of the buffer is
/// zero.
fn v4_text(v4: std::net::Ipv4Addr) -> ([u8; 16], usize) {
    let mut buf = [0u8; 16];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    (buf, n)
}

/// The first 16 bytes of `ip`'s text form ([`ip_string`]) as a big-endian number, zero-padded:
/// two addresses whose keys differ compare like their texts, so rows are sorted by `src_ip` as
/// text without making and comparing strings. Only texts of 16 bytes or more (long IPv6 forms) can
/// share a key; [`rows_of_maps`] compares those by their texts.
fn text_key(ip: IpAddr) -> u128 {
    let buf = match ip {
        IpAddr::V4(v4) => v4_text(v4).0,
        IpAddr::V6(_) => {
            let text = ip.to_string();
            let n = text.len().min(16);
            let mut buf = [0u8; 16];
            buf[..n].copy_from_slice(&text.as_bytes()[..n]);
            buf
        }
    };
    u128::from_be_bytes(buf)
}

/// Merges rows into one row per `(hour, src_ip)` with destination cap `cap`, sorted by
/// `(hour, src_ip)`. See [`Aggregate::from_row`] for how truncated rows merge.
///
/// Fails on a row whose `src_ip`/`dest_ips` are not addresses, whose hour is not a multiple of
/// 3600, or whose `dest_hll` does not decode.
pub fn merge_rows(
    rows: impl IntoIterator<Item = AggregateRow>,
    cap: usize,
) -> Result<Vec<AggregateRow>, RowError> {
    // Rows are merged as they are: they were capped (or not) when they were counted.
    let limits = Limits { dest_cap: cap, interface_cap: DEFAULT_INTERFACE_CAP };
    let mut hours: BTreeMap<i64, AHashMap<IpAddr, Aggregate>> = BTreeMap::new();
    for row in rows {
        let (src, agg) = Aggregate::from_row(&row, limits)?;
        match hours.entry(row.hour).or_default().entry(src) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(agg, limits),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut fresh = Aggregate::new();
                fresh.merge(agg, limits); // re-applies the caps
                e.insert(fresh);
            }
        }
    }
    let hours: Vec<Vec<AggregateRow>> = hours
        .into_iter()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(hour, sources)| rows_of_maps(hour, &[sources]))
        .collect();
    Ok(hours.into_iter().flatten().collect())
}

/// The rows of `hour` from the maps of its sources (a source is in one map at most: one map, or
/// the shards of a sharded counter), sorted by `src_ip` as text. The sources are sorted by
/// [`text_key`] (plain numbers, with references to the aggregates), then the rows are built in
/// that order straight into a vector of the final size, in parallel (on the current rayon pool):
/// sorting finished rows by their strings moved and compared hundreds of bytes per row, and
/// collecting an unknown number of rows grows vectors by doubling, whose fresh memory cost more
/// than building the rows on a machine where fresh pages are expensive (a VM).
pub fn rows_of_maps(hour: i64, maps: &[AHashMap<IpAddr, Aggregate>]) -> Vec<AggregateRow> {
    sorted_sources(maps).par_iter().map(|(_, ip, agg)| agg.to_row(hour, **ip)).collect()
}

/// The sources of `maps` with their aggregates, sorted by `src_ip` as text ([`text_key`], then
/// the texts where keys tie).
fn sorted_sources(maps: &[AHashMap<IpAddr, Aggregate>]) -> Vec<(u128, &IpAddr, &Aggregate)> {
    let mut order: Vec<(u128, &IpAddr, &Aggregate)> =
        Vec::with_capacity(maps.iter().map(|m| m.len()).sum());
    for m in maps {
        order.extend(m.iter().map(|(ip, agg)| (text_key(*ip), ip, agg)));
    }
    order.par_sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| ip_string(*a.1).cmp(&ip_string(*b.1)))
    });
    order
}

/// The rows of `hour` from the maps of its sources as [`Columns`], in [`rows_of_maps`]'s order;
/// built sequentially (a replay builds hours in parallel), each buffer sized once for the hour.
pub fn columns_of_maps(hour: i64, maps: &[AHashMap<IpAddr, Aggregate>]) -> Columns {
    let order = sorted_sources(maps);
    let (dests, ids) = order.iter().fold((0, 0), |(d, i), (_, _, agg)| {
        let kept = match &agg.dests {
            Dests::Sketch(s) => s.lowest.len(),
            exact => exact.exact_len(),
        };
        (d + kept, i + agg.interfaces.len())
    });
    // Room for IPv4 texts (at most 15 bytes) and `eni-` ids (21); longer ones grow the buffers.
    let mut c =
        Columns::with_capacity(order.len(), order.len() * 15, (dests, dests * 15), (ids, ids * 21));
    for (_, ip, agg) in &order {
        agg.push_columns(hour, **ip, &mut c);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv6Addr;

    #[test]
    fn ip_string_matches_display_for_every_octet() {
        for a in 0..=255u8 {
            for ip in [[a, 0, 9, 10], [10, a, 99, 100], [255, 1, a, 0], [192, 168, 200, a]] {
                let ip = IpAddr::from(ip);
                assert_eq!(ip_string(ip), ip.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(ip_string(v6), "2001:db8::1");
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|x| IpAddr::V4(x.into())),
            // Short and long IPv6 texts, many sharing their first 16 characters.
            (0u16..3, any::<u16>(), 0u16..2).prop_map(|(a, b, c)| {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xaaaa, 0xbbbb, a, 0, c, b))
            }),
            any::<u128>().prop_map(|x| IpAddr::V6(Ipv6Addr::from(x))),
        ]
    }

    proptest! {
        /// Different keys order addresses exactly as their texts; equal keys only for texts of 16
        /// bytes or more.
        #[test]
        fn text_key_orders_like_the_text(a in any_ip(), b in any_ip()) {
            let (ka, kb) = (text_key(a), text_key(b));
            let (ta, tb) = (a.to_string(), b.to_string());
            if ka == kb {
                prop_assert!(ta == tb || (ta.len() >= 16 && tb.len() >= 16), "{} {}", ta, tb);
            } else {
                prop_assert_eq!(ka.cmp(&kb), ta.cmp(&tb), "{} {}", ta, tb);
            }
        }
    }
}
