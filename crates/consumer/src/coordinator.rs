//! The coordinator both consumer modes share: the services (runtime, metrics, Kinesis client,
//! spike sink, signals), one [`ShardReader`] task per shard being read and the bounded channel
//! their batches arrive on, and the loop that drives a [`Mode`] — the single task (`run.rs`:
//! the `Engine` and the shard table) or a lease worker (`leased.rs`: the `Worker` and its
//! leases). The loop hands every batch of a current reader to [`Mode::on_batch`], runs
//! [`Mode::on_tick`] at the mode's pace, stops on a signal, the maximum runtime, the mode's idle
//! condition or an error, and leaves the last steps (drain, final commit) to [`Mode::finish`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_counter::Pipeline;
use flowspike_engine::metrics::{Metrics, Phase};
use flowspike_engine::{Batch, DetectionsConfig, RunSummary, SpikeSink};
use flowspike_retry::Policy;
use tokio::sync::{mpsc, watch};

use crate::kinesis::{list_shards, Efo, Event, ShardInfo, ShardReader, StartAt};
use crate::services::{start_services, ConsumerConfig, Services};
use crate::worker::unix_millis;
use crate::ConsumeError;

/// How often the coordinator waits for a batch before it looks at the clock again.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// How long a stop waits for in-flight shard batches before abandoning them (their records are
/// simply read again after the restart: positions only move with applied batches).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a periodic ListShards is retried before the mode carries on with the shards it
/// knows (the next relist tries again); the first one, at start-up, is retried forever.
const RELIST_RETRY: Policy = Policy::For(Duration::from_secs(10));

/// What a consumer mode adds to the shared loop.
pub(crate) trait Mode {
    /// How often [`Mode::on_tick`] runs (zero: after every batch or empty wait).
    fn tick_every(&self) -> Duration;
    /// Applies a batch of the current reader of its shard (also while draining).
    fn on_batch(
        &mut self,
        co: &mut Coordinator,
        batch: Batch,
        caught_up: bool,
        children: Vec<ShardInfo>,
    );
    /// The periodic work: event time, checkpoints or commits, leases, shard listings, readers
    /// to start or stop. An error stops the consumer.
    fn on_tick(&mut self, co: &mut Coordinator) -> Result<(), ConsumeError>;
    /// True when the mode's shards have been idle for `d` and nothing is left to do
    /// (`--exit-when-idle-secs`).
    fn idle(&self, co: &Coordinator, d: Duration) -> bool;
    /// The last steps after the loop stopped (drain, final commit), and the run's result.
    fn finish(self, co: Coordinator, stop: Stop) -> Result<RunSummary, ConsumeError>;
}

/// Why the loop stopped.
pub(crate) struct Stop {
    /// `signal`, `max-runtime`, `idle` or `error`.
    pub reason: String,
    /// The error that stopped it.
    pub fatal: Option<ConsumeError>,
}

/// A running shard reader.
struct Reader {
    /// Tags its batches: a batch of an earlier reader of the shard is dropped.
    epoch: u64,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The services and shard readers of one consumer process; see the module docs.
pub(crate) struct Coordinator {
    /// The settings.
    pub cfg: ConsumerConfig,
    /// The runtime of the readers, the metrics server and the AWS clients.
    pub rt: tokio::runtime::Runtime,
    /// The metrics, served on `metrics_addr` if set.
    pub metrics: Arc<Metrics>,
    /// The Kinesis client.
    pub client: aws_sdk_kinesis::Client,
    /// Where spikes go.
    pub sink: Box<dyn SpikeSink>,
    /// The lease worker's id, in the reader logs (`None`: the single task).
    pub worker_id: Option<String>,
    pipeline: Arc<Pipeline>,
    detections: Arc<DetectionsConfig>,
    efo: Option<Efo>,
    signalled: Arc<AtomicBool>,
    /// Cloned into every reader; dropped when stopping, so the channel closes once they end.
    tx: Option<mpsc::Sender<Event>>,
    rx: mpsc::Receiver<Event>,
    readers: BTreeMap<String, Reader>,
    next_epoch: u64,
    started: Instant,
}

impl Coordinator {
    /// Starts the services of `cfg` (see [`start_services`]).
    pub fn start(cfg: ConsumerConfig, worker_id: Option<String>) -> Result<Self, ConsumeError> {
        let Services { rt, metrics, client, sink, pipeline, detections, efo, signalled } =
            start_services(&cfg)?;
        let (tx, rx) = mpsc::channel::<Event>(64);
        Ok(Coordinator {
            cfg,
            rt,
            metrics,
            client,
            sink,
            worker_id,
            pipeline,
            detections,
            efo,
            signalled,
            tx: Some(tx),
            rx,
            readers: BTreeMap::new(),
            next_epoch: 0,
            started: Instant::now(),
        })
    }

    /// Runs `mode` until a stop, then its [`Mode::finish`].
    pub fn run<M: Mode>(mut self, mut mode: M) -> Result<RunSummary, ConsumeError> {
        self.metrics.set_phase(Phase::Running);
        let stop = self.serve(&mut mode);
        if stop.fatal.is_none() {
            tracing::info!(reason = %stop.reason, worker = ?self.worker_id, "stopping: finishing in-flight batches");
        }
        mode.finish(self, stop)
    }

    fn serve<M: Mode>(&mut self, mode: &mut M) -> Stop {
        let mut last_tick = Instant::now();
        loop {
            if let Some(e) = self.next_event().and_then(|ev| self.handle(mode, ev)) {
                tracing::error!(error = %e, "shard reader failed; stopping");
                return Stop { reason: "error".into(), fatal: Some(e) };
            }
            if last_tick.elapsed() < mode.tick_every() {
                continue;
            }
            last_tick = Instant::now();
            if let Err(e) = mode.on_tick(self) {
                return Stop { reason: "error".into(), fatal: Some(e) };
            }
            if let Some(reason) = self.stop_reason(|d| mode.idle(self, d)) {
                return Stop { reason: reason.into(), fatal: None };
            }
        }
    }

    /// The next reader event, or `None` after a [`TICK`] without one (or once every reader has
    /// ended after a stop).
    fn next_event(&mut self) -> Option<Event> {
        let rx = &mut self.rx;
        self.rt.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }).ok().flatten()
    }

    /// A stop condition that holds: a signal, the maximum runtime, or `idle` for
    /// `--exit-when-idle-secs`.
    fn stop_reason(&self, idle: impl FnOnce(Duration) -> bool) -> Option<&'static str> {
        // Relaxed: a lone flag set by the signal task; no other data is published through it.
        if self.signalled.load(Ordering::Relaxed) {
            Some("signal")
        } else if self.cfg.max_runtime.is_some_and(|m| self.started.elapsed() >= m) {
            Some("max-runtime")
        } else if self.cfg.exit_when_idle.is_some_and(idle) {
            Some("idle")
        } else {
            None
        }
    }

    /// How long the consumer has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// ListShards, retried for a short while ([`RELIST_RETRY`]); the first listing, at start-up,
    /// is retried forever (`forever`): a throttled call then must not stop the service.
    pub fn list_shards(&self, forever: bool) -> Result<Vec<ShardInfo>, ConsumeError> {
        let policy = if forever { Policy::Forever } else { RELIST_RETRY };
        self.rt.block_on(list_shards(&self.client, &self.cfg.stream, policy))
    }

    /// Starts a reader of `shard` at `start` (lease mode: reading until `lease_deadline`),
    /// replacing none: the caller stops an earlier one first. Nothing starts once stopping.
    pub fn spawn_reader(
        &mut self,
        shard: &str,
        start: StartAt,
        lease_deadline: Option<Arc<AtomicU64>>,
    ) {
        let Some(tx) = &self.tx else { return };
        let (stop_tx, stop_rx) = watch::channel(false);
        self.next_epoch += 1;
        let reader = ShardReader {
            client: self.client.clone(),
            stream: self.cfg.stream.clone(),
            shard_id: shard.to_owned(),
            start,
            pipeline: self.pipeline.clone(),
            detections: self.detections.clone(),
            tx: tx.clone(),
            stop: stop_rx,
            metrics: self.metrics.shard(shard),
            efo: self.efo.clone(),
            epoch: self.next_epoch,
            lease_deadline,
        };
        let task = self.rt.spawn(reader.run());
        self.readers
            .insert(shard.to_owned(), Reader { epoch: self.next_epoch, stop: stop_tx, task });
    }

    /// True when `shard` has a reader (running or ended by itself).
    pub fn has_reader(&self, shard: &str) -> bool {
        self.readers.contains_key(shard)
    }

    /// The shards whose reader has ended by itself (shard end, lease deadline, error).
    pub fn ended_readers(&self) -> Vec<String> {
        self.readers
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The shards with a reader that `keep` refuses.
    pub fn readers_not(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.readers.keys().filter(|id| !keep(id)).cloned().collect()
    }

    /// Stops the reader of `shard` (lease mode: the lease is gone); its batches in flight are
    /// dropped.
    pub fn stop_reader(&mut self, shard: &str) {
        if let Some(r) = self.readers.remove(shard) {
            let _ = r.stop.send(true);
            r.task.abort();
            self.metrics.forget_shard(shard);
            tracing::info!(shard_id = %shard, worker = ?self.worker_id, at_ms = unix_millis(), "shard reader stopped");
        }
    }

    /// Hands a batch of the current reader of its shard to `mode` (a batch of a replaced reader
    /// is dropped); returns a reader's failure.
    fn handle<M: Mode>(&mut self, mode: &mut M, event: Event) -> Option<ConsumeError> {
        match event {
            Event::Batch { batch, caught_up, children, epoch } => {
                let current = self.readers.get(&batch.shard_id).is_some_and(|r| r.epoch == epoch);
                if current {
                    mode.on_batch(self, batch, caught_up, children);
                }
                None
            }
            Event::Failed(e) => Some(e),
        }
    }

    /// Stops every reader and applies the batches they had in flight (through
    /// [`Mode::on_batch`]) until they have all ended, for at most [`DRAIN_TIMEOUT`]; then aborts
    /// what is left. Returns the first reader failure seen meanwhile.
    pub fn drain<M: Mode>(&mut self, mode: &mut M) -> Option<ConsumeError> {
        self.metrics.set_phase(Phase::Stopping);
        for r in self.readers.values() {
            let _ = r.stop.send(true);
        }
        self.tx = None;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut failed = None;
        loop {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "shard readers did not stop in time; abandoning their in-flight batches"
                );
                break;
            }
            let rx = &mut self.rx;
            match self.rt.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
                Ok(Some(ev)) => {
                    if let Some(e) = self.handle(mode, ev) {
                        tracing::warn!(error = %e, "shard reader failed while stopping");
                        failed.get_or_insert(e);
                    }
                }
                Ok(None) => break, // every reader has ended
                Err(_) => {}
            }
        }
        for (id, r) in std::mem::take(&mut self.readers) {
            r.task.abort();
            tracing::info!(shard_id = %id, worker = ?self.worker_id, at_ms = unix_millis(), "shard reader stopped");
        }
        failed
    }

    /// Stops the runtime (the metrics server and any task left).
    pub fn shutdown(self) {
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }
}
