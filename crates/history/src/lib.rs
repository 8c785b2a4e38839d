//! Hourly aggregate history: Hive-partitioned Parquet files under `<state>/aggregates/`.
//!
//! [`Store`] is the object store abstraction; [`LocalStore`] implements it on a directory,
//! `flowspike-aws` implements it on S3. [`History`] reads and writes the hourly files: one entry
//! point per operation, taking an hour's aggregates as rows or as columns ([`HourRows`]).
//!
//! Layout (Hive partitions): `aggregates/date=YYYY-MM-DD/hr=HH/<name>.parquet`, one row per
//! (hour, src_ip) per file, zstd-compressed. Columns (see [`schema`]): `hour` TIMESTAMP(µs, UTC),
//! `src_ip` UTF8, `blocked_count` INT64, `unique_dest_count` INT64, `dest_ips` `LIST<UTF8>`,
//! `interface_ids` `LIST<UTF8>`, `bytes` INT64, `packets` INT64, `dest_ips_truncated` BOOLEAN, and the
//! EXTENSION `dest_hll` BINARY (nullable): the HyperLogLog registers of a truncated row
//! (`flowspike_model::Hll::to_bytes`), null otherwise, so several files of one hour merge exactly
//! past the destination cap. Readers that do not know `dest_hll` can ignore it.

/// Errors of a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O error on a local path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The object does not exist.
    #[error("{key}: not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// An error of a remote store (S3), with bucket and key in the message.
    #[error("{0}")]
    Remote(String),
}

/// A flat key/value object store with atomic puts (a reader never sees half an object).
pub trait Store: Send + Sync {
    /// Writes `bytes` at `key` atomically, replacing any previous object.
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// Reads the whole object at `key`.
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// Lists every key that starts with `prefix`, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Deletes `key`; deleting a missing key is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

mod local;
mod parquet_io;
mod tables;

pub use local::LocalStore;
pub use parquet_io::{decode_parquet, encode_parquet, schema, CodecError};
pub use tables::{decode_batches, encode_batch, Table};

use chrono::DateTime;
use flowspike_model::{merge_rows, AggregateRow, Columns, HourRows, RowError, HOUR};
use std::sync::Arc;

/// Root of the aggregate files in a store.
pub const AGGREGATES_PREFIX: &str = "aggregates/";

/// Errors of [`History`].
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store failed.
    #[error("history store: {0}")]
    Store(#[from] StoreError),
    /// A file cannot be encoded or decoded.
    #[error("{key}: {source}")]
    Codec {
        /// The key of the file.
        key: String,
        /// The cause.
        source: CodecError,
    },
    /// Rows of one hour do not merge.
    #[error("hour {hour}: {source}")]
    Merge {
        /// The hour.
        hour: i64,
        /// The cause.
        source: RowError,
    },
    /// `hour` is not a multiple of 3600 or out of the calendar's range.
    #[error("hour {hour}: not the start of a representable utc hour")]
    Hour {
        /// The bad hour.
        hour: i64,
    },
    /// A row handed to `write_hour_file` belongs to another hour, or a file holds another hour.
    #[error("{key}: row of src_ip {src_ip} has hour {found}, expected {expected}")]
    WrongHour {
        /// The key written or read.
        key: String,
        /// The row's source.
        src_ip: String,
        /// The hour of the file.
        expected: i64,
        /// The row's hour.
        found: i64,
    },
    /// A file name that is empty or contains `/`.
    #[error("file name {name:?}: must be non-empty and contain no '/'")]
    Name {
        /// The bad name.
        name: String,
    },
}

/// The key of file `name` of `hour` (`.parquet` appended when missing); `name` must be a plain
/// file name.
fn hour_file_key(hour: i64, name: &str) -> Result<String, HistoryError> {
    if name.is_empty() || name.contains('/') || name == ".parquet" {
        return Err(HistoryError::Name { name: name.to_owned() });
    }
    let mut key = hour_key_prefix(hour)?;
    key.push_str(name);
    if !name.ends_with(".parquet") {
        key.push_str(".parquet");
    }
    Ok(key)
}

/// The key prefix of the files of `hour`: `aggregates/date=YYYY-MM-DD/hr=HH/`.
pub fn hour_key_prefix(hour: i64) -> Result<String, HistoryError> {
    if hour % HOUR != 0 {
        return Err(HistoryError::Hour { hour });
    }
    let t = DateTime::from_timestamp(hour, 0).ok_or(HistoryError::Hour { hour })?;
    Ok(format!("{AGGREGATES_PREFIX}{}/", t.format("date=%Y-%m-%d/hr=%H")))
}

/// The hour of a key `aggregates/date=YYYY-MM-DD/hr=HH/<name>.parquet`; `None` for any other key.
pub fn hour_of_key(key: &str) -> Option<i64> {
    let rest = key.strip_prefix(AGGREGATES_PREFIX)?;
    let mut parts = rest.split('/');
    let date = parts.next()?.strip_prefix("date=")?;
    let hh = parts.next()?.strip_prefix("hr=")?;
    let name = parts.next()?;
    if parts.next().is_some() || !name.ends_with(".parquet") || hh.len() != 2 {
        return None;
    }
    let h: u32 = hh.parse().ok()?;
    let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let t = d.and_hms_opt(h, 0, 0)?.and_utc().timestamp();
    // Only keys in canonical form (zero-padded) count.
    (hour_key_prefix(t).ok()?.len() + name.len() == key.len()).then_some(t)
}

/// The hourly aggregate history in a [`Store`].
#[derive(Clone)]
pub struct History {
    store: Arc<dyn Store>,
    dest_cap: usize,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("dest_cap", &self.dest_cap).finish_non_exhaustive()
    }
}

impl History {
    /// A history in `store`, merging with the default destination cap (10,000).
    pub fn new(store: Arc<dyn Store>) -> History {
        History { store, dest_cap: flowspike_model::DEFAULT_DEST_CAP }
    }

    /// The same history merging with destination cap `cap` in [`History::read_hour`].
    pub fn with_dest_cap(mut self, cap: usize) -> History {
        self.dest_cap = cap;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Writes `rows` (all of `hour`, as [`AggregateRow`]s or [`Columns`]) as `<hour
    /// prefix><name>` (`.parquet` appended when missing) and returns the key. Rows with the same
    /// `src_ip` are merged first, so the file holds one row per (hour, src_ip), sorted by
    /// `src_ip`. An existing file of that name is replaced atomically.
    ///
    /// Rows already in that shape (what the counters hand out) are encoded as they are; columns
    /// then from their buffers whole (`encode_parquet`), with no row made.
    pub fn write_hour_file<'a>(
        &self,
        hour: i64,
        rows: impl Into<HourRows<'a>>,
        name: &str,
    ) -> Result<String, HistoryError> {
        let rows = rows.into();
        let key = hour_file_key(hour, name)?;
        let encoded = if rows.is_hour_sorted_unique(hour) {
            match rows {
                HourRows::Columns(c) => encode_parquet(c),
                HourRows::Rows(r) => encode_parquet(&Columns::from_rows(r)),
            }
        } else {
            if let Some(i) = (0..rows.len()).find(|&i| rows.hour(i) != hour) {
                return Err(HistoryError::WrongHour {
                    key,
                    src_ip: rows.src_ip(i).to_owned(),
                    expected: hour,
                    found: rows.hour(i),
                });
            }
            let merged = merge_rows(rows.to_rows(), self.dest_cap)
                .map_err(|source| HistoryError::Merge { hour, source })?;
            encode_parquet(&Columns::from_rows(&merged))
        };
        let bytes = encoded.map_err(|source| HistoryError::Codec { key: key.clone(), source })?;
        self.store.put(&key, bytes)?;
        Ok(key)
    }

    /// Writes the new file of `hour` ([`History::write_hour_file`]), then deletes every other
    /// `.parquet` file of that hour, so that replaying an hour twice does not count it twice.
    /// Returns the new key.
    pub fn replace_hour<'a>(
        &self,
        hour: i64,
        rows: impl Into<HourRows<'a>>,
        name: &str,
    ) -> Result<String, HistoryError> {
        let key = self.write_hour_file(hour, rows, name)?;
        self.delete_others(hour, &key)?;
        Ok(key)
    }

    /// Deletes every `.parquet` file of `hour` but `key`.
    fn delete_others(&self, hour: i64, key: &str) -> Result<(), HistoryError> {
        for old in self.hour_files(hour)? {
            if old != key {
                self.store.delete(&old)?;
            }
        }
        Ok(())
    }

    /// The `.parquet` keys of `hour`, sorted (temporary files are ignored).
    pub fn hour_files(&self, hour: i64) -> Result<Vec<String>, HistoryError> {
        let mut keys = self.store.list(&hour_key_prefix(hour)?)?;
        keys.retain(|k| hour_of_key(k) == Some(hour));
        Ok(keys)
    }

    /// Every row of `hour`, all files merged into one row per `src_ip` (see
    /// `flowspike_model::merge_rows`), sorted by `src_ip`. Empty when the hour has no file.
    pub fn read_hour(&self, hour: i64) -> Result<Vec<AggregateRow>, HistoryError> {
        let mut all = Vec::new();
        for key in self.hour_files(hour)? {
            let bytes = self.store.get(&key)?;
            let rows = decode_parquet(&bytes)
                .map_err(|source| HistoryError::Codec { key: key.clone(), source })?;
            if let Some(r) = rows.iter().find(|r| r.hour != hour) {
                return Err(HistoryError::WrongHour {
                    key,
                    src_ip: r.src_ip.clone(),
                    expected: hour,
                    found: r.hour,
                });
            }
            all.extend(rows);
        }
        merge_rows(all, self.dest_cap).map_err(|source| HistoryError::Merge { hour, source })
    }

    /// The hours that have at least one file, sorted (from the keys only).
    pub fn hours(&self) -> Result<Vec<i64>, HistoryError> {
        let mut hours: Vec<i64> =
            self.store.list(AGGREGATES_PREFIX)?.iter().filter_map(|k| hour_of_key(k)).collect();
        hours.sort_unstable();
        hours.dedup();
        Ok(hours)
    }

    /// The rows of every hour `h` with `from <= h < to` (half-open), sorted by (hour, src_ip).
    pub fn read_range(&self, from: i64, to: i64) -> Result<Vec<AggregateRow>, HistoryError> {
        let mut out = Vec::new();
        for h in self.hours()?.into_iter().filter(|h| (from..to).contains(h)) {
            out.extend(self.read_hour(h)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
