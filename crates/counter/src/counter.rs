//! Per-(hour, source) aggregates: [`Counter`] (one thread's partial); the sharded form is in
//! `sharded.rs`. A key's aggregate (destination set, sketch, interface ids) and its rows are
//! `flowspike_model`'s [`Aggregate`].

use crate::rule::Hit;
use ahash::AHashMap;
use flowspike_model::{
    ip_string, rows_of_maps, Aggregate, AggregateRow, Hll, Limits, RowError, DEFAULT_DEST_CAP,
    DEFAULT_INTERFACE_CAP,
};
use rayon::prelude::*;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::IpAddr;

/// Limits that bound the memory of one (hour, source) key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterConfig {
    /// Largest destination set kept per key (default 10,000). Past it, `unique_dest_count` is a
    /// HyperLogLog estimate, `dest_ips` keeps the `dest_cap` lowest addresses and the row is
    /// flagged `dest_ips_truncated`.
    pub dest_cap: usize,
    /// Largest interface id list kept per key (default 256; the lowest ids are kept). Interface ids
    /// come from AWS, not from the traffic, so this cap is a safety net only.
    pub interface_cap: usize,
    /// Largest number of sources kept per hour (default 1,000,000: about 0.5 GB of counter per
    /// hour at the cap, see docs/limits.md). Past it an hour keeps its *lowest* source addresses
    /// (address order, as [`CounterConfig::dest_cap`] keeps the lowest destinations), so which
    /// sources are kept depends only on the input, never on how it was split over threads; the
    /// records and sources past the cap are counted ([`SourceOverflow`]), not silently lost.
    /// A [`ShardedCounter`](crate::ShardedCounter) applies it to an hour over all its shards.
    pub max_sources_per_hour: usize,
}

/// Default of [`CounterConfig::max_sources_per_hour`].
pub const DEFAULT_MAX_SOURCES_PER_HOUR: usize = 1_000_000;

impl CounterConfig {
    /// The caps of one key.
    #[inline]
    pub fn limits(&self) -> Limits {
        Limits { dest_cap: self.dest_cap, interface_cap: self.interface_cap }
    }
}

impl Default for CounterConfig {
    fn default() -> Self {
        CounterConfig {
            dest_cap: DEFAULT_DEST_CAP,
            interface_cap: DEFAULT_INTERFACE_CAP,
            max_sources_per_hour: DEFAULT_MAX_SOURCES_PER_HOUR,
        }
    }
}

/// What one hour lost to [`CounterConfig::max_sources_per_hour`]: the input that is not in its
/// rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceOverflow {
    /// Counted (blocked outbound) records of the sources past the cap.
    pub records: u64,
    /// Distinct sources past the cap (a HyperLogLog estimate, standard error about 0.8 %).
    pub sources: u64,
}

impl SourceOverflow {
    /// Logs the one warning an hour gets when it lost input to the cap `cap` (the consumer when the
    /// hour closes, replay after counting).
    pub fn warn(&self, hour: i64, cap: usize) {
        tracing::warn!(
            hour,
            records = self.records,
            sources = self.sources,
            max_sources_per_hour = cap,
            "hour has more sources than the cap: its lowest source addresses are kept, the others' records are not counted"
        );
    }
}

/// The sources an hour dropped at its cap, and what it needs to keep dropping the highest.
#[derive(Debug, Clone)]
pub(crate) struct Overflow {
    /// The hour's kept sources, highest on top: built when a new source meets a full hour, and
    /// kept only while it holds exactly the hour's keys (`None` after a merge: rebuilt on demand).
    pub(crate) kept: Option<BinaryHeap<IpAddr>>,
    /// Records of dropped sources.
    records: u64,
    /// Every dropped source.
    sources: Hll,
}

impl Overflow {
    pub(crate) fn new() -> Overflow {
        Overflow { kept: None, records: 0, sources: Hll::new() }
    }

    pub(crate) fn merge(&mut self, other: &Overflow) {
        self.records = self.records.saturating_add(other.records);
        self.sources.merge(&other.sources);
        self.kept = None;
    }

    pub(crate) fn summary(&self) -> SourceOverflow {
        SourceOverflow { records: self.records, sources: self.sources.estimate().round() as u64 }
    }
}

/// One thread's partial aggregate: (hour, source) → counts. Not shared; merge partials with
/// [`Counter::merge`].
///
/// Keys are kept per hour (a sorted list of hours, each with its own map of sources): records
/// arrive mostly in time order, so the keys being updated at any moment are one hour's, and
/// they sit together in one small map that stays in the cache, instead of being spread over one
/// map of every hour (measured: the counting phase of a replay spent most of its counter time on
/// cache and TLB misses of such a map). Closing an hour takes its map whole.
///
/// Rows: `dest_ips` are in address order (IPv4 before IPv6, numeric), which is what "the lowest
/// entries" means past the cap; `interface_ids` in byte order; rows sorted by `(hour, src_ip)`
/// with `src_ip` compared as text.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    /// Sorted by hour, each hour once.
    pub(crate) hours: Vec<(i64, AHashMap<IpAddr, Aggregate>)>,
    /// Index in `hours` of the hour updated last (a hint; checked before use).
    last: usize,
    pub(crate) cfg: CounterConfig,
    /// The hours that met `cfg.max_sources_per_hour` (none, nearly always).
    pub(crate) over: BTreeMap<i64, Box<Overflow>>,
}

impl Counter {
    /// An empty counter.
    pub fn new(cfg: CounterConfig) -> Counter {
        Counter { hours: Vec::new(), last: 0, cfg, over: BTreeMap::new() }
    }

    /// The limits in use.
    pub fn config(&self) -> CounterConfig {
        self.cfg
    }

    /// The map of `hour`'s sources, made (empty) if the hour is new; the caller inserts into it
    /// (within the cap: see [`Counter::admit`]).
    #[inline]
    pub(crate) fn sources_mut(&mut self, hour: i64) -> &mut AHashMap<IpAddr, Aggregate> {
        let i = self.hour_index(hour);
        &mut self.hours[i].1
    }

    /// The index in `hours` of `hour`, made (empty) if the hour is new.
    #[inline]
    fn hour_index(&mut self, hour: i64) -> usize {
        let i = match self.hours.get(self.last) {
            Some((h, _)) if *h == hour => self.last,
            _ => match self.hours.binary_search_by_key(&hour, |(h, _)| *h) {
                Ok(i) => i,
                Err(i) => {
                    // Sized like the hour updated last: the sources active in one hour are
                    // mostly active in the next, and growing a map step by step rehashes it
                    // into fresh memory at every step.
                    let hint = self.hours.get(self.last).map_or(0, |(_, m)| m.len());
                    self.hours.insert(i, (hour, AHashMap::with_capacity(hint)));
                    i
                }
            },
        };
        self.last = i;
        i
    }

    /// True when source `src` may be inserted into hour `hours[i]` (`weight` records): always
    /// below the cap; at the cap, when `src` is lower than the highest kept source, which is then
    /// dropped to make room. What is dropped (that source's records, or `weight` when `src` itself
    /// is refused) is counted in the hour's [`Overflow`]. Keeping the lowest addresses makes the
    /// kept set that of the whole input, whatever order or split it was counted in: a source among
    /// the hour's `cap` lowest is among the `cap` lowest of any part of the input, so no part ever
    /// drops it.
    #[inline]
    fn admit(&mut self, i: usize, src: IpAddr, weight: u64) -> bool {
        let (hour, sources) = &mut self.hours[i];
        if sources.len() < self.cfg.max_sources_per_hour || sources.contains_key(&src) {
            return true;
        }
        Self::admit_at_cap(&mut self.over, *hour, sources, src, weight)
    }

    #[cold]
    #[inline(never)]
    fn admit_at_cap(
        over: &mut BTreeMap<i64, Box<Overflow>>,
        hour: i64,
        sources: &mut AHashMap<IpAddr, Aggregate>,
        src: IpAddr,
        weight: u64,
    ) -> bool {
        let over = over.entry(hour).or_insert_with(|| Box::new(Overflow::new()));
        if over.kept.as_ref().is_none_or(|k| k.len() != sources.len()) {
            over.kept = Some(sources.keys().copied().collect());
        }
        let kept = over.kept.as_mut().expect("set above");
        match kept.peek().copied() {
            // Room for `src` below the highest kept source, which goes.
            Some(max) if src < max && sources.len() <= kept.len() => {
                kept.pop();
                kept.push(src);
                let dropped = sources.remove(&max).map_or(0, |a| a.blocked_count());
                over.records = over.records.saturating_add(dropped);
                over.sources.insert(max);
                true
            }
            _ => {
                over.records = over.records.saturating_add(weight);
                over.sources.insert(src);
                false
            }
        }
    }

    /// Drops the highest sources of `hours[i]` past the cap (after a merge of whole maps).
    fn enforce_cap(&mut self, i: usize) {
        let cap = self.cfg.max_sources_per_hour;
        let (hour, sources) = &mut self.hours[i];
        if sources.len() <= cap {
            if let Some(o) = self.over.get_mut(hour) {
                o.kept = None;
            }
            return;
        }
        let mut keys: Vec<IpAddr> = sources.keys().copied().collect();
        // Distinct keys: the `cap` lowest are exactly `keys[..cap]` after this.
        keys.select_nth_unstable(cap);
        let over = self.over.entry(*hour).or_insert_with(|| Box::new(Overflow::new()));
        for ip in &keys[cap..] {
            let dropped = sources.remove(ip).map_or(0, |a| a.blocked_count());
            over.records = over.records.saturating_add(dropped);
            over.sources.insert(*ip);
        }
        over.kept = None;
    }

    /// Counts one hit. Allocates only for a new key, a new destination or a new interface id.
    #[inline]
    pub fn add(&mut self, hit: &Hit<'_>) {
        self.add_key(hit);
    }

    /// [`Counter::add`], true when the hit's hour holds one source more than before (a new key;
    /// false for a known source, or at the cap, where the hour's number of sources stays).
    #[inline]
    pub(crate) fn add_key(&mut self, hit: &Hit<'_>) -> bool {
        let cfg = self.cfg;
        let i = self.hour_index(hit.hour);
        let before = self.hours[i].1.len();
        if !self.admit(i, hit.src, 1) {
            return false;
        }
        let sources = &mut self.hours[i].1;
        let agg = sources.entry(hit.src).or_default();
        agg.add(hit.dst, hit.bytes, hit.packets, hit.interface_id, cfg.limits());
        sources.len() > before
    }

    /// The sources of `hour` (none if the hour is not here).
    pub(crate) fn hour_sources(&self, hour: i64) -> Option<&AHashMap<IpAddr, Aggregate>> {
        let i = self.hours.binary_search_by_key(&hour, |(h, _)| *h).ok()?;
        Some(&self.hours[i].1)
    }

    /// Removes source `src` of `hour` and counts it in the hour's [`Overflow`] (a source past a
    /// cap applied from outside: [`ShardedCounter`]'s cap over all its shards).
    pub(crate) fn drop_source(&mut self, hour: i64, src: IpAddr) {
        let Ok(i) = self.hours.binary_search_by_key(&hour, |(h, _)| *h) else { return };
        let dropped = self.hours[i].1.remove(&src).map_or(0, |a| a.blocked_count());
        self.refuse(hour, src, dropped);
    }

    /// Counts `weight` records of source `src` of `hour` as dropped at a cap.
    pub(crate) fn refuse(&mut self, hour: i64, src: IpAddr, weight: u64) {
        let over = self.over.entry(hour).or_insert_with(|| Box::new(Overflow::new()));
        over.records = over.records.saturating_add(weight);
        over.sources.insert(src);
        over.kept = None;
    }

    /// Merges a row (for example read back from the history) into this counter.
    ///
    /// A row that is not truncated contributes its `dest_ips` as an exact set. A truncated row
    /// contributes its `dest_ips` as the lowest entries, its `dest_hll` registers (or, when absent,
    /// a sketch built from `dest_ips`) and its `unique_dest_count` as a lower bound.
    pub fn add_row(&mut self, row: &AggregateRow) -> Result<(), RowError> {
        let (src, agg) = Aggregate::from_row(row, self.cfg.limits())?;
        self.merge_agg(row.hour, src, agg);
        Ok(())
    }

    /// Merges `agg`, built under any limits, re-applying this counter's caps.
    pub(crate) fn merge_agg(&mut self, hour: i64, src: IpAddr, agg: Aggregate) {
        let limits = self.cfg.limits();
        let i = self.hour_index(hour);
        if !self.admit(i, src, agg.blocked_count()) {
            return;
        }
        match self.hours[i].1.entry(src) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(agg, limits),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut fresh = Aggregate::new();
                fresh.merge(agg, limits); // re-applies this counter's caps
                e.insert(fresh);
            }
        }
    }

    /// Adds every key of `other` (union of destination sets, caps re-applied, sketches
    /// max-merged). Commutative and associative in the resulting rows; past
    /// [`CounterConfig::max_sources_per_hour`] the kept sources are the lowest of both.
    pub fn merge(&mut self, other: Counter) {
        for (hour, o) in &other.over {
            self.over.entry(*hour).or_insert_with(|| Box::new(Overflow::new())).merge(o);
        }
        if other.cfg != self.cfg {
            for (hour, sources) in other.hours {
                for (src, agg) in sources {
                    self.merge_agg(hour, src, agg);
                }
            }
            return;
        }
        // Same limits: an aggregate of `other` is within this counter's caps as it is, so a key
        // or a whole hour that is only in `other` moves over unchanged.
        let limits = self.cfg.limits();
        for (hour, mut theirs) in other.hours {
            match self.hours.binary_search_by_key(&hour, |(h, _)| *h) {
                Err(i) => {
                    self.hours.insert(i, (hour, theirs));
                    // Hour indices after `i` moved.
                    self.last = i;
                }
                Ok(i) => {
                    let mine = &mut self.hours[i].1;
                    if theirs.len() > mine.len() {
                        std::mem::swap(mine, &mut theirs);
                    }
                    for (src, agg) in theirs {
                        match mine.entry(src) {
                            std::collections::hash_map::Entry::Occupied(mut e) => {
                                e.get_mut().merge(agg, limits)
                            }
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(agg);
                            }
                        }
                    }
                    self.enforce_cap(i);
                }
            }
        }
    }

    /// What each hour lost to [`CounterConfig::max_sources_per_hour`], hours ascending (only
    /// hours that lost something).
    pub fn overflow(&self) -> Vec<(i64, SourceOverflow)> {
        self.over.iter().map(|(h, o)| (*h, o.summary())).collect()
    }

    /// Removes and returns what `hour` lost to [`CounterConfig::max_sources_per_hour`] (for a
    /// streaming consumer that closes the hour), `None` when it lost nothing.
    pub fn take_hour_overflow(&mut self, hour: i64) -> Option<SourceOverflow> {
        self.over.remove(&hour).map(|o| o.summary())
    }

    /// Number of (hour, source) keys.
    pub fn len(&self) -> usize {
        self.hours.iter().map(|(_, m)| m.len()).sum()
    }

    /// True when no hit was counted.
    pub fn is_empty(&self) -> bool {
        self.hours.iter().all(|(_, m)| m.is_empty())
    }

    /// The distinct hours present, sorted.
    pub fn hours(&self) -> Vec<i64> {
        self.hours.iter().filter(|(_, m)| !m.is_empty()).map(|(h, _)| *h).collect()
    }

    /// The row of source `src` (its text form) in `hour`, if that key was counted: what
    /// [`Counter::take_hour`] would return for it, without removing anything (a streaming engine
    /// judging one source of an open hour).
    pub fn row(&self, hour: i64, src: &str) -> Option<AggregateRow> {
        let ip: IpAddr = src.parse().ok()?;
        let i = self.hours.binary_search_by_key(&hour, |(h, _)| *h).ok()?;
        self.hours[i].1.get(&ip).map(|agg| agg.to_row(hour, ip))
    }

    /// The sources (text form) counted in `hour`, in no particular order.
    pub fn sources(&self, hour: i64) -> Vec<String> {
        match self.hours.binary_search_by_key(&hour, |(h, _)| *h) {
            Ok(i) => self.hours[i].1.keys().map(|ip| ip_string(*ip)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Removes the keys of `hour` and returns their map, if the hour has any.
    pub(crate) fn take_hour_map(&mut self, hour: i64) -> Option<AHashMap<IpAddr, Aggregate>> {
        let i = self.hours.binary_search_by_key(&hour, |(h, _)| *h).ok()?;
        self.last = 0;
        if let Some(o) = self.over.get_mut(&hour) {
            o.kept = None;
        }
        Some(self.hours.remove(i).1)
    }

    /// Removes the keys of `hour` and returns their rows sorted by `src_ip` (for a streaming
    /// consumer that closes an hour).
    pub fn take_hour(&mut self, hour: i64) -> Vec<AggregateRow> {
        self.take_hour_map(hour).map_or_else(Vec::new, |m| rows_of_maps(hour, &[m]))
    }

    /// All rows, sorted by `(hour, src_ip)`.
    ///
    /// Rows are built on the current rayon pool.
    pub fn into_rows(self) -> Vec<AggregateRow> {
        let hours: Vec<Vec<AggregateRow>> = self
            .hours
            .into_par_iter()
            .map(|(hour, sources)| rows_of_maps(hour, &[sources]))
            .collect();
        hours.into_iter().flatten().collect()
    }
}
#[cfg(test)]
mod tests;
