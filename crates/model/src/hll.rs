//! A small HyperLogLog sketch of IP addresses (precision 14, 64-bit hash, Ertl's improved estimator).
//!
//! Standard error of the estimate: `1.04 / sqrt(2^14)` ≈ 0.81 %. The hash is part of the
//! persisted contract (registers are stored in the history's `dest_hll` column), so it is a fixed
//! function written here ([`hash_ip`]), never a seeded hasher.

use std::net::IpAddr;

/// Precision: the sketch has `2^P` registers.
pub const P: u32 = 14;
/// Number of registers (`2^P` = 16,384).
pub const M: usize = 1 << P;
/// Relative standard error of the estimate, `1.04 / sqrt(M)`.
pub const STANDARD_ERROR: f64 = 1.04 / 128.0;
/// Largest register value: `64 - P + 1`.
const MAX_RHO: u8 = (64 - P + 1) as u8;
/// Format version byte of [`Hll::to_bytes`].
const FORMAT_VERSION: u8 = 1;

/// A serialized sketch that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HllError {
    /// The byte string has the wrong length.
    #[error("hll: expected {expected} bytes, got {got}")]
    Length {
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// Unknown format version or precision.
    #[error("hll: unsupported header (version {version}, precision {precision})")]
    Header {
        /// Version byte found.
        version: u8,
        /// Precision byte found.
        precision: u8,
    },
    /// A register holds a value no 64-bit hash can produce.
    #[error("hll: register {index} holds {value}, above {MAX_RHO}")]
    Register {
        /// Register index.
        index: usize,
        /// Value found.
        value: u8,
    },
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
#[inline]
const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The fixed 64-bit hash of an address used by the sketch (and by shard selection).
///
/// IPv4: `fmix64(u32 ^ 0x9e37_79b9_7f4a_7c15)`; IPv6: `fmix64(hi ^ fmix64(lo ^ 0x6a09_e667_f3bc_c909))`
/// where `hi`/`lo` are the high and low 64 bits. Distinct IPv4 addresses never collide.
#[inline]
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => fmix64(u64::from(u32::from(a)) ^ 0x9e37_79b9_7f4a_7c15),
        IpAddr::V6(a) => {
            let x = u128::from(a);
            let hi = (x >> 64) as u64;
            let lo = x as u64;
            fmix64(hi ^ fmix64(lo ^ 0x6a09_e667_f3bc_c909))
        }
    }
}

/// A HyperLogLog sketch with `2^14` one-byte registers (16 KiB).
#[derive(Clone, PartialEq, Eq)]
pub struct Hll {
    registers: Box<[u8]>,
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hll").field("estimate", &self.estimate()).finish()
    }
}

impl Default for Hll {
    fn default() -> Self {
        Self::new()
    }
}

impl Hll {
    /// An empty sketch.
    pub fn new() -> Hll {
        Hll { registers: vec![0u8; M].into_boxed_slice() }
    }

    /// Adds one address.
    #[inline]
    pub fn insert(&mut self, ip: IpAddr) {
        self.insert_hash(hash_ip(ip));
    }

    /// Adds one 64-bit hash: the top `P` bits pick the register, the rank of the first set bit
    /// of the rest is the value.
    #[inline]
    pub fn insert_hash(&mut self, h: u64) {
        let index = (h >> (64 - P)) as usize;
        // The sentinel bit bounds the rank to 64 - P + 1.
        let w = (h << P) | (1 << (P - 1));
        let rho = (w.leading_zeros() + 1) as u8;
        if let Some(r) = self.registers.get_mut(index) {
            if rho > *r {
                *r = rho;
            }
        }
    }

    /// Union: each register becomes the max of both. Commutative, associative, idempotent.
    pub fn merge(&mut self, other: &Hll) {
        for (a, b) in self.registers.iter_mut().zip(other.registers.iter()) {
            if *b > *a {
                *a = *b;
            }
        }
    }

    /// Estimated number of distinct addresses inserted (Ertl 2017, "New cardinality estimation
    /// algorithms for HyperLogLog sketches", improved raw estimator: no bias correction tables,
    /// no switch to linear counting needed).
    pub fn estimate(&self) -> f64 {
        let q = (64 - P) as usize;
        let mut hist = [0u32; 64];
        for &r in self.registers.iter() {
            if let Some(c) = hist.get_mut(r as usize) {
                *c += 1;
            }
        }
        let m = M as f64;
        let mut z = m * tau(1.0 - f64::from(hist[q + 1]) / m);
        for k in (1..=q).rev() {
            z += f64::from(hist[k]);
            z *= 0.5;
        }
        z += m * sigma(f64::from(hist[0]) / m);
        if !z.is_finite() {
            return 0.0; // every register empty
        }
        if z <= 0.0 {
            return u64::MAX as f64; // every register saturated: beyond what 64-bit hashes can tell
        }
        m * m / (2.0 * std::f64::consts::LN_2 * z)
    }

    /// Serialized form (the `dest_hll` column): byte 0 = format version (1), byte 1 = precision
    /// (14), then the `2^14` registers, one byte each.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + M);
        out.push(FORMAT_VERSION);
        out.push(P as u8);
        out.extend_from_slice(&self.registers);
        out
    }

    /// Parses [`Hll::to_bytes`] output, validating header, length and register range.
    pub fn from_bytes(bytes: &[u8]) -> Result<Hll, HllError> {
        if bytes.len() != 2 + M {
            return Err(HllError::Length { expected: 2 + M, got: bytes.len() });
        }
        let (version, precision) = (bytes[0], bytes[1]);
        if version != FORMAT_VERSION || u32::from(precision) != P {
            return Err(HllError::Header { version, precision });
        }
        let registers = &bytes[2..];
        if let Some((index, &value)) = registers.iter().enumerate().find(|(_, &v)| v > MAX_RHO) {
            return Err(HllError::Register { index, value });
        }
        Ok(Hll { registers: registers.into() })
    }
}

/// Ertl's `sigma(x) = x + sum_k x^(2^k) 2^(k-1)`, for the share of empty registers.
fn sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    for _ in 0..100 {
        x *= x;
        let z_old = z;
        z += x * y;
        y += y;
        if z_old == z {
            break;
        }
    }
    z
}

/// Ertl's `tau(x)`, for the share of saturated registers.
fn tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    for _ in 0..100 {
        x = x.sqrt();
        let z_old = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if z_old == z {
            break;
        }
    }
    z / 3.0
}

/// Serialized as [`Hll::to_bytes`] (one byte string: compact in binary formats); deserializing
/// validates it as [`Hll::from_bytes`] does, so a damaged snapshot is an error, never a sketch
/// of the wrong size.
impl serde::Serialize for Hll {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for Hll {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hll, D::Error> {
        let bytes: serde_bytes_buf::Buf = serde::Deserialize::deserialize(d)?;
        Hll::from_bytes(&bytes.0).map_err(serde::de::Error::custom)
    }
}

/// A byte string read from either a byte string or a sequence of bytes (what `Vec<u8>`'s own
/// impl does not accept from `serialize_bytes` in self-describing formats).
mod serde_bytes_buf {
    pub(super) struct Buf(pub(super) Vec<u8>);

    impl<'de> serde::Deserialize<'de> for Buf {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Buf, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Buf;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a byte string")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Buf, E> {
                    Ok(Buf(v.to_vec()))
                }
                fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Buf, E> {
                    Ok(Buf(v))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Buf, A::Error> {
                    let mut out = Vec::with_capacity(a.size_hint().unwrap_or(0).min(1 << 16));
                    while let Some(b) = a.next_element::<u8>()? {
                        out.push(b);
                    }
                    Ok(Buf(out))
                }
            }
            d.deserialize_bytes(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(i))
    }

    /// The serde form round-trips, and a damaged one (wrong length) is refused.
    #[test]
    fn serde_round_trip_and_damage_refused() {
        let mut h = Hll::new();
        (0..5000).for_each(|i| h.insert(v4(i)));
        let json = serde_json::to_vec(&h).unwrap();
        assert_eq!(serde_json::from_slice::<Hll>(&json).unwrap(), h);
        assert!(serde_json::from_slice::<Hll>(b"[1,14,0]").is_err());
    }

    fn sketch_of(range: std::ops::Range<u32>) -> Hll {
        let mut h = Hll::new();
        for i in range {
            h.insert(v4(i));
        }
        h
    }

    /// Estimates stay within 3 standard errors on sizes from tiny to 1M.
    #[test]
    fn estimate_within_three_standard_errors() {
        for &(start, n) in
            &[(0u32, 1u32), (7, 10), (1000, 1_000), (0, 10_000), (5_000_000, 100_000)]
        {
            let est = sketch_of(start..start + n).estimate();
            let err = (est - f64::from(n)).abs() / f64::from(n);
            assert!(err <= 3.0 * STANDARD_ERROR, "n={n} est={est} err={err}");
        }
    }

    #[test]
    fn estimate_of_one_million() {
        let est = sketch_of(0x0a00_0000..0x0a00_0000 + 1_000_000).estimate();
        assert!((est - 1e6).abs() / 1e6 <= 3.0 * STANDARD_ERROR, "est={est}");
    }

    #[test]
    fn empty_estimates_zero_and_duplicates_do_not_count() {
        assert_eq!(Hll::new().estimate(), 0.0);
        let mut h = Hll::new();
        for _ in 0..1000 {
            h.insert(v4(42));
            h.insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
        assert!((h.estimate() - 2.0).abs() < 0.01, "{}", h.estimate());
    }

    #[test]
    fn merge_equals_sketch_of_union() {
        let mut a = sketch_of(0..60_000);
        let b = sketch_of(40_000..100_000);
        a.merge(&b);
        assert_eq!(a, sketch_of(0..100_000));
    }

    #[test]
    fn bytes_round_trip_and_validation() {
        let h = sketch_of(0..5000);
        assert_eq!(Hll::from_bytes(&h.to_bytes()).unwrap(), h);
        assert!(matches!(Hll::from_bytes(&[1, 14]), Err(HllError::Length { .. })));
        let mut bad = h.to_bytes();
        bad[1] = 12;
        assert!(matches!(Hll::from_bytes(&bad), Err(HllError::Header { precision: 12, .. })));
        let mut bad = h.to_bytes();
        bad[100] = 60;
        assert!(matches!(Hll::from_bytes(&bad), Err(HllError::Register { index: 98, value: 60 })));
    }

    #[test]
    fn saturated_registers_do_not_panic() {
        let mut bytes = Hll::new().to_bytes();
        for b in &mut bytes[2..] {
            *b = MAX_RHO;
        }
        let h = Hll::from_bytes(&bytes).unwrap();
        assert!(h.estimate().is_finite() && h.estimate() > 1e15);
    }
}
