//! Sharded per-(hour, source IP) counter of blocked outbound flows.
//!
//! [`AggregateRow`] is the row shared by the counter (producer), the Parquet history and the
//! detection.
//!
//! - [`Rule`] decides which records count (ESCU: REJECT, log-status OK, internal source, external
//!   destination) and extracts a [`Hit`]; [`hour_of`] buckets event time into UTC hours.
//! - [`TimeBounds`] is the one rule for which event times are accepted (representable, and not
//!   more than a slack past the clock); a `start` outside it is malformed ([`StartOutOfRange`]).
//! - [`Counter`] is one thread's partial aggregate keyed by (hour, source address);
//!   [`ShardedCounter`] splits partials by source so rayon workers' partials merge shard by shard
//!   in parallel ([`par_count`]). No locks or atomics on the hot path.
//! - Memory per key is bounded: past [`CounterConfig::dest_cap`] destinations a key keeps the lowest
//!   `dest_cap` addresses plus an [`Hll`] sketch (precision 14, standard error
//!   `1.04/sqrt(2^14)` ≈ 0.81 %), and its row is flagged `dest_ips_truncated` and carries the
//!   registers in `dest_hll` so rows merge exactly past the cap ([`merge_rows`]).
//! - Memory per hour is bounded: past [`CounterConfig::max_sources_per_hour`] sources an hour keeps
//!   its lowest source addresses and counts what it dropped ([`SourceOverflow`]).
//!
//! ```
//! use flowspike_counter::{Counter, CounterConfig, Hit};
//! let mut c = Counter::new(CounterConfig::default());
//! let hit = |dst: &str| Hit {
//!     hour: 7200,
//!     src: "10.0.0.1".parse().unwrap(),
//!     dst: dst.parse().unwrap(),
//!     interface_id: Some(b"eni-1"),
//!     bytes: 40,
//!     packets: 1,
//! };
//! c.add(&hit("8.8.8.8"));
//! c.add(&hit("1.1.1.1"));
//! c.add(&hit("8.8.8.8"));
//! let rows = c.into_rows();
//! assert_eq!(rows[0].blocked_count, 3);
//! assert_eq!(rows[0].unique_dest_count, 2);
//! assert_eq!(rows[0].dest_ips, ["1.1.1.1", "8.8.8.8"]);
//! ```

mod columns;
mod counter;
mod destset;
pub mod hll;
mod interfaces;
mod rule;
mod sharded;
mod sink;

pub use columns::{Columns, TextLists, Texts};
pub use counter::{
    merge_rows, Counter, CounterConfig, RowError, SourceOverflow, DEFAULT_MAX_SOURCES_PER_HOUR,
};
pub use hll::{Hll, HllError};
pub use rule::{
    hour_of, ClassifyError, Hit, Rule, StartOutOfRange, TimeBounds, DEFAULT_MAX_FUTURE_SECS, HOUR,
    MAX_EVENT_TIME,
};
pub use sharded::{par_count, shard_of, ShardedCounter};
pub use sink::{CountSink, HitSink, SinkStats};

/// The rayon crate the parallel functions ([`par_count`], [`ShardedCounter::merge`]) run on: build a
/// `rayon::ThreadPool` from it and call them inside `install` to choose the thread count.
pub use rayon;

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
