//! The check of a line's typed values on the structural scan's hot path (#28 item 3).
//!
//! `line::check_typed` checks every typed value with its field's full parser, one value at a time;
//! it stays the reference, and the answer for every line this check is not sure of. Here, while
//! the line is still in cache:
//! - numeric fields are checked a *run* at a time (consecutive numeric fields, such as `srcport`
//!   to `end` of the default format): one 64-byte window of digit, `-` and space masks
//!   ([`Classifier::value_masks`]) per run, which also shows every empty value and every value
//!   of 20 or more digits; then only the `U8`/`U16` fields' lengths one at a time (and, for values
//!   of full length, a comparison of the digits as one big-endian word). Runs longer than 64 bytes
//!   check every field's length. No number is parsed: the counter parses the few it needs, once;
//! - IPv4 addresses are parsed once (16 bytes at a time with SSSE3) and the values kept in the
//!   record ([`Parsed`]), as are the `action` and `log-status` words, so the counter does not read
//!   them again;
//! - free text needs nothing: the scan hands over only lines of printable ASCII.
//!
//! The default (version 2) format, nearly every line AWS writes, runs the same steps with its
//! positions constant ([`check_v2`]: straight code, no walk over the plan), reading every value
//! from a window of [`V2_SPAN`] bytes from the line's start with its field ends masked to a byte,
//! so that no load needs a bounds check (both IPv4 addresses at once,
//! [`Classifier::ipv4_pair_at`]; `srcport`, `dstport` and `protocol` as words, with no branch
//! on their lengths). The decoder tries it first ([`check_default_v2`]); the last lines of a
//! block, without such a window, take the plan's steps.
//!
//! An address that is not IPv4 is checked here too: the plain IPv6 form (hex groups, at most one
//! `::`) from masks of its bytes ([`plain_ipv6`]), any other by the standard parser.
//!
//! Whatever this check is not sure of (a number longer than its type's digits such as one with
//! leading zeros; a run longer than 64 bytes is still handled) goes to the exact check, so the
//! outcome is always that of `check_typed` (property-tested in `tests/props.rs` and below).

use crate::field::{Field, ValueType};
use crate::record::{addr_slot, parse_addr, Action, LogStatus, Parsed};
use crate::scan::{Classifier, Span, ValueMasks};
use std::net::Ipv4Addr;

/// How the typed values of a format's lines are checked: built once with the
/// [`crate::Format`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Fields in the format.
    fields: usize,
    /// Runs of consecutive numeric fields, in order.
    runs: Vec<Run>,
    /// The numeric fields, in order.
    nums: Vec<Num>,
    /// The `U8` and `U16` fields of runs of several fields, in order: the only ones whose
    /// lengths a run of at most 64 bytes has to check one at a time (its masks bound the `U64`
    /// ones).
    small: Vec<Num>,
    /// The `U8` and `U16` fields alone in their runs (`version`): checked as one word each,
    /// cheaper than a window of masks.
    lone: Vec<Num>,
    /// The other typed fields, in order.
    words: Vec<Word>,
    /// Every field pushed so far is the one at its position in the default (version 2) format.
    v2_prefix: bool,
    /// The format is the default (version 2) one, the layout of nearly every line AWS writes:
    /// [`check`] then runs [`check_v2`], the same steps with the positions and limits constant.
    default_v2: bool,
}

/// Consecutive numeric fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// The first field's position.
    first: u16,
    /// The last field's position.
    last: u16,
    /// Where its fields are in [`Plan::nums`].
    nums: (u16, u16),
}

/// A numeric field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Num {
    pos: u16,
    /// Most digits this check takes (3 for `U8`, 5 for `U16`, 19 for `U64`); longer values
    /// (leading zeros, 20-digit numbers) go to the exact check.
    digits: u8,
    /// The largest value of `digits` digits, as ASCII in a big-endian word (`"65535"`);
    /// `u64::MAX` when every value of `digits` digits fits.
    limit: u64,
}

/// A typed field that is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// An address; `slot` is where [`Parsed`] keeps its IPv4 value.
    Addr { pos: u16, slot: u8 },
    /// `action`.
    Action(u16),
    /// `log-status`.
    LogStatus(u16),
    /// Any other type (`flow-direction`).
    Other(u16, ValueType),
}

/// The fields of the default (version 2) format.
const V2: &[Field] = &[
    Field::Version,
    Field::AccountId,
    Field::InterfaceId,
    Field::SrcAddr,
    Field::DstAddr,
    Field::SrcPort,
    Field::DstPort,
    Field::Protocol,
    Field::Packets,
    Field::Bytes,
    Field::Start,
    Field::End,
    Field::Action,
    Field::LogStatus,
];

/// The default format's `version`, as [`Plan::push`] makes it.
const V2_VERSION: Num = Num { pos: 0, digits: 3, limit: be(b"255") };

/// The default format's numbers from `srcport` (5) to `end` (11), as [`Plan::push`] makes them;
/// the first three are its [`Plan::small`].
const V2_RUN: [Num; 7] = [
    Num { pos: 5, digits: 5, limit: be(b"65535") },
    Num { pos: 6, digits: 5, limit: be(b"65535") },
    Num { pos: 7, digits: 3, limit: be(b"255") },
    Num { pos: 8, digits: 19, limit: u64::MAX },
    Num { pos: 9, digits: 19, limit: u64::MAX },
    Num { pos: 10, digits: 19, limit: u64::MAX },
    Num { pos: 11, digits: 19, limit: u64::MAX },
];

/// `s` (at most 8 ASCII bytes) as a big-endian word.
const fn be(s: &[u8]) -> u64 {
    let mut v = 0u64;
    let mut i = 0;
    while i < s.len() {
        v = v << 8 | s[i] as u64;
        i += 1;
    }
    v
}

impl Plan {
    /// The plan is the default (version 2) format's.
    pub(crate) fn is_default_v2(&self) -> bool {
        self.default_v2
    }

    /// Adds the field at `pos` (fields are added in order, text fields included).
    pub(crate) fn push(&mut self, pos: u16, field: Field) {
        self.fields = usize::from(pos) + 1;
        self.v2_prefix = (pos == 0 || self.v2_prefix) && V2.get(usize::from(pos)) == Some(&field);
        self.default_v2 = self.v2_prefix && self.fields == V2.len();
        let ty = field.value_type();
        let num = |digits, limit| Num { pos, digits, limit };
        let n = match ty {
            ValueType::Text => return,
            ValueType::U8 => num(3, be(b"255")),
            ValueType::U16 => num(5, be(b"65535")),
            ValueType::U64 => num(19, u64::MAX),
            ValueType::Addr => {
                let slot = addr_slot(field).map_or(u8::MAX, |k| k as u8);
                return self.words.push(Word::Addr { pos, slot });
            }
            ValueType::Action => return self.words.push(Word::Action(pos)),
            ValueType::LogStatus => return self.words.push(Word::LogStatus(pos)),
            ValueType::FlowDirection => return self.words.push(Word::Other(pos, ty)),
        };
        self.nums.push(n);
        self.derive_runs();
    }

    /// Groups [`Plan::nums`] into runs, and sorts the small fields into those alone in their run
    /// (checked as one word, without a run) and the others (rebuilt on every push: a plan is
    /// built once per format).
    fn derive_runs(&mut self) {
        let mut runs: Vec<Run> = Vec::new();
        for (at, n) in self.nums.iter().enumerate() {
            let at = at as u16;
            match runs.last_mut() {
                Some(run) if run.last + 1 == n.pos => {
                    run.last = n.pos;
                    run.nums.1 = at + 1;
                }
                _ => runs.push(Run { first: n.pos, last: n.pos, nums: (at, at + 1) }),
            }
        }
        self.runs.clear();
        self.small.clear();
        self.lone.clear();
        for run in runs {
            match &self.nums[usize::from(run.nums.0)..usize::from(run.nums.1)] {
                [n] if n.digits <= 5 => self.lone.push(*n),
                nums => {
                    self.small.extend(nums.iter().filter(|n| n.digits <= 5));
                    self.runs.push(run);
                }
            }
        }
    }
}

/// The start of field `i` of a line split at `ends`.
#[inline(always)]
fn start(ends: &[u32], i: usize) -> usize {
    match i.checked_sub(1) {
        Some(p) => ends.get(p).map_or(0, |e| *e as usize + 1),
        None => 0,
    }
}

/// The end of field `i` of a line split at `ends`.
#[inline(always)]
fn end(ends: &[u32], i: usize) -> usize {
    ends.get(i).map_or(0, |e| *e as usize)
}

/// Checks the typed values of a printable-ASCII `line` split at `ends` under the format of
/// `plan`: `Some` (with the values parsed on the way) only when every value is `-` or of its
/// field's type; `None` when it is not, or when this check cannot tell (then the exact check,
/// `line::check_typed`, decides). `rest` is the text from the line's start to the end of its
/// block (`line` is its prefix).
#[inline(always)]
pub(crate) fn check<C: Classifier>(
    c: C,
    rest: &[u8],
    line: &[u8],
    ends: &[u32],
    plan: &Plan,
) -> Option<Parsed> {
    if ends.len() != plan.fields || line.len() > rest.len() {
        return None;
    }
    if plan.default_v2 {
        // Lines with a window of `V2_SPAN` bytes (all but a block's last few lines, and
        // CloudWatch Logs events, which take the plan's steps below).
        if let Some((text, ends)) = v2_window(rest, line, ends) {
            return check_v2(c, text, line, ends);
        }
    }
    let mut ok = true;
    for run in &plan.runs {
        let (s, e) = (start(ends, run.first.into()), end(ends, run.last.into()));
        if e.wrapping_sub(s).wrapping_sub(1) < 64 {
            ok &= short_run_ok(c, rest, s, e);
        } else {
            let nums = plan.nums.get(run.nums.0.into()..run.nums.1.into()).unwrap_or_default();
            ok &= run_ok(c, rest, s, e) && lengths_ok(line, ends, nums);
        }
    }
    ok &= lengths_ok(line, ends, &plan.small);
    for n in &plan.lone {
        ok &= lone_ok(rest, line, ends, n);
    }
    if !ok {
        return None;
    }
    let mut parsed = Parsed::default();
    for w in &plan.words {
        match *w {
            Word::Addr { pos, slot } => {
                if !addr_ok(c, rest, line, ends, pos.into(), slot.into(), &mut parsed) {
                    return None;
                }
            }
            Word::Action(pos) => {
                if !action_ok(line, ends, pos.into(), &mut parsed) {
                    return None;
                }
            }
            Word::LogStatus(pos) => {
                if !log_status_ok(line, ends, pos.into(), &mut parsed) {
                    return None;
                }
            }
            Word::Other(pos, ty) => {
                let v = value(line, ends, pos.into());
                if v != b"-" && !ty.accepts(v) {
                    return None;
                }
            }
        }
    }
    Some(parsed)
}

/// [`check`] of a line under the default (version 2) format that has a window of
/// [`V2_SPAN`] bytes and at most [`V2_MAX_LINE`] bytes, 14 fields: the decoder's first try.
/// `None` when the line is not such a line; else `Some` of what [`check`] answers for it.
///
/// A line this accepts has a `version` of digits or `-`: it is neither blank nor a header line.
#[inline(always)]
pub(crate) fn check_default_v2<C: Classifier>(
    c: C,
    rest: &[u8],
    line: &[u8],
    ends: &[u32],
) -> Option<Option<Parsed>> {
    let (text, ends) = v2_window(rest, line, ends)?;
    Some(check_v2(c, text, line, ends))
}

/// What [`check_v2`] reads of a line of at most [`V2_MAX_LINE`] bytes and 14 fields: the
/// [`V2_SPAN`] bytes of text from its start and its field ends; `None` for any other line.
#[inline(always)]
fn v2_window<'t, 'e>(
    rest: &'t [u8],
    line: &[u8],
    ends: &'e [u32],
) -> Option<(&'t [u8; V2_SPAN], &'e [u32; 14])> {
    let (text, ends) = (rest.first_chunk::<V2_SPAN>()?, ends.try_into().ok()?);
    (line.len() <= V2_MAX_LINE).then_some((text, ends))
}

/// The longest line [`check_v2`] takes: every field end fits a byte, so that the windows read
/// from a field's start stay inside [`V2_SPAN`] bytes with no bounds check.
pub(crate) const V2_MAX_LINE: usize = 255;

/// The bytes from a line's start that [`check_v2`] reads: the line, and the 64-byte window of
/// the numeric run starting at most at byte 256.
const V2_SPAN: usize = V2_MAX_LINE + 1 + 64;

/// [`check`] for the default (version 2) format: the same steps as its plan's, with the
/// positions, limits and the number of steps constant, so that the compiler makes them straight
/// code (no loop over the plan, no load of a step, no branch on a step's kind). `text` is the
/// text from the line's start (`line`, at most [`V2_MAX_LINE`] bytes, is its prefix): every
/// value's window lies inside it, so no load needs a bounds check.
#[inline(always)]
fn check_v2<C: Classifier>(
    c: C,
    text: &[u8; V2_SPAN],
    line: &[u8],
    ends: &[u32; 14],
) -> Option<Parsed> {
    // Field ends are at most the line's length (`V2_MAX_LINE`): a byte holds them, which tells
    // the compiler every window below is inside `text`.
    let at = |i: usize| usize::from(ends[i] as u8);
    let (s, e) = (at(4) + 1, at(11));
    let n = e.wrapping_sub(s);
    let mut ok = if n.wrapping_sub(1) < 64 {
        let window =
            text[s..].first_chunk::<64>().map_or_else(ValueMasks::default, |w| c.value_masks(w));
        // srcport, dstport and protocol: 1 to 5, 5 and 3 digits, at most their limits.
        short_masks_ok(window, n)
            & small_ok(text, at(4) + 1, at(5), &V2_RUN[0])
            & small_ok(text, at(5) + 1, at(6), &V2_RUN[1])
            & small_ok(text, at(6) + 1, at(7), &V2_RUN[2])
    } else {
        let ends = &ends[..];
        run_ok(c, text, s, e) && lengths_ok(line, ends, &V2_RUN)
    };
    ok &= lone_ok(text, line, ends, &V2_VERSION);
    let mut parsed = Parsed::default();
    let addrs = ((at(2) + 1, at(3)), (at(3) + 1, at(4)));
    ok = ok && addr_pair_ok(c, text, line, addrs, &mut parsed);
    if !ok {
        return None;
    }
    // Nearly every line ends in `ACCEPT OK` or `REJECT OK`: both words in two compares.
    match accept_or_reject_ok(text, line.len(), e) {
        Some(a) => {
            parsed.set_action(a);
            parsed.set_log_status(LogStatus::Ok);
        }
        None => {
            if !(action_ok(line, ends, 12, &mut parsed)
                && log_status_ok(line, ends, 13, &mut parsed))
            {
                return None;
            }
        }
    }
    Some(parsed)
}

/// The check of the numeric value from `s` to `e` (at most 256) of `text` of the `U8` or `U16`
/// field `n`, in a run whose masks saw only digits and lone `-`: 1 to its type's digits and at
/// most its largest value, with no branch (a port of five digits is common, and which ports
/// have five is not for a branch to guess).
#[inline(always)]
fn small_ok(text: &[u8; V2_SPAN], s: usize, e: usize, n: &Num) -> bool {
    let len = e.wrapping_sub(s);
    let word = text[s..].first_chunk::<8>().map_or(u64::MAX, |w| u64::from_be_bytes(*w));
    // The value's `len` bytes as a big-endian word (any shift when `len` is out of range, which
    // fails the length test). A shorter value is below the limit whatever its digits: the
    // limit's first byte is not zero.
    let value = word.wrapping_shr(64u32.wrapping_sub(8u32.wrapping_mul(len as u32)));
    (len.wrapping_sub(1) < usize::from(n.digits)) & (value <= n.limit)
}

/// The action of a line of `len` bytes from the start of `text` whose last two fields, after
/// `end` (field 11) ending at `e` (at most [`V2_MAX_LINE`]), are `ACCEPT OK` or `REJECT OK`;
/// `None` for anything else (then each word is read on its own).
#[inline(always)]
fn accept_or_reject_ok(text: &[u8; V2_SPAN], len: usize, e: usize) -> Option<Action> {
    // ` ACCEPT OK`: the space after `end` and the 9 bytes after it, the line's last: the first 8
    // as one word compared with both actions' (no branch on which one it is: one line in eight
    // is a REJECT, too many for a branch to guess), then the `K`.
    let tail = text[e..].first_chunk::<10>()?;
    let (word, k) = (u64::from_le_bytes(*tail[1..].first_chunk::<8>()?), tail[9]);
    let (accept, reject) =
        (word == u64::from_le_bytes(*b"ACCEPT O"), word == u64::from_le_bytes(*b"REJECT O"));
    let ok = (accept | reject) & (k == b'K') & (e.wrapping_add(10) == len);
    ok.then_some([Action::Accept, Action::Reject][usize::from(reject)])
}

/// The check of the address at `pos` (`-`, IPv4 or IPv6), keeping an IPv4 value in `slot` of
/// `parsed` (none: `u8::MAX`).
#[inline(always)]
fn addr_ok<C: Classifier>(
    c: C,
    rest: &[u8],
    line: &[u8],
    ends: &[u32],
    pos: usize,
    slot: usize,
    parsed: &mut Parsed,
) -> bool {
    let (s, e) = (start(ends, pos), end(ends, pos));
    addr_kept(line, (s, e), slot, c.ipv4_at(rest, s, e), parsed)
}

/// [`addr_ok`] of the default format's `srcaddr` and `dstaddr` (fields 3 and 4, slots 0 and 1),
/// whose IPv4 values are read together ([`Classifier::ipv4_pair_at`]).
#[inline(always)]
fn addr_pair_ok<C: Classifier>(
    c: C,
    rest: &[u8],
    line: &[u8],
    (src, dst): (Span, Span),
    parsed: &mut Parsed,
) -> bool {
    let [s, d] = c.ipv4_pair_at(rest, src, dst);
    addr_kept(line, src, 0, s, parsed) && addr_kept(line, dst, 1, d, parsed)
}

/// The check of the address at `range` of `line` whose IPv4 value, if it is one, is `v4`
/// (kept in `slot` of `parsed`): else it must be `-` or IPv6.
#[inline(always)]
fn addr_kept(
    line: &[u8],
    (s, e): (usize, usize),
    slot: usize,
    v4: Option<Ipv4Addr>,
    parsed: &mut Parsed,
) -> bool {
    match v4 {
        Some(a) => {
            parsed.set_v4(slot, a);
            true
        }
        None => {
            let v = line.get(s..e).unwrap_or_default();
            v == b"-" || other_addr(v)
        }
    }
}

/// The check of the `action` at `pos`, keeping its value in `parsed`.
#[inline(always)]
fn action_ok(line: &[u8], ends: &[u32], pos: usize, parsed: &mut Parsed) -> bool {
    word_ok(value(line, ends, pos), Action::from_bytes, |a| parsed.set_action(a))
}

/// The check of the `log-status` at `pos`, keeping its value in `parsed`.
#[inline(always)]
fn log_status_ok(line: &[u8], ends: &[u32], pos: usize, parsed: &mut Parsed) -> bool {
    word_ok(value(line, ends, pos), LogStatus::from_bytes, |s| parsed.set_log_status(s))
}

/// True when `v` is `-` or one of the words `read` takes, whose value goes to `keep`.
#[inline(always)]
fn word_ok<T>(v: &[u8], read: impl Fn(&[u8]) -> Option<T>, keep: impl FnOnce(T)) -> bool {
    match read(v) {
        Some(w) => {
            keep(w);
            true
        }
        None => v == b"-",
    }
}

/// True when every value of `nums` has 1 to its type's digits and, with all of them, is at most
/// its type's largest value (compared as text: the run's check saw only digits).
#[inline(always)]
fn lengths_ok(line: &[u8], ends: &[u32], nums: &[Num]) -> bool {
    let mut ok = true;
    for n in nums {
        let e = end(ends, n.pos.into());
        let len = e.wrapping_sub(start(ends, n.pos.into()));
        // Empty, or longer than the type's digits: not sure (empty values are damaged).
        ok &= len.wrapping_sub(1) < usize::from(n.digits);
        if len == usize::from(n.digits) {
            ok &= tail_be(line, e, len) <= n.limit;
        }
    }
    ok
}

/// The check of a run of one `U8` or `U16` field `n`, on its value as one big-endian word: `-`,
/// or 1 to its type's digits (`0` to `9`: high nibble 3, and still 3 after adding 6) and at most
/// its largest value. `rest` is the text from the line's start on (`line` is its prefix).
#[inline(always)]
fn lone_ok(rest: &[u8], line: &[u8], ends: &[u32], n: &Num) -> bool {
    let (s, e) = (start(ends, n.pos.into()), end(ends, n.pos.into()));
    let len = e.wrapping_sub(s);
    // One byte (`version`'s `2`, nearly always): a digit or `-`, under any type's limit.
    if len == 1 {
        return line.get(s).is_some_and(|b| b.is_ascii_digit() || *b == b'-');
    }
    if len.wrapping_sub(1) >= usize::from(n.digits) {
        return false;
    }
    // Read from the value's start where 8 bytes follow it (the text runs on past the line):
    // `version` is the first field, with no 8 bytes before its end to read back from.
    let w = match rest.get(s..).and_then(|r| r.first_chunk::<8>()) {
        Some(w) => u64::from_be_bytes(*w) >> (64 - 8 * len),
        None => tail_be(line, e, len),
    };
    let ones = (u64::MAX / 255) >> (64 - 8 * len);
    let (zeros, nibbles) = (0x30 * ones, 0xf0 * ones);
    let digits = w & nibbles == zeros && w.wrapping_add(6 * ones) & nibbles == zeros;
    (digits && w <= n.limit) || (w == u64::from(b'-') && len == 1)
}

/// The bytes of one window of a run (bit `i`: byte `i`; bytes past the run, outside `keep`,
/// count as spaces: the run's ends are field boundaries).
struct Window {
    /// Bytes that no number holds: anything but digits, `-` and spaces, and a `-` next to a
    /// digit or another `-` (part of a longer value: `-1`, `1-`, `--`).
    bad: u64,
    /// Digits and `-`.
    filled: u64,
    /// `-`.
    dash: u64,
    /// Spaces.
    space: u64,
}

impl Window {
    #[inline(always)]
    fn of(m: ValueMasks, keep: u64) -> Window {
        let (filled, dash, space) = (m.digit_or_dash & keep, m.dash & keep, m.space & keep);
        let bad = (!(filled | space) & keep) | (dash & (filled << 1 | filled >> 1));
        Window { bad, filled, dash, space }
    }
}

/// [`run_ok`] for a run of 1 to 64 bytes, which also finds, from the same masks, every empty
/// value and every value of 20 or more digits (longer than any `U64`'s 19, such as one with
/// leading zeros: the exact check decides), so that only the `U8` and `U16` values need their
/// lengths checked one at a time.
#[inline(always)]
fn short_run_ok<C: Classifier>(c: C, rest: &[u8], s: usize, e: usize) -> bool {
    short_masks_ok(masks_at(c, rest, s), e - s)
}

/// [`short_run_ok`] of the run of `n` (1 to 64) bytes whose masks are `m`.
#[inline(always)]
fn short_masks_ok(m: ValueMasks, n: usize) -> bool {
    let keep = u64::MAX >> (64 - n);
    let w = Window::of(m, keep);
    let (filled, space) = (w.filled, w.space);
    let mut bad = w.bad;
    // An empty value: a space first or last, or two spaces in a row.
    bad |= space & (space >> 1 | 1 | 1 << (n - 1));
    // 20 bytes or more without a space.
    let mut long = filled;
    long &= long >> 1;
    long &= long >> 2;
    long &= long >> 4;
    long &= long >> 8;
    long &= long >> 4;
    (bad | long) == 0
}

/// The value at `i` of a line split at `ends`.
#[inline(always)]
fn value<'a>(line: &'a [u8], ends: &[u32], i: usize) -> &'a [u8] {
    line.get(start(ends, i)..end(ends, i)).unwrap_or_default()
}

/// A value that is not an IPv4 address: true when it is an IPv6 one. The plain forms AWS writes
/// (hex groups and at most one `::`) are read by [`plain_ipv6`], a few instructions a byte; the
/// standard parser, some 2,500 instructions and many mispredicted branches an address (the cost
/// of one in fifty lines made it a tenth of the whole check), only reads the others (an IPv4
/// tail, anything malformed).
#[inline(never)]
fn other_addr(v: &[u8]) -> bool {
    plain_ipv6(v) || parse_addr(v).is_some()
}

/// True only when `v` is an IPv6 address as `Ipv6Addr::from_str` reads it, in the plain form:
/// hex groups of 1 to 4 digits separated by `:`, eight of them, or at most seven around one
/// `::` (which stands for at least one zero group). False for anything else, valid or not (an
/// IPv4 tail such as `::ffff:1.2.3.4`): the standard parser decides those.
///
/// Read from two masks of the value's bytes (hex digits, colons) with no branch per byte: a
/// branch on each byte's class would be guessed wrong at most colons.
fn plain_ipv6(v: &[u8]) -> bool {
    let n = v.len();
    // The longest plain form: 8 groups of 4 digits and 7 colons.
    if !(2..=39).contains(&n) {
        return false;
    }
    let (mut hex, mut colon) = (0u64, 0u64);
    for (i, &b) in v.iter().enumerate() {
        hex |= u64::from(b.is_ascii_hexdigit()) << i;
        colon |= u64::from(b == b':') << i;
    }
    // Bit `i`: a `::` at `i` (two in a row, as in `:::`, make two bits).
    let double = colon & colon >> 1;
    let groups = (hex & !(hex << 1)).count_ones();
    let only_hex_and_colons = hex | colon == u64::MAX >> (64 - n);
    let one_double_at_most = double & double.wrapping_sub(1) == 0;
    let groups_short = hex & hex >> 1 & hex >> 2 & hex >> 3 & hex >> 4 == 0;
    // A colon first or last is half of a `::`.
    let ends_ok = (colon & !double & 1 == 0) && (colon >> (n - 1) & !(double >> (n - 2)) & 1 == 0);
    let count_ok = if double == 0 { groups == 8 } else { groups <= 7 };
    only_hex_and_colons && one_double_at_most && groups_short && ends_ok && count_ok
}

/// The `len` (at most 8) bytes of `line` ending at `e` as a big-endian word.
#[inline(always)]
fn tail_be(line: &[u8], e: usize, len: usize) -> u64 {
    let word = match e.checked_sub(8).and_then(|s| line.get(s..e)) {
        Some(w) => <[u8; 8]>::try_from(w).map_or(u64::MAX, u64::from_be_bytes),
        // A value near the line's start.
        None => line.get(..e).map_or(u64::MAX, be_short),
    };
    match len {
        0 => 0,
        1..=7 => word & ((1u64 << (8 * len)) - 1),
        _ => word,
    }
}

/// Up to 8 bytes as a big-endian word (more: `u64::MAX`, compared as too large).
#[inline(never)]
fn be_short(b: &[u8]) -> u64 {
    if b.len() > 8 {
        u64::MAX
    } else {
        be(b)
    }
}

/// True when the bytes from `s` to `e` of `rest` (consecutive numeric fields and the spaces
/// between them) hold only digits, spaces, and `-` standing alone between spaces (or the run's
/// ends): the characters of numbers and absent values. Lengths are checked by the caller.
#[inline(always)]
fn run_ok<C: Classifier>(c: C, rest: &[u8], s: usize, e: usize) -> bool {
    let mut bad = 0u64;
    // The last byte of the previous window: not a space, and a `-` (bit 0 and 1).
    let mut carry = 0u64;
    let mut k = s;
    while k < e {
        let take = e - k;
        let keep = if take >= 64 { u64::MAX } else { (1u64 << take) - 1 };
        let Window { bad: in_window, filled, dash, .. } = Window::of(masks_at(c, rest, k), keep);
        bad |= in_window;
        // A `-` next to a digit or another `-` across the windows' boundary.
        bad |=
            (carry & 2 != 0 && filled & 1 != 0) as u64 | (carry & 1 != 0 && dash & 1 != 0) as u64;
        carry = (filled >> 63) | (dash >> 63) << 1;
        k += 64;
    }
    bad == 0
}

/// The value masks of the 64 bytes of `rest` from `k` (past its end: spaces).
#[inline(always)]
fn masks_at<C: Classifier>(c: C, rest: &[u8], k: usize) -> ValueMasks {
    match rest.get(k..k.saturating_add(64)).and_then(|w| <&[u8; 64]>::try_from(w).ok()) {
        Some(w) => c.value_masks(w),
        None => masks_padded(c, rest, k),
    }
}

/// [`masks_at`] near the end of the text (the last line of a block, a CloudWatch Logs event).
#[inline(never)]
fn masks_padded<C: Classifier>(c: C, rest: &[u8], k: usize) -> ValueMasks {
    let mut buf = [b' '; 64];
    let part = rest.get(k..).unwrap_or_default();
    let n = part.len().min(64);
    buf[..n].copy_from_slice(&part[..n]);
    c.value_masks(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::scan::Baseline;
    use proptest::prelude::*;

    /// The fast check's answer on `line` split at its spaces, under every classifier this CPU runs,
    /// with the text after the line being `after`; `None` when it is not sure.
    fn fast(line: &str, format: &Format, after: &str) -> Option<Parsed> {
        fast_with(line, format.plan(), after)
    }

    /// [`fast`] under `plan`. The answer must not depend on the text after the line: it is
    /// also asked with that text run on past [`V2_SPAN`] bytes (where the default format's
    /// [`check_v2`] reads its windows), and without the line's `after` at all.
    fn fast_with(line: &str, plan: &Plan, after: &str) -> Option<Parsed> {
        let long = format!(
            "{after}{}",
            "\n2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK".repeat(6)
        );
        let answers = ["", after, &long].map(|after| {
            let text = format!("{line}{after}");
            let rest = text.as_bytes();
            let line = &rest[..line.len()];
            let mut ends: Vec<u32> =
                (0..line.len()).filter(|&i| line[i] == b' ').map(|i| i as u32).collect();
            ends.push(line.len() as u32);
            let got = check(Baseline, rest, line, &ends, plan);
            #[cfg(target_arch = "x86_64")]
            if let Some(avx2) = crate::scan::Avx2::detect() {
                assert_eq!(check(avx2, rest, line, &ends, plan), got, "{line:?}");
            }
            if plan.default_v2 && rest.len() >= V2_SPAN && line.len() <= V2_MAX_LINE {
                // The decoder's first try answers, and answers the same, wherever it has its
                // window: the decoder then does not ask `check` again.
                let first = check_default_v2(Baseline, rest, line, &ends);
                assert!(ends.len() != 14 || first.is_some(), "{line:?}");
                assert!(first.is_none() || first == Some(got), "{line:?}");
            }
            got
        });
        let got = answers[0];
        assert!(answers.iter().all(|a| *a == got), "{line:?} after {after:?}: {answers:?}");
        got
    }

    /// The exact answer.
    fn exact(line: &str, format: &Format) -> bool {
        crate::naive::naive_split(line.as_bytes(), format, 1 << 16).is_ok()
    }

    fn agree(line: &str, format: &Format) {
        for after in ["", "\n", "\n2 123 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 60 1 2 REJECT OK\n"] {
            if fast(line, format, after).is_some() {
                assert!(exact(line, format), "fast accepted {line:?}, exact did not");
            }
        }
    }

    #[test]
    fn bad_values_are_never_accepted() {
        let f = Format::default_v2();
        let good =
            "2 123 eni-1 10.0.0.1 8.8.8.8 443 49152 6 10 840 1700000000 1700000060 REJECT OK";
        assert!(fast(good, &f, "").is_some());
        let tokens: Vec<&str> = good.split(' ').collect();
        for bad in [
            "44x3",
            "10.0.0.999",
            "-1",
            "1-",
            "--",
            "99999999999999999999",
            "",
            "\u{e9}",
            "65536",
            "256",
            "0x10",
            "+1",
            "1.5",
            "REJECTED",
            "ok",
            "1.2.3",
            "01.2.3.4",
            "1e5",
            "١",
        ] {
            for i in 0..tokens.len() {
                let mut t = tokens.clone();
                t[i] = bad;
                let line = t.join(" ");
                if !line.is_ascii() {
                    // The scan hands non-ASCII lines to the exact parser, never here.
                    continue;
                }
                agree(&line, &f);
            }
        }
    }

    #[test]
    fn absent_values_and_full_lengths_are_accepted() {
        let f = Format::default_v2();
        for line in [
            "2 123 eni-1 - - - - - - - 1700000000 1700000060 - NODATA",
            "- - - - - - - - - - - - - -",
            "2 123 eni-1 10.0.0.1 8.8.8.8 65535 0 255 9999999999999999999 0 1 2 ACCEPT SKIPDATA",
            "2 123 eni-1 255.255.255.255 0.0.0.0 00001 007 017 1 1 1 1 REJECT OK",
        ] {
            assert!(fast(line, &f, "").is_some(), "{line}");
            assert!(exact(line, &f), "{line}");
        }
        // Not sure (the exact check decides): leading zeros past the type's digits, IPv6 is
        // taken here.
        let long = "2 123 eni-1 10.0.0.1 8.8.8.8 000080 53 6 1 1 1 1 REJECT OK";
        assert_eq!(fast(long, &f, ""), None);
        // A value of 20 or more digits in a run of at most 64 bytes: not sure either, whether
        // it fits (leading zeros) or not; 19 digits are the fast check's own.
        for v in ["00000000000000000001", "0000000000000000000000001", "99999999999999999999"] {
            let line = format!("2 123 eni-1 10.0.0.1 8.8.8.8 80 53 6 {v} 1 1 1 REJECT OK");
            assert_eq!(fast(&line, &f, ""), None, "{line}");
        }
        let line = "2 123 eni-1 10.0.0.1 8.8.8.8 80 53 6 0000000000000000001 1 1 1 REJECT OK";
        assert!(fast(line, &f, "").is_some());
        let v6 = "2 123 eni-1 2001:db8::1 ::1 80 53 6 1 1 1 1 REJECT OK";
        assert!(fast(v6, &f, "").is_some());
    }

    /// `srcport`, `dstport` and `protocol` at and past their limits and lengths, in the default
    /// format's own check (no branch on a value's length) and the plan's: sure of every value
    /// of at most the type's digits, and right.
    #[test]
    fn small_fields_at_their_limits() {
        let f = Format::default_v2();
        let (ports, protocols) = (
            ["0", "9", "65535", "65536", "65599", "99999", "00000", "06553", "-", "1-", "-1"],
            ["0", "255", "256", "299", "999", "000", "25", "-", "2-"],
        );
        for (at, values, digits) in [(5, &ports[..], 5), (6, &ports[..], 5), (7, &protocols[..], 3)]
        {
            for v in values.iter().chain(&["000000", "0001", "0255"]) {
                let mut t: Vec<&str> =
                    "2 123 eni-1 10.0.0.1 8.8.8.8 443 49152 6 10 840 1 2 REJECT OK"
                        .split(' ')
                        .collect();
                t[at] = v;
                let line = t.join(" ");
                let got = fast(&line, &f, "\n");
                if v.len() <= digits {
                    assert_eq!(got.is_some(), exact(&line, &f), "{line}");
                } else {
                    assert!(got.is_none(), "{line}");
                }
            }
        }
    }

    #[test]
    fn values_kept_are_the_parsers() {
        let f = Format::default_v2();
        let line =
            "2 123 eni-1 10.0.0.1 8.8.8.8 443 49152 6 10 840 1700000000 1700000060 REJECT OK";
        let p = fast(line, &f, "").unwrap();
        let mut want = Parsed::default();
        want.set_v4(0, [10, 0, 0, 1].into());
        want.set_v4(1, [8, 8, 8, 8].into());
        want.set_action(Action::Reject);
        want.set_log_status(LogStatus::Ok);
        assert_eq!(p, want);
    }

    #[test]
    fn plain_ipv6_examples() {
        for v in [
            "::",
            "::1",
            "1::",
            "2600:1f18:ab:cd::ef",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1::8",
            "ABCD:ef01:0:0:0:0:0:FFFF",
            "0000:0000:0000:0000:0000:0000:0000:0001",
        ] {
            assert!(plain_ipv6(v.as_bytes()), "{v}");
            assert!(v.parse::<std::net::Ipv6Addr>().is_ok(), "{v}");
        }
        // Not plain: malformed, or valid in a form the standard parser reads.
        for v in [
            "",
            ":",
            ":::",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "1::2::3",
            "1:::2",
            ":1::2",
            "1::2:",
            "12345::",
            "g::1",
            "::ffff:1.2.3.4",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7:",
        ] {
            assert!(!plain_ipv6(v.as_bytes()), "{v}");
        }
    }

    /// A run longer than one window: every boundary position of a `-` and a digit.
    #[test]
    fn runs_across_windows() {
        let names: Vec<&str> = [
            "packets",
            "bytes",
            "start",
            "end",
            "packets-lost-no-route",
            "packets-lost-blackhole",
            "packets-lost-mtu-exceeded",
            "packets-lost-ttl-expired",
        ]
        .to_vec();
        let f = Format::parse(&names.join(" ")).unwrap();
        for pad in 0..20 {
            for v in ["-", "-1", "1-", "12", "--"] {
                for at in 0..names.len() {
                    let mut t: Vec<String> = (0..names.len())
                        .map(|i| "9".repeat(if i == 0 { 1 + pad } else { 9 }))
                        .collect();
                    t[at] = v.to_string();
                    let line = t.join(" ");
                    let (got, want) = (fast(&line, &f, "").is_some(), exact(&line, &f));
                    assert!(!got || want, "{line}");
                    // Everything here is short and ASCII: the fast check is sure of it.
                    assert_eq!(got, want, "{line}");
                }
            }
        }
    }

    /// The default format, however spelled, and only it, runs on [`check_v2`].
    #[test]
    fn only_the_default_format_is_default_v2() {
        let f = Format::default_v2();
        assert!(f.plan().default_v2);
        assert!(Format::parse(&f.to_log_format()).unwrap().plan().default_v2);
        let names: Vec<String> = V2.iter().map(|f| f.to_string()).collect();
        assert!(Format::parse(&names.join(" ")).unwrap().plan().default_v2);
        for other in [
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action",
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end log-status action",
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id",
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status my-field",
            "account-id version interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status",
            "version",
        ] {
            assert!(!Format::parse(other).unwrap().plan().default_v2, "{other}");
        }
    }

    /// The general check of the default format's plan (its steps read from the plan).
    fn general(line: &str, after: &str) -> Option<Parsed> {
        let mut plan = Format::default_v2().plan().clone();
        plan.default_v2 = false;
        fast_with(line, &plan, after)
    }

    /// Values of the default format's field at `i`, mostly of its type (numbers of any length,
    /// addresses of any octet).
    fn v2_value(i: usize) -> BoxedStrategy<String> {
        let words = |w: &'static [&'static str]| prop::sample::select(w).prop_map(str::to_string);
        match i {
            0 | 7 => "[0-9]{1,4}|-".boxed(),
            1 | 2 => "[!-~]{1,12}".boxed(),
            3 | 4 => prop_oneof![
                4 => "(25[0-9]|2[0-4][0-9]|1?[0-9]{1,2})(\\.(25[0-9]|2[0-4][0-9]|1?[0-9]{1,2})){3}",
                1 => "[0-9a-f:]{2,20}|-|0[0-9]\\.1\\.2\\.3",
            ]
            .boxed(),
            5 | 6 => "[0-9]{1,6}|-".boxed(),
            8..=11 => "[0-9]{1,21}|-".boxed(),
            12 => words(&["ACCEPT", "REJECT", "-", "ACCEPTX"]).boxed(),
            _ => words(&["OK", "NODATA", "SKIPDATA", "-", "ok"]).boxed(),
        }
    }

    /// A value of no field's type, or of another's.
    fn junk() -> BoxedStrategy<String> {
        prop_oneof!["", "[!-~]{0,6}", "-?[0-9]{0,3}-?", "[0-9.]{1,16}"].boxed()
    }

    proptest! {
        /// The default format's own check answers as the general one on its plan (and so as
        /// the exact check wherever that one is sure), values kept included.
        #[test]
        fn default_v2_check_is_the_plans(
            tokens in (0..V2.len())
                .map(|i| prop_oneof![12 => v2_value(i), 1 => junk()])
                .collect::<Vec<_>>(),
            after in prop_oneof![Just(String::new()), "[ -~\n]{0,80}"],
        ) {
            let line = tokens.join(" ");
            let f = Format::default_v2();
            let got = fast(&line, &f, &after);
            prop_assert_eq!(got, general(&line, &after), "{:?}", line);
            if got.is_some() {
                prop_assert!(exact(&line, &f), "fast accepted {:?}", line);
            }
        }

        /// The plain IPv6 check never takes what the standard parser refuses, and takes every
        /// address the standard library writes without an IPv4 tail.
        #[test]
        fn plain_ipv6_is_the_std_parsers(
            v in prop_oneof!["[0-9a-fA-F:]{0,40}", "([0-9a-f]{0,5}:){0,9}[0-9a-f]{0,5}", "[0-9a-f:.%]{0,20}"],
            groups in prop::array::uniform8(prop_oneof![Just(0u16), any::<u16>()]),
        ) {
            if plain_ipv6(v.as_bytes()) {
                prop_assert!(v.parse::<std::net::Ipv6Addr>().is_ok(), "{:?}", v);
            }
            let a = std::net::Ipv6Addr::from(groups);
            let text = a.to_string();
            prop_assert_eq!(plain_ipv6(text.as_bytes()), !text.contains('.'), "{:?}", text);
            let full = groups.map(|g| format!("{g:x}")).join(":");
            prop_assert!(plain_ipv6(full.as_bytes()), "{:?}", full);
        }

        #[test]
        fn never_accepts_what_the_exact_check_refuses(
            tokens in prop::collection::vec(
                prop_oneof![
                    "[0-9]{1,21}", "[0-9]{1,3}", "[0-9.]{1,16}", "[0-9a-f:]{1,20}", "-", "",
                    "[!-~]{0,6}", "-?[0-9]{0,3}-?",
                    prop::sample::select(&["ACCEPT", "REJECT", "OK", "NODATA", "SKIPDATA", "egress", "ingress"][..])
                        .prop_map(str::to_string),
                ],
                1..20,
            ),
            first in 0..Field::KNOWN.len(),
            after in prop_oneof![Just(String::new()), "[ -~\n]{0,80}"],
        ) {
            let line = tokens.join(" ");
            let names: Vec<String> = (0..tokens.len())
                .map(|i| Field::KNOWN[(first + i) % Field::KNOWN.len()].to_string())
                .collect();
            let format = Format::parse(&names.join(" ")).unwrap();
            if let Some(p) = fast(&line, &format, &after) {
                prop_assert!(exact(&line, &format), "fast accepted {:?}", line);
                // The values kept are those the parsers give.
                let mut ends: Vec<u32> =
                    (0..line.len()).filter(|&i| line.as_bytes()[i] == b' ').map(|i| i as u32).collect();
                ends.push(line.len() as u32);
                let rec = crate::FlowRecord::with_parsed(line.as_bytes(), &ends, &format, 1, p);
                let bare = crate::FlowRecord::new(line.as_bytes(), &ends, &format, 1);
                prop_assert_eq!(rec.srcaddr(), bare.srcaddr());
                prop_assert_eq!(rec.dstaddr(), bare.dstaddr());
                prop_assert_eq!(rec.addr_field(Field::PktSrcAddr), bare.addr_field(Field::PktSrcAddr));
                prop_assert_eq!(rec.action(), bare.action());
                prop_assert_eq!(rec.log_status(), bare.log_status());
            }
        }
    }
}
