//! `flowspike consume --lease-table`: one worker of a group of consumer tasks sharing a stream
//! through a DynamoDB lease table. The [`Worker`] holds the leases and the aggregates; this loop
//! runs one [`ShardReader`] per held lease on tokio, renews, takes and balances leases every
//! `failover / 3`, commits every checkpoint interval, finalizes the hours the group has closed,
//! and on a stop commits and releases its leases.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_engine::metrics::Phase;
use flowspike_history::{History, Store};
use flowspike_lease::{Checkpoint, DynamoTable, LeaseTable};
use tokio::sync::{mpsc, watch};

use crate::kinesis::{list_shards, Event, ShardReader, StartAt};
use crate::services::{
    start_services, wall_clock_secs, ConsumerConfig, RunSummary, Services, DRAIN_TIMEOUT, TICK,
};
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

struct Reader {
    epoch: u64,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs one lease-coordinated worker until a signal, the maximum runtime or (with
/// `exit_when_idle`) until its shards are idle and the group has finalized every hour.
pub(crate) fn run(
    cfg: ConsumerConfig,
    lease: LeaseConfig,
    store: Arc<dyn Store>,
) -> Result<RunSummary, ConsumeError> {
    let Services { rt, metrics, client, mut sink, ctx, efo, signalled } = start_services(&cfg)?;
    let handle = rt.handle().clone();
    let ddb = rt.block_on(DynamoTable::client_from_env());
    let table: Arc<dyn LeaseTable> = Arc::new(DynamoTable::new(ddb, &lease.table, handle.clone()));
    table.ensure()?;
    let lateness = i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX);
    let wcfg = WorkerConfig {
        stream: cfg.stream.clone(),
        worker_id: lease.worker_id.clone(),
        allowed_lateness_secs: lateness,
        failover: lease.failover,
        max_leases: lease.max_leases,
        claim_takeover: lease.failover.saturating_mul(3).max(Duration::from_secs(30)),
        idle_shard_after: cfg.idle_shard_after,
        counter: cfg.counter,
        detect: cfg.detect.clone(),
        max_future_secs: cfg.rule.max_future_secs(),
    };
    let history = History::new(store).with_dest_cap(cfg.counter.dest_cap);
    let mut worker = Worker::new(wcfg, table, history);
    tracing::info!(worker = %lease.worker_id, table = %lease.table, failover_ms = lease.failover.as_millis() as u64, "lease worker starting");

    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut readers: BTreeMap<String, Reader> = BTreeMap::new();
    let mut next_epoch: u64 = 1;
    let me = lease.worker_id.clone();
    let m = metrics.clone();
    let stop_reader = |readers: &mut BTreeMap<String, Reader>, id: &str| {
        if let Some(r) = readers.remove(id) {
            let _ = r.stop.send(true);
            r.task.abort();
            m.forget_shard(id);
            tracing::info!(shard_id = %id, worker = %me, at_ms = unix_millis(), "shard reader stopped");
        }
    };

    let round_every = (lease.failover / 3).max(Duration::from_millis(200));
    let started = Instant::now();
    let mut last_round: Option<Instant> = None;
    let mut last_list: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let mut commit_now = false;
    let mut stopping: Option<String> = None;
    metrics.set_phase(Phase::Running);

    while stopping.is_none() {
        match rt.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
            Ok(Some(Event::Batch { batch, caught_up, epoch, .. })) => {
                let current = readers.get(&batch.shard_id).is_some_and(|r| r.epoch == epoch);
                if current {
                    let ended = batch.ended;
                    if worker.apply(batch, caught_up) && ended {
                        commit_now = true;
                        last_list = None; // list soon: the children need leases
                    }
                    metrics.publish(&worker.stats());
                }
            }
            Ok(Some(Event::Failed(e))) => {
                tracing::error!(error = %e, "shard reader failed; stopping");
                worker.release_all();
                rt.shutdown_timeout(Duration::from_secs(5));
                return Err(e);
            }
            Ok(None) | Err(_) => {}
        }
        let now = Instant::now();
        for id in worker.self_fence(now) {
            stop_reader(&mut readers, &id);
        }
        if last_round.is_none_or(|t| now.duration_since(t) >= round_every) {
            last_round = Some(now);
            for id in worker.renew() {
                stop_reader(&mut readers, &id);
            }
            if last_list.is_none_or(|t| now.duration_since(t) >= cfg.relist_interval) {
                match rt.block_on(list_shards(&client, &cfg.stream, crate::services::RELIST_RETRY))
                {
                    Ok(list) => {
                        last_list = Some(now);
                        let shards: Vec<(String, Vec<String>)> =
                            list.into_iter().map(|s| (s.id, s.parents)).collect();
                        if let Err(e) = worker.sync_shards(&shards) {
                            tracing::warn!(error = %e, "cannot sync the lease table with the shards");
                        }
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "ListShards failed; retrying")
                    }
                    Err(e) => {
                        worker.release_all();
                        return Err(e);
                    }
                }
            }
            match worker.acquire(now) {
                Ok(taken) => {
                    for id in taken {
                        stop_reader(&mut readers, &id); // a stale reader of an earlier ownership
                    }
                }
                Err(e) if e.is_retryable() => tracing::warn!(error = %e, "lease round failed"),
                Err(e) => {
                    worker.release_all();
                    return Err(e);
                }
            }
            match worker.finalize(sink.as_mut(), wall_clock_secs()) {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "finalizing hours failed; retrying")
                }
                Err(e) => {
                    worker.release_all();
                    return Err(e);
                }
            }
            metrics.publish(&worker.stats());
        }
        // A reader that stopped by itself while the lease is still held would leave the shard
        // unread for good (it is never started again while its entry exists): give the lease up.
        let stopped: Vec<String> = readers
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in stopped {
            if worker.reader_stopped(&id) {
                stop_reader(&mut readers, &id);
            }
        }
        // No reader for a shard this worker does not hold (dropped by a failed commit, fenced, ...).
        let stale: Vec<String> =
            readers.keys().filter(|id| !worker.owned().contains_key(*id)).cloned().collect();
        for id in stale {
            stop_reader(&mut readers, &id);
        }
        // Readers for held leases whose reading may start.
        for (id, o) in worker.owned() {
            if readers.contains_key(id) || now < o.read_after {
                continue;
            }
            let start = match &o.checkpoint {
                Checkpoint::After(seq) => StartAt::After(seq.clone()),
                Checkpoint::ShardEnd => continue,
                Checkpoint::Initial if o.has_parents => StartAt::TrimHorizon,
                Checkpoint::Initial => cfg.start_position.into(),
            };
            let (stop_tx, stop_rx) = watch::channel(false);
            let epoch = next_epoch;
            next_epoch += 1;
            tracing::info!(shard_id = %id, worker = %lease.worker_id, start = ?start, at_ms = unix_millis(), "shard reader started");
            let reader = ShardReader {
                client: client.clone(),
                stream: cfg.stream.clone(),
                shard_id: id.clone(),
                start,
                ctx: ctx.clone(),
                tx: tx.clone(),
                stop: stop_rx,
                metrics: metrics.shard(id),
                efo: efo.clone(),
                epoch,
                lease_deadline: Some(o.deadline.clone()),
            };
            readers.insert(
                id.clone(),
                Reader { epoch, stop: stop_tx, task: handle.spawn(reader.run()) },
            );
        }
        metrics.set_leases_held(worker.owned().len());
        if commit_now || last_commit.elapsed() >= cfg.checkpoint_interval {
            match worker.commit(wall_clock_secs()) {
                Ok(ch) => {
                    last_commit = Instant::now();
                    commit_now = false;
                    for id in ch.lost.iter().chain(&ch.finished) {
                        stop_reader(&mut readers, id);
                    }
                    metrics.committed();
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "commit failed; retrying at the next tick")
                }
                Err(e) => {
                    worker.release_all();
                    return Err(e);
                }
            }
            metrics.publish(&worker.stats());
        }
        stopping = if signalled.load(Ordering::Relaxed) {
            Some("signal".into())
        } else if cfg.max_runtime.is_some_and(|m| started.elapsed() >= m) {
            Some("max-runtime".into())
        } else if cfg.exit_when_idle.is_some_and(|d| {
            started.elapsed() >= d
                && worker.owned().values().all(|o| now >= o.read_after)
                && worker.owned().keys().all(|id| readers.contains_key(id))
                && worker.idle_for(d)
                && worker.settled(now)
        }) {
            Some("idle".into())
        } else {
            None
        };
    }
    let reason = stopping.unwrap_or_default();
    tracing::info!(reason = %reason, worker = %lease.worker_id, "stopping: finishing in-flight batches");
    metrics.set_phase(Phase::Stopping);
    for r in readers.values() {
        let _ = r.stop.send(true);
    }
    drop(tx);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while readers.values().any(|r| !r.task.is_finished()) && Instant::now() < deadline {
        match rt.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
            Ok(Some(Event::Batch { batch, caught_up, epoch, .. })) => {
                if readers.get(&batch.shard_id).is_some_and(|r| r.epoch == epoch) {
                    worker.apply(batch, caught_up);
                }
            }
            Ok(Some(Event::Failed(e))) => {
                tracing::warn!(error = %e, "shard reader failed while stopping")
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    for (id, r) in &readers {
        r.task.abort();
        tracing::info!(shard_id = %id, worker = %lease.worker_id, at_ms = unix_millis(), "shard reader stopped");
    }
    let committed = worker.commit(wall_clock_secs());
    if committed.is_ok() {
        if let Err(e) = worker
            .acquire_snapshot_only()
            .and_then(|_| worker.finalize(sink.as_mut(), wall_clock_secs()))
        {
            tracing::warn!(error = %e, "final finalize pass failed");
        }
    }
    worker.release_all();
    metrics.publish(&worker.stats());
    rt.shutdown_timeout(Duration::from_secs(5));
    committed?;
    let s = worker.stats();
    tracing::info!(worker = %lease.worker_id, generation = worker.generation(), counted = s.counted, hours_closed = s.hours_closed, spikes_emitted = s.spikes_emitted, "lease worker stopped");
    Ok(RunSummary {
        stats: s,
        closed_through: worker
            .last_snapshot()
            .and_then(flowspike_lease::global_watermark)
            .map(|w| w.div_euclid(flowspike_counter::HOUR) * flowspike_counter::HOUR),
        generation: worker.generation(),
        stopped_by: reason,
    })
}
