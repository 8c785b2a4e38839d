//! What a streaming engine needs of a tap beside `add`, `merge` and `finish`: splitting off the
//! hours that close while later ones stay open, and carrying the open hours across a restart
//! (a checkpoint serializes the tap; the restart restores it on the lists then in force).

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Key, RowState, ThreatConfig, ThreatTap};
use crate::ThreatLists;

/// A [`ThreatTap`]'s rows as read back from a checkpoint ([`ThreatTap`]'s `Serialize` writes
/// this form); [`ThreatTap::restore`] makes a tap of it. Opaque: any serde format carries it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreatSnapshot {
    /// The list names the rows' indices refer to.
    names: Vec<String>,
    /// (hour, internal address, list index) and the row's running state.
    rows: Vec<((i64, IpAddr, usize), RowState)>,
}

/// The tap's rows and the names of their lists (not the lists: the restarted tap matches
/// against those in force then), rows in key order so that equal taps write equal bytes.
impl Serialize for ThreatTap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Ref<'a> {
            names: &'a [String],
            rows: Vec<(&'a Key, &'a RowState)>,
        }
        let mut rows: Vec<(&Key, &RowState)> = self.rows.iter().collect();
        rows.sort_unstable_by_key(|(k, _)| **k);
        Ref { names: &self.names, rows }.serialize(s)
    }
}

impl ThreatTap {
    /// Takes the rows of the hours for which `take(hour)` holds into a tap of their own (same
    /// lists and caps); `self` keeps the others. `finish` of both gives, hour by hour, what
    /// `finish` of the whole gives.
    pub fn split_hours(&mut self, mut take: impl FnMut(i64) -> bool) -> ThreatTap {
        let (taken, kept) =
            std::mem::take(&mut self.rows).into_iter().partition(|(k, _)| take(k.0));
        self.rows = kept;
        ThreatTap {
            lists: self.lists.clone(),
            cfg: self.cfg,
            names: self.names.clone(),
            rows: taken,
        }
    }

    /// The hours with rows, ascending.
    pub fn hours(&self) -> Vec<i64> {
        let mut hours: Vec<i64> = self.rows.keys().map(|k| k.0).collect();
        hours.sort_unstable();
        hours.dedup();
        hours
    }

    /// Matched flows, once per list a flow matched.
    pub fn records(&self) -> u64 {
        self.rows.values().map(|r| r.flows).sum()
    }

    /// A tap matching against `lists` with caps `cfg`, holding the rows of `snap` (rows of a
    /// list no longer loaded keep its name, as in a merge of taps built on other lists).
    pub fn restore(lists: Arc<ThreatLists>, cfg: &ThreatConfig, snap: ThreatSnapshot) -> ThreatTap {
        let mut tap = ThreatTap::new(lists.clone(), cfg);
        let saved = ThreatTap {
            lists,
            cfg: *cfg,
            names: snap.names,
            rows: snap.rows.into_iter().collect(),
        };
        tap.merge(saved);
        tap
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::{Flow, MatchRow, ThreatList};

    fn lists() -> Arc<ThreatLists> {
        let a = ThreatList::parse("tor", b"198.51.7.0/28\n2a02::/126\n").unwrap();
        let b = ThreatList::parse("custom", b"198.51.7.8/29\n").unwrap();
        Arc::new(ThreatLists::new(vec![a, b]).unwrap())
    }

    /// Caps small enough that rows pass them (sketch and truncation carried).
    fn caps() -> ThreatConfig {
        ThreatConfig { max_remote_ips: 3, max_ports: 4 }
    }

    fn flows() -> impl Strategy<Value = Vec<Flow>> {
        let remote = prop_oneof![
            (0u8..20).prop_map(|i| IpAddr::from([198, 51, 7, i])),
            (0u16..4).prop_map(|i| IpAddr::from([0x2a02, 0, 0, 0, 0, 0, 0, i])),
        ];
        let one = (0i64..3, 0u8..3, remote, 0u16..8, any::<bool>(), any::<bool>(), 0u64..3600);
        proptest::collection::vec(
            one.prop_map(|(h, i, remote, port, outbound, accepted, dt)| Flow {
                hour: h * 3600,
                internal: IpAddr::from([10, 0, 0, i]),
                remote,
                outbound,
                internal_port: 40000,
                remote_port: port,
                protocol: 6,
                accepted,
                start: (h * 3600) as u64 + dt,
                end: (h * 3600) as u64 + dt + 5,
                bytes: 100,
                packets: 2,
            }),
            0..200,
        )
    }

    proptest! {
        /// Split off any set of hours (`pick`: bit `h` takes hour `h`, not only a prefix), then
        /// finish each part: every hour's rows are those of the whole tap's finish; the same
        /// through a serialized tap restored, fed the rest of the flows.
        #[test]
        fn split_and_snapshot_agree_with_the_whole(flows in flows(), cut in 0usize..200, pick in 0u8..8) {
            let feed = |fs: &[Flow], t: &mut ThreatTap| fs.iter().for_each(|f| t.add(f));
            let mut whole = ThreatTap::new(lists(), &caps());
            feed(&flows, &mut whole);
            let whole: BTreeMap<i64, Vec<MatchRow>> = whole.finish();
            let cut = cut.min(flows.len());
            let mut first = ThreatTap::new(lists(), &caps());
            feed(&flows[..cut], &mut first);
            let bytes = postcard::to_allocvec(&first).unwrap();
            let snap: ThreatSnapshot = postcard::from_bytes(&bytes).unwrap();
            let mut restored = ThreatTap::restore(lists(), &caps(), snap);
            feed(&flows[cut..], &mut restored);
            let total = restored.records();
            let picked = |h: i64| pick & (1 << (h / 3600)) != 0;
            let taken = restored.split_hours(picked);
            prop_assert!(taken.hours().into_iter().all(picked));
            prop_assert!(!restored.hours().into_iter().any(picked));
            prop_assert_eq!(taken.records() + restored.records(), total);
            let (mut a, b) = (taken.finish(), restored.finish());
            prop_assert!(a.keys().all(|h| !b.contains_key(h)));
            a.extend(b);
            prop_assert_eq!(a, whole);
        }
    }
}
