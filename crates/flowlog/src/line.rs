//! Splitting one line into fields: the hot path.

use crate::field::{Field, ValueType};
use crate::format::Format;
use crate::record::FlowRecord;

/// Why one line could not be parsed as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineErrorKind {
    /// Fewer space-separated fields than the format has.
    #[error("too few fields: expected {expected}, found {found}")]
    TooFewFields {
        /// Fields in the format.
        expected: usize,
        /// Fields on the line.
        found: usize,
    },
    /// More space-separated fields than the format has.
    #[error("too many fields: expected {expected}, found {found}")]
    TooManyFields {
        /// Fields in the format.
        expected: usize,
        /// Fields on the line.
        found: usize,
    },
    /// The line is longer than `max_line_bytes`.
    #[error("line of {len} bytes is longer than the {max} allowed")]
    TooLong {
        /// Length of the line.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The line is not valid UTF-8.
    #[error("invalid utf-8 at byte {offset}")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence within the line.
        offset: usize,
    },
    /// The line holds a control byte (binary junk).
    #[error("control byte 0x{byte:02x} at byte {offset}")]
    ControlByte {
        /// Byte offset within the line.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// A line that looks like a header (its first token is a field name) but is not a valid one.
    #[error("bad header line")]
    BadHeader,
    /// A value (other than `-`, absent) is not of its field's type: the first such on the line.
    #[error("field {position} ({field}) is not {expected}")]
    BadValue {
        /// The field.
        field: Field,
        /// Its 1-based position on the line.
        position: u16,
        /// What its value must be.
        expected: ValueType,
    },
}

/// The error for the value at 0-based `position` of `format`.
#[cold]
fn bad_value(format: &Format, position: usize) -> LineErrorKind {
    let field = format.fields().get(position).copied().unwrap_or(Field::Unknown(0));
    // A format has at most `MAX_FORMAT_FIELDS` (1024) fields.
    let position = u16::try_from(position + 1).unwrap_or(u16::MAX);
    LineErrorKind::BadValue { field, position, expected: field.value_type() }
}

/// The value at `i` of a line split at `ends` (empty if `ends` is short, which callers rule out).
#[inline(always)]
fn value<'a>(line: &'a [u8], ends: &[u32], i: usize) -> &'a [u8] {
    let end = ends.get(i).map_or(0, |e| *e as usize);
    let start = match i.checked_sub(1) {
        Some(p) => ends.get(p).map_or(0, |e| *e as usize + 1),
        None => 0,
    };
    line.get(start..end).unwrap_or_default()
}

/// Checks the values of the typed (not free-text) fields of a line that holds only printable
/// ASCII, where free text needs no check. `ends` holds `format.len()` field ends.
///
/// This is the whole cost of validation on the hot path: one pass over the typed fields of the
/// line, whose bytes the scan has just brought into cache.
#[inline(always)]
pub(crate) fn check_typed(line: &[u8], ends: &[u32], format: &Format) -> Result<(), LineErrorKind> {
    for &(pos, ty) in format.typed() {
        let v = value(line, ends, pos as usize);
        if v != b"-" && !ty.accepts(v) {
            return Err(bad_value(format, pos as usize));
        }
    }
    Ok(())
}

/// Checks every value of a line that may hold any byte (free text included), in order.
#[cold]
fn check_all(line: &[u8], ends: &[u32], format: &Format) -> Result<(), LineErrorKind> {
    for (i, field) in format.fields().iter().enumerate() {
        let v = value(line, ends, i);
        if v != b"-" && !field.value_type().accepts(v) {
            return Err(bad_value(format, i));
        }
    }
    Ok(())
}

/// One damaged line: callers count and skip it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct LineError {
    /// 1-based line number within the decoded text.
    pub line: u64,
    /// What is wrong with it.
    pub kind: LineErrorKind,
}

/// A reusable line parser: owns the field-offset buffer so that parsing allocates nothing once
/// the buffer has grown to the widest line seen.
#[derive(Debug, Default, Clone)]
pub struct LineParser {
    ends: Vec<u32>,
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;
const SPACES: u64 = LO * b' ' as u64;

/// Adds to `ends` the offset of every space in the 8-byte word `x` at `base`; returns a word whose
/// high bits are non-zero if some byte is below 0x20 or at least 0x7f.
#[inline(always)]
fn scan_word(x: u64, base: u32, ends: &mut Vec<u32>) -> u64 {
    let t = x ^ SPACES;
    // High bit set exactly in the bytes of `t` that are zero (no carries cross bytes).
    let mut m = !(((t & !HI).wrapping_add(!HI)) | t | !HI);
    while m != 0 {
        ends.push(base + m.trailing_zeros() / 8);
        m &= m - 1;
    }
    // Bytes below 0x20 or at/above 0x80, and DEL (0x7f): existence is exact, positions are not.
    let del = x ^ (LO * 0x7f);
    (x.wrapping_sub(SPACES) & !x) | x | (del.wrapping_sub(LO) & !del)
}

impl LineParser {
    /// A parser with an empty offset buffer.
    pub fn new() -> LineParser {
        LineParser::default()
    }

    /// Parses one line (without its `\n`; a trailing `\r` is removed) under `format`.
    ///
    /// Guarantee: `Ok` exactly when the line is at most `max_line_bytes` long, is UTF-8 without
    /// control bytes, has `format.len()` fields separated by single spaces (the naive
    /// equivalent is `line.split(' ').count() == format.len()`), and every value is `-` (absent)
    /// or of its field's [`ValueType`] (the first that is not is a
    /// [`LineErrorKind::BadValue`]): the naive equivalent is [`crate::naive::naive_split`].
    ///
    /// ```
    /// use flowlog::{Field, Format, LineParser};
    /// let format = Format::default_v2();
    /// let mut p = LineParser::new();
    /// let line = b"2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK";
    /// let rec = p.parse(line, &format, 1, 65536).unwrap();
    /// assert_eq!(rec.raw(Field::Action), Some(&b"REJECT"[..]));
    /// ```
    #[inline]
    pub fn parse<'a>(
        &'a mut self,
        line: &'a [u8],
        format: &'a Format,
        line_number: u64,
        max_line_bytes: usize,
    ) -> Result<FlowRecord<'a>, LineError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let err = |kind| LineError { line: line_number, kind };
        let max = max_line_bytes.min(u32::MAX as usize - 1);
        if line.len() > max {
            return Err(err(LineErrorKind::TooLong { len: line.len(), max: max_line_bytes }));
        }
        let ends = &mut self.ends;
        ends.clear();
        let mut junk = 0u64;
        let mut chunks = line.chunks_exact(8);
        let mut base = 0u32;
        for c in &mut chunks {
            let x = u64::from_le_bytes(c.try_into().unwrap_or([b'A'; 8]));
            junk |= scan_word(x, base, ends);
            base += 8;
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [b'A'; 8];
            buf[..rest.len()].copy_from_slice(rest);
            junk |= scan_word(u64::from_le_bytes(buf), base, ends);
        }
        // `line.len() <= max < u32::MAX`, checked above.
        ends.push(line.len() as u32);
        let ascii = junk & HI == 0;
        if !ascii {
            if let Err(e) = std::str::from_utf8(line) {
                return Err(err(LineErrorKind::NotUtf8 { offset: e.valid_up_to() }));
            }
            if let Some(offset) = line.iter().position(|b| *b < 0x20 || *b == 0x7f) {
                return Err(err(LineErrorKind::ControlByte { offset, byte: line[offset] }));
            }
        }
        let (expected, found) = (format.len(), ends.len());
        if found != expected {
            let kind = if found < expected {
                LineErrorKind::TooFewFields { expected, found }
            } else {
                LineErrorKind::TooManyFields { expected, found }
            };
            return Err(err(kind));
        }
        // Non-ASCII text is left: free-text fields must be checked too.
        let checked =
            if ascii { check_typed(line, ends, format) } else { check_all(line, ends, format) };
        checked.map_err(err)?;
        Ok(FlowRecord::new(line, ends, format, line_number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Field;

    fn check(line: &[u8], expected: Result<Vec<&str>, LineErrorKind>) {
        let format = Format::parse("a b c").unwrap();
        let mut p = LineParser::new();
        let got = p
            .parse(line, &format, 7, 64)
            .map(|r| {
                (0..r.len())
                    .map(|i| String::from_utf8_lossy(r.value_at(i).unwrap()).into_owned())
                    .collect::<Vec<_>>()
            })
            .map_err(|e| {
                assert_eq!(e.line, 7);
                e.kind
            });
        let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(line));
    }

    #[test]
    fn splitting() {
        check(b"x y z", Ok(vec!["x", "y", "z"]));
        check(b"x y z\r", Ok(vec!["x", "y", "z"]));
        check(
            b"longer-than-eight yy zzzzzzzzzzzzzzzz",
            Ok(vec!["longer-than-eight", "yy", "zzzzzzzzzzzzzzzz"]),
        );
        check(b"x  z", Ok(vec!["x", "", "z"]));
        check(b"x y", Err(LineErrorKind::TooFewFields { expected: 3, found: 2 }));
        check(b"", Err(LineErrorKind::TooFewFields { expected: 3, found: 1 }));
        check(b"w x y z", Err(LineErrorKind::TooManyFields { expected: 3, found: 4 }));
        check(b"x y z ", Err(LineErrorKind::TooManyFields { expected: 3, found: 4 }));
        check(b"x\0y z", Err(LineErrorKind::ControlByte { offset: 1, byte: 0 }));
        check(b"x\ty z", Err(LineErrorKind::ControlByte { offset: 1, byte: 9 }));
        check(b"x\xffy z", Err(LineErrorKind::NotUtf8 { offset: 1 }));
        // Regression (found by the `line` fuzz target): DEL bytes were not seen as control bytes.
        check(b"\x7f\x7f\x7f-", Err(LineErrorKind::ControlByte { offset: 0, byte: 0x7f }));
        check(b"a b c\x7f", Err(LineErrorKind::ControlByte { offset: 5, byte: 0x7f }));
        // Free text is printable ASCII: valid UTF-8 beyond it is a damaged value.
        let field = Field::Unknown(1);
        let text = LineErrorKind::BadValue { field, position: 2, expected: ValueType::Text };
        check("x \u{e9} z".as_bytes(), Err(text));
        check(&[b'x'; 65], Err(LineErrorKind::TooLong { len: 65, max: 64 }));
    }

    #[test]
    fn raw_absent_and_missing() {
        let format = Format::parse("srcaddr action").unwrap();
        let mut p = LineParser::new();
        let r = p.parse(b"- REJECT", &format, 1, 100).unwrap();
        assert_eq!(r.raw(Field::SrcAddr), None);
        assert_eq!(r.srcaddr(), Ok(None));
        assert_eq!(r.raw(Field::DstAddr), None);
        assert_eq!(r.action(), Ok(Some(crate::Action::Reject)));
        assert_eq!(r.value_at(0), Some(&b"-"[..]));
        assert_eq!(r.value_at(2), None);
    }
}
