//! `flowspike consume` as a single task: the [`Engine`] owns every shard's position, applies the
//! batches and checkpoints them in the manifest; the [`ShardTable`] decides which shards may be
//! read. The loop, the readers and the stop are the [`Coordinator`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_engine::{live_watermark, Batch, Engine, EngineConfig, RunSummary};
use flowspike_history::{History, Store};

use crate::coordinator::{Coordinator, Mode, Stop, TICK};
use crate::kinesis::ShardInfo;
use crate::services::{wall_clock_secs, ConsumerConfig};
use crate::shards::ShardTable;
use crate::ConsumeError;

/// Consumes `cfg.stream` into the history in `store` until a signal (SIGTERM/SIGINT), the
/// maximum runtime or the idle limit, then checkpoints and returns. Blocks the calling thread (do not
/// call from inside a tokio runtime). With `cfg.lease`, runs one worker of a lease group instead
/// (`leased.rs`).
pub fn run(cfg: ConsumerConfig, store: Arc<dyn Store>) -> Result<RunSummary, ConsumeError> {
    if let Some(lease) = cfg.lease.clone() {
        return crate::leased::run(cfg, lease, store);
    }
    let mut co = Coordinator::start(cfg, None)?;
    let single = SingleTask::open(&mut co, store)?;
    co.run(single)
}

/// The single task's own state (see the module docs).
struct SingleTask {
    engine: Engine,
    shards: ShardTable,
    lateness: i64,
    /// `--idle-shard-secs`.
    idle_after: Duration,
    last_checkpoint: Instant,
    last_list: Instant,
    /// A shard ended: checkpoint at the next tick, so that its children can start.
    checkpoint_now: bool,
}

impl SingleTask {
    /// Opens the engine (finishing what the last checkpoint left), lists the shards and starts
    /// the readers that may start.
    fn open(co: &mut Coordinator, store: Arc<dyn Store>) -> Result<SingleTask, ConsumeError> {
        let cfg = &co.cfg;
        let lateness = i64::try_from(cfg.allowed_lateness_secs).unwrap_or(i64::MAX);
        let ecfg = EngineConfig {
            stream: cfg.stream.clone(),
            allowed_lateness_secs: lateness,
            pipeline: cfg.pipeline.clone(),
            detections: cfg.detections.clone(),
        };
        let history = History::new(store).with_dest_cap(cfg.pipeline.counter.dest_cap);
        let engine = Engine::open(history, ecfg, co.sink.as_mut())?;
        co.metrics.publish(&engine.stats());
        let mut shards = ShardTable::default();
        shards.merge(co.list_shards(true)?);
        let mut single = SingleTask {
            engine,
            shards,
            lateness,
            idle_after: cfg.idle_shard_after,
            last_checkpoint: Instant::now(),
            last_list: Instant::now(),
            checkpoint_now: false,
        };
        single.spawn_ready(co);
        Ok(single)
    }

    /// Starts a reader on every shard whose parents' ends are committed (see [`ShardTable`]).
    fn spawn_ready(&mut self, co: &mut Coordinator) {
        let committed = &self.engine.manifest().shards;
        for (id, start) in self.shards.start_ready(committed, co.cfg.start_position) {
            let parents = self.shards.get(&id).map(|s| s.parents.clone()).unwrap_or_default();
            tracing::info!(shard_id = %id, parents = ?parents, start = ?start, generation = self.engine.manifest().generation, "starting shard reader");
            co.spawn_reader(&id, start, None);
        }
    }

    /// Event time: closes the hours every shard has passed; true if one closed.
    fn advance(&mut self) -> bool {
        let wm = live_watermark(
            self.shards.watermark_inputs(
                |id| self.engine.shard(id).and_then(|c| c.max_start),
                self.idle_after,
            ),
            wall_clock_secs(),
            self.lateness,
        );
        wm.is_some_and(|w| self.engine.advance(w))
    }

    /// Commits a checkpoint; once a shard's end is committed, its children may start. A retryable
    /// failure is retried at the next tick.
    fn checkpoint(&mut self, co: &mut Coordinator) -> Result<(), ConsumeError> {
        match self.engine.checkpoint(co.sink.as_mut()) {
            Ok(()) => {
                self.last_checkpoint = Instant::now();
                log_progress(&self.engine);
                if self.checkpoint_now {
                    self.checkpoint_now = false;
                    for id in self.shards.newly_finished(&self.engine.manifest().shards) {
                        tracing::info!(shard_id = %id, generation = self.engine.manifest().generation, "shard finished and checkpointed");
                    }
                    self.spawn_ready(co);
                }
            }
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "checkpoint failed; retrying at the next tick");
            }
            Err(e) => return Err(e.into()),
        }
        co.metrics.publish(&self.engine.stats());
        Ok(())
    }

    /// Lists the shards again (new ones after resharding) and starts those that may start.
    fn relist(&mut self, co: &mut Coordinator) {
        self.last_list = Instant::now();
        match co.list_shards(false) {
            Ok(list) => {
                let new = self.shards.merge(list);
                if new > 0 {
                    tracing::info!(new, "ListShards found new shards");
                }
            }
            Err(e) => tracing::warn!(error = %e, "ListShards failed; keeping the known shards"),
        }
        self.spawn_ready(co);
    }
}

impl Mode for SingleTask {
    fn tick_every(&self) -> Duration {
        TICK
    }

    fn on_batch(
        &mut self,
        co: &mut Coordinator,
        batch: Batch,
        caught_up: bool,
        children: Vec<ShardInfo>,
    ) {
        if let Some(s) = self.shards.get_mut(&batch.shard_id) {
            if batch.last_sequence_number.is_some() {
                s.last_data = Instant::now();
            }
            s.caught_up = caught_up;
            if batch.ended {
                s.ended = true;
                self.checkpoint_now = true;
                if children.is_empty() {
                    // No ChildShards in the answer: list the shards soon to find them.
                    self.last_list = Instant::now()
                        .checked_sub(co.cfg.relist_interval)
                        .unwrap_or(self.last_list);
                }
            }
        }
        self.shards.merge(children);
        self.engine.apply(batch);
        co.metrics.publish(&self.engine.stats());
    }

    fn on_tick(&mut self, co: &mut Coordinator) -> Result<(), ConsumeError> {
        let closed = self.advance();
        // An early alert is emitted by a checkpoint: it does not wait for the interval.
        if closed
            || self.checkpoint_now
            || self.engine.has_early_alerts()
            || (self.engine.is_dirty()
                && self.last_checkpoint.elapsed() >= co.cfg.checkpoint_interval)
        {
            self.checkpoint(co)?;
        }
        if !self.engine.is_dirty() {
            // Everything applied is committed (by this checkpoint or an earlier one).
            co.metrics.committed();
        }
        if self.last_list.elapsed() >= co.cfg.relist_interval {
            self.relist(co);
        }
        Ok(())
    }

    fn idle(&self, _co: &Coordinator, d: Duration) -> bool {
        !self.checkpoint_now && self.shards.all_idle(d)
    }

    /// Applies the batches in flight, then a final event-time step and checkpoint: everything
    /// applied is committed (unless the store failed: that checkpoint would fail the same way).
    fn finish(mut self, mut co: Coordinator, stop: Stop) -> Result<RunSummary, ConsumeError> {
        let mut fatal = stop.fatal;
        if let Some(e) = co.drain(&mut self) {
            fatal.get_or_insert(e);
        }
        if fatal.as_ref().is_none_or(|e| !e.is_store_failure()) {
            self.advance();
            self.engine.checkpoint(co.sink.as_mut())?;
            co.metrics.publish(&self.engine.stats());
            log_progress(&self.engine);
        }
        co.shutdown();
        if let Some(e) = fatal {
            return Err(e);
        }
        Ok(RunSummary {
            stats: self.engine.stats(),
            closed_through: self.engine.closed_through(),
            generation: self.engine.manifest().generation,
            source: (),
            stopped_by: Some(stop.reason),
        })
    }
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
