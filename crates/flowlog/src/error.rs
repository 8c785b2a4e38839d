//! Why an input as a whole cannot be decoded.
//!
//! Its own module (not the decoder's) because the framings' readers (`kpl.rs`, `pq.rs`) return it
//! and the decoder calls them: both sides import it from here.

use crate::decode::MAX_DEPTH;
use crate::format::FormatError;

/// The input as a whole cannot be decoded. Records decoded before the error have already been
/// delivered to the sink.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The gzip stream is corrupt or truncated.
    #[error("bad gzip stream: {0}")]
    Gzip(#[source] std::io::Error),
    /// Decompression would produce more than `max_decompressed_bytes`.
    #[error("decompressed size exceeds the limit of {limit} bytes")]
    DecompressionLimit {
        /// The limit in force.
        limit: u64,
    },
    /// A JSON value of a CloudWatch Logs or Firehose input does not parse.
    #[error("bad json in object {index}: {source}")]
    Json {
        /// 0-based index of the JSON object within the input.
        index: usize,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A JSON object is neither a CloudWatch Logs envelope nor a Firehose `{"message":...}`.
    #[error("json object {index} has neither messageType/logEvents nor message")]
    UnrecognisedJson {
        /// 0-based index of the JSON object within the input.
        index: usize,
    },
    /// A CloudWatch Logs envelope with a `messageType` other than DATA_MESSAGE or CONTROL_MESSAGE.
    #[error("json object {index}: unknown messageType {message_type:?}")]
    UnknownMessageType {
        /// 0-based index of the JSON object within the input.
        index: usize,
        /// The value found.
        message_type: String,
    },
    /// A KPL record shorter than its magic and digest.
    #[error("kpl record of {len} bytes is too short")]
    KplTooShort {
        /// Length of the record.
        len: usize,
    },
    /// The MD5 trailer of a KPL record does not match its body.
    #[error("kpl record digest mismatch")]
    KplDigestMismatch,
    /// The protobuf body of a KPL record is malformed.
    #[error("bad kpl protobuf at byte {offset}: {reason}")]
    KplProtobuf {
        /// Byte offset within the protobuf body.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// The Parquet object cannot be read.
    #[error("unreadable parquet: {0}")]
    Parquet(String),
    /// A Parquet column has a type that cannot be rendered as a flow log value.
    #[error("parquet column {column:?} has unsupported type {data_type}")]
    ParquetColumnType {
        /// Column name.
        column: String,
        /// Its Arrow data type.
        data_type: String,
    },
    /// The Parquet column names do not form a format.
    #[error("parquet columns do not form a format: {0}")]
    ParquetFormat(#[source] FormatError),
    /// Framings nested deeper than allowed (e.g. gzip inside gzip inside KPL ...).
    #[error("framings nested more than {MAX_DEPTH} deep")]
    TooDeep,
}
