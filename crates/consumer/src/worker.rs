//! One worker of a consumer group sharing a stream through a lease table (`--lease-table`): the
//! leases it holds, the uncommitted aggregates of each, fenced commits of deltas, and the
//! finalization of hours (claimed once in the table, merged from every worker's deltas).
//!
//! Synchronous and I/O-bound only through [`LeaseTable`] and the history's `Store`, so the unit
//! tests run several workers on an in-memory table and a local directory. The tokio side (shard
//! readers, the loop) is in `leased.rs` and `coordinator.rs`.
//!
//! # Protocol
//! - Each owned shard has its own uncommitted [`Counter`]; a commit writes one Parquet delta file
//!   (outside `aggregates/`) with the sum of them, then one transaction that advances every owned
//!   lease (conditioned on owner and counter) and registers the delta with the hours it holds. A
//!   lease lost in between makes the transaction fail; the worker drops that shard's uncommitted
//!   rows (the next owner reads them again from the committed position) and commits the rest.
//! - Hour `H` may close once the global watermark (the minimum of the active leases' committed
//!   watermarks) has passed `H + 1h`. Hours close in order: a worker claims the oldest closable hour
//!   with a conditional put that fixes the parts (the deltas holding rows of `H` at that moment),
//!   writes `aggregates/…/hr=H/consumer-<stream>.parquet` from them, evaluates the detection, emits
//!   the spikes, marks the claim done and removes `H` from the parts. A later hour waits until every
//!   earlier claim is done, so the detection sees the hours in order, whichever worker finalizes.
//! - A delta with rows of an hour claimed without it (committed after the claim: late records) is
//!   published as a correction file `consumer-<stream>-late-<worker>-<generation>.parquet`.
//! - A claim left unfinished for [`WorkerConfig::claim_takeover`] is taken over; every step is
//!   idempotent (deterministic file names), spikes are at-least-once with deterministic ids.
//! - The other detections (port scans, sweeps, outbound volume, threat lists; `detections.rs`):
//!   each owned shard keeps its uncommitted taps beside its counter; a commit writes the merged
//!   taps as one snapshot file named by the same delta (`Delta::taps_file`), and the hours of the
//!   taps are delta hours too. Finalizing `H` merges the taps of `H` of the claim's parts, writes
//!   the four tables (`<table>/…/hr=H/consumer-<stream>.parquet`) and emits the findings before
//!   the claim is marked done; a delta's taps of an hour claimed without it are counted as late
//!   (`Stats::detections_late_records`), never applied.
//! - Early alerts (adaptive mode, `early.rs`): a worker judges the group's next hour to close on
//!   its own partial count (its held shards' rows of the hour), claims each alert once in the table
//!   and sends it before its next commit; the hour's close does not send an alert again that a
//!   worker sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_counter::{AggregateRow, Counter, Pipeline, SourceOverflow, TimeBounds, HOUR};
use flowspike_detect::{Detector, Mode};
use flowspike_detections::Taps;
use flowspike_engine::{
    live_watermark, new_spikes, put_rows, read_rows, warm_detector, Batch, DetectionsConfig,
    EngineError, SpikeSink, Stats,
};
use flowspike_history::History;
use flowspike_lease::{
    delta_key, global_watermark, plan_takes, Checkpoint, CommitOutcome, Delta, Expiry, HourClaim,
    HourState, LeaseTable, ShardCommit, Snapshot, MAX_COMMIT_SHARDS,
};

use crate::ConsumeError;

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Kinesis stream.
    pub stream: String,
    /// This worker's id (unique per process: a restart is a new worker).
    pub worker_id: String,
    /// Allowed lateness of event time (seconds).
    pub allowed_lateness_secs: i64,
    /// A lease not renewed for this long is expired; a worker stops reading a shard it could not
    /// renew for this long, and waits this long before reading a lease it stole.
    pub failover: Duration,
    /// Most leases one worker holds (at most [`MAX_COMMIT_SHARDS`]).
    pub max_leases: usize,
    /// An hour claim unfinished for this long is taken over by another worker.
    pub claim_takeover: Duration,
    /// A caught-up shard without records for this long counts as idle (watermark `now - lateness`).
    pub idle_shard_after: Duration,
    /// The pipeline's settings. The worker uses the counter limits, the detection settings and
    /// the slack of the rule's event times ([`Rule::max_future_secs`](flowspike_counter::Rule::max_future_secs),
    /// `--max-future-secs`), which it also applies to what the lease table holds (see
    /// [`Worker::acquire`]).
    pub pipeline: Pipeline,
    /// The detections beside the blocked spike (`--detections`, threat lists, thresholds): the
    /// readers decode with the same value, the worker commits and finalizes their taps.
    /// [`DetectionsConfig::none`]: the blocked spike alone.
    pub detections: DetectionsConfig,
}

/// A lease this worker holds.
#[derive(Debug)]
pub struct Owned {
    /// The lease counter this worker knows (the fence of its next write).
    pub counter: u64,
    /// When the last successful renewal, take or commit of this lease started.
    pub renewed_at: Instant,
    /// Reading may start at this instant (a stolen lease waits one failover time).
    pub read_after: Instant,
    /// The committed position.
    pub checkpoint: Checkpoint,
    /// True when the shard has parents (a child starts at TRIM_HORIZON without a checkpoint).
    pub has_parents: bool,
    /// Unix milliseconds until which the shard's reader may read: the wall-clock start of the last
    /// successful renewal, take or commit plus the failover time (shared with the reader).
    pub deadline: Arc<AtomicU64>,
    committed_max_start: Option<u64>,
    committed_watermark: Option<i64>,
    rows: Counter,
    /// The other detections' uncommitted taps of the shard (off when they do not run): dropped
    /// with `rows` when the lease is lost.
    taps: Taps,
    last_seq: Option<String>,
    max_start: Option<u64>,
    ended: bool,
    caught_up: bool,
    last_data: Instant,
}

/// What changed in the set of owned leases.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LeaseChanges {
    /// Leases lost (stolen, expired, fenced): stop reading them, their uncommitted rows are dropped.
    pub lost: Vec<String>,
    /// Shards read to their end and committed as such.
    pub finished: Vec<String>,
}

/// One worker of a lease-coordinated consumer group; see the module docs.
pub struct Worker {
    cfg: WorkerConfig,
    table: Arc<dyn LeaseTable>,
    history: History,
    owned: BTreeMap<String, Owned>,
    expiry: Expiry,
    generation: u64,
    detector: Detector,
    emitted: BTreeSet<String>,
    /// Ids of the findings this worker emitted (a retried claim does not send them again).
    emitted_findings: BTreeSet<String>,
    /// The volume detection's detector, warmed through the last hour this worker evaluated (the
    /// hours other workers finalized since are read from the table, not the whole table again).
    volume: flowspike_detections::VolumeBaseline,
    stats: Stats,
    last_snapshot: Option<Snapshot>,
    /// What the committed deltas lost to the source cap, by hour, until the group's watermark
    /// passes the hour (then counted and warned once: see [`Worker::finalize`]).
    over_source_cap: BTreeMap<i64, SourceOverflow>,
    /// The hour early alerts last warmed the detector up to: warmed once per hour, not once per
    /// batch (each warm lists the history). The close always warms (see [`Worker::finalize`]).
    warmed_to: Option<i64>,
    /// Early alerts (adaptive mode): see `early.rs`.
    early: early::EarlyAlerts,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.cfg.worker_id)
            .field("owned", &self.owned.keys().collect::<Vec<_>>())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker with no leases yet.
    pub fn new(cfg: WorkerConfig, table: Arc<dyn LeaseTable>, history: History) -> Worker {
        Worker {
            detector: Detector::new(cfg.pipeline.detect.clone()),
            volume: Default::default(),
            early: early::EarlyAlerts::new(cfg.pipeline.counter),
            cfg,
            table,
            history,
            owned: BTreeMap::new(),
            expiry: Expiry::default(),
            // Generations are unique per process, also across restarts with the same worker id:
            // a delta of an earlier process must never be overwritten.
            generation: unix_millis().saturating_mul(1000),
            emitted: BTreeSet::new(),
            emitted_findings: BTreeSet::new(),
            stats: Stats::default(),
            last_snapshot: None,
            over_source_cap: BTreeMap::new(),
            warmed_to: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// Running counts.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Commits made.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The leases held, by shard id.
    pub fn owned(&self) -> &BTreeMap<String, Owned> {
        &self.owned
    }

    /// The last snapshot of the table read by [`Worker::acquire`] or [`Worker::acquire_snapshot_only`].
    pub fn last_snapshot(&self) -> Option<&Snapshot> {
        self.last_snapshot.as_ref()
    }

    /// Creates a lease for every listed shard that has none (parents before children) and deletes
    /// the leases of ended shards Kinesis no longer lists (past retention).
    pub fn sync_shards(&self, shards: &[(String, Vec<String>)]) -> Result<(), ConsumeError> {
        let listed: BTreeSet<&str> = shards.iter().map(|(id, _)| id.as_str()).collect();
        let mut created: BTreeSet<&str> = BTreeSet::new();
        let snap = self.table.snapshot()?;
        let known: BTreeSet<&str> = snap.leases.keys().map(String::as_str).collect();
        // Parents first: a child lease must never be visible while its listed parent has none.
        let mut remaining: Vec<&(String, Vec<String>)> = shards.iter().collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|(id, parents)| {
                let ready = parents.iter().all(|p| {
                    !listed.contains(p.as_str())
                        || known.contains(p.as_str())
                        || created.contains(p.as_str())
                });
                if !ready {
                    return true;
                }
                if !known.contains(id.as_str()) {
                    match self.table.create_lease(id, parents) {
                        Ok(true) => {
                            tracing::info!(shard_id = %id, parents = ?parents, "lease created")
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(shard_id = %id, error = %e, "cannot create a lease");
                            return true;
                        }
                    }
                }
                created.insert(id.as_str());
                false
            });
            if remaining.len() == before {
                break; // creation failed (retried at the next listing) or a parent cycle
            }
        }
        for l in snap.leases.values() {
            if l.checkpoint == Checkpoint::ShardEnd && !listed.contains(l.shard_id.as_str()) {
                self.table.delete(&l.shard_id)?;
                tracing::info!(shard_id = %l.shard_id, "lease of an expired shard deleted");
            }
        }
        Ok(())
    }

    /// Renews every held lease; returns the ones lost. A renewal that fails for a transient
    /// reason keeps the lease until [`Worker::self_fence`] drops it.
    pub fn renew(&mut self) -> Vec<String> {
        let mut lost = Vec::new();
        let failover_ms = millis(self.cfg.failover);
        for (id, o) in self.owned.iter_mut() {
            let started = Instant::now();
            let started_ms = unix_millis();
            match self.table.renew(id, &self.cfg.worker_id, o.counter) {
                Ok(Some(c)) => {
                    o.counter = c;
                    o.renewed_at = started;
                    o.deadline.store(started_ms.saturating_add(failover_ms), Ordering::Release);
                }
                Ok(None) => lost.push(id.clone()),
                Err(e) => tracing::warn!(shard_id = %id, error = %e, "lease renewal failed"),
            }
        }
        for id in &lost {
            self.drop_lease(id, "lost (taken by another worker)");
        }
        lost
    }

    /// Drops every lease not renewed for the failover time: another worker may take it from then
    /// on, so this one must have stopped reading it.
    pub fn self_fence(&mut self, now: Instant) -> Vec<String> {
        let stale: Vec<String> = self
            .owned
            .iter()
            .filter(|(_, o)| now.saturating_duration_since(o.renewed_at) >= self.cfg.failover)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            self.drop_lease(id, "not renewed within the failover time");
        }
        stale
    }

    /// The reader of `id` stopped by itself (it saw its lease deadline pass before a slow renewal
    /// moved the deadline on) while this worker still holds the lease: gives the lease up like a
    /// self-fenced one, unless the shard was read to its end (its end commit is pending). Its
    /// uncommitted rows are read again by whoever takes the lease next, this worker included.
    /// Returns true if the lease was given up.
    pub fn reader_stopped(&mut self, id: &str) -> bool {
        if self.owned.get(id).is_none_or(|o| o.ended) {
            return false;
        }
        self.drop_lease(id, "its reader stopped at the lease deadline");
        true
    }

    fn drop_lease(&mut self, id: &str, why: &str) {
        if let Some(o) = self.owned.remove(id) {
            o.deadline.store(0, Ordering::Release);
            tracing::warn!(shard_id = %id, worker = %self.cfg.worker_id, uncommitted_keys = o.rows.len(), uncommitted_tap_records = o.taps.records(), at_ms = unix_millis(), reason = why, "lease dropped");
        }
    }

    /// Reads the table, takes leases up to the fair share; returns the snapshot (after the takes).
    pub fn acquire(&mut self, now: Instant) -> Result<Vec<String>, ConsumeError> {
        let snap = self.table.snapshot()?;
        self.expiry.observe(&snap, now);
        let room = self.cfg.max_leases.min(MAX_COMMIT_SHARDS);
        // A lease the table says is ours but this process does not hold (dropped by self-fencing,
        // or left by an earlier process with the same --worker-id) is free to take again.
        let mut view = snap.clone();
        for l in view.leases.values_mut() {
            if l.owner.as_deref() == Some(self.cfg.worker_id.as_str())
                && !self.owned.contains_key(&l.shard_id)
            {
                l.owner = None;
            }
        }
        let takes =
            plan_takes(&view, &self.cfg.worker_id, &self.expiry, now, self.cfg.failover, room);
        let bounds = table_bounds(self.cfg.pipeline.rule.max_future_secs());
        let mut taken = Vec::new();
        for t in takes {
            let started = Instant::now();
            let started_ms = unix_millis();
            let Some(counter) =
                self.table.take(&t.shard_id, t.seen_counter, &self.cfg.worker_id)?
            else {
                continue;
            };
            let l = &snap.leases[&t.shard_id];
            // A stolen lease waits a failover time (its owner notices at its next renewal); an
            // expired one a lease round more (margin over the owner's self-fencing).
            let read_after = if t.stolen_from.is_some() {
                started + self.cfg.failover
            } else if l.owner.is_some() {
                started + self.cfg.failover / 3
            } else {
                started
            };
            tracing::info!(
                shard_id = %t.shard_id,
                worker = %self.cfg.worker_id,
                from = ?t.stolen_from.as_deref().or(l.owner.as_deref()),
                checkpoint = %l.checkpoint.as_str(),
                at_ms = unix_millis(),
                "lease taken"
            );
            self.owned.insert(
                t.shard_id.clone(),
                Owned {
                    counter,
                    renewed_at: started,
                    read_after,
                    checkpoint: l.checkpoint.clone(),
                    has_parents: !l.parents.is_empty(),
                    deadline: Arc::new(AtomicU64::new(
                        started_ms.saturating_add(millis(self.cfg.failover)),
                    )),
                    committed_max_start: plausible_max_start(&t.shard_id, l.max_start, bounds),
                    committed_watermark: plausible_watermark(&t.shard_id, l.watermark, bounds),
                    rows: Counter::new(self.cfg.pipeline.counter),
                    taps: Taps::new(&self.cfg.detections),
                    last_seq: None,
                    max_start: None,
                    ended: false,
                    caught_up: false,
                    last_data: started,
                },
            );
            taken.push(t.shard_id);
        }
        self.last_snapshot = Some(if taken.is_empty() {
            snap
        } else {
            // The takes are done: a failed re-read must not hide them from the caller.
            self.table.snapshot().unwrap_or(snap)
        });
        Ok(taken)
    }

    /// Adds a batch of an owned shard (batches of other shards are ignored: their lease is gone).
    pub fn apply(&mut self, batch: Batch, caught_up: bool) -> bool {
        let Some(o) = self.owned.get_mut(&batch.shard_id) else {
            return false;
        };
        // The sources this batch counted, per hour: the only ones whose early verdict can change.
        let touched: Vec<(i64, Vec<String>)> = if self.cfg.pipeline.detect.mode == Mode::Adaptive {
            batch.counter.hours().into_iter().map(|h| (h, batch.counter.sources(h))).collect()
        } else {
            Vec::new()
        };
        o.caught_up = caught_up;
        if let Some(seq) = batch.last_sequence_number {
            o.last_seq = Some(seq);
            o.last_data = Instant::now();
        }
        // Batches of `decode_batch` hold accepted event times only; anything else would hold the
        // shard's watermark at an impossible value for good.
        match batch.max_start.map(|m| TimeBounds::REPRESENTABLE.check(m)) {
            Some(Ok(m)) => o.max_start = Some(o.max_start.map_or(m, |x| x.max(m))),
            Some(Err(e)) => {
                tracing::error!(shard_id = %batch.shard_id, error = %e, "impossible batch max_start ignored")
            }
            None => {}
        }
        o.ended |= batch.ended;
        o.rows.merge(batch.counter);
        if let Some(t) = batch.taps {
            o.taps.merge(t);
        }
        self.stats.add(&batch.stats);
        self.judge_early(touched);
        true
    }

    /// True when every held shard is caught up and has had no record for `d`.
    pub fn idle_for(&self, d: Duration) -> bool {
        self.owned.values().all(|o| o.caught_up && o.last_data.elapsed() >= d)
    }

    /// Reads the table into [`Worker::last_snapshot`] without taking leases.
    pub fn acquire_snapshot_only(&mut self) -> Result<(), ConsumeError> {
        let snap = self.table.snapshot()?;
        self.expiry.observe(&snap, Instant::now());
        self.last_snapshot = Some(snap);
        Ok(())
    }

    /// True when some owned shard reached its end and waits for its commit.
    pub fn has_ended_shards(&self) -> bool {
        self.owned.values().any(|o| o.ended)
    }

    /// Commits the uncommitted rows of every held lease as one delta, fenced by the leases (see the
    /// module docs). Lost leases are dropped and the rest committed again.
    pub fn commit(&mut self, now_wall: i64) -> Result<LeaseChanges, ConsumeError> {
        let mut changes = LeaseChanges::default();
        loop {
            self.generation += 1;
            let gen = self.generation;
            let started = Instant::now();
            let started_ms = unix_millis();
            let lateness = self.cfg.allowed_lateness_secs;
            let mut total = Counter::new(self.cfg.pipeline.counter);
            let mut taps = Taps::new(&self.cfg.detections);
            let mut commits = Vec::new();
            for (id, o) in &self.owned {
                total.merge(o.rows.clone());
                taps.merge(o.taps.clone());
                let max_start = match (o.max_start, o.committed_max_start) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                let idle = o.caught_up
                    && started >= o.read_after
                    && started.saturating_duration_since(o.last_data) >= self.cfg.idle_shard_after;
                // The single-task engine's rule: never past the wall clock minus the lateness,
                // so a record stamped ahead of the clock cannot close the current hour early.
                let watermark = live_watermark([(max_start, idle)], now_wall, lateness)
                    .max(o.committed_watermark);
                let checkpoint = if o.ended {
                    Checkpoint::ShardEnd
                } else {
                    o.last_seq
                        .clone()
                        .map(Checkpoint::After)
                        .unwrap_or_else(|| o.checkpoint.clone())
                };
                commits.push(ShardCommit {
                    shard_id: id.clone(),
                    owner: self.cfg.worker_id.clone(),
                    counter: o.counter,
                    checkpoint,
                    max_start,
                    watermark,
                });
            }
            let over_cap = total.overflow();
            let rows = total.into_rows();
            // An hour with taps but no counted row (ACCEPTed traffic only) is a delta hour too:
            // it closes, and its tables are written, like any other.
            let taps_hours = taps.hours();
            let hours: BTreeSet<i64> =
                rows.iter().map(|r| r.hour).chain(taps_hours.iter().copied()).collect();
            let delta = if hours.is_empty() {
                None
            } else {
                let prefix =
                    format!("consumer/{}/deltas/{}/{gen:020}", self.cfg.stream, self.cfg.worker_id);
                // The rows file even when empty: every delta names one (older releases read it).
                let file = format!("{prefix}.parquet");
                put_rows(self.history.store().as_ref(), &file, &rows)?;
                let taps_file = if taps_hours.is_empty() {
                    None
                } else {
                    let key = format!("{prefix}-taps.bin");
                    self.history.store().put(&key, taps.to_snapshot())?;
                    Some(key)
                };
                Some(Delta {
                    id: delta_key(&self.cfg.worker_id, gen),
                    file,
                    taps_file,
                    hours: hours.into_iter().collect(),
                })
            };
            let outcome = match self.table.commit(&commits, delta.as_ref()) {
                Ok(o) => o,
                Err(e) => {
                    // The outcome is unknown: the transaction may have been applied. Forget every
                    // lease and uncommitted row; the leases are taken again at the positions the
                    // table holds (either outcome is then consistent). The file stays: the table
                    // may name it (unnamed, it is harmless garbage).
                    let held: Vec<String> = self.owned.keys().cloned().collect();
                    for id in &held {
                        self.drop_lease(id, "commit outcome unknown");
                    }
                    changes.lost.extend(held);
                    tracing::warn!(error = %e, "commit failed; leases are taken again from the table");
                    return Err(e.into());
                }
            };
            match outcome {
                CommitOutcome::Done => {
                    for c in commits {
                        let Some(o) = self.owned.get_mut(&c.shard_id) else { continue };
                        o.counter += 1;
                        o.renewed_at = started;
                        o.deadline.store(
                            started_ms.saturating_add(millis(self.cfg.failover)),
                            Ordering::Release,
                        );
                        o.checkpoint = c.checkpoint.clone();
                        o.committed_max_start = c.max_start;
                        o.committed_watermark = c.watermark;
                        o.rows = Counter::new(self.cfg.pipeline.counter);
                        o.taps = Taps::new(&self.cfg.detections);
                        o.last_seq = None;
                        o.max_start = None;
                        if o.ended {
                            changes.finished.push(c.shard_id.clone());
                        }
                    }
                    for id in &changes.finished {
                        self.owned.remove(id);
                        tracing::info!(shard_id = %id, worker = %self.cfg.worker_id, "shard finished and checkpointed");
                    }
                    self.stats.checkpoints += 1;
                    // Counted and warned once the hour is behind the group (`finalize`).
                    for (h, o) in over_cap {
                        let e = self.over_source_cap.entry(h).or_default();
                        e.records = e.records.saturating_add(o.records);
                        e.sources = e.sources.saturating_add(o.sources);
                    }
                    if let Some(d) = &delta {
                        tracing::debug!(delta = %d.id, hours = ?d.hours, "delta committed");
                    }
                    self.early.committed(&rows, self.cfg.pipeline.detect.mode);
                    return Ok(changes);
                }
                CommitOutcome::Lost(lost) => {
                    if let Some(d) = &delta {
                        for f in std::iter::once(&d.file).chain(&d.taps_file) {
                            let _ = self.history.store().delete(f);
                        }
                    }
                    for id in &lost {
                        self.drop_lease(id, "fenced at commit");
                    }
                    changes.lost.extend(lost);
                }
            }
        }
    }

    /// Counts and warns what the committed deltas of the hours `done` lost to the source cap
    /// (once per hour and worker: the sum of its commits).
    fn report_over_source_cap(&mut self, done: impl Fn(i64) -> bool) {
        let cap = self.cfg.pipeline.counter.max_sources_per_hour;
        let hours: Vec<i64> = self.over_source_cap.keys().copied().filter(|h| done(*h)).collect();
        for h in hours {
            let lost = self.over_source_cap.remove(&h);
            self.stats.over_source_cap(h, lost, cap);
        }
    }

    /// Gives every held lease up (graceful stop: others take them at once). Commit first.
    pub fn release_all(&mut self) {
        // Stopping: what is still waiting for its hour to pass is reported now.
        self.report_over_source_cap(|_| true);
        for (id, o) in std::mem::take(&mut self.owned) {
            match self.table.release(&id, &self.cfg.worker_id, o.counter) {
                Ok(true) => {
                    tracing::info!(shard_id = %id, worker = %self.cfg.worker_id, at_ms = unix_millis(), "lease released")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(shard_id = %id, error = %e, "cannot release a lease"),
            }
        }
    }

    /// True when every delta hour of the last snapshot is accounted for (nothing left to finalize
    /// or correct) and every active lease has a live owner.
    pub fn settled(&self, now: Instant) -> bool {
        let Some(snap) = &self.last_snapshot else { return false };
        snap.deltas.values().all(|d| d.hours.is_empty())
            && flowspike_lease::active_leases(snap)
                .all(|l| !self.expiry.is_expired(l, now, self.cfg.failover))
    }

    /// Finalizes the closable hours in order, publishes late corrections and deletes drained
    /// deltas, from the last snapshot (see the module docs).
    pub fn finalize(
        &mut self,
        sink: &mut dyn SpikeSink,
        now_wall: i64,
    ) -> Result<(), ConsumeError> {
        let Some(first) = &self.last_snapshot else { return Ok(()) };
        // The watermark from the earlier scan, the deltas and claims from a later one: a scan is not
        // isolated from transactions, but every commit whose lease update the first scan saw had
        // finished before it, so its delta is in the second.
        // A watermark past the event-time bounds comes from a lease written before the rule
        // existed: no hour closes on it (the lease's next commit writes a plausible one).
        let latest = i64::try_from(table_bounds(self.cfg.pipeline.rule.max_future_secs()).latest())
            .unwrap_or(i64::MAX);
        let wm = global_watermark(first).filter(|w| {
            let ok = *w <= latest;
            if !ok {
                tracing::warn!(watermark = *w, latest, "impossible global watermark ignored");
            }
            ok
        });
        if let Some(w) = wm {
            self.report_over_source_cap(|h| h + HOUR <= w);
        }
        let snap = self.table.snapshot()?;
        if let Some(f) = snap.frontier {
            self.early.forget_through(f); // claimed hours are no longer open
        }
        let started = Instant::now();
        let budget = self.cfg.failover / 3;
        let mut candidates: BTreeSet<i64> =
            snap.hours.values().filter(|c| c.state == HourState::Claimed).map(|c| c.hour).collect();
        if let Some(w) = wm {
            for d in snap.deltas.values() {
                for h in &d.hours {
                    let above = snap.frontier.is_none_or(|f| *h > f);
                    if h + HOUR <= w && above && !snap.hours.contains_key(h) {
                        candidates.insert(*h);
                    }
                }
            }
        }
        let mut fixed: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for h in candidates {
            let parts = match snap.hours.get(&h) {
                None => {
                    let parts: Vec<String> = snap
                        .deltas
                        .values()
                        .filter(|d| d.hours.contains(&h))
                        .map(|d| d.id.clone())
                        .collect();
                    let claim = HourClaim {
                        hour: h,
                        owner: self.cfg.worker_id.clone(),
                        parts: parts.clone(),
                        state: HourState::Claimed,
                        claimed_at: now_wall,
                    };
                    if !self.table.claim_hour(&claim)? {
                        break; // another worker claimed it: wait for it, in order
                    }
                    tracing::info!(hour = h, parts = parts.len(), worker = %self.cfg.worker_id, "hour claimed");
                    parts
                }
                Some(c) => {
                    let stale = now_wall.saturating_sub(c.claimed_at)
                        >= self.cfg.claim_takeover.as_secs() as i64;
                    if c.owner != self.cfg.worker_id {
                        if !stale
                            || !self.table.take_over_hour(
                                h,
                                &c.owner,
                                c.claimed_at,
                                &self.cfg.worker_id,
                                now_wall,
                            )?
                        {
                            break;
                        }
                        tracing::warn!(hour = h, from = %c.owner, "unfinished hour claim taken over");
                    }
                    c.parts.clone()
                }
            };
            if !self.finalize_hour(h, &parts, &snap, sink)? {
                return Ok(()); // a part vanished: another worker finished it; look again next round
            }
            fixed.insert(h, parts);
            self.early.forget_through(h);
            if started.elapsed() >= budget {
                break; // leave time for lease renewals; the next round goes on
            }
        }
        // Corrections: rows of claimed hours in deltas the claim does not name.
        for d in snap.deltas.values() {
            let mut empty = d.hours.is_empty();
            for h in &d.hours {
                let (parts, done) = match (fixed.get(h), snap.hours.get(h)) {
                    (Some(p), _) => (p.clone(), true),
                    // Corrections only once the hour is done: its evaluation must not see them.
                    (None, Some(c)) if c.state == HourState::Done => (c.parts.clone(), true),
                    // Below the frontier without a claim: the hour closed with no counted row
                    // (no claim can come: claims only move forward), so these rows are late.
                    (None, None) if snap.frontier.is_some_and(|f| *h < f) => (Vec::new(), true),
                    (None, _) => continue,
                };
                if parts.contains(&d.id) {
                    if done && !fixed.contains_key(h) {
                        empty = self.table.remove_delta_hour(&d.id, *h)?; // leftover of a crash
                    }
                    continue;
                }
                let (Some(rows), Some(late_taps)) = (self.read_delta(d)?, self.late_taps(d, *h)?)
                else {
                    empty = false; // drained by another worker meanwhile
                    break;
                };
                let rows: Vec<AggregateRow> = rows.into_iter().filter(|r| r.hour == *h).collect();
                // A delta hour may have taps only (no counted row): no correction file then.
                if !rows.is_empty() {
                    let name = format!(
                        "consumer-{}-late-{}.parquet",
                        self.cfg.stream,
                        d.id.trim_start_matches("delta#").replace('#', "-")
                    );
                    let key = self.history.write_hour_file(*h, &rows, &name)?;
                    self.stats.corrections += 1;
                    self.stats.late_counted += rows.iter().map(|r| r.blocked_count).sum::<u64>();
                    tracing::info!(hour = h, key = %key, rows = rows.len(), "late correction written");
                }
                // The other detections judged the hour once, when it was claimed: their late
                // records are counted, not applied (as in the single-task engine).
                if late_taps > 0 {
                    tracing::info!(hour = h, delta = %d.id, records = late_taps, "detections: late records not applied");
                    self.stats.detections_late_records += late_taps;
                }
                empty = self.table.remove_delta_hour(&d.id, *h)?;
            }
            if empty {
                self.delete_delta(d)?;
            }
        }
        Ok(())
    }

    /// The rows of a delta's file; `None` if it was deleted (drained by another worker).
    fn read_delta(&self, d: &Delta) -> Result<Option<Vec<AggregateRow>>, ConsumeError> {
        match read_rows(self.history.store().as_ref(), &d.file) {
            Ok(rows) => Ok(Some(rows)),
            Err(EngineError::Store(flowspike_history::StoreError::NotFound { .. })) => {
                tracing::info!(delta = %d.id, "delta already drained by another worker");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn delete_delta(&self, d: &Delta) -> Result<(), ConsumeError> {
        for f in std::iter::once(&d.file).chain(&d.taps_file) {
            if let Err(e) = self.history.store().delete(f) {
                tracing::warn!(key = %f, error = %e, "cannot delete a drained delta file");
            }
        }
        self.table.delete(&d.id)?;
        Ok(())
    }

    /// Writes, evaluates and completes a claimed hour; false when a part is gone (the claim was
    /// finished meanwhile by a worker that had taken it over, or by its first owner).
    fn finalize_hour(
        &mut self,
        hour: i64,
        parts: &[String],
        snap: &Snapshot,
        sink: &mut dyn SpikeSink,
    ) -> Result<bool, ConsumeError> {
        let mut sum = Counter::new(self.cfg.pipeline.counter);
        let mut taps = Taps::new(&self.cfg.detections);
        for p in parts {
            // Only a claim that is done drains its parts: a missing one means it is done now.
            let Some(d) = snap.deltas.get(p) else { return Ok(false) };
            let Some(rows) = self.read_delta(d)? else { return Ok(false) };
            let Some(mut part) = self.read_taps(d)? else { return Ok(false) };
            taps.merge(part.split_hours(|h| h == hour));
            for r in rows {
                if r.hour == hour {
                    sum.add_row(&r).map_err(|e| EngineError::Manifest {
                        key: d.file.clone(),
                        reason: format!("bad delta row: {e}"),
                    })?;
                }
            }
        }
        // Sources dropped only now, by the union of the workers' deltas (each within the cap).
        let lost = sum.take_hour_overflow(hour);
        self.stats.over_source_cap(hour, lost, self.cfg.pipeline.counter.max_sources_per_hour);
        let rows = sum.into_rows();
        // An hour claimed for the other detections' taps alone has no counted row: no final
        // file and no evaluation, as in the single-task engine (only hours with a count are
        // data points of the baseline).
        if !rows.is_empty() {
            let key = self.history.write_hour_file(hour, &rows, &self.final_name())?;
            tracing::info!(hour, key = %key, rows = rows.len(), parts = parts.len(), "final aggregates written");
            // Early alerts a worker sent are not sent again; an unsent claim (its worker stopped
            // between the claim and the emission) is.
            let sent: BTreeSet<&str> = snap
                .alerts
                .values()
                .filter(|a| a.hour == hour && a.sent)
                .map(|a| a.id.as_str())
                .collect();
            self.evaluate(hour, sink, |id| sent.contains(id))?;
            self.stats.hours_closed += 1;
        }
        // After the hour's spikes, as the engine emits them; before the claim is done, so a
        // takeover redoes what a crash left undone (the same files, the findings again).
        self.finish_taps(hour, taps, sink)?;
        self.table.hour_done(hour)?;
        self.delete_alerts(hour, snap);
        for p in parts {
            if self.table.remove_delta_hour(p, hour)? {
                if let Some(d) = snap.deltas.get(p) {
                    self.delete_delta(d)?;
                }
            }
        }
        Ok(true)
    }

    /// Starts the detector afresh after a failed emission of a claim: it has seen the hour, and
    /// the retry of the claim evaluates the hour again (from the history) and emits what was not
    /// emitted.
    fn forget_detector(&mut self) {
        self.detector = Detector::new(self.cfg.pipeline.detect.clone());
        self.warmed_to = None;
    }

    /// The name of this stream's final file of an hour (and of its tables' files).
    fn final_name(&self) -> String {
        format!("consumer-{}.parquet", self.cfg.stream)
    }

    /// Brings the detector up to `hour` (exclusive) from the history: the hours other workers
    /// finalized since it was last fed.
    fn warm_to(&mut self, hour: i64) -> Result<(), ConsumeError> {
        let from = match self.detector.last_hour() {
            Some(l) => l + HOUR,
            None => self.cfg.pipeline.detect.warm_from(hour),
        };
        if from < hour {
            warm_detector(&mut self.detector, &self.history.read_range(from, hour)?);
        }
        Ok(())
    }

    /// Brings the detector up to `hour`, then evaluates `hour` and emits its new spikes, but none
    /// that this worker or `sent` (early alerts of the group) has sent.
    fn evaluate(
        &mut self,
        hour: i64,
        sink: &mut dyn SpikeSink,
        sent: impl Fn(&str) -> bool,
    ) -> Result<(), ConsumeError> {
        self.warm_to(hour)?;
        let rows = self.history.read_hour(hour)?;
        let emitted = &self.emitted;
        let new =
            new_spikes(&mut self.detector, hour, &rows, |id| emitted.contains(id) || sent(id));
        if new.is_empty() {
            return Ok(());
        }
        if let Err(e) = sink.emit(&new) {
            self.forget_detector();
            return Err(e.into());
        }
        for s in &new {
            tracing::info!(hour, src_ip = %s.src_ip, id = %s.id, blocked_count = s.blocked_count, "spike");
            self.emitted.insert(s.id.clone());
        }
        self.stats.spikes_emitted += new.len() as u64;
        Ok(())
    }
}

/// The event-time bounds of state read back from the lease table: the wall clock plus the
/// configured slack (`--max-future-secs`). A value past them was written before the event-time
/// rule existed (one far-future record, e.g. `start` = u64::MAX): it can hold no accepted record.
fn table_bounds(max_future_secs: u64) -> TimeBounds {
    TimeBounds::at(i64::try_from(unix_millis() / 1000).unwrap_or(i64::MAX), max_future_secs)
}

/// A lease's committed `maxStart`, or `None` (logged) when it is past `bounds` ([`table_bounds`]):
/// forgetting it only holds the shard's hours open until its next records.
fn plausible_max_start(shard_id: &str, max_start: Option<u64>, bounds: TimeBounds) -> Option<u64> {
    match max_start.map(|m| bounds.check(m)) {
        Some(Err(e)) => {
            tracing::warn!(shard_id, error = %e, "impossible maxStart in the lease table ignored");
            None
        }
        Some(Ok(m)) => Some(m),
        None => None,
    }
}

/// A lease's committed watermark, or `None` (logged) when it is past `bounds` ([`table_bounds`];
/// derived from an impossible `maxStart`; kept, it would let every hour close at once).
fn plausible_watermark(shard_id: &str, watermark: Option<i64>, bounds: TimeBounds) -> Option<i64> {
    let latest = i64::try_from(bounds.latest()).unwrap_or(i64::MAX);
    match watermark {
        Some(w) if w > latest => {
            tracing::warn!(
                shard_id,
                watermark = w,
                latest,
                "impossible watermark in the lease table ignored"
            );
            None
        }
        w => w,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the epoch (log timestamps comparable across processes).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(millis).unwrap_or(0)
}

mod detections;
mod early;
#[cfg(test)]
mod tests;
