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

use crate::decode::DecodeError;
use crate::format::Format;

/// Decodes a Parquet object; calls `line` with the format (from the column names) and each row
/// rendered as a space-separated line (null and empty values as `-`).
pub(crate) fn decode_parquet(
    data: &[u8],
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
    let reader =
        builder.with_batch_size(4096).build().map_err(|e| DecodeError::Parquet(e.to_string()))?;
    let mut buf = Vec::with_capacity(512);
    for batch in reader {
        let batch = batch.map_err(|e| DecodeError::Parquet(e.to_string()))?;
        render_batch(&batch, &format, &mut buf, &mut line);
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

fn render_batch(
    batch: &RecordBatch,
    format: &Format,
    buf: &mut Vec<u8>,
    line: &mut impl FnMut(&Format, &[u8]),
) {
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
        line(format, buf);
    }
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
