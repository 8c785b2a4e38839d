//! The other detections in the engine: a vertical scan, a sweep and threat-list matches spread
//! over batches and checkpoints, a kill without a clean stop, and the result compared with an
//! uninterrupted run and with replay's way of running them (one set of taps over every record).

use std::sync::Arc;

use flowlog::for_each_record;
use flowspike_counter::{CountSink, Counter, CounterConfig, Pipeline, Rule};
use flowspike_detections::fixtures::{self, line};
use flowspike_detections::{Taps, WithTaps};
use flowspike_history::{LocalStore, Store};

use super::*;

const BASE: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
const LATENESS: i64 = 600;
/// The decoder's clock: a day after the records (all within the event-time bounds).
const NOW: i64 = BASE + 24 * 3600;
const LINES_PER_BATCH: usize = 37;

/// A spike and finding sink that keeps both.
#[derive(Default)]
struct Collect {
    spikes: Vec<Spike>,
    findings: Vec<Finding>,
}

impl SpikeSink for Collect {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        self.spikes.extend_from_slice(spikes);
        Ok(())
    }

    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
        self.findings.extend_from_slice(findings);
        Ok(())
    }
}

/// The other engine tests' settings (window mode, lateness [`LATENESS`]) with the detections on.
fn cfg() -> EngineConfig {
    EngineConfig { detections: fixtures::config(), ..super::tests::cfg() }
}

/// The records as batches of one shard, sequence numbers from 1.
fn batches(recs: &[String]) -> Vec<Batch> {
    let dc = fixtures::config();
    recs.chunks(LINES_PER_BATCH)
        .enumerate()
        .map(|(i, c)| {
            let data = c.concat();
            let seq = (i + 1).to_string();
            let raw = [crate::RawRecord { sequence_number: &seq, data: data.as_bytes() }];
            crate::decode::decode_batch_at(&Pipeline::default(), &dc, "shardId-0", &raw, NOW)
        })
        .collect()
}

/// Applies batches `from..` of `all` (the batch with sequence number `from + 1` first), moving
/// event time after each, checkpointing after every 5th; stops after applying `stop_after`
/// batches in all (`None`: every batch, then closes every hour).
fn drive(
    e: &mut Engine,
    sink: &mut Collect,
    all: &[Batch],
    from: usize,
    stop_after: Option<usize>,
) {
    for (i, b) in all.iter().enumerate().skip(from) {
        if stop_after.is_some_and(|n| i >= n) {
            return;
        }
        e.apply(b.clone());
        let wm = e.shard("shardId-0").and_then(|s| s.max_start).unwrap() as i64 - LATENESS;
        e.advance(wm);
        if (i + 1) % 5 == 0 {
            e.checkpoint(sink).unwrap();
        }
    }
    e.advance(BASE + 10 * 3600);
    e.checkpoint(sink).unwrap();
}

fn open(store: &Arc<dyn Store>, sink: &mut Collect) -> Engine {
    Engine::open(History::new(store.clone()), cfg(), sink).unwrap()
}

/// Replay's way: one set of taps over every record, finished, written and evaluated at once.
fn replay_like(recs: &[String], store: &dyn Store) -> Vec<Finding> {
    let dc = fixtures::config();
    let rule = Rule::default();
    let mut taps = Taps::new(&dc);
    let hits = WithTaps { counter: Counter::new(CounterConfig::default()), taps: &mut taps };
    let mut sink = CountSink::new(&rule, hits);
    for_each_record(recs.concat().as_bytes(), &flowlog::DecodeOptions::default(), &mut sink)
        .unwrap();
    let out = taps.finish();
    let hours: Vec<i64> = out.hours.keys().copied().collect();
    for h in &hours {
        out.write_hour(&dc, store, *h, "consumer-flows.parquet").unwrap();
    }
    out.evaluate(&dc, store, &hours).unwrap()
}

fn sorted(mut f: Vec<Finding>) -> Vec<Finding> {
    f.sort_by(|a, b| a.id.cmp(&b.id));
    f
}

/// A scan and a sweep spread over batches and checkpoints, killed after a checkpoint (with
/// batches applied after it, lost with the process), reopened and fed the rest: the tables and
/// findings equal those of an uninterrupted run and of replay over the same records, and no
/// finding is delivered twice.
#[test]
fn detections_survive_a_kill_and_equal_an_uninterrupted_run_and_replay() {
    let recs = fixtures::records(BASE);
    let all = batches(&recs);
    assert!(all.len() > 25, "{} batches", all.len());
    assert!(all.iter().all(|b| b.taps.is_some()));

    let whole_dir = tempfile::tempdir().unwrap();
    let whole_store: Arc<dyn Store> = Arc::new(LocalStore::new(whole_dir.path()));
    let mut whole_sink = Collect::default();
    let mut e = open(&whole_store, &mut whole_sink);
    drive(&mut e, &mut whole_sink, &all, 0, None);
    let whole_stats = e.stats();
    drop(e);

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let mut sink = Collect::default();
    let mut e = open(&store, &mut sink);
    // Two checkpoints in (after batches 5 and 10), three more batches applied, then killed.
    drive(&mut e, &mut sink, &all, 0, Some(13));
    let m = e.manifest().clone();
    assert_eq!(m.version, MANIFEST_VERSION);
    assert!(m.taps.is_some(), "the taps are checkpointed");
    assert_eq!(m.shards["shardId-0"].sequence_number.as_deref(), Some("10"));
    drop(e); // no clean stop
    let mut e = open(&store, &mut sink);
    let resume = e.shard("shardId-0").unwrap().sequence_number.as_deref().unwrap().parse().unwrap();
    assert_eq!(resume, 10);
    drive(&mut e, &mut sink, &all, resume, None);

    // Some findings of each kind the workload holds; none twice; equal to the uninterrupted run.
    let kinds: std::collections::BTreeSet<&str> =
        sink.findings.iter().map(|f| f.detection.as_str()).collect();
    for k in ["port_scan", "port_sweep", "threat_list"] {
        assert!(kinds.contains(k), "{k} missing: {kinds:?}");
    }
    let mut ids: Vec<&str> = sink.findings.iter().map(|f| f.id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a finding delivered twice");
    assert_eq!(sorted(sink.findings.clone()), sorted(whole_sink.findings.clone()));
    assert_eq!(whole_stats.findings_emitted, whole_sink.findings.len() as u64);
    assert_eq!(fixtures::tables(store.as_ref()), fixtures::tables(whole_store.as_ref()));
    assert!(!fixtures::tables(store.as_ref()).is_empty());

    // Replay over the same records: the same tables and findings.
    let replay_dir = tempfile::tempdir().unwrap();
    let replay_store = LocalStore::new(replay_dir.path());
    let replayed = replay_like(&recs, &replay_store);
    assert_eq!(sorted(sink.findings.clone()), sorted(replayed));
    assert_eq!(fixtures::tables(store.as_ref()), fixtures::tables(&replay_store));
    // Nothing of the detections is left pending: every hour finalized, the snapshot empty.
    let m = Manifest::from_json(&store.get(&manifest_key("flows")).unwrap()).unwrap();
    assert!(m.finalize_taps.is_empty());
}

/// Records of an hour already closed are counted as late for the detections, not applied: the
/// closed hour's tables and findings stay as they were.
#[test]
fn late_records_are_counted_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let mut sink = Collect::default();
    let mut e = open(&store, &mut sink);
    let b = |seq: u64, lines: &[String]| {
        let data = lines.concat();
        let seq = seq.to_string();
        let raw = [crate::RawRecord { sequence_number: &seq, data: data.as_bytes() }];
        crate::decode::decode_batch_at(
            &Pipeline::default(),
            &fixtures::config(),
            "shardId-0",
            &raw,
            NOW,
        )
    };
    e.apply(b(1, &[line("10.0.0.7", "198.51.7.1", 443, BASE + 10, "ACCEPT")]));
    e.advance(BASE + 3600 + LATENESS);
    e.checkpoint(&mut sink).unwrap();
    let before = fixtures::tables(store.as_ref());
    assert_eq!(sink.findings.len(), 1, "{:?}", sink.findings);
    e.apply(b(2, &[line("10.0.0.7", "198.51.7.2", 443, BASE + 20, "ACCEPT")]));
    // The scan, volume and threat taps each read the record.
    assert_eq!(e.stats().detections_late_records, 3);
    e.checkpoint(&mut sink).unwrap();
    e.advance(BASE + 5 * 3600);
    e.checkpoint(&mut sink).unwrap();
    assert_eq!(fixtures::tables(store.as_ref()), before, "a closed hour's tables are final");
    assert_eq!(sink.findings.len(), 1);
}

/// A state written before the detections existed (a version-1 manifest naming no taps file)
/// opens with fresh taps, and its next checkpoint writes them.
#[test]
fn a_manifest_without_taps_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
    let old = format!(
        r#"{{"version":1,"stream":"flows","generation":4,"written_at":0,
            "closed_through":{BASE},"shards":{{"shardId-0":{{"sequence_number":"7","max_start":{BASE},"ended":false}}}},
            "open_rows":null,"final_rows":null,"finalize":[],"emitted":{{}}}}"#
    );
    store.put(&manifest_key("flows"), old.into_bytes()).unwrap();
    let mut sink = Collect::default();
    let mut e = open(&store, &mut sink);
    assert_eq!(e.manifest().generation, 4);
    assert_eq!(e.shard("shardId-0").unwrap().sequence_number.as_deref(), Some("7"));
    let data = line("10.0.0.7", "198.51.7.1", 443, BASE + 10, "ACCEPT");
    let raw = [crate::RawRecord { sequence_number: "8", data: data.as_bytes() }];
    e.apply(crate::decode::decode_batch_at(
        &Pipeline::default(),
        &fixtures::config(),
        "shardId-0",
        &raw,
        NOW,
    ));
    e.checkpoint(&mut sink).unwrap();
    let m = Manifest::from_json(&store.get(&manifest_key("flows")).unwrap()).unwrap();
    assert_eq!(m.version, MANIFEST_VERSION);
    assert!(m.taps.is_some());
    // Reopened from the new manifest, the open hour's taps are back.
    drop(e);
    let e = open(&store, &mut sink);
    assert_eq!(e.taps.hours().into_iter().collect::<Vec<_>>(), vec![BASE]);
}
