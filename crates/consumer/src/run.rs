//! The coordinator: shard readers on a tokio runtime, the [`Engine`] on the calling thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowlog::DecodeOptions;
use flowspike_counter::{CounterConfig, Rule};
use flowspike_detect::DetectConfig;
use flowspike_history::{History, Store};
use flowspike_retry::Policy;
use tokio::sync::{mpsc, watch};

use crate::decode::DecodeContext;
use crate::engine::{live_watermark, Engine, EngineConfig, SpikeSink, Stats};
use crate::kinesis::{
    client_from_env, list_shards, register_consumer, Efo, Event, KinesisSink, ShardReader,
    WriterSink,
};
use crate::metrics::{Metrics, Phase};
use crate::shards::ShardTable;
use crate::ConsumeError;

/// How often the coordinator re-evaluates watermarks and exit conditions.
pub(crate) const TICK: Duration = Duration::from_millis(250);
/// How long a stop waits for in-flight shard batches before abandoning them (their records are
/// simply read again after the restart: positions only move with applied batches).
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a periodic ListShards is retried before the coordinator carries on with the shards
/// it knows (the next relist tries again); the first one, at start-up, is retried forever.
pub(crate) const RELIST_RETRY: Policy = Policy::For(Duration::from_secs(10));
/// Slack of the health check on top of three checkpoint intervals (a slow store, a large
/// checkpoint).
const HEALTH_SLACK: Duration = Duration::from_secs(60);
/// How long the start waits for the enhanced fan-out consumer to become ACTIVE.
const CONSUMER_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where reading starts on a shard without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest record in retention.
    TrimHorizon,
    /// Records written after the start.
    Latest,
    /// Records at or after a time (unix seconds).
    AtTimestamp(i64),
}

/// Where spike records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// JSON lines on standard output.
    Stdout,
    /// PutRecords to this Kinesis stream.
    Stream(String),
}

/// Enhanced fan-out settings (`--efo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EfoConfig {
    /// Name of the stream consumer to register (or reuse).
    pub consumer_name: String,
    /// Longest time one SubscribeToShard subscription is kept before the reader resubscribes from
    /// its last continuation sequence number (Kinesis ends subscriptions after 5 minutes).
    pub subscription_max: Duration,
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The input stream.
    pub stream: String,
    /// Where shards without a checkpoint start.
    pub start_position: StartPosition,
    /// Allowed lateness of event time (seconds).
    pub allowed_lateness_secs: u64,
    /// Checkpoint at least this often while something changes (hours also checkpoint on close).
    pub checkpoint_interval: Duration,
    /// A shard that is caught up and has had no record for this long counts as idle: its
    /// watermark becomes at least `now - lateness`, so quiet shards do not hold hours open.
    pub idle_shard_after: Duration,
    /// Stop (gracefully) after this long.
    pub max_runtime: Option<Duration>,
    /// Stop (gracefully) once every shard has been idle for this long.
    pub exit_when_idle: Option<Duration>,
    /// How often ListShards runs again (new shards after resharding).
    pub relist_interval: Duration,
    /// Framing and format.
    pub decode: DecodeOptions,
    /// Which records count.
    pub rule: Rule,
    /// Counter limits.
    pub counter: CounterConfig,
    /// Detection settings.
    pub detect: DetectConfig,
    /// Where spikes go.
    pub output: Output,
    /// Where `GET /healthz` and `GET /metrics` are served (port 0: any free port); `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Read with enhanced fan-out (SubscribeToShard) instead of polling GetRecords.
    pub efo: Option<EfoConfig>,
    /// Share the stream with other tasks through a DynamoDB lease table (`None`: this task reads
    /// every shard, state in the manifest).
    pub lease: Option<crate::LeaseConfig>,
}

impl ConsumerConfig {
    /// The health check fails once the state has not been committed for this long:
    /// three checkpoint intervals plus a minute.
    pub fn max_checkpoint_age(&self) -> Duration {
        self.checkpoint_interval.saturating_mul(3).saturating_add(HEALTH_SLACK)
    }
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Counts.
    pub stats: Stats,
    /// Every hour before this one is closed (unix seconds).
    pub closed_through: Option<i64>,
    /// The last committed manifest generation.
    pub generation: u64,
    /// Why the run stopped: `signal`, `max-runtime`, `idle`.
    pub stopped_by: String,
}

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
        if closed
            || checkpoint_now
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
                    fatal = Some(e);
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
    if fatal
        .as_ref()
        .is_none_or(|e| !matches!(e, ConsumeError::Store(_) | ConsumeError::History(_)))
    {
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

/// What both consumer modes start with.
pub(crate) struct Services {
    /// The runtime of the shard readers, the metrics server and the AWS clients.
    pub rt: tokio::runtime::Runtime,
    /// The metrics, served on `metrics_addr` if set.
    pub metrics: Arc<Metrics>,
    /// The Kinesis client.
    pub client: aws_sdk_kinesis::Client,
    /// Where spikes go.
    pub sink: Box<dyn SpikeSink>,
    /// Decoding settings of the shard readers.
    pub ctx: Arc<DecodeContext>,
    /// The registered enhanced fan-out consumer (`--efo`).
    pub efo: Option<Efo>,
    /// Set on SIGTERM or SIGINT.
    pub signalled: Arc<AtomicBool>,
}

/// Starts the runtime and the metrics server, builds the Kinesis client and the spike sink,
/// registers the enhanced fan-out consumer if asked, and watches for signals.
pub(crate) fn start_services(cfg: &ConsumerConfig) -> Result<Services, ConsumeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flowspike-consume")
        .enable_all()
        .build()?;
    let metrics = Arc::new(Metrics::new(cfg.max_checkpoint_age()));
    if let Some(addr) = cfg.metrics_addr {
        rt.block_on(crate::metrics::start(addr, metrics.clone()))
            .map_err(|e| ConsumeError::Config(format!("cannot serve metrics on {addr}: {e}")))?;
    }
    let client = rt.block_on(client_from_env());
    let sink: Box<dyn SpikeSink> = match &cfg.output {
        Output::Stdout => Box::new(WriterSink(std::io::stdout())),
        Output::Stream(s) => Box::new(KinesisSink {
            client: client.clone(),
            stream: s.clone(),
            handle: rt.handle().clone(),
        }),
    };
    let ctx = Arc::new(DecodeContext {
        decode: cfg.decode.clone(),
        rule: cfg.rule.clone(),
        counter: cfg.counter,
    });
    let efo = match &cfg.efo {
        None => None,
        Some(e) => Some(Efo {
            consumer_arn: rt.block_on(register_consumer(
                &client,
                &cfg.stream,
                &e.consumer_name,
                CONSUMER_ACTIVE_TIMEOUT,
            ))?,
            subscription_max: e.subscription_max,
        }),
    };
    let signalled = Arc::new(AtomicBool::new(false));
    rt.spawn(wait_for_signal(signalled.clone()));
    Ok(Services { rt, metrics, client, sink, ctx, efo, signalled })
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

pub(crate) fn wall_clock_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sets `flag` on SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal(flag: Arc<AtomicBool>) {
    shutdown_signal().await;
    // Relaxed: a lone flag polled by the coordinator; no other data is published through it.
    flag.store(true, Ordering::Relaxed);
}

/// Completes on the first SIGTERM or SIGINT (Ctrl-C where there are no Unix signals): the stop
/// request of ECS, Kubernetes and a terminal.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
