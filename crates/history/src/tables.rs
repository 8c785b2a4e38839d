//! The tables of the other detections: one Hive-partitioned Parquet table per detection next to
//! `aggregates/`, written with the same rules (atomic puts, an hour replaced whole).
//!
//! Layout: `<table>/date=YYYY-MM-DD/hr=HH/<name>.parquet`. Each table's schema belongs to the crate
//! that makes its rows (it hands over an Arrow [`RecordBatch`]); this module only places, encodes,
//! replaces and reads the files, so the history stays ignorant of what a port scan or a threat
//! list is.

use arrow_array::RecordBatch;
use chrono::DateTime;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::{CodecError, HistoryError, Store};
use flowspike_model::HOUR;

/// A table of hourly files under its own prefix of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    /// The table's directory, e.g. `port_scans` (no slash).
    pub name: &'static str,
}

impl Table {
    /// The key prefix of `hour`'s files: `<table>/date=YYYY-MM-DD/hr=HH/`.
    pub fn hour_prefix(&self, hour: i64) -> Result<String, HistoryError> {
        if hour % HOUR != 0 {
            return Err(HistoryError::Hour { hour });
        }
        let t = DateTime::from_timestamp(hour, 0).ok_or(HistoryError::Hour { hour })?;
        Ok(format!("{}/{}/", self.name, t.format("date=%Y-%m-%d/hr=%H")))
    }

    /// The hour of one of this table's file keys; `None` for any other key.
    pub fn hour_of_key(&self, key: &str) -> Option<i64> {
        let rest = key.strip_prefix(self.name)?.strip_prefix('/')?;
        // Same grammar as the aggregates' keys: reuse their parser on the rest.
        crate::hour_of_key(&format!("{}{rest}", crate::AGGREGATES_PREFIX))
    }

    /// Writes `batch` (every row of `hour`) as `<hour prefix><name>.parquet`, then deletes every
    /// other file of that hour: replaying an hour replaces it. An empty batch still writes a file
    /// (the hour was covered and had no row). Returns the key.
    pub fn replace_hour(
        &self,
        store: &dyn Store,
        hour: i64,
        batch: &RecordBatch,
        name: &str,
    ) -> Result<String, HistoryError> {
        let key = self.put_hour_file(store, hour, batch, name)?;
        for old in self.hour_files(store, hour)? {
            if old != key {
                store.delete(&old)?;
            }
        }
        Ok(key)
    }

    /// Writes `batch` as `<hour prefix><name>.parquet` and leaves the hour's other files alone:
    /// a streaming source's file beside replay's and other streams' (readers take every file of
    /// the hour). Writing the same name again replaces that file only. Returns the key.
    pub fn put_hour_file(
        &self,
        store: &dyn Store,
        hour: i64,
        batch: &RecordBatch,
        name: &str,
    ) -> Result<String, HistoryError> {
        if name.is_empty() || name.contains('/') {
            return Err(HistoryError::Name { name: name.to_owned() });
        }
        let mut key = self.hour_prefix(hour)?;
        key.push_str(name);
        if !name.ends_with(".parquet") {
            key.push_str(".parquet");
        }
        let bytes = encode_batch(batch)
            .map_err(|source| HistoryError::Codec { key: key.clone(), source })?;
        store.put(&key, bytes)?;
        Ok(key)
    }

    /// The `.parquet` keys of `hour`, sorted.
    pub fn hour_files(&self, store: &dyn Store, hour: i64) -> Result<Vec<String>, HistoryError> {
        let mut keys = store.list(&self.hour_prefix(hour)?)?;
        keys.retain(|k| self.hour_of_key(k) == Some(hour));
        Ok(keys)
    }

    /// The hours that have at least one file, sorted.
    pub fn hours(&self, store: &dyn Store) -> Result<Vec<i64>, HistoryError> {
        let mut hours: Vec<i64> = store
            .list(&format!("{}/", self.name))?
            .iter()
            .filter_map(|k| self.hour_of_key(k))
            .collect();
        hours.sort_unstable();
        hours.dedup();
        Ok(hours)
    }

    /// Every batch of every file of `hour` (file order).
    pub fn read_hour(
        &self,
        store: &dyn Store,
        hour: i64,
    ) -> Result<Vec<RecordBatch>, HistoryError> {
        let mut out = Vec::new();
        for key in self.hour_files(store, hour)? {
            let bytes = store.get(&key)?;
            out.extend(
                decode_batches(&bytes)
                    .map_err(|source| HistoryError::Codec { key: key.clone(), source })?,
            );
        }
        Ok(out)
    }
}

/// Encodes `batch` as one zstd-compressed Parquet file.
pub fn encode_batch(batch: &RecordBatch) -> Result<Vec<u8>, CodecError> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    w.write(batch)?;
    w.close()?;
    Ok(out)
}

/// Decodes a Parquet file into its record batches.
pub fn decode_batches(data: &[u8]) -> Result<Vec<RecordBatch>, CodecError> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(data))?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalStore;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(names: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("src_ip", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(names.to_vec())),
                Arc::new(Int64Array::from((0..names.len() as i64).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn replace_hour_replaces_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let t = Table { name: "port_scans" };
        let hour = 1_767_225_600 + 5 * HOUR;
        let k1 = t.replace_hour(&store, hour, &batch(&["10.0.0.1"]), "a").unwrap();
        assert_eq!(k1, "port_scans/date=2026-01-01/hr=05/a.parquet");
        t.replace_hour(&store, hour + HOUR, &batch(&["10.0.0.9"]), "a").unwrap();
        let k2 = t.replace_hour(&store, hour, &batch(&["10.0.0.2", "10.0.0.3"]), "b").unwrap();
        assert_eq!(t.hour_files(&store, hour).unwrap(), vec![k2]);
        assert_eq!(t.hours(&store).unwrap(), vec![hour, hour + HOUR]);
        let back = t.read_hour(&store, hour).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0], batch(&["10.0.0.2", "10.0.0.3"]));
        // Another table's and the aggregates' keys are not this table's.
        assert_eq!(t.hour_of_key("aggregates/date=2026-01-01/hr=05/a.parquet"), None);
        assert_eq!(t.hour_of_key("port_sweeps/date=2026-01-01/hr=05/a.parquet"), None);
        assert!(t.replace_hour(&store, hour + 1, &batch(&[]), "c").is_err());
        assert!(t.replace_hour(&store, hour, &batch(&[]), "x/y").is_err());
    }

    /// A stream's file of an hour is put beside replay's and another stream's, never deleting
    /// them; writing it again (a redo after a crash) replaces that one file.
    #[test]
    fn put_hour_file_keeps_the_hours_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let t = Table { name: "port_scans" };
        let hour = 1_767_225_600;
        let replay = t.replace_hour(&store, hour, &batch(&["10.0.0.1"]), "replay-1").unwrap();
        let other = t.put_hour_file(&store, hour, &batch(&["10.0.0.2"]), "consumer-b").unwrap();
        let mine = t.put_hour_file(&store, hour, &batch(&["10.0.0.3"]), "consumer-a").unwrap();
        t.put_hour_file(&store, hour, &batch(&["10.0.0.4"]), "consumer-a").unwrap();
        assert_eq!(t.hour_files(&store, hour).unwrap(), vec![mine, other, replay]);
        let back = t.read_hour(&store, hour).unwrap();
        assert_eq!(back[0], batch(&["10.0.0.4"]));
        assert!(t.put_hour_file(&store, hour, &batch(&[]), "x/y").is_err());
    }
}
