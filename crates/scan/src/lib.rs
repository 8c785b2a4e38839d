//! Hourly port-scan aggregates from flow records (issue #32): the two tables behind
//!
//! - the **vertical port scan** (ESCU "Internal Vertical Port Scan"): one source probing at least
//!   500 distinct destination ports on one destination in an hour, at least 20 of them below 1024;
//! - the **horizontal port scan / port sweep** (ESCU "Internal Horizontal Port Scan", GuardDuty
//!   Impact:EC2/PortSweep): one source reaching at least 250 distinct destination addresses on
//!   the same (port, protocol) in an hour.
//!
//! The caller decides which records count (log-status OK, any action, an internal source) and
//! feeds them to a [`ScanTap`] per worker; [`ScanTap::finish`] gives the rows of each hour,
//! [`VerticalRow::alerts`] / [`HorizontalRow::alerts`] say which cross the thresholds, and
//! [`vertical_batch`] / [`horizontal_batch`] make the Parquet tables' record batches.
//!
//! # How it is fast
//! An IPv4 record is a 16-byte append (source, then destination, port and protocol packed in 8
//! bytes) to its hour's flat buffer: no lookup. When the buffer fills (at most 512 Ki records)
//! and in [`ScanTap::finish`], one counting pass over it (sources hashed into at most 65,536
//! buckets) finds the sources that may reach a row; only their records go to their (hour,
//! source) group — a map of the few busy sources, small enough to stay in cache — the others
//! stay buffered (or, in `finish`, are left out: they cannot make a row). Other records (an
//! IPv6 address) go straight to their group, 28 bytes each. No per-(source, destination) map is
//! touched per record: in `finish` each group's buffer is sorted twice, by (destination, port)
//! and by (protocol, port, destination), and counted in one linear pass each, groups and hours
//! in parallel. Exact pre-filters skip the work that cannot make a row: a source with fewer
//! records than the smaller keep threshold, a group likewise, and a key with fewer records than
//! its keep threshold (all only after every partial is merged).
//!
//! Measured: see docs/detections.md *Speed* (the whole replay with and without this tap).
//!
//! # Bounded memory
//! Per key, a fixed largest size:
//! - a vertical key (hour, source, destination) holds its ports as a sorted vector (2 bytes a
//!   port) up to [`ScanConfig::exact_ports`], then as a 65,536-bit bitmap: at most 8 KiB, and
//!   always exact (the bitmap is half a HyperLogLog and also counts the ports below 1024);
//! - a horizontal key (hour, source, port, protocol) holds its destinations as a sorted vector up
//!   to [`ScanConfig::exact_dests`] (at most as many as fit 16 KiB), then as a
//!   `flowspike_model::Hll` (16 KiB) plus the [`ScanConfig::sample`] lowest addresses; the count
//!   is then an estimate (standard error 0.81 %) and the row says `estimated`;
//! - plus about 40 bytes of key (`size_of` of the key structs) and, before a group is folded,
//!   8 bytes per buffered IPv4 record in its group (28 otherwise), at most
//!   [`ScanConfig::compact_at`] records per group; before that, 16 bytes per IPv4 record in the
//!   hour's flat buffer (at most 512 Ki records, 8 MiB, and fewer with a small key cap).
//!
//! Per hour, [`ScanConfig::max_keys_per_hour`] caps the *key slots*: a key takes one slot plus
//! one per 64 bytes of its set (a bitmap key 129 slots, a sketched one 257). Vectors are kept
//! within twice their length, so a slot holds at most about 200 bytes with its share of the
//! group and map overhead, as [`ScanTap::approx_bytes`] counts them (allocator overhead left
//! out; tested on a /16 sweep and on all ports of a host): **1 GiB holds about 5 million slots**.
//! An hour is folded and cut when its slots, counting each buffered record as the 3 slots it
//! can become, pass 5/4 of the cap: at the default 4 M slots an hour stays near 1 GiB at worst.
//! Ordinary traffic never folds before `finish` (8 or 16 bytes per buffered record). Past the cap, the
//! sources with the lowest addresses whose slots fit are kept whole; every other source of that
//! hour is dropped for good and its records counted in [`Overflow`]. Slots only grow as records
//! arrive, so the sources kept are the same whatever the split of records among taps and the
//! order of merges. Hours are kept until [`ScanTap::finish`]: the bound is per hour held.

pub mod naive;
mod sets;
mod table;
mod tap;

pub use table::{
    horizontal_batch, horizontal_rows, horizontal_schema, vertical_batch, vertical_rows,
    vertical_schema,
};
pub use tap::{ScanSnapshot, ScanTap};

/// Thresholds, what the tables keep, and the memory bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanConfig {
    /// A vertical scan has at least this many distinct destination ports (ESCU: 500).
    pub vertical_min_ports: u32,
    /// ... of which at least this many below 1024 (ESCU: 20).
    pub vertical_min_low_ports: u32,
    /// A horizontal scan reaches at least this many distinct destinations (ESCU: 250).
    pub horizontal_min_dests: u32,
    /// Vertical rows kept in the table: at least this many distinct ports (default 250, half the
    /// threshold: near misses stay visible for tuning, while ordinary traffic, whose busy clients
    /// reach tens of destinations per port, does not fill the table and the cost of building rows;
    /// never
    /// above `vertical_min_ports`, so every alerting row is kept).
    pub keep_ports: u32,
    /// Horizontal rows kept in the table: at least this many distinct destinations (default 125,
    /// half the threshold, for the same reason;
    /// never above `horizontal_min_dests`).
    pub keep_dests: u32,
    /// Key slots an hour may hold (see the crate docs; default 4,000,000, under 1 GiB).
    pub max_keys_per_hour: usize,
    /// Ports / addresses listed per row (default 32).
    pub sample: usize,
    /// Ports a vertical key keeps in a vector before the bitmap (default and largest 4,096,
    /// where both take 8 KiB; lower only to exercise the bitmap in tests).
    pub exact_ports: u32,
    /// Destinations a horizontal key keeps exactly before the HyperLogLog (default 4,096; at
    /// most as many as fit 16 KiB: 4,096 IPv4, 963 others). Keep it at or above
    /// `horizontal_min_dests` so that alerts are exact.
    pub exact_dests: u32,
    /// Buffered records of one (hour, source) that make it fold (default 65,536).
    pub compact_at: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            vertical_min_ports: 500,
            vertical_min_low_ports: 20,
            horizontal_min_dests: 250,
            keep_ports: 250,
            keep_dests: 125,
            max_keys_per_hour: 4_000_000,
            sample: 32,
            exact_ports: 4096,
            exact_dests: 4096,
            compact_at: 65_536,
        }
    }
}

/// The aggregates of one hour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HourScans {
    /// Sorted by (source, destination), addresses in `IpAddr` order.
    pub vertical: Vec<VerticalRow>,
    /// Sorted by (source, port, protocol).
    pub horizontal: Vec<HorizontalRow>,
    /// What the key cap dropped.
    pub overflow: Overflow,
}

/// The sources an hour dropped at its key cap ([`ScanConfig::max_keys_per_hour`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Overflow {
    /// Records of the dropped sources.
    pub dropped_flows: u64,
    /// Every source at or above this address was dropped; `None`: nothing was.
    pub cutoff: Option<String>,
}

/// One (hour, source, destination) with at least `keep_ports` distinct destination ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerticalRow {
    /// The hour (as given to [`ScanTap::add`]; the history's start in Unix seconds).
    pub hour: i64,
    /// Source address (`IpAddr::to_string`).
    pub src_ip: String,
    /// Destination address.
    pub dst_ip: String,
    /// Distinct destination ports.
    pub distinct_ports: u64,
    /// Distinct destination ports below 1024.
    pub low_ports: u64,
    /// Records.
    pub flows: u64,
    /// The lowest ports, ascending (ports below 1024 first), at most `sample`.
    pub ports: Vec<u16>,
    /// Whether the counts are estimates (never, today: ports are counted exactly).
    pub estimated: bool,
}

impl VerticalRow {
    /// Whether the row is a vertical port scan under `cfg`'s thresholds.
    pub fn alerts(&self, cfg: &ScanConfig) -> bool {
        self.distinct_ports >= u64::from(cfg.vertical_min_ports)
            && self.low_ports >= u64::from(cfg.vertical_min_low_ports)
    }
}

/// One (hour, source, port, protocol) with at least `keep_dests` distinct destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HorizontalRow {
    /// The hour.
    pub hour: i64,
    /// Source address.
    pub src_ip: String,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// Distinct destination addresses (an estimate when `estimated`).
    pub distinct_dests: u64,
    /// Records.
    pub flows: u64,
    /// The lowest destination addresses in `IpAddr` order, at most `sample`.
    pub dest_ips: Vec<String>,
    /// The count is a HyperLogLog estimate (more than `exact_dests` destinations).
    pub estimated: bool,
}

impl HorizontalRow {
    /// Whether the row is a horizontal port scan under `cfg`'s thresholds.
    pub fn alerts(&self, cfg: &ScanConfig) -> bool {
        self.distinct_dests >= u64::from(cfg.horizontal_min_dests)
    }
}

/// A scan table batch that cannot be read back as rows.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// A column the schema has is absent.
    #[error("scan table: column {column} is missing")]
    MissingColumn {
        /// Column name.
        column: &'static str,
    },
    /// A column has another type than the schema's.
    #[error("scan table: column {column} has type {found}")]
    ColumnType {
        /// Column name.
        column: &'static str,
        /// Type found.
        found: String,
    },
    /// A column holds nulls where the schema has none.
    #[error("scan table: column {column} holds nulls")]
    Null {
        /// Column name.
        column: &'static str,
    },
    /// A value is out of its type's range (a negative count, a port above 65,535, an hour
    /// that is not a whole second).
    #[error("scan table: column {column}, row {row}: value out of range")]
    OutOfRange {
        /// Column name.
        column: &'static str,
        /// Row index in the batch.
        row: usize,
    },
}

#[cfg(test)]
mod tests;
