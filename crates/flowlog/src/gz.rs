//! The streaming multi-member gzip reader: ISA-L with the `isal` feature, else zlib-rs (flate2).
//!
//! Used wherever gzip is inflated as a stream: large objects read in blocks (the replay crate)
//! and the fallback of [`crate::gunzip`] for objects that are not certainly one member.

use std::io::BufRead;

/// The reader type [`gz_reader`] returns.
#[cfg(feature = "isal")]
pub type GzReader<R> = crate::isal::IsalGzReader<R>;
/// The reader type [`gz_reader`] returns.
#[cfg(not(feature = "isal"))]
pub type GzReader<R> = flate2::bufread::MultiGzDecoder<R>;

/// Name of the streaming inflater this build uses (`"isa-l"` or `"zlib-rs"`), for logs and
/// benchmark reports.
pub const GZ_INFLATER: &str = if cfg!(feature = "isal") { "isa-l" } else { "zlib-rs" };

/// A reader of the inflated text of the gzip stream `r` (one or more members). Damaged input
/// is an `InvalidData` error, input that ends inside a member an `UnexpectedEof` one (or
/// `InvalidData`, depending on where it ends).
pub fn gz_reader<R: BufRead>(r: R) -> GzReader<R> {
    #[cfg(feature = "isal")]
    return crate::isal::IsalGzReader::new(r);
    #[cfg(not(feature = "isal"))]
    return flate2::bufread::MultiGzDecoder::new(r);
}

#[cfg(all(test, feature = "isal"))]
mod tests {
    use std::io::{BufReader, Read, Write};

    use proptest::prelude::*;

    use super::*;

    fn gzip(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Inflates with `reader`, reading `chunk` bytes at a time; the text or the error kind.
    fn inflate(mut reader: impl Read, chunk: usize) -> Result<Vec<u8>, std::io::ErrorKind> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.kind()),
            }
        }
    }

    fn zlib(data: &[u8], cap: usize, chunk: usize) -> Result<Vec<u8>, std::io::ErrorKind> {
        inflate(flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(cap, data)), chunk)
    }

    fn isal(data: &[u8], cap: usize, chunk: usize) -> Result<Vec<u8>, std::io::ErrorKind> {
        inflate(gz_reader(BufReader::with_capacity(cap, data)), chunk)
    }

    /// Text that compresses like flow logs (repeated structure) with some noise.
    fn text(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 97 == 96 {
                    b'\n'
                } else if x.is_multiple_of(5) {
                    b' '
                } else {
                    b'0' + (x % 10) as u8
                }
            })
            .collect()
    }

    #[test]
    fn one_and_many_members_as_zlib_rs() {
        let a = text(1, 300_000);
        let b = text(2, 70_000);
        let mut two = gzip(&a, 6);
        two.extend_from_slice(&gzip(&b, 1));
        two.extend_from_slice(&gzip(b"", 6));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        for (cap, chunk) in [(1 << 20, 8 << 20), (64, 1), (4096, 777), (1, 65536)] {
            assert_eq!(isal(&gzip(&a, 6), cap, chunk).unwrap(), a, "cap {cap} chunk {chunk}");
            assert_eq!(isal(&two, cap, chunk).unwrap(), want, "cap {cap} chunk {chunk}");
        }
        // No member at all: an error for both.
        assert_eq!(zlib(b"", 4096, 4096), Err(std::io::ErrorKind::UnexpectedEof));
        assert_eq!(isal(b"", 4096, 4096), Err(std::io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn damage_is_an_error_never_a_hang_or_silent_loss() {
        let a = text(3, 100_000);
        let z = gzip(&a, 6);
        // Truncated anywhere: an error (inside the header, the data or the trailer).
        for cut in [1, 5, 10, 11, 100, z.len() / 2, z.len() - 8, z.len() - 1] {
            assert!(isal(&z[..cut], 4096, 4096).is_err(), "cut at {cut} of {}", z.len());
        }
        // A wrong CRC-32 or length in the trailer.
        for at in [z.len() - 8, z.len() - 1] {
            let mut bad = z.clone();
            bad[at] ^= 0x55;
            assert_eq!(isal(&bad, 4096, 4096), Err(std::io::ErrorKind::InvalidData), "byte {at}");
        }
        // Not gzip after a member.
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"this is not gzip");
        assert!(isal(&trailing, 4096, 4096).is_err());
        assert!(zlib(&trailing, 4096, 4096).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Same text as zlib-rs on valid input; both fail on damaged input (one byte changed or
        /// the stream cut), whatever the input buffer and read sizes.
        #[test]
        fn agrees_with_zlib_rs(
            seeds in proptest::collection::vec((any::<u64>(), 0usize..20_000, 0u32..10), 1..4),
            edit in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
            cut in proptest::option::of(any::<prop::sample::Index>()),
            cap in prop_oneof![Just(1usize), 2usize..64, Just(8192)],
            chunk in prop_oneof![Just(1usize), 2usize..5000, Just(1 << 20)],
        ) {
            let mut z = Vec::new();
            let mut want = Vec::new();
            for (seed, len, level) in &seeds {
                let t = text(*seed, *len);
                z.extend_from_slice(&gzip(&t, *level));
                want.extend_from_slice(&t);
            }
            let damaged = edit.is_some() || cut.is_some();
            if let Some((at, x)) = edit {
                let i = at.index(z.len());
                z[i] ^= x;
            }
            if let Some(at) = cut {
                z.truncate(at.index(z.len()));
            }
            let ours = isal(&z, cap, chunk);
            let theirs = zlib(&z, cap, chunk);
            if !damaged {
                prop_assert_eq!(ours.as_ref().ok(), Some(&want));
            }
            // On damaged input both may still succeed (a changed byte of a header field neither
            // checks, a cut at a member boundary): then they agree on the text.
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "isa-l {:?} vs zlib-rs {:?}", ours.as_ref().map(|v| v.len()), theirs.as_ref().map(|v| v.len())),
            }
        }
    }
}
