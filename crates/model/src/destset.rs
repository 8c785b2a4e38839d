//! The destination set of one (hour, source) key: the exact set up to the cap (inline IPv4,
//! a short vector, a hash set), then a HyperLogLog sketch past it.

use crate::hll::Hll;
use ahash::AHashSet;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Destinations of one key: the exact set up to the cap, then a sketch.
#[derive(Debug, Clone)]
pub(crate) enum Dests {
    /// At most [`INLINE_V4`] distinct IPv4 addresses, unordered, stored in the key itself: most
    /// (hour, source) keys block a handful of IPv4 destinations, and this needs no allocation
    /// (fresh memory is what counting a large replay mostly waits on).
    V4 {
        len: u8,
        addrs: [u32; INLINE_V4],
    },
    /// At most [`FEW`] distinct addresses, unordered: a short vector searched linearly is
    /// cheaper than a hash set to build, fill, merge and drop.
    Few(Vec<IpAddr>),
    Exact(Box<AHashSet<IpAddr>>),
    Sketch(Box<Sketch>),
}

/// Largest destination set kept as [`Dests::V4`] (the variant is then no larger than a `Vec`
/// and its length).
const INLINE_V4: usize = 6;

/// Largest destination set kept as [`Dests::Few`].
const FEW: usize = 16;

/// Destinations past the cap.
#[derive(Debug, Clone)]
pub(crate) struct Sketch {
    /// The `cap` lowest addresses seen (address order).
    pub(crate) lowest: BTreeSet<IpAddr>,
    /// Every address seen.
    pub(crate) hll: Hll,
    /// A known lower bound of the distinct count (from a row read back without registers).
    pub(crate) floor: u64,
}

impl Sketch {
    fn new() -> Sketch {
        Sketch { lowest: BTreeSet::new(), hll: Hll::new(), floor: 0 }
    }

    pub(crate) fn from_set<'s>(set: impl IntoIterator<Item = &'s IpAddr>, cap: usize) -> Sketch {
        let mut s = Sketch::new();
        for &ip in set {
            s.insert(ip, cap);
        }
        s
    }

    #[inline]
    pub(crate) fn insert(&mut self, ip: IpAddr, cap: usize) {
        self.hll.insert(ip);
        self.keep_lowest(ip, cap);
    }

    #[inline]
    fn keep_lowest(&mut self, ip: IpAddr, cap: usize) {
        if self.lowest.len() < cap {
            self.lowest.insert(ip);
        } else if self.lowest.last().is_some_and(|&max| ip < max) && self.lowest.insert(ip) {
            self.lowest.pop_last();
        }
    }

    fn trim(&mut self, cap: usize) {
        while self.lowest.len() > cap {
            self.lowest.pop_last();
        }
    }

    pub(crate) fn merge(&mut self, other: &Sketch, cap: usize) {
        self.hll.merge(&other.hll);
        for &ip in &other.lowest {
            self.keep_lowest(ip, cap);
        }
        self.floor = self.floor.max(other.floor);
        self.trim(cap);
    }

    /// `max(round(estimate), lowest + 1, floor)`: a truncated set holds more than `lowest`.
    pub(crate) fn count(&self) -> u64 {
        let est = self.hll.estimate().round() as u64;
        est.max(self.lowest.len() as u64 + 1).max(self.floor)
    }
}

impl Dests {
    #[inline]
    pub(crate) fn new() -> Dests {
        Dests::V4 { len: 0, addrs: [0; INLINE_V4] }
    }

    /// The exact set's addresses (empty for a sketch).
    pub(crate) fn exact_len(&self) -> usize {
        match self {
            Dests::V4 { len, .. } => usize::from(*len),
            Dests::Few(v) => v.len(),
            Dests::Exact(set) => set.len(),
            Dests::Sketch(_) => 0,
        }
    }

    #[inline]
    pub(crate) fn insert(&mut self, ip: IpAddr, cap: usize) {
        match self {
            Dests::V4 { len, addrs } => {
                let n = usize::from(*len);
                if let IpAddr::V4(v4) = ip {
                    let x = u32::from(v4);
                    if addrs[..n].contains(&x) {
                        return;
                    }
                    if n < INLINE_V4 {
                        addrs[n] = x;
                        *len += 1;
                        if n + 1 > cap {
                            self.past_cap(cap);
                        }
                        return;
                    }
                }
                // Full, or an IPv6 address: the vector, which checks the cap.
                let mut v: Vec<IpAddr> = Vec::with_capacity(2 * INLINE_V4);
                v.extend(addrs[..n].iter().map(|a| IpAddr::from(a.to_be_bytes())));
                *self = Dests::Few(v);
                self.insert(ip, cap)
            }
            Dests::Few(v) => {
                if v.contains(&ip) {
                    return;
                }
                if v.len() >= FEW {
                    // Past FEW (a cap below FEW made a sketch already): the hash set, which
                    // checks the cap.
                    let mut set: AHashSet<IpAddr> = AHashSet::with_capacity(2 * FEW);
                    set.extend(v.iter().copied());
                    *self = Dests::Exact(Box::new(set));
                    return self.insert(ip, cap);
                }
                v.push(ip);
                if v.len() > cap {
                    self.past_cap(cap);
                }
            }
            Dests::Exact(set) => {
                if set.insert(ip) && set.len() > cap {
                    self.past_cap(cap);
                }
            }
            Dests::Sketch(s) => s.insert(ip, cap),
        }
    }

    pub(crate) fn merge(&mut self, other: Dests, cap: usize) {
        let this = std::mem::replace(self, Dests::new());
        *self = match (this, other) {
            (Dests::Sketch(mut a), Dests::Sketch(b)) => {
                a.trim(cap);
                a.merge(&b, cap);
                Dests::Sketch(a)
            }
            (Dests::Sketch(mut s), exact) | (exact, Dests::Sketch(mut s)) => {
                s.trim(cap);
                exact.for_each_exact(|ip| s.insert(ip, cap));
                Dests::Sketch(s)
            }
            (a, b) => {
                let (mut big, small) = if a.exact_len() >= b.exact_len() { (a, b) } else { (b, a) };
                small.for_each_exact(|ip| big.insert(ip, cap));
                if big.exact_len() > cap {
                    // Built under a larger cap (a merge across limits): past this one now.
                    big.past_cap(cap);
                }
                big
            }
        };
    }

    /// Turns an exact set that holds more than `cap` addresses into the sketch of them.
    fn past_cap(&mut self, cap: usize) {
        let mut s = Sketch::new();
        std::mem::replace(self, Dests::new()).for_each_exact(|ip| s.insert(ip, cap));
        *self = Dests::Sketch(Box::new(s));
    }

    /// Calls `f` with every address of an exact set (nothing for a sketch).
    pub(crate) fn for_each_exact(&self, mut f: impl FnMut(IpAddr)) {
        match self {
            Dests::V4 { len, addrs } => {
                addrs[..usize::from(*len)].iter().for_each(|a| f(IpAddr::from(a.to_be_bytes())))
            }
            Dests::Few(v) => v.iter().copied().for_each(&mut f),
            Dests::Exact(set) => set.iter().copied().for_each(&mut f),
            Dests::Sketch(_) => {}
        }
    }
}
