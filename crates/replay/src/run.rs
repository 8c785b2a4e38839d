//! The replay pipeline.

use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use flowlog::{DecodeOptions, Format};
use flowspike_counter::{CountHooks, CountSink, CounterConfig, Pipeline, ShardedCounter};
use flowspike_detect::{DetectConfig, Detector, HourInput, Mode, Spike};
use flowspike_detections::{DetectionsConfig, Finding, Taps, TapsOutput, WithTaps};
use flowspike_history::History;
use flowspike_model::{Columns, HourRows, HOUR};
use rayon::prelude::*;

use crate::archive::{discover, Archive, ArchiveError, ObjectInfo};
use crate::stream::{initial_format, read_blocks, BlockPool, StreamSettings, Streamed, TextBlock};

/// Where a splunk-mode replay saves its baseline state in the state store (for inspection: no
/// production code reads it back; the services rebuild their baseline from the history).
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
    /// Decoding, rule, counter and detection settings. The rule's event-time bounds are those of
    /// [`Rule::time_bounds`](flowspike_counter::Rule::time_bounds): set them with
    /// [`Rule::at_clock`](flowspike_counter::Rule::at_clock) (every representable time otherwise).
    pub pipeline: Pipeline,
    /// The detections that run beside the blocked spike, and their settings.
    pub detections: DetectionsConfig,
    /// Threads that fetch objects ahead of the parsers (S3 downloads overlap parsing).
    pub fetchers: usize,
    /// Which objects are read in blocks of lines, and the block size.
    pub stream: StreamSettings,
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
    /// Hours left as the history held them because an object that could not be read to its end
    /// had records in them (its other objects' counts too: they would be short), with those
    /// objects. Replay them again once the objects are whole.
    pub untouched_hours: Vec<UntouchedHour>,
    /// Counted records of sources past `CounterConfig::max_sources_per_hour` (not in the history).
    pub records_over_source_cap: u64,
    /// Distinct sources past the cap, summed over the hours (HyperLogLog estimates).
    pub sources_over_source_cap: u64,
    /// Hours (unix seconds) that had more sources than the cap.
    pub hours_over_source_cap: Vec<i64>,
    /// Spikes found in the replayed hours.
    pub spikes: u64,
    /// Findings of the other detections in the replayed hours.
    pub findings: u64,
    /// Records of sources the port-scan tap dropped past its per-hour cap
    /// (`ScanConfig::max_keys_per_hour`): not judged for scans (the other detections saw them).
    pub records_over_scan_cap: u64,
    /// Hours (unix seconds) where the port-scan tap dropped sources.
    pub hours_over_scan_cap: Vec<i64>,
    /// Wall-clock time of the whole replay, in milliseconds.
    pub elapsed_ms: u64,
    /// First few malformed lines: `location:line: reason`.
    pub malformed_samples: Vec<String>,
    /// First few unreadable objects: `location: reason`.
    pub unreadable_samples: Vec<String>,
}

/// An hour the replay left untouched in the history (see [`ReplaySummary::untouched_hours`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UntouchedHour {
    /// Start of the hour, unix seconds UTC.
    pub hour: i64,
    /// The damaged objects that had records in it (at most a few are named).
    pub objects: Vec<String>,
}

impl ReplaySummary {
    /// True when some input was skipped or not counted (malformed lines, unreadable objects,
    /// hours left untouched, sources past the cap).
    pub fn skipped_anything(&self) -> bool {
        self.malformed > 0
            || self.unreadable_files > 0
            || !self.untouched_hours.is_empty()
            || !self.hours_over_source_cap.is_empty()
            || !self.hours_over_scan_cap.is_empty()
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
    /// The other detections' findings of the replayed hours, ordered by hour, detection, source.
    pub findings: Vec<Finding>,
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
    Detect(#[from] flowspike_detect::DetectError),
    /// Writing or evaluating the other detections' tables failed.
    #[error("detections: {0}")]
    Detections(#[from] flowspike_detections::DetectionsError),
    /// A splunk-mode replay could not save its baseline (`baseline/splunk.json`).
    #[error("detection: cannot save the baseline: {source}")]
    SaveBaseline {
        /// The cause.
        source: flowspike_history::StoreError,
    },
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

/// Shards of a worker's counter: partials merge shard by shard on every core, so the merge of
/// the workers' counters at the end is not one long sequential step.
const COUNTER_SHARDS: usize = 16;

/// Per-worker state: a partial counter and counts.
struct Acc {
    counter: ShardedCounter,
    /// The other detections' aggregates.
    taps: Taps,
    summary: ReplaySummary,
    hours: BTreeSet<i64>,
    /// Hours that objects which could not be read to their end had records in, and those objects
    /// (indices): these hours are not rewritten.
    damaged: BTreeMap<i64, BTreeSet<usize>>,
}

impl Acc {
    fn new(cfg: &CounterConfig, detections: &DetectionsConfig) -> Acc {
        Acc {
            counter: ShardedCounter::new(COUNTER_SHARDS, *cfg),
            taps: Taps::new(detections),
            summary: ReplaySummary::default(),
            hours: BTreeSet::new(),
            damaged: BTreeMap::new(),
        }
    }

    fn merge(mut self, o: Acc) -> Acc {
        self.counter.merge(o.counter);
        self.taps.merge(o.taps);
        self.summary.merge(o.summary);
        self.hours.extend(o.hours);
        for (hour, objects) in o.damaged {
            self.damaged.entry(hour).or_default().extend(objects);
        }
        self
    }

    /// Notes that object `i`, which had records in `hours`, could not be read to its end.
    fn damage(&mut self, i: usize, hours: &BTreeSet<i64>) {
        for h in hours {
            self.damaged.entry(*h).or_default().insert(i);
        }
    }
}

/// What happens to the parts of a large object once all its blocks are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// They count.
    Count,
    /// They are dropped: a header inside the object changed the format, it is recounted in order.
    Recount,
    /// They count, but the object ended in an error: the hours they have records in are not
    /// rewritten.
    Damaged,
}

/// One rayon worker's state while counting.
struct Worker {
    /// Whole objects, settled objects' bookkeeping, and the parts of settled objects.
    acc: Acc,
    /// What this worker counted of each large object read in blocks and not yet settled.
    parts: HashMap<usize, Acc>,
}

impl Worker {
    fn new(cfg: &ReplayConfig) -> Worker {
        Worker { acc: Acc::new(&cfg.pipeline.counter, &cfg.detections), parts: HashMap::new() }
    }

    fn merge(mut self, o: Worker) -> Worker {
        self.acc = self.acc.merge(o.acc);
        for (i, part) in o.parts {
            let merged = match self.parts.remove(&i) {
                Some(mine) => mine.merge(part),
                None => part,
            };
            self.parts.insert(i, merged);
        }
        self
    }

    /// Folds the parts of objects whose outcome is known (see [`Settled`]) into `acc`, or drops
    /// them, so that parts do not pile up over many objects.
    fn absorb(&mut self, settled: &Mutex<HashMap<usize, Settled>>) {
        if self.parts.is_empty() {
            return;
        }
        let known: Vec<(usize, Settled)> = {
            let settled = settled.lock().unwrap_or_else(|e| e.into_inner());
            self.parts.keys().filter_map(|i| settled.get(i).map(|s| (*i, *s))).collect()
        };
        for (i, outcome) in known {
            if let Some(part) = self.parts.remove(&i) {
                if outcome == Settled::Damaged {
                    self.acc.damage(i, &part.hours);
                }
                if outcome != Settled::Recount {
                    // A placeholder while the worker's own accumulator absorbs the part.
                    let empty = Acc::new(&part.counter.config(), &DetectionsConfig::none());
                    let acc = std::mem::replace(&mut self.acc, empty);
                    self.acc = acc.merge(part);
                }
            }
        }
    }
}

/// Replay's hooks on the counting sink: the `--from/--to` window, the hours of the records, and
/// a few samples of bad lines.
struct ReplayHooks<'a> {
    from: i64,
    to: i64,
    location: &'a str,
    /// Where samples of bad lines go (the summary's), at most [`MAX_SAMPLES`].
    samples: &'a mut Vec<String>,
    last_hour: i64,
    /// The hours of this sink's records (within `--from/--to`).
    hours: BTreeSet<i64>,
    /// Records outside `--from/--to`.
    out_of_range: u64,
}

impl CountHooks for ReplayHooks<'_> {
    // The rule's event-time bounds decide for every record, counted or not: a `start` past
    // them is malformed (it would otherwise make an hour no file can be written for).
    const CHECK_EVERY_START: bool = true;

    #[inline]
    fn start(&mut self, start: Option<u64>) -> bool {
        // At most `MAX_EVENT_TIME`: the conversion is exact.
        let Some(start) = start.map(|s| s as i64) else { return false };
        if start < self.from || start >= self.to {
            self.out_of_range += 1;
            return false;
        }
        // Records come mostly in time order: a start inside the last hour seen needs no division
        // (`last_hour` starts at `i64::MIN`, below every `start`).
        if !(self.last_hour..self.last_hour.saturating_add(HOUR)).contains(&start) {
            let hour = start - start % HOUR;
            self.hours.insert(hour);
            self.last_hour = hour;
        }
        true
    }

    fn bad(&mut self, line: u64, why: &dyn std::fmt::Display) {
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(format!("{}:{line}: {why}", self.location));
        }
    }
}

/// Runs `decode` with a counting sink feeding `acc` (records of `location`); adds what it saw to
/// the accumulator's summary and hours. Returns `decode`'s result and the hours of its records.
fn count_into<R>(
    acc: &mut Acc,
    cfg: &ReplayConfig,
    location: &str,
    decode: impl FnOnce(&mut CountSink<'_, WithTaps<'_, &mut ShardedCounter>, ReplayHooks<'_>>) -> R,
) -> (R, BTreeSet<i64>) {
    let Acc { counter, taps, summary, hours, .. } = acc;
    let counter = WithTaps { counter, taps };
    let hooks = ReplayHooks {
        from: cfg.from.unwrap_or(i64::MIN),
        to: cfg.to.unwrap_or(i64::MAX),
        location,
        samples: &mut summary.malformed_samples,
        last_hour: i64::MIN,
        hours: BTreeSet::new(),
        out_of_range: 0,
    };
    let mut sink =
        CountSink::with_hooks(&cfg.pipeline.rule, cfg.pipeline.rule.time_bounds(), counter, hooks);
    let r = decode(&mut sink);
    let CountSink { stats, hooks, .. } = sink;
    summary.records += stats.records;
    summary.counted += stats.counted;
    summary.malformed += stats.skipped();
    summary.control_messages += stats.control_messages;
    summary.out_of_range += hooks.out_of_range;
    hours.extend(hooks.hours.iter().copied());
    (r, hooks.hours)
}

/// Replays `cfg.sources` into `history` and evaluates the detection over the hours they cover.
///
/// Every hour that has at least one record in the input (within `--from/--to`) is rewritten with
/// exactly this input's aggregates, so replaying the same input twice does not double count. Bad input
/// is counted in the summary and skipped; only listing and history errors stop the replay.
///
/// An object that cannot be read to its end (truncated or corrupt gzip, bad JSON, a read error)
/// contributes nothing: every hour it had records in before the damage is left as the history
/// holds it, not rewritten even with the other objects' counts of that hour (they would be
/// short), and listed in [`ReplaySummary::untouched_hours`]. An object that fails before any
/// record (it cannot be fetched, a gzip object held whole that does not inflate) has no known
/// hours: it is only counted as unreadable.
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
    tracing::debug!(elapsed = ?started.elapsed(), "counted");
    let Acc { counter, taps, mut summary, hours, damaged } = acc;
    let mut tables = taps.finish();
    let cap = cfg.pipeline.counter.max_sources_per_hour;
    for (hour, o) in counter.overflow().into_iter().filter(|(h, _)| !damaged.contains_key(h)) {
        o.warn(hour, cap);
        summary.records_over_source_cap += o.records;
        summary.sources_over_source_cap += o.sources;
        summary.hours_over_source_cap.push(hour);
    }
    // Rewrite every covered hour (an hour with records but no hit becomes an empty file), except
    // those a damaged object had records in.
    let mut by_hour: BTreeMap<i64, Columns> =
        hours.iter().map(|h| (*h, Columns::default())).collect();
    by_hour.extend(counter.into_hour_columns());
    for (hour, damaged_objects) in damaged {
        by_hour.remove(&hour);
        tables.hours.remove(&hour);
        let objects: Vec<String> = damaged_objects
            .into_iter()
            .take(MAX_SAMPLES)
            .map(|i| objects[i].0.location(&objects[i].1.key))
            .collect();
        tracing::warn!(hour, objects = ?objects, "hour left untouched: a damaged object had records in it");
        summary.untouched_hours.push(UntouchedHour { hour, objects });
    }
    for (hour, t) in tables.hours.iter().filter(|(_, t)| t.scan_flows_over_cap > 0) {
        tracing::warn!(
            hour,
            records = t.scan_flows_over_cap,
            "port-scan tap over its per-hour cap: the highest sources not judged for scans"
        );
        summary.records_over_scan_cap += t.scan_flows_over_cap;
        summary.hours_over_scan_cap.push(*hour);
    }
    tracing::debug!(elapsed = ?started.elapsed(), hours = by_hour.len(), "rows built");
    let name = format!("replay-{}", unique_suffix());
    let write = || write_hours(history, &by_hour, &tables, &cfg.detections, &name);
    let covered: Vec<i64> = by_hour.keys().copied().collect();
    // Like the spikes' detection below, the other detections read rows in memory and only
    // hours of their tables outside the ones being written: they run while files are written.
    let evaluate = || tables.evaluate(&cfg.detections, history.store().as_ref(), &covered);
    let (spikes, findings) = if cfg.pipeline.detect.mode != Mode::Splunk {
        // Window- and adaptive-mode detection read only rows in memory and hours outside the
        // ones being written, and save nothing: they run while the files are written.
        let (written, (spikes, findings)) = rayon::join(write, || {
            rayon::join(|| detect_range(&cfg.pipeline.detect, history, &by_hour), evaluate)
        });
        written?;
        (spikes?, findings?)
    } else {
        // Splunk mode saves its baseline: only after the hours it covers are written.
        write()?;
        (detect_range(&cfg.pipeline.detect, history, &by_hour)?, evaluate()?)
    };
    summary.hours_written = by_hour.len() as u64;
    summary.findings = findings.len() as u64;
    tracing::debug!(elapsed = ?started.elapsed(), hours = by_hour.len(), spikes = spikes.len(), "history written, detected");

    // Freeing the hours' buffers is done by a thread of its own (inline if none can be
    // started): nothing waits for it.
    let _ = std::thread::Builder::new().name("replay-drop".into()).spawn(move || drop(by_hour));
    summary.spikes = spikes.len() as u64;
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(ReplayOutcome { summary, spikes, findings })
}

/// Rewrites every hour of `by_hour` as one file named `name`, and the other detections' tables of
/// that hour. Writing a file waits on the disk (fsync) or the network about as long as it encodes,
/// so twice as many threads as cores write (hours are independent files); the first error stops
/// the others at their next hour.
fn write_hours(
    history: &History,
    by_hour: &BTreeMap<i64, Columns>,
    tables: &TapsOutput,
    detections: &DetectionsConfig,
    name: &str,
) -> Result<(), ReplayError> {
    let hours: Vec<(&i64, &Columns)> = by_hour.iter().collect();
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let threads = (2 * rayon::current_num_threads()).clamp(1, hours.len().max(1));
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), ReplayError> {
                    // Relaxed: the index only hands out distinct hours; the flag is a hint to stop.
                    while !failed.load(Ordering::Relaxed) {
                        let Some((hour, rows)) = hours.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            break;
                        };
                        if let Err(e) = history.replace_hour(**hour, *rows, name) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e.into());
                        }
                        let store = history.store().as_ref();
                        if let Err(e) = tables.write_hour(detections, store, **hour, name) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e.into());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        writers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })
}

/// What the fetcher threads hand to the parsers.
enum Work {
    /// A small object, read whole (or the error reading it).
    Whole(usize, Result<Vec<u8>, ArchiveError>),
    /// A block of a large object read in blocks, with the format the object starts with.
    Block(usize, Arc<Format>, TextBlock),
    /// The end of a large object.
    End {
        /// The object's index.
        object: usize,
        /// The number of blocks sent.
        blocks: u64,
        /// The error that ended the object early.
        error: Option<String>,
    },
}

/// A large object whose blocks are being counted.
#[derive(Default)]
struct Streaming {
    /// Blocks counted so far.
    done: u64,
    /// Set when the reader finished: the number of blocks, and the error if any.
    end: Option<(u64, Option<String>)>,
    /// Blocks (by seq) whose last header names a format other than the one assumed.
    format_changes: Vec<u64>,
}

/// Fetches objects on `cfg.fetchers` threads and parses them on the rayon pool. Objects of at
/// least `cfg.stream.min_object_bytes` are read in blocks of lines (see [`crate::stream`]), so one big file
/// is parsed on every core and never held whole.
fn count_objects(
    cfg: &ReplayConfig,
    objects: &[(Arc<dyn Archive>, ObjectInfo)],
    progress: &dyn Progress,
) -> Acc {
    let next = AtomicUsize::new(0);
    let streams: Mutex<HashMap<usize, Streaming>> = Mutex::new(HashMap::new());
    // Large objects whose blocks are all counted, and what happens to their parts.
    let settled: Mutex<HashMap<usize, Settled>> = Mutex::new(HashMap::new());
    let fallback = cfg.pipeline.decode.format.clone().unwrap_or_else(Format::default_v2);
    // Bounded: at most this many fetched objects or blocks wait in memory for a parser.
    let (tx, rx) = mpsc::sync_channel::<Work>(cfg.fetchers.max(1) * 2);
    // Enough idle buffers for every block that can be in flight (queued, being read, counted).
    let pool = &BlockPool::new(cfg.fetchers.max(1) * 3 + rayon::current_num_threads());
    let mut acc = std::thread::scope(|scope| {
        for _ in 0..cfg.fetchers.max(1) {
            let tx = tx.clone();
            let next = &next;
            let fallback = &fallback;
            scope.spawn(move || loop {
                // Relaxed: the counter only hands out distinct indices; no other memory is published.
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((archive, obj)) = objects.get(i) else { break };
                if obj.size >= cfg.stream.min_object_bytes {
                    // `None`: not line text, read it whole below.
                    if let Some((blocks, error)) =
                        fetch_blocks(cfg, pool, archive.as_ref(), &obj.key, i, fallback, &tx)
                    {
                        if tx.send(Work::End { object: i, blocks, error }).is_err() {
                            break;
                        }
                        continue;
                    }
                }
                if tx.send(Work::Whole(i, archive.get(&obj.key))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut w = rx
            .into_iter()
            .par_bridge()
            .fold(
                || Worker::new(cfg),
                |mut w, work| {
                    let finished = match work {
                        Work::Whole(i, fetched) => {
                            count_whole(cfg, &objects[i], i, fetched, &mut w.acc);
                            progress.object_done(objects[i].1.size);
                            None
                        }
                        Work::Block(i, format, block) => {
                            // Straight into this worker's part of the object: no partial per
                            // block to merge.
                            let part = w.parts.entry(i).or_insert_with(|| {
                                Acc::new(&cfg.pipeline.counter, &cfg.detections)
                            });
                            let changed = count_block(cfg, &objects[i], &format, &block, part);
                            let seq = block.seq;
                            pool.give(block.data);
                            track(&streams, i, |st| {
                                st.done += 1;
                                if changed {
                                    st.format_changes.push(seq);
                                }
                            })
                            .map(|done| (i, done))
                        }
                        Work::End { object: i, blocks, error } => {
                            track(&streams, i, |st| st.end = Some((blocks, error)))
                                .map(|done| (i, done))
                        }
                    };
                    if let Some((i, done)) = finished {
                        settle(&mut w.acc, &objects[i], i, done, &settled, progress);
                    }
                    w.absorb(&settled);
                    w
                },
            )
            .reduce(|| Worker::new(cfg), Worker::merge);
        w.absorb(&settled);
        w.acc
    });
    // Objects whose blocks assumed a format that a header inside them changed: read them again,
    // in order, carrying the format from block to block.
    let settled = settled.into_inner().unwrap_or_else(|e| e.into_inner());
    let redo: BTreeSet<usize> =
        settled.into_iter().filter(|(_, s)| *s == Settled::Recount).map(|(i, _)| i).collect();
    for i in redo {
        recount_sequentially(cfg, &objects[i], i, &fallback, &mut acc);
        progress.object_done(objects[i].1.size);
    }
    acc
}

/// Reads object `i` in blocks and sends them; returns the number of blocks sent and the error
/// that ended the object early, or `None` when the object is not line text.
fn fetch_blocks(
    cfg: &ReplayConfig,
    pool: &BlockPool,
    archive: &dyn Archive,
    key: &str,
    i: usize,
    fallback: &Format,
    tx: &mpsc::SyncSender<Work>,
) -> Option<(u64, Option<String>)> {
    let mut format: Option<Arc<Format>> = None;
    let mut sent = 0u64;
    let r = read_blocks(
        pool,
        archive,
        key,
        cfg.pipeline.decode.framing,
        &cfg.stream,
        cfg.pipeline.decode.max_line_bytes,
        |block| {
            let f = format
                .get_or_insert_with(|| Arc::new(initial_format(&block.data, fallback)))
                .clone();
            sent += 1;
            tx.send(Work::Block(i, f, block)).is_ok()
        },
    );
    match r {
        Ok(Streamed::NotText(framing)) => {
            tracing::debug!(key, framing = framing.name(), "not line text: reading it whole");
            None
        }
        Ok(Streamed::Done { blocks }) => Some((blocks, None)),
        Ok(Streamed::Stopped) => Some((sent, None)),
        Err(e) => Some((sent, Some(e.to_string()))),
    }
}

/// Counts small object `i`, read whole. A decoding error can come after records were delivered
/// (a bad JSON object after good ones, a bad KPL or Parquet part): those records' hours are then
/// damaged (not rewritten), so their partial counts never reach the history.
fn count_whole(
    cfg: &ReplayConfig,
    (archive, obj): &(Arc<dyn Archive>, ObjectInfo),
    i: usize,
    fetched: Result<Vec<u8>, ArchiveError>,
    acc: &mut Acc,
) {
    let location = archive.location(&obj.key);
    acc.summary.files += 1;
    acc.summary.bytes += obj.size;
    match fetched {
        Ok(bytes) => {
            let (r, hours) = count_into(acc, cfg, &location, |sink| {
                flowlog::for_each_record(&bytes, &cfg.pipeline.decode, sink)
            });
            match r {
                Ok(s) => acc.summary.decoded_bytes += s.decoded_bytes,
                Err(e) => {
                    unreadable(&mut acc.summary, &location, &e);
                    acc.damage(i, &hours);
                }
            }
        }
        Err(e) => unreadable(&mut acc.summary, &location, &e),
    }
}

/// Counts one block under `format` into `part`; true when the block ends under another format (a
/// header).
fn count_block(
    cfg: &ReplayConfig,
    (archive, obj): &(Arc<dyn Archive>, ObjectInfo),
    format: &Format,
    block: &TextBlock,
    part: &mut Acc,
) -> bool {
    let location = format!("{} (text from byte {})", archive.location(&obj.key), block.offset);
    let opts = DecodeOptions { format: Some(format.clone()), ..cfg.pipeline.decode.clone() };
    let (b, _) = count_into(part, cfg, &location, |sink| {
        flowlog::for_each_text_block(&block.data, &opts, sink)
    });
    part.summary.decoded_bytes += b.summary.decoded_bytes;
    b.last_header.is_some_and(|h| h != *format)
}

/// Updates the bookkeeping of large object `i`; returns it (removed) when all its blocks are
/// counted.
fn track(
    streams: &Mutex<HashMap<usize, Streaming>>,
    i: usize,
    update: impl FnOnce(&mut Streaming),
) -> Option<Streaming> {
    let mut map = streams.lock().unwrap_or_else(|e| e.into_inner());
    let st = map.entry(i).or_default();
    update(st);
    match st.end {
        Some((n, _)) if st.done == n => map.remove(&i),
        _ => None,
    }
}

/// Marks a large object whose blocks are all counted: its parts (spread over the workers) count,
/// or it is queued for a sequential recount when a header inside it changed the format for the
/// blocks after it (its parts are then dropped). The parts of an object that ended in an error
/// count too, but the hours they have records in are damaged: not rewritten.
fn settle(
    acc: &mut Acc,
    (archive, obj): &(Arc<dyn Archive>, ObjectInfo),
    i: usize,
    done: Streaming,
    settled: &Mutex<HashMap<usize, Settled>>,
    progress: &dyn Progress,
) {
    let (blocks, error) = done.end.unwrap_or((0, None));
    // A format change in the last block affects no other block.
    let ok = !done.format_changes.iter().any(|seq| seq + 1 < blocks);
    let outcome = match (ok, &error) {
        (false, _) => Settled::Recount,
        (true, None) => Settled::Count,
        (true, Some(_)) => Settled::Damaged,
    };
    settled.lock().unwrap_or_else(|e| e.into_inner()).insert(i, outcome);
    if !ok {
        tracing::debug!(object = %archive.location(&obj.key), "header changes the format mid-object; recounting in order");
        return;
    }
    acc.summary.files += 1;
    acc.summary.bytes += obj.size;
    if let Some(e) = error {
        unreadable(&mut acc.summary, &archive.location(&obj.key), &e);
    }
    progress.object_done(obj.size);
}

/// Counts large object `i` block by block in order, carrying the format across blocks. If it
/// ends in an error, the hours of its records are damaged (not rewritten).
fn recount_sequentially(
    cfg: &ReplayConfig,
    (archive, obj): &(Arc<dyn Archive>, ObjectInfo),
    i: usize,
    fallback: &Format,
    acc: &mut Acc,
) {
    let mut format = fallback.clone();
    let mut first = true;
    let mut hours = BTreeSet::new();
    let location = archive.location(&obj.key);
    let pool = BlockPool::new(1);
    let r = read_blocks(
        &pool,
        archive.as_ref(),
        &obj.key,
        cfg.pipeline.decode.framing,
        &cfg.stream,
        cfg.pipeline.decode.max_line_bytes,
        |block| {
            if first {
                format = initial_format(&block.data, fallback);
                first = false;
            }
            let at = format!("{location} (text from byte {})", block.offset);
            let opts =
                DecodeOptions { format: Some(format.clone()), ..cfg.pipeline.decode.clone() };
            let (b, block_hours) = count_into(acc, cfg, &at, |sink| {
                flowlog::for_each_text_block(&block.data, &opts, sink)
            });
            hours.extend(block_hours);
            acc.summary.decoded_bytes += b.summary.decoded_bytes;
            if let Some(h) = b.last_header {
                format = h;
            }
            pool.give(block.data);
            true
        },
    );
    acc.summary.files += 1;
    acc.summary.bytes += obj.size;
    if let Err(e) = r {
        unreadable(&mut acc.summary, &location, &e);
        acc.damage(i, &hours);
    }
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
/// hours before `first` that the mode needs (the window for `window`; all history for `splunk`
/// and `adaptive`).
fn detect_range(
    cfg: &DetectConfig,
    history: &History,
    written: &BTreeMap<i64, Columns>,
) -> Result<Vec<Spike>, ReplayError> {
    let (Some(&first), Some(&last)) = (written.keys().next(), written.keys().next_back()) else {
        return Ok(Vec::new());
    };
    let warm_from = cfg.warm_from(first);
    // The hours just written are exactly `written` (a file holds the rows of the columns the
    // counter made, which read back unchanged), so only the other hours of the range are read back.
    let mut rows = Vec::new();
    for hour in history.hours()?.into_iter().filter(|h| (warm_from..=last).contains(h)) {
        if !written.contains_key(&hour) {
            rows.extend(history.read_hour(hour)?);
        }
    }
    let by_hour: BTreeMap<i64, HourRows<'_>> = written
        .iter()
        .map(|(h, c)| (*h, c.into()))
        .chain(rows.chunk_by(|a, b| a.hour == b.hour).map(|r| (r[0].hour, r.into())))
        .collect();
    let hours: Vec<HourInput<'_>> = by_hour
        .iter()
        .map(|(&hour, &rows)| HourInput { hour, rows, verdicts: hour >= first })
        .collect();
    if cfg.mode == Mode::Window {
        // Sources are independent in window mode: one detector per shard of sources, on every core.
        let shards = rayon::current_num_threads() * 4;
        return Ok(flowspike_detect::detect_hours(cfg, &hours, shards)?);
    }
    let mut detector = Detector::new(cfg.clone());
    let spikes = detector.feed_hours(&hours)?;
    if cfg.mode != Mode::Splunk {
        // Only splunk mode has a baseline file; every service rebuilds its detector from the history.
        return Ok(spikes);
    }
    // Saved for inspection only: the services rebuild their baseline from the history.
    history
        .store()
        .put(SPLUNK_BASELINE_KEY, detector.snapshot().to_json_bytes())
        .map_err(|source| ReplayError::SaveBaseline { source })?;
    Ok(spikes)
}
