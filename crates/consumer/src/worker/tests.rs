use std::collections::BTreeMap;

use flowspike_counter::{hour_of, merge_rows, CounterConfig, Hit, Pipeline};
use flowspike_detect::{DetectConfig, Spike};
use flowspike_history::LocalStore;
use flowspike_lease::MemTable;

use super::*;

const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const LATENESS: i64 = 60;
/// The wall clock of the commits: well after the test data, so the clock does not hold event
/// time back unless a test means it to.
const NOW: i64 = BASE + 30 * 24 * HOUR;

/// A worker's settings in these tests (window mode, blocked spike only); the detections' tests
/// (`detections/tests.rs`) turn the others on.
pub(super) fn cfg(id: &str) -> WorkerConfig {
    WorkerConfig {
        stream: "flows".into(),
        worker_id: id.into(),
        allowed_lateness_secs: LATENESS,
        failover: Duration::from_secs(3600),
        max_leases: 99,
        claim_takeover: Duration::from_secs(3600),
        idle_shard_after: Duration::from_secs(3600),
        pipeline: Pipeline {
            detect: DetectConfig {
                min_points: 3,
                ..DetectConfig::for_mode(flowspike_detect::Mode::Window)
            },
            ..Pipeline::default()
        },
        detections: DetectionsConfig::none(),
    }
}

/// A batch of `n` hits of `src` at `start`, ending at sequence number `seq`.
fn batch(shard: &str, seq: u64, start: i64, src: &str, n: u64) -> Batch {
    let mut counter = Counter::new(CounterConfig::default());
    for i in 0..n {
        counter.add(&Hit {
            hour: hour_of(start as u64).unwrap(),
            src: src.parse().unwrap(),
            dst: format!("8.8.8.{}", i % 200).parse().unwrap(),
            interface_id: Some(b"eni-1"),
            bytes: 40,
            packets: 1,
        });
    }
    Batch {
        shard_id: shard.into(),
        last_sequence_number: Some(seq.to_string()),
        counter,
        taps: None,
        max_start: Some(start as u64),
        stats: Stats { counted: n, ..Stats::default() },
        ended: false,
    }
}

struct Group {
    table: Arc<MemTable>,
    dir: tempfile::TempDir,
}

impl Group {
    fn new(shards: &[&str]) -> Group {
        let table = Arc::new(MemTable::new());
        for s in shards {
            table.create_lease(s, &[]).unwrap();
        }
        Group { table, dir: tempfile::tempdir().unwrap() }
    }
    fn history(&self) -> History {
        History::new(Arc::new(LocalStore::new(self.dir.path())))
    }
    fn worker(&self, id: &str) -> Worker {
        Worker::new(cfg(id), self.table.clone(), self.history())
    }
    /// Sum of every file of every hour: (hour, src) → blocked_count.
    fn totals(&self) -> BTreeMap<(i64, String), u64> {
        let h = self.history();
        let mut out = BTreeMap::new();
        for hour in h.hours().unwrap() {
            for r in merge_rows(h.read_hour(hour).unwrap(), 1000).unwrap() {
                *out.entry((r.hour, r.src_ip.to_string())).or_default() += r.blocked_count;
            }
        }
        out
    }
}

/// `a` takes both leases of a two-shard group, `b` steals one, `a` learns it at its renewal;
/// returns the shard of each.
fn share(a: &mut Worker, b: &mut Worker) -> (String, String) {
    let now = Instant::now();
    a.acquire(now).unwrap();
    b.acquire(now).unwrap();
    a.renew();
    (a.owned().keys().next().unwrap().clone(), b.owned().keys().next().unwrap().clone())
}

#[test]
fn two_workers_split_the_shards_and_an_hour_is_finalized_once_from_both() {
    let g = Group::new(&["s0", "s1"]);
    let (mut a, mut b) = (g.worker("a"), g.worker("b"));
    let now = Instant::now();
    assert_eq!(a.acquire(now).unwrap().len(), 2, "alone, a takes both");
    assert_eq!(b.acquire(now).unwrap().len(), 1, "b steals one");
    let lost = a.renew();
    assert_eq!(lost.len(), 1, "a learns at its renewal");
    let (sa, sb) =
        (a.owned().keys().next().unwrap().clone(), b.owned().keys().next().unwrap().clone());
    assert_ne!(sa, sb);
    // A batch of the lost shard is not a's anymore.
    assert!(!a.apply(batch(&sb, 1, BASE + 10, "10.0.0.9", 5), false));
    // Hours 0..4: 10.0.0.1 sends 3 an hour on a's shard, 10.0.0.2 on b's; hour 4 is a spike of 60.
    let mut seq = 0;
    let mut spikes: Vec<Spike> = Vec::new();
    for h in 0..5 {
        seq += 1;
        let n = if h == 4 { 60 } else { 3 };
        assert!(a.apply(batch(&sa, seq, BASE + h * HOUR + 100, "10.0.0.1", n), false));
        assert!(b.apply(batch(&sb, seq, BASE + h * HOUR + 200, "10.0.0.2", 3), false));
        a.commit(NOW).unwrap();
        b.commit(NOW).unwrap();
    }
    // Event time moves on past hour 4 on both shards (nothing counted).
    for (w, s) in [(&mut a, &sa), (&mut b, &sb)] {
        seq += 1;
        assert!(w.apply(batch(s, seq, BASE + 6 * HOUR, "10.0.0.1", 0), false));
        w.commit(NOW).unwrap();
    }
    // Both finalize; each hour is claimed once, in order.
    for _ in 0..3 {
        a.acquire(now).unwrap();
        a.finalize(&mut spikes, 0).unwrap();
        b.acquire(now).unwrap();
        b.finalize(&mut spikes, 0).unwrap();
    }
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.hours.len(), 5, "{:?}", snap.hours);
    assert!(snap.hours.values().all(|c| c.state == HourState::Done));
    assert!(snap.deltas.is_empty(), "drained deltas are deleted: {:?}", snap.deltas);
    assert_eq!(a.stats().hours_closed + b.stats().hours_closed, 5);
    let totals = g.totals();
    for h in 0..5 {
        let hour = BASE + h * HOUR;
        assert_eq!(totals[&(hour, "10.0.0.1".into())], if h == 4 { 60 } else { 3 });
        assert_eq!(totals[&(hour, "10.0.0.2".into())], 3);
    }
    assert_eq!(spikes.len(), 1, "{spikes:?}");
    assert_eq!(spikes[0].src_ip.to_string(), "10.0.0.1");
    assert_eq!(spikes[0].blocked_count, 60);
    // One final file per hour, no leftovers under the pending prefix.
    let h = g.history();
    for hour in h.hours().unwrap() {
        assert_eq!(h.hour_files(hour).unwrap().len(), 1);
    }
}

#[test]
fn a_fenced_worker_commits_nothing_and_the_new_owner_rereads() {
    let g = Group::new(&["s0"]);
    let mut a = g.worker("a");
    let t0 = Instant::now();
    a.acquire(t0).unwrap();
    assert!(a.apply(batch("s0", 1, BASE + 10, "10.0.0.1", 4), false));
    a.commit(NOW).unwrap();
    // a then reads 7 more but stalls; b takes the lease after the failover time.
    assert!(a.apply(batch("s0", 2, BASE + 20, "10.0.0.1", 7), false));
    let mut b = Worker::new(
        WorkerConfig { failover: Duration::from_millis(1), ..cfg("b") },
        g.table.clone(),
        g.history(),
    );
    b.acquire(t0).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.acquire(Instant::now()).unwrap(), ["s0"]);
    assert_eq!(b.owned()["s0"].checkpoint, Checkpoint::After("1".into()), "from a's commit");
    let ch = a.commit(NOW).unwrap();
    assert_eq!(ch.lost, ["s0"], "a's commit is fenced");
    assert!(a.owned().is_empty());
    // b reads the 7 again and commits them: counted once.
    assert!(b.apply(batch("s0", 2, BASE + 20, "10.0.0.1", 7), false));
    b.commit(NOW).unwrap();
    let snap = g.table.snapshot().unwrap();
    let mut total = 0;
    for d in snap.deltas.values() {
        for r in read_rows(g.history().store().as_ref(), &d.file).unwrap() {
            total += r.blocked_count;
        }
    }
    assert_eq!(total, 11);
    assert_eq!(snap.leases["s0"].checkpoint, Checkpoint::After("2".into()));
    // Self-fencing: a lease not renewed within the failover time is dropped.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(b.self_fence(Instant::now()), ["s0"]);
}

#[test]
fn rows_committed_after_an_hour_is_claimed_become_a_correction() {
    let g = Group::new(&["s0"]);
    let mut a = g.worker("a");
    a.acquire(Instant::now()).unwrap();
    let mut spikes: Vec<Spike> = Vec::new();
    assert!(a.apply(batch("s0", 1, BASE + 10, "10.0.0.1", 2), false));
    a.commit(NOW).unwrap();
    assert!(a.apply(batch("s0", 2, BASE + 2 * HOUR, "10.0.0.1", 0), false));
    a.commit(NOW).unwrap();
    a.acquire(Instant::now()).unwrap();
    a.finalize(&mut spikes, 0).unwrap();
    assert_eq!(a.stats().hours_closed, 1);
    // A late record of hour 0.
    assert!(a.apply(batch("s0", 3, BASE + 20, "10.0.0.1", 5), false));
    a.commit(NOW).unwrap();
    a.acquire(Instant::now()).unwrap();
    a.finalize(&mut spikes, 0).unwrap();
    assert_eq!(a.stats().corrections, 1);
    assert_eq!(g.totals()[&(BASE, "10.0.0.1".into())], 7);
    assert_eq!(g.history().hour_files(BASE).unwrap().len(), 2);
    assert!(g.table.snapshot().unwrap().deltas.is_empty());
}

#[test]
fn a_restarted_worker_with_the_same_id_takes_its_leases_back_at_once() {
    let g = Group::new(&["s0", "s1"]);
    let mut a = g.worker("a");
    a.acquire(Instant::now()).unwrap();
    assert!(a.apply(batch("s0", 5, BASE + 10, "10.0.0.1", 2), false));
    a.commit(NOW).unwrap();
    drop(a); // killed: the table still names "a" as the owner
    let mut again = g.worker("a");
    let mut taken = again.acquire(Instant::now()).unwrap();
    taken.sort();
    assert_eq!(taken, ["s0", "s1"]);
    assert_eq!(again.owned()["s0"].checkpoint, Checkpoint::After("5".into()));
}

/// A table whose commits fail with an unknown outcome: applied (`apply`) or not, then an error.
struct Uncertain {
    inner: MemTable,
    apply: bool,
    fail: std::sync::atomic::AtomicBool,
}

impl LeaseTable for Uncertain {
    fn ensure(&self) -> Result<(), flowspike_lease::LeaseError> {
        self.inner.ensure()
    }
    fn snapshot(&self) -> Result<Snapshot, flowspike_lease::LeaseError> {
        self.inner.snapshot()
    }
    fn create_lease(&self, s: &str, p: &[String]) -> Result<bool, flowspike_lease::LeaseError> {
        self.inner.create_lease(s, p)
    }
    fn take(&self, s: &str, c: u64, o: &str) -> Result<Option<u64>, flowspike_lease::LeaseError> {
        self.inner.take(s, c, o)
    }
    fn renew(&self, s: &str, o: &str, c: u64) -> Result<Option<u64>, flowspike_lease::LeaseError> {
        self.inner.renew(s, o, c)
    }
    fn release(&self, s: &str, o: &str, c: u64) -> Result<bool, flowspike_lease::LeaseError> {
        self.inner.release(s, o, c)
    }
    fn commit(
        &self,
        shards: &[ShardCommit],
        delta: Option<&Delta>,
    ) -> Result<CommitOutcome, flowspike_lease::LeaseError> {
        if !self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return self.inner.commit(shards, delta);
        }
        if self.apply {
            self.inner.commit(shards, delta)?;
        }
        Err(flowspike_lease::LeaseError::Dynamo {
            op: "TransactWriteItems",
            table: "t".into(),
            message: "timeout".into(),
            retryable: true,
        })
    }
    fn claim_hour(&self, c: &HourClaim) -> Result<bool, flowspike_lease::LeaseError> {
        self.inner.claim_hour(c)
    }
    fn take_over_hour(
        &self,
        h: i64,
        so: &str,
        sa: i64,
        o: &str,
        n: i64,
    ) -> Result<bool, flowspike_lease::LeaseError> {
        self.inner.take_over_hour(h, so, sa, o, n)
    }
    fn hour_done(&self, h: i64) -> Result<(), flowspike_lease::LeaseError> {
        self.inner.hour_done(h)
    }
    fn remove_delta_hour(&self, d: &str, h: i64) -> Result<bool, flowspike_lease::LeaseError> {
        self.inner.remove_delta_hour(d, h)
    }
    fn claim_alert(
        &self,
        a: &flowspike_lease::AlertClaim,
    ) -> Result<bool, flowspike_lease::LeaseError> {
        self.inner.claim_alert(a)
    }
    fn alert_sent(&self, id: &str) -> Result<(), flowspike_lease::LeaseError> {
        self.inner.alert_sent(id)
    }
    fn delete(&self, k: &str) -> Result<(), flowspike_lease::LeaseError> {
        self.inner.delete(k)
    }
}

/// A commit whose outcome is unknown (a timeout after DynamoDB applied it, or before) loses
/// nothing and counts nothing twice: the worker forgets its leases and rows and takes the leases
/// again at the positions the table holds.
#[test]
fn a_commit_with_an_unknown_outcome_is_settled_by_taking_the_leases_again() {
    for apply in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let table = Arc::new(Uncertain {
            inner: MemTable::new(),
            apply,
            fail: std::sync::atomic::AtomicBool::new(false),
        });
        table.create_lease("s0", &[]).unwrap();
        let history = History::new(Arc::new(LocalStore::new(dir.path())));
        let mut a = Worker::new(cfg("a"), table.clone(), history.clone());
        a.acquire(Instant::now()).unwrap();
        assert!(a.apply(batch("s0", 1, BASE + 10, "10.0.0.1", 4), false));
        table.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(a.commit(NOW).is_err());
        assert!(a.owned().is_empty(), "every lease and row is forgotten");
        assert_eq!(a.acquire(Instant::now()).unwrap(), ["s0"], "taken back at once");
        let want = if apply { Checkpoint::After("1".into()) } else { Checkpoint::Initial };
        assert_eq!(a.owned()["s0"].checkpoint, want);
        if !apply {
            // The reader starts again from the committed position: the records come again.
            assert!(a.apply(batch("s0", 1, BASE + 10, "10.0.0.1", 4), false));
        }
        a.commit(NOW).unwrap();
        let snap = table.snapshot().unwrap();
        let mut total = 0;
        for d in snap.deltas.values() {
            for r in read_rows(history.store().as_ref(), &d.file).unwrap() {
                total += r.blocked_count;
            }
        }
        assert_eq!(total, 4, "apply = {apply}");
    }
}

/// Claims only move forward: late rows of an hour that closed with no counted row become a
/// correction, never a claim after later hours were evaluated.
#[test]
fn late_rows_of_an_hour_that_closed_empty_are_a_correction() {
    let g = Group::new(&["s0"]);
    let mut a = g.worker("a");
    a.acquire(Instant::now()).unwrap();
    let mut spikes: Vec<Spike> = Vec::new();
    assert!(a.apply(batch("s0", 1, BASE + 10, "10.0.0.1", 2), false));
    assert!(a.apply(batch("s0", 2, BASE + 2 * HOUR + 10, "10.0.0.1", 3), false));
    assert!(a.apply(batch("s0", 3, BASE + 4 * HOUR, "10.0.0.1", 0), false));
    a.commit(NOW).unwrap();
    a.acquire(Instant::now()).unwrap();
    a.finalize(&mut spikes, 0).unwrap();
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.hours.keys().copied().collect::<Vec<_>>(), [BASE, BASE + 2 * HOUR]);
    assert_eq!(snap.frontier, Some(BASE + 2 * HOUR));
    // A late row of hour 1, which closed empty.
    assert!(a.apply(batch("s0", 4, BASE + HOUR + 5, "10.0.0.1", 4), false));
    a.commit(NOW).unwrap();
    a.acquire(Instant::now()).unwrap();
    a.finalize(&mut spikes, 0).unwrap();
    let snap = g.table.snapshot().unwrap();
    assert!(!snap.hours.contains_key(&(BASE + HOUR)), "no claim below the frontier");
    assert!(snap.deltas.is_empty());
    assert_eq!(a.stats().corrections, 1);
    let files = g.history().hour_files(BASE + HOUR).unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].contains("-late-"), "{files:?}");
    assert_eq!(g.totals()[&(BASE + HOUR, "10.0.0.1".into())], 4);
    // A claim below the frontier is refused by the table itself.
    let claim = HourClaim {
        hour: BASE + HOUR,
        owner: "b".into(),
        parts: Vec::new(),
        state: HourState::Claimed,
        claimed_at: 0,
    };
    assert!(!g.table.claim_hour(&claim).unwrap());
}

/// The reader's deadline (lease mode) follows renewals and is withdrawn when the lease is dropped.
#[test]
fn the_reader_deadline_follows_renewals_and_ends_with_the_lease() {
    let g = Group::new(&["s0"]);
    let mut a = Worker::new(
        WorkerConfig { failover: Duration::from_millis(200), ..cfg("a") },
        g.table.clone(),
        g.history(),
    );
    a.acquire(Instant::now()).unwrap();
    let deadline = a.owned()["s0"].deadline.clone();
    let first = deadline.load(Ordering::Acquire);
    assert!(first >= unix_millis() + 100, "about now + failover");
    std::thread::sleep(Duration::from_millis(20));
    assert!(a.renew().is_empty());
    assert!(deadline.load(Ordering::Acquire) > first, "moved forward");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(a.self_fence(Instant::now()), ["s0"]);
    assert_eq!(deadline.load(Ordering::Acquire), 0, "withdrawn: the reader stops at once");
}

/// Regression (#28 item 1): a batch `max_start` past `i64::MAX` (u64::MAX) was cast `as i64` (-1):
/// the shard's watermark stayed below every hour for good, so no hour closed again.
#[test]
fn u64_max_start_does_not_stop_the_hours() {
    let g = Group::new(&["s0"]);
    let mut a = g.worker("a");
    let now = Instant::now();
    a.acquire(now).unwrap();
    let mut poison = batch("s0", 1, BASE + 10, "10.0.0.1", 0);
    poison.max_start = Some(u64::MAX);
    assert!(a.apply(poison, false));
    a.commit(NOW).unwrap();
    for h in 0..3 {
        assert!(a.apply(batch("s0", 2 + h as u64, BASE + h * HOUR + 100, "10.0.0.1", 3), false));
        a.commit(NOW).unwrap();
    }
    assert!(a.apply(batch("s0", 9, BASE + 4 * HOUR, "10.0.0.1", 0), false));
    a.commit(NOW).unwrap();
    let mut spikes: Vec<Spike> = Vec::new();
    for _ in 0..4 {
        a.acquire(now).unwrap();
        a.finalize(&mut spikes, 0).unwrap();
    }
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.hours.len(), 3, "{:?}", snap.hours);
    assert!(snap.hours.values().all(|c| c.state == HourState::Done));
    assert_eq!(snap.leases["s0"].max_start, Some((BASE + 4 * HOUR) as u64));
    let totals = g.totals();
    for h in 0..3 {
        assert_eq!(totals[&(BASE + h * HOUR, "10.0.0.1".into())], 3);
    }
}

/// Regression (#28 item 1): a lease table written before the event-time rule holds
/// `maxStart` = u64::MAX and a watermark far past any real hour (9.3e12). A worker taking that
/// lease kept both: every hour closed at its first commit (partial, later records as
/// corrections). Now both are ignored and hours close on the records' event time.
#[test]
fn impossible_max_start_and_watermark_in_the_lease_table_are_ignored() {
    let g = Group::new(&["s0"]);
    let c = g.table.take("s0", 0, "old").unwrap().unwrap();
    let poisoned = ShardCommit {
        shard_id: "s0".into(),
        owner: "old".into(),
        counter: c,
        checkpoint: flowspike_lease::Checkpoint::After("1".into()),
        max_start: Some(u64::MAX),
        watermark: Some(9_300_000_000_000),
    };
    assert_eq!(g.table.commit(&[poisoned], None).unwrap(), CommitOutcome::Done);
    assert!(g.table.release("s0", "old", c + 1).unwrap());

    let mut b = g.worker("b");
    let now = Instant::now();
    assert_eq!(b.acquire(now).unwrap(), ["s0"]);
    let mut spikes: Vec<Spike> = Vec::new();
    assert!(b.apply(batch("s0", 2, BASE + 100, "10.0.0.1", 3), false));
    b.commit(NOW).unwrap();
    b.acquire(now).unwrap();
    b.finalize(&mut spikes, 0).unwrap();
    let snap = g.table.snapshot().unwrap();
    assert!(snap.hours.is_empty(), "hour 0 is still open: {:?}", snap.hours);
    assert_eq!(snap.leases["s0"].max_start, Some(BASE as u64 + 100));
    // More records of hour 0, then event time passes it: one on-time close with all of them.
    assert!(b.apply(batch("s0", 3, BASE + 200, "10.0.0.1", 2), false));
    assert!(b.apply(batch("s0", 4, BASE + 2 * HOUR, "10.0.0.1", 0), false));
    b.commit(NOW).unwrap();
    for _ in 0..2 {
        b.acquire(now).unwrap();
        b.finalize(&mut spikes, 0).unwrap();
    }
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.hours.len(), 1, "{:?}", snap.hours);
    assert_eq!(b.stats().corrections, 0, "{:?}", b.stats());
    assert_eq!(g.totals()[&(BASE, "10.0.0.1".into())], 5);
}

/// Regression (#28): the lease worker's watermark was not capped by the clock as the single-task
/// engine's `live_watermark` is: one record stamped ahead of the clock (accepted within
/// `--max-future-secs`) closed the current hour at the next commit, and every on-time record of
/// it after that became a late correction.
#[test]
fn regression_lease_watermark_is_not_clock_capped() {
    let g = Group::new(&["s0"]);
    let mut a = g.worker("a");
    let now = Instant::now();
    a.acquire(now).unwrap();
    let clock = BASE + 1800; // half past hour 0
    assert!(a.apply(batch("s0", 1, BASE + 100, "10.0.0.1", 3), false));
    // Three hours ahead of the clock: accepted (the slack is a day), but no reason to close.
    assert!(a.apply(batch("s0", 2, BASE + 3 * HOUR, "10.0.0.1", 0), false));
    a.commit(clock).unwrap();
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.leases["s0"].watermark, Some(clock - LATENESS), "never past the clock");
    let mut spikes: Vec<Spike> = Vec::new();
    a.acquire(now).unwrap();
    a.finalize(&mut spikes, clock).unwrap();
    assert!(g.table.snapshot().unwrap().hours.is_empty(), "hour 0 is still open");
    // On-time records of hour 0 still count in its final file, not as a correction.
    assert!(a.apply(batch("s0", 3, BASE + 1700, "10.0.0.1", 2), false));
    let later = BASE + HOUR + LATENESS;
    a.commit(later).unwrap();
    for _ in 0..2 {
        a.acquire(now).unwrap();
        a.finalize(&mut spikes, later).unwrap();
    }
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.hours.keys().copied().collect::<Vec<_>>(), [BASE], "{:?}", snap.hours);
    assert_eq!(a.stats().corrections, 0, "{:?}", a.stats());
    assert_eq!(g.totals()[&(BASE, "10.0.0.1".into())], 5);
}

/// Regression (#28): in lease mode nothing reported the source cap: the records a worker's
/// deltas dropped, and those dropped when the workers' deltas of an hour are summed, were in no
/// count (`flowspike_records_over_source_cap_total`) and no warning.
#[test]
fn regression_lease_mode_does_not_report_the_source_cap() {
    let g = Group::new(&["s0", "s1"]);
    let capped = |id: &str| {
        let mut c = cfg(id);
        c.pipeline.counter.max_sources_per_hour = 2;
        Worker::new(c, g.table.clone(), g.history())
    };
    let (mut a, mut b) = (capped("a"), capped("b"));
    let (sa, sb) = share(&mut a, &mut b);
    let now = Instant::now();
    // a: three sources, the highest (4 records) past the cap of its own delta.
    assert!(a.apply(batch(&sa, 1, BASE + 100, "10.0.0.1", 3), false));
    assert!(a.apply(batch(&sa, 2, BASE + 200, "10.0.0.5", 4), false));
    assert!(a.apply(batch(&sa, 3, BASE + 300, "10.0.0.2", 3), false));
    // b: one source, within its delta's cap but past the hour's once the deltas are summed.
    assert!(b.apply(batch(&sb, 1, BASE + 400, "10.0.0.3", 2), false));
    a.commit(NOW).unwrap();
    b.commit(NOW).unwrap();
    for (w, s) in [(&mut a, &sa), (&mut b, &sb)] {
        assert!(w.apply(batch(s, 9, BASE + 2 * HOUR, "10.0.0.1", 0), false));
        w.commit(NOW).unwrap();
    }
    let mut spikes: Vec<Spike> = Vec::new();
    for _ in 0..2 {
        for w in [&mut a, &mut b] {
            w.acquire(now).unwrap();
            w.finalize(&mut spikes, NOW).unwrap();
        }
    }
    let totals = g.totals();
    assert_eq!(
        totals.keys().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.2"]
    );
    let over = a.stats().records_over_source_cap + b.stats().records_over_source_cap;
    assert_eq!(over, 4 + 2, "a: {:?}, b: {:?}", a.stats(), b.stats());
}

/// Regression (#28): the lease table's values were checked against the clock plus the default
/// slack, not `--max-future-secs`: with a larger slack, a lease's `maxStart` that the rule accepts
/// (two days ahead, slack three days) was thrown away as impossible when the lease was taken.
#[test]
fn regression_lease_table_repair_uses_the_default_slack() {
    let clock = i64::try_from(unix_millis() / 1000).unwrap();
    // A lease committed with `max_start` ahead of the clock, taken over by a worker whose slack is
    // three days; returns the `max_start` it sees.
    let taken_over = |max_start: i64, watermark: Option<i64>| {
        let g = Group::new(&["s0"]);
        let c = g.table.take("s0", 0, "old").unwrap().unwrap();
        let commit = ShardCommit {
            shard_id: "s0".into(),
            owner: "old".into(),
            counter: c,
            checkpoint: flowspike_lease::Checkpoint::After("1".into()),
            max_start: Some(max_start as u64),
            watermark,
        };
        assert_eq!(g.table.commit(&[commit], None).unwrap(), CommitOutcome::Done);
        assert!(g.table.release("s0", "old", c + 1).unwrap());
        let mut c = cfg("b");
        c.pipeline.rule = c.pipeline.rule.with_max_future_secs(3 * 24 * 3600);
        let mut b = Worker::new(c, g.table.clone(), g.history());
        assert_eq!(b.acquire(Instant::now()).unwrap(), ["s0"]);
        let o = &b.owned()["s0"];
        (o.committed_max_start, o.committed_watermark)
    };
    let ahead = clock + 2 * 24 * HOUR;
    assert_eq!(
        taken_over(ahead, Some(clock - LATENESS)),
        (Some(ahead as u64), Some(clock - LATENESS))
    );
    // Past the configured slack: still ignored.
    assert_eq!(taken_over(clock + 4 * 24 * HOUR, None).0, None);
}

/// Regression: a reader stops by itself once its lease deadline passes; a renewal that completed
/// later kept the lease in the worker, which never started a reader again while the stopped one's
/// entry existed: the shard stayed unread and the group never finished (seen as a hang of
/// `faults::lease_workers_through_faults_equal_a_fault_free_run` on a loaded machine).
#[test]
fn regression_reader_stopped_at_the_deadline_keeps_the_lease_unread() {
    let g = Group::new(&["s0", "s1"]);
    let mut a = g.worker("a");
    assert_eq!(a.acquire(Instant::now()).unwrap().len(), 2);
    assert!(a.apply(batch("s0", 1, BASE + 10, "10.0.0.1", 2), false));
    assert!(a.reader_stopped("s0"), "a held lease with a stopped reader is given up");
    assert!(!a.owned().contains_key("s0"));
    assert!(!a.reader_stopped("s0"), "no longer held");
    // Taken again at once (the table says it is ours), from its committed position: the
    // uncommitted rows are read again, not lost and not counted twice.
    assert_eq!(a.acquire(Instant::now()).unwrap(), ["s0"]);
    assert_eq!(a.owned()["s0"].checkpoint, Checkpoint::Initial);
    // A shard read to its end keeps its lease until the end is committed.
    let mut end = batch("s1", 1, BASE + 10, "10.0.0.2", 1);
    end.ended = true;
    assert!(a.apply(end, true));
    assert!(!a.reader_stopped("s1"));
    assert!(a.owned().contains_key("s1"));
}

/// 240 quiet hours in the history (10.0.0.1..4: 2 or 3 blocked records an hour) before
/// `BASE + 240 h`, the hour the early-alert test bursts in; returns that hour.
fn quiet_history(h: &History) -> i64 {
    for i in 0..240i64 {
        let hour = BASE + i * HOUR;
        let rows: Vec<AggregateRow> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .enumerate()
            .map(|(k, src)| AggregateRow {
                hour,
                src_ip: (*src).into(),
                blocked_count: 2 + ((i + k as i64) % 2) as u64,
                unique_dest_count: 1,
                dest_ips: vec!["8.8.8.8".into()],
                interface_ids: vec!["eni-1".into()],
                ..AggregateRow::default()
            })
            .collect();
        h.write_hour_file(hour, &rows, "seed.parquet").unwrap();
    }
    BASE + 240 * HOUR
}

/// Early alerts in lease mode (#30): a burst of one source split over two workers' shards in the
/// open hour is sent once for the group, marked early, before the hour closes (each worker judges
/// its own share; the second finds the alert claimed), and the hour's close, from the merged
/// rows, does not send it again.
#[test]
fn early_alert_is_sent_once_by_the_group_and_not_repeated_at_close() {
    let g = Group::new(&["s0", "s1"]);
    let hour = quiet_history(&g.history());
    let adaptive = |id: &str| {
        let mut c = cfg(id);
        c.pipeline.detect = DetectConfig::default();
        c
    };
    let mut a = Worker::new(adaptive("a"), g.table.clone(), g.history());
    let mut b = Worker::new(adaptive("b"), g.table.clone(), g.history());
    let (sa, sb) = share(&mut a, &mut b);
    let now = Instant::now();
    let mut spikes: Vec<Spike> = Vec::new();
    // The usual count: nobody alerts.
    assert!(a.apply(batch(&sa, 1, hour + 10, "10.0.0.1", 2), false));
    assert!(!a.has_early_alerts(), "an ordinary count alerts nobody");
    // Half of the burst on each worker's shard: each share alone is a clear case.
    assert!(a.apply(batch(&sa, 2, hour + 20, "10.0.0.1", 150), false));
    assert!(b.apply(batch(&sb, 1, hour + 30, "10.0.0.1", 150), false));
    assert!(a.has_early_alerts() && b.has_early_alerts());
    a.send_early(&mut spikes).unwrap();
    b.send_early(&mut spikes).unwrap();
    assert_eq!(spikes.len(), 1, "sent once for the group: {spikes:?}");
    let s = spikes[0].clone();
    assert!(s.early);
    assert_eq!((s.hour, s.src_ip.to_string(), s.blocked_count), (hour, "10.0.0.1".into(), 152));
    assert!(!a.has_early_alerts() && !b.has_early_alerts());
    let snap = g.table.snapshot().unwrap();
    assert!(snap.alerts[&s.id].sent, "{:?}", snap.alerts);
    assert!(snap.hours.is_empty(), "sent while the hour is open");
    // More of the burst, then event time passes the hour on both shards: the close.
    assert!(b.apply(batch(&sb, 2, hour + 400, "10.0.0.1", 100), false));
    a.commit(NOW).unwrap();
    b.commit(NOW).unwrap();
    assert!(a.apply(batch(&sa, 3, hour + 2 * HOUR, "10.0.0.1", 0), false));
    assert!(b.apply(batch(&sb, 3, hour + 2 * HOUR, "10.0.0.1", 0), false));
    a.commit(NOW).unwrap();
    b.commit(NOW).unwrap();
    for w in [&mut a, &mut b] {
        w.acquire(now).unwrap();
        w.finalize(&mut spikes, 0).unwrap();
    }
    let snap = g.table.snapshot().unwrap();
    assert_eq!(snap.hours.get(&hour).map(|c| c.state), Some(HourState::Done));
    assert_eq!(spikes.len(), 1, "the close repeats the early alert: {spikes:?}");
    assert!(snap.alerts.is_empty(), "claims of a finalized hour are deleted: {:?}", snap.alerts);
    assert_eq!(g.totals()[&(hour, "10.0.0.1".to_string())], 402);
}
