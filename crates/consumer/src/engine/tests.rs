use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowspike_counter::{hour_of, merge_rows, Hit};
use flowspike_history::{LocalStore, Store, StoreError};

use super::*;

const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const LATENESS: i64 = 600;

fn cfg() -> EngineConfig {
    EngineConfig {
        stream: "flows".into(),
        allowed_lateness_secs: LATENESS,
        counter: CounterConfig::default(),
        detect: DetectConfig::default(),
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
    c.counter.max_sources_per_hour = 2;
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
) -> Result<(), ConsumeError> {
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

/// A store that dies (every later call fails) after `budget` successful puts: a crash between
/// any two writes of a checkpoint.
struct Dying {
    inner: LocalStore,
    budget: usize,
    puts: AtomicUsize,
}

impl Store for Dying {
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        if self.puts.fetch_add(1, Ordering::SeqCst) >= self.budget {
            return Err(StoreError::Remote("crashed".into()));
        }
        self.inner.put(key, bytes)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if self.puts.load(Ordering::SeqCst) >= self.budget {
            return Err(StoreError::Remote("crashed".into()));
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
    let counting = Arc::new(Dying {
        inner: LocalStore::new(dir.path()),
        budget: usize::MAX,
        puts: AtomicUsize::new(0),
    });
    let mut spikes = Vec::new();
    let mut e = Engine::open(History::new(counting.clone()), cfg(), &mut spikes).unwrap();
    drive(&mut e, &w, &mut spikes).unwrap();
    let total = counting.puts.load(Ordering::SeqCst);
    assert!(total > 20, "{total}");
    let want_spikes: BTreeSet<String> = spikes.iter().map(|s| s.id.clone()).collect();

    for budget in 0..total {
        let dir = tempfile::tempdir().unwrap();
        let dying = Arc::new(Dying {
            inner: LocalStore::new(dir.path()),
            budget,
            puts: AtomicUsize::new(0),
        });
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

/// A store whose `fail`-th put fails once (a transient S3 error); every other call succeeds.
struct Flaky {
    inner: LocalStore,
    fail: usize,
    puts: AtomicUsize,
}

impl Store for Flaky {
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        if self.puts.fetch_add(1, Ordering::SeqCst) == self.fail {
            return Err(StoreError::Remote("transient".into()));
        }
        self.inner.put(key, bytes)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }
}

#[test]
fn a_failed_checkpoint_write_loses_nothing_when_the_engine_goes_on() {
    let w = workload();
    let expected = expected_rows(&w);
    for fail in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let flaky =
            Arc::new(Flaky { inner: LocalStore::new(dir.path()), fail, puts: AtomicUsize::new(0) });
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
    assert!(matches!(err, ConsumeError::Manifest { .. }), "{err}");
    assert!(!err.is_retryable());
}

/// Push request ids (Firehose): a retry is not applied again, neither before the checkpoint nor
/// after a restart from it; an uncommitted request is forgotten with its records; expired ids go.
#[test]
fn push_request_ids_are_committed_with_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let open = || Engine::open(History::new(store.clone()), cfg(), &mut Vec::new()).unwrap();
    let evs: Vec<Ev> = vec![(BASE + 10, "10.0.0.1", "8.8.8.8".into())];
    let mut e = open();
    assert!(e.apply_request("req-1", 100, batch("firehose", 1, &evs)));
    assert!(!e.apply_request("req-1", 101, batch("firehose", 1, &evs)), "retry before commit");
    e.checkpoint(&mut Vec::new()).unwrap();
    // Applied but never committed (a crash before the checkpoint): gone after the restart.
    assert!(e.apply_request("req-2", 102, batch("firehose", 2, &evs)));
    drop(e);

    let mut e = open();
    assert!(e.knows_request("req-1"));
    assert!(!e.knows_request("req-2"));
    assert!(!e.apply_request("req-1", 103, batch("firehose", 1, &evs)), "retry after restart");
    assert!(e.apply_request("req-2", 104, batch("firehose", 2, &evs)), "uncommitted: applied");
    e.forget_requests_before(104);
    assert_eq!(e.request_count(), 1);
    e.advance(BASE + 7200);
    e.checkpoint(&mut Vec::new()).unwrap();
    assert_eq!(e.manifest().requests.keys().collect::<Vec<_>>(), ["req-2"]);
    let rows = history_rows(store.clone());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].blocked_count, 2, "req-1 once, req-2 once");
}
