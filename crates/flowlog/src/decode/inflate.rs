//! Gzip inflation into memory the thread already has ([`InflateRoom`]) and [`gunzip`].

use std::io::Read;

use super::framing::GZIP_MEMBER_START;
use crate::error::DecodeError;

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
pub(super) struct InflateRoom {
    /// The inflated text of the last object starts at 0. Its `len` is how much of it has been
    /// initialized; only growth is ever zeroed.
    pub(super) buf: Vec<u8>,
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
    pub(super) fn take() -> InflateRoom {
        ROOM.try_with(|r| std::mem::take(&mut *r.borrow_mut())).unwrap_or_default()
    }

    /// Gives the room back to the calling thread, unless it is too large to keep or the thread
    /// already holds a larger one.
    pub(super) fn put_back(self) {
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
    pub(super) fn gunzip(&mut self, data: &[u8], limit: u64) -> Result<usize, DecodeError> {
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

#[cfg(test)]
mod inflate_tests {
    use super::InflateRoom;
    use crate::FlowRecord;
    use crate::{for_each_record, DecodeOptions, LineError, RecordSink};
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
