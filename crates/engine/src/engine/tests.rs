use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowspike_counter::{hour_of, merge_rows, CounterConfig, Hit, Pipeline};
use flowspike_detect::DetectConfig;
use flowspike_history::{LocalStore, Store, StoreError};

use super::*;

const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const LATENESS: i64 = 600;

pub(super) fn cfg() -> EngineConfig {
    EngineConfig {
        stream: "flows".into(),
        allowed_lateness_secs: LATENESS,
        pipeline: Pipeline {
            detect: DetectConfig::for_mode(flowspike_detect::Mode::Window),
            ..Pipeline::default()
        },
        detections: DetectionsConfig::none(),
    }
}

/// One hit: (start, src, dst).
type Ev = (i64, &'static str, String);

fn batch(shard: &str, seq: u64, evs: &[Ev]) -> Batch {
    let mut counter = Counter::new(CounterConfig::default());
    let mut max_start = None;
    for (start, src, dst) in evs {
        let start = *start as u64;
        counter.add(&Hit {
            hour: hour_of(start).unwrap(),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            interface_id: Some(b"eni-1"),
            bytes: 40,
            packets: 1,
        });
        max_start = Some(max_start.map_or(start, |m: u64| m.max(start)));
    }
    Batch {
        shard_id: shard.into(),
        last_sequence_number: Some(seq.to_string()),
        counter,
        taps: None,
        max_start,
        stats: Stats { counted: evs.len() as u64, ..Stats::default() },
        ended: false,
    }
}

/// Sources past `max_sources_per_hour` are counted in the stats (and the metric) when their hour
/// closes; the hour keeps its lowest sources.
#[test]
fn sources_past_the_cap_are_counted_when_the_hour_closes() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let mut c = cfg();
    c.pipeline.counter.max_sources_per_hour = 2;
    let mut spikes = Vec::new();
    let mut e = Engine::open(History::new(store), c, &mut spikes).unwrap();
    let srcs = ["10.0.0.4", "10.0.0.1", "10.0.0.3", "10.0.0.2"];
    let evs: Vec<Ev> = srcs.iter().map(|s| (BASE + 10, *s, "8.8.8.8".to_string())).collect();
    e.apply(batch("shardId-0", 1, &evs[..2]));
    e.apply(batch("shardId-0", 2, &evs[2..]));
    assert_eq!(e.stats().records_over_source_cap, 0, "counted when the hour closes");
    assert!(e.advance(BASE + 2 * 3600));
    assert_eq!(e.stats().records_over_source_cap, 2);
    e.checkpoint(&mut spikes).unwrap();
    let rows = e.history.read_hour(BASE).unwrap();
    let kept: Vec<&str> = rows.iter().map(|r| r.src_ip.as_str()).collect();
    assert_eq!(kept, ["10.0.0.1", "10.0.0.2"]);
}

/// A deterministic workload on two shards: a steady source 10.0.0.1 (2-3 hits an hour for nine
/// hours, then 40), noise sources, and records up to 50 minutes out of order (some late).
fn workload() -> Vec<(String, u64, Vec<Ev>)> {
    let mut x: u64 = 42;
    let mut rnd = move |n: u64| {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    let mut evs: Vec<Ev> = Vec::new();
    for h in 0..10i64 {
        let n = if h == 9 { 40 } else { 2 + (h % 2) };
        for i in 0..n {
            evs.push((
                BASE + h * 3600 + (i * 3600 / n),
                "10.0.0.1",
                format!("8.8.{}.{}", h, i % 7),
            ));
        }
        for i in 0..(5 + rnd(5) as i64) {
            let src = ["10.0.0.2", "10.0.0.3", "192.168.1.1"][rnd(3) as usize];
            evs.push((BASE + h * 3600 + rnd(3600) as i64, src, format!("1.1.1.{}", i % 4)));
        }
    }
    evs.sort_by_key(|e| e.0);
    // Disorder: move some records up to 50 minutes later in the stream.
    let mut keyed: Vec<(i64, Ev)> =
        evs.into_iter().map(|e| (e.0 + if rnd(4) == 0 { 3000 } else { 0 }, e)).collect();
    keyed.sort_by_key(|k| k.0);
    let mut out = Vec::new();
    let mut seqs = [0u64; 2];
    for chunk in keyed.chunks(3) {
        let shard = rnd(2) as usize;
        seqs[shard] += 1;
        out.push((
            format!("shardId-{shard}"),
            seqs[shard],
            chunk.iter().map(|(_, e)| e.clone()).collect(),
        ));
    }
    out
}

fn expected_rows(w: &[(String, u64, Vec<Ev>)]) -> Vec<AggregateRow> {
    let mut c = Counter::new(CounterConfig::default());
    for (s, q, evs) in w {
        c.merge(batch(s, *q, evs).counter);
    }
    c.into_rows()
}

fn history_rows(store: Arc<dyn Store>) -> Vec<AggregateRow> {
    let h = History::new(store);
    merge_rows(h.read_range(i64::MIN, i64::MAX).unwrap(), 10_000).unwrap()
}

/// Applies `w` (skipping batches at or before the engine's committed positions), advancing the
/// watermark of both shards after each batch and checkpointing every 4 batches; then closes
/// everything. Stops at the first error (a simulated crash).
fn drive(
    engine: &mut Engine,
    w: &[(String, u64, Vec<Ev>)],
    sink: &mut Vec<Spike>,
) -> Result<(), EngineError> {
    let mut n = 0;
    for (shard, seq, evs) in w {
        let done = engine
            .shard(shard)
            .and_then(|c| c.sequence_number.as_deref())
            .is_some_and(|s| s.parse::<u64>().unwrap() >= *seq);
        if done {
            continue;
        }
        engine.apply(batch(shard, *seq, evs));
        n += 1;
        let wm = global_watermark(
            ["shardId-0", "shardId-1"]
                .iter()
                .map(|s| (engine.shard(s).and_then(|c| c.max_start), false)),
            0,
            LATENESS,
        );
        let closed = wm.is_some_and(|w| engine.advance(w));
        if closed || n % 4 == 0 {
            engine.checkpoint(sink)?;
        }
    }
    engine.advance(BASE + 20 * 3600);
    engine.checkpoint(sink)
}

#[test]
fn uninterrupted_run_writes_exact_aggregates_and_one_spike() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let w = workload();
    let mut spikes = Vec::new();
    let mut e = Engine::open(History::new(store.clone()), cfg(), &mut spikes).unwrap();
    drive(&mut e, &w, &mut spikes).unwrap();
    assert_eq!(history_rows(store.clone()), expected_rows(&w));
    assert!(e.stats().late_counted > 0, "the workload must exercise late records: {:?}", e.stats());
    assert!(e.stats().corrections > 0);
    let ids: Vec<(&str, i64)> = spikes.iter().map(|s| (s.src_ip.as_str(), s.hour)).collect();
    assert_eq!(ids, [("10.0.0.1", BASE + 9 * 3600)]);
    // Only the committed pending files remain, all outside aggregates/.
    let pending = store.list(&pending_prefix("flows")).unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    // A reopened engine has nothing to redo and emits nothing again.
    let mut again = Vec::new();
    let e2 = Engine::open(History::new(store.clone()), cfg(), &mut again).unwrap();
    assert!(again.is_empty());
    assert_eq!(e2.closed_through(), Some(BASE + 20 * 3600));
}

/// When the puts of a [`FaultStore`] fail.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The store dies after this many successful puts: every later put and delete fails (a crash
    /// between any two writes of a checkpoint).
    DieAfter(usize),
    /// The put of this index (from 0) fails once (a transient S3 error); every other call
    /// succeeds.
    FailOnce(usize),
}

/// A local store whose writes fail as its [`Fault`] says; it counts its puts.
struct FaultStore {
    inner: LocalStore,
    fault: Fault,
    puts: AtomicUsize,
}

impl FaultStore {
    fn new(dir: &std::path::Path, fault: Fault) -> Arc<FaultStore> {
        Arc::new(FaultStore { inner: LocalStore::new(dir), fault, puts: AtomicUsize::new(0) })
    }
}

impl Store for FaultStore {
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        match (self.fault, self.puts.fetch_add(1, Ordering::SeqCst)) {
            (Fault::DieAfter(budget), n) if n >= budget => {
                Err(StoreError::Remote("crashed".into()))
            }
            (Fault::FailOnce(fail), n) if n == fail => Err(StoreError::Remote("transient".into())),
            _ => self.inner.put(key, bytes),
        }
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if let Fault::DieAfter(budget) = self.fault {
            if self.puts.load(Ordering::SeqCst) >= budget {
                return Err(StoreError::Remote("crashed".into()));
            }
        }
        self.inner.delete(key)
    }
}

#[test]
fn crash_after_any_write_then_restart_gives_identical_aggregates() {
    let w = workload();
    let expected = expected_rows(&w);
    // Count the puts of a whole run.
    let dir = tempfile::tempdir().unwrap();
    let counting = FaultStore::new(dir.path(), Fault::DieAfter(usize::MAX));
    let mut spikes = Vec::new();
    let mut e = Engine::open(History::new(counting.clone()), cfg(), &mut spikes).unwrap();
    drive(&mut e, &w, &mut spikes).unwrap();
    let total = counting.puts.load(Ordering::SeqCst);
    assert!(total > 20, "{total}");
    let want_spikes: BTreeSet<String> = spikes.iter().map(|s| s.id.clone()).collect();

    for budget in 0..total {
        let dir = tempfile::tempdir().unwrap();
        let dying = FaultStore::new(dir.path(), Fault::DieAfter(budget));
        let mut emitted = Vec::new();
        if let Ok(mut e) = Engine::open(History::new(dying.clone()), cfg(), &mut emitted) {
            assert!(drive(&mut e, &w, &mut emitted).is_err(), "budget {budget} must crash");
        }
        // Restart on the surviving files.
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let mut e = Engine::open(History::new(store.clone()), cfg(), &mut emitted)
            .unwrap_or_else(|err| panic!("budget {budget}: reopen: {err}"));
        drive(&mut e, &w, &mut emitted).unwrap();
        assert_eq!(history_rows(store), expected, "budget {budget}");
        let got: BTreeSet<String> = emitted.iter().map(|s| s.id.clone()).collect();
        assert_eq!(got, want_spikes, "budget {budget}");
        let by_id: BTreeMap<&str, usize> = emitted.iter().fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s.id.as_str()).or_default() += 1;
            m
        });
        assert!(by_id.values().all(|n| *n <= 2), "budget {budget}: {by_id:?}");
    }
}

#[test]
fn a_failed_checkpoint_write_loses_nothing_when_the_engine_goes_on() {
    let w = workload();
    let expected = expected_rows(&w);
    for fail in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let flaky = FaultStore::new(dir.path(), Fault::FailOnce(fail));
        let mut spikes = Vec::new();
        let mut e = Engine::open(History::new(flaky.clone()), cfg(), &mut spikes).unwrap();
        // As the consumer does with a retryable error: keep going, checkpoint again later.
        let mut failed = false;
        while let Err(err) = drive(&mut e, &w, &mut spikes) {
            assert!(!failed, "fail {fail}: failed twice: {err}");
            failed = true;
        }
        // One more checkpoint finishes any work the failed one left in the manifest.
        e.checkpoint(&mut spikes).unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        assert_eq!(history_rows(store), expected, "fail at put {fail}");
    }
}

/// Regression (#28 item 1, within the slack): a record stamped a few hours ahead of the clock
/// moved a live service's watermark there, closing the current hour early so that every on-time
/// record after it became a late correction. A live watermark never passes `now - lateness`.
#[test]
fn live_watermark_never_passes_the_clock() {
    let now = 1_767_225_600 + 1_800;
    let ahead = u64::try_from(now + 23 * 3_600).unwrap();
    assert_eq!(live_watermark([(Some(ahead), false)], now, 600), Some(now - 600));
    assert_eq!(global_watermark([(Some(ahead), false)], now, 600), Some(now + 23 * 3_600 - 600));
    // Behind the clock (catching up, or an ordinary live stream) it is the event-time watermark.
    let behind = u64::try_from(now - 7_200).unwrap();
    assert_eq!(live_watermark([(Some(behind), false)], now, 600), Some(now - 7_800));
    assert_eq!(live_watermark([(None, false)], now, 600), None);
    // The current hour stays open: the engine's closed_through stays before it.
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let mut e = Engine::open(History::new(store), cfg(), &mut Vec::new()).unwrap();
    e.advance(live_watermark([(Some(ahead), false)], now, 600).unwrap());
    assert_eq!(e.closed_through(), Some(now - 1_800));
}

#[test]
fn watermark_rules() {
    let check = |shards: &[(Option<u64>, bool)], want: Option<i64>| {
        assert_eq!(global_watermark(shards.iter().copied(), 100_000, 600), want, "{shards:?}");
    };
    check(&[], None);
    check(&[(Some(10_000), false)], Some(9_400));
    check(&[(Some(10_000), false), (None, false)], None);
    check(&[(Some(10_000), false), (None, true)], Some(9_400));
    check(&[(Some(10_000), true)], Some(99_400));
    check(&[(Some(200_000), true), (Some(50_000), false)], Some(49_400));
}

#[test]
fn manifest_of_another_stream_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let m = Manifest { version: MANIFEST_VERSION, stream: "other".into(), ..Manifest::default() };
    store.put(&manifest_key("flows"), m.to_json()).unwrap();
    let err = Engine::open(History::new(store), cfg(), &mut Vec::new()).unwrap_err();
    assert!(matches!(err, EngineError::Manifest { .. }), "{err}");
    assert!(!err.is_retryable());
}

/// Positions of a push source (Firehose request ids) are committed with their records: after a
/// restart the committed one is known and the uncommitted one is gone with its records; pruned
/// positions leave the next manifest.
#[test]
fn source_positions_are_committed_with_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let open = || Engine::open(History::new(store.clone()), cfg(), &mut Vec::new()).unwrap();
    let evs: Vec<Ev> = vec![(BASE + 10, "10.0.0.1", "8.8.8.8".into())];
    let mut e = open();
    e.apply_positioned("req-1", 100, batch("firehose", 1, &evs));
    e.checkpoint(&mut Vec::new()).unwrap();
    // Applied but never committed (a crash before the checkpoint): gone after the restart.
    e.apply_positioned("req-2", 102, batch("firehose", 2, &evs));
    drop(e);

    let mut e = open();
    assert_eq!(e.source_positions().keys().collect::<Vec<_>>(), ["req-1"]);
    e.apply_positioned("req-2", 104, batch("firehose", 2, &evs));
    assert!(e.is_dirty());
    e.retain_source_positions(|_, at| *at >= 104);
    e.advance(BASE + 7200);
    e.checkpoint(&mut Vec::new()).unwrap();
    assert_eq!(e.manifest().positions.keys().collect::<Vec<_>>(), ["req-2"]);
    let rows = history_rows(store.clone());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].blocked_count, 2, "req-1 once, req-2 once");
}

/// Decodes `lines` as one Kinesis record `seq` of shard `shardId-0` (default format, no header),
/// with the decoder's wall clock.
fn decoded(seq: u64, lines: &[String]) -> Batch {
    let ctx = Pipeline::default();
    let data = lines.concat();
    let seq = seq.to_string();
    crate::decode_batch(
        &ctx,
        &DetectionsConfig::none(),
        "shardId-0",
        &[crate::RawRecord { sequence_number: &seq, data: data.as_bytes() }],
    )
}

/// A default-format flow log line from `src` to 8.8.8.8 with `start` and `end` as given (text).
fn flow_line(src: &str, start: &str, end: &str, action: &str) -> String {
    format!("2 123456789012 eni-1 {src} 8.8.8.8 443 1234 6 1 40 {start} {end} {action} OK\n")
}

/// Applies `b`, advances to the shard's watermark (never idle) and commits a checkpoint.
fn step(e: &mut Engine, b: Batch, sink: &mut Vec<Spike>) -> Result<(), EngineError> {
    e.apply(b);
    let wm =
        global_watermark([(e.shard("shardId-0").and_then(|c| c.max_start), false)], 0, LATENESS);
    if let Some(w) = wm {
        e.advance(w);
    }
    e.checkpoint(sink)
}

/// Regression (#28 item 1): one record with a far-future `start` (8.3e12 and 9.3e12 are past what
/// chrono and a Parquet timestamp hold, u64::MAX past i64) used to be counted and to move the
/// watermark: the checkpoint failed on an hour no file can be written for (a crash loop), or
/// `closed_through` jumped past every real hour and every later record became a late correction
/// (detection stopped for good). Now it is malformed: counted as such, it moves nothing.
#[test]
fn far_future_start_is_malformed_and_moves_no_watermark() {
    for poison in ["8300000000000", "9300000000000", "18446744073709551615"] {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let mut spikes = Vec::new();
        let mut e = Engine::open(History::new(store.clone()), cfg(), &mut spikes).unwrap();
        let at = |h: i64, s: i64| (BASE + h * 3600 + s).to_string();
        let mut first: Vec<String> =
            (0..3).map(|i| flow_line("10.0.0.1", &at(0, i), &at(0, i + 5), "REJECT")).collect();
        // A counting record and an ACCEPT one: the watermark reads every record's start.
        first.push(flow_line("10.0.0.1", poison, poison, "REJECT"));
        first.push(flow_line("10.0.0.2", poison, poison, "ACCEPT"));
        let b = decoded(1, &first);
        assert_eq!((b.stats.counted, b.stats.malformed), (3, 2), "{poison}");
        step(&mut e, b, &mut spikes).unwrap_or_else(|err| panic!("{poison}: {err}"));
        let second: Vec<String> =
            (0..4).map(|i| flow_line("10.0.0.1", &at(1, i), &at(1, i), "REJECT")).collect();
        step(&mut e, decoded(2, &second), &mut spikes)
            .unwrap_or_else(|err| panic!("{poison}: {err}"));
        // Event time passes hour 1: hours 0 and 1 close, with every record on time.
        let third = [flow_line("10.0.0.1", &at(2, 3000), &at(2, 3000), "ACCEPT")];
        step(&mut e, decoded(3, &third), &mut spikes)
            .unwrap_or_else(|err| panic!("{poison}: {err}"));
        assert_eq!(e.closed_through(), Some(BASE + 2 * 3600), "{poison}");
        assert_eq!(e.stats().late_counted, 0, "{poison}: {:?}", e.stats());
        assert_eq!(e.stats().hours_closed, 2, "{poison}");
        let got: Vec<(i64, u64)> =
            history_rows(store.clone()).iter().map(|r| (r.hour, r.blocked_count)).collect();
        assert_eq!(got, [(BASE, 3), (BASE + 3600, 4)], "{poison}");
        // The committed state opens again.
        let e2 = Engine::open(History::new(store.clone()), cfg(), &mut spikes)
            .unwrap_or_else(|err| panic!("{poison}: reopen: {err}"));
        assert_eq!(e2.closed_through(), Some(BASE + 2 * 3600), "{poison}");
    }
}

/// Just past the clock plus `--max-future-secs` is malformed; just inside is a record like any
/// other. Counted by reason (`start_out_of_range`).
#[test]
fn max_future_secs_bounds_the_start_at_the_batch_clock() {
    let now = BASE + 100 * 3600;
    let ctx = Pipeline {
        rule: flowspike_counter::Rule::default().with_max_future_secs(600),
        ..Pipeline::default()
    };
    let inside = (now + 600).to_string();
    let past = (now + 601).to_string();
    let data = [
        flow_line("10.0.0.1", &inside, &inside, "REJECT"),
        flow_line("10.0.0.1", &past, &past, "REJECT"),
        flow_line("10.0.0.1", &past, &past, "ACCEPT"),
        flow_line("10.0.0.1", "-5", "7", "REJECT"),
    ]
    .concat();
    let b = crate::decode::decode_batch_at(
        &ctx,
        &DetectionsConfig::none(),
        "s",
        &[crate::RawRecord { sequence_number: "1", data: data.as_bytes() }],
        now,
    );
    assert_eq!(b.stats.counted, 1);
    assert_eq!(b.stats.malformed, 3);
    assert_eq!(b.stats.start_out_of_range, 2);
    assert_eq!(b.max_start, Some(now as u64 + 600));
}

/// A manifest written before the event-time rule, as one u64::MAX and one 8.3e12 record left it:
/// `closed_through` near i64::MAX, a shard `max_start` of u64::MAX, a final file to write for an
/// hour past year 9999, a pending open row of year 4917. Regression (#28 item 1): it opened with
/// an error at every restart (the final file cannot be named), or, without the finalize, kept
/// every later record late. Now it opens repaired and counts the next hours on time.
#[test]
fn manifest_with_impossible_hours_opens_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let open_key = format!("{}00000000000000000007-open.parquet", pending_prefix("flows"));
    let far = 93_000_000_000 / 3600 * 3600; // year 4917: representable, impossible
    let far_row = AggregateRow {
        hour: far,
        src_ip: "10.0.0.1".into(),
        blocked_count: 1,
        unique_dest_count: 1,
        dest_ips: vec!["8.8.8.8".into()],
        ..AggregateRow::default()
    };
    put_rows(store.as_ref(), &open_key, &[far_row]).unwrap();
    let mut m = Manifest {
        version: MANIFEST_VERSION,
        stream: "flows".into(),
        generation: 7,
        closed_through: Some(i64::MAX / 3600 * 3600),
        open_rows: Some(open_key),
        ..Manifest::default()
    };
    m.shards.insert(
        "shardId-0".into(),
        ShardCheckpoint {
            sequence_number: Some("5".into()),
            max_start: Some(u64::MAX),
            ended: false,
        },
    );
    m.finalize.push(Finalize {
        hour: 8_300_000_000_000 / 3600 * 3600,
        name: "consumer-flows.parquet".into(),
        evaluate: true,
    });
    store.put(&manifest_key("flows"), m.to_json()).unwrap();

    let before = now_secs();
    let mut spikes = Vec::new();
    let mut e = Engine::open(History::new(store.clone()), cfg(), &mut spikes).unwrap();
    let after = now_secs();
    let ct = e.closed_through().unwrap();
    assert!(
        (before.div_euclid(3600) * 3600..=after.div_euclid(3600) * 3600).contains(&ct),
        "repaired to the current hour: {ct}"
    );
    let s = e.shard("shardId-0").unwrap();
    assert_eq!((s.sequence_number.as_deref(), s.max_start), (Some("5"), None));
    assert!(e.is_dirty(), "the repair is committed at the next checkpoint");
    // Records of the current hour count on time, and close.
    let cur = after.div_euclid(3600) * 3600 + 3000;
    let lines: Vec<String> = (0..3)
        .map(|i| flow_line("10.0.0.1", &(cur + i).to_string(), &(cur + i).to_string(), "REJECT"))
        .collect();
    e.apply(decoded(6, &lines));
    e.advance(cur + 2 * 3600);
    e.checkpoint(&mut spikes).unwrap();
    assert_eq!(e.stats().late_counted, 0);
    assert_eq!(e.stats().hours_closed, 1);
    let rows = history_rows(store.clone());
    assert_eq!(rows.len(), 1, "no file for the impossible hours: {rows:?}");
    assert_eq!((rows[0].hour, rows[0].blocked_count), (cur - 3000, 3));
    Engine::open(History::new(store), cfg(), &mut spikes).unwrap();
}

/// The repaired `closed_through` never lets an hour that already has a file (ahead of the clock)
/// be closed again: a second close would replace the first file.
#[test]
fn repaired_closed_through_stays_after_files_ahead_of_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let now = BASE + 100 * 3600 + 1800;
    let history = History::new(store.clone());
    history
        .write_hour_file(BASE + 102 * 3600, &Columns::default(), "consumer-flows.parquet")
        .unwrap();
    // Past the bound: ignored (it would keep detection off until that hour).
    history
        .write_hour_file(BASE + 900 * 3600, &Columns::default(), "consumer-flows.parquet")
        .unwrap();
    let m = Manifest {
        version: MANIFEST_VERSION,
        stream: "flows".into(),
        closed_through: Some(9_300_000_000_000),
        ..Manifest::default()
    };
    store.put(&manifest_key("flows"), m.to_json()).unwrap();
    let e = Engine::open_at(history, cfg(), &mut Vec::new(), now).unwrap();
    assert_eq!(e.closed_through(), Some(BASE + 103 * 3600));
    // A plausible closed_through (ahead of the clock by less than the slack) is kept.
    let m = Manifest { closed_through: Some(BASE + 110 * 3600), ..m };
    store.put(&manifest_key("flows"), m.to_json()).unwrap();
    let e = Engine::open_at(History::new(store), cfg(), &mut Vec::new(), now).unwrap();
    assert_eq!(e.closed_through(), Some(BASE + 110 * 3600));
    assert!(!e.is_dirty());
}

mod poison {
    use super::*;
    use proptest::prelude::*;

    /// The decoder's clock in the property test.
    const NOW: i64 = BASE + 40 * 3600;
    const SLACK: i64 = flowspike_counter::DEFAULT_MAX_FUTURE_SECS as i64;

    /// `start`/`end` values of hostile or careless records, as text.
    fn hostile_time() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("-9223372036854775808".to_string()),
            Just("9223372036854775808".to_string()), // i64::MAX + 1
            Just(u64::MAX.to_string()),
            Just("18446744073709551616".to_string()), // u64::MAX + 1
            Just("8300000000000".to_string()),
            Just("9300000000000".to_string()),
            Just("253402300799".to_string()), // 9999-12-31T23:59:59Z
            Just("253402300800".to_string()),
            Just((NOW + SLACK).to_string()),     // just inside
            Just((NOW + SLACK + 1).to_string()), // just past
            (0..=u64::MAX).prop_map(|v| v.to_string()),
            (BASE - 3600..NOW + SLACK + 7200).prop_map(|v| v.to_string()),
        ]
    }

    /// One record: `(src, start, end, reject)`.
    type Rec = (&'static str, String, String, bool);

    fn valid_traffic() -> impl Strategy<Value = Vec<Rec>> {
        proptest::collection::vec(
            (0..3usize, 0i64..8 * 3600, any::<bool>()).prop_map(|(s, off, reject)| {
                let src = ["10.0.0.1", "10.0.0.2", "192.168.1.1"][s];
                let t = (BASE + off).to_string();
                (src, t.clone(), t, reject)
            }),
            1..60,
        )
        .prop_map(|mut v| {
            // Mostly in time order, as a stream delivers them.
            v.sort_by_key(|r| r.1.parse::<i64>().unwrap() / 1800);
            v
        })
    }

    /// What a record's `start` and `end` make of it: `Some(start)` when it is a well-formed record
    /// with an accepted event time.
    fn accepted(start: &str, end: &str) -> Option<u64> {
        end.parse::<u64>().ok()?;
        start.parse::<u64>().ok().filter(|s| *s <= (NOW + SLACK) as u64)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any mix of hostile event times into valid traffic, through the consumer's decoder and
        /// engine: the engine never errors, the counts are exactly those of a naive count of the
        /// accepted records, every hour closes, and a restart opens the resulting state.
        #[test]
        fn hostile_event_times_never_poison_the_engine(
            valid in valid_traffic(),
            hostile in proptest::collection::vec(
                (hostile_time(), hostile_time(), any::<bool>(), any::<prop::sample::Index>()),
                0..12,
            ),
            chunk in 1..6usize,
        ) {
            let mut recs = valid;
            for (start, end, reject, at) in hostile {
                // A bad `end` only with a bad `start`: whether a bad field the rule does not
                // read makes a line malformed (and before or after `start` is judged) is the
                // parser's business, not this test's.
                let end = if end.parse::<u64>().is_err() && start.parse::<u64>().is_ok() {
                    "0".to_string()
                } else {
                    end
                };
                recs.insert(at.index(recs.len() + 1), ("10.0.0.3", start, end, reject));
            }
            // The naive count: (hour, src) → records, of accepted REJECT records.
            let mut want: BTreeMap<(i64, String), u64> = BTreeMap::new();
            let mut out_of_range = 0;
            let mut last = BASE;
            for (src, start, end, reject) in &recs {
                match accepted(start, end) {
                    Some(s) => {
                        last = last.max(s as i64);
                        // Every source is internal and 8.8.8.8 external: a REJECT counts.
                        if *reject {
                            *want.entry((s as i64 / 3600 * 3600, src.to_string())).or_default() += 1;
                        }
                    }
                    None => out_of_range += u64::from(start.parse::<u64>().is_ok()),
                }
            }
            let ctx = Pipeline::default();
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
            let mut spikes = Vec::new();
            let mut e = Engine::open(History::new(store.clone()), cfg(), &mut spikes).unwrap();
            for (i, part) in recs.chunks(chunk).enumerate() {
                let data: String = part
                    .iter()
                    .map(|(src, s, t, r)| flow_line(src, s, t, if *r { "REJECT" } else { "ACCEPT" }))
                    .collect();
                let seq = (i + 1).to_string();
                let b = crate::decode::decode_batch_at(
                    &ctx,
                    &DetectionsConfig::none(),
                    "shardId-0",
                    &[crate::RawRecord { sequence_number: &seq, data: data.as_bytes() }],
                    NOW,
                );
                if let Some(m) = b.max_start {
                    prop_assert!(m <= (NOW + SLACK) as u64, "max_start {m} past the bound");
                }
                e.apply(b);
                let wm = global_watermark(
                    [(e.shard("shardId-0").and_then(|c| c.max_start), false)],
                    NOW,
                    LATENESS,
                );
                if let Some(w) = wm {
                    e.advance(w);
                }
                if i % 2 == 1 {
                    e.checkpoint(&mut spikes).unwrap();
                }
            }
            // Event time passes the last accepted record: every hour closes.
            let end = last + 2 * 3600;
            e.advance(end);
            e.checkpoint(&mut spikes).unwrap();
            prop_assert_eq!(e.closed_through(), Some(end / 3600 * 3600));
            prop_assert_eq!(e.stats().start_out_of_range, out_of_range);
            let got: BTreeMap<(i64, String), u64> = history_rows(store.clone())
                .into_iter()
                .filter(|r| r.blocked_count > 0)
                .map(|r| ((r.hour, r.src_ip), r.blocked_count))
                .collect();
            // Every hour with a counted record has its final file, and none is left to write.
            let hours: BTreeSet<i64> =
                History::new(store.clone()).hours().unwrap().into_iter().collect();
            for (h, _) in want.keys() {
                prop_assert!(hours.contains(h), "hour {h} has no file");
            }
            prop_assert_eq!(got, want);
            prop_assert!(e.manifest().finalize.is_empty(), "every final file written");
            // A restart opens the resulting state where it was.
            let e2 = Engine::open(History::new(store.clone()), cfg(), &mut spikes).unwrap();
            prop_assert_eq!(e2.closed_through(), e.closed_through());
        }
    }
}

/// Regression (#28): the repair of a state at open judged it by the clock plus the default slack,
/// not `--max-future-secs`: with a larger slack, a shard `max_start` and a `closed_through` the
/// rule accepts (two days ahead, slack three days) were thrown away as impossible.
#[test]
fn regression_state_repair_uses_the_default_slack() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let now = BASE + 100 * 3600 + 1800;
    let ahead = now + 2 * 24 * 3600;
    let mut m = Manifest {
        version: MANIFEST_VERSION,
        stream: "flows".into(),
        closed_through: Some(ahead.div_euclid(3600) * 3600),
        ..Manifest::default()
    };
    m.shards.insert(
        "shardId-0".into(),
        ShardCheckpoint {
            sequence_number: Some("1".into()),
            max_start: Some(ahead as u64),
            ended: false,
        },
    );
    store.put(&manifest_key("flows"), m.to_json()).unwrap();
    let mut slack = cfg();
    slack.pipeline.rule = slack.pipeline.rule.with_max_future_secs(3 * 24 * 3600);
    let e =
        Engine::open_at(History::new(store.clone()), slack.clone(), &mut Vec::new(), now).unwrap();
    assert_eq!(e.shard("shardId-0").and_then(|s| s.max_start), Some(ahead as u64));
    assert_eq!(e.closed_through(), m.closed_through);
    assert!(!e.is_dirty());
    // Past the configured slack: repaired.
    let far = now + 4 * 24 * 3600;
    m.shards.get_mut("shardId-0").unwrap().max_start = Some(far as u64);
    store.put(&manifest_key("flows"), m.to_json()).unwrap();
    let e = Engine::open_at(History::new(store), slack, &mut Vec::new(), now).unwrap();
    assert_eq!(e.shard("shardId-0").and_then(|s| s.max_start), None);
    assert!(e.is_dirty());
}

/// A history of 240 quiet hours (10.0.0.1: 2 or 3 blocked records an hour, plus a few other
/// sources) before `BASE + 240 h`, the hour the early-alert tests burst in.
fn quiet_history(store: &Arc<dyn Store>) -> i64 {
    let history = History::new(store.clone());
    for h in 0..240i64 {
        let hour = BASE + h * 3600;
        let rows: Vec<AggregateRow> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .enumerate()
            .map(|(i, src)| AggregateRow {
                hour,
                src_ip: (*src).into(),
                blocked_count: 2 + ((h + i as i64) % 2) as u64,
                unique_dest_count: 1,
                dest_ips: vec!["8.8.8.8".into()],
                interface_ids: vec!["eni-1".into()],
                ..AggregateRow::default()
            })
            .collect();
        history.write_hour_file(hour, &rows, "seed.parquet").unwrap();
    }
    BASE + 240 * 3600
}

fn adaptive_cfg() -> EngineConfig {
    let mut c = cfg();
    c.pipeline.detect = DetectConfig::default();
    c
}

/// `n` hits of 10.0.0.1 in `hour`, one a second from `from`.
fn burst(seq: u64, hour: i64, from: i64, n: i64) -> Batch {
    let evs: Vec<Ev> =
        (0..n).map(|i| (hour + from + i, "10.0.0.1", format!("1.2.3.{}", i % 200))).collect();
    batch("shardId-0", seq, &evs)
}

/// Early alert: a burst in the open hour is emitted by the next checkpoint, before the hour
/// closes, marked `early`; the close does not repeat it.
#[test]
fn early_alert_is_emitted_before_the_close_and_not_repeated_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let hour = quiet_history(&store);
    let mut spikes = Vec::new();
    let mut e = Engine::open(History::new(store.clone()), adaptive_cfg(), &mut spikes).unwrap();
    e.apply(burst(1, hour, 0, 3));
    assert!(!e.has_early_alerts(), "an ordinary count alerts nobody");
    e.apply(burst(2, hour, 10, 200));
    assert!(e.has_early_alerts());
    assert!(e.is_dirty());
    e.checkpoint(&mut spikes).unwrap();
    assert_eq!(spikes.len(), 1, "{spikes:?}");
    let s = spikes[0].clone();
    assert!(s.early);
    assert_eq!((s.hour, s.src_ip.as_str(), s.blocked_count), (hour, "10.0.0.1", 203));
    assert!(e.closed_through().is_none_or(|ct| ct <= hour), "emitted while the hour is open");
    assert!(!e.has_early_alerts());
    // More of the burst, then the close: the hour's record has the same id, so nothing new.
    e.apply(burst(3, hour, 400, 100));
    e.checkpoint(&mut spikes).unwrap();
    assert!(e.advance(hour + 3600 + LATENESS));
    e.checkpoint(&mut spikes).unwrap();
    assert_eq!(spikes.len(), 1, "the close repeats the early alert: {spikes:?}");
    assert_eq!(e.stats().spikes_emitted, 1);
    // The final aggregates are the counts, early alert or not.
    let rows = e.history.read_hour(hour).unwrap();
    let r = rows.iter().find(|r| r.src_ip == "10.0.0.1").unwrap();
    assert_eq!(r.blocked_count, 303);
    // And the close's own verdict agrees: the same id flags that hour.
    let mut d = Detector::new(DetectConfig::default());
    warm_detector(&mut d, &e.history.read_range(i64::MIN, hour).unwrap());
    let closed = d.observe_hour(hour, &rows);
    assert!(closed.iter().any(|c| c.id == s.id && !c.early), "{closed:?}");
}

/// Early alert across a restart: the manifest records its id, so neither the reopened engine's
/// next batches nor the hour's close emit it again.
#[test]
fn early_alert_is_not_repeated_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let hour = quiet_history(&store);
    let mut first = Vec::new();
    let mut e = Engine::open(History::new(store.clone()), adaptive_cfg(), &mut first).unwrap();
    e.apply(burst(1, hour, 0, 200));
    e.checkpoint(&mut first).unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].early);
    drop(e);
    let mut second = Vec::new();
    let mut e = Engine::open(History::new(store.clone()), adaptive_cfg(), &mut second).unwrap();
    e.apply(burst(2, hour, 300, 100));
    assert!(!e.has_early_alerts(), "already emitted before the restart");
    e.checkpoint(&mut second).unwrap();
    assert!(e.advance(hour + 3600 + LATENESS));
    e.checkpoint(&mut second).unwrap();
    assert!(second.is_empty(), "repeated after the restart: {second:?}");
    let rows = e.history.read_hour(hour).unwrap();
    assert_eq!(rows.iter().find(|r| r.src_ip == "10.0.0.1").unwrap().blocked_count, 300);
}

/// Window (and splunk) mode has no early alerts: the burst is reported at the close only.
#[test]
fn window_mode_emits_nothing_early() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let hour = quiet_history(&store);
    let mut spikes = Vec::new();
    let mut e = Engine::open(History::new(store.clone()), cfg(), &mut spikes).unwrap();
    e.apply(burst(1, hour, 0, 200));
    assert!(!e.has_early_alerts());
    e.checkpoint(&mut spikes).unwrap();
    assert!(spikes.is_empty(), "{spikes:?}");
    assert!(e.advance(hour + 3600 + LATENESS));
    e.checkpoint(&mut spikes).unwrap();
    assert_eq!(spikes.len(), 1);
    assert!(!spikes[0].early);
    assert_eq!(spikes[0].src_ip, "10.0.0.1");
}
