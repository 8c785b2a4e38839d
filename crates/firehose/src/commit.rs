//! The coordinator: the one owner of the [`Engine`]; applies decoded requests in groups and answers
//! each only after the checkpoint that contains it (group commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowspike_engine::{live_watermark, Batch, Engine, EngineError, Metrics, SpikeSink};
use tokio::sync::{mpsc, oneshot, watch};

use crate::VIRTUAL_SHARD;

/// Most requests committed by one checkpoint.
pub const MAX_GROUP: usize = 256;
/// How often event time is re-evaluated while no request arrives.
const TICK: Duration = Duration::from_millis(250);
/// Longest wait for in-flight requests after a stop before the final checkpoint.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer to a request: `Ok(true)` applied and committed, `Ok(false)` a retry of a request
/// applied before (committed), `Err` the checkpoint failed (the client should retry).
pub(crate) type Outcome = Result<bool, String>;

/// One decoded request on its way to the coordinator.
pub(crate) struct Job {
    pub(crate) request_id: String,
    pub(crate) batch: Batch,
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// Counts of requests by outcome (answered by the server, applied by the coordinator).
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Requests applied and committed (200).
    pub accepted: AtomicU64,
    /// Retries of an already applied request id (200, not counted again).
    pub duplicates: AtomicU64,
    /// Requests refused as bad (400, 405, 413, 415).
    pub rejected: AtomicU64,
    /// Requests without a valid access key (401).
    pub unauthorized: AtomicU64,
    /// Requests answered 5xx (checkpoint failed, timeout, stopping): Firehose retries them.
    pub failed: AtomicU64,
}

impl RequestStats {
    pub(crate) fn add(counter: &AtomicU64) {
        // Relaxed: independent counters read for the summary after the server stopped.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RequestCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RequestCounts {
            accepted: g(&self.accepted),
            duplicates: g(&self.duplicates),
            rejected: g(&self.rejected),
            unauthorized: g(&self.unauthorized),
            failed: g(&self.failed),
        }
    }
}

/// [`RequestStats`] as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequestCounts {
    /// Requests applied and committed.
    pub accepted: u64,
    /// Retries not counted again.
    pub duplicates: u64,
    /// Bad requests.
    pub rejected: u64,
    /// Requests without a valid access key.
    pub unauthorized: u64,
    /// Requests answered 5xx.
    pub failed: u64,
}

/// The endpoint's own part of its [`RunSummary`] (printed as its `requests` key).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FirehoseCounts {
    /// Requests by outcome.
    pub requests: RequestCounts,
}

/// What a run of the endpoint did: the engine's summary (`kinesis_records` counts Firehose
/// records) with the requests by outcome; it stops only on a signal (no `stopped_by`).
pub type RunSummary = flowspike_engine::RunSummary<FirehoseCounts>;

/// The coordinator's settings and handles.
pub(crate) struct Coordinator<'a> {
    pub(crate) engine: Engine,
    pub(crate) sink: Box<dyn SpikeSink + Send>,
    pub(crate) rt: &'a tokio::runtime::Runtime,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) requests: Arc<RequestStats>,
    pub(crate) lateness: i64,
    pub(crate) idle_after: Duration,
    pub(crate) dedup_window_secs: i64,
}

impl Coordinator<'_> {
    /// Applies and commits requests until every sender is gone (the server stopped) or, once
    /// `stop` is set, [`DRAIN_TIMEOUT`] passed; then a final event-time step and checkpoint.
    pub(crate) fn run(
        mut self,
        mut rx: mpsc::Receiver<Job>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunSummary, EngineError> {
        let mut last_data = Instant::now();
        let mut stop_since: Option<Instant> = None;
        let mut fatal = None;
        let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
        loop {
            match self.rt.block_on(async { tokio::time::timeout(TICK, rx.recv()).await }) {
                Ok(Some(job)) => group.push(job),
                Ok(None) => break, // the server and every connection are gone
                Err(_) => {}       // tick
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.commit_group(&mut group, &mut last_data) {
                fatal = Some(e);
                break;
            }
            if *stop.borrow() {
                let since = *stop_since.get_or_insert_with(Instant::now);
                if since.elapsed() > DRAIN_TIMEOUT + Duration::from_secs(5) {
                    tracing::warn!("requests still in flight after the drain timeout; stopping");
                    break;
                }
            }
        }
        rx.close();
        while let Ok(job) = rx.try_recv() {
            let _ = job.reply.send(Err("server stopping".into()));
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        // Final event-time step and checkpoint: everything applied so far is committed.
        let now = wall_clock_secs();
        if let Some(w) = self.watermark(now, last_data) {
            self.engine.advance(w);
        }
        if self.engine.is_dirty() {
            self.engine.checkpoint(self.sink.as_mut())?;
        }
        self.metrics.publish(&self.engine.stats());
        Ok(RunSummary {
            stats: self.engine.stats(),
            source: FirehoseCounts { requests: self.requests.snapshot() },
            closed_through: self.engine.closed_through(),
            generation: self.engine.manifest().generation,
            stopped_by: None,
        })
    }

    /// The virtual shard's watermark; the idle rule applies only once event time exists.
    fn watermark(&self, now: i64, last_data: Instant) -> Option<i64> {
        let max_start = self.engine.shard(VIRTUAL_SHARD).and_then(|c| c.max_start);
        let idle = max_start.is_some() && last_data.elapsed() >= self.idle_after;
        live_watermark([(max_start, idle)], now, self.lateness)
    }

    /// Applies `group`, advances event time, commits one checkpoint if anything changed and answers
    /// every request of the group. Errors only for a checkpoint failure that is not retryable.
    fn commit_group(
        &mut self,
        group: &mut Vec<Job>,
        last_data: &mut Instant,
    ) -> Result<(), EngineError> {
        let now = wall_clock_secs();
        let mut waiters = Vec::with_capacity(group.len());
        for job in group.drain(..) {
            let records = job.batch.stats.kinesis_records;
            let applied = apply_request(&mut self.engine, &job.request_id, now, job.batch);
            if applied && records > 0 {
                *last_data = Instant::now();
            }
            if !applied {
                tracing::info!(request_id = %job.request_id, "retry of an applied request: not counted again");
            }
            waiters.push((job.reply, applied));
        }
        if let Some(w) = self.watermark(now, *last_data) {
            self.engine.advance(w);
        }
        // Ids older than the dedup window are forgotten: a retry of one would be counted again,
        // so the window is longer than Firehose retries.
        let before = now.saturating_sub(self.dedup_window_secs);
        self.engine.retain_source_positions(|_, applied_at| *applied_at >= before);
        let forgotten = cap_request_ids(&mut self.engine, MAX_REQUEST_IDS);
        if forgotten > 0 {
            tracing::warn!(
                forgotten,
                cap = MAX_REQUEST_IDS,
                "more request ids inside the dedup window than the cap: the oldest are forgotten \
                 (a retry of one of them would be counted again)"
            );
        }
        let result = if self.engine.is_dirty() {
            let started = Instant::now();
            let r = self.engine.checkpoint(self.sink.as_mut());
            tracing::debug!(
                requests = waiters.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                ok = r.is_ok(),
                "group checkpoint"
            );
            r
        } else {
            Ok(())
        };
        self.metrics.publish(&self.engine.stats());
        match result {
            Ok(()) => {
                self.metrics.committed();
                for (reply, applied) in waiters {
                    let _ = reply.send(Ok(applied));
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, requests = waiters.len(), "checkpoint failed");
                // The cause goes to the log, never to the client (it names internal paths and
                // keys): the handler answers a generic 503.
                let msg = e.to_string();
                for (reply, _) in waiters {
                    let _ = reply.send(Err(msg.clone()));
                }
                if e.is_retryable() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// Applies `batch` as request `request_id` unless a request with that id was applied before
/// (committed, or applied and awaiting the next checkpoint); returns false, changing nothing, for
/// such a retry. The Firehose source's position is the set of request ids it applied, each with
/// the second it was applied (`applied_at`), kept by the engine as its source positions and
/// committed with the request's records: after a crash either both or neither are in the state, so
/// a retry is applied exactly once.
pub(crate) fn apply_request(
    engine: &mut Engine,
    request_id: &str,
    applied_at: i64,
    batch: Batch,
) -> bool {
    if engine.source_positions().contains_key(request_id) {
        return false;
    }
    engine.apply_positioned(request_id, applied_at, batch);
    true
}

/// Most request ids remembered for the dedup window. Real Firehose delivery makes a few requests a
/// minute per stream; without a cap an authenticated client sending many tiny requests with unique
/// ids would grow memory and every checkpoint's manifest (up to 128 bytes an id) without bound.
pub(crate) const MAX_REQUEST_IDS: usize = 100_000;

/// Past `cap` remembered ids, forgets the oldest (by `applied_at`) down to 90% of `cap` in one
/// pass, so the cost stays amortised O(1) per request; returns how many were forgotten.
pub(crate) fn cap_request_ids(engine: &mut Engine, cap: usize) -> usize {
    let len = engine.source_positions().len();
    if len <= cap {
        return 0;
    }
    let keep = cap - cap / 10;
    let mut times: Vec<i64> = engine.source_positions().values().copied().collect();
    let drop = len - keep;
    // The `drop`-th oldest time: everything older goes, and of that very time only as many as
    // needed (ids at equal times are forgotten in id order).
    let (_, &mut cutoff, _) = times.select_nth_unstable(drop - 1);
    let mut at_cutoff = drop - engine.source_positions().values().filter(|&&t| t < cutoff).count();
    engine.retain_source_positions(|_, t| {
        if *t < cutoff {
            false
        } else if *t == cutoff && at_cutoff > 0 {
            at_cutoff -= 1;
            false
        } else {
            true
        }
    });
    drop
}

pub(crate) fn wall_clock_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowspike_counter::Pipeline;
    use flowspike_engine::{decode_batch, DetectionsConfig, EngineConfig, RawRecord, Stats};
    use flowspike_history::{History, LocalStore, Store};

    use super::*;

    /// `flowspike serve-firehose` prints its summary as this JSON line: the engine's counts, the
    /// requests by outcome, where event time and the checkpoints stopped; no `stopped_by`.
    #[test]
    fn run_summary_json_is_the_serve_firehose_commands() {
        let requests = RequestCounts { accepted: 2, duplicates: 1, ..RequestCounts::default() };
        let summary = RunSummary {
            stats: Stats { counted: 5, ..Stats::default() },
            source: FirehoseCounts { requests },
            closed_through: None,
            generation: 4,
            stopped_by: None,
        };
        let stats = serde_json::to_string(&summary.stats).unwrap();
        assert!(stats.starts_with(r#"{"kinesis_records":0,"#) && stats.contains(r#""counted":5,"#));
        let requests = r#"{"accepted":2,"duplicates":1,"rejected":0,"unauthorized":0,"failed":0}"#;
        assert_eq!(
            serde_json::to_string(&summary).unwrap(),
            format!(
                r#"{{"stats":{stats},"requests":{requests},"closed_through":null,"generation":4}}"#
            )
        );
    }

    fn batch() -> Batch {
        let ctx = Pipeline::default();
        let line = b"2 123456789012 eni-1 10.0.0.1 8.8.8.8 443 1234 6 1 40 7200 7260 REJECT OK\n";
        let none = DetectionsConfig::none();
        decode_batch(&ctx, &none, VIRTUAL_SHARD, &[RawRecord { sequence_number: "0", data: line }])
    }

    fn engine_cfg() -> EngineConfig {
        EngineConfig {
            stream: "firehose-test".into(),
            allowed_lateness_secs: 600,
            pipeline: Pipeline::default(),
            detections: DetectionsConfig::none(),
        }
    }

    /// A flood of unique request ids inside the dedup window keeps at most the cap, forgetting
    /// the oldest first.
    #[test]
    fn regression_request_ids_grow_without_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let mut e = Engine::open(History::new(store), engine_cfg(), &mut Vec::new()).unwrap();
        for i in 0..1_000 {
            assert!(apply_request(&mut e, &format!("req-{i:04}"), 1_000 + i / 3, batch()));
            cap_request_ids(&mut e, 100);
            assert!(e.source_positions().len() <= 100);
        }
        let kept = e.source_positions();
        assert!(kept.len() >= 90, "{}", kept.len());
        assert!(kept.contains_key("req-0999"), "the newest is kept");
        let oldest_kept = kept.values().min().unwrap();
        assert!(*oldest_kept >= 1_000 + 899 / 3, "only the newest are kept: {oldest_kept}");
        assert!(
            !apply_request(&mut e, "req-0999", 2_000, batch()),
            "a recent retry is still caught"
        );
    }

    /// A retried request id is not applied twice: neither before the checkpoint nor after a
    /// restart from it; a request applied but not committed is applied again after a restart.
    #[test]
    fn retried_request_ids_are_applied_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path()));
        let cfg = engine_cfg();
        let open = || Engine::open(History::new(store.clone()), cfg.clone(), &mut Vec::new());
        let mut e = open().unwrap();
        assert!(apply_request(&mut e, "req-1", 100, batch()));
        assert!(!apply_request(&mut e, "req-1", 101, batch()), "retry before commit");
        e.checkpoint(&mut Vec::new()).unwrap();
        assert!(apply_request(&mut e, "req-2", 102, batch()));
        drop(e); // req-2 never committed

        let mut e = open().unwrap();
        assert!(!apply_request(&mut e, "req-1", 103, batch()), "retry after restart");
        assert!(apply_request(&mut e, "req-2", 104, batch()), "uncommitted: applied");
        assert_eq!(e.stats().counted, 1, "only req-2 counted in this run");
    }
}
