//! The other detections in lease mode, on the in-memory lease table, over the workload of
//! `flowspike_detections::fixtures` (the engine's tests run it too): a port scan, a sweep,
//! threat-list matches and outbound volume split across two shards and two workers give exactly
//! the tables and findings of one engine over the same records; a lease lost before its commit
//! loses nothing and counts nothing twice; a claim taken over after a crash writes the same
//! tables and loses no finding; late taps are counted, not applied.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_counter::{Counter, CounterConfig, Pipeline, HOUR};
use flowspike_detect::Spike;
use flowspike_detections::fixtures::{self, line};
use flowspike_detections::{
    Finding, PORT_SCAN_TABLE, PORT_SWEEP_TABLE, THREAT_TABLE, VOLUME_TABLE,
};
use flowspike_engine::{decode_batch_at, Batch, Engine, EngineConfig, EngineError, RawRecord};
use flowspike_engine::{SpikeSink, Stats};
use flowspike_history::{History, LocalStore, Store};
use flowspike_lease::{HourState, LeaseTable, MemTable};

use crate::worker::{Worker, WorkerConfig};

const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
/// The decoders' and commits' clock: well after the records.
const NOW: i64 = BASE + 30 * 24 * HOUR;
const LINES_PER_BATCH: usize = 37;

/// Spikes and findings, as delivered; `fail_findings` refuses the next delivery of findings.
#[derive(Default)]
struct Collect {
    spikes: Vec<Spike>,
    findings: Vec<Finding>,
    fail_findings: bool,
}

impl SpikeSink for Collect {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        self.spikes.extend_from_slice(spikes);
        Ok(())
    }

    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
        if std::mem::take(&mut self.fail_findings) {
            return Err(EngineError::Output { message: "unreachable".into(), retryable: true });
        }
        self.findings.extend_from_slice(findings);
        Ok(())
    }
}

/// The worker tests' settings (window mode) with the detections on.
fn cfg(id: &str) -> WorkerConfig {
    WorkerConfig { detections: fixtures::config(), ..crate::worker::tests::cfg(id) }
}

/// The pipeline of [`cfg`], for the decoders and the reference engine.
fn pipeline() -> Pipeline {
    cfg("").pipeline
}

/// The records of `shard` (every other record: a scan's probes land on both shards), as
/// batches with sequence numbers from 1.
fn batches(recs: &[String], shard: usize) -> Vec<Batch> {
    let mine: Vec<&String> = recs.iter().skip(shard).step_by(2).collect();
    mine.chunks(LINES_PER_BATCH)
        .enumerate()
        .map(|(i, c)| {
            let data: String = c.iter().map(|s| s.as_str()).collect();
            let seq = (i + 1).to_string();
            let raw = [RawRecord { sequence_number: &seq, data: data.as_bytes() }];
            decode_batch_at(&pipeline(), &fixtures::config(), &format!("s{shard}"), &raw, NOW)
        })
        .collect()
}

/// A batch with no record that moves the shard's event time to `start` (closes earlier hours).
fn marker(shard: &str, seq: u64, start: i64) -> Batch {
    Batch {
        shard_id: shard.into(),
        last_sequence_number: Some(seq.to_string()),
        counter: Counter::new(CounterConfig::default()),
        taps: None,
        max_start: Some(start as u64),
        stats: Stats::default(),
        ended: false,
    }
}

/// One engine (a single consumer) over both shards' batches: its findings (by id) and the
/// store its tables are in.
fn one_engine(recs: &[String]) -> (Vec<Finding>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let cfg = EngineConfig {
        stream: "flows".into(),
        allowed_lateness_secs: cfg("").allowed_lateness_secs,
        pipeline: pipeline(),
        detections: fixtures::config(),
    };
    let mut sink = Collect::default();
    let mut e = Engine::open(History::new(store), cfg, &mut sink).unwrap();
    for b in batches(recs, 0).into_iter().chain(batches(recs, 1)) {
        e.apply(b);
    }
    e.advance(BASE + 10 * HOUR);
    e.checkpoint(&mut sink).unwrap();
    (sorted(sink.findings), dir)
}

/// Every table hour has one file: a redo overwrote its own.
fn assert_one_file_per_hour(store: &dyn Store) {
    for t in [PORT_SCAN_TABLE, PORT_SWEEP_TABLE, VOLUME_TABLE, THREAT_TABLE] {
        for h in t.hours(store).unwrap() {
            assert_eq!(t.hour_files(store, h).unwrap().len(), 1, "{} {h}", t.name);
        }
    }
}

fn sorted(mut f: Vec<Finding>) -> Vec<Finding> {
    f.sort_by(|a, b| a.id.cmp(&b.id));
    f
}

struct Group {
    table: Arc<MemTable>,
    dir: tempfile::TempDir,
}

impl Group {
    fn new() -> Group {
        let table = Arc::new(MemTable::new());
        for s in ["s0", "s1"] {
            table.create_lease(s, &[]).unwrap();
        }
        Group { table, dir: tempfile::tempdir().unwrap() }
    }
    fn store(&self) -> Arc<dyn Store> {
        Arc::new(LocalStore::new(self.dir.path()))
    }
    fn worker_with(&self, cfg: WorkerConfig) -> Worker {
        Worker::new(cfg, self.table.clone(), History::new(self.store()))
    }
    /// True when every delta is drained and every claimed hour is done.
    fn drained(&self) -> bool {
        let snap = self.table.snapshot().unwrap();
        snap.deltas.is_empty() && snap.hours.values().all(|c| c.state == HourState::Done)
    }
}

/// Moves every held shard's event time past the records, commits, and lets the workers
/// finalize in turn until the group has nothing left.
fn close_all(workers: &mut [&mut Worker], g: &Group, sink: &mut Collect, wall: i64) {
    for w in workers.iter_mut() {
        let held: Vec<String> = w.owned().keys().cloned().collect();
        for s in held {
            assert!(w.apply(marker(&s, 1_000_000, BASE + 6 * HOUR), false));
        }
        w.commit(NOW).unwrap();
    }
    for _ in 0..10 {
        for w in workers.iter_mut() {
            w.acquire(Instant::now()).unwrap();
            w.finalize(sink, wall).unwrap();
        }
        if g.drained() {
            return;
        }
    }
    panic!("not drained: {:?}", g.table.snapshot().unwrap());
}

/// Two workers, one shard each, every other record on each: the scan, the sweep, the matches
/// and the volume equal one engine's tables and findings, each finding delivered once.
#[test]
fn a_scan_split_across_two_workers_equals_one_engine() {
    let recs = fixtures::records(BASE);
    let (want, engine_dir) = one_engine(&recs);
    let kinds: std::collections::BTreeSet<&str> =
        want.iter().map(|f| f.detection.as_str()).collect();
    for k in ["port_scan", "port_sweep", "threat_list"] {
        assert!(kinds.contains(k), "{k} missing from the engine's findings: {kinds:?}");
    }

    let g = Group::new();
    let (mut a, mut b) = (g.worker_with(cfg("a")), g.worker_with(cfg("b")));
    let now = Instant::now();
    a.acquire(now).unwrap();
    b.acquire(now).unwrap();
    a.renew();
    let shards = |w: &Worker| w.owned().keys().cloned().collect::<Vec<_>>();
    assert_eq!(shards(&a).len(), 1);
    assert_eq!(shards(&b).len(), 1);
    let (mine_a, mine_b) = (
        batches(&recs, shards(&a)[0].trim_start_matches('s').parse().unwrap()),
        batches(&recs, shards(&b)[0].trim_start_matches('s').parse().unwrap()),
    );
    assert!(mine_a.iter().all(|b| b.taps.is_some()), "decoded with the detections");
    // Interleaved, each committing every 4th batch of its own.
    for i in 0..mine_a.len().max(mine_b.len()) {
        for (w, mine) in [(&mut a, &mine_a), (&mut b, &mine_b)] {
            if let Some(batch) = mine.get(i) {
                assert!(w.apply(batch.clone(), false));
                if i % 4 == 3 {
                    w.commit(NOW).unwrap();
                }
            }
        }
    }
    let mut sink = Collect::default();
    close_all(&mut [&mut a, &mut b], &g, &mut sink, 0);

    assert_eq!(sorted(sink.findings.clone()), want, "the group's findings are one engine's");
    let engine_store = LocalStore::new(engine_dir.path());
    assert_eq!(fixtures::tables(g.store().as_ref()), fixtures::tables(&engine_store));
    assert!(!fixtures::tables(&engine_store).is_empty());
    assert_one_file_per_hour(g.store().as_ref());
    let s = a.stats();
    let t = b.stats();
    assert_eq!(s.findings_emitted + t.findings_emitted, want.len() as u64);
    assert_eq!(s.detections_late_records + t.detections_late_records, 0);
    // No taps file is left: drained deltas take theirs along.
    assert!(g.store().list("consumer/flows/deltas/").unwrap().is_empty());
}

/// `a` reads past its last commit, then loses the lease to `b` (expired) before committing: its
/// commit is fenced and its uncommitted taps dropped with its rows; `b` reads them again from
/// the committed position. The tables and findings equal one engine's: nothing lost, nothing
/// counted twice.
#[test]
fn a_lease_lost_before_its_commit_loses_nothing_and_counts_nothing_twice() {
    let recs = fixtures::records(BASE);
    let (want, engine_dir) = one_engine(&recs);
    let g = Group::new();
    let mut a = g.worker_with(cfg("a"));
    let t0 = Instant::now();
    assert_eq!(a.acquire(t0).unwrap().len(), 2, "alone, a takes both");
    let (s0, s1) = (batches(&recs, 0), batches(&recs, 1));
    for batch in s1.iter().cloned() {
        assert!(a.apply(batch, false));
    }
    for batch in s0[..5].iter().cloned() {
        assert!(a.apply(batch, false));
    }
    a.commit(NOW).unwrap();
    // Seven more batches of s0 (the rest of the scan's hour, the sweep's start), then a stalls.
    for batch in s0[5..12].iter().cloned() {
        assert!(a.apply(batch, false));
    }
    // b steals one at once, and takes the other once it has seen it unrenewed for its failover.
    let mut b = g.worker_with(WorkerConfig { failover: Duration::from_millis(1), ..cfg("b") });
    b.acquire(t0).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    b.acquire(Instant::now()).unwrap();
    assert_eq!(b.owned().keys().collect::<Vec<_>>(), ["s0", "s1"]);
    let ch = a.commit(NOW).unwrap();
    assert_eq!(ch.lost.len(), 2, "a's commit is fenced: {ch:?}");
    assert!(a.owned().is_empty());
    assert_eq!(
        g.table.snapshot().unwrap().leases["s0"].checkpoint,
        flowspike_lease::Checkpoint::After("5".into())
    );
    // b reads s0 again from a's commit.
    for batch in s0[5..].iter().cloned() {
        assert!(b.apply(batch, false));
    }
    b.commit(NOW).unwrap();
    let mut sink = Collect::default();
    close_all(&mut [&mut b], &g, &mut sink, 0);

    assert_eq!(sorted(sink.findings.clone()), want);
    assert_eq!(
        fixtures::tables(g.store().as_ref()),
        fixtures::tables(&LocalStore::new(engine_dir.path()))
    );
    assert_eq!(b.stats().detections_late_records, 0);
    assert_eq!(a.stats().findings_emitted, 0);
}

/// `a` claims the first hour, writes its tables and fails to deliver the findings, then dies;
/// `b` takes the claim over after the takeover time: the same tables (one file each, the same
/// name), and the findings delivered, none lost. Then a late record of a finalized hour is
/// counted for the detections, not applied.
#[test]
fn a_claim_taken_over_after_a_crash_writes_the_same_tables_and_loses_no_finding() {
    let recs = fixtures::records(BASE);
    let (want, engine_dir) = one_engine(&recs);
    let g = Group::new();
    let mut a = g.worker_with(cfg("a"));
    a.acquire(Instant::now()).unwrap();
    for (i, s) in [batches(&recs, 0), batches(&recs, 1)].into_iter().enumerate() {
        for batch in s {
            assert!(a.apply(batch, false));
        }
        assert!(a.apply(marker(&format!("s{i}"), 1_000_000, BASE + 6 * HOUR), false));
    }
    a.commit(NOW).unwrap();
    a.acquire(Instant::now()).unwrap();
    let mut lost_sink = Collect { fail_findings: true, ..Collect::default() };
    assert!(a.finalize(&mut lost_sink, 0).is_err(), "the findings of hour 0 are refused");
    assert!(lost_sink.findings.is_empty());
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.hours[&BASE].state, HourState::Claimed, "left unfinished");
    assert!(
        !fixtures::tables(g.store().as_ref()).is_empty(),
        "the tables of hour 0 were written before the crash"
    );
    drop(a); // killed: its leases and its claim stay in the table

    let takeover = Duration::from_secs(30);
    let mut b = g.worker_with(WorkerConfig { claim_takeover: takeover, ..cfg("b") });
    let mut sink = Collect::default();
    b.acquire(Instant::now()).unwrap();
    b.finalize(&mut sink, 10).unwrap();
    assert!(sink.findings.is_empty(), "not taken over before the takeover time");
    for _ in 0..10 {
        b.acquire(Instant::now()).unwrap();
        b.finalize(&mut sink, 1_000).unwrap();
    }
    assert!(g.drained(), "{:?}", g.table.snapshot().unwrap());
    assert_eq!(sorted(sink.findings.clone()), want, "every finding, once");
    let engine_store = LocalStore::new(engine_dir.path());
    let before = fixtures::tables(g.store().as_ref());
    assert_eq!(before, fixtures::tables(&engine_store));
    assert_one_file_per_hour(g.store().as_ref());

    // A late threat-list flow of hour 0 on a shard b took over (a's leases expired for b).
    let mut c = g.worker_with(WorkerConfig { failover: Duration::from_millis(1), ..cfg("c") });
    c.acquire(Instant::now()).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    c.acquire(Instant::now()).unwrap();
    let shard = c.owned().keys().next().expect("an expired lease").clone();
    let data = line("10.0.0.7", "198.51.7.2", 443, BASE + 20, "ACCEPT");
    let raw = [RawRecord { sequence_number: "2000000", data: data.as_bytes() }];
    assert!(c.apply(decode_batch_at(&pipeline(), &fixtures::config(), &shard, &raw, NOW), false));
    c.commit(NOW).unwrap();
    c.acquire(Instant::now()).unwrap();
    c.finalize(&mut sink, 2_000).unwrap();
    // The scan, volume and threat taps each read the record (the engine counts the same).
    assert_eq!(c.stats().detections_late_records, 3);
    assert_eq!(fixtures::tables(g.store().as_ref()), before, "a finalized hour's tables are final");
    assert_eq!(sorted(sink.findings.clone()), want, "no finding of a late record");
    assert!(g.drained());
}
