//! Parquet flow-log objects: each row is rendered into a text line in a reusable buffer and
//! parsed like any other line (simple and correct; Parquet is not the hot path).

use std::io::Write;

use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray, RecordBatch};
use arrow_array::{LargeStringArray, StringArray, StringViewArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::DecodeError;
use crate::format::Format;

/// Rows decoded at a time: what one batch may materialize is this many rows.
const BATCH_ROWS: usize = 1024;

/// Decodes a Parquet object; calls `line` with the format (from the column names) and each row
/// rendered as a space-separated line (null and empty values as `-`).
///
/// The rendered text is decompressed output like any other framing's: each line and its line
/// end are taken from `budget`, and [`DecodeError::DecompressionLimit`] (`limit`, the limit
/// the budget came from) ends the decoding when it runs out. A file whose row count alone
/// (each row renders to at least two bytes per column) exceeds the budget is refused before
/// anything is decoded: run-length and dictionary encodings let a kilobyte declare hundreds of
/// millions of rows (#28 item 5). While decoding, a batch that takes more memory than the budget
/// left is refused too.
pub(crate) fn decode_parquet(
    data: &[u8],
    budget: &mut u64,
    limit: u64,
    mut line: impl FnMut(&Format, &[u8]),
) -> Result<(), DecodeError> {
    let bytes = bytes::Bytes::copy_from_slice(data);
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| DecodeError::Parquet(e.to_string()))?;
    let schema = builder.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let format = Format::parse(&names.join(" ")).map_err(DecodeError::ParquetFormat)?;
    for f in schema.fields() {
        if !supported(f.data_type()) {
            return Err(DecodeError::ParquetColumnType {
                column: f.name().clone(),
                data_type: f.data_type().to_string(),
            });
        }
    }
    let over = || DecodeError::DecompressionLimit { limit };
    // A negative count in the metadata is nonsense: as many rows as possible.
    let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(u64::MAX);
    let least = rows.saturating_mul(2).saturating_mul(format.len() as u64);
    if least > *budget {
        return Err(over());
    }
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| DecodeError::Parquet(e.to_string()))?;
    let mut buf = Vec::with_capacity(512);
    for batch in reader {
        let batch = batch.map_err(|e| DecodeError::Parquet(e.to_string()))?;
        if batch.get_array_memory_size() as u64 > *budget {
            return Err(over());
        }
        render_batch(&batch, &format, &mut buf, budget, &mut line).ok_or_else(over)?;
    }
    Ok(())
}

fn supported(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Null
    )
}

/// Renders and hands over the rows of `batch`, each taken from `budget` with its line end;
/// `None` when the budget runs out (the row that would exceed it is not handed over).
fn render_batch(
    batch: &RecordBatch,
    format: &Format,
    buf: &mut Vec<u8>,
    budget: &mut u64,
    line: &mut impl FnMut(&Format, &[u8]),
) -> Option<()> {
    for row in 0..batch.num_rows() {
        buf.clear();
        for (i, col) in batch.columns().iter().enumerate() {
            if i > 0 {
                buf.push(b' ');
            }
            let start = buf.len();
            render(col.as_ref(), row, buf);
            if buf.len() == start {
                buf.push(b'-');
            }
        }
        *budget = budget.checked_sub(buf.len() as u64 + 1)?;
        line(format, buf);
    }
    Some(())
}

fn prim<T: ArrowPrimitiveType>(col: &dyn Array, row: usize, buf: &mut Vec<u8>) -> bool
where
    T::Native: std::fmt::Display,
{
    match col.as_any().downcast_ref::<PrimitiveArray<T>>() {
        Some(a) => {
            // Writing into a Vec cannot fail.
            let _ = write!(buf, "{}", a.value(row));
            true
        }
        None => false,
    }
}

/// Appends the value at `row` (nothing for null, which the caller renders as `-`).
fn render(col: &dyn Array, row: usize, buf: &mut Vec<u8>) {
    if row >= col.len() || col.is_null(row) {
        return;
    }
    let any = col.as_any();
    if let Some(a) = any.downcast_ref::<StringArray>() {
        buf.extend_from_slice(a.value(row).as_bytes());
    } else if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        buf.extend_from_slice(a.value(row).as_bytes());
    } else if let Some(a) = any.downcast_ref::<StringViewArray>() {
        buf.extend_from_slice(a.value(row).as_bytes());
    } else {
        let _ = prim::<Int64Type>(col, row, buf)
            || prim::<Int32Type>(col, row, buf)
            || prim::<Int16Type>(col, row, buf)
            || prim::<Int8Type>(col, row, buf)
            || prim::<UInt64Type>(col, row, buf)
            || prim::<UInt32Type>(col, row, buf)
            || prim::<UInt16Type>(col, row, buf)
            || prim::<UInt8Type>(col, row, buf);
    }
}
