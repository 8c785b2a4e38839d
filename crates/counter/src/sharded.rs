//! [`ShardedCounter`]: partial aggregates split by source so they merge shard by shard in
//! parallel, and [`par_count`].

use crate::counter::{Counter, CounterConfig, Overflow, SourceOverflow};
use crate::rule::Hit;
use ahash::AHashMap;
use crossbeam_utils::CachePadded;
use flowspike_model::hll::hash_ip;
use flowspike_model::{columns_of_maps, rows_of_maps, Aggregate, AggregateRow, Columns};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::IpAddr;

/// The shard of a source address: a fixed hash, so every partial routes a source to the same shard.
#[inline]
pub fn shard_of(src: IpAddr, shards: usize) -> usize {
    // The high bits of the hash feed the HLL register index; the low bits are as good here.
    (hash_ip(src) % shards.max(1) as u64) as usize
}

/// A partial aggregate split into shards by source address. Each rayon worker fills its own
/// `ShardedCounter` without locks; [`ShardedCounter::merge`] then merges shard `i` with shard `i` in
/// parallel. Shards are cache-padded so workers merging neighbouring shards do not share lines.
///
/// [`CounterConfig::max_sources_per_hour`] applies to an hour over all shards, exactly as in one
/// [`Counter`]: the hour keeps its `cap` lowest sources wherever they fall. (Each shard used to
/// keep an equal share of the cap; hashed sources do not fill shards evenly, so an hour with
/// exactly `cap` sources lost some, #28.)
#[derive(Debug, Clone)]
pub struct ShardedCounter {
    /// The shards; none applies the source cap itself (theirs is `usize::MAX`).
    shards: Vec<CachePadded<Counter>>,
    cfg: CounterConfig,
    /// Sources of each hour over all shards, sorted by hour; kept only under a source cap.
    sizes: Vec<(i64, usize)>,
    /// Index in `sizes` of the hour updated last (a hint; checked before use).
    last: usize,
    /// Per hour at the cap: its sources over all shards, highest on top. Built when a new source
    /// meets a full hour; valid while it holds as many sources as the hour (rebuilt otherwise).
    kept: BTreeMap<i64, BinaryHeap<IpAddr>>,
}

impl ShardedCounter {
    /// An empty counter with `shards` shards (at least 1). An hour keeps at most
    /// `cfg.max_sources_per_hour` sources over all shards: its lowest, so the kept set depends on
    /// the input only.
    pub fn new(shards: usize, cfg: CounterConfig) -> ShardedCounter {
        let n = shards.max(1);
        let own = CounterConfig { max_sources_per_hour: usize::MAX, ..cfg };
        ShardedCounter {
            shards: (0..n).map(|_| CachePadded::new(Counter::new(own))).collect(),
            cfg,
            sizes: Vec::new(),
            last: 0,
            kept: BTreeMap::new(),
        }
    }

    /// True when the source cap binds (it is not `usize::MAX`).
    #[inline]
    fn capped(&self) -> bool {
        self.cfg.max_sources_per_hour != usize::MAX
    }

    /// The index in `sizes` of `hour`, made (0 sources) if the hour is new.
    #[inline]
    fn size_index(&mut self, hour: i64) -> usize {
        let i = match self.sizes.get(self.last) {
            Some((h, _)) if *h == hour => self.last,
            _ => match self.sizes.binary_search_by_key(&hour, |(h, _)| *h) {
                Ok(i) => i,
                Err(i) => {
                    self.sizes.insert(i, (hour, 0));
                    i
                }
            },
        };
        self.last = i;
        i
    }

    /// True when source `src` (in shard `shard`) may be counted in hour `sizes[i]`, which is at
    /// the cap: when the shard has it already, or when it is lower than the hour's highest source,
    /// which is then dropped from its shard to make room. What is dropped (that source's records,
    /// or `weight` when `src` itself is refused) is counted in the overflow of its shard. The
    /// same rule as [`Counter::admit`], over all shards.
    #[cold]
    #[inline(never)]
    fn admit_at_cap(&mut self, i: usize, shard: usize, src: IpAddr, weight: u64) -> bool {
        let (hour, size) = self.sizes[i];
        if self.shards[shard].hour_sources(hour).is_some_and(|m| m.contains_key(&src)) {
            return true;
        }
        let mut kept = match self.kept.remove(&hour) {
            Some(k) if k.len() == size => k,
            _ => self
                .shards
                .iter()
                .filter_map(|s| s.hour_sources(hour))
                .flat_map(|m| m.keys().copied())
                .collect(),
        };
        let admitted = match kept.peek().copied() {
            Some(max) if src < max => {
                kept.pop();
                kept.push(src);
                let n = self.shards.len();
                self.shards[shard_of(max, n)].drop_source(hour, max);
                self.sizes[i].1 -= 1;
                true
            }
            _ => {
                self.shards[shard].refuse(hour, src, weight);
                false
            }
        };
        self.kept.insert(hour, kept);
        admitted
    }

    /// Recounts the sources of `hours` (those a merge added to) and drops the highest sources of
    /// the ones past the cap (the `cap` lowest of the union are those of the whole input).
    fn enforce_cap(&mut self, hours: &BTreeSet<i64>) {
        let cap = self.cfg.max_sources_per_hour;
        let n = self.shards.len();
        for &hour in hours {
            self.kept.remove(&hour);
            let mut size: usize =
                self.shards.iter().filter_map(|s| s.hour_sources(hour)).map(|m| m.len()).sum();
            if size > cap {
                let mut keys: Vec<IpAddr> = self
                    .shards
                    .iter()
                    .filter_map(|s| s.hour_sources(hour))
                    .flat_map(|m| m.keys().copied())
                    .collect();
                // Distinct keys (a source is in one shard): the `cap` lowest are `keys[..cap]`.
                keys.select_nth_unstable(cap);
                for ip in &keys[cap..] {
                    self.shards[shard_of(*ip, n)].drop_source(hour, *ip);
                }
                size = cap;
            }
            let i = self.size_index(hour);
            self.sizes[i].1 = size;
        }
    }

    /// The limits in use (as given to [`ShardedCounter::new`]).
    pub fn config(&self) -> CounterConfig {
        self.cfg
    }

    /// What each hour lost to [`CounterConfig::max_sources_per_hour`] over all shards, hours
    /// ascending (only hours that lost something).
    pub fn overflow(&self) -> BTreeMap<i64, SourceOverflow> {
        let mut all: BTreeMap<i64, Overflow> = BTreeMap::new();
        for shard in &self.shards {
            for (hour, o) in &shard.over {
                all.entry(*hour).or_insert_with(Overflow::new).merge(o);
            }
        }
        all.into_iter().map(|(h, o)| (h, o.summary())).collect()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Counts one hit in the shard of its source (within the hour's source cap).
    #[inline]
    pub fn add(&mut self, hit: &Hit<'_>) {
        let shard = shard_of(hit.src, self.shards.len());
        if !self.capped() {
            if let Some(s) = self.shards.get_mut(shard) {
                s.add(hit);
            }
            return;
        }
        let i = self.size_index(hit.hour);
        if self.sizes[i].1 >= self.cfg.max_sources_per_hour
            && !self.admit_at_cap(i, shard, hit.src, 1)
        {
            return;
        }
        if let Some(s) = self.shards.get_mut(shard) {
            if s.add_key(hit) {
                self.sizes[i].1 += 1;
            }
        }
    }

    /// Merges `other` shard by shard, in parallel on the current rayon pool. If the shard counts
    /// differ, `other`'s keys are re-routed (sequentially). Past the source cap an hour keeps the
    /// lowest sources of both.
    pub fn merge(&mut self, other: ShardedCounter) {
        if !self.capped() {
            return self.merge_shards(other);
        }
        // Only the hours of `other` change.
        let hours: BTreeSet<i64> =
            other.shards.iter().flat_map(|s| s.hours.iter().map(|(h, _)| *h)).collect();
        self.merge_shards(other);
        self.enforce_cap(&hours);
    }

    /// [`ShardedCounter::merge`] without the source cap.
    fn merge_shards(&mut self, other: ShardedCounter) {
        if other.shards.len() == self.shards.len() {
            self.shards
                .par_iter_mut()
                .zip(other.shards.into_par_iter())
                .for_each(|(a, b)| a.merge(CachePadded::into_inner(b)));
        } else {
            let n = self.shards.len();
            for shard in other.shards {
                for (hour, sources) in CachePadded::into_inner(shard).hours {
                    for (src, agg) in sources {
                        if let Some(s) = self.shards.get_mut(shard_of(src, n)) {
                            s.merge_agg(hour, src, agg);
                        }
                    }
                }
            }
        }
    }

    /// Number of (hour, source) keys.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// True when no hit was counted.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// The distinct hours present, sorted.
    pub fn hours(&self) -> Vec<i64> {
        let set: BTreeSet<i64> = self.shards.iter().flat_map(|s| s.hours()).collect();
        set.into_iter().collect()
    }

    /// Removes and returns the rows of `hour`, sorted by `src_ip`.
    pub fn take_hour(&mut self, hour: i64) -> Vec<AggregateRow> {
        if let Ok(i) = self.sizes.binary_search_by_key(&hour, |(h, _)| *h) {
            self.sizes.remove(i);
            self.last = 0;
        }
        self.kept.remove(&hour);
        let maps: Vec<AHashMap<IpAddr, Aggregate>> =
            self.shards.iter_mut().filter_map(|s| s.take_hour_map(hour)).collect();
        rows_of_maps(hour, &maps)
    }

    /// The shards as one counter (sequential; sources never collide across shards), with the
    /// limits of [`ShardedCounter::config`] (its hours are within the source cap already).
    pub fn into_counter(self) -> Counter {
        let mut it = self.shards.into_iter().map(CachePadded::into_inner);
        let mut first = it.next().unwrap_or_default();
        first.cfg = self.cfg;
        for c in it {
            for (hour, sources) in c.hours {
                first.sources_mut(hour).extend(sources);
            }
            for (hour, o) in &c.over {
                first.over.entry(*hour).or_insert_with(|| Box::new(Overflow::new())).merge(o);
            }
        }
        for o in first.over.values_mut() {
            o.kept = None;
        }
        first
    }

    /// All rows grouped by hour: hours ascending, each with its rows sorted by `src_ip`. Built
    /// hour by hour, every hour's shards in parallel, with no sort or regrouping of all rows at
    /// once.
    pub fn into_hours(self) -> Vec<(i64, Vec<AggregateRow>)> {
        let hours = self.hour_maps();
        hours.into_par_iter().map(|(hour, maps)| (hour, rows_of_maps(hour, &maps))).collect()
    }

    /// All rows grouped by hour as [`Columns`], hours ascending, each hour's rows sorted by
    /// `src_ip` as text: the rows of [`ShardedCounter::into_hours`] (tested), without a string
    /// per address. Hours are built in parallel.
    pub fn into_hour_columns(self) -> Vec<(i64, Columns)> {
        self.hour_maps()
            .into_par_iter()
            .map(|(hour, maps)| (hour, columns_of_maps(hour, &maps)))
            .collect()
    }

    /// Every hour's maps (one per shard that has the hour), hours ascending.
    fn hour_maps(self) -> BTreeMap<i64, Vec<AHashMap<IpAddr, Aggregate>>> {
        let mut hours: BTreeMap<i64, Vec<AHashMap<IpAddr, Aggregate>>> = BTreeMap::new();
        for shard in self.shards {
            for (hour, sources) in CachePadded::into_inner(shard).hours {
                if !sources.is_empty() {
                    hours.entry(hour).or_default().push(sources);
                }
            }
        }
        hours
    }

    /// All rows sorted by `(hour, src_ip)`: the hours of [`ShardedCounter::into_hours`] in turn.
    pub fn into_rows(self) -> Vec<AggregateRow> {
        self.into_hours().into_iter().flat_map(|(_, rows)| rows).collect()
    }
}

/// Counts `items` in parallel on the current rayon pool: each worker feeds its own
/// [`ShardedCounter`] through `feed` (no locks, no shared state), then partials are merged shard
/// by shard. The result does not depend on the number of threads.
pub fn par_count<T, F>(items: &[T], shards: usize, cfg: CounterConfig, feed: F) -> ShardedCounter
where
    T: Sync,
    F: Fn(&T, &mut ShardedCounter) + Sync,
{
    items
        .par_iter()
        .fold(
            || ShardedCounter::new(shards, cfg),
            |mut acc, item| {
                feed(item, &mut acc);
                acc
            },
        )
        .reduce(
            || ShardedCounter::new(shards, cfg),
            |mut a, b| {
                a.merge(b);
                a
            },
        )
}
