//! The two Parquet tables as Arrow record batches: schemas, rows → batch, batch → rows.
//!
//! Types follow the history's table (Athena reads both): `hour` is a UTC timestamp in
//! microseconds, counts are `Int64`, ports and protocol `Int32` (Athena has no unsigned types).

use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{HorizontalRow, ScanError, VerticalRow};

const MICROS: i64 = 1_000_000;

fn hour_field() -> Field {
    Field::new("hour", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false)
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

/// Schema of the vertical-scan table: one row per (hour, source, destination) with at least
/// `keep_ports` distinct destination ports.
///
/// `hour` timestamp (UTC, µs) · `src_ip` · `dst_ip` · `distinct_ports` · `low_ports` (below
/// 1024) · `flows` · `ports` (list of int, the lowest ports, ascending) · `estimated`.
pub fn vertical_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        hour_field(),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("dst_ip", DataType::Utf8, false),
        Field::new("distinct_ports", DataType::Int64, false),
        Field::new("low_ports", DataType::Int64, false),
        Field::new("flows", DataType::Int64, false),
        Field::new("ports", list_of(DataType::Int32), false),
        Field::new("estimated", DataType::Boolean, false),
    ]))
}

/// Schema of the horizontal-scan table: one row per (hour, source, port, protocol) with at least
/// `keep_dests` distinct destination addresses.
///
/// `hour` timestamp (UTC, µs) · `src_ip` · `dst_port` · `protocol` · `distinct_dests` · `flows` ·
/// `dest_ips` (list of text, the lowest addresses) · `estimated` (the count is a HyperLogLog
/// estimate).
pub fn horizontal_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        hour_field(),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("dst_port", DataType::Int32, false),
        Field::new("protocol", DataType::Int32, false),
        Field::new("distinct_dests", DataType::Int64, false),
        Field::new("flows", DataType::Int64, false),
        Field::new("dest_ips", list_of(DataType::Utf8), false),
        Field::new("estimated", DataType::Boolean, false),
    ]))
}

fn hours(it: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter_values(it.map(|h| h * MICROS)).with_timezone("UTC"),
    )
}

fn strings<'a>(it: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(it))
}

fn counts(it: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(it.map(|n| i64::try_from(n).unwrap_or(i64::MAX))))
}

fn int32s(it: impl Iterator<Item = i32>) -> ArrayRef {
    Arc::new(Int32Array::from_iter_values(it))
}

fn bools(it: impl Iterator<Item = bool>) -> ArrayRef {
    Arc::new(it.map(Some).collect::<BooleanArray>())
}

/// Builds a batch from columns that match the schema by construction.
fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    // The columns are built above from the same field list, so the only failure is a bug here.
    RecordBatch::try_new(schema, columns).expect("scan table columns match their schema")
}

/// The vertical rows as one batch of [`vertical_schema`].
pub fn vertical_batch(rows: &[VerticalRow]) -> RecordBatch {
    let mut ports = ListBuilder::new(Int32Builder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Int32, true)));
    for r in rows {
        ports.values().append_slice(&r.ports.iter().map(|&p| i32::from(p)).collect::<Vec<_>>());
        ports.append(true);
    }
    batch(
        vertical_schema(),
        vec![
            hours(rows.iter().map(|r| r.hour)),
            strings(rows.iter().map(|r| r.src_ip.as_str())),
            strings(rows.iter().map(|r| r.dst_ip.as_str())),
            counts(rows.iter().map(|r| r.distinct_ports)),
            counts(rows.iter().map(|r| r.low_ports)),
            counts(rows.iter().map(|r| r.flows)),
            Arc::new(ports.finish()),
            bools(rows.iter().map(|r| r.estimated)),
        ],
    )
}

/// The horizontal rows as one batch of [`horizontal_schema`].
pub fn horizontal_batch(rows: &[HorizontalRow]) -> RecordBatch {
    let mut dests = ListBuilder::new(StringBuilder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    for r in rows {
        for d in &r.dest_ips {
            dests.values().append_value(d);
        }
        dests.append(true);
    }
    batch(
        horizontal_schema(),
        vec![
            hours(rows.iter().map(|r| r.hour)),
            strings(rows.iter().map(|r| r.src_ip.as_str())),
            int32s(rows.iter().map(|r| i32::from(r.dst_port))),
            int32s(rows.iter().map(|r| i32::from(r.protocol))),
            counts(rows.iter().map(|r| r.distinct_dests)),
            counts(rows.iter().map(|r| r.flows)),
            Arc::new(dests.finish()),
            bools(rows.iter().map(|r| r.estimated)),
        ],
    )
}

/// A typed column by name.
fn column<'a, T: Array + 'static>(
    b: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a T, ScanError> {
    let col = b.column_by_name(name).ok_or(ScanError::MissingColumn { column: name })?;
    if col.null_count() > 0 {
        return Err(ScanError::Null { column: name });
    }
    col.as_any()
        .downcast_ref::<T>()
        .ok_or(ScanError::ColumnType { column: name, found: col.data_type().to_string() })
}

fn count_at(a: &Int64Array, i: usize, column: &'static str) -> Result<u64, ScanError> {
    u64::try_from(a.value(i)).map_err(|_| ScanError::OutOfRange { column, row: i })
}

fn hour_at(a: &TimestampMicrosecondArray, i: usize) -> Result<i64, ScanError> {
    let us = a.value(i);
    if us % MICROS != 0 {
        return Err(ScanError::OutOfRange { column: "hour", row: i });
    }
    Ok(us / MICROS)
}

fn int_at<T: TryFrom<i32>>(a: &Int32Array, i: usize, column: &'static str) -> Result<T, ScanError> {
    T::try_from(a.value(i)).map_err(|_| ScanError::OutOfRange { column, row: i })
}

/// Row `i` of a list column, read by `f` as its item type.
fn list_at<T: Array + 'static, U>(
    lists: &ListArray,
    i: usize,
    column: &'static str,
    f: impl FnOnce(&T) -> Result<U, ScanError>,
) -> Result<U, ScanError> {
    let list = lists.value(i);
    let items = list
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| ScanError::ColumnType { column, found: list.data_type().to_string() })?;
    f(items)
}

/// Reads back [`vertical_batch`] (a batch read from the table's Parquet files).
pub fn vertical_rows(batch: &RecordBatch) -> Result<Vec<VerticalRow>, ScanError> {
    let hour = column::<TimestampMicrosecondArray>(batch, "hour")?;
    let src = column::<StringArray>(batch, "src_ip")?;
    let dst = column::<StringArray>(batch, "dst_ip")?;
    let distinct = column::<Int64Array>(batch, "distinct_ports")?;
    let low = column::<Int64Array>(batch, "low_ports")?;
    let flows = column::<Int64Array>(batch, "flows")?;
    let ports = column::<ListArray>(batch, "ports")?;
    let estimated = column::<BooleanArray>(batch, "estimated")?;
    (0..batch.num_rows())
        .map(|i| {
            let ports = list_at(ports, i, "ports", |items: &Int32Array| {
                (0..items.len())
                    .map(|j| {
                        int_at::<u16>(items, j, "ports")
                            .map_err(|_| ScanError::OutOfRange { column: "ports", row: i })
                    })
                    .collect::<Result<Vec<u16>, _>>()
            })?;
            Ok(VerticalRow {
                hour: hour_at(hour, i)?,
                src_ip: src.value(i).to_string(),
                dst_ip: dst.value(i).to_string(),
                distinct_ports: count_at(distinct, i, "distinct_ports")?,
                low_ports: count_at(low, i, "low_ports")?,
                flows: count_at(flows, i, "flows")?,
                ports,
                estimated: estimated.value(i),
            })
        })
        .collect()
}

/// Reads back [`horizontal_batch`].
pub fn horizontal_rows(batch: &RecordBatch) -> Result<Vec<HorizontalRow>, ScanError> {
    let hour = column::<TimestampMicrosecondArray>(batch, "hour")?;
    let src = column::<StringArray>(batch, "src_ip")?;
    let port = column::<Int32Array>(batch, "dst_port")?;
    let proto = column::<Int32Array>(batch, "protocol")?;
    let distinct = column::<Int64Array>(batch, "distinct_dests")?;
    let flows = column::<Int64Array>(batch, "flows")?;
    let dests = column::<ListArray>(batch, "dest_ips")?;
    let estimated = column::<BooleanArray>(batch, "estimated")?;
    (0..batch.num_rows())
        .map(|i| {
            let dest_ips = list_at(dests, i, "dest_ips", |items: &StringArray| {
                Ok(items.iter().map(|d| d.unwrap_or_default().to_string()).collect())
            })?;
            Ok(HorizontalRow {
                hour: hour_at(hour, i)?,
                src_ip: src.value(i).to_string(),
                dst_port: int_at(port, i, "dst_port")?,
                protocol: int_at(proto, i, "protocol")?,
                distinct_dests: count_at(distinct, i, "distinct_dests")?,
                flows: count_at(flows, i, "flows")?,
                dest_ips,
                estimated: estimated.value(i),
            })
        })
        .collect()
}
