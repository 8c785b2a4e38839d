//! `flowspike bench`: the replay pipeline measured stage by stage on data held in memory.
//!
//! The input (generated, or read from files) is prepared as a set of objects in the chosen
//! framing before any clock starts. Each stage then runs over all objects on a rayon pool of the
//! requested size, `runs` times, and the median is reported:
//! 1. `decompress`: inflate every object (gzip and CloudWatch framings);
//! 2. `parse`: `flowlog::for_each_record` over the decompressed objects, touching nothing;
//! 3. `parse+filter`: plus the ESCU rule (`Rule::classify`);
//! 4. `parse+filter+count`: plus per-thread `Counter`s merged at the end;
//! 5. `consumer decode`: the Kinesis consumer's own decode path (`decode_batch`) over the stored
//!    objects, one Kinesis record each, in batches as GetRecords returns them: inflate, parse,
//!    filter and count per record (compressed framings only);
//! 6. `parquet write`: the hourly rows written as Parquet files (one per hour) to a temporary dir;
//! 7. `end to end`: the real `flowspike replay` pipeline (`flowspike_replay::replay`) over the
//!    stored objects: fetch, decompress, parse, filter, count, Parquet, detection.
//!
//! Every run checks its counts against the others (and, for generated data, against the counts
//! known by construction), so a fast wrong pipeline cannot report a figure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use flowlog::{DecodeOptions, FlowRecord, LineError, RecordSink};
use flowspike_counter::{AggregateRow, CountSink, Counter, CounterConfig, Pipeline, Rule};
use flowspike_engine::{decode_batch, DetectionsConfig, RawRecord};
use flowspike_history::{History, LocalStore};
use flowspike_replay::{Archive, ArchiveError, ObjectInfo, ReplayConfig, Source, StreamSettings};
use rayon::prelude::*;

/// How generated input is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchFraming {
    /// S3-style plain text objects, each with a header line.
    Lines,
    /// S3-style gzip objects (`.log.gz`), each with a header line.
    Gzip,
    /// CloudWatch Logs subscription envelopes (gzip JSON, as Kinesis records), 1,000 events each.
    Cwlogs,
}

impl std::str::FromStr for BenchFraming {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<BenchFraming, BenchError> {
        match s {
            "lines" => Ok(BenchFraming::Lines),
            "gzip" => Ok(BenchFraming::Gzip),
            "cwlogs" => Ok(BenchFraming::Cwlogs),
            other => Err(BenchError::Config(format!(
                "unknown framing {other:?} (expected lines, gzip or cwlogs)"
            ))),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Records to generate (ignored with `input`).
    pub records: usize,
    /// Records per generated object (S3 objects hold thousands to a few hundred thousand).
    pub records_per_object: usize,
    /// Threads of the pool every stage runs on.
    pub threads: usize,
    /// Files or directories to read instead of generating (framing detected per file).
    pub input: Option<PathBuf>,
    /// Framing of generated input.
    pub framing: BenchFraming,
    /// Runs per stage; the median is reported.
    pub runs: usize,
    /// Seed of the generator.
    pub seed: u64,
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad settings.
    #[error("{0}")]
    Config(String),
    /// Reading the input or writing temporary files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A stage failed or disagreed with another stage.
    #[error("stage {stage}: {message}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// The median figures of one stage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageResult {
    /// Stage name.
    pub stage: &'static str,
    /// Median wall-clock seconds.
    pub seconds: f64,
    /// Fastest run, seconds.
    pub min_seconds: f64,
    /// Flow records the stage went through (rows for the Parquet stage).
    pub records: u64,
    /// Decompressed bytes the stage went through (compressed bytes read, for decompress).
    pub bytes: u64,
    /// Records per second (median run).
    pub records_per_s: f64,
    /// Megabytes (10^6) of decompressed text per second (median run).
    pub mb_per_s: f64,
    /// `records_per_s / threads`.
    pub records_per_s_per_core: f64,
    /// `mb_per_s / threads`.
    pub mb_per_s_per_core: f64,
}

/// A whole benchmark run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Where the input came from (`generated` or the path).
    pub input: String,
    /// Framing of generated input (`auto` for files).
    pub framing: String,
    /// Threads of the pool.
    pub threads: usize,
    /// Objects (files, S3-style objects or Kinesis records).
    pub objects: usize,
    /// Bytes as stored (compressed).
    pub stored_bytes: u64,
    /// Bytes after decompression (text, or JSON envelopes for cwlogs).
    pub text_bytes: u64,
    /// Flow records.
    pub records: u64,
    /// Records matching the blocked-outbound rule.
    pub counted: u64,
    /// Hourly (hour, source) rows.
    pub rows: u64,
    /// Runs per stage.
    pub runs: usize,
    /// The stages.
    pub stages: Vec<StageResult>,
    /// Peak resident memory of the process (VmHWM), bytes, input included.
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory after the input was prepared, bytes.
    pub input_rss_bytes: Option<u64>,
}

/// Runs the benchmark: prepares the input, then measures each stage in turn, each cross-checked
/// against the stages before it.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    if cfg.threads == 0 || cfg.runs == 0 || cfg.records_per_object == 0 {
        return Err(BenchError::Config("threads, runs and records per object must be > 0".into()));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| BenchError::Config(e.to_string()))?;
    let input = Input::prepare(cfg)?;
    let input_rss = vm_kb("VmRSS:").map(|k| k * 1024);
    let mut bench = Bench::new(cfg, &pool, &input.objects);
    let opts = DecodeOptions { max_decompressed_bytes: u64::MAX, ..DecodeOptions::default() };
    let texts = bench.decompress(&input.objects)?;
    // Large texts are cut at line ends into blocks (as replay does), so one big file uses every
    // thread; each block carries the format the text starts with.
    let units = blocks(&texts, &opts);
    let records = bench.parse(&units)?;
    let counted = bench.filter(&units, records, input.known_counted)?;
    let rows = bench.count(&units, records, counted)?;
    if bench.compressed {
        bench.consumer_decode(&input.objects, records, counted)?;
    }
    bench.parquet_write(&rows)?;
    let objects = bench.end_to_end(input.objects, records, counted)?;
    Ok(BenchReport {
        input: input.name,
        framing: input.framing,
        threads: bench.threads,
        objects,
        stored_bytes: bench.stored_bytes,
        text_bytes: bench.text_bytes,
        records,
        counted,
        rows: rows.len() as u64,
        runs: bench.runs,
        stages: bench.stages,
        peak_rss_bytes: vm_kb("VmHWM:").map(|k| k * 1024),
        input_rss_bytes: input_rss,
    })
}

/// The objects to measure, prepared before any clock starts.
struct Input {
    /// The objects as stored (compressed or not).
    objects: Vec<Vec<u8>>,
    /// Records the generator made match the rule (`None` for files).
    known_counted: Option<u64>,
    /// `generated` or the path.
    name: String,
    /// Framing of generated input, `auto` for files.
    framing: String,
}

impl Input {
    /// Reads `cfg.input` or generates the objects.
    fn prepare(cfg: &BenchConfig) -> Result<Input, BenchError> {
        let input = match &cfg.input {
            Some(p) => Input {
                objects: read_input(p)?,
                known_counted: None,
                name: p.display().to_string(),
                framing: "auto".to_string(),
            },
            None => {
                let (objects, counted) = generate_objects(cfg);
                Input {
                    objects,
                    known_counted: Some(counted),
                    name: "generated".to_string(),
                    framing: format!("{:?}", cfg.framing).to_lowercase(),
                }
            }
        };
        if input.objects.is_empty() {
            return Err(BenchError::Config("no input objects".into()));
        }
        Ok(input)
    }
}

/// The stages' shared settings and the results so far: one method per stage, each timing its
/// work `runs` times on the pool and checking its counts against the stages before it.
struct Bench<'p> {
    pool: &'p rayon::ThreadPool,
    runs: usize,
    threads: usize,
    /// The settings of the consumer's decode and of the end-to-end replay: every default.
    pipeline: Pipeline,
    /// Some object is gzip: the decompress and consumer decode stages run.
    compressed: bool,
    stored_bytes: u64,
    /// Known once [`Bench::decompress`] ran.
    text_bytes: u64,
    stages: Vec<StageResult>,
}

impl<'p> Bench<'p> {
    fn new(cfg: &BenchConfig, pool: &'p rayon::ThreadPool, objects: &[Vec<u8>]) -> Bench<'p> {
        Bench {
            pool,
            runs: cfg.runs,
            threads: cfg.threads,
            pipeline: Pipeline::default(),
            compressed: objects.iter().any(|o| o.starts_with(&[0x1f, 0x8b])),
            stored_bytes: objects.iter().map(|o| o.len() as u64).sum(),
            text_bytes: 0,
            stages: Vec::new(),
        }
    }

    /// Adds the figures of one stage from its `times`.
    fn push(&mut self, name: &'static str, times: &(f64, f64), records: u64, bytes: u64) {
        self.stages.push(stage(name, times, records, bytes, self.text_bytes, self.threads));
    }

    /// Times [`par_decode`] of `units` on the pool: the times, and the sum of the last run.
    fn time_decode<S: RecordSink>(
        &self,
        units: &[(&[u8], DecodeOptions)],
        new: impl Fn() -> S + Sync,
        value: impl Fn(&S, &flowlog::Summary) -> u64 + Sync,
    ) -> Result<((f64, f64), u64), BenchError> {
        let mut sum = 0;
        let times = time_runs(self.runs, || {
            sum = self.pool.install(|| par_decode(units, &new, &value))?;
            Ok(())
        })?;
        Ok((times, sum))
    }

    /// Stage 1, decompress: the texts of the objects, and (compressed input only) how long
    /// inflating them takes.
    fn decompress(&mut self, objects: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, BenchError> {
        let texts: Vec<Vec<u8>> = self.pool.install(|| inflate_all(objects))?;
        self.text_bytes = texts.iter().map(|t| t.len() as u64).sum();
        if self.compressed {
            let pool = self.pool;
            let times = time_runs(self.runs, || pool.install(|| inflate_all(objects)).map(|_| ()))?;
            self.push("decompress", &times, 0, self.stored_bytes);
        }
        Ok(texts)
    }

    /// Stage 2, parse: the records of the texts, touching nothing.
    fn parse(&mut self, units: &[(&[u8], DecodeOptions)]) -> Result<u64, BenchError> {
        let (times, records) = self.time_decode(units, || Touch(0), |t, s| t.0.min(s.records))?;
        self.push("parse", &times, records, self.text_bytes);
        Ok(records)
    }

    /// Stage 3, parse + filter: the records the rule counts (equal to the generator's, if known).
    fn filter(
        &mut self,
        units: &[(&[u8], DecodeOptions)],
        records: u64,
        known_counted: Option<u64>,
    ) -> Result<u64, BenchError> {
        let rule = &self.pipeline.rule;
        let (times, counted) =
            self.time_decode(units, || CountSink::new(rule, ()), |f, _| f.stats.counted)?;
        if let Some(k) = known_counted {
            agree("parse+filter", k == counted, || format!("counted {counted}, generated {k}"))?;
        }
        self.push("parse+filter", &times, records, self.text_bytes);
        Ok(counted)
    }

    /// Stage 4, parse + filter + count: the hourly rows (holding every counted record).
    fn count(
        &mut self,
        units: &[(&[u8], DecodeOptions)],
        records: u64,
        counted: u64,
    ) -> Result<Vec<AggregateRow>, BenchError> {
        let (pool, rule, counter_cfg) = (self.pool, &self.pipeline.rule, self.pipeline.counter);
        let mut counter = Counter::new(counter_cfg);
        let times = time_runs(self.runs, || {
            counter = pool.install(|| count_all(units, rule, counter_cfg))?;
            Ok(())
        })?;
        let rows: Vec<_> = counter.into_rows();
        let row_hits: u64 = rows.iter().map(|r| r.blocked_count).sum();
        agree("parse+filter+count", row_hits == counted, || {
            format!("rows hold {row_hits} hits, filter found {counted}")
        })?;
        self.push("parse+filter+count", &times, records, self.text_bytes);
        Ok(rows)
    }

    /// Stage 5, the consumer's decode path, straight from the stored (compressed) objects.
    fn consumer_decode(
        &mut self,
        objects: &[Vec<u8>],
        records: u64,
        counted: u64,
    ) -> Result<(), BenchError> {
        let (pool, pipeline) = (self.pool, &self.pipeline);
        let times = time_runs(self.runs, || {
            let n = pool.install(|| consumer_decode(objects, pipeline));
            agree("consumer decode", n == counted, || {
                format!("counted {n}, filter found {counted}")
            })
        })?;
        self.push("consumer decode", &times, records, self.stored_bytes);
        Ok(())
    }

    /// Stage 6, Parquet write (one file per hour, as replay writes them).
    fn parquet_write(&mut self, rows: &[AggregateRow]) -> Result<(), BenchError> {
        let mut by_hour: BTreeMap<i64, Vec<_>> = BTreeMap::new();
        for r in rows {
            by_hour.entry(r.hour).or_default().push(r.clone());
        }
        let pool = self.pool;
        let times = time_runs(self.runs, || {
            let dir = tempfile::tempdir()?;
            let history = History::new(Arc::new(LocalStore::new(dir.path())));
            pool.install(|| {
                by_hour.par_iter().try_for_each(|(hour, rows)| {
                    history.replace_hour(*hour, rows, "bench").map(|_| ())
                })
            })
            .map_err(|e| BenchError::Stage { stage: "parquet write", message: e.to_string() })
        })?;
        // Rows, not text: no bytes, no MB/s.
        self.stages.push(stage("parquet write", &times, rows.len() as u64, 0, 0, self.threads));
        Ok(())
    }

    /// Stage 7, end to end: the replay pipeline over the stored objects, which must count what the
    /// stages counted; the number of objects it listed.
    fn end_to_end(
        &mut self,
        objects: Vec<Vec<u8>>,
        records: u64,
        counted: u64,
    ) -> Result<usize, BenchError> {
        let archive: Arc<dyn Archive> = Arc::new(MemArchive::new(objects));
        let (pool, pipeline) = (self.pool, &self.pipeline);
        let times = time_runs(self.runs, || {
            let dir = tempfile::tempdir()?;
            let history = History::new(Arc::new(LocalStore::new(dir.path())));
            let rcfg = ReplayConfig {
                sources: vec![Source { archive: archive.clone(), root: String::new() }],
                from: None,
                to: None,
                pipeline: pipeline.clone(),
                detections: flowspike_detections::DetectionsConfig::none(),
                fetchers: 1,
                stream: StreamSettings::default(),
            };
            let out = pool
                .install(|| flowspike_replay::replay(&rcfg, &history, &()))
                .map_err(|e| BenchError::Stage { stage: "end to end", message: e.to_string() })?;
            let (c, r) = (out.summary.counted, out.summary.records);
            agree("end to end", c == counted && r == records, || {
                format!("replay counted {c} of {r} records; stages found {counted} of {records}")
            })
        })?;
        // `bytes` of end to end is the text; the stored bytes are in the report.
        self.push("end to end", &times, records, self.text_bytes);
        Ok(archive_len(&archive))
    }
}

/// `Ok` when a stage's counts agree with what the stages before it found; else the stage fails
/// with `message`.
fn agree(
    stage: &'static str,
    agrees: bool,
    message: impl FnOnce() -> String,
) -> Result<(), BenchError> {
    if agrees {
        Ok(())
    } else {
        Err(BenchError::Stage { stage, message: message() })
    }
}

fn archive_len(a: &Arc<dyn Archive>) -> usize {
    a.list("").map(|l| l.len()).unwrap_or(0)
}

/// Median and minimum of `runs` timed calls.
fn time_runs(
    runs: usize,
    mut f: impl FnMut() -> Result<(), BenchError>,
) -> Result<(f64, f64), BenchError> {
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t[0]))
}

fn stage(
    name: &'static str,
    (secs, min): &(f64, f64),
    records: u64,
    bytes: u64,
    text: u64,
    threads: usize,
) -> StageResult {
    let s = secs.max(1e-9);
    let rps = records as f64 / s;
    let mbps = text as f64 / 1e6 / s;
    StageResult {
        stage: name,
        seconds: *secs,
        min_seconds: *min,
        records,
        bytes,
        records_per_s: rps,
        mb_per_s: mbps,
        records_per_s_per_core: rps / threads as f64,
        mb_per_s_per_core: mbps / threads as f64,
    }
}

/// Inflates every gzip object with the product's inflater (`flowlog::gunzip`: libdeflate for
/// single-member objects); others are copied as they are.
fn inflate_all(objects: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, BenchError> {
    objects
        .par_iter()
        .map(|o| {
            if o.starts_with(&[0x1f, 0x8b]) {
                flowlog::gunzip(o, u64::MAX)
                    .map_err(|e| BenchError::Stage { stage: "decompress", message: e.to_string() })
            } else {
                Ok(o.clone())
            }
        })
        .collect()
}

/// Decodes every text on the current pool with one sink per object; sums `value(sink, summary)`.
fn par_decode<S: RecordSink>(
    units: &[(&[u8], DecodeOptions)],
    new: impl Fn() -> S + Sync,
    value: impl Fn(&S, &flowlog::Summary) -> u64 + Sync,
) -> Result<u64, BenchError> {
    units
        .par_iter()
        .map(|(t, opts)| {
            let mut sink = new();
            let s = flowlog::for_each_record(t, opts, &mut sink)
                .map_err(|e| BenchError::Stage { stage: "parse", message: e.to_string() })?;
            if s.malformed > 0 {
                return Err(BenchError::Stage {
                    stage: "parse",
                    message: format!("{} malformed lines", s.malformed),
                });
            }
            Ok(value(&sink, &s))
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))
}

fn count_all(
    units: &[(&[u8], DecodeOptions)],
    rule: &Rule,
    cfg: CounterConfig,
) -> Result<Counter, BenchError> {
    units
        .par_iter()
        .try_fold(
            || Counter::new(cfg),
            |mut counter, (t, opts)| {
                let mut sink = CountSink::new(rule, &mut counter);
                flowlog::for_each_record(t, opts, &mut sink)
                    .map_err(|e| BenchError::Stage { stage: "count", message: e.to_string() })?;
                Ok(counter)
            },
        )
        .try_reduce(
            || Counter::new(cfg),
            |mut a, b| {
                a.merge(b);
                Ok(a)
            },
        )
}

/// Kinesis records in one consumer batch (a GetRecords answer of ~10 MB holds a few hundred
/// CloudWatch Logs envelopes).
const RECORDS_PER_BATCH: usize = 250;

/// Decodes every object as one Kinesis record with the consumer's `decode_batch`, batch by batch
/// on the current pool, merging the batches' counters; the number of records counted.
fn consumer_decode(objects: &[Vec<u8>], pipeline: &Pipeline) -> u64 {
    objects
        .par_chunks(RECORDS_PER_BATCH)
        .map(|chunk| {
            let records: Vec<RawRecord<'_>> =
                chunk.iter().map(|o| RawRecord { sequence_number: "0", data: o }).collect();
            // The blocked spike alone: the stage the other benchmarks' peers do.
            let none = DetectionsConfig::none();
            let batch = decode_batch(pipeline, &none, "shardId-000000000000", &records);
            (batch.stats.counted, batch.counter)
        })
        .reduce(
            || (0, Counter::new(pipeline.counter)),
            |(n, mut a), (m, b)| {
                a.merge(b);
                (n + m, a)
            },
        )
        .0
}

/// Texts of plain lines over 16 MiB cut into blocks of about 8 MiB at line ends, each with the
/// format its text starts with; other texts whole.
fn blocks<'t>(texts: &'t [Vec<u8>], opts: &DecodeOptions) -> Vec<(&'t [u8], DecodeOptions)> {
    const BLOCK: usize = 8 << 20;
    let mut out = Vec::new();
    for t in texts {
        if t.len() <= 2 * BLOCK || flowlog::Framing::detect(t) != flowlog::Framing::Lines {
            out.push((&t[..], opts.clone()));
            continue;
        }
        let fallback = opts.format.clone().unwrap_or_else(flowlog::Format::default_v2);
        let format = flowspike_replay::initial_format(&t[..BLOCK.min(t.len())], &fallback);
        let with = DecodeOptions { format: Some(format), ..opts.clone() };
        let mut rest = &t[..];
        while !rest.is_empty() {
            let end = if rest.len() <= BLOCK {
                rest.len()
            } else {
                memchr_last_newline(&rest[..BLOCK]).map_or(rest.len(), |i| i + 1)
            };
            out.push((&rest[..end], with.clone()));
            rest = &rest[end..];
        }
    }
    out
}

fn memchr_last_newline(b: &[u8]) -> Option<usize> {
    b.iter().rposition(|c| *c == b'\n')
}

/// Touches every record (the parser's work only); counts them.
struct Touch(u64);

impl RecordSink for Touch {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.0 += u64::from(!rec.line().is_empty());
    }
    fn malformed(&mut self, _: &LineError) {}
}

const HEADER: &[u8] = b"version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n";

/// Generated objects in the configured framing, and the blocked-outbound count by construction.
fn generate_objects(cfg: &BenchConfig) -> (Vec<Vec<u8>>, u64) {
    let n_objects = cfg.records.div_ceil(cfg.records_per_object).max(1);
    let parts: Vec<(Vec<Vec<u8>>, u64)> = (0..n_objects)
        .into_par_iter()
        .map(|i| {
            let n = cfg.records_per_object.min(cfg.records - i * cfg.records_per_object);
            let g = crate::generate(n, cfg.seed.wrapping_add(i as u64));
            let objs = match cfg.framing {
                BenchFraming::Lines => vec![[HEADER, &g.data].concat()],
                BenchFraming::Gzip => vec![gzip(&[HEADER, &g.data].concat())],
                BenchFraming::Cwlogs => envelopes(&g.data, i),
            };
            (objs, g.blocked_outbound)
        })
        .collect();
    let counted = parts.iter().map(|p| p.1).sum();
    (parts.into_iter().flat_map(|p| p.0).collect(), counted)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// CloudWatch Logs subscription envelopes of 1,000 events each, gzip-compressed.
fn envelopes(lines: &[u8], object: usize) -> Vec<Vec<u8>> {
    let all: Vec<&[u8]> = lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    all.chunks(1000)
        .enumerate()
        .map(|(j, chunk)| {
            let events: Vec<serde_json::Value> = chunk
                .iter()
                .enumerate()
                .map(|(k, l)| {
                    let line = String::from_utf8_lossy(l);
                    let ts = line.split(' ').nth(10).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 1000;
                    serde_json::json!({"id": format!("{object}-{j}-{k}"), "timestamp": ts, "message": line})
                })
                .collect();
            let env = serde_json::json!({
                "messageType": "DATA_MESSAGE",
                "owner": "123456789012",
                "logGroup": "vpc-flow-logs",
                "logStream": format!("eni-{object:08x}"),
                "subscriptionFilters": ["flowspike"],
                "logEvents": events,
            });
            gzip(&serde_json::to_vec(&env).unwrap_or_default())
        })
        .collect()
}

/// Every file under `path` (a file or a directory, recursively), read whole.
fn read_input(path: &Path) -> Result<Vec<Vec<u8>>, BenchError> {
    let mut out = Vec::new();
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(std::fs::read(path)?);
        return Ok(out);
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        out.extend(read_input(&p)?);
    }
    Ok(out)
}

/// Objects held in memory, as an [`Archive`] for the replay pipeline.
struct MemArchive {
    objects: Vec<Vec<u8>>,
}

impl MemArchive {
    fn new(objects: Vec<Vec<u8>>) -> MemArchive {
        MemArchive { objects }
    }
}

impl Archive for MemArchive {
    fn list(&self, _prefix: &str) -> Result<Vec<ObjectInfo>, ArchiveError> {
        Ok((0..self.objects.len())
            .map(|i| ObjectInfo {
                key: format!("mem/{i:08}.log.gz"),
                size: self.objects[i].len() as u64,
            })
            .collect())
    }
    fn list_prefixes(&self, _prefix: &str) -> Result<Vec<String>, ArchiveError> {
        Ok(Vec::new())
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        key.strip_prefix("mem/")
            .and_then(|k| k.strip_suffix(".log.gz"))
            .and_then(|k| k.parse::<usize>().ok())
            .and_then(|i| self.objects.get(i).cloned())
            .ok_or_else(|| ArchiveError::Remote(format!("no object {key}")))
    }
    fn location(&self, key: &str) -> String {
        key.to_string()
    }
}

/// A `/proc/self/status` figure in KiB (Linux only).
fn vm_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The report as a readable table.
pub fn render(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "flowspike bench: {} ({}), {} threads, {} objects, {:.1} MB stored, {:.1} MB decompressed, {} records, {} counted, {} hourly rows; median of {} runs",
        r.input, r.framing, r.threads, r.objects, r.stored_bytes as f64 / 1e6, r.text_bytes as f64 / 1e6, r.records, r.counted, r.rows, r.runs
    );
    let _ = writeln!(
        s,
        "{:<20} {:>9} {:>9} {:>13} {:>10} {:>17} {:>14}",
        "stage", "median s", "min s", "records/s", "MB/s", "records/s/core", "MB/s/core"
    );
    for st in &r.stages {
        let (mb, mbc) = if st.stage == "parquet write" {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.0}", st.mb_per_s), format!("{:.0}", st.mb_per_s_per_core))
        };
        let what = if st.stage == "parquet write" { "rows/s" } else { "" };
        let (rps, rpsc) = if st.records == 0 {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.2} M", st.records_per_s / 1e6),
                format!("{:.2} M", st.records_per_s_per_core / 1e6),
            )
        };
        let _ = writeln!(
            s,
            "{:<20} {:>9.3} {:>9.3} {:>13} {:>10} {:>17} {:>14} {what}",
            st.stage, st.seconds, st.min_seconds, rps, mb, rpsc, mbc
        );
    }
    if let (Some(p), Some(i)) = (r.peak_rss_bytes, r.input_rss_bytes) {
        let _ = writeln!(
            s,
            "peak RSS {:.0} MB (input in memory: {:.0} MB resident before the stages)",
            p as f64 / 1e6,
            i as f64 / 1e6
        );
    }
    let _ = writeln!(s, "decompress and consumer decode MB/s count decompressed bytes; end to end includes Parquet writes and the detection.");
    let _ = writeln!(
        s,
        "gzip: libdeflate for one-member objects held whole, {} otherwise (streamed objects of 32 MiB or more, several members).",
        flowlog::GZ_INFLATER
    );
    s
}
