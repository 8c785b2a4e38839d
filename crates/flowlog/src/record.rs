//! [`FlowRecord`]: a zero-copy view over one parsed line, with typed accessors.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::field::Field;
use crate::format::Format;

/// The `action` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `ACCEPT`
    Accept,
    /// `REJECT`
    Reject,
}

impl Action {
    /// Parses `ACCEPT` or `REJECT`.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Option<Action> {
        // Compared as fixed-size arrays: a few loads and compares inline (a byte-string pattern
        // on a slice calls `memcmp`, once per record on the hot path).
        let x = <&[u8; 6]>::try_from(b).ok()?;
        if x == b"ACCEPT" {
            Some(Action::Accept)
        } else if x == b"REJECT" {
            Some(Action::Reject)
        } else {
            None
        }
    }
}

/// The `log-status` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStatus {
    /// `OK`
    Ok,
    /// `NODATA`
    NoData,
    /// `SKIPDATA`
    SkipData,
}

impl LogStatus {
    /// Parses `OK`, `NODATA` or `SKIPDATA`.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Option<LogStatus> {
        // Fixed-size comparisons, as in `Action::from_bytes`.
        if let Ok(x) = <&[u8; 2]>::try_from(b) {
            return (x == b"OK").then_some(LogStatus::Ok);
        }
        if let Ok(x) = <&[u8; 6]>::try_from(b) {
            return (x == b"NODATA").then_some(LogStatus::NoData);
        }
        (<&[u8; 8]>::try_from(b).ok()? == b"SKIPDATA").then_some(LogStatus::SkipData)
    }
}

/// A field value that does not parse as the type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The value is not an unsigned decimal integer that fits in `u64`.
    #[error("field {field}: value is not an unsigned integer")]
    NotANumber {
        /// The field asked for.
        field: Field,
    },
    /// The value is not an IPv4 or IPv6 address.
    #[error("field {field}: value is not an ip address")]
    NotAnAddress {
        /// The field asked for.
        field: Field,
    },
    /// The value is not one of the allowed words.
    #[error("field {field}: value is not one of {expected}")]
    NotInSet {
        /// The field asked for.
        field: Field,
        /// The allowed words.
        expected: &'static str,
    },
}

/// The values the decoder's check of a line already parsed, kept so that nothing reads them a
/// second time: IPv4 addresses (the check is the parse) and the `action` and `log-status` words.
/// Empty for records of [`crate::LineParser`], whose accessors parse from the bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// The IPv4 value of each address field (slots of `addr_slot`) whose bit is set in `v4_set`.
    v4: [u32; 4],
    /// Bit `k`: `v4[k]` holds the value of the `k`-th address field.
    v4_set: u8,
    /// The `action` word, when present and checked.
    action: Option<Action>,
    /// The `log-status` word, when present and checked.
    log_status: Option<LogStatus>,
}

/// The slot in [`Parsed`] of each address field.
#[inline(always)]
pub(crate) fn addr_slot(field: Field) -> Option<usize> {
    match field {
        Field::SrcAddr => Some(0),
        Field::DstAddr => Some(1),
        Field::PktSrcAddr => Some(2),
        Field::PktDstAddr => Some(3),
        _ => None,
    }
}

impl Parsed {
    /// Keeps the IPv4 value of the address field in `slot` (0..4).
    #[inline(always)]
    pub(crate) fn set_v4(&mut self, slot: usize, a: Ipv4Addr) {
        if let Some(v) = self.v4.get_mut(slot) {
            *v = u32::from(a);
            self.v4_set |= 1 << slot;
        }
    }

    /// Keeps the `action` word.
    #[inline(always)]
    pub(crate) fn set_action(&mut self, a: Action) {
        self.action = Some(a);
    }

    /// Keeps the `log-status` word.
    #[inline(always)]
    pub(crate) fn set_log_status(&mut self, s: LogStatus) {
        self.log_status = Some(s);
    }

    #[inline(always)]
    fn v4(&self, slot: usize) -> Option<Ipv4Addr> {
        if self.v4_set & (1 << slot) != 0 {
            self.v4.get(slot).map(|v| Ipv4Addr::from(*v))
        } else {
            None
        }
    }
}

/// One flow record: a view over the bytes of one line.
///
/// Holds the line, the end offset of every field (from the parser's reusable buffer) and the
/// [`Format`] in force; nothing is copied and values are parsed only when asked for, except those
/// the decoder's check of the line parsed already (IPv4 addresses, `action`, `log-status`), which
/// the accessors return without reading the bytes again.
#[derive(Debug, Clone, Copy)]
pub struct FlowRecord<'a> {
    line: &'a [u8],
    ends: &'a [u32],
    format: &'a Format,
    line_number: u64,
    parsed: Parsed,
}

impl<'a> FlowRecord<'a> {
    /// Builds a record; `ends[i]` is the offset just past field `i` (the separator or line end).
    pub(crate) fn new(
        line: &'a [u8],
        ends: &'a [u32],
        format: &'a Format,
        line_number: u64,
    ) -> FlowRecord<'a> {
        FlowRecord { line, ends, format, line_number, parsed: Parsed::default() }
    }

    /// A record with the values its line's check already parsed.
    #[inline(always)]
    pub(crate) fn with_parsed(
        line: &'a [u8],
        ends: &'a [u32],
        format: &'a Format,
        line_number: u64,
        parsed: Parsed,
    ) -> FlowRecord<'a> {
        FlowRecord { line, ends, format, line_number, parsed }
    }

    /// The whole line (without its line terminator).
    pub fn line(&self) -> &'a [u8] {
        self.line
    }

    /// The 1-based line number within the decoded text.
    pub fn line_number(&self) -> u64 {
        self.line_number
    }

    /// The format the line was parsed with.
    pub fn format(&self) -> &'a Format {
        self.format
    }

    /// Number of fields (equal to `format().len()`).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the record has no field (never for a record produced by this crate).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The raw value at position `i`, `-` included; `None` past the last field.
    #[inline]
    pub fn value_at(&self, i: usize) -> Option<&'a [u8]> {
        let (start, end) = self.span(i)?;
        self.line.get(start..end)
    }

    /// Where the value at position `i` is in the line (start, end), not checked against the
    /// line's length; `None` past the last field.
    #[inline(always)]
    fn span(&self, i: usize) -> Option<(usize, usize)> {
        let end = *self.ends.get(i)? as usize;
        let start = match i.checked_sub(1) {
            Some(p) => *self.ends.get(p)? as usize + 1,
            None => 0,
        };
        Some((start, end))
    }

    /// The raw bytes of `field`; `None` when the format lacks it or the value is `-`.
    #[inline]
    pub fn raw(&self, field: Field) -> Option<&'a [u8]> {
        let v = self.value_at(self.format.position(field)?)?;
        if v == b"-" {
            None
        } else {
            Some(v)
        }
    }

    /// The value of a text field as `&str` (values are printable ASCII, so this is `None` only
    /// when absent).
    pub fn text(&self, field: Field) -> Option<&'a str> {
        std::str::from_utf8(self.raw(field)?).ok()
    }

    /// Iterates over `(field, raw value)` pairs in format order (`None` for `-`).
    pub fn fields(&self) -> impl Iterator<Item = (Field, Option<&'a [u8]>)> + 'a {
        let rec = *self;
        rec.format
            .fields()
            .iter()
            .enumerate()
            .map(move |(i, f)| (*f, rec.value_at(i).filter(|v| *v != b"-")))
    }

    /// Any numeric field as `u64`.
    ///
    /// Values of up to 16 digits are read with one or two 8-byte loads that end where the value
    /// ends ([`digits_ending_at`]): no branch per digit. Ports, protocols and byte counts vary in
    /// length from record to record, and a digit loop's exit was a mispredicted branch per value
    /// read (the detections read four or five of them per record). Tests of the length, not a
    /// `match` on it: that compiles to a jump table, whose indirect jump mispredicts as often.
    #[inline(always)]
    pub fn u64_field(&self, field: Field) -> Result<Option<u64>, FieldError> {
        let Some((s, e)) = self.format.position(field).and_then(|i| self.span(i)) else {
            return Ok(None);
        };
        let n = e.wrapping_sub(s);
        let fast = if n.wrapping_sub(1) < 8 {
            if n == 1 && self.line.get(s) == Some(&b'-') {
                return Ok(None);
            }
            digits_ending_at(self.line, e, n)
        } else if n.wrapping_sub(9) < 8 {
            match (digits_ending_at(self.line, e, 8), digits_ending_at(self.line, e - 8, n - 8)) {
                (Some((lo, a)), Some((hi, b))) => Some((hi * 100_000_000 + lo, a & b)),
                _ => None,
            }
        } else {
            None
        };
        match fast {
            Some((x, true)) => Ok(Some(x)),
            _ => self.u64_field_slow(field, s, e),
        }
    }

    /// [`FlowRecord::u64_field`] of a value the loads could not read (near the line's start, 17
    /// digits or more, empty) or that is not all digits: from the slice.
    #[cold]
    #[inline(never)]
    fn u64_field_slow(&self, field: Field, s: usize, e: usize) -> Result<Option<u64>, FieldError> {
        match self.line.get(s..e) {
            None => Ok(None),
            Some(b"-") => Ok(None),
            Some(v) => parse_u64(v).map(Some).ok_or(FieldError::NotANumber { field }),
        }
    }

    /// Any address field as [`IpAddr`].
    #[inline(always)]
    pub fn addr_field(&self, field: Field) -> Result<Option<IpAddr>, FieldError> {
        // Inline: nearly always the value the line's check kept (a few instructions, read for
        // every record by the counter); parsing the text is the rare case, out of line.
        match addr_slot(field).and_then(|k| self.parsed.v4(k)) {
            Some(a) => Ok(Some(IpAddr::V4(a))),
            None => self.parse_addr_field(field),
        }
    }

    /// The IPv4 value of an address field when the line's check already parsed it (nearly every
    /// record of the structural scan); `None` otherwise — absent, IPv6, or a line of the slow
    /// path: then read [`FlowRecord::addr_field`]. Four bytes in a register: readers of every
    /// record use it to keep addresses out of the stack slots an `Option<IpAddr>` result needs,
    /// whose piecewise stores a wider load then waits on.
    #[inline(always)]
    pub fn ipv4(&self, field: Field) -> Option<Ipv4Addr> {
        addr_slot(field).and_then(|k| self.parsed.v4(k))
    }

    /// [`FlowRecord::addr_field`] from the text.
    #[inline(never)]
    fn parse_addr_field(&self, field: Field) -> Result<Option<IpAddr>, FieldError> {
        match self.raw(field) {
            None => Ok(None),
            Some(v) => parse_addr(v).map(Some).ok_or(FieldError::NotAnAddress { field }),
        }
    }

    /// `action`.
    #[inline]
    pub fn action(&self) -> Result<Option<Action>, FieldError> {
        if let Some(a) = self.parsed.action {
            return Ok(Some(a));
        }
        match self.raw(Field::Action) {
            None => Ok(None),
            Some(v) => Action::from_bytes(v)
                .map(Some)
                .ok_or(FieldError::NotInSet { field: Field::Action, expected: "ACCEPT, REJECT" }),
        }
    }

    /// `log-status`.
    #[inline]
    pub fn log_status(&self) -> Result<Option<LogStatus>, FieldError> {
        if let Some(s) = self.parsed.log_status {
            return Ok(Some(s));
        }
        match self.raw(Field::LogStatus) {
            None => Ok(None),
            Some(v) => LogStatus::from_bytes(v).map(Some).ok_or(FieldError::NotInSet {
                field: Field::LogStatus,
                expected: "OK, NODATA, SKIPDATA",
            }),
        }
    }

    /// `srcaddr`.
    #[inline]
    pub fn srcaddr(&self) -> Result<Option<IpAddr>, FieldError> {
        self.addr_field(Field::SrcAddr)
    }

    /// `dstaddr`.
    #[inline]
    pub fn dstaddr(&self) -> Result<Option<IpAddr>, FieldError> {
        self.addr_field(Field::DstAddr)
    }

    /// `srcport`.
    #[inline]
    pub fn srcport(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::SrcPort)
    }

    /// `dstport`.
    #[inline]
    pub fn dstport(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::DstPort)
    }

    /// `protocol` (IANA number).
    #[inline]
    pub fn protocol(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::Protocol)
    }

    /// `start` (unix seconds).
    #[inline]
    pub fn start(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::Start)
    }

    /// `end` (unix seconds).
    #[inline]
    pub fn end(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::End)
    }

    /// `bytes`.
    #[inline]
    pub fn bytes(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::Bytes)
    }

    /// `packets`.
    #[inline]
    pub fn packets(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::Packets)
    }

    /// `version`.
    #[inline]
    pub fn version(&self) -> Result<Option<u64>, FieldError> {
        self.u64_field(Field::Version)
    }

    /// `account-id` raw bytes (text: may be `unknown`).
    pub fn account_id(&self) -> Option<&'a [u8]> {
        self.raw(Field::AccountId)
    }

    /// `interface-id` raw bytes.
    pub fn interface_id(&self) -> Option<&'a [u8]> {
        self.raw(Field::InterfaceId)
    }
}

/// Parses an unsigned decimal integer from ASCII digits (no sign, no spaces; leading zeros
/// allowed). Same result as `str::parse::<u64>` on digit-only input.
#[inline]
pub fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    if b.len() <= 19 {
        // At most 19 digits cannot overflow: no overflow checks and one test for a non-digit at
        // the end (the value is garbage, and dropped, when there is one). Eight digits at a time
        // when there are that many (timestamps have ten).
        let (mut v, rest, mut bad) = match b.split_first_chunk::<8>() {
            Some((head, rest)) => {
                let x = u64::from_le_bytes(*head);
                (eight_digits(x), rest, !all_digits(x))
            }
            None => (0, b, false),
        };
        for &c in rest {
            let d = c.wrapping_sub(b'0');
            bad |= d > 9;
            v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        }
        return if bad { None } else { Some(v) };
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// The value of the `n` (1..=8) bytes just before `line[e]` as decimal digits, and whether they
/// all are digits; read with one 8-byte load ending at `e`, the bytes before the value replaced
/// by `'0'`. `None` when fewer than 8 bytes precede `e` (the caller then parses the slice).
#[inline(always)]
fn digits_ending_at(line: &[u8], e: usize, n: usize) -> Option<(u64, bool)> {
    let w: [u8; 8] = line.get(e.checked_sub(8)?..e)?.try_into().ok()?;
    let x = u64::from_le_bytes(w);
    // The value is the high `n` bytes (little-endian: the last byte read is the highest).
    let keep = u64::MAX.checked_shl(8 * (8 - n.clamp(1, 8)) as u32).unwrap_or(0);
    let x = (x & keep) | (0x3030_3030_3030_3030 & !keep);
    Some((eight_digits(x), all_digits(x)))
}

/// True when all eight bytes of `x` are ASCII digits.
#[inline(always)]
fn all_digits(x: u64) -> bool {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // High nibble 3, and still 3 after adding 6 to every byte (so the low nibble is at most 9).
    x & HIGH == ZEROS && x.wrapping_add(0x0606_0606_0606_0606) & HIGH == ZEROS
}

/// The value of eight ASCII digits loaded little-endian (first digit in the low byte); garbage,
/// but no panic, when they are not all digits. The SWAR method of `fast_float` / simdjson.
#[inline(always)]
fn eight_digits(x: u64) -> u64 {
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 0x000F_4240_0000_0064; // 100 + (1_000_000 << 32)
    const MUL2: u64 = 0x0000_2710_0000_0001; // 1 + (10_000 << 32)
    let v = x.wrapping_sub(0x3030_3030_3030_3030);
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    (v & MASK).wrapping_mul(MUL1).wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2)) >> 32
}

/// Parses a dotted-quad IPv4 address from bytes with the rules of `Ipv4Addr::from_str`
/// (four decimal octets 0..=255, no leading zeros).
///
/// On x86_64 CPUs with SSSE3 (all but the oldest) the address is checked and converted 16 bytes at
/// a time with no branch per digit (`parse_ipv4_ssse3`): the octet loop's data-dependent branches
/// cost more than the shuffle (docs/benchmarks-history.md, 2026-12-02 07:25–08:45 UTC).
#[inline]
pub fn parse_ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("ssse3") {
        return ssse3_ipv4(b);
    }
    parse_ipv4_scalar(b)
}

/// [`parse_ipv4_ssse3`], on a CPU known to have SSSE3.
#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)] // reason: calling an SSSE3 function after checking that the CPU has SSSE3
fn ssse3_ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    // SAFETY: only called after `is_x86_feature_detected!("ssse3")` returned true.
    unsafe { parse_ipv4_ssse3(b) }
}

/// The digits of one dot pattern of an IPv4 address (octets of 1 to 3 digits: 81 patterns).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct V4Pattern {
    /// Shuffle placing octet k's digits as (hundreds, tens, ones, 0) in lanes 4k..4k+4 (0x80:
    /// zero); a short octet's missing leading digits are zero.
    shuffle: [u8; 16],
    /// 0xff in the lane of the first digit of every octet of two or more digits (which must not
    /// be 0).
    lead: [u8; 16],
    /// The pattern's key ([`v4_key`]): its three dots and the end of the address as bits.
    key: u32,
}

/// Index: (l0 - 1) * 27 + (l1 - 1) * 9 + (l2 - 1) * 3 + (l3 - 1) for octet lengths l0..l3.
#[cfg(target_arch = "x86_64")]
static V4_PATTERNS: [V4Pattern; 81] = v4_patterns();

/// The index in [`V4_PATTERNS`] of the pattern of each [`v4_hash`] (`u8::MAX`: none), so that a
/// pattern is found from its key with a multiply, a shift and a load instead of the octets'
/// lengths one by one.
#[cfg(target_arch = "x86_64")]
static V4_SLOTS: [u8; 256] = v4_slots();

/// The key of an address of `n` bytes with its dots at the bits of `dots` (all below `n`): bit
/// `n` marks the end, so that one number tells the layout and the length (at most 16 bits).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
const fn v4_key(dots: u32, n: usize) -> u32 {
    dots | 1 << n
}

/// A perfect hash of the 81 patterns' keys into 256 slots (found by a search; [`v4_slots`]
/// refuses to build on a collision, so a wrong constant does not compile).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
const fn v4_hash(key: u32) -> usize {
    (key.wrapping_mul(2_804_417_837) >> 14 & 0xff) as usize
}

#[cfg(target_arch = "x86_64")]
const fn v4_patterns() -> [V4Pattern; 81] {
    let mut t = [V4Pattern { shuffle: [0x80; 16], lead: [0; 16], key: 0 }; 81];
    let mut idx = 0;
    while idx < 81 {
        let lens = [idx / 27 + 1, idx / 9 % 3 + 1, idx / 3 % 3 + 1, idx % 3 + 1];
        let mut start = 0;
        let mut k = 0;
        let mut dots = 0;
        while k < 4 {
            let l = lens[k];
            let mut j = 0;
            while j < l {
                t[idx].shuffle[4 * k + 3 - l + j] = (start + j) as u8;
                j += 1;
            }
            if l > 1 {
                t[idx].lead[4 * k + 3 - l] = 0xff;
            }
            if k < 3 {
                dots |= 1 << (start + l);
            }
            start += l + 1;
            k += 1;
        }
        // `start` is now the length plus one.
        t[idx].key = v4_key(dots, start - 1);
        idx += 1;
    }
    t
}

#[cfg(target_arch = "x86_64")]
const fn v4_slots() -> [u8; 256] {
    let patterns = v4_patterns();
    let mut slots = [u8::MAX; 256];
    let mut idx = 0;
    while idx < 81 {
        let h = v4_hash(patterns[idx].key);
        assert!(slots[h] == u8::MAX, "two IPv4 patterns share a hash");
        slots[h] = idx as u8;
        idx += 1;
    }
    slots
}

/// [`parse_ipv4`] with SSSE3: the bytes as one vector, their dots and digits as bitmasks; the
/// dots and the length, as one key, find the table entry of their pattern of octet lengths by a
/// perfect hash (Muła and Langdale's method), which shuffles the digits into place, and two
/// multiply-adds give the four octets.
///
/// # Safety
/// The CPU must support SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
#[allow(unsafe_code)] // reason: an SSSE3 function (the caller checks the CPU); loads are of arrays
pub(crate) unsafe fn parse_ipv4_ssse3(b: &[u8]) -> Option<Ipv4Addr> {
    use std::arch::x86_64::_mm_set_epi64x;
    let n = b.len();
    if !(7..=15).contains(&n) {
        return None;
    }
    // The bytes as one little-endian word, zero past the end: two overlapping loads.
    let word = if n >= 8 {
        let lo = u64::from_le_bytes(b[..8].try_into().ok()?);
        let hi = u64::from_le_bytes(b[n - 8..].try_into().ok()?);
        u128::from(lo) | (u128::from(hi) << ((n - 8) * 8))
    } else {
        let lo = u32::from_le_bytes(b[..4].try_into().ok()?);
        let hi = u32::from_le_bytes(b[3..7].try_into().ok()?);
        u128::from(lo) | (u128::from(hi) << 24)
    };
    let v = _mm_set_epi64x((word >> 64) as i64, word as i64);
    ipv4_of_vector(v, n)
}

/// [`parse_ipv4`] of the `e - s` bytes of `text` from `s`, with SSSE3: when 16 bytes are there
/// to read from `s`, they are loaded as they are (one load; the bytes past the value are left
/// out by the masks) instead of being gathered into a word first.
///
/// # Safety
/// The CPU must support SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
#[allow(unsafe_code)] // reason: an SSSE3 function (the caller checks the CPU); loads are of arrays
pub(crate) unsafe fn parse_ipv4_ssse3_at(text: &[u8], s: usize, e: usize) -> Option<Ipv4Addr> {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128};
    let n = e.wrapping_sub(s);
    match text.get(s..).and_then(|t| t.first_chunk::<16>()) {
        Some(w) if (7..=15).contains(&n) => {
            // SAFETY: an unaligned 16-byte load of a 16-byte array.
            let v = unsafe { _mm_loadu_si128(w.as_ptr().cast::<__m128i>()) };
            ipv4_of_vector(v, n)
        }
        // SAFETY: the caller's CPU has SSSE3.
        _ => unsafe { parse_ipv4_ssse3(text.get(s..e).unwrap_or_default()) },
    }
}

/// The address held in the first `n` (7 to 15) bytes of `v`, whatever the bytes past them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
#[inline]
#[allow(unsafe_code)] // reason: loads of the 16-byte arrays of the pattern table
fn ipv4_of_vector(v: std::arch::x86_64::__m128i, n: usize) -> Option<Ipv4Addr> {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi32, _mm_cvtsi128_si32,
        _mm_loadu_si128, _mm_madd_epi16, _mm_maddubs_epi16, _mm_min_epu8, _mm_movemask_epi8,
        _mm_packs_epi32, _mm_packus_epi16, _mm_set1_epi16, _mm_set1_epi32, _mm_set1_epi8,
        _mm_setr_epi8, _mm_shuffle_epi8, _mm_sub_epi8,
    };
    // The lanes of the value; the others may hold anything (the next field, zeros).
    let inside = (1u32 << n) - 1;
    let dots = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'.' as i8))) as u32 & inside;
    // Digit values; a digit is a byte at most 9 above '0' (unsigned).
    let d = _mm_sub_epi8(v, _mm_set1_epi8(b'0' as i8));
    let digits =
        _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(9)), d)) as u32 & inside;
    // Nothing but dots and digits, and the dots where those of a pattern are (three, octets of
    // 1 to 3 digits): the pattern of the same key.
    if dots | digits != inside {
        return None;
    }
    let key = v4_key(dots, n);
    let pattern = V4_PATTERNS.get(usize::from(V4_SLOTS[v4_hash(key)]))?;
    if pattern.key != key {
        return None;
    }
    // SAFETY: unaligned 16-byte loads of 16-byte arrays.
    let (shuffle, lead) = unsafe {
        (
            _mm_loadu_si128(pattern.shuffle.as_ptr().cast::<__m128i>()),
            _mm_loadu_si128(pattern.lead.as_ptr().cast::<__m128i>()),
        )
    };
    let placed = _mm_shuffle_epi8(d, shuffle);
    // A multi-digit octet starting with 0.
    let zero_lead = _mm_and_si128(_mm_cmpeq_epi8(placed, _mm_set1_epi8(0)), lead);
    // (h * 100 + t * 10, o) per octet as 16-bit lanes, then their sums as 32-bit lanes.
    let weights = _mm_setr_epi8(100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0, 100, 10, 1, 0);
    let octets = _mm_madd_epi16(_mm_maddubs_epi16(placed, weights), _mm_set1_epi16(1));
    let over = _mm_cmpgt_epi32(octets, _mm_set1_epi32(255));
    if _mm_movemask_epi8(zero_lead) | _mm_movemask_epi8(over) != 0 {
        return None;
    }
    let packed = _mm_packus_epi16(_mm_packs_epi32(octets, octets), _mm_set1_epi8(0));
    Some(Ipv4Addr::from((_mm_cvtsi128_si32(packed) as u32).to_le_bytes()))
}

/// [`parse_ipv4`] octet by octet (any CPU; the reference for the SSSE3 version).
#[inline]
pub(crate) fn parse_ipv4_scalar(b: &[u8]) -> Option<Ipv4Addr> {
    if b.len() < 7 || b.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let first = *b.get(i)?;
        let d0 = first.wrapping_sub(b'0');
        if d0 > 9 {
            return None;
        }
        let mut v = u32::from(d0);
        i += 1;
        let mut digits = 1;
        while let Some(&c) = b.get(i) {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            if d0 == 0 || digits == 3 {
                return None;
            }
            v = v * 10 + u32::from(d);
            digits += 1;
            i += 1;
        }
        *octet = u8::try_from(v).ok()?;
    }
    if i == b.len() {
        Some(Ipv4Addr::from(octets))
    } else {
        None
    }
}

/// Parses an IPv4 (fast path) or IPv6 address from bytes, without allocating.
#[inline]
pub fn parse_addr(b: &[u8]) -> Option<IpAddr> {
    // IPv4 first, without looking for a ':' (a search costs as much as the parse): anything that
    // parses as IPv4 holds none, and anything else without one is not an address at all.
    if let Some(v4) = parse_ipv4(b) {
        return Some(IpAddr::V4(v4));
    }
    if !b.contains(&b':') {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_and_log_status_words() {
        assert_eq!(Action::from_bytes(b"ACCEPT"), Some(Action::Accept));
        assert_eq!(Action::from_bytes(b"REJECT"), Some(Action::Reject));
        assert_eq!(LogStatus::from_bytes(b"OK"), Some(LogStatus::Ok));
        assert_eq!(LogStatus::from_bytes(b"NODATA"), Some(LogStatus::NoData));
        assert_eq!(LogStatus::from_bytes(b"SKIPDATA"), Some(LogStatus::SkipData));
        for bad in [&b""[..], b"REJEC", b"REJECTS", b"reject", b"ACCEPt", b"OK ", b"NODATA", b"-"] {
            assert_eq!(Action::from_bytes(bad), None, "{bad:?}");
        }
        for bad in [&b""[..], b"O", b"ok", b"NODATB", b"SKIPDATa", b"REJECT", b"SKIPDATAX"] {
            assert_eq!(LogStatus::from_bytes(bad), None, "{bad:?}");
        }
    }

    /// `ipv4` is `addr_field`'s value whenever it answers, and answers for the IPv4 addresses
    /// of scanned lines; IPv6 and `-` are left to `addr_field`.
    #[test]
    fn ipv4_is_the_checked_value_or_none() {
        type Both = (Option<Ipv4Addr>, Result<Option<IpAddr>, FieldError>);
        struct Seen(Vec<Both>);
        impl crate::RecordSink for Seen {
            fn record(&mut self, rec: &FlowRecord<'_>) {
                for f in [Field::SrcAddr, Field::DstAddr] {
                    self.0.push((rec.ipv4(f), rec.addr_field(f)));
                }
            }
            fn malformed(&mut self, e: &crate::LineError) {
                panic!("{e}");
            }
        }
        let input = "2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 2 60 3600 3660 REJECT OK\n\
                     2 1 eni-1 fd00::1 - 1 53 17 2 60 3600 3660 REJECT OK\n";
        let mut seen = Seen(Vec::new());
        crate::for_each_record(input.as_bytes(), &crate::DecodeOptions::default(), &mut seen)
            .unwrap();
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(seen.0[0], (Some(v4("10.0.0.1")), Ok(Some(IpAddr::V4(v4("10.0.0.1"))))));
        assert_eq!(seen.0[1], (Some(v4("8.8.8.8")), Ok(Some(IpAddr::V4(v4("8.8.8.8"))))));
        assert_eq!(seen.0[2], (None, Ok(Some("fd00::1".parse().unwrap()))));
        assert_eq!(seen.0[3], (None, Ok(None)));
    }

    #[test]
    fn numbers() {
        fn check(input: &str, expected: Option<u64>) {
            assert_eq!(parse_u64(input.as_bytes()), expected, "{input:?}");
        }
        check("0", Some(0));
        check("007", Some(7));
        check("18446744073709551615", Some(u64::MAX));
        check("18446744073709551616", None);
        check("9999999999999999999", Some(9_999_999_999_999_999_999));
        check("999999999999999999:", None);
        check("99999999999999999990", None);
        check("0000000000000000000000001", Some(1));
        check("1700000000", Some(1_700_000_000));
        check("17000/0000", None);
        check("12345678", Some(12_345_678));
        check("1234567:", None);
        check("/2345678", None);
        check("123456789", Some(123_456_789));
        check("99999999", Some(99_999_999));
        check("00000000", Some(0));
        for n in [0u64, 1, 9, 10, 99_999_999, 100_000_000, 1_700_000_123, u64::MAX / 2] {
            check(&n.to_string(), Some(n));
            check(&format!("{n:019}"), Some(n % 10_000_000_000_000_000_000));
        }
        check("", None);
        check("+1", None);
        check("-1", None);
        check("1 ", None);
        check("1a", None);
    }

    #[test]
    fn every_octet_length_pattern() {
        // Every combination of octet lengths, with values at the edges of each length, and the
        // same addresses with one leading zero or one octet too large.
        let by_len: [&[&str]; 3] = [&["0", "7", "9"], &["10", "42", "99"], &["100", "199", "255"]];
        let mut n = 0;
        for idx in 0..81usize {
            let lens = [idx / 27, idx / 9 % 3, idx / 3 % 3, idx % 3];
            for pick in [0, 1, 2] {
                let parts: Vec<&str> = lens.iter().map(|&l| by_len[l][pick]).collect();
                for k in 0..4 {
                    let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
                    for variant in [p[k].clone(), format!("0{}", p[k]), format!("{}9", p[k])] {
                        p[k] = variant;
                        let text = p.join(".");
                        let std = text.parse::<Ipv4Addr>().ok();
                        assert_eq!(parse_ipv4(text.as_bytes()), std, "{text}");
                        assert_eq!(parse_ipv4_scalar(text.as_bytes()), std, "{text}");
                        n += usize::from(std.is_some());
                    }
                }
            }
        }
        assert!(n > 81 * 3, "{n} valid addresses checked");
    }

    /// Bytes shaped like an IPv4 address: mostly digits and dots.
    fn ipv4_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::prop_oneof![
                8 => proptest::sample::select(b"0123456789".to_vec()),
                3 => proptest::strategy::Just(b'.'),
                1 => proptest::prelude::any::<u8>(),
            ],
            0..20,
        )
    }

    proptest::proptest! {
        /// The loads that end where a value ends read what `str::parse` reads, whatever the
        /// bytes before the value (masked off) and the value's length (1 to 20+ digits, `-`).
        #[test]
        fn u64_field_agrees_with_std(
            before in proptest::collection::vec(
                proptest::sample::select(b"0123456789abc-.".to_vec()), 0..20),
            value in proptest::collection::vec(
                proptest::prop_oneof![
                    12 => proptest::sample::select(b"0123456789".to_vec()),
                    1 => proptest::sample::select(b"-x/:".to_vec()),
                ],
                1..22,
            ),
        ) {
            let format = crate::Format::parse("${account-id} ${bytes} ${action}").unwrap();
            let line = [&before[..], b" ", &value, b" ACCEPT"].concat();
            let ends = [before.len() as u32, (before.len() + 1 + value.len()) as u32, line.len() as u32];
            let rec = FlowRecord::new(&line, &ends, &format, 1);
            let text = std::str::from_utf8(&value).unwrap();
            let want = match text {
                "-" => Ok(None),
                t => t.parse::<u64>().ok().filter(|_| !t.starts_with('+')).map(Some)
                    .ok_or(FieldError::NotANumber { field: Field::Bytes }),
            };
            proptest::prop_assert_eq!(rec.u64_field(Field::Bytes), want);
            proptest::prop_assert_eq!(rec.bytes(), want);
        }

        #[test]
        fn ipv4_parsers_agree_with_std(text in ipv4_like()) {
            let std = std::str::from_utf8(&text).ok().and_then(|s| s.parse::<Ipv4Addr>().ok());
            proptest::prop_assert_eq!(parse_ipv4(&text), std);
            proptest::prop_assert_eq!(parse_ipv4_scalar(&text), std);
        }

        #[test]
        #[allow(unsafe_code)] // reason: the SSSE3 parser, called only when the CPU has SSSE3
        fn ipv4_at_agrees_with_std(
            value in ipv4_like(),
            before in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
            after in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"0123456789. ".to_vec()),
                    proptest::prelude::any::<u8>(),
                ],
                0..20,
            ),
        ) {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("ssse3") {
                let std = std::str::from_utf8(&value).ok().and_then(|s| s.parse::<Ipv4Addr>().ok());
                let text = [&before[..], &value, &after].concat();
                let (s, e) = (before.len(), before.len() + value.len());
                // SAFETY: the CPU has SSSE3 (checked above).
                let got = unsafe { parse_ipv4_ssse3_at(&text, s, e) };
                proptest::prop_assert_eq!(got, std);
            }
        }
    }

    /// The address read with one 16-byte load from a longer text is the one parsed from the
    /// value alone, whatever follows it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)] // reason: the SSSE3 parser, called only when the CPU has SSSE3
    fn ipv4_at_reads_only_the_value() {
        if !std::is_x86_feature_detected!("ssse3") {
            return;
        }
        for value in
            ["10.0.0.1", "255.255.255.255", "1.2.3.4", "1.2.3", "01.2.3.4", "1.2.3.256", "-"]
        {
            for after in ["", " ", " 8.8.8.8 443", "9", ".5", "1.2.3.4.5.6.7.8.9.10", "\n"] {
                for before in ["", "x ", "123456789012345678 "] {
                    let text = format!("{before}{value}{after}");
                    let (s, e) = (before.len(), before.len() + value.len());
                    // SAFETY: the CPU has SSSE3 (checked above).
                    let got = unsafe { parse_ipv4_ssse3_at(text.as_bytes(), s, e) };
                    assert_eq!(got, value.parse().ok(), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn addresses() {
        fn check(input: &str) {
            let std = input.parse::<IpAddr>().ok();
            assert_eq!(parse_addr(input.as_bytes()), std, "{input:?}");
        }
        for s in [
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.0004",
            "a.b.c.d",
            "2001:db8::1",
            "::ffff:1.2.3.4",
            "::",
            "2001:db8:::1",
            "fe80::1%eth0",
            "",
            "-",
        ] {
            check(s);
        }
    }
}
