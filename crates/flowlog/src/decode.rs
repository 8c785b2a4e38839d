//! Framings: plain lines, gzip, CloudWatch Logs envelopes, Firehose JSON, KPL, Parquet.

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::str::FromStr;

use serde::Deserialize;

use crate::envelope;
use crate::field::Field;
use crate::format::{Format, FormatError};
use crate::line::{LineError, LineErrorKind, LineParser};
use crate::record::{FlowRecord, Parsed};
use crate::scan;

/// How one input object or record is packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Framing {
    /// Detect by content ([`Framing::detect`]).
    #[default]
    Auto,
    /// Plain text lines (an S3 `.log` object, optionally starting with a header line).
    Lines,
    /// Gzip (single or multi-member); the inflated content is detected again.
    Gzip,
    /// CloudWatch Logs subscription envelope(s) (JSON, often gzip-compressed).
    CwLogs,
    /// Firehose direct-put records `{"message":"<line>"}`, one or more.
    Firehose,
    /// A KPL-aggregated Kinesis record (magic `f3 89 9a c2`).
    Kpl,
    /// A Parquet flow-log object as S3 delivers it.
    Parquet,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// The first bytes of every gzip member: the magic and compression method 8 (deflate).
const GZIP_MEMBER_START: &[u8] = &[0x1f, 0x8b, 0x08];
const KPL_MAGIC: &[u8] = &[0xf3, 0x89, 0x9a, 0xc2];
const PARQUET_MAGIC: &[u8] = b"PAR1";
/// Deepest nesting of framings (KPL holding gzip holding JSON is depth 2).
const MAX_DEPTH: u32 = 4;

impl Framing {
    /// Every framing, in `FromStr` spelling order.
    pub const ALL: [Framing; 7] = [
        Framing::Auto,
        Framing::Lines,
        Framing::Gzip,
        Framing::CwLogs,
        Framing::Firehose,
        Framing::Kpl,
        Framing::Parquet,
    ];

    /// The lowercase name accepted by `FromStr`.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Auto => "auto",
            Framing::Lines => "lines",
            Framing::Gzip => "gzip",
            Framing::CwLogs => "cwlogs",
            Framing::Firehose => "firehose",
            Framing::Kpl => "kpl",
            Framing::Parquet => "parquet",
        }
    }

    /// Detects the framing of `bytes` by content: gzip magic `1f 8b`, `PAR1`, KPL magic
    /// `f3 89 9a c2`, a JSON object (`{`, CloudWatch Logs when it names `messageType`, else
    /// Firehose), otherwise plain lines. Never returns [`Framing::Auto`].
    pub fn detect(bytes: &[u8]) -> Framing {
        if bytes.starts_with(GZIP_MAGIC) {
            return Framing::Gzip;
        }
        if bytes.starts_with(PARQUET_MAGIC) {
            return Framing::Parquet;
        }
        if bytes.starts_with(KPL_MAGIC) {
            return Framing::Kpl;
        }
        let body = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            let head = &body[..body.len().min(4096)];
            if memchr::memmem::find(head, b"\"messageType\"").is_some()
                || memchr::memmem::find(head, b"\"logEvents\"").is_some()
            {
                return Framing::CwLogs;
            }
            return Framing::Firehose;
        }
        Framing::Lines
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A framing name that `Framing::from_str` does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown framing {0:?} (expected auto, lines, gzip, cwlogs, firehose, kpl or parquet)")]
pub struct UnknownFraming(pub String);

impl FromStr for Framing {
    type Err = UnknownFraming;
    fn from_str(s: &str) -> Result<Framing, UnknownFraming> {
        Framing::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFraming(s.to_string()))
    }
}

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
    let mut d = Decoder {
        opts,
        sink,
        parser: LineParser::new(),
        ends: None,
        items: Vec::new(),
        header: None,
        fallback: opts.format.clone().unwrap_or_else(Format::default_v2),
        summary: Summary { input_bytes: input.len() as u64, ..Summary::default() },
        line_number: 0,
        budget: opts.max_decompressed_bytes,
    };
    d.decode(input, opts.framing, 0)?;
    Ok(d.summary)
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
    let mut d = Decoder {
        opts,
        sink,
        parser: LineParser::new(),
        ends: None,
        items: Vec::new(),
        header: None,
        fallback: opts.format.clone().unwrap_or_else(Format::default_v2),
        summary: Summary { input_bytes: text.len() as u64, ..Summary::default() },
        line_number: 0,
        budget: 0,
    };
    d.feed_text(text, true);
    BlockSummary { summary: d.summary, last_header: d.header }
}

/// The format named by `line` if it is a header line (`version account-id ...`), else `None`.
pub fn header_format(line: &[u8]) -> Option<Format> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !looks_like_header(line) {
        return None;
    }
    std::str::from_utf8(line).ok().and_then(|s| Format::parse(s).ok())
}

/// Inflates a gzip object of one or more members into at most `limit` bytes: with libdeflate when
/// it is certainly one member (see `inflate_one_member`), else with the streaming multi-member
/// inflater ([`crate::gz_reader`]: zlib-rs, or ISA-L with the `isal` feature). Errors:
/// [`DecodeError::Gzip`] for damaged or truncated input, [`DecodeError::DecompressionLimit`] past
/// `limit`.
pub fn gunzip(data: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut room = InflateRoom::default();
    let n = room.gunzip(data, limit)?;
    room.buf.truncate(n);
    Ok(room.buf)
}

/// Where inflated text goes: a buffer and a libdeflate decompressor, reused from object to object.
///
/// [`for_each_record`] inflates into the calling thread's room (`ROOM`) instead of a fresh
/// buffer per object: the consumer inflates one CloudWatch Logs envelope per Kinesis record
/// (~100-200 KB each) and replay one S3 object at a time, and writing into fresh memory costs a
/// page fault and the zeroing of a page per 4 KiB, which took about as long as inflating itself
/// (docs/benchmarks-history.md, 2026-12-02 03:20–04:15 UTC).
#[derive(Default)]
struct InflateRoom {
    /// The inflated text of the last object starts at 0. Its `len` is how much of it has been
    /// initialized; only growth is ever zeroed.
    buf: Vec<u8>,
    decompressor: Option<libdeflater::Decompressor>,
}

/// A thread keeps a room at most this large between objects (larger ones are freed after use).
const KEEP_ROOM_BYTES: usize = 64 << 20;

thread_local! {
    static ROOM: std::cell::RefCell<InflateRoom> = std::cell::RefCell::default();
}

impl InflateRoom {
    /// The calling thread's room (an empty one if another call on this thread holds it, as a
    /// gzip object inside a gzip object does).
    fn take() -> InflateRoom {
        ROOM.try_with(|r| std::mem::take(&mut *r.borrow_mut())).unwrap_or_default()
    }

    /// Gives the room back to the calling thread, unless it is too large to keep or the thread
    /// already holds a larger one.
    fn put_back(self) {
        if self.buf.capacity() <= KEEP_ROOM_BYTES {
            let _ = ROOM.try_with(|r| {
                let mut r = r.borrow_mut();
                if r.buf.capacity() <= self.buf.capacity() {
                    *r = self;
                }
            });
        }
    }

    /// Inflates `data` into `self.buf` from its start, as [`gunzip`] does; the inflated length.
    fn gunzip(&mut self, data: &[u8], limit: u64) -> Result<usize, DecodeError> {
        if let Some(n) = self.inflate_one_member(data, limit) {
            return Ok(n);
        }
        let mut dec = crate::gz::gz_reader(data);
        self.read_bounded(&mut dec, limit)
    }

    /// Reads all of `r` into `self.buf` from its start, refusing more than `limit` bytes; the
    /// length read.
    ///
    /// The buffer grows by doubling, but never past `limit + 1` bytes (the one byte more shows
    /// that the limit is exceeded), so the memory a bomb can take is the limit, not the next power
    /// of two above it (`read_to_end` took up to 2x the limit: #28 item 6). Bytes already
    /// initialized in a reused room are written over, not zeroed again.
    fn read_bounded(&mut self, r: &mut impl Read, limit: u64) -> Result<usize, DecodeError> {
        /// The first size a buffer grows to: small objects (one Kinesis record) need no more.
        const FIRST: usize = 64 << 10;
        /// Buffers grow by doubling up to this size, then take the whole limit at once.
        const RESERVE_WHOLE_AFTER: usize = 4 << 20;
        /// Limits above this (configured far past the defaults) keep growing by doubling.
        const RESERVE_WHOLE_MAX: usize = 4 << 30;
        let cap_max = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
        let mut n = 0;
        loop {
            let end = self.buf.len().min(cap_max);
            if n == end {
                if n == cap_max {
                    return Err(DecodeError::DecompressionLimit { limit });
                }
                // Here `self.buf.len() == n < cap_max`.
                let grow_to = n.max(FIRST / 2).saturating_mul(2).min(cap_max);
                if grow_to > RESERVE_WHOLE_AFTER && cap_max <= RESERVE_WHOLE_MAX {
                    // Past a few MiB, reserve the whole limit once: pages not yet written cost no
                    // memory, while every doubling would move the text into a new block and the
                    // allocator keeps the blocks it freed resident (a bomb then held about twice
                    // the limit).
                    self.buf.reserve_exact(cap_max - n);
                } else {
                    self.buf.reserve_exact(grow_to - n);
                }
                self.buf.resize(grow_to, 0);
                continue;
            }
            match r.read(&mut self.buf[n..end]) {
                Ok(0) => return Ok(n),
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DecodeError::Gzip(e)),
            }
        }
    }

    /// Inflates `data` with libdeflate (about twice as fast as a streaming inflater) when it is
    /// certainly one gzip member of at most `budget` bytes; `None` sends the caller to the
    /// streaming multi-member inflater, which also gives the precise error for damaged input.
    ///
    /// libdeflate's safe API neither reports how much input a member used nor rejects bytes after
    /// it, so a second member would be silently dropped. Every gzip member starts with `1f 8b 08`;
    /// when those three bytes occur nowhere after the first byte, there is no second member.
    /// (Compressed data holds them by chance about once per 16 MiB; such objects take the
    /// streaming path.) The output is sized by the trailer's ISIZE and must fill it exactly.
    fn inflate_one_member(&mut self, data: &[u8], budget: u64) -> Option<usize> {
        let trailer: [u8; 4] = data.get(data.len().checked_sub(4)?..)?.try_into().ok()?;
        let size = u32::from_le_bytes(trailer) as usize;
        if data.len() < 18 || !data.starts_with(GZIP_MEMBER_START) || size as u64 > budget {
            return None;
        }
        if memchr::memmem::find(&data[1..], GZIP_MEMBER_START).is_some() {
            return None;
        }
        if self.buf.len() < size {
            if self.buf.capacity() >= size {
                self.buf.resize(size, 0);
            } else {
                // Zeroed by the allocator: fresh pages need no memset.
                self.buf = vec![0u8; size];
            }
        }
        let out = &mut self.buf[..size];
        let n = self
            .decompressor
            .get_or_insert_with(libdeflater::Decompressor::new)
            .gzip_decompress(data, out)
            .ok()?;
        (n == size).then_some(size)
    }
}

struct Decoder<'o, S> {
    opts: &'o DecodeOptions,
    sink: &'o mut S,
    parser: LineParser,
    /// Room for the field ends of one line (the structural scan's), reused: made on first use.
    ends: Option<Box<[u32; scan::MAX_ENDS]>>,
    /// Room for the items of one JSON payload (the envelope fast path's), reused.
    items: Vec<envelope::Item>,
    /// The format from the last header line seen, if any.
    header: Option<Format>,
    fallback: Format,
    summary: Summary,
    line_number: u64,
    /// Decompressed bytes still allowed.
    budget: u64,
}

impl<S: RecordSink> Decoder<'_, S> {
    fn decode(&mut self, data: &[u8], framing: Framing, depth: u32) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let explicit_gzip_inside =
            matches!(framing, Framing::Lines | Framing::CwLogs | Framing::Firehose)
                && data.starts_with(GZIP_MAGIC);
        if explicit_gzip_inside {
            return self.decode_gzip(data, Some(framing), depth);
        }
        match framing {
            Framing::Auto => self.decode(data, Framing::detect(data), depth),
            Framing::Lines => {
                self.feed_text(data, true);
                Ok(())
            }
            Framing::Gzip => self.decode_gzip(data, None, depth),
            Framing::CwLogs | Framing::Firehose => self.decode_json(data),
            Framing::Kpl => self.decode_kpl(data, depth),
            Framing::Parquet => {
                let mut budget = self.budget;
                let limit = self.opts.max_decompressed_bytes;
                let result = crate::pq::decode_parquet(data, &mut budget, limit, |format, line| {
                    self.feed_line(line, format);
                });
                self.budget = budget;
                result
            }
        }
    }

    /// Inflates `data` into the thread's [`InflateRoom`] and decodes the text in `framing` (detected
    /// from the text when `None`).
    fn decode_gzip(
        &mut self,
        data: &[u8],
        framing: Option<Framing>,
        depth: u32,
    ) -> Result<(), DecodeError> {
        let mut room = InflateRoom::take();
        let result = match room.gunzip(data, self.budget) {
            Ok(n) => {
                self.budget -= n as u64;
                let text = &room.buf[..n];
                self.decode(text, framing.unwrap_or_else(|| Framing::detect(text)), depth + 1)
            }
            Err(DecodeError::DecompressionLimit { .. }) => {
                Err(DecodeError::DecompressionLimit { limit: self.opts.max_decompressed_bytes })
            }
            Err(e) => Err(e),
        };
        room.put_back();
        result
    }

    /// Feeds text of many lines; `headers` enables header-line detection.
    ///
    /// Printable-ASCII lines come from the structural scan with their field ends found
    /// ([`crate::scan`]); every other line, and every line the fast path cannot decide on its own,
    /// goes through [`Decoder::text_line`], so the outcome is exactly that of parsing each line with
    /// [`LineParser::parse`].
    #[allow(unsafe_code)] // reason: calling the AVX2 build of this function once AVX2 is detected
    fn feed_text(&mut self, text: &[u8], headers: bool) {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = scan::Avx2::detect() {
            // SAFETY: `avx2` exists, so this CPU has AVX2.
            return unsafe { self.feed_text_avx2(avx2, text, headers) };
        }
        self.feed_text_with(scan::Baseline, text, headers);
    }

    /// [`Decoder::feed_text`] compiled for AVX2 and BMI1/2: the scan classifies 32 bytes per
    /// instruction, and the decoder and sink inlined into it may use the newer instructions too.
    ///
    /// # Safety
    /// The CPU must have AVX2, BMI1 and BMI2 (`avx2` proves it).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2")]
    #[allow(unsafe_code)] // reason: compiled for AVX2; the caller holds the proof it is there
    unsafe fn feed_text_avx2(&mut self, avx2: scan::Avx2, text: &[u8], headers: bool) {
        self.feed_text_with(avx2, text, headers);
    }

    /// The body of [`Decoder::feed_text`] for one classifier.
    #[inline(always)]
    fn feed_text_with<C: FastLine>(&mut self, classifier: C, text: &[u8], headers: bool) {
        self.summary.decoded_bytes += text.len() as u64;
        // Taken out of `self` while the closure borrows the rest of it.
        let mut room = self.ends.take().unwrap_or_else(|| Box::new([0; scan::MAX_ENDS]));
        // The per-line work is not written in this closure: a closure is a function of its own,
        // which does not inherit `#[target_feature]` and is too large, with the walk's several
        // call sites, to be inlined into `feed_text_avx2`; so it would be compiled for the
        // baseline and call the AVX2 value check and the SSSE3 address parser out of line.
        // `FastLine::plain_line` is the build of that work for `classifier`'s instructions.
        scan::walk_lines(classifier, text, &mut room, |line| {
            self.line_number += 1;
            match line {
                scan::Line::Plain(line, ends, rest) => {
                    classifier.plain_line(self, line, ends, rest, headers)
                }
                scan::Line::Other(line) => self.text_line(line, headers),
            }
        });
        self.ends = Some(room);
    }

    /// One printable-ASCII line from the structural scan (its number already counted), with its
    /// field ends and `rest`, the text from its start to the end of the block: checked in the
    /// window the scan just read and handed to the sink, or sent to [`Decoder::text_line`] /
    /// [`Decoder::bad_line`] when the fast path cannot decide or the line is damaged.
    #[inline(always)]
    fn plain_line<C: scan::Classifier>(
        &mut self,
        classifier: C,
        line: &[u8],
        ends: &[u32],
        rest: &[u8],
        headers: bool,
    ) {
        let max = self.opts.max_line_bytes.min(u32::MAX as usize - 1);
        let format = self.header.as_ref().unwrap_or(&self.fallback);
        let first = line.first().copied().unwrap_or(b' ');
        // Empty or space-led lines may be blank; letter-led lines may be headers; wrong
        // widths and lengths get their exact error there too.
        let token = &line[..ends[0] as usize];
        if first == b' '
            || (headers && is_header_token(token))
            || ends.len() != format.len()
            || line.len() > max
        {
            return self.text_line(line, headers);
        }
        // Checked in the window the scan just read; the exact check only when the fast one
        // is not sure (a damaged value, an IPv6 address, a long number).
        let parsed = match crate::validate::check(classifier, rest, line, ends, format.plan()) {
            Some(parsed) => parsed,
            None => match check_exact(line, ends, format) {
                Ok(()) => Parsed::default(),
                Err(kind) => return self.bad_line(kind),
            },
        };
        self.summary.records += 1;
        self.sink.record(&FlowRecord::with_parsed(line, ends, format, self.line_number, parsed));
    }

    /// [`Decoder::plain_line`] compiled for AVX2 and BMI1/2, so that the value check's AVX2
    /// masks, the SSSE3 address parser and the sink are inlined into it.
    ///
    /// # Safety
    /// The CPU must have AVX2, BMI1 and BMI2 (`avx2` proves it).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2")]
    #[allow(unsafe_code)] // reason: compiled for AVX2; the caller holds the proof it is there
    unsafe fn plain_line_avx2(
        &mut self,
        avx2: scan::Avx2,
        line: &[u8],
        ends: &[u32],
        rest: &[u8],
        headers: bool,
    ) {
        self.plain_line(avx2, line, ends, rest, headers);
    }

    /// One line of text (its number already counted) that the fast path did not take: blank lines
    /// are skipped, header lines change the format, the rest are parsed and validated exactly.
    #[cold]
    fn text_line(&mut self, line: &[u8], headers: bool) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if is_blank(line) {
            return;
        }
        if headers && looks_like_header(line) {
            self.header_line(line);
            return;
        }
        self.parse_line(line, None);
    }

    /// A line of the fast path whose values are not all of their types.
    #[cold]
    fn bad_line(&mut self, kind: LineErrorKind) {
        self.summary.malformed += 1;
        self.sink.malformed(&LineError { line: self.line_number, kind });
    }

    /// Parses one line under `format` (else the format in force) and hands the record or the
    /// error to the sink, counting it.
    fn parse_line(&mut self, line: &[u8], format: Option<&Format>) {
        let format = format.unwrap_or(self.header.as_ref().unwrap_or(&self.fallback));
        match self.parser.parse(line, format, self.line_number, self.opts.max_line_bytes) {
            Ok(rec) => {
                self.summary.records += 1;
                self.sink.record(&rec);
            }
            Err(e) => {
                self.summary.malformed += 1;
                self.sink.malformed(&e);
            }
        }
    }

    fn header_line(&mut self, line: &[u8]) {
        let parsed = std::str::from_utf8(line).ok().and_then(|s| Format::parse(s).ok());
        match parsed {
            Some(f) => {
                self.summary.headers += 1;
                self.header = Some(f);
            }
            None => {
                self.summary.malformed += 1;
                let e = LineError { line: self.line_number, kind: LineErrorKind::BadHeader };
                self.sink.malformed(&e);
            }
        }
    }

    /// Feeds one rendered line under an explicit format (Parquet rows).
    fn feed_line(&mut self, line: &[u8], format: &Format) {
        self.line_number += 1;
        self.summary.decoded_bytes += line.len() as u64 + 1;
        self.parse_line(line, Some(format));
    }

    fn decode_json(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        // The fast path first; it declines (`None`) whatever it does not handle exactly as
        // serde_json would, before anything is fed.
        let mut items = std::mem::take(&mut self.items);
        let result = if envelope::scan(data, &mut items).is_some() {
            for item in &items {
                match item {
                    envelope::Item::Control => self.control_message(),
                    envelope::Item::Text(r) => self.feed_text(&data[r.clone()], true),
                }
            }
            Ok(())
        } else {
            json_items(data, |item| match item {
                JsonItem::Control => self.control_message(),
                JsonItem::Text(text) => self.feed_text(text, true),
            })
        };
        self.items = items;
        result
    }

    fn control_message(&mut self) {
        self.summary.control_messages += 1;
        self.sink.control_message();
    }

    fn decode_kpl(&mut self, data: &[u8], depth: u32) -> Result<(), DecodeError> {
        let records = crate::kpl::verify(data)?;
        crate::kpl::for_each_data(records, |inner| {
            self.decode(inner, Framing::detect(inner), depth + 1)
        })
    }
}

/// A classifier with the build of [`Decoder::plain_line`] that goes with it: the fast path of a
/// line compiled for the instructions the classifier proves the CPU has.
trait FastLine: scan::Classifier {
    /// [`Decoder::plain_line`] for this classifier.
    fn plain_line<S: RecordSink>(
        self,
        d: &mut Decoder<'_, S>,
        line: &[u8],
        ends: &[u32],
        rest: &[u8],
        headers: bool,
    );
}

impl FastLine for scan::Baseline {
    #[inline(always)]
    fn plain_line<S: RecordSink>(
        self,
        d: &mut Decoder<'_, S>,
        line: &[u8],
        ends: &[u32],
        rest: &[u8],
        headers: bool,
    ) {
        d.plain_line(self, line, ends, rest, headers);
    }
}

#[cfg(target_arch = "x86_64")]
impl FastLine for scan::Avx2 {
    #[inline(always)]
    #[allow(unsafe_code)] // reason: calling the AVX2 build; `self` proves the CPU has AVX2
    fn plain_line<S: RecordSink>(
        self,
        d: &mut Decoder<'_, S>,
        line: &[u8],
        ends: &[u32],
        rest: &[u8],
        headers: bool,
    ) {
        // SAFETY: an `Avx2` value is only made by `Avx2::detect`, after the CPU reported AVX2,
        // BMI1 and BMI2.
        unsafe { d.plain_line_avx2(self, line, ends, rest, headers) }
    }
}

/// The exact check of a line's values ([`crate::line::check_typed`]), off the hot path: for
/// the lines the fast check (`crate::validate::check`) is not sure of.
#[cold]
#[inline(never)]
fn check_exact(line: &[u8], ends: &[u32], format: &Format) -> Result<(), LineErrorKind> {
    crate::line::check_typed(line, ends, format)
}

fn is_blank(line: &[u8]) -> bool {
    match line.first() {
        None => true,
        Some(b' ' | b'\t') => line.iter().all(|b| *b == b' ' || *b == b'\t'),
        Some(_) => false,
    }
}

/// A header line's first token is a field name, never a value. Cheap reject on the first byte.
fn looks_like_header(line: &[u8]) -> bool {
    is_header_token(&line[..memchr::memchr(b' ', line).unwrap_or(line.len())])
}

/// True when `token` (a line's first field) is a field name.
#[inline]
fn is_header_token(token: &[u8]) -> bool {
    match token.first() {
        Some(b) if b.is_ascii_lowercase() || *b == b'$' => {}
        _ => return false,
    }
    std::str::from_utf8(token).ok().and_then(Field::from_any_name).is_some()
}

/// One object of a JSON payload, as serde_json reads it.
pub(crate) enum JsonItem<'a> {
    /// A CloudWatch Logs `CONTROL_MESSAGE`.
    Control,
    /// A log event's `message` (or a Firehose record's), unescaped.
    Text(&'a [u8]),
}

/// The serde_json reading of a CloudWatch Logs / Firehose JSON payload: calls `f` with its items
/// in order, up to the first object that is not valid (its error).
pub(crate) fn json_items(data: &[u8], mut f: impl FnMut(JsonItem<'_>)) -> Result<(), DecodeError> {
    let stream = serde_json::Deserializer::from_slice(data).into_iter::<JsonObject<'_>>();
    for (index, obj) in stream.enumerate() {
        let obj = obj.map_err(|source| DecodeError::Json { index, source })?;
        match (obj.message_type, obj.log_events, obj.message) {
            (Some(t), events, _) => match &*t {
                "CONTROL_MESSAGE" => f(JsonItem::Control),
                "DATA_MESSAGE" => {
                    for ev in events.unwrap_or_default() {
                        f(JsonItem::Text(ev.message.as_bytes()));
                    }
                }
                other => {
                    return Err(DecodeError::UnknownMessageType {
                        index,
                        message_type: other.to_string(),
                    })
                }
            },
            (None, Some(events), _) => {
                for ev in events {
                    f(JsonItem::Text(ev.message.as_bytes()));
                }
            }
            (None, None, Some(message)) => f(JsonItem::Text(message.as_bytes())),
            (None, None, None) => return Err(DecodeError::UnrecognisedJson { index }),
        }
    }
    Ok(())
}

/// Either a CloudWatch Logs envelope or a Firehose record.
#[derive(Deserialize)]
struct JsonObject<'a> {
    #[serde(rename = "messageType", default, borrow, deserialize_with = "opt_cow")]
    message_type: Option<Cow<'a, str>>,
    #[serde(rename = "logEvents", default, borrow)]
    log_events: Option<Vec<LogEvent<'a>>>,
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LogEvent<'a> {
    #[serde(borrow, deserialize_with = "cow")]
    message: Cow<'a, str>,
}

struct CowVisitor;

impl<'de> serde::de::Visitor<'de> for CowVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Borrows the string from the input when it has no escapes (no allocation).
fn cow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    d.deserialize_str(CowVisitor)
}

fn opt_cow<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    cow(d).map(Some)
}

#[cfg(test)]
mod inflate_tests {
    use super::{for_each_record, DecodeOptions, InflateRoom, LineError, RecordSink};
    use crate::FlowRecord;
    use std::io::{Read, Write};

    /// `InflateRoom::inflate_one_member` with a fresh room: the text, or `None`.
    fn inflate_one_member(data: &[u8], budget: u64) -> Option<Vec<u8>> {
        let mut room = InflateRoom::default();
        let n = room.inflate_one_member(data, budget)?;
        Some(room.buf[..n].to_vec())
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("2 123 eni-{i} 10.0.0.{} 8.8.8.8\n", i % 200).into_bytes())
            .collect()
    }

    #[test]
    fn one_member_is_inflated_by_libdeflate() {
        for data in [Vec::new(), b"x".to_vec(), text(20_000)] {
            let gz = gzip(&data);
            assert_eq!(inflate_one_member(&gz, u64::MAX).as_deref(), Some(&data[..]));
            // Over the budget: left to the streaming inflater (which reports the limit).
            if !data.is_empty() {
                assert_eq!(inflate_one_member(&gz, data.len() as u64 - 1), None);
            }
        }
    }

    /// Two members, identical or not, and a member with bytes after it, are never taken for one
    /// member (libdeflate alone would return only the first member's text).
    #[test]
    fn anything_but_exactly_one_member_goes_to_the_streaming_inflater() {
        let one = gzip(&text(1000));
        let mut twice = one.clone();
        twice.extend_from_slice(&one);
        assert_eq!(inflate_one_member(&twice, u64::MAX), None);
        let mut all = Vec::new();
        flate2::read::MultiGzDecoder::new(&twice[..]).read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 2 * text(1000).len());

        let mut other = one.clone();
        other.extend(gzip(b"2 123 eni-x 10.0.0.1 8.8.8.8\n"));
        assert_eq!(inflate_one_member(&other, u64::MAX), None);

        let mut padded = one.clone();
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(inflate_one_member(&padded, u64::MAX), None);

        // Damaged or truncated: left to the streaming inflater for its error.
        let mut bad = one.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert_eq!(inflate_one_member(&bad, u64::MAX), None);
        assert_eq!(inflate_one_member(&one[..one.len() - 1], u64::MAX), None);
        assert_eq!(inflate_one_member(&one[..10], u64::MAX), None);
        assert_eq!(inflate_one_member(b"", u64::MAX), None);
    }

    /// One room inflates objects of every size and shape in turn (larger, smaller, several
    /// members, empty, damaged, one member again): each result is exactly that object's text,
    /// never bytes left over from a larger object before it.
    #[test]
    fn a_reused_room_gives_each_object_exactly_its_text() {
        let big = text(5000);
        let small = text(10);
        let mut two_members = gzip(&small);
        two_members.extend(gzip(&big));
        let mut damaged = gzip(&big);
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        let cases: Vec<(Vec<u8>, Option<Vec<u8>>)> = vec![
            (gzip(&big), Some(big.clone())),
            (gzip(&small), Some(small.clone())),
            (two_members, Some([&small[..], &big[..]].concat())),
            (gzip(b""), Some(Vec::new())),
            (damaged, None),
            (gzip(&small), Some(small.clone())),
            (gzip(&big), Some(big.clone())),
        ];
        let mut room = InflateRoom::default();
        for (i, (gz, want)) in cases.iter().enumerate() {
            let got = room.gunzip(gz, u64::MAX).ok().map(|n| room.buf[..n].to_vec());
            assert_eq!(got.as_ref().map(Vec::len), want.as_ref().map(Vec::len), "case {i}");
            assert!(got == *want, "case {i}: text differs");
        }
    }

    struct Lines(Vec<Vec<u8>>);

    impl RecordSink for Lines {
        fn record(&mut self, rec: &FlowRecord<'_>) {
            self.0.push(rec.line().to_vec());
        }
        fn malformed(&mut self, _: &LineError) {}
    }

    /// Through `for_each_record` (the thread's room): a small object after a large one yields
    /// only its own lines, also when the gzip object sits inside another.
    #[test]
    fn decoding_after_a_larger_object_sees_only_the_new_text() {
        let line = |i: usize| {
            format!("2 123 eni-1 10.0.0.{} 8.8.8.8 1 2 6 1 40 {} 60 REJECT OK", i % 250, 3600 + i)
        };
        let lines = |n: usize| (0..n).map(line).collect::<Vec<_>>();
        let text = |ls: &[String]| {
            ls.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect::<Vec<u8>>()
        };
        for (first, second) in [(3000, 7), (7, 3000), (3000, 0)] {
            for nested in [false, true] {
                let wrap = |t: Vec<u8>| if nested { gzip(&gzip(&t)) } else { gzip(&t) };
                let mut sink = Lines(Vec::new());
                for_each_record(&wrap(text(&lines(first))), &DecodeOptions::default(), &mut sink)
                    .unwrap();
                assert_eq!(sink.0.len(), first);
                let mut sink = Lines(Vec::new());
                let s = for_each_record(
                    &wrap(text(&lines(second))),
                    &DecodeOptions::default(),
                    &mut sink,
                )
                .unwrap();
                let want: Vec<Vec<u8>> =
                    lines(second).into_iter().map(String::into_bytes).collect();
                assert_eq!(
                    (s.records, s.malformed),
                    (second as u64, 0),
                    "{first} then {second}, nested {nested}"
                );
                assert!(sink.0 == want, "{first} then {second}, nested {nested}: lines differ");
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod builds {
    use super::{DecodeOptions, Decoder, LineError, LineParser, RecordSink, Summary};
    use crate::{scan, FlowRecord};

    /// What a decoder handed over: every record's line, number, source and bytes, every error.
    #[derive(Debug, Default, PartialEq)]
    struct Seen(Vec<(Vec<u8>, u64, String, String)>, Vec<LineError>);

    impl RecordSink for Seen {
        fn record(&mut self, rec: &FlowRecord<'_>) {
            let (src, bytes) = (format!("{:?}", rec.srcaddr()), format!("{:?}", rec.bytes()));
            self.0.push((rec.line().to_vec(), rec.line_number(), src, bytes));
        }
        fn malformed(&mut self, err: &LineError) {
            self.1.push(*err);
        }
    }

    fn decode(text: &[u8], avx2: Option<scan::Avx2>) -> (Seen, Summary) {
        let opts = DecodeOptions::default();
        let mut sink = Seen::default();
        let mut d = Decoder {
            opts: &opts,
            sink: &mut sink,
            parser: LineParser::new(),
            ends: None,
            items: Vec::new(),
            header: None,
            fallback: opts.format.clone().unwrap_or_else(crate::Format::default_v2),
            summary: Summary::default(),
            line_number: 0,
            budget: 0,
        };
        match avx2 {
            #[allow(unsafe_code)] // reason: a test calling the AVX2 build after detecting AVX2
            // SAFETY: `avx2` came from `Avx2::detect`, so this CPU has AVX2, BMI1 and BMI2.
            Some(avx2) => unsafe { d.feed_text_avx2(avx2, text, true) },
            None => d.feed_text_with(scan::Baseline, text, true),
        }
        let summary = d.summary;
        (sink, summary)
    }

    /// The per-line fast path has one build per classifier (`FastLine`): the AVX2 build of
    /// `Decoder::plain_line` hands over exactly what the baseline build does, good lines, damaged
    /// values, IPv6, headers and odd bytes alike.
    #[test]
    fn avx2_and_baseline_builds_of_the_line_fast_path_agree() {
        let Some(avx2) = scan::Avx2::detect() else { return };
        let mut text = Vec::new();
        for i in 0..400u32 {
            let line = match i % 8 {
                0 => format!("2 123 eni-1 10.0.{}.{} 8.8.8.8 44{} 53 17 1 {} 1 2 REJECT OK", i % 7, i % 250, i % 10, i * 977),
                1 => format!("2 123 eni-1 10.0.0.{} 8.8.8.8 44x3 53 17 1 60 1 2 REJECT OK", i % 300),
                2 => format!("2 123 eni-1 2001:db8::{i:x} 8.8.8.8 1 53 17 1 60 1 2 ACCEPT OK"),
                3 => "2 - - - - - - - - - 1 2 - NODATA".to_string(),
                4 => format!("2 123 eni-1 10.0.0.{} 8.8.8.8 1 53 17 1 {}99999999999999999999 1 2 REJECT OK", i % 250, i),
                5 => "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status".to_string(),
                6 => format!("2 123 eni-1 10.0.0.{}\r 8.8.8.8 1 53 17 1 60 1 2 REJECT OK", i % 250),
                _ => format!("2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK{}", " x".repeat(i as usize % 3)),
            };
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        let (base, base_summary) = decode(&text, None);
        let (fast, fast_summary) = decode(&text, Some(avx2));
        assert!(!base.0.is_empty() && !base.1.is_empty(), "the text must hold good and bad lines");
        assert_eq!(fast_summary, base_summary);
        assert_eq!(fast, base);
    }
}
