//! What a streaming engine needs of a tap beside `add`, `merge` and `finish`: splitting off the
//! hours that close while later ones stay open, and carrying the open hours across a restart
//! (a checkpoint serializes the tap; the restart restores it).

use serde::{Deserialize, Serialize};

use super::{Flush, HourState, Limits, ScanTap, Scratch};
use crate::ScanConfig;

/// The hours of a [`ScanTap`] as read back from a checkpoint ([`ScanTap`]'s `Serialize` writes
/// this form); [`ScanTap::restore`] makes a tap of it. Opaque: any serde format carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScanSnapshot {
    hours: Vec<HourState>,
}

/// The tap's hours (not its settings: the restarted tap takes them from its configuration).
/// Serialize the tap after [`ScanTap::fold`], or its buffered records are written raw.
impl Serialize for ScanTap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.hours.serialize(s)
    }
}

impl ScanTap {
    /// Takes the hours for which `take(hour)` holds into a tap of their own (same settings);
    /// `self` keeps the others. Nothing is refolded: `split` then `finish` of both gives, hour by
    /// hour, what `finish` of the whole gives.
    pub fn split_hours(&mut self, mut take: impl FnMut(i64) -> bool) -> ScanTap {
        let (taken, kept): (Vec<HourState>, Vec<HourState>) =
            std::mem::take(&mut self.hours).into_iter().partition(|h| take(h.hour));
        self.hours = kept;
        self.last = 0;
        ScanTap { lim: self.lim, hours: taken, last: 0 }
    }

    /// The hours held, ascending.
    pub fn hours(&self) -> Vec<i64> {
        let mut hours: Vec<i64> = self.hours.iter().map(|h| h.hour).collect();
        hours.sort_unstable();
        hours
    }

    /// Records added, those dropped past the per-hour cap included.
    pub fn records(&self) -> u64 {
        self.hours
            .iter()
            .map(|h| {
                h.dropped_flows
                    + h.flat.len() as u64
                    + h.v4.values().map(|g| g.flows).sum::<u64>()
                    + h.wide.values().map(|g| g.flows).sum::<u64>()
            })
            .sum()
    }

    /// Folds every group's buffered records into its keys, keeping every key (a fold that is
    /// not the last: the rows `finish` makes are unchanged), so that a serialized tap holds sets
    /// rather than one entry per record.
    pub fn fold(&mut self) {
        let lim = self.lim;
        let mut scratch_v4 = Scratch::default();
        let mut scratch_wide = Scratch::default();
        for h in &mut self.hours {
            // Sources that may reach a row go to their groups; the others' few records stay
            // buffered (16 bytes each, at most `Limits::flat_cap`).
            h.flush(&lim, Flush::KeepSmall);
            h.v4.values_mut().for_each(|g| g.compact(&lim, false, &mut scratch_v4));
            h.wide.values_mut().for_each(|g| g.compact(&lim, false, &mut scratch_wide));
            h.recount();
        }
    }

    /// A tap of `cfg` holding the hours of `snap` (a tap serialized by a run with the same
    /// settings; with other caps, each hour is cut to the new ones as a merge would cut it).
    pub fn restore(cfg: &ScanConfig, snap: ScanSnapshot) -> ScanTap {
        let lim = Limits::new(cfg);
        let mut hours = snap.hours;
        for h in &mut hours {
            h.recount();
            h.check(&lim);
        }
        ScanTap { lim, hours, last: 0 }
    }
}

/// Serde for a port bitmap: a sequence of its 1,024 words (serde derives arrays up to 32 only).
pub(crate) mod bitmap_serde {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(b: &[u64; 1024], s: S) -> Result<S::Ok, S::Error> {
        b.as_slice().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Box<[u64; 1024]>, D::Error> {
        let words = Vec::<u64>::deserialize(d)?;
        let n = words.len();
        words
            .into_boxed_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(n, &"1024 bitmap words"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    use proptest::prelude::*;

    use crate::{HourScans, ScanConfig, ScanTap};

    /// A small configuration, so that the sets pass their exact caps and the bitmap and sketch
    /// forms are exercised, and rows are kept from a few records on.
    fn cfg() -> ScanConfig {
        ScanConfig {
            keep_ports: 3,
            keep_dests: 3,
            exact_ports: 8,
            exact_dests: 8,
            compact_at: 16,
            ..ScanConfig::default()
        }
    }

    type Rec = (i64, IpAddr, IpAddr, u16, u8);

    fn recs() -> impl Strategy<Value = Vec<Rec>> {
        let addr = prop_oneof![
            (0u32..4).prop_map(|i| IpAddr::from([10, 0, 0, i as u8])),
            (0u32..40).prop_map(|i| IpAddr::from([8, 8, 0, i as u8])),
            (0u16..3).prop_map(|i| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i])),
        ];
        proptest::collection::vec(
            ((0i64..3).prop_map(|h| h * 3600), addr.clone(), addr, 0u16..40, 6u8..8),
            0..400,
        )
    }

    fn feed(recs: &[Rec]) -> ScanTap {
        let mut t = ScanTap::new(&cfg());
        for &(h, s, d, p, pr) in recs {
            t.add(h, s, d, p, pr);
        }
        t
    }

    proptest! {
        /// Split, then finish each part: every hour's rows are those of the whole tap's finish;
        /// the same through a serialized (folded) tap restored, fed the rest of the records.
        #[test]
        fn split_and_snapshot_agree_with_the_whole(recs in recs(), cut in 0usize..400, at in 0i64..4) {
            let whole: BTreeMap<i64, HourScans> = feed(&recs).finish();
            let cut = cut.min(recs.len());
            let mut first = feed(&recs[..cut]);
            first.fold();
            let bytes = postcard::to_allocvec(&first).unwrap();
            let mut restored = ScanTap::restore(&cfg(), postcard::from_bytes(&bytes).unwrap());
            for &(h, s, d, p, pr) in &recs[cut..] {
                restored.add(h, s, d, p, pr);
            }
            let records = restored.records();
            prop_assert_eq!(records, recs.len() as u64);
            let early = restored.split_hours(|h| h < at * 3600);
            prop_assert!(early.hours().iter().all(|h| *h < at * 3600));
            prop_assert!(restored.hours().iter().all(|h| *h >= at * 3600));
            prop_assert_eq!(early.records() + restored.records(), records);
            let mut parts = early.finish();
            parts.extend(restored.finish());
            prop_assert_eq!(parts, whole);
        }
    }
}
