//! What the single-task and the lease modes share besides the coordinator: the settings
//! ([`ConsumerConfig`]), where shards start ([`StartPosition`]), the services both start with
//! ([`Services`]: runtime, metrics server, Kinesis client, spike sink, signals).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowspike_aws::sinks::spike_sink;
use flowspike_counter::Pipeline;
use flowspike_engine::metrics::Metrics;
use flowspike_engine::{DetectionsConfig, Output, SpikeSink};

use crate::kinesis::{client_from_env, register_consumer, Efo, StartAt};
use crate::ConsumeError;

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

impl From<StartPosition> for StartAt {
    /// Where a reader without a checkpoint starts: the same position, as the Kinesis reader
    /// names it.
    fn from(p: StartPosition) -> StartAt {
        match p {
            StartPosition::TrimHorizon => StartAt::TrimHorizon,
            StartPosition::Latest => StartAt::Latest,
            StartPosition::AtTimestamp(t) => StartAt::AtTimestamp(t),
        }
    }
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

/// Settings of [`crate::run`].
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
    /// Decoding, rule, counter and detection settings (the rule's event times are checked
    /// against the wall clock at each batch).
    pub pipeline: Pipeline,
    /// The detections beside the blocked spike (`--detections`, threat lists, thresholds): the
    /// readers decode with them and the engine (in lease mode the `Worker`) finalizes them.
    pub detections: DetectionsConfig,
    /// Where spikes go and in what format (the stream or standard output, Security Hub,
    /// EventBridge).
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
    /// The pipeline's settings, shared by the shard readers (they decode with them).
    pub pipeline: Arc<Pipeline>,
    /// The detections' settings, shared by the shard readers like `pipeline`.
    pub detections: Arc<DetectionsConfig>,
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
        rt.block_on(flowspike_engine::metrics::start(addr, metrics.clone()))
            .map_err(|e| ConsumeError::Config(format!("cannot serve metrics on {addr}: {e}")))?;
    }
    let client = rt.block_on(client_from_env());
    let sink: Box<dyn SpikeSink> = spike_sink(&cfg.output, rt.handle());
    let pipeline = Arc::new(cfg.pipeline.clone());
    let detections = Arc::new(cfg.detections.clone());
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
    Ok(Services { rt, metrics, client, sink, pipeline, detections, efo, signalled })
}

pub(crate) fn wall_clock_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Sets `flag` on SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal(flag: Arc<AtomicBool>) {
    flowspike_engine::shutdown_signal().await;
    // Relaxed: a lone flag polled by the coordinator; no other data is published through it.
    flag.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use flowspike_engine::{RunSummary, Stats};

    /// `flowspike consume` prints its summary as this JSON line: the engine's counts, where event
    /// time and the checkpoints stopped, and why the run stopped, in this order.
    #[test]
    fn run_summary_json_is_the_consume_commands() {
        let summary = RunSummary {
            stats: Stats { counted: 5, ..Stats::default() },
            source: (),
            closed_through: Some(7200),
            generation: 3,
            stopped_by: Some("idle".to_owned()),
        };
        let stats = serde_json::to_string(&summary.stats).unwrap();
        assert!(stats.starts_with(r#"{"kinesis_records":0,"#) && stats.contains(r#""counted":5,"#));
        assert_eq!(
            serde_json::to_string(&summary).unwrap(),
            format!(
                r#"{{"stats":{stats},"closed_through":7200,"generation":3,"stopped_by":"idle"}}"#
            )
        );
    }
}
