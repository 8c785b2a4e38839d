//! What a streaming engine needs of the volume tap beside `add`, `merge` and `finish`: splitting
//! off the hours that close, and carrying the open ones across a restart.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{HourSums, VolumeTap};

/// One hour's sums in a checkpoint: IPv4 and IPv6 sources, each with (flows, bytes, packets),
/// sorted by address.
type HourForm = (i64, Vec<(u32, [u64; 3])>, Vec<(u128, [u64; 3])>);

/// A [`VolumeTap`] as read back from a checkpoint ([`VolumeTap`]'s `Serialize` writes this
/// form); [`VolumeTap::restore`] makes a tap of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VolumeSnapshot {
    hours: Vec<HourForm>,
}

/// Every hour's sums (the current hour's included), sorted, so that equal taps write equal bytes.
impl Serialize for VolumeTap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let current = self.current_hour.map(|h| (h, &self.current));
        let mut hours: Vec<HourForm> = self
            .hours
            .iter()
            .map(|(h, sums)| (*h, sums))
            .chain(current)
            .map(|(h, sums)| {
                let mut v4: Vec<(u32, [u64; 3])> = sums.v4.iter().map(|(k, v)| (*k, *v)).collect();
                v4.sort_unstable_by_key(|e| e.0);
                let mut v6: Vec<(u128, [u64; 3])> = sums.v6.iter().map(|(k, v)| (*k, *v)).collect();
                v6.sort_unstable_by_key(|e| e.0);
                (h, v4, v6)
            })
            .collect();
        hours.sort_unstable_by_key(|e| e.0);
        hours.serialize(s)
    }
}

impl VolumeTap {
    /// Takes the hours for which `take(hour)` holds into a tap of their own; `self` keeps the
    /// others.
    pub fn split_hours(&mut self, mut take: impl FnMut(i64) -> bool) -> VolumeTap {
        if let Some(h) = self.current_hour.take() {
            self.hours.insert(h, std::mem::take(&mut self.current));
        }
        let (taken, kept): (BTreeMap<i64, HourSums>, BTreeMap<i64, HourSums>) =
            std::mem::take(&mut self.hours).into_iter().partition(|(h, _)| take(*h));
        self.hours = kept;
        VolumeTap { hours: taken, ..VolumeTap::default() }
    }

    /// The hours with sums, ascending.
    pub fn hours(&self) -> Vec<i64> {
        let mut hours: Vec<i64> = self.hours.keys().copied().chain(self.current_hour).collect();
        hours.sort_unstable();
        hours.dedup();
        hours
    }

    /// Flows added.
    pub fn records(&self) -> u64 {
        let flows = |s: &HourSums| {
            s.v4.values().map(|v| v[0]).sum::<u64>() + s.v6.values().map(|v| v[0]).sum::<u64>()
        };
        self.hours.values().map(flows).sum::<u64>() + flows(&self.current)
    }

    /// The tap a checkpoint held.
    pub fn restore(snap: VolumeSnapshot) -> VolumeTap {
        let mut tap = VolumeTap::default();
        for (h, v4, v6) in snap.hours {
            let sums = tap.hours.entry(h).or_default();
            for (k, v) in v4 {
                sums.add(std::net::IpAddr::V4(k.into()), v);
            }
            for (k, v) in v6 {
                sums.add(std::net::IpAddr::V6(k.into()), v);
            }
        }
        tap
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Split, then finish each part: every hour's rows are those of the whole tap's finish;
        /// the same through a serialized tap restored, fed the rest of the flows.
        #[test]
        fn split_and_snapshot_agree_with_the_whole(
            flows in proptest::collection::vec((0i64..3, 0u8..4, any::<bool>(), 0u64..10_000), 0..200),
            cut in 0usize..200,
            at in 0i64..4,
        ) {
            let src = |i: u8, v6: bool| -> IpAddr {
                if v6 { IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i)]) } else { IpAddr::from([10, 0, 0, i]) }
            };
            let feed = |fs: &[(i64, u8, bool, u64)], t: &mut VolumeTap| {
                fs.iter().for_each(|&(h, i, v6, b)| t.add(h * 3600, src(i, v6), b, 1));
            };
            let mut whole = VolumeTap::default();
            feed(&flows, &mut whole);
            let whole = whole.finish();
            let cut = cut.min(flows.len());
            let mut first = VolumeTap::default();
            feed(&flows[..cut], &mut first);
            let bytes = postcard::to_allocvec(&first).unwrap();
            let mut restored = VolumeTap::restore(postcard::from_bytes(&bytes).unwrap());
            feed(&flows[cut..], &mut restored);
            prop_assert_eq!(restored.records(), flows.len() as u64);
            let early = restored.split_hours(|h| h < at * 3600);
            prop_assert!(early.hours().iter().all(|h| *h < at * 3600));
            prop_assert!(restored.hours().iter().all(|h| *h >= at * 3600));
            let mut parts = early.finish();
            parts.extend(restored.finish());
            prop_assert_eq!(parts, whole);
        }
    }
}
