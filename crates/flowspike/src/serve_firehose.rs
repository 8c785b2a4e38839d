//! `flowspike serve-firehose`: the Amazon Data Firehose HTTP endpoint (arguments and glue; the work
//! is in `flowspike-firehose`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use flowspike_aws::S3;
use flowspike_firehose::{FirehoseConfig, TlsFiles};

use crate::args::{DetectionsArgs, FindingsArgs, PipelineArgs};
use crate::settings::{
    detections, metrics_addr, open_state, output, pipeline, spawn_threat_reload,
};

/// Default of `--max-record-decompressed-bytes`: a Firehose record is at most 1,000 KiB and a
/// CloudWatch Logs envelope carries at most about 1 MiB of log events, so 64 MiB leaves a wide
/// margin while keeping one decode's inflation to the default body limit.
const DEFAULT_MAX_RECORD_DECOMPRESSED_BYTES: u64 = 64 << 20;

/// `flowspike serve-firehose`.
#[derive(Args, Debug)]
pub struct ServeFirehoseArgs {
    /// Source name: the checkpoint lives under `consumer/<name>/` of the state and final files are
    /// named `consumer-<name>.parquet` (must differ from every Kinesis stream consumed into the
    /// same state).
    #[arg(long, default_value = "firehose", env = "FLOWSPIKE_NAME")]
    pub name: String,
    /// IP:PORT to listen on (port 0: any free port; the bound address is logged, field `addr`).
    #[arg(long, default_value = "0.0.0.0:8080", env = "FLOWSPIKE_LISTEN")]
    pub listen: String,
    /// Accepted X-Amz-Firehose-Access-Key (repeatable). Prefer FLOWSPIKE_FIREHOSE_ACCESS_KEYS
    /// (comma-separated) or --access-key-file: a key on the command line is visible to every
    /// local user in `ps`.
    #[arg(
        long = "access-key",
        env = "FLOWSPIKE_FIREHOSE_ACCESS_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub access_keys: Vec<String>,
    /// File of accepted access keys, one per line (blank lines ignored); added to --access-key.
    #[arg(long, env = "FLOWSPIKE_FIREHOSE_ACCESS_KEY_FILE")]
    pub access_key_file: Option<PathBuf>,
    /// Accept requests without an access key check (only behind something that authenticates).
    #[arg(long, env = "FLOWSPIKE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// State location: a directory or s3://bucket/prefix (hourly history and checkpoint; the detector is rebuilt from the history).
    #[arg(long, env = "FLOWSPIKE_STATE")]
    pub state: String,
    /// Kinesis stream that receives spike records (JSON in --output-format, partition key src_ip,
    /// or the id of a fleet record); default: standard output, one JSON line per spike.
    #[arg(long, env = "FLOWSPIKE_OUTPUT_STREAM")]
    pub output_stream: Option<String>,
    /// Format of the records and the sinks beyond the stream.
    #[command(flatten)]
    pub findings: FindingsArgs,
    /// Largest request body in bytes, enforced on the received body and again after gunzip (413).
    #[arg(long, default_value_t = flowspike_firehose::DEFAULT_MAX_BODY_BYTES, env = "FLOWSPIKE_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,
    /// A request not answered within this many seconds gets 503 (Firehose waits 180 s and retries).
    #[arg(long, default_value_t = 120, env = "FLOWSPIKE_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: u64,
    /// Most records in one request (413 past it; Firehose then retries and backs the batch up).
    #[arg(long, default_value_t = flowspike_firehose::DEFAULT_MAX_RECORDS, env = "FLOWSPIKE_MAX_RECORDS_PER_REQUEST")]
    pub max_records_per_request: usize,
    /// Most bytes one record may inflate to (CloudWatch Logs envelopes are gzip); past it the
    /// record is counted as undecodable.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_DECOMPRESSED_BYTES, env = "FLOWSPIKE_MAX_RECORD_DECOMPRESSED_BYTES")]
    pub max_record_decompressed_bytes: u64,
    /// Requests read and decoded at once; more wait. Memory: each holds at most about
    /// 2 × --max-body-bytes + --max-record-decompressed-bytes (docs/firehose.md).
    #[arg(long, default_value_t = 8, env = "FLOWSPIKE_MAX_CONCURRENT_REQUESTS")]
    pub max_concurrent_requests: usize,
    /// Most connections open at once (idle keep-alive ones included); further connections are
    /// closed at once and counted (flowspike_firehose_connections_refused_total).
    #[arg(long, default_value_t = flowspike_firehose::DEFAULT_MAX_CONNECTIONS, env = "FLOWSPIKE_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// PEM certificate chain: serve HTTPS directly (with --tls-key). Default: plain HTTP behind a
    /// load balancer that terminates TLS.
    #[arg(long, env = "FLOWSPIKE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FLOWSPIKE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allowed lateness of event time: an hour closes once records this many seconds past its end
    /// arrived. Later records go to a correction file of the hour.
    #[arg(long, default_value_t = 900, env = "FLOWSPIKE_ALLOWED_LATENESS_SECS")]
    pub allowed_lateness_secs: u64,
    /// With no records for this long, event time follows the wall clock, so a quiet endpoint still
    /// closes hours.
    #[arg(long, default_value_t = 60, env = "FLOWSPIKE_IDLE_SECS")]
    pub idle_secs: u64,
    /// How long applied request ids are remembered: a retry within it is not counted again. Keep
    /// it above the delivery stream's retry duration (at most 7200 s).
    #[arg(long, default_value_t = 10_800, env = "FLOWSPIKE_DEDUP_WINDOW_SECS")]
    pub dedup_window_secs: u64,
    /// Serve `GET /healthz` and Prometheus `GET /metrics` on this IP:PORT, or `off` (`GET /healthz`
    /// is also served on --listen).
    #[arg(long, default_value = "0.0.0.0:9090", env = "FLOWSPIKE_METRICS_ADDR")]
    pub metrics_addr: String,
    /// Input framing, format and detection settings.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The other detections.
    #[command(flatten)]
    pub detections: DetectionsArgs,
    /// Reread the --threat-list files (or S3 objects) this often and use a changed list for the
    /// batches that follow (0: never; a list that no longer parses keeps its previous version).
    #[arg(long, default_value_t = 300, env = "FLOWSPIKE_THREAT_LIST_RELOAD_SECS")]
    pub threat_list_reload_secs: u64,
}

/// The endpoint settings from the arguments; `s3` is made when a threat list is in S3.
pub fn config(a: &ServeFirehoseArgs, s3: &mut Option<S3>) -> anyhow::Result<FirehoseConfig> {
    let listen = a
        .listen
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("--listen {:?}: expected IP:PORT", a.listen))?;
    let mut cfg = FirehoseConfig::new(a.name.clone(), listen);
    cfg.access_keys =
        a.access_keys.iter().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect();
    if let Some(path) = &a.access_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the access key file {}", path.display()))?;
        let before = cfg.access_keys.len();
        cfg.access_keys
            .extend(text.lines().map(str::trim).filter(|k| !k.is_empty()).map(String::from));
        if cfg.access_keys.len() == before {
            bail!("the access key file {} holds no key", path.display());
        }
    }
    if cfg.access_keys.is_empty() && !a.allow_unauthenticated {
        bail!(
            "no access key: give FLOWSPIKE_FIREHOSE_ACCESS_KEYS, --access-key-file or \
             --access-key, or --allow-unauthenticated to accept every request"
        );
    }
    if a.max_body_bytes == 0
        || a.max_concurrent_requests == 0
        || a.request_timeout_secs == 0
        || a.max_records_per_request == 0
        || a.max_connections == 0
        || a.max_record_decompressed_bytes == 0
    {
        bail!(
            "--max-body-bytes, --max-concurrent-requests, --request-timeout-secs, \
             --max-records-per-request, --max-connections and --max-record-decompressed-bytes \
             must be at least 1"
        );
    }
    cfg.pipeline = pipeline(&a.pipeline)?;
    cfg.pipeline.decode.max_decompressed_bytes = a.max_record_decompressed_bytes;
    cfg.pipeline.detect.validate().context("detection settings")?;
    cfg.detections = detections(&a.detections, s3)?;
    cfg.max_body_bytes = a.max_body_bytes;
    cfg.request_timeout = Duration::from_secs(a.request_timeout_secs);
    cfg.max_concurrent_requests = a.max_concurrent_requests;
    cfg.max_records_per_request = a.max_records_per_request;
    cfg.max_connections = a.max_connections;
    cfg.tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
        _ => None,
    };
    cfg.allowed_lateness_secs = a.allowed_lateness_secs;
    cfg.idle_after = Duration::from_secs(a.idle_secs);
    cfg.dedup_window = Duration::from_secs(a.dedup_window_secs);
    cfg.output = output(&a.findings, a.output_stream.clone())?;
    cfg.metrics_addr = metrics_addr(&a.metrics_addr)?;
    Ok(cfg)
}

/// Serves until SIGTERM/SIGINT, then finishes in-flight requests, checkpoints and prints the run's
/// summary as one JSON line on standard error. Exit code 0 after a graceful stop.
pub fn run(a: ServeFirehoseArgs) -> anyhow::Result<u8> {
    let mut s3 = None;
    let cfg = config(&a, &mut s3)?;
    if key_on_command_line() {
        tracing::warn!(
            "an access key was given on the command line, where every local user can read it \
             (ps); give it in FLOWSPIKE_FIREHOSE_ACCESS_KEYS or --access-key-file instead"
        );
    }
    let store = open_state(&a.state, &mut s3)?;
    spawn_threat_reload(&cfg.detections, Duration::from_secs(a.threat_list_reload_secs));
    let summary = flowspike_firehose::run(cfg, store)
        .with_context(|| format!("serving the firehose endpoint {}", a.name))?;
    eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(0)
}

/// True when `--access-key` itself (not `--access-key-file`) is on the command line.
fn key_on_command_line() -> bool {
    std::env::args_os().any(|v| {
        let v = v.to_string_lossy();
        v == "--access-key" || v.starts_with("--access-key=")
    })
}
