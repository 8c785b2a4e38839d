//! KPL-aggregated Kinesis records: magic `f3 89 9a c2`, a protobuf `AggregatedRecord`, and the
//! MD5 digest of the protobuf body as a 16-byte trailer. A small bounded protobuf reader.

use md5::{Digest, Md5};

use crate::error::DecodeError;

const MAGIC: &[u8] = &[0xf3, 0x89, 0x9a, 0xc2];
const DIGEST_LEN: usize = 16;

/// Checks magic and digest; returns the protobuf body.
pub(crate) fn verify(data: &[u8]) -> Result<&[u8], DecodeError> {
    if data.len() < MAGIC.len() + DIGEST_LEN || !data.starts_with(MAGIC) {
        return Err(DecodeError::KplTooShort { len: data.len() });
    }
    let (body, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Err(DecodeError::KplDigestMismatch);
    }
    Ok(body)
}

/// Calls `f` with the `data` of every inner record of an `AggregatedRecord` body, in order.
pub(crate) fn for_each_data(
    body: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut outer = Reader { buf: body, pos: 0, base: 0 };
    while let Some((field, value)) = outer.next_field()? {
        if let (3, Value::Bytes(record, at)) = (field, value) {
            let mut inner = Reader { buf: record, pos: 0, base: at };
            let mut data = None;
            while let Some((field, value)) = inner.next_field()? {
                if let (3, Value::Bytes(d, _)) = (field, value) {
                    data = Some(d);
                }
            }
            match data {
                Some(d) => f(d)?,
                None => {
                    return Err(DecodeError::KplProtobuf {
                        offset: at,
                        reason: "record without data",
                    })
                }
            }
        }
    }
    Ok(())
}

enum Value<'a> {
    Varint,
    Fixed,
    /// Bytes and their offset within the whole body.
    Bytes(&'a [u8], usize),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` within the whole body (for error messages).
    base: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError::KplProtobuf { offset: self.base + self.pos, reason }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| self.err("field runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(self.err("field number 0"));
        }
        let value = match key & 7 {
            0 => {
                self.varint()?;
                Value::Varint
            }
            1 => {
                self.skip(8)?;
                Value::Fixed
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| self.err("length too big"))?;
                let at = self.base + self.pos;
                Value::Bytes(self.skip(len)?, at)
            }
            5 => {
                self.skip(4)?;
                Value::Fixed
            }
            _ => return Err(self.err("unsupported wire type")),
        };
        Ok(Some((field, value)))
    }
}

/// Builds a KPL aggregated record holding `records` (for tests and benches): one partition key,
/// every record pointing at it.
pub fn encode_kpl(records: &[&[u8]]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes_field(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let mut body = Vec::new();
    bytes_field(&mut body, 1, b"pk");
    for r in records {
        let mut rec = Vec::new();
        varint(&mut rec, 1 << 3);
        varint(&mut rec, 0);
        bytes_field(&mut rec, 3, r);
        bytes_field(&mut body, 3, &rec);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let enc = encode_kpl(&[b"a", b"bc"]);
        let body = verify(&enc).unwrap();
        let mut got = Vec::new();
        for_each_data(body, |d| {
            got.push(d.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![b"a".to_vec(), b"bc".to_vec()]);

        let mut bad = enc.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(verify(&bad), Err(DecodeError::KplDigestMismatch)));
        assert!(matches!(verify(&enc[..10]), Err(DecodeError::KplTooShort { .. })));
        // Truncated length-delimited field.
        assert!(matches!(
            for_each_data(&[0x1a, 0x05, 0x00], |_| Ok(())),
            Err(DecodeError::KplProtobuf { .. })
        ));
        // Endless varint.
        assert!(matches!(
            for_each_data(&[0xff; 20], |_| Ok(())),
            Err(DecodeError::KplProtobuf { .. })
        ));
    }
}
