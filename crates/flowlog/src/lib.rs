//! Zero-copy parser for AWS VPC flow log records.
//!
//! - [`Field`]: every documented VPC flow log field (v2..v8 and later) plus [`Field::Unknown`].
//! - [`Format`]: an ordered list of fields. [`Format::default_v2`], [`Format::parse`] accepting a
//!   CreateFlowLogs `LogFormat` string (`${version} ${srcaddr} ...`), an S3 header line
//!   (`version srcaddr ...`) or Parquet column names (`_` for `-`).
//! - [`FlowRecord`]: a view over one line; typed accessors parse only what is asked.
//! - [`LineParser`]: splits one line into fields, reusing its offset buffer.
//! - [`for_each_record`]: decodes any [`Framing`] (lines, gzip, CloudWatch Logs, Firehose, KPL,
//!   Parquet) and feeds every record to a [`RecordSink`]; [`for_each_text_block`] decodes one block
//!   of a large text object cut at line ends (parallel and streaming readers).
//! - [`write_json`]: renders a record as a JSON object.
//!
//! Invariant: parsing allocates nothing per record or per field (the line parser's offset buffer
//! is reused); `tests/no_alloc.rs` proves it with a counting allocator.

mod decode;
mod envelope;
mod error;
mod field;
mod format;
mod gz;
#[cfg(feature = "isal")]
mod isal;
mod json;
mod kpl;
mod line;
#[doc(hidden)]
pub mod naive;
mod pq;
mod record;
mod scan;
mod validate;

pub use decode::{
    for_each_record, for_each_text_block, gunzip, header_format, BlockSummary, DecodeError,
    DecodeOptions, Framing, RecordSink, Summary, UnknownFraming,
};
pub use field::{Field, FieldKind, ValueType};
pub use format::{Format, FormatError, MAX_FORMAT_FIELDS};
pub use gz::{gz_reader, GzReader, GZ_INFLATER};
pub use json::write_json;
pub use kpl::encode_kpl;
pub use line::{LineError, LineErrorKind, LineParser};
pub use record::{parse_addr, parse_ipv4, parse_u64, Action, FieldError, FlowRecord, LogStatus};
