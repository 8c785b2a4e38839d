//! The distinct sets of one key: destination ports of a vertical key ([`PortSet`]) and destination
//! addresses of a horizontal key ([`DestSet`]), each with a fixed largest size in bytes.

use std::net::{IpAddr, Ipv4Addr};

use flowspike_model::Hll;

/// Bytes of a [`PortSet`] bitmap: one bit per port.
pub(crate) const BITMAP_BYTES: usize = 65_536 / 8;
/// Bytes of a HyperLogLog's registers (`flowspike_model::hll::M`).
pub(crate) const HLL_BYTES: usize = flowspike_model::hll::M;

/// An address as the aggregation keeps it: `u32` for the IPv4 fast path, `IpAddr` otherwise. Its
/// order is `IpAddr`'s (IPv4 before IPv6, then numeric), so rows sort the same from either path.
pub(crate) trait Addr:
    Copy
    + Ord
    + std::hash::Hash
    + Send
    + Sync
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
    + 'static
{
    /// Heap bytes one address takes in a vector.
    const BYTES: usize;
    /// A buffered record (destination, port, protocol) packed so that its own order is the order
    /// of a key: (destination, port, protocol) as made by [`Addr::pack`], (protocol, port,
    /// destination) after [`Addr::to_horizontal`]. For IPv4 a `u64`, the fastest thing to sort.
    type Raw: Copy
        + Ord
        + Send
        + Sync
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static;
    /// The address.
    fn ip(self) -> IpAddr;
    /// The address as `IpAddr::to_string` writes it (without the formatting machinery for IPv4).
    fn text(self) -> String {
        flowspike_model::ip_string(self.ip())
    }
    /// A well-mixed hash of the address (for bucket counts).
    fn spread(self) -> u64 {
        flowspike_model::hll::hash_ip(self.ip())
    }
    /// Packs a record in vertical order.
    fn pack(dst: Self, port: u16, proto: u8) -> Self::Raw;
    /// Unpacks a record packed by [`Addr::pack`].
    fn unpack(r: Self::Raw) -> (Self, u16, u8);
    /// Repacks a record packed by [`Addr::pack`] in horizontal order.
    fn to_horizontal(r: Self::Raw) -> Self::Raw;
    /// Unpacks a record repacked by [`Addr::to_horizontal`].
    fn unpack_horizontal(r: Self::Raw) -> (Self, u16, u8);
}

impl Addr for u32 {
    const BYTES: usize = 4;
    type Raw = u64;
    #[inline]
    fn ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
    /// Written by hand: `fmt`'s machinery costs several times more, and the rows list up to
    /// `sample` addresses each.
    fn text(self) -> String {
        let mut s = String::with_capacity(15);
        for (i, b) in self.to_be_bytes().into_iter().enumerate() {
            if i > 0 {
                s.push('.');
            }
            if b >= 100 {
                s.push(char::from(b'0' + b / 100));
            }
            if b >= 10 {
                s.push(char::from(b'0' + b / 10 % 10));
            }
            s.push(char::from(b'0' + b % 10));
        }
        s
    }
    #[inline]
    fn spread(self) -> u64 {
        u64::from(self).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    #[inline]
    fn pack(dst: u32, port: u16, proto: u8) -> u64 {
        (u64::from(dst) << 24) | (u64::from(port) << 8) | u64::from(proto)
    }
    #[inline]
    fn unpack(r: u64) -> (u32, u16, u8) {
        ((r >> 24) as u32, (r >> 8) as u16, r as u8)
    }
    #[inline]
    fn to_horizontal(r: u64) -> u64 {
        let (d, p, pr) = Self::unpack(r);
        (u64::from(pr) << 48) | (u64::from(p) << 32) | u64::from(d)
    }
    #[inline]
    fn unpack_horizontal(r: u64) -> (u32, u16, u8) {
        (r as u32, (r >> 32) as u16, (r >> 48) as u8)
    }
}

/// A buffered record of the general path: compared field by field, `hi` first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct WideRaw {
    hi: u32,
    addr: IpAddr,
    lo: u32,
}

impl Addr for IpAddr {
    const BYTES: usize = std::mem::size_of::<IpAddr>();
    type Raw = WideRaw;
    #[inline]
    fn ip(self) -> IpAddr {
        self
    }
    #[inline]
    fn pack(dst: IpAddr, port: u16, proto: u8) -> WideRaw {
        WideRaw { hi: 0, addr: dst, lo: (u32::from(port) << 8) | u32::from(proto) }
    }
    #[inline]
    fn unpack(r: WideRaw) -> (IpAddr, u16, u8) {
        (r.addr, (r.lo >> 8) as u16, r.lo as u8)
    }
    #[inline]
    fn to_horizontal(r: WideRaw) -> WideRaw {
        let (d, p, pr) = Self::unpack(r);
        WideRaw { hi: (u32::from(pr) << 16) | u32::from(p), addr: d, lo: 0 }
    }
    #[inline]
    fn unpack_horizontal(r: WideRaw) -> (IpAddr, u16, u8) {
        (r.addr, r.hi as u16, (r.hi >> 16) as u8)
    }
}

/// Merges two sorted, duplicate-free vectors into one (sorted, duplicate-free).
fn union_sorted<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    // Overlapping inputs leave spare room; the key cap's byte bound assumes at most 2x.
    if out.capacity() > 2 * out.len() {
        out.shrink_to_fit();
    }
    out
}

/// The distinct destination ports of a vertical key: a sorted vector up to the exact cap, then a
/// 65,536-bit bitmap (8 KiB). Both are exact: a bitmap of every port is smaller than a
/// HyperLogLog (16 KiB) and also answers "how many below 1024", so ports are never estimated.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum PortSet {
    /// Sorted, distinct.
    Small(Vec<u16>),
    /// Bit `p` of word `p / 64` is set when port `p` was seen; the second field is the count.
    Bitmap(#[serde(with = "crate::tap::bitmap_serde")] Box<[u64; 1024]>, u32),
}

impl PortSet {
    /// A set of sorted distinct ports, as a bitmap past `cap`.
    pub(crate) fn from_sorted(ports: Vec<u16>, cap: usize) -> PortSet {
        let mut s = PortSet::Small(ports);
        s.spill(cap);
        s
    }

    /// Turns a vector longer than `cap` into the bitmap.
    fn spill(&mut self, cap: usize) {
        if let PortSet::Small(v) = self {
            if v.len() > cap {
                let mut bits = Box::new([0u64; 1024]);
                for &p in v.iter() {
                    bits[usize::from(p >> 6)] |= 1 << (p & 63);
                }
                *self = PortSet::Bitmap(bits, v.len() as u32);
            }
        }
    }

    /// Adds sorted distinct ports.
    pub(crate) fn extend_sorted(&mut self, ports: &[u16], cap: usize) {
        match self {
            PortSet::Small(v) => {
                *v = union_sorted(v, ports);
                self.spill(cap);
            }
            PortSet::Bitmap(bits, n) => {
                for &p in ports {
                    let w = &mut bits[usize::from(p >> 6)];
                    let b = 1u64 << (p & 63);
                    if *w & b == 0 {
                        *w |= b;
                        *n += 1;
                    }
                }
            }
        }
    }

    /// Union with another set.
    pub(crate) fn merge(&mut self, other: PortSet, cap: usize) {
        match other {
            PortSet::Small(v) => self.extend_sorted(&v, cap),
            PortSet::Bitmap(ob, _) => {
                let mut mine = match std::mem::replace(self, PortSet::Small(Vec::new())) {
                    PortSet::Small(v) => {
                        let mut b = PortSet::Bitmap(ob, 0);
                        b.extend_sorted(&v, cap);
                        *self = b;
                        self.recount();
                        return;
                    }
                    PortSet::Bitmap(b, _) => b,
                };
                for (a, b) in mine.iter_mut().zip(ob.iter()) {
                    *a |= *b;
                }
                *self = PortSet::Bitmap(mine, 0);
                self.recount();
            }
        }
    }

    fn recount(&mut self) {
        if let PortSet::Bitmap(bits, n) = self {
            *n = bits.iter().map(|w| w.count_ones()).sum();
        }
    }

    /// Number of distinct ports.
    pub(crate) fn len(&self) -> u64 {
        match self {
            PortSet::Small(v) => v.len() as u64,
            PortSet::Bitmap(_, n) => u64::from(*n),
        }
    }

    /// Number of distinct ports below 1024.
    pub(crate) fn low(&self) -> u64 {
        match self {
            PortSet::Small(v) => v.partition_point(|&p| p < 1024) as u64,
            PortSet::Bitmap(bits, _) => bits[..16].iter().map(|w| u64::from(w.count_ones())).sum(),
        }
    }

    /// The `k` lowest ports, ascending (so ports below 1024 come first).
    pub(crate) fn sample(&self, k: usize) -> Vec<u16> {
        match self {
            PortSet::Small(v) => v.iter().take(k).copied().collect(),
            PortSet::Bitmap(bits, _) => (0..=u16::MAX)
                .filter(|&p| bits[usize::from(p >> 6)] & (1 << (p & 63)) != 0)
                .take(k)
                .collect(),
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            PortSet::Small(v) => v.capacity() * 2,
            PortSet::Bitmap(..) => BITMAP_BYTES,
        }
    }

    /// The bytes the key cap charges: 2 per port up to the bitmap's 8 KiB. A function of the set
    /// alone (not of vector capacities), never decreasing as ports are added.
    pub(crate) fn charged_bytes(&self) -> usize {
        match self {
            PortSet::Small(v) => (v.len() * 2).min(BITMAP_BYTES),
            PortSet::Bitmap(..) => BITMAP_BYTES,
        }
    }
}

/// The distinct destination addresses of a horizontal key: a sorted vector up to the exact cap,
/// then a HyperLogLog (16 KiB) and the `sample` lowest addresses. Past the cap the count is an
/// estimate (standard error 0.81 %).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound = "")]
pub(crate) enum DestSet<A: Addr> {
    /// Sorted, distinct.
    Small(Vec<A>),
    /// Every address went into the sketch; `sample` keeps the lowest ones, sorted.
    Sketch(Box<Hll>, Vec<A>),
}

impl<A: Addr> DestSet<A> {
    /// A set of sorted distinct addresses, as a sketch past `cap`.
    pub(crate) fn from_sorted(dests: Vec<A>, cap: usize, sample: usize) -> DestSet<A> {
        let mut s = DestSet::Small(dests);
        s.spill(cap, sample);
        s
    }

    fn spill(&mut self, cap: usize, sample: usize) {
        if let DestSet::Small(v) = self {
            if v.len() > cap {
                let mut hll = Box::new(Hll::new());
                for &a in v.iter() {
                    hll.insert(a.ip());
                }
                v.truncate(sample);
                v.shrink_to_fit();
                *self = DestSet::Sketch(hll, std::mem::take(v));
            }
        }
    }

    /// Adds sorted distinct addresses.
    pub(crate) fn extend_sorted(&mut self, dests: &[A], cap: usize, sample: usize) {
        match self {
            DestSet::Small(v) => {
                *v = union_sorted(v, dests);
                self.spill(cap, sample);
            }
            DestSet::Sketch(hll, s) => {
                for &a in dests {
                    hll.insert(a.ip());
                }
                let take = dests.len().min(sample);
                *s = union_sorted(s, &dests[..take]);
                s.truncate(sample);
            }
        }
    }

    /// Union with another set.
    pub(crate) fn merge(&mut self, other: DestSet<A>, cap: usize, sample: usize) {
        match other {
            DestSet::Small(v) => self.extend_sorted(&v, cap, sample),
            DestSet::Sketch(oh, os) => {
                if let DestSet::Small(v) = self {
                    let v = std::mem::take(v);
                    *self = DestSet::Sketch(oh, os);
                    self.extend_sorted(&v, cap, sample);
                } else if let DestSet::Sketch(h, s) = self {
                    h.merge(&oh);
                    *s = union_sorted(s, &os);
                    s.truncate(sample);
                }
            }
        }
    }

    /// Number of distinct addresses and whether it is an estimate.
    pub(crate) fn count(&self) -> (u64, bool) {
        match self {
            DestSet::Small(v) => (v.len() as u64, false),
            DestSet::Sketch(h, _) => (h.estimate().round() as u64, true),
        }
    }

    /// The `k` lowest addresses, ascending.
    pub(crate) fn sample(&self, k: usize) -> Vec<A> {
        match self {
            DestSet::Small(v) | DestSet::Sketch(_, v) => v.iter().take(k).copied().collect(),
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            DestSet::Small(v) => v.capacity() * A::BYTES,
            DestSet::Sketch(_, v) => HLL_BYTES + v.capacity() * A::BYTES,
        }
    }

    /// The bytes the key cap charges: the addresses' bytes up to the sketch's 16 KiB. A function
    /// of the set alone, never decreasing as addresses are added.
    pub(crate) fn charged_bytes(&self) -> usize {
        match self {
            DestSet::Small(v) => (v.len() * A::BYTES).min(HLL_BYTES),
            DestSet::Sketch(..) => HLL_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_set_bitmap_agrees_with_vector() {
        let a: Vec<u16> = (0..3000).map(|i| i * 7).collect();
        let b: Vec<u16> = (0..2000).map(|i| i * 11).collect();
        let mut small = PortSet::from_sorted(a.clone(), usize::MAX);
        small.merge(PortSet::from_sorted(b.clone(), usize::MAX), usize::MAX);
        let mut big = PortSet::from_sorted(a, 100);
        big.merge(PortSet::from_sorted(b, 100), 100);
        assert!(matches!(big, PortSet::Bitmap(..)));
        assert_eq!(small.len(), big.len());
        assert_eq!(small.low(), big.low());
        assert_eq!(small.sample(40), big.sample(40));
        // Small merged into a bitmap and a bitmap into small give the same set.
        let mut s2 = PortSet::from_sorted(vec![7, 11, 14], 100);
        s2.merge(big.clone(), 100);
        assert_eq!(s2.len(), big.len());
    }

    #[test]
    fn dest_set_sketch_keeps_lowest_sample() {
        let mut d = DestSet::from_sorted((100u32..200).collect(), 50, 5);
        assert!(matches!(d, DestSet::Sketch(..)));
        d.extend_sorted(&[1, 2, 150, 300], 50, 5);
        assert_eq!(d.sample(10), vec![1, 2, 100, 101, 102]);
        let (n, est) = d.count();
        assert!(est && (101..=103).contains(&n), "{n}");
    }
}
