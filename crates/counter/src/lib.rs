//! Sharded per-(hour, source IP) counter of blocked outbound flows.
//!
//! The counter produces the aggregates of `flowspike-model` ([`AggregateRow`], [`Columns`]), the
//! types shared with the Parquet history and the detection (re-exported here, so a caller of the
//! counter needs one import).
//!
//! - [`Rule`] decides which records count (ESCU: REJECT, log-status OK, internal source, external
//!   destination) and extracts a [`Hit`]; [`hour_of`] buckets event time into UTC hours.
//! - [`TimeBounds`] is the one rule for which event times are accepted (representable, and not
//!   more than a slack past the clock); a `start` outside it is malformed ([`StartOutOfRange`]).
//! - [`Counter`] is one thread's partial aggregate keyed by (hour, source address);
//!   [`ShardedCounter`] splits partials by source so rayon workers' partials merge shard by shard
//!   in parallel ([`par_count`]). No locks or atomics on the hot path.
//! - Memory per key is bounded: past [`CounterConfig::dest_cap`] destinations a key keeps the lowest
//!   `dest_cap` addresses plus a HyperLogLog sketch (`flowspike_model::Hll`: precision 14,
//!   standard error `1.04/sqrt(2^14)` ≈ 0.81 %), and its row is flagged `dest_ips_truncated` and carries the
//!   registers in `dest_hll` so rows merge exactly past the cap ([`merge_rows`]; the per-key
//!   aggregate is the model's `Aggregate`).
//! - [`Pipeline`] gathers the settings of the four stages every pipeline runs (decoding, this
//!   rule, the counter, the detection), built once and embedded in each pipeline's settings.
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

mod counter;
mod pipeline;
mod rule;
mod sharded;
mod sink;

pub use counter::{Counter, CounterConfig, SourceOverflow, DEFAULT_MAX_SOURCES_PER_HOUR};
pub use flowspike_model::{merge_rows, AggregateRow, Columns, RowError, HOUR};
pub use pipeline::Pipeline;
pub use rule::{
    hour_of, ClassifyError, Hit, Rule, StartOutOfRange, TimeBounds, DEFAULT_MAX_FUTURE_SECS,
    MAX_EVENT_TIME,
};
pub use sharded::{par_count, shard_of, ShardedCounter};
pub use sink::{CountHooks, CountSink, HitSink, SinkStats};

/// The rayon crate the parallel functions ([`par_count`], [`ShardedCounter::merge`]) run on: build a
/// `rayon::ThreadPool` from it and call them inside `install` to choose the thread count.
pub use rayon;
