//! Framings: plain lines, gzip, CloudWatch Logs envelopes, Firehose JSON, KPL, Parquet.

mod cwjson;
mod decoder;
mod framing;
mod inflate;

#[cfg(test)]
pub(crate) use cwjson::{json_items, JsonItem};
pub use decoder::header_format;
use decoder::Decoder;
pub(crate) use framing::MAX_DEPTH;
pub use framing::{Framing, UnknownFraming};
pub use inflate::gunzip;

pub use crate::error::DecodeError;
use crate::format::Format;
use crate::line::LineError;
use crate::record::FlowRecord;

/// Options for [`for_each_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The framing of the input; [`Framing::Auto`] detects it.
    pub framing: Framing,
    /// The format to use when the input has no header line (default: [`Format::default_v2`]).
    pub format: Option<Format>,
    /// Most bytes all decompression of one input may produce (default 256 MiB).
    pub max_decompressed_bytes: u64,
    /// Longest accepted line (default 64 KiB); longer lines are [`LineErrorKind::TooLong`].
    pub max_line_bytes: usize,
}

impl Default for DecodeOptions {
    fn default() -> DecodeOptions {
        DecodeOptions {
            framing: Framing::Auto,
            format: None,
            max_decompressed_bytes: 256 << 20,
            max_line_bytes: 64 << 10,
        }
    }
}

/// Receives the records of an input.
pub trait RecordSink {
    /// A line with the right number of fields, every value `-` or of its field's type
    /// ([`crate::ValueType`]).
    fn record(&mut self, rec: &FlowRecord<'_>);
    /// A damaged line, skipped.
    fn malformed(&mut self, err: &LineError);
    /// A CloudWatch Logs `CONTROL_MESSAGE` envelope, skipped.
    fn control_message(&mut self) {}
}

/// Counts from decoding one or more inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records delivered to [`RecordSink::record`].
    pub records: u64,
    /// Lines delivered to [`RecordSink::malformed`].
    pub malformed: u64,
    /// CloudWatch Logs control messages skipped.
    pub control_messages: u64,
    /// Header lines seen (S3 objects start with one).
    pub headers: u64,
    /// Bytes of input.
    pub input_bytes: u64,
    /// Bytes of decoded text (after decompression and unwrapping), including line terminators.
    pub decoded_bytes: u64,
}

impl Summary {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Summary) {
        self.records += other.records;
        self.malformed += other.malformed;
        self.control_messages += other.control_messages;
        self.headers += other.headers;
        self.input_bytes += other.input_bytes;
        self.decoded_bytes += other.decoded_bytes;
    }
}

/// Decodes one object or record of any framing and feeds every record to `sink`.
///
/// Format resolution: a header line in the input wins (and applies to the lines after it), else
/// `opts.format`, else [`Format::default_v2`]. Blank lines are skipped; damaged lines go to
/// [`RecordSink::malformed`]. Nothing here panics on any input, and decompression is bounded
/// by `opts.max_decompressed_bytes`.
///
/// ```
/// use flowlog::{for_each_record, DecodeOptions, FlowRecord, LineError, RecordSink};
/// struct Rejects(u64);
/// impl RecordSink for Rejects {
///     fn record(&mut self, rec: &FlowRecord<'_>) {
///         if rec.action() == Ok(Some(flowlog::Action::Reject)) { self.0 += 1 }
///     }
///     fn malformed(&mut self, _: &LineError) {}
/// }
/// let input = b"version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n\
///               2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK\n";
/// let mut sink = Rejects(0);
/// let summary = for_each_record(input, &DecodeOptions::default(), &mut sink).unwrap();
/// assert_eq!((summary.records, summary.headers, sink.0), (1, 1, 1));
/// ```
pub fn for_each_record(
    input: &[u8],
    opts: &DecodeOptions,
    sink: &mut impl RecordSink,
) -> Result<Summary, DecodeError> {
    let mut d = Decoder::new(opts, sink, input.len(), opts.max_decompressed_bytes);
    d.decode(input, opts.framing, 0)?;
    Ok(d.finish().0)
}

/// What [`for_each_text_block`] saw: the usual counts, and the format of the last header line in
/// the block (which applies to the lines after the block, too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockSummary {
    /// Counts of the block.
    pub summary: Summary,
    /// The format named by the block's last valid header line, if it had one.
    pub last_header: Option<Format>,
}

/// Feeds one block of plain text lines (a piece of a larger object cut at a line end) to `sink`,
/// with `opts.format` (or the default v2 format) in force until a header line in the block says
/// otherwise. Line numbers in the records and errors count from 1 at the start of the block.
///
/// This is how large objects are read in parallel without holding them whole: a caller cuts the
/// (decompressed) text at line ends, decodes the blocks on any threads, and checks afterwards that
/// each block began under the format it assumed (see [`BlockSummary::last_header`]).
pub fn for_each_text_block(
    text: &[u8],
    opts: &DecodeOptions,
    sink: &mut impl RecordSink,
) -> BlockSummary {
    let mut d = Decoder::new(opts, sink, text.len(), 0);
    d.feed_text(text, true);
    let (summary, last_header) = d.finish();
    BlockSummary { summary, last_header }
}
