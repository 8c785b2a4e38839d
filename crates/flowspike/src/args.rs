//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// flowspike: detect spikes of blocked outbound traffic in AWS VPC Flow Logs.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter; FLOWSPIKE_LOG overrides it.
    #[arg(long, global = true, env = "FLOWSPIKE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse flow-log files and print one JSON object per record.
    Parse(ParseArgs),
    /// Generate a seeded synthetic flow-log archive in the S3 layout, with its ground truth.
    Gen(GenArgs),
    /// Replay flow-log archives (local or s3://) into the hourly history and detect spikes.
    Replay(ReplayArgs),
    /// Generate a demo archive, replay it and print the spikes it finds.
    Demo(DemoArgs),
    /// Consume a Kinesis stream of flow logs: hourly aggregates, checkpoints, spikes to an output stream.
    Consume(crate::consume::ConsumeArgs),
    /// Measure throughput stage by stage (decompress, parse, filter, count, Parquet, end to end).
    Bench(BenchArgs),
    /// Serve an Amazon Data Firehose HTTP endpoint: flow logs pushed by Firehose to hourly
    /// aggregates, checkpoints and spikes.
    ServeFirehose(crate::serve_firehose::ServeFirehoseArgs),
    /// Explain a source: its hourly blocked counts against the expected band and threshold of
    /// the detection, its alerts and what they blocked (text, or an .svg chart / .html page).
    Explain(ExplainArgs),
    /// Write a static HTML report of the incidents in a state (one page, inline charts, no
    /// network), with an explain page per incident.
    Report(ReportArgs),
}

/// How the input is framed and formatted.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Record format: a CreateFlowLogs LogFormat (`${version} ${srcaddr} ...`) or field names. Used when
    /// the input has no header line (CloudWatch and Firehose records); a header line wins.
    #[arg(long, env = "FLOWSPIKE_FORMAT")]
    pub format: Option<String>,
    /// Framing: auto, lines, gzip, cwlogs, firehose, kpl, parquet.
    #[arg(long, default_value = "auto", env = "FLOWSPIKE_FRAMING")]
    pub framing: String,
}

/// `flowspike parse`.
#[derive(Args, Debug)]
pub struct ParseArgs {
    /// Input framing and format.
    #[command(flatten)]
    pub input: InputArgs,
    /// Files to parse.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `flowspike gen`.
#[derive(Args, Debug)]
pub struct GenArgs {
    /// Output directory (the S3 layout `AWSLogs/...` is created under it, plus `manifest.json`).
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Hours of traffic.
    #[arg(long)]
    pub hours: Option<u32>,
    /// Internal hosts.
    #[arg(long)]
    pub hosts: Option<u32>,
    /// Injected blocked-outbound bursts.
    #[arg(long)]
    pub bursts: Option<u32>,
    /// First hour (RFC 3339 or YYYY-MM-DD); default: the generator's.
    #[arg(long)]
    pub start: Option<String>,
    /// default, or fleet: the labelled fleet of docs/detection-quality.md (6 weeks of 500 hosts;
    /// --bursts is then the number of anomalies of each kind; labels in manifest.json).
    #[arg(long, default_value = "default")]
    pub scenario: String,
    /// Labelled cases of each other detection (port scan, port sweep, outbound volume, threat
    /// list), each with as many near-threshold negatives; the threat lists are written to
    /// `<out>/threat-lists/`, the labels to the manifest's `cases` (docs/detections.md).
    #[arg(long, default_value_t = 0)]
    pub cases: u32,
}

/// Detection settings shared by replay and the consumer.
#[derive(Args, Debug, Clone)]
pub struct DetectArgs {
    /// Baseline mode: adaptive (each source's seasonal count model, calibrated tail test;
    /// docs/detection.md), window (ESCU's rule, exact 720-hour window) or splunk (ESCU's running
    /// update).
    #[arg(long, default_value = "adaptive", env = "FLOWSPIKE_MODE")]
    pub mode: String,
    /// Window length in hours (window mode).
    #[arg(long, default_value_t = 720, env = "FLOWSPIKE_WINDOW_HOURS")]
    pub window_hours: u32,
    /// Data points (active hours) a source needs before it can alert.
    #[arg(long, default_value_t = 5, env = "FLOWSPIKE_MIN_POINTS")]
    pub min_points: u32,
    /// Standard deviations above the mean that make a spike.
    #[arg(long, default_value_t = 3.0, env = "FLOWSPIKE_DEVIATIONS")]
    pub deviations: f64,
    /// A spike also needs at least this many blocked flows in the hour (default: 5 in adaptive
    /// mode, 1 in the others).
    #[arg(long, env = "FLOWSPIKE_MIN_COUNT")]
    pub min_count: Option<u64>,
    /// Adaptive mode: alert when the hour's tail probability under the source's model is below
    /// this (default 1e-4).
    #[arg(long, env = "FLOWSPIKE_ALPHA")]
    pub alpha: Option<f64>,
    /// Internal networks (comma-separated CIDRs); default: the RFC 1918 ranges, as ESCU.
    #[arg(long, value_delimiter = ',', env = "FLOWSPIKE_INTERNAL")]
    pub internal: Vec<String>,
    /// Distinct destinations stored per (hour, source) before switching to an estimate.
    #[arg(long, default_value_t = 10_000, env = "FLOWSPIKE_DEST_CAP")]
    pub dest_cap: usize,
    /// Distinct sources kept per hour (bounds memory, docs/limits.md). Past it an hour keeps its
    /// lowest source addresses; the others' records are counted as over the cap and logged
    /// (replay exits 3).
    #[arg(long, default_value_t = flowspike_counter::DEFAULT_MAX_SOURCES_PER_HOUR,
          env = "FLOWSPIKE_MAX_SOURCES_PER_HOUR")]
    pub max_sources_per_hour: usize,
    /// Latest accepted event time, in seconds past the clock (the wall clock at each batch; for
    /// replay, when it starts). A record whose `start` is later, or past 9999-12-31T23:59:59Z, is
    /// malformed: counted and skipped, it moves no watermark.
    #[arg(long, default_value_t = flowspike_counter::DEFAULT_MAX_FUTURE_SECS, env = "FLOWSPIKE_MAX_FUTURE_SECS")]
    pub max_future_secs: u64,
}

/// The format of spike records and the sinks beyond the output stream or standard output, shared
/// by replay, consume and serve-firehose (docs/findings.md).
#[derive(Args, Debug, Clone)]
pub struct FindingsArgs {
    /// Format of spike records: native (flowspike's JSON record), ocsf (OCSF 1.1 Detection
    /// Finding) or asff (AWS Security Finding Format; needs --aws-account-id and a region).
    #[arg(long, default_value = "native", env = "FLOWSPIKE_OUTPUT_FORMAT")]
    pub output_format: String,
    /// Also import every spike and finding into AWS Security Hub as ASFF findings
    /// (BatchImportFindings), in --aws-account-id and the region of the AWS configuration
    /// (AWS_REGION or the profile).
    #[arg(long, env = "FLOWSPIKE_SECURITYHUB")]
    pub securityhub: bool,
    /// Also send every spike and finding to this Amazon EventBridge event bus (PutEvents; source
    /// `flowspike`, the detail in --output-format).
    #[arg(long, env = "FLOWSPIKE_EVENTBRIDGE_BUS")]
    pub eventbridge_bus: Option<String>,
    /// The AWS account the findings belong to (ASFF `AwsAccountId` and `ProductArn`, OCSF
    /// `cloud.account`): needed by asff and --securityhub.
    #[arg(long, env = "FLOWSPIKE_AWS_ACCOUNT_ID")]
    pub aws_account_id: Option<String>,
}

/// The flags of the pipeline's settings ([`flowspike_counter::Pipeline`]), the same in every
/// command that runs the pipeline (`replay`, `consume`, `serve-firehose`):
/// [`crate::settings::pipeline`] turns them into the settings.
#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// Input framing and format.
    #[command(flatten)]
    pub input: InputArgs,
    /// Detection settings.
    #[command(flatten)]
    pub detect: DetectArgs,
}

/// Which detections run beside the blocked spike, and their settings (replay and demo;
/// docs/detections.md). [`crate::settings::detections`] turns them into the settings.
#[derive(Args, Debug, Clone)]
pub struct DetectionsArgs {
    /// Detections to run: all, or a comma-separated list of blocked-spike, port-scan, port-sweep,
    /// outbound-volume, threat-list. threat-list runs only with --threat-list.
    #[arg(long, default_value = "all", env = "FLOWSPIKE_DETECTIONS")]
    pub detections: String,
    /// A threat list: a file or s3://bucket/key with one IPv4 or IPv6 address or CIDR per line
    /// (`#` comments); repeat for several lists (named after the file, without extension).
    #[arg(long = "threat-list", value_delimiter = ',', env = "FLOWSPIKE_THREAT_LISTS")]
    pub threat_lists: Vec<String>,
    /// Port scan: distinct destination ports on one destination in an hour (ESCU's 500).
    #[arg(long, default_value_t = 500, env = "FLOWSPIKE_SCAN_MIN_PORTS")]
    pub scan_min_ports: u32,
    /// Port scan: of which below 1024 (ESCU's 20).
    #[arg(long, default_value_t = 20, env = "FLOWSPIKE_SCAN_MIN_LOW_PORTS")]
    pub scan_min_low_ports: u32,
    /// Port sweep: distinct destinations on one port and protocol in an hour (ESCU's 250).
    #[arg(long, default_value_t = 250, env = "FLOWSPIKE_SWEEP_MIN_DESTS")]
    pub sweep_min_dests: u32,
    /// Outbound volume: the unit (bytes) the volume detector counts in.
    #[arg(long, default_value_t = flowspike_detections::DEFAULT_UNIT_BYTES,
          env = "FLOWSPIKE_VOLUME_UNIT_BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    pub volume_unit_bytes: u64,
}

/// `flowspike replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Sources: files, directories (recursive) or s3://bucket/prefix.
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// State location: a directory or s3://bucket/prefix (the hourly history in aggregates/; splunk mode also saves baseline/splunk.json).
    #[arg(long, env = "FLOWSPIKE_STATE")]
    pub state: String,
    /// Where spike records go (JSON Lines in --output-format): a path, or - for standard output.
    /// Default: `<state>/spikes/replay-<time>.jsonl` for a local state, standard output for an S3
    /// state.
    #[arg(long)]
    pub spikes: Option<String>,
    /// Format of the records and the sinks beyond them.
    #[command(flatten)]
    pub findings: FindingsArgs,
    /// Only records at or after this time (RFC 3339, YYYY-MM-DD or YYYY-MM-DDTHH).
    #[arg(long)]
    pub from: Option<String>,
    /// Only records before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Print the summary as JSON on standard error instead of text.
    #[arg(long)]
    pub json: bool,
    /// Parser threads (default: all cores).
    #[arg(long, env = "FLOWSPIKE_THREADS")]
    pub threads: Option<usize>,
    /// Objects at least this large (stored bytes) are read in blocks of lines and parsed on every
    /// core, never held whole (plain text and gzip; other framings are read whole).
    #[arg(long, default_value_t = 32 << 20, env = "FLOWSPIKE_STREAM_MIN_BYTES")]
    pub stream_min_bytes: u64,
    /// Size of those blocks of decompressed text, in bytes.
    #[arg(long, default_value_t = 8 << 20, env = "FLOWSPIKE_STREAM_BLOCK_BYTES",
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub stream_block_bytes: u64,
    /// Read large plain-text local files instead of mapping them into memory. Mapping is faster;
    /// use this when files may be truncated or rewritten while they are replayed (a mapped file
    /// that shrinks under the process makes it fail with SIGBUS).
    #[arg(long, env = "FLOWSPIKE_NO_MMAP")]
    pub no_mmap: bool,
    /// How long a failing S3 call (throttling, 5xx, timeouts, dropped connections) is retried, with
    /// backoff, before the object is called unreadable (or, for the state, the replay fails).
    #[arg(long, default_value_t = 300, env = "FLOWSPIKE_RETRY_SECS")]
    pub retry_secs: u64,
    /// Where the other detections' findings go (JSON Lines): a path, or - for standard output.
    /// Default: `<state>/findings/replay-<time>.jsonl` for a local state, standard output for an
    /// S3 state.
    #[arg(long)]
    pub findings_out: Option<String>,
    /// Input framing, format and detection settings.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The other detections.
    #[command(flatten)]
    pub detections: DetectionsArgs,
}

/// `flowspike demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Working directory for the archive and the state (replaced if it holds a previous demo).
    #[arg(long, default_value = "flowspike-demo")]
    pub dir: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Baseline mode: adaptive, window (ESCU's rule) or splunk.
    #[arg(long, default_value = "adaptive")]
    pub mode: String,
}

/// `flowspike bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Records to generate in memory (ignored with --input).
    #[arg(long, default_value_t = 2_000_000)]
    pub records: usize,
    /// Records per generated object (S3 objects hold thousands to hundreds of thousands).
    #[arg(long, default_value_t = 100_000)]
    pub records_per_object: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Measure these files or this directory instead of generated data (read into memory first).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Framing of generated data: lines, gzip or cwlogs (CloudWatch Logs envelopes).
    #[arg(long, default_value = "gzip")]
    pub framing: String,
    /// Runs per stage (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the report as JSON on standard output instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `flowspike explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// State location: a directory or s3://bucket/prefix (its hourly history is read, nothing is
    /// written).
    #[arg(long, env = "FLOWSPIKE_STATE")]
    pub state: String,
    /// The source address to explain.
    pub src_ip: String,
    /// The hour to explain (RFC 3339, YYYY-MM-DD, YYYY-MM-DDTHH or unix seconds); default: the
    /// source's latest alert, else its latest active hour.
    #[arg(long)]
    pub hour: Option<String>,
    /// Write the chart (FILE.svg or FILE.png) or a self-contained page (FILE.html) instead of printing the
    /// text summary.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Detection settings: the mode in force and its parameters (as given to replay or consume).
    #[command(flatten)]
    pub detect: DetectArgs,
}

/// `flowspike report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// State location: a directory or s3://bucket/prefix (its history, its spikes/*.jsonl and the
    /// *.jsonl under its findings/ are read, nothing is written).
    #[arg(long, env = "FLOWSPIKE_STATE")]
    pub state: String,
    /// Only incidents with an alerted hour at or after this time.
    #[arg(long)]
    pub from: Option<String>,
    /// Only incidents with an alerted hour before this time.
    #[arg(long)]
    pub to: Option<String>,
    /// Output directory: index.html and one explain-<id>.html per incident.
    #[arg(long)]
    pub out: PathBuf,
    /// Spike records (JSON Lines files) to list instead of the state's spikes/*.jsonl. With
    /// neither, the detection is replayed over the history and its alerts are listed.
    #[arg(long)]
    pub spikes: Vec<PathBuf>,
    /// Findings of the other detections (native JSON Lines: `replay --findings-out`, a saved
    /// output of `consume` or `serve-firehose`) to list instead of the *.jsonl under the state's
    /// findings/. Repeatable; a finding read twice counts once.
    #[arg(long)]
    pub findings: Vec<PathBuf>,
    /// Detection settings: the mode in force and its parameters (as given to replay or consume).
    #[command(flatten)]
    pub detect: DetectArgs,
}
