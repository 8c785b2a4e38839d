//! The decoder: one input of any framing, unwrapped level by level down to lines, each line
//! handed to the sink as a record or a damaged line.

use crate::envelope;
use crate::field::Field;
use crate::format::Format;
use crate::line::{LineError, LineErrorKind, LineParser};
use crate::record::{FlowRecord, Parsed};
use crate::scan;

use super::cwjson::{json_items, JsonItem};
use super::framing::{Framing, GZIP_MAGIC, MAX_DEPTH};
use super::inflate::InflateRoom;
use super::{DecodeError, DecodeOptions, RecordSink, Summary};

/// The format named by `line` if it is a header line (`version account-id ...`), else `None`.
pub fn header_format(line: &[u8]) -> Option<Format> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if !looks_like_header(line) {
        return None;
    }
    std::str::from_utf8(line).ok().and_then(|s| Format::parse(s).ok())
}

pub(super) struct Decoder<'o, S> {
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
    /// The longest line the default format's own check takes first
    /// ([`crate::validate::check_default_v2`]) while the format in force is the default one;
    /// 0 while it is not (set with the format, [`Decoder::set_fast_v2`]).
    fast_v2_max: usize,
    summary: Summary,
    line_number: u64,
    /// Decompressed bytes still allowed.
    budget: u64,
}

impl<'o, S: RecordSink> Decoder<'o, S> {
    /// A decoder for one input of `input_len` bytes that may inflate up to `budget` bytes.
    pub(super) fn new(
        opts: &'o DecodeOptions,
        sink: &'o mut S,
        input_len: usize,
        budget: u64,
    ) -> Self {
        Decoder {
            opts,
            sink,
            parser: LineParser::new(),
            ends: None,
            items: Vec::new(),
            header: None,
            fallback: opts.format.clone().unwrap_or_else(Format::default_v2),
            fast_v2_max: 0,
            summary: Summary { input_bytes: input_len as u64, ..Summary::default() },
            line_number: 0,
            budget,
        }
        .set_fast_v2()
    }

    /// Sets [`Decoder::fast_v2_max`] for the format in force.
    fn set_fast_v2(mut self) -> Self {
        self.update_fast_v2();
        self
    }

    /// Sets [`Decoder::fast_v2_max`] for the format in force (after a header line).
    fn update_fast_v2(&mut self) {
        let format = self.header.as_ref().unwrap_or(&self.fallback);
        self.fast_v2_max = if format.plan().is_default_v2() {
            self.opts.max_line_bytes.min(crate::validate::V2_MAX_LINE)
        } else {
            0
        };
    }

    /// What was decoded: the counts, and the format of the last header line seen.
    pub(super) fn finish(self) -> (Summary, Option<Format>) {
        (self.summary, self.header)
    }

    pub(super) fn decode(
        &mut self,
        data: &[u8],
        framing: Framing,
        depth: u32,
    ) -> Result<(), DecodeError> {
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
    pub(super) fn feed_text(&mut self, text: &[u8], headers: bool) {
        #[cfg(target_arch = "x86_64")]
        if let Some(avx2) = scan::Avx2::detect() {
            // SAFETY: `avx2` exists, so this CPU has AVX2.
            return unsafe { self.feed_text_avx2(avx2, text, headers) };
        }
        self.feed_text_with(scan::Baseline, text, headers);
    }

    /// [`Decoder::feed_text`] compiled for AVX2, BMI1/2 and POPCNT: the scan classifies 32 bytes
    /// per instruction, and the decoder and sink inlined into it may use the newer instructions
    /// too.
    ///
    /// # Safety
    /// The CPU must have AVX2, BMI1, BMI2 and POPCNT (`avx2` proves it).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,bmi1,bmi2,popcnt")]
    #[allow(unsafe_code)] // reason: compiled for AVX2; the caller holds the proof it is there
    unsafe fn feed_text_avx2(&mut self, avx2: scan::Avx2, text: &[u8], headers: bool) {
        self.feed_text_with(avx2, text, headers);
    }

    /// The body of [`Decoder::feed_text`] for one classifier.
    #[inline(always)]
    fn feed_text_with<C: scan::Classifier>(&mut self, classifier: C, text: &[u8], headers: bool) {
        self.summary.decoded_bytes += text.len() as u64;
        // Taken out of `self` while the walk borrows the rest of it.
        let mut room = self.ends.take().unwrap_or_else(|| Box::new([0; scan::MAX_ENDS]));
        scan::walk_lines(classifier, text, &mut room, Lines { d: self, classifier, headers });
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
        // Nearly every line: the default format's, checked with no test of blank and header
        // lines (its `version` is digits or `-`) and no look at the plan.
        // `Some(None)`: the default format's check has answered that it is not sure of the line
        // (a damaged value, an `-`, IPv6), which is what `validate::check` would answer again.
        // No closures here: a closure is a function of its own, compiled without the walk's
        // `#[target_feature]` (`scan::OnLine`), and the check would be called out of line.
        let tried = if line.len() <= self.fast_v2_max {
            crate::validate::check_default_v2(classifier, rest, line, ends)
        } else {
            None
        };
        if let Some(Some(parsed)) = tried {
            let format = self.header.as_ref().unwrap_or(&self.fallback);
            self.summary.records += 1;
            let rec = FlowRecord::with_parsed(line, ends, format, self.line_number, parsed);
            return self.sink.record(&rec);
        }
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
        let fast = match tried {
            Some(answer) => answer,
            None => crate::validate::check(classifier, rest, line, ends, format.plan()),
        };
        let parsed = match fast {
            Some(parsed) => parsed,
            None => match check_exact(line, ends, format) {
                Ok(()) => Parsed::default(),
                Err(kind) => return self.bad_line(kind),
            },
        };
        self.summary.records += 1;
        self.sink.record(&FlowRecord::with_parsed(line, ends, format, self.line_number, parsed));
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
                self.update_fast_v2();
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

/// The decoder as the walk's [`scan::OnLine`]: every line's work inlined into the walk, so that
/// under [`Decoder::feed_text_avx2`] the value check's AVX2 masks, the SSSE3 address parser and
/// the sink are compiled for those instructions with no call per line.
struct Lines<'d, 'a, S: RecordSink, C> {
    d: &'d mut Decoder<'a, S>,
    classifier: C,
    /// Header lines may change the format.
    headers: bool,
}

impl<S: RecordSink, C: scan::Classifier> scan::OnLine for Lines<'_, '_, S, C> {
    #[inline(always)]
    fn line(&mut self, line: scan::Line<'_, '_>) {
        self.d.line_number += 1;
        match line {
            scan::Line::Plain(line, ends, rest) => {
                self.d.plain_line(self.classifier, line, ends, rest, self.headers)
            }
            scan::Line::Other(line) => self.d.text_line(line, self.headers),
        }
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
///
/// The first byte's test is inline, in the caller: a record's first field is nearly always
/// `version`, a digit, and a call per line to learn that cost more than the test itself.
#[inline(always)]
fn is_header_token(token: &[u8]) -> bool {
    match token.first() {
        Some(b) if b.is_ascii_lowercase() || *b == b'$' => is_field_name(token),
        _ => false,
    }
}

/// True when `token` names a field (the lookup behind [`is_header_token`], out of line).
#[inline(never)]
fn is_field_name(token: &[u8]) -> bool {
    std::str::from_utf8(token).ok().and_then(Field::from_any_name).is_some()
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
            fast_v2_max: 0,
            summary: Summary::default(),
            line_number: 0,
            budget: 0,
        }
        .set_fast_v2();
        match avx2 {
            #[allow(unsafe_code)] // reason: a test calling the AVX2 build after detecting AVX2
            // SAFETY: `avx2` came from `Avx2::detect`, so this CPU has AVX2, BMI1, BMI2 and POPCNT.
            Some(avx2) => unsafe { d.feed_text_avx2(avx2, text, true) },
            None => d.feed_text_with(scan::Baseline, text, true),
        }
        let summary = d.summary;
        (sink, summary)
    }

    /// The per-line fast path is built once per classifier (inlined into the walk of
    /// `feed_text_avx2` and of the baseline): the AVX2 build hands over exactly what the baseline
    /// build does, good lines, damaged
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
