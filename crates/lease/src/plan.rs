//! The pure decisions over a [`Snapshot`]: which leases are active, which expired, which to take
//! (free or expired first, then one stolen from the most loaded worker), and the global watermark.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::{Checkpoint, Lease, Snapshot};

/// The leases that may be read now: not at their end, and every parent still in the table at its
/// end (a parent no longer in the table was cleaned up after it ended).
pub fn active_leases(snap: &Snapshot) -> impl Iterator<Item = &Lease> {
    snap.leases.values().filter(|l| {
        l.checkpoint != Checkpoint::ShardEnd
            && l.parents
                .iter()
                .all(|p| snap.leases.get(p).is_none_or(|pl| pl.checkpoint == Checkpoint::ShardEnd))
    })
}

/// The event-time watermark of the whole stream: the minimum of the active leases' committed
/// watermarks; `None` while an active lease has none yet (or there is no active lease).
pub fn global_watermark(snap: &Snapshot) -> Option<i64> {
    let mut min: Option<i64> = None;
    for l in active_leases(snap) {
        let w = l.watermark?;
        min = Some(min.map_or(w, |m| m.min(w)));
    }
    min
}

/// Expiry detection without clocks in the table (as the KCL does): a lease whose counter has not
/// changed for the failover time, as seen by this worker, has expired.
#[derive(Debug, Default)]
pub struct Expiry {
    seen: HashMap<String, (u64, Instant)>,
}

impl Expiry {
    /// Records the counters of `snap` as seen at `now`.
    pub fn observe(&mut self, snap: &Snapshot, now: Instant) {
        self.seen.retain(|k, _| snap.leases.contains_key(k));
        for l in snap.leases.values() {
            let e = self.seen.entry(l.shard_id.clone()).or_insert((l.counter, now));
            if e.0 != l.counter {
                *e = (l.counter, now);
            }
        }
    }

    /// True when `lease` is free, or its counter has not changed for `failover` since first seen.
    pub fn is_expired(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        if lease.owner.is_none() {
            return true;
        }
        match self.seen.get(&lease.shard_id) {
            Some((c, at)) if *c == lease.counter => now.saturating_duration_since(*at) >= failover,
            _ => false,
        }
    }
}

/// A lease to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// The shard.
    pub shard_id: String,
    /// Its counter in the snapshot (the condition of the take).
    pub seen_counter: u64,
    /// The live worker it is taken from (a steal), `None` for a free or expired lease. The previous
    /// owner notices at its next renewal; the taker must wait a failover time before reading.
    pub stolen_from: Option<String>,
}

/// Which leases `me` should take: up to its fair share (`ceil(active / live workers)`, at most
/// `max_leases`), free and expired leases first (by shard id); with none left and still below the
/// share, one lease of the most loaded worker if that one holds at least two more than `me`.
pub fn plan_takes(
    snap: &Snapshot,
    me: &str,
    expiry: &Expiry,
    now: Instant,
    failover: Duration,
    max_leases: usize,
) -> Vec<Take> {
    let active: Vec<&Lease> = active_leases(snap).collect();
    if active.is_empty() {
        return Vec::new();
    }
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    load.insert(me, 0);
    let mut available = Vec::new();
    for l in &active {
        match &l.owner {
            Some(o) if o == me => *load.entry(me).or_default() += 1,
            Some(o) if !expiry.is_expired(l, now, failover) => *load.entry(o).or_default() += 1,
            _ => available.push(*l),
        }
    }
    let target = active.len().div_ceil(load.len()).min(max_leases);
    let mine = load[me];
    if mine >= target {
        return Vec::new();
    }
    let need = target - mine;
    let mut takes: Vec<Take> = available
        .iter()
        .take(need)
        .map(|l| Take { shard_id: l.shard_id.clone(), seen_counter: l.counter, stolen_from: None })
        .collect();
    if takes.is_empty() {
        let most = load
            .iter()
            .filter(|(w, _)| **w != me)
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)));
        if let Some((victim, n)) = most {
            if *n >= mine + 2 {
                if let Some(l) = active.iter().find(|l| l.owner.as_deref() == Some(*victim)) {
                    takes.push(Take {
                        shard_id: l.shard_id.clone(),
                        seen_counter: l.counter,
                        stolen_from: Some((*victim).to_owned()),
                    });
                }
            }
        }
    }
    takes
}
