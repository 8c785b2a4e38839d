//! The replay pipeline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use flowlog::{DecodeOptions, FlowRecord, LineError, RecordSink};
use flowspike_counter::{AggregateRow, Counter, CounterConfig, Rule};
use flowspike_detect::{DetectConfig, Detector, Mode, Spike};
use flowspike_history::History;
use rayon::prelude::*;

use crate::archive::{discover, Archive, ArchiveError, ObjectInfo};

/// Where the `splunk` mode's baseline state is kept in the state store.
pub const SPLUNK_BASELINE_KEY: &str = "baseline/splunk.json";

/// How many malformed-line and unreadable-object samples a summary keeps.
const MAX_SAMPLES: usize = 10;

/// One replay source: an archive and a root inside it (a directory, a file, an S3 prefix).
#[derive(Clone)]
pub struct Source {
    /// Where the objects live.
    pub archive: Arc<dyn Archive>,
    /// The root key or path; a single file is replayed whatever its name.
    pub root: String,
}

/// What to replay and how.
#[derive(Clone)]
pub struct ReplayConfig {
    /// The sources, in order.
    pub sources: Vec<Source>,
    /// Only records with `start >= from` (unix seconds) count; whole date prefixes before it are skipped.
    pub from: Option<i64>,
    /// Only records with `start < to` count; whole date prefixes after it are skipped.
    pub to: Option<i64>,
    /// Framing and format of the inputs.
    pub decode: DecodeOptions,
    /// Which records count.
    pub rule: Rule,
    /// Counter settings (destination cap).
    pub counter: CounterConfig,
    /// Detection settings.
    pub detect: DetectConfig,
    /// Threads that fetch objects ahead of the parsers (S3 downloads overlap parsing).
    pub fetchers: usize,
}

/// Counts of one replay.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplaySummary {
    /// Objects read.
    pub files: u64,
    /// Objects that could not be read or decoded as a whole (counted and skipped).
    pub unreadable_files: u64,
    /// Bytes of the objects as stored (compressed).
    pub bytes: u64,
    /// Bytes after decompression.
    pub decoded_bytes: u64,
    /// Flow records seen.
    pub records: u64,
    /// Records that matched the rule and were counted.
    pub counted: u64,
    /// Damaged lines and records with unparseable fields (counted and skipped).
    pub malformed: u64,
    /// CloudWatch Logs control messages skipped.
    pub control_messages: u64,
    /// Records outside `--from/--to`.
    pub out_of_range: u64,
    /// Hours of history rewritten.
    pub hours_written: u64,
    /// Spikes found in the replayed hours.
    pub spikes: u64,
    /// Wall-clock time of the whole replay, in milliseconds.
    pub elapsed_ms: u64,
    /// First few malformed lines: `location:line: reason`.
    pub malformed_samples: Vec<String>,
    /// First few unreadable objects: `location: reason`.
    pub unreadable_samples: Vec<String>,
}

impl ReplaySummary {
    /// True when some input was skipped (malformed lines or unreadable objects).
    pub fn skipped_anything(&self) -> bool {
        self.malformed > 0 || self.unreadable_files > 0
    }

    /// Decoded megabytes per second of wall-clock time.
    pub fn mb_per_s(&self) -> f64 {
        let secs = (self.elapsed_ms as f64 / 1000.0).max(1e-3);
        self.decoded_bytes as f64 / 1e6 / secs
    }

    fn merge(&mut self, o: ReplaySummary) {
        self.files += o.files;
        self.unreadable_files += o.unreadable_files;
        self.bytes += o.bytes;
        self.decoded_bytes += o.decoded_bytes;
        self.records += o.records;
        self.counted += o.counted;
        self.malformed += o.malformed;
        self.control_messages += o.control_messages;
        self.out_of_range += o.out_of_range;
        for (mine, theirs) in [
            (&mut self.malformed_samples, o.malformed_samples),
            (&mut self.unreadable_samples, o.unreadable_samples),
        ] {
            let room = MAX_SAMPLES.saturating_sub(mine.len());
            mine.extend(theirs.into_iter().take(room));
        }
    }
}

/// The result of a replay.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// What was read, counted and skipped.
    pub summary: ReplaySummary,
    /// The spikes of the replayed hours, ordered by hour then source.
    pub spikes: Vec<Spike>,
}

/// Errors that stop a replay (as opposed to bad input, which is counted and skipped).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A source could not be listed.
    #[error("cannot list {root}: {source}")]
    List {
        /// The source root.
        root: String,
        /// The cause.
        source: ArchiveError,
    },
    /// The history could not be read or written.
    #[error("history: {0}")]
    History(#[from] flowspike_history::HistoryError),
    /// The detection failed.
    #[error("detection: {0}")]
    Detect(String),
}

/// Progress callbacks (a progress bar in the binary; nothing in tests).
pub trait Progress: Sync {
    /// The objects to read are known.
    fn start(&self, _objects: u64, _bytes: u64) {}
    /// One object was read (stored size).
    fn object_done(&self, _bytes: u64) {}
}

impl Progress for () {}

/// True for names that look like flow-log objects (`.log`, `.log.gz`, `.gz`, `.parquet`, `.txt`);
/// directory walks skip other files (they are counted as ignored by the caller if it wishes).
pub fn is_flow_log_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [".log", ".gz", ".parquet", ".txt"].iter().any(|e| k.ends_with(e))
}

/// Per-worker state: a partial counter and counts.
struct Acc {
    counter: Counter,
    summary: ReplaySummary,
    hours: BTreeSet<i64>,
}

impl Acc {
    fn new(cfg: &CounterConfig) -> Acc {
        Acc {
            counter: Counter::new(*cfg),
            summary: ReplaySummary::default(),
            hours: BTreeSet::new(),
        }
    }

    fn merge(mut self, o: Acc) -> Acc {
        self.counter.merge(o.counter);
        self.summary.merge(o.summary);
        self.hours.extend(o.hours);
        self
    }
}

/// Feeds one object's records into an [`Acc`].
struct Sink<'a> {
    acc: &'a mut Acc,
    rule: &'a Rule,
    from: i64,
    to: i64,
    location: &'a str,
    last_hour: i64,
}

impl Sink<'_> {
    fn malformed_sample(&mut self, line: u64, reason: &dyn std::fmt::Display) {
        let s = &mut self.acc.summary;
        s.malformed += 1;
        if s.malformed_samples.len() < MAX_SAMPLES {
            s.malformed_samples.push(format!("{}:{line}: {reason}", self.location));
        }
    }
}

impl RecordSink for Sink<'_> {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.acc.summary.records += 1;
        let start = match rec.start() {
            Ok(Some(s)) => s as i64,
            Ok(None) => return,
            Err(e) => return self.malformed_sample(rec.line_number(), &e),
        };
        if start < self.from || start >= self.to {
            self.acc.summary.out_of_range += 1;
            return;
        }
        let hour = start.div_euclid(3600) * 3600;
        if hour != self.last_hour {
            self.acc.hours.insert(hour);
            self.last_hour = hour;
        }
        match self.rule.classify(rec) {
            Ok(Some(hit)) => {
                self.acc.counter.add(&hit);
                self.acc.summary.counted += 1;
            }
            Ok(None) => {}
            Err(e) => self.malformed_sample(rec.line_number(), &e),
        }
    }

    fn malformed(&mut self, err: &LineError) {
        self.malformed_sample(err.line, err);
    }

    fn control_message(&mut self) {
        self.acc.summary.control_messages += 1;
    }
}

/// Replays `cfg.sources` into `history` and evaluates the detection over the hours they cover.
///
/// Every hour that has at least one record in the input (within `--from/--to`) is rewritten with
/// exactly this input's aggregates, so replaying the same input twice does not double count. Bad input
/// is counted in the summary and skipped; only listing and history errors stop the replay.
pub fn replay(
    cfg: &ReplayConfig,
    history: &History,
    progress: &dyn Progress,
) -> Result<ReplayOutcome, ReplayError> {
    let started = Instant::now();
    let mut objects: Vec<(Arc<dyn Archive>, ObjectInfo)> = Vec::new();
    for src in &cfg.sources {
        let found = discover(src.archive.as_ref(), &src.root, cfg.from, cfg.to)
            .map_err(|source| ReplayError::List { root: src.root.clone(), source })?;
        let single = found.len() == 1 && found[0].key == src.root;
        objects.extend(
            found
                .into_iter()
                .filter(|o| single || is_flow_log_name(&o.key))
                .map(|o| (src.archive.clone(), o)),
        );
    }
    progress.start(objects.len() as u64, objects.iter().map(|(_, o)| o.size).sum());

    let acc = count_objects(cfg, &objects, progress);
    let Acc { counter, mut summary, hours } = acc;

    // Rewrite every covered hour.
    let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> =
        hours.iter().map(|h| (*h, Vec::new())).collect();
    for row in counter.into_rows() {
        by_hour.entry(row.hour).or_default().push(row);
    }
    let name = format!("replay-{}", unique_suffix());
    for (hour, rows) in &by_hour {
        history.replace_hour(*hour, rows, &name)?;
    }
    summary.hours_written = by_hour.len() as u64;

    let spikes = match (by_hour.keys().next(), by_hour.keys().next_back()) {
        (Some(&first), Some(&last)) => detect_range(&cfg.detect, history, first, last)?,
        _ => Vec::new(),
    };
    summary.spikes = spikes.len() as u64;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(ReplayOutcome { summary, spikes })
}

/// Fetches objects on `cfg.fetchers` threads and parses them on the rayon pool.
fn count_objects(
    cfg: &ReplayConfig,
    objects: &[(Arc<dyn Archive>, ObjectInfo)],
    progress: &dyn Progress,
) -> Acc {
    let from = cfg.from.unwrap_or(i64::MIN);
    let to = cfg.to.unwrap_or(i64::MAX);
    let next = AtomicUsize::new(0);
    // Bounded: at most this many fetched objects wait in memory for a parser.
    let (tx, rx) = mpsc::sync_channel::<(usize, Result<Vec<u8>, ArchiveError>)>(cfg.fetchers * 2);
    std::thread::scope(|scope| {
        for _ in 0..cfg.fetchers.max(1) {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                // Relaxed: the counter only hands out distinct indices; no other memory is published.
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((archive, obj)) = objects.get(i) else { break };
                if tx.send((i, archive.get(&obj.key))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        rx.into_iter()
            .par_bridge()
            .fold(
                || Acc::new(&cfg.counter),
                |mut acc, (i, fetched)| {
                    let (archive, obj) = &objects[i];
                    let location = archive.location(&obj.key);
                    acc.summary.files += 1;
                    acc.summary.bytes += obj.size;
                    match fetched {
                        Ok(bytes) => {
                            let mut sink = Sink {
                                acc: &mut acc,
                                rule: &cfg.rule,
                                from,
                                to,
                                location: &location,
                                last_hour: i64::MIN,
                            };
                            match flowlog::for_each_record(&bytes, &cfg.decode, &mut sink) {
                                Ok(s) => acc.summary.decoded_bytes += s.decoded_bytes,
                                Err(e) => unreadable(&mut acc.summary, &location, &e),
                            }
                        }
                        Err(e) => unreadable(&mut acc.summary, &location, &e),
                    }
                    progress.object_done(obj.size);
                    acc
                },
            )
            .reduce(|| Acc::new(&cfg.counter), Acc::merge)
    })
}

fn unreadable(s: &mut ReplaySummary, location: &str, e: &dyn std::fmt::Display) {
    tracing::warn!(location, error = %e, "skipping unreadable object");
    s.unreadable_files += 1;
    if s.unreadable_samples.len() < MAX_SAMPLES {
        s.unreadable_samples.push(format!("{location}: {e}"));
    }
}

/// A name part unique to this run (time and process id).
fn unique_suffix() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    format!("{}-{}-{}", now.as_secs(), now.subsec_nanos(), std::process::id())
}

/// Evaluates the detection for hours `first..=last` from the history, warming the baseline with the
/// hours before `first` that the mode needs (the window for `window`; all history for `splunk`).
fn detect_range(
    cfg: &DetectConfig,
    history: &History,
    first: i64,
    last: i64,
) -> Result<Vec<Spike>, ReplayError> {
    let warm_from = match cfg.mode {
        Mode::Window => first - i64::from(cfg.window_hours) * 3600,
        Mode::Splunk => i64::MIN,
    };
    let rows = history.read_range(warm_from, last + 3600)?;
    let mut detector = Detector::new(cfg.clone());
    let mut spikes = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let hour = rows[i].hour;
        let j = i + rows[i..].iter().take_while(|r| r.hour == hour).count();
        let result = if hour < first {
            detector.warm(hour, &rows[i..j])
        } else {
            detector.try_observe_hour(hour, &rows[i..j]).map(|s| spikes.extend(s))
        };
        result.map_err(|e| ReplayError::Detect(e.to_string()))?;
        i = j;
    }
    if cfg.mode == Mode::Splunk {
        // The streaming consumer continues from this baseline.
        history
            .store()
            .put(SPLUNK_BASELINE_KEY, detector.snapshot().to_json_bytes())
            .map_err(|e| ReplayError::Detect(format!("cannot save the baseline: {e}")))?;
    }
    Ok(spikes)
}
