//! The single-task coordinator: shard readers on a tokio runtime, the [`Engine`] on the calling
//! thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_engine::metrics::Phase;
use flowspike_engine::{live_watermark, Engine, EngineConfig};
use flowspike_history::{History, Store};
use flowspike_retry::Policy;
use tokio::sync::{mpsc, watch};

use crate::kinesis::{list_shards, Event, ShardReader};
use crate::services::{
    start_services, wall_clock_secs, ConsumerConfig, RunSummary, Services, DRAIN_TIMEOUT,
    RELIST_RETRY, TICK,
};
use crate::shards::ShardTable;
use crate::ConsumeError;

/// Consumes `cfg.stream` into the history in `store` until a signal (SIGTERM/SIGINT), the
/// maximum runtime or the idle limit, then checkpoints and returns. Blocks the calling thread (do not
/// call from inside a tokio runtime).
pub fn run(cfg: ConsumerConfig, store: Arc<dyn Store>) -> Result<RunSummary, ConsumeError> {
    if let Some(lease) = cfg.lease.clone() {
        return crate::leased::run(cfg, lease, store);
    }
    let Services { rt, metrics, client, mut sink, ctx, efo, signalled } = start_services(&cfg)?;
    let handle = rt.handle().clone();
    let ecfg = EngineConfig {
        stream: cfg.stream.clone(),
        allowed_lateness_secs: i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX),
        counter: cfg.counter,
        detect: cfg.detect.clone(),
        max_future_secs: cfg.rule.max_future_secs(),
    };
    let history = History::new(store).with_dest_cap(cfg.counter.dest_cap);
    let mut engine = Engine::open(history, ecfg, sink.as_mut())?;
    metrics.publish(&engine.stats());

    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let mut tx = Some(tx);

    let mut shards = ShardTable::default();
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // Retried forever: a throttled ListShards at start-up must not stop the service.
    shards.merge(rt.block_on(list_shards(&client, &cfg.stream, Policy::Forever))?);
    // Starts a reader on every shard whose parents' ends are committed (see `ShardTable`).
    let spawn_ready = |shards: &mut ShardTable,
                       tasks: &mut Vec<tokio::task::JoinHandle<()>>,
                       engine: &Engine,
                       tx: &mpsc::Sender<Event>| {
        for (id, start) in shards.start_ready(&engine.manifest().shards, cfg.start_position) {
            let parents = shards.get(&id).map(|s| s.parents.clone()).unwrap_or_default();
            tracing::info!(shard_id = %id, parents = ?parents, start = ?start, generation = engine.manifest().generation, "starting shard reader");
            let reader = ShardReader {
                client: client.clone(),
                stream: cfg.stream.clone(),
                shard_id: id.clone(),
                start,
                ctx: ctx.clone(),
                tx: tx.clone(),
                stop: stop_rx.clone(),
                metrics: metrics.shard(&id),
                efo: efo.clone(),
                epoch: 0,
                lease_deadline: None,
            };
            tasks.push(handle.spawn(reader.run()));
        }
    };
    if let Some(t) = &tx {
        spawn_ready(&mut shards, &mut tasks, &engine, t);
    }
    metrics.set_phase(Phase::Running);

    let started = Instant::now();
    let mut last_tick = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut last_list = Instant::now();
    let mut stopping: Option<(String, Instant)> = None;
    // A shard ended: checkpoint at the next tick, so that its children can start.
    let mut checkpoint_now = false;
    let mut fatal: Option<ConsumeError> = None;
    let lateness = i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX);

    loop {
        match rt.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
            Ok(Some(Event::Batch { batch, caught_up, children, .. })) => {
                if let Some(s) = shards.get_mut(&batch.shard_id) {
                    if batch.last_sequence_number.is_some() {
                        s.last_data = Instant::now();
                    }
                    s.caught_up = caught_up;
                    if batch.ended {
                        s.ended = true;
                        checkpoint_now = true;
                        if children.is_empty() {
                            // No ChildShards in the answer: list the shards soon to find them.
                            last_list = Instant::now()
                                .checked_sub(cfg.relist_interval)
                                .unwrap_or(last_list);
                        }
                    }
                }
                shards.merge(children);
                engine.apply(batch);
                metrics.publish(&engine.stats());
            }
            Ok(Some(Event::Failed(e))) => {
                tracing::error!(error = %e, "shard reader failed; stopping");
                if fatal.is_none() {
                    fatal = Some(e);
                }
                if stopping.is_none() {
                    stopping = Some(("error".into(), Instant::now()));
                    let _ = stop_tx.send(true);
                    tx = None;
                }
            }
            Ok(None) => break, // every reader finished and the stop dropped our sender
            Err(_) => {}       // tick
        }
        if let Some((_, since)) = &stopping {
            metrics.set_phase(Phase::Stopping);
            if since.elapsed() > DRAIN_TIMEOUT {
                tracing::warn!(
                    "shard readers did not stop in time; abandoning their in-flight batches"
                );
                for t in &tasks {
                    t.abort();
                }
                break;
            }
            continue;
        }
        if last_tick.elapsed() < TICK {
            continue;
        }
        last_tick = Instant::now();

        // Event time: close the hours every shard has passed.
        let now = wall_clock_secs();
        let wm = live_watermark(
            shards.watermark_inputs(
                |id| engine.shard(id).and_then(|c| c.max_start),
                cfg.idle_shard_after,
            ),
            now,
            lateness,
        );
        let closed = wm.is_some_and(|w| engine.advance(w));
        // An early alert is emitted by a checkpoint: it does not wait for the interval.
        if closed
            || checkpoint_now
            || engine.has_early_alerts()
            || (engine.is_dirty() && last_checkpoint.elapsed() >= cfg.checkpoint_interval)
        {
            match engine.checkpoint(sink.as_mut()) {
                Ok(()) => {
                    last_checkpoint = Instant::now();
                    log_progress(&engine);
                    if checkpoint_now {
                        checkpoint_now = false;
                        for id in shards.newly_finished(&engine.manifest().shards) {
                            tracing::info!(shard_id = %id, generation = engine.manifest().generation, "shard finished and checkpointed");
                        }
                        if let Some(t) = &tx {
                            spawn_ready(&mut shards, &mut tasks, &engine, t);
                        }
                    }
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "checkpoint failed; retrying at the next tick");
                }
                Err(e) => {
                    fatal = Some(e.into());
                    stopping = Some(("error".into(), Instant::now()));
                    let _ = stop_tx.send(true);
                    tx = None;
                    continue;
                }
            }
            metrics.publish(&engine.stats());
        }
        if !engine.is_dirty() {
            // Everything applied is committed (by this checkpoint or an earlier one).
            metrics.committed();
        }

        if last_list.elapsed() >= cfg.relist_interval {
            last_list = Instant::now();
            match rt.block_on(list_shards(&client, &cfg.stream, RELIST_RETRY)) {
                Ok(list) => {
                    let new = shards.merge(list);
                    if new > 0 {
                        tracing::info!(new, "ListShards found new shards");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ListShards failed; keeping the known shards"),
            }
            if let Some(t) = &tx {
                spawn_ready(&mut shards, &mut tasks, &engine, t);
            }
        }

        // Stop conditions.
        let reason = if signalled.load(Ordering::Relaxed) {
            Some("signal")
        } else if cfg.max_runtime.is_some_and(|m| started.elapsed() >= m) {
            Some("max-runtime")
        } else if cfg.exit_when_idle.is_some_and(|d| !checkpoint_now && shards.all_idle(d)) {
            Some("idle")
        } else {
            None
        };
        if let Some(r) = reason {
            tracing::info!(reason = r, "stopping: finishing in-flight batches");
            stopping = Some((r.to_string(), Instant::now()));
            let _ = stop_tx.send(true);
            tx = None;
        }
    }

    // Final event-time step and checkpoint: everything applied so far is committed.
    if fatal.as_ref().is_none_or(|e| !e.is_store_failure()) {
        let now = wall_clock_secs();
        let wm = live_watermark(
            shards.watermark_inputs(
                |id| engine.shard(id).and_then(|c| c.max_start),
                cfg.idle_shard_after,
            ),
            now,
            lateness,
        );
        if let Some(w) = wm {
            engine.advance(w);
        }
        engine.checkpoint(sink.as_mut())?;
        metrics.publish(&engine.stats());
        log_progress(&engine);
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    if let Some(e) = fatal {
        return Err(e);
    }
    Ok(RunSummary {
        stats: engine.stats(),
        closed_through: engine.closed_through(),
        generation: engine.manifest().generation,
        stopped_by: stopping.map(|(r, _)| r).unwrap_or_default(),
    })
}

fn log_progress(engine: &Engine) {
    let s = engine.stats();
    tracing::info!(
        generation = engine.manifest().generation,
        closed_through = ?engine.closed_through(),
        kinesis_records = s.kinesis_records,
        flow_records = s.flow_records,
        counted = s.counted,
        late_counted = s.late_counted,
        malformed = s.malformed,
        undecodable = s.undecodable,
        hours_closed = s.hours_closed,
        spikes_emitted = s.spikes_emitted,
        "checkpoint"
    );
}
