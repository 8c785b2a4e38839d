//! `flowspike consume --lease-table`: one worker of a group of consumer tasks sharing a stream
//! through a DynamoDB lease table. The [`Worker`] holds the leases and the aggregates; this mode
//! runs one reader per held lease (through the [`Coordinator`]), renews, takes and balances
//! leases every `failover / 3`, commits every checkpoint interval, finalizes the hours the group
//! has closed, and on a stop commits and releases its leases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_engine::{Batch, RunSummary};
use flowspike_history::{History, Store};
use flowspike_lease::{Checkpoint, DynamoTable, LeaseTable};

use crate::coordinator::{Coordinator, Mode, Stop};
use crate::kinesis::{ShardInfo, StartAt};
use crate::services::{wall_clock_secs, ConsumerConfig};
use crate::worker::{unix_millis, Worker, WorkerConfig};
use crate::ConsumeError;

/// Lease-table coordination (`--lease-table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The DynamoDB table (created if absent; key `leaseKey` S).
    pub table: String,
    /// This worker's id; unique per process (default `<hostname>-<pid>-<random>`).
    pub worker_id: String,
    /// Lease failover time: a lease not renewed for this long is taken by another worker.
    pub failover: Duration,
    /// Most leases one worker holds (≤ 99).
    pub max_leases: usize,
}

/// Runs one lease-coordinated worker until a signal, the maximum runtime or (with
/// `exit_when_idle`) until its shards are idle and the group has finalized every hour.
pub(crate) fn run(
    cfg: ConsumerConfig,
    lease: LeaseConfig,
    store: Arc<dyn Store>,
) -> Result<RunSummary, ConsumeError> {
    let co = Coordinator::start(cfg, Some(lease.worker_id.clone()))?;
    let handle = co.rt.handle().clone();
    let ddb = co.rt.block_on(DynamoTable::client_from_env());
    let table: Arc<dyn LeaseTable> = Arc::new(DynamoTable::new(ddb, &lease.table, handle));
    table.ensure()?;
    let cfg = &co.cfg;
    let wcfg = WorkerConfig {
        stream: cfg.stream.clone(),
        worker_id: lease.worker_id.clone(),
        allowed_lateness_secs: i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX),
        failover: lease.failover,
        max_leases: lease.max_leases,
        claim_takeover: lease.failover.saturating_mul(3).max(Duration::from_secs(30)),
        idle_shard_after: cfg.idle_shard_after,
        pipeline: cfg.pipeline.clone(),
        detections: cfg.detections.clone(),
    };
    let history = History::new(store).with_dest_cap(cfg.pipeline.counter.dest_cap);
    let worker = Worker::new(wcfg, table, history);
    tracing::info!(worker = %lease.worker_id, table = %lease.table, failover_ms = lease.failover.as_millis() as u64, "lease worker starting");
    let leased = Leased {
        worker,
        round_every: (lease.failover / 3).max(Duration::from_millis(200)),
        last_round: None,
        last_list: None,
        last_commit: Instant::now(),
        commit_now: false,
    };
    co.run(leased)
}

/// The lease worker's own state (see the module docs).
struct Leased {
    worker: Worker,
    /// How often leases are renewed, taken and balanced, and hours finalized.
    round_every: Duration,
    last_round: Option<Instant>,
    last_list: Option<Instant>,
    last_commit: Instant,
    /// A shard ended: commit at once, so that its children's leases can be taken.
    commit_now: bool,
}

/// Passes a retryable error over with a warning (the next round retries); returns the rest.
fn retry_later<T>(r: Result<T, ConsumeError>, what: &str) -> Result<Option<T>, ConsumeError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_retryable() => {
            tracing::warn!(error = %e, "{what} failed; retrying");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Leased {
    /// One lease round: renew, relist the shards when due, take leases, finalize closed hours.
    fn round(&mut self, co: &mut Coordinator, now: Instant) -> Result<(), ConsumeError> {
        self.last_round = Some(now);
        for id in self.worker.renew() {
            co.stop_reader(&id);
        }
        if self.last_list.is_none_or(|t| now.duration_since(t) >= co.cfg.relist_interval) {
            self.relist(co, now)?;
        }
        if let Some(taken) = retry_later(self.worker.acquire(now), "lease round")? {
            for id in taken {
                co.stop_reader(&id); // a stale reader of an earlier ownership
            }
        }
        let finalized = self.worker.finalize(co.sink.as_mut(), wall_clock_secs());
        retry_later(finalized, "finalizing hours")?;
        co.metrics.publish(&self.worker.stats());
        Ok(())
    }

    /// Creates the leases of new shards (and deletes those of expired ones).
    fn relist(&mut self, co: &mut Coordinator, now: Instant) -> Result<(), ConsumeError> {
        let Some(list) = retry_later(co.list_shards(false), "ListShards")? else { return Ok(()) };
        self.last_list = Some(now);
        let shards: Vec<(String, Vec<String>)> =
            list.into_iter().map(|s| (s.id, s.parents)).collect();
        if let Err(e) = self.worker.sync_shards(&shards) {
            tracing::warn!(error = %e, "cannot sync the lease table with the shards");
        }
        Ok(())
    }

    /// Stops the readers this worker must not run: one that stopped by itself while the lease is
    /// still held (the shard would stay unread for good: it is never started again while its
    /// entry exists, so the lease is given up), and any of a shard it no longer holds (dropped by a
    /// failed commit, fenced, ...).
    fn reap_readers(&mut self, co: &mut Coordinator) {
        for id in co.ended_readers() {
            if self.worker.reader_stopped(&id) {
                co.stop_reader(&id);
            }
        }
        for id in co.readers_not(|id| self.worker.owned().contains_key(id)) {
            co.stop_reader(&id);
        }
    }

    /// Starts readers for the held leases whose reading may start.
    fn spawn_ready(&mut self, co: &mut Coordinator, now: Instant) {
        for (id, o) in self.worker.owned() {
            if co.has_reader(id) || now < o.read_after {
                continue;
            }
            let start = match &o.checkpoint {
                Checkpoint::After(seq) => StartAt::After(seq.clone()),
                Checkpoint::ShardEnd => continue,
                Checkpoint::Initial if o.has_parents => StartAt::TrimHorizon,
                Checkpoint::Initial => co.cfg.start_position.into(),
            };
            tracing::info!(shard_id = %id, worker = %self.worker.config().worker_id, start = ?start, at_ms = unix_millis(), "shard reader started");
            co.spawn_reader(id, start, Some(o.deadline.clone()));
        }
    }

    /// Sends the early alerts, then commits the held leases' rows as one delta; readers of lost
    /// and finished shards stop. No commit while alerts could not be sent: until this worker's
    /// next commit their hour cannot close, so its close knows them as sent (see `worker/early.rs`).
    fn commit(&mut self, co: &mut Coordinator) -> Result<(), ConsumeError> {
        let sent = self.worker.send_early(co.sink.as_mut());
        if retry_later(sent, "sending early alerts")?.is_none() {
            return Ok(());
        }
        if let Some(ch) = retry_later(self.worker.commit(wall_clock_secs()), "commit")? {
            self.last_commit = Instant::now();
            self.commit_now = false;
            for id in ch.lost.iter().chain(&ch.finished) {
                co.stop_reader(id);
            }
            co.metrics.committed();
        }
        co.metrics.publish(&self.worker.stats());
        Ok(())
    }
}

impl Mode for Leased {
    fn tick_every(&self) -> Duration {
        // Fencing and reader bookkeeping after every batch; rounds and commits keep their own pace.
        Duration::ZERO
    }

    fn on_batch(&mut self, co: &mut Coordinator, batch: Batch, caught_up: bool, _: Vec<ShardInfo>) {
        let ended = batch.ended;
        if self.worker.apply(batch, caught_up) && ended {
            self.commit_now = true;
            self.last_list = None; // list soon: the children need leases
        }
        co.metrics.publish(&self.worker.stats());
    }

    fn on_tick(&mut self, co: &mut Coordinator) -> Result<(), ConsumeError> {
        let now = Instant::now();
        for id in self.worker.self_fence(now) {
            co.stop_reader(&id);
        }
        if self.last_round.is_none_or(|t| now.duration_since(t) >= self.round_every) {
            self.round(co, now)?;
        }
        self.reap_readers(co);
        self.spawn_ready(co, now);
        co.metrics.set_leases_held(self.worker.owned().len());
        // An early alert is sent by a commit: it does not wait for the interval.
        if self.commit_now
            || self.worker.has_early_alerts()
            || self.last_commit.elapsed() >= co.cfg.checkpoint_interval
        {
            self.commit(co)?;
        }
        Ok(())
    }

    fn idle(&self, co: &Coordinator, d: Duration) -> bool {
        let now = Instant::now();
        let owned = self.worker.owned();
        co.uptime() >= d
            && owned.values().all(|o| now >= o.read_after)
            && owned.keys().all(|id| co.has_reader(id))
            && self.worker.idle_for(d)
            && self.worker.settled(now)
    }

    /// After an error: releases the leases and stops. Otherwise applies the batches in flight,
    /// commits, finalizes what the group has closed, and releases the leases.
    fn finish(mut self, mut co: Coordinator, stop: Stop) -> Result<RunSummary, ConsumeError> {
        if let Some(e) = stop.fatal {
            self.worker.release_all();
            co.shutdown();
            return Err(e);
        }
        co.drain(&mut self);
        if let Err(e) = self.worker.send_early(co.sink.as_mut()) {
            // Unsent alerts are sent by their hour's close.
            tracing::warn!(error = %e, "sending early alerts failed");
        }
        let committed = self.worker.commit(wall_clock_secs());
        if committed.is_ok() {
            if let Err(e) = self
                .worker
                .acquire_snapshot_only()
                .and_then(|_| self.worker.finalize(co.sink.as_mut(), wall_clock_secs()))
            {
                tracing::warn!(error = %e, "final finalize pass failed");
            }
        }
        self.worker.release_all();
        co.metrics.publish(&self.worker.stats());
        co.shutdown();
        committed?;
        let s = self.worker.stats();
        tracing::info!(worker = %self.worker.config().worker_id, generation = self.worker.generation(), counted = s.counted, hours_closed = s.hours_closed, spikes_emitted = s.spikes_emitted, "lease worker stopped");
        Ok(RunSummary {
            stats: s,
            closed_through: self
                .worker
                .last_snapshot()
                .and_then(flowspike_lease::global_watermark)
                .map(|w| w.div_euclid(flowspike_counter::HOUR) * flowspike_counter::HOUR),
            generation: self.worker.generation(),
            source: (),
            stopped_by: Some(stop.reason),
        })
    }
}
