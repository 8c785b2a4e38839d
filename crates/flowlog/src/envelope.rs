//! A fast path for the JSON of CloudWatch Logs subscription envelopes and Firehose records.
//!
//! [`scan`] walks the JSON once (inside strings 16 bytes at a time, with `crate::scan::string_stop`;
//! no allocation, no UTF-8 decoding: it accepts printable-ASCII strings only) and returns where the
//! flow-log text of every object is, in order.
//! It handles the plain shape AWS sends; for anything else (a non-ASCII or control byte, an escape
//! in a string it must return or in a key, a `\u` escape anywhere, a duplicate field, a
//! field of an unexpected type, invalid JSON, deep nesting) it returns `None` and the caller decodes
//! the whole payload with serde_json instead, which gives the exact result or error. So when `scan`
//! returns `Some`, serde_json would have given the same items (checked by a property test
//! against the serde path).

use std::ops::Range;

/// One object of a payload, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A CloudWatch Logs `CONTROL_MESSAGE`.
    Control,
    /// Flow-log text: a log event's `message` (or a Firehose record's), as a range of the payload.
    Text(Range<usize>),
}

/// Nesting deeper than this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// The items of `data` in `out` (cleared first), or `None` when serde_json must decode it.
pub(crate) fn scan(data: &[u8], out: &mut Vec<Item>) -> Option<()> {
    out.clear();
    let mut p = Scanner { d: data, i: 0 };
    while p.peek().is_some() {
        p.envelope(out)?;
    }
    Some(())
}

struct Scanner<'a> {
    d: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    /// The next byte after whitespace (not consumed).
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.d.get(self.i) {
            self.i += 1;
        }
        self.d.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string; its contents' range, and whether it holds escapes (then the range is raw).
    #[inline]
    fn string(&mut self) -> Option<(Range<usize>, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Printable ASCII only: valid UTF-8, and no raw control character (invalid JSON).
            // Bytes outside strings are checked by the grammar.
            let at = self.i + crate::scan::string_stop(&self.d[self.i..])?;
            match self.d[at] {
                b'"' => {
                    self.i = at + 1;
                    return Some((start..at, escaped));
                }
                b'\\' => {}
                _ => return None,
            }
            // `\u` escapes (surrogates) are left to serde_json.
            match self.d.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                _ => return None,
            }
            escaped = true;
            self.i = at + 2;
        }
    }

    /// A string without escapes: its contents.
    #[inline]
    fn plain_string(&mut self) -> Option<Range<usize>> {
        match self.string()? {
            (r, false) => Some(r),
            (_, true) => None,
        }
    }

    /// The next object key, without escapes (an escaped key could spell a field name).
    fn key(&mut self) -> Option<Range<usize>> {
        let k = self.plain_string()?;
        self.eat(b':')?;
        Some(k)
    }

    /// After a member: `true` if another follows (`,`), `false` at the closing `close`.
    fn next_member(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Some(true)
            }
            c if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// Any JSON value, checked and skipped.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => {
                self.i += 1;
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.eat(b':')?;
                    self.skip_value(depth + 1)?;
                    if !self.next_member(b'}')? {
                        return Some(());
                    }
                }
            }
            b'[' => {
                self.i += 1;
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    if !self.next_member(b']')? {
                        return Some(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.d[self.i..].starts_with(word).then(|| self.i += word.len())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let d = self.d;
        let mut i = self.i;
        if d.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |i: &mut usize| {
            let s = *i;
            while d.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i - s
        };
        match d.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                digits(&mut i);
            }
            _ => return None,
        }
        if d.get(i) == Some(&b'.') {
            i += 1;
            if digits(&mut i) == 0 {
                return None;
            }
        }
        if matches!(d.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(d.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if digits(&mut i) == 0 {
                return None;
            }
        }
        // What follows (`12x`, `01`) is checked by the caller: only `,`, `]`, `}` may.
        self.i = i;
        Some(())
    }

    /// One top-level object: an envelope (`messageType`, `logEvents`) or a record (`message`).
    fn envelope(&mut self, out: &mut Vec<Item>) -> Option<()> {
        self.eat(b'{')?;
        let first_event = out.len();
        let mut message_type: Option<Range<usize>> = None;
        let mut events = false;
        let mut message: Option<Range<usize>> = None;
        if self.eat(b'}').is_some() {
            return None; // no field serde_json knows: its error
        }
        loop {
            let key = self.key()?;
            match &self.d[key] {
                b"messageType" if message_type.is_none() => {
                    message_type = Some(self.plain_string()?);
                }
                b"logEvents" if !events => {
                    events = true;
                    self.events(out)?;
                }
                b"message" if message.is_none() => message = Some(self.plain_string()?),
                b"messageType" | b"logEvents" | b"message" => return None, // duplicate
                _ => self.skip_value(1)?,
            }
            if !self.next_member(b'}')? {
                break;
            }
        }
        match message_type.map(|t| &self.d[t]) {
            Some(b"DATA_MESSAGE") => {}
            Some(b"CONTROL_MESSAGE") => {
                out.truncate(first_event);
                out.push(Item::Control);
            }
            Some(_) => return None, // unknown type: serde path's error
            None if events => {}
            None => out.push(Item::Text(message?)),
        }
        Some(())
    }

    /// `logEvents`: an array of objects, each with exactly one string `message`.
    fn events(&mut self, out: &mut Vec<Item>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'{')?;
            let mut message = None;
            if self.eat(b'}').is_none() {
                loop {
                    let key = self.key()?;
                    if &self.d[key] == b"message" {
                        if message.is_some() {
                            return None;
                        }
                        message = Some(self.plain_string()?);
                    } else {
                        self.skip_value(2)?;
                    }
                    if !self.next_member(b'}')? {
                        break;
                    }
                }
            }
            out.push(Item::Text(message?));
            if !self.next_member(b']')? {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
