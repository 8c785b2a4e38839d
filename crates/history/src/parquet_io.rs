//! [`AggregateRow`]s (and [`Columns`]) to and from Parquet (the columns of the history contract).

use arrow_array::builder::BinaryBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int64Type, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use flowspike_model::{AggregateRow, Columns, TextLists, Texts};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// A Parquet file that cannot be written or read as aggregate rows.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The Parquet library failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The Arrow library failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A required column is missing or has an unexpected type.
    #[error("column {column}: {message}")]
    Column {
        /// The column name.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value does not fit the row (null where required, negative count, hour not on the hour).
    #[error("row {row}, column {column}: {message}")]
    Value {
        /// Row index in the file.
        row: usize,
        /// The column name.
        column: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A count above `i64::MAX` cannot be stored in an INT64 column.
    #[error("src_ip {src_ip}, column {column}: {value} does not fit INT64")]
    Overflow {
        /// The row's source.
        src_ip: String,
        /// The column name.
        column: &'static str,
        /// The value.
        value: u64,
    },
}

/// The Arrow schema of a history file: `hour` TIMESTAMP(µs, "UTC"), `src_ip` UTF8,
/// `blocked_count` INT64, `unique_dest_count` INT64, `dest_ips` `LIST<UTF8>`, `interface_ids`
/// `LIST<UTF8>`, `bytes` INT64, `packets` INT64, `dest_ips_truncated` BOOLEAN, `dest_hll` BINARY
/// (nullable; the extension carrying HyperLogLog registers of truncated rows).
pub fn schema() -> Schema {
    let list = || DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    Schema::new(vec![
        Field::new("hour", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("blocked_count", DataType::Int64, false),
        Field::new("unique_dest_count", DataType::Int64, false),
        Field::new("dest_ips", list(), false),
        Field::new("interface_ids", list(), false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("packets", DataType::Int64, false),
        Field::new("dest_ips_truncated", DataType::Boolean, false),
        Field::new("dest_hll", DataType::Binary, true),
    ])
}

fn to_i64(v: u64, src_ip: &str, column: &'static str) -> Result<i64, CodecError> {
    i64::try_from(v).map_err(|_| CodecError::Overflow {
        src_ip: src_ip.to_owned(),
        column,
        value: v,
    })
}

/// Arrow offsets of a column's texts or lists (Arrow's 32-bit offsets hold 2 GiB).
fn offsets(o: &[usize], column: &'static str) -> Result<OffsetBuffer<i32>, CodecError> {
    let o: Vec<i32> =
        o.iter().map(|&x| i32::try_from(x)).collect::<Result<_, _>>().map_err(|_| {
            CodecError::Column { column, message: "more than 2 GiB in one file".into() }
        })?;
    // Ascending from 0 by construction (`Texts`, `TextLists` only append).
    Ok(OffsetBuffer::new(ScalarBuffer::from(o)))
}

fn strings(t: &Texts, column: &'static str) -> Result<StringArray, CodecError> {
    Ok(StringArray::try_new(offsets(t.offsets(), column)?, t.data().as_bytes().into(), None)?)
}

fn string_list(l: &TextLists, column: &'static str) -> Result<ListArray, CodecError> {
    let items = Arc::new(strings(l.items(), column)?);
    let field = Arc::new(Field::new_list_field(DataType::Utf8, true));
    Ok(ListArray::try_new(field, offsets(l.starts(), column)?, items, None)?)
}

fn int64s_of(values: &[u64], c: &Columns, column: &'static str) -> Result<Int64Array, CodecError> {
    let v: Vec<i64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| to_i64(v, c.src_ip.get(i), column))
        .collect::<Result<_, _>>()?;
    Ok(Int64Array::new(ScalarBuffer::from(v), None))
}

/// Encodes the rows of `c` (in their order) as one zstd-compressed Parquet file. Every column is
/// made from whole buffers: the texts of a column are copied to Arrow at once, not string by
/// string. Rows are encoded as `Columns::from_rows(rows)`.
pub fn encode_parquet(c: &Columns) -> Result<Vec<u8>, CodecError> {
    let n = c.len();
    if !c.lengths_agree() {
        return Err(CodecError::Column {
            column: "hour",
            message: format!("columns of unequal lengths ({n} hours)"),
        });
    }
    let micros: Vec<i64> = c
        .hour
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.checked_mul(1_000_000).ok_or_else(|| CodecError::Overflow {
                src_ip: c.src_ip.get(i).to_owned(),
                column: "hour",
                value: h.unsigned_abs(),
            })
        })
        .collect::<Result<_, _>>()?;
    let hll_bytes = c.dest_hll.iter().map(|h| h.as_ref().map_or(0, Vec::len)).sum();
    let mut hll = BinaryBuilder::with_capacity(n, hll_bytes);
    c.dest_hll.iter().for_each(|h| hll.append_option(h.as_deref()));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::new(ScalarBuffer::from(micros), None).with_timezone("UTC"),
        ),
        Arc::new(strings(&c.src_ip, "src_ip")?),
        Arc::new(int64s_of(&c.blocked_count, c, "blocked_count")?),
        Arc::new(int64s_of(&c.unique_dest_count, c, "unique_dest_count")?),
        Arc::new(string_list(&c.dest_ips, "dest_ips")?),
        Arc::new(string_list(&c.interface_ids, "interface_ids")?),
        Arc::new(int64s_of(&c.bytes, c, "bytes")?),
        Arc::new(int64s_of(&c.packets, c, "packets")?),
        Arc::new(BooleanArray::new(c.dest_ips_truncated.iter().copied().collect(), None)),
        Arc::new(hll.finish()),
    ];
    let schema = Arc::new(schema());
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    // `src_ip` is unique within an hour's file and interface ids nearly so: a dictionary would
    // only be built to be abandoned. Destinations repeat across sources and keep theirs.
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_column_dictionary_enabled(ColumnPath::from("src_ip"), false)
        .set_column_dictionary_enabled(
            ColumnPath::from(vec!["interface_ids".into(), "list".into(), "item".into()]),
            false,
        )
        .build();
    // Room for the file without compression (it is smaller): reserved, not touched, until written.
    let text_bytes = c.src_ip.data().len()
        + c.dest_ips.items().data().len()
        + c.interface_ids.items().data().len();
    let items = c.dest_ips.items().len() + c.interface_ids.items().len();
    let mut out = Vec::with_capacity(4096 + n * 64 + text_bytes + hll_bytes + 4 * items);
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(out)
}

fn column<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b ArrayRef, CodecError> {
    batch.column_by_name(name).ok_or(CodecError::Column { column: name, message: "missing".into() })
}

fn wrong_type(column: &'static str, dt: &DataType) -> CodecError {
    CodecError::Column { column, message: format!("unexpected type {dt}") }
}

fn int64s(batch: &RecordBatch, name: &'static str, base: usize) -> Result<Vec<u64>, CodecError> {
    let a = column(batch, name)?;
    let a = a.as_primitive_opt::<Int64Type>().ok_or_else(|| wrong_type(name, a.data_type()))?;
    (0..a.len())
        .map(|i| {
            let bad = |message: &str| CodecError::Value {
                row: base + i,
                column: name,
                message: message.into(),
            };
            if a.is_null(i) {
                return Err(bad("null"));
            }
            u64::try_from(a.value(i)).map_err(|_| bad("negative"))
        })
        .collect()
}

/// Hours in seconds from any timestamp unit.
fn hours(batch: &RecordBatch, base: usize) -> Result<Vec<i64>, CodecError> {
    let a = column(batch, "hour")?;
    let (raw, per_sec): (Vec<Option<i64>>, i64) = match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            (a.as_primitive::<TimestampSecondType>().iter().collect(), 1)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            (a.as_primitive::<TimestampMillisecondType>().iter().collect(), 1_000)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            (a.as_primitive::<TimestampMicrosecondType>().iter().collect(), 1_000_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            (a.as_primitive::<TimestampNanosecondType>().iter().collect(), 1_000_000_000)
        }
        dt => return Err(wrong_type("hour", dt)),
    };
    raw.into_iter()
        .enumerate()
        .map(|(i, v)| {
            let bad = |message: &str| CodecError::Value {
                row: base + i,
                column: "hour",
                message: message.into(),
            };
            let v = v.ok_or_else(|| bad("null"))?;
            if v % (per_sec * 3600) != 0 {
                return Err(bad("not the start of an hour"));
            }
            Ok(v / per_sec)
        })
        .collect()
}

fn string_lists(batch: &RecordBatch, name: &'static str) -> Result<Vec<Vec<String>>, CodecError> {
    let a = column(batch, name)?;
    let l = a.as_list_opt::<i32>().ok_or_else(|| wrong_type(name, a.data_type()))?;
    let mut out = Vec::with_capacity(l.len());
    for i in 0..l.len() {
        if l.is_null(i) {
            out.push(Vec::new()); // a null list reads as empty
            continue;
        }
        let v = l.value(i);
        let s = v.as_string_opt::<i32>().ok_or_else(|| wrong_type(name, v.data_type()))?;
        out.push(s.iter().flatten().map(str::to_owned).collect());
    }
    Ok(out)
}

/// Decodes a history file into rows (file order). Accepts any timestamp unit for `hour`; a missing
/// `dest_hll` column reads as all null; a null list reads as empty.
pub fn decode_parquet(data: &[u8]) -> Result<Vec<AggregateRow>, CodecError> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(data))?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        let base = rows.len();
        let hour = hours(&batch, base)?;
        let src = column(&batch, "src_ip")?;
        let src =
            src.as_string_opt::<i32>().ok_or_else(|| wrong_type("src_ip", src.data_type()))?;
        let blocked = int64s(&batch, "blocked_count", base)?;
        let unique = int64s(&batch, "unique_dest_count", base)?;
        let bytes = int64s(&batch, "bytes", base)?;
        let packets = int64s(&batch, "packets", base)?;
        let dests = string_lists(&batch, "dest_ips")?;
        let ifaces = string_lists(&batch, "interface_ids")?;
        let trunc = column(&batch, "dest_ips_truncated")?;
        let trunc = trunc
            .as_boolean_opt()
            .ok_or_else(|| wrong_type("dest_ips_truncated", trunc.data_type()))?;
        let hll = match batch.column_by_name("dest_hll") {
            None => None,
            Some(a) => Some(
                a.as_binary_opt::<i32>().ok_or_else(|| wrong_type("dest_hll", a.data_type()))?,
            ),
        };
        for (i, ((dest_ips, interface_ids), hour)) in
            dests.into_iter().zip(ifaces).zip(hour).enumerate()
        {
            if src.is_null(i) {
                return Err(CodecError::Value {
                    row: base + i,
                    column: "src_ip",
                    message: "null".into(),
                });
            }
            rows.push(AggregateRow {
                hour,
                src_ip: src.value(i).to_owned(),
                blocked_count: blocked[i],
                unique_dest_count: unique[i],
                dest_ips,
                interface_ids,
                bytes: bytes[i],
                packets: packets[i],
                dest_ips_truncated: trunc.is_valid(i) && trunc.value(i),
                dest_hll: hll.and_then(|h| h.is_valid(i).then(|| h.value(i).to_vec())),
            });
        }
    }
    Ok(rows)
}
