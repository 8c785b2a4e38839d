//! `flowspike consume`: the Kinesis consumer service (arguments and glue; the work is in
//! `flowspike-consumer`).

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use flowspike_aws::S3;
use flowspike_consumer::{ConsumerConfig, EfoConfig, LeaseConfig, StartPosition};

use crate::args::{DetectionsArgs, FindingsArgs, PipelineArgs};
use crate::settings::{
    detections, metrics_addr, open_state, output, parse_time, pipeline, spawn_threat_reload,
};

/// `flowspike consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Kinesis stream to read (fed by a CloudWatch Logs subscription filter, Firehose-style JSON
    /// records, KPL aggregates or plain flow-log lines; the framing is detected per record).
    #[arg(long, env = "FLOWSPIKE_STREAM")]
    pub stream: String,
    /// State location: a directory or s3://bucket/prefix. Final hourly aggregates go to
    /// `aggregates/`, the consumer's checkpoint to `consumer/<stream>/`.
    #[arg(long, env = "FLOWSPIKE_STATE")]
    pub state: String,
    /// Kinesis stream that receives spike records (JSON in --output-format, partition key src_ip,
    /// or the id of a fleet record); default: standard output, one JSON line per spike.
    #[arg(long, env = "FLOWSPIKE_OUTPUT_STREAM")]
    pub output_stream: Option<String>,
    /// Format of the records and the sinks beyond the stream.
    #[command(flatten)]
    pub findings: FindingsArgs,
    /// Where shards without a checkpoint start: trim-horizon, latest or at-timestamp.
    #[arg(long, default_value = "trim-horizon", env = "FLOWSPIKE_START_POSITION")]
    pub start_position: String,
    /// The time for --start-position at-timestamp (RFC 3339, YYYY-MM-DD, YYYY-MM-DDTHH or unix seconds).
    #[arg(long, env = "FLOWSPIKE_AT_TIMESTAMP")]
    pub at_timestamp: Option<String>,
    /// Allowed lateness of event time: an hour closes once every shard has seen records this many
    /// seconds past its end. Later records go to a correction file of the hour.
    #[arg(long, default_value_t = 900, env = "FLOWSPIKE_ALLOWED_LATENESS_SECS")]
    pub allowed_lateness_secs: u64,
    /// Checkpoint at least this often while records arrive (hours also checkpoint when they close).
    #[arg(long, default_value_t = 60, env = "FLOWSPIKE_CHECKPOINT_INTERVAL_SECS")]
    pub checkpoint_interval_secs: u64,
    /// A shard at its tip with no record for this long is idle: its event time follows the wall
    /// clock, so a quiet shard does not keep hours open.
    #[arg(long, default_value_t = 60, env = "FLOWSPIKE_IDLE_SHARD_SECS")]
    pub idle_shard_secs: u64,
    /// How often the shard list is fetched again (new shards after resharding).
    #[arg(long, default_value_t = 60, env = "FLOWSPIKE_RELIST_SHARDS_SECS")]
    pub relist_shards_secs: u64,
    /// Stop gracefully (checkpoint, exit 0) after this many seconds. For tests and batch jobs.
    #[arg(long, env = "FLOWSPIKE_MAX_RUNTIME_SECS")]
    pub max_runtime_secs: Option<u64>,
    /// Stop gracefully once every shard has been at its tip without records for this many seconds.
    /// For tests and catch-up jobs; hours close only if --idle-shard-secs is not longer.
    #[arg(long, env = "FLOWSPIKE_EXIT_WHEN_IDLE_SECS")]
    pub exit_when_idle_secs: Option<u64>,
    /// Serve `GET /healthz` and Prometheus `GET /metrics` on this IP:PORT (port 0: any free port;
    /// the bound address is logged with the field `addr`), or `off`.
    #[arg(long, default_value = "0.0.0.0:9090", env = "FLOWSPIKE_METRICS_ADDR")]
    pub metrics_addr: String,
    /// Read with enhanced fan-out (RegisterStreamConsumer + SubscribeToShard: 2 MiB/s per shard for
    /// this consumer alone) instead of polling GetRecords.
    #[arg(long, env = "FLOWSPIKE_EFO")]
    pub efo: bool,
    /// Name of the enhanced fan-out stream consumer (registered if missing, reused if it exists).
    #[arg(long, default_value = "flowspike", env = "FLOWSPIKE_EFO_CONSUMER_NAME")]
    pub efo_consumer_name: String,
    /// Resubscribe to a shard after this many seconds (Kinesis ends a subscription after 300).
    #[arg(long, default_value_t = 300, env = "FLOWSPIKE_EFO_SUBSCRIPTION_SECS")]
    pub efo_subscription_secs: u64,
    /// Share the stream with other `consume` tasks through this DynamoDB lease table (created if
    /// absent, hash key `leaseKey`): each task reads the shards it holds a lease on, and the group
    /// finalizes every hour once. Without it, this task reads every shard alone.
    #[arg(long, env = "FLOWSPIKE_LEASE_TABLE")]
    pub lease_table: Option<String>,
    /// With --lease-table: a lease not renewed for this many seconds moves to another task.
    #[arg(long, default_value_t = 10, env = "FLOWSPIKE_LEASE_FAILOVER_SECS")]
    pub lease_failover_secs: u64,
    /// With --lease-table: the most shards this task holds (1 to 99).
    #[arg(long, default_value_t = 99, env = "FLOWSPIKE_MAX_LEASES")]
    pub max_leases: usize,
    /// With --lease-table: this task's worker id (default: <hostname>-<pid>-<random>). Must be unique
    /// among running tasks; a restarted task should get a new one.
    #[arg(long, env = "FLOWSPIKE_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Input framing, format and detection settings.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The other detections (in lease mode too: committed with the workers' deltas).
    #[command(flatten)]
    pub detections: DetectionsArgs,
    /// Reread the --threat-list files (or S3 objects) this often and use a changed list for the
    /// batches that follow (0: never; a list that no longer parses keeps its previous version).
    #[arg(long, default_value_t = 300, env = "FLOWSPIKE_THREAT_LIST_RELOAD_SECS")]
    pub threat_list_reload_secs: u64,
}

/// The consumer settings from the arguments; `s3` is made when a threat list is in S3.
pub fn config(a: &ConsumeArgs, s3: &mut Option<S3>) -> anyhow::Result<ConsumerConfig> {
    let pipeline = pipeline(&a.pipeline)?;
    pipeline.detect.validate().context("detection settings")?;
    let start_position = match (a.start_position.as_str(), &a.at_timestamp) {
        ("trim-horizon", _) => StartPosition::TrimHorizon,
        ("latest", _) => StartPosition::Latest,
        ("at-timestamp", Some(t)) => StartPosition::AtTimestamp(parse_time(t)?),
        ("at-timestamp", None) => bail!("--start-position at-timestamp needs --at-timestamp"),
        (other, _) => {
            bail!("--start-position {other:?}: expected trim-horizon, latest or at-timestamp")
        }
    };
    if a.checkpoint_interval_secs == 0 {
        bail!("--checkpoint-interval-secs must be at least 1");
    }
    if a.efo && !(1..=300).contains(&a.efo_subscription_secs) {
        bail!("--efo-subscription-secs must be between 1 and 300");
    }
    if a.efo && a.efo_consumer_name.trim().is_empty() {
        bail!("--efo-consumer-name must not be empty");
    }
    if a.lease_failover_secs == 0 {
        bail!("--lease-failover-secs must be at least 1");
    }
    if !(1..=99).contains(&a.max_leases) {
        bail!("--max-leases must be between 1 and 99");
    }
    let lease = match &a.lease_table {
        None => None,
        Some(t) if t.trim().is_empty() => bail!("--lease-table must not be empty"),
        Some(t) => Some(LeaseConfig {
            table: t.clone(),
            worker_id: match &a.worker_id {
                Some(w) if w.trim().is_empty() || w.contains('#') => {
                    bail!("--worker-id {w:?}: must be non-empty and without '#'")
                }
                Some(w) => w.clone(),
                None => default_worker_id(),
            },
            failover: Duration::from_secs(a.lease_failover_secs),
            max_leases: a.max_leases,
        }),
    };
    let metrics_addr = metrics_addr(&a.metrics_addr)?;
    Ok(ConsumerConfig {
        stream: a.stream.clone(),
        start_position,
        allowed_lateness_secs: a.allowed_lateness_secs,
        checkpoint_interval: Duration::from_secs(a.checkpoint_interval_secs),
        idle_shard_after: Duration::from_secs(a.idle_shard_secs),
        max_runtime: a.max_runtime_secs.map(Duration::from_secs),
        exit_when_idle: a.exit_when_idle_secs.map(Duration::from_secs),
        relist_interval: Duration::from_secs(a.relist_shards_secs.max(1)),
        pipeline,
        detections: detections(&a.detections, s3)?,
        output: output(&a.findings, a.output_stream.clone())?,
        metrics_addr,
        efo: a.efo.then(|| EfoConfig {
            consumer_name: a.efo_consumer_name.clone(),
            subscription_max: Duration::from_secs(a.efo_subscription_secs),
        }),
        lease,
    })
}

/// `<hostname>-<pid>-<random hex>`: unique per process, so a restarted task is a new worker.
fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
        .replace('#', "-");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{:08x}", std::process::id(), nanos ^ std::process::id().rotate_left(16))
}

/// Runs the command until SIGTERM/SIGINT, --max-runtime-secs or --exit-when-idle-secs; prints the
/// run's summary as one JSON line on standard error. Exit code 0 after a graceful stop.
pub fn run(a: ConsumeArgs) -> anyhow::Result<u8> {
    let mut s3 = None;
    let cfg = config(&a, &mut s3)?;
    let store = open_state(&a.state, &mut s3)?;
    if cfg.lease.is_none() {
        spawn_threat_reload(&cfg.detections, Duration::from_secs(a.threat_list_reload_secs));
    }
    let summary = flowspike_consumer::run(cfg, store)
        .with_context(|| format!("consuming stream {}", a.stream))?;
    eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(0)
}
