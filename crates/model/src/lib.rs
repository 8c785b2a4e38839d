//! The hourly aggregate every stage of flowspike speaks, in its three forms.
//!
//! - [`AggregateRow`]: one (hour, source IP) aggregate, a row of the Parquet history.
//! - [`Columns`]: many rows column by column, every text of a column in one buffer (what a replay
//!   builds, so the Parquet encoder copies whole buffers and the detection reads in place).
//! - [`Aggregate`]: the running aggregate of one key while it is being counted (the destination
//!   set with its cap and [`Hll`] sketch, the interface ids), which becomes a row or columns.
//!
//! [`HourRows`] borrows one hour as either rows or columns: the history writes it and the
//! detection reads it, whichever form the caller holds. [`merge_rows`] merges rows into one per
//! key, exactly past the destination cap.
//!
//! This crate knows nothing of the parser or of which records count (`flowspike-counter`), so the
//! history and the detection depend on it alone.
//!
//! ```
//! use flowspike_model::{merge_rows, AggregateRow, Columns};
//! let row = |dst: &str| AggregateRow {
//!     hour: 7200,
//!     src_ip: "10.0.0.1".into(),
//!     blocked_count: 1,
//!     unique_dest_count: 1,
//!     dest_ips: vec![dst.into()],
//!     ..AggregateRow::default()
//! };
//! let merged = merge_rows([row("8.8.8.8"), row("1.1.1.1")], 10_000).unwrap();
//! assert_eq!(merged.len(), 1);
//! assert_eq!(merged[0].blocked_count, 2);
//! assert_eq!(merged[0].dest_ips, ["1.1.1.1", "8.8.8.8"]);
//! assert_eq!(Columns::from_rows(&merged).to_rows(), merged);
//! ```

mod aggregate;
mod columns;
mod destset;
pub mod hll;
mod hour_rows;
mod interfaces;

pub use aggregate::{
    columns_of_maps, ip_string, merge_rows, rows_of_maps, Aggregate, Limits, RowError,
};
pub use columns::{Columns, TextLists, Texts};
pub use hll::{Hll, HllError};
pub use hour_rows::HourRows;

/// Seconds in an hour.
pub const HOUR: i64 = 3600;

/// Default largest destination set kept per key (`CounterConfig::dest_cap` in the counter).
pub const DEFAULT_DEST_CAP: usize = 10_000;

/// Default largest interface id list kept per key (`CounterConfig::interface_cap`).
pub const DEFAULT_INTERFACE_CAP: usize = 256;

/// One (hour, source IP) aggregate: a row of the Parquet history.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AggregateRow {
    /// Start of the hour, unix seconds UTC (a multiple of 3600).
    pub hour: i64,
    /// Source address, canonical text form (`10.1.2.3`, `fd00::1`).
    pub src_ip: String,
    /// Number of counted (blocked outbound) records.
    pub blocked_count: u64,
    /// Distinct destination addresses (exact up to the cap, a HyperLogLog estimate past it).
    pub unique_dest_count: u64,
    /// Destination addresses, sorted; at most the cap.
    pub dest_ips: Vec<String>,
    /// Interface ids, sorted.
    pub interface_ids: Vec<String>,
    /// Sum of `bytes`.
    pub bytes: u64,
    /// Sum of `packets`.
    pub packets: u64,
    /// True when `dest_ips` was capped and `unique_dest_count` is an estimate.
    pub dest_ips_truncated: bool,
    /// EXTENSION of the contract: the HyperLogLog registers of the destination set when
    /// `dest_ips_truncated` is true (`None` otherwise), so that rows read back from the history merge
    /// exactly past the cap. Encoding: see `Hll::to_bytes`. Parquet column `dest_hll` (nullable BINARY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_hll: Option<Vec<u8>>,
}
