//! The consumer's state machine: open hours, event-time closing, checkpoints and their recovery.
//!
//! Synchronous and single-threaded on purpose: every shard batch is applied whole, so the partial
//! aggregates and the shard positions are always consistent with each other, and a checkpoint is a
//! snapshot of both. Nothing here knows about Kinesis; the unit tests drive it with hand-made batches.

use std::collections::{BTreeMap, BTreeSet};

use flowspike_counter::{
    AggregateRow, Columns, Counter, Pipeline, SourceOverflow, TimeBounds, HOUR, MAX_EVENT_TIME,
};
use flowspike_detect::{Detector, Mode, Spike};
use flowspike_detections::{DetectionsConfig, Taps, TapsOutput};
use flowspike_findings::Finding;
use flowspike_history::{decode_parquet, encode_parquet, History, Store, StoreError};

use crate::early::OpenHourJudge;
use crate::manifest::{
    manifest_key, pending_prefix, Finalize, Manifest, ShardCheckpoint, MANIFEST_VERSION,
};
use crate::EngineError;

/// How long the ids of emitted spikes are remembered in the manifest, behind the closed hours.
const EMITTED_MEMORY_SECS: i64 = 7 * 24 * HOUR;

/// Settings of the [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The Kinesis stream (names the state prefix and the final files).
    pub stream: String,
    /// Allowed lateness of event time, in seconds.
    pub allowed_lateness_secs: i64,
    /// The pipeline's settings. The engine uses the counter limits, the detection settings and the
    /// slack of the rule's event times ([`Rule::max_future_secs`](flowspike_counter::Rule::max_future_secs),
    /// `--max-future-secs`), which it also applies to the state read back at open (see
    /// [`Engine::open`]); the sources decode with the rest ([`crate::decode_batch`]).
    pub pipeline: Pipeline,
    /// The detections beside the blocked spike (port scans, sweeps, outbound volume, threat
    /// lists): the engine keeps the open hours' taps, writes the closed hours' tables and emits
    /// their findings; the sources decode with the same value ([`crate::decode_batch`]).
    /// [`DetectionsConfig::none`]: the blocked spike alone, as before these detections.
    pub detections: DetectionsConfig,
}

/// Counts of one batch (one GetRecords response of one shard) or, summed, of a whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Kinesis records read.
    pub kinesis_records: u64,
    /// Data bytes of those Kinesis records, as received (before decompression).
    pub kinesis_bytes: u64,
    /// Flow records decoded.
    pub flow_records: u64,
    /// Flow records counted (blocked outbound).
    pub counted: u64,
    /// Counted records whose hour was already closed (written as correction files).
    pub late_counted: u64,
    /// Damaged lines and records with bad field values (counted and skipped).
    pub malformed: u64,
    /// Of `malformed`: records whose `start` is outside the accepted event times (more than
    /// `--max-future-secs` past the clock, or past 9999-12-31T23:59:59Z).
    #[serde(default)]
    pub start_out_of_range: u64,
    /// Kinesis records that do not decode at all (counted and skipped).
    pub undecodable: u64,
    /// CloudWatch Logs control messages skipped.
    pub control_messages: u64,
    /// Hours closed (final file written).
    pub hours_closed: u64,
    /// Correction files written for late records.
    pub corrections: u64,
    /// Spike records emitted.
    pub spikes_emitted: u64,
    /// Manifests committed.
    pub checkpoints: u64,
    /// Counted records of sources past `--max-sources-per-hour`, not in the history (counted
    /// when their hour closes, or when their late rows are written).
    pub records_over_source_cap: u64,
    /// Findings of the other detections emitted (port scans, sweeps, outbound volume, threat
    /// lists).
    pub findings_emitted: u64,
    /// Records the other detections' taps read of hours already closed: not applied (a closed
    /// hour's tables and findings are final), counted once per tap that read them.
    pub detections_late_records: u64,
    /// Records of sources the port-scan tap dropped past its per-hour key cap (not judged for
    /// scans), counted when their hour closes.
    pub records_over_scan_cap: u64,
}

impl Stats {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Stats) {
        self.kinesis_records += o.kinesis_records;
        self.kinesis_bytes += o.kinesis_bytes;
        self.flow_records += o.flow_records;
        self.counted += o.counted;
        self.late_counted += o.late_counted;
        self.malformed += o.malformed;
        self.start_out_of_range += o.start_out_of_range;
        self.undecodable += o.undecodable;
        self.control_messages += o.control_messages;
        self.hours_closed += o.hours_closed;
        self.corrections += o.corrections;
        self.spikes_emitted += o.spikes_emitted;
        self.checkpoints += o.checkpoints;
        self.records_over_source_cap += o.records_over_source_cap;
        self.findings_emitted += o.findings_emitted;
        self.detections_late_records += o.detections_late_records;
        self.records_over_scan_cap += o.records_over_scan_cap;
    }

    /// Counts what `hour` lost to the source cap and warns about it (once per hour and counter:
    /// when the hour closes or its late rows are written; the lease worker: see `worker.rs`).
    pub fn over_source_cap(&mut self, hour: i64, lost: Option<SourceOverflow>, cap: usize) {
        let Some(o) = lost else { return };
        o.warn(hour, cap);
        self.records_over_source_cap += o.records;
    }
}

/// The result of reading one shard once: aggregates of whole Kinesis records, and the position
/// after them.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The shard.
    pub shard_id: String,
    /// Sequence number of the last Kinesis record in the batch (`None` for an empty batch).
    pub last_sequence_number: Option<String>,
    /// Counted hits of the batch, all hours.
    pub counter: Counter,
    /// What the other detections read of the batch's records, all hours (`None` when only the
    /// blocked spike runs).
    pub taps: Option<Taps>,
    /// Largest accepted `start` among the batch's flow records (see [`crate::decode_batch`]).
    pub max_start: Option<u64>,
    /// Counts.
    pub stats: Stats,
    /// True when the shard is closed and this was its last batch.
    pub ended: bool,
}

/// Where spike records go.
pub trait SpikeSink {
    /// Delivers `spikes` (all or an error: a partial failure is retried inside).
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError>;

    /// Delivers `findings` of the detections beside the blocked spike (port scans, sweeps,
    /// outbound volume, threat lists), with the same all-or-error contract as [`SpikeSink::emit`].
    /// Required, with no default: a sink that forgot findings would drop them silently.
    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError>;
}

/// Collects spikes in memory (tests, embedding).
impl SpikeSink for Vec<Spike> {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        self.extend_from_slice(spikes);
        Ok(())
    }

    /// A list of spikes has no room for findings: they are accepted and dropped (the engine's
    /// tests count spikes; a caller that wants findings uses a sink that keeps them).
    fn emit_findings(&mut self, _: &[Finding]) -> Result<(), EngineError> {
        Ok(())
    }
}

/// The event-time watermark of all shards: the minimum over `shards` of `max_start - lateness`,
/// where an idle shard (caught up and without records for a while) counts as at least
/// `now - lateness` so that a quiet shard does not hold hours open forever. `None` when a busy
/// shard has no event time yet or there is no shard.
pub fn global_watermark(
    shards: impl IntoIterator<Item = (Option<u64>, bool)>,
    now: i64,
    lateness: i64,
) -> Option<i64> {
    let mut min: Option<i64> = None;
    for (max_start, idle) in shards {
        let own = max_start.map(|s| i64::try_from(s).unwrap_or(i64::MAX).saturating_sub(lateness));
        let wm = if idle {
            Some(own.unwrap_or(i64::MIN).max(now.saturating_sub(lateness)))
        } else {
            own
        };
        let wm = wm?;
        min = Some(min.map_or(wm, |m: i64| m.min(wm)));
    }
    min
}

/// [`global_watermark`] for a live service: also never past `now - lateness`, so an hour closes
/// only once the wall clock has passed its end plus the allowed lateness. A record stamped ahead
/// of the clock (accepted up to `--max-future-secs`) then cannot close the current hour early and
/// turn every on-time record after it into a late correction.
pub fn live_watermark(
    shards: impl IntoIterator<Item = (Option<u64>, bool)>,
    now: i64,
    lateness: i64,
) -> Option<i64> {
    global_watermark(shards, now, lateness).map(|w| w.min(now.saturating_sub(lateness)))
}

/// The consumer's state: open hours, late rows, shard positions, the detector; see the crate docs
/// for the checkpoint protocol.
pub struct Engine {
    cfg: EngineConfig,
    history: History,
    manifest: Manifest,
    open: Counter,
    late: Counter,
    closing: BTreeMap<i64, Vec<AggregateRow>>,
    closed_through: Option<i64>,
    shards: BTreeMap<String, ShardCheckpoint>,
    emitted: BTreeMap<String, i64>,
    positions: BTreeMap<String, i64>,
    detector: Detector,
    warmed: bool,
    dirty: bool,
    stats: Stats,
    /// Early alerts of open hours not emitted yet (emitted by the next checkpoint).
    early: Vec<Spike>,
    /// The thresholds of the hour judged early.
    judge: OpenHourJudge,
    /// The other detections' aggregates of the open hours and of the closed hours whose tables
    /// are not written yet (those of `taps_closing` and of the manifest's `finalize_taps`).
    taps: Taps,
    /// Hours closed since the last checkpoint whose tables and findings the next one commits.
    taps_closing: BTreeSet<i64>,
    /// The rows of the hours being finalized, kept until the manifest that records them as
    /// done is committed (a failed write or emission is redone from them).
    closed_taps: TapsOutput,
    /// Ids of the findings already emitted, with their hour (recent hours only).
    emitted_findings: BTreeMap<String, i64>,
    /// The volume detection's detector, warmed through the last hour evaluated (rebuilt from the
    /// table after a restart): an hour's close reads only that hour.
    volume_baseline: flowspike_detections::VolumeBaseline,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stream", &self.cfg.stream)
            .field("generation", &self.manifest.generation)
            .field("closed_through", &self.closed_through)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the state of `cfg.stream` in `history`'s store: a fresh state when there is no
    /// manifest, otherwise the committed one, finishing any final files and spikes the last
    /// checkpoint had committed but not yet written.
    ///
    /// A state written before the event-time rule existed may name hours no accepted record can
    /// hold (a far-future `start` moved `closed_through` or a shard's `max_start`, or left a final
    /// file to write for an hour past 9999): it is repaired, with a warning, never refused (see
    /// `repair_event_times`).
    pub fn open(
        history: History,
        cfg: EngineConfig,
        sink: &mut dyn SpikeSink,
    ) -> Result<Engine, EngineError> {
        Engine::open_at(history, cfg, sink, now_secs())
    }

    /// [`Engine::open`] with the clock reading `now` (unix seconds).
    fn open_at(
        history: History,
        cfg: EngineConfig,
        sink: &mut dyn SpikeSink,
        now: i64,
    ) -> Result<Engine, EngineError> {
        let key = manifest_key(&cfg.stream);
        let manifest = match history.store().get(&key) {
            Ok(bytes) => {
                let m = Manifest::from_json(&bytes)
                    .map_err(|reason| EngineError::Manifest { key: key.clone(), reason })?;
                if m.stream != cfg.stream {
                    return Err(EngineError::Manifest {
                        key,
                        reason: format!("belongs to stream {:?}", m.stream),
                    });
                }
                m
            }
            Err(StoreError::NotFound { .. }) => Manifest {
                version: MANIFEST_VERSION,
                stream: cfg.stream.clone(),
                ..Manifest::default()
            },
            Err(e) => return Err(e.into()),
        };
        let mut manifest = manifest;
        let bounds = TimeBounds::at(now, cfg.pipeline.rule.max_future_secs());
        let repaired = repair_event_times(&mut manifest, &history, bounds, now);
        let mut open = Counter::new(cfg.pipeline.counter);
        if let Some(k) = &manifest.open_rows {
            for row in read_rows(history.store().as_ref(), k)? {
                // Only what can never be written is dropped: a row of a representable hour is
                // kept, whatever the clock (`--max-future-secs` may be larger than the default).
                if !TimeBounds::REPRESENTABLE.accepts_hour(row.hour) {
                    tracing::warn!(
                        key = %k,
                        hour = row.hour,
                        blocked_count = row.blocked_count,
                        "pending row of an impossible hour dropped"
                    );
                    continue;
                }
                open.add_row(&row).map_err(|e| EngineError::Manifest {
                    key: k.clone(),
                    reason: format!("bad pending row: {e}"),
                })?;
            }
        }
        let taps = restore_taps(&history, &manifest, &cfg.detections)?;
        tracing::info!(
            stream = %cfg.stream,
            generation = manifest.generation,
            closed_through = ?manifest.closed_through,
            shards = manifest.shards.len(),
            open_keys = open.len(),
            taps_hours = taps.hours().len(),
            "consumer state opened"
        );
        let mut engine = Engine {
            detector: Detector::new(cfg.pipeline.detect.clone()),
            late: Counter::new(cfg.pipeline.counter),
            open,
            closing: BTreeMap::new(),
            closed_through: manifest.closed_through,
            shards: manifest.shards.clone(),
            emitted: manifest.emitted.clone(),
            positions: manifest.positions.clone(),
            warmed: false,
            // A repaired state is committed at the next checkpoint.
            dirty: repaired,
            stats: Stats::default(),
            early: Vec::new(),
            judge: OpenHourJudge::default(),
            taps,
            taps_closing: BTreeSet::new(),
            closed_taps: TapsOutput::default(),
            emitted_findings: manifest.emitted_findings.clone(),
            volume_baseline: Default::default(),
            manifest,
            history,
            cfg,
        };
        engine.finish(sink)?;
        Ok(engine)
    }

    /// The committed or applied position of `shard`.
    pub fn shard(&self, shard: &str) -> Option<&ShardCheckpoint> {
        self.shards.get(shard)
    }

    /// Every hour before this one is closed.
    pub fn closed_through(&self) -> Option<i64> {
        self.closed_through
    }

    /// Running counts.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The committed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// True when something changed since the last checkpoint.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// True when early alerts wait for a checkpoint to emit them: a source should take one now
    /// rather than at its checkpoint interval (the alert is worth little later).
    pub fn has_early_alerts(&self) -> bool {
        !self.early.is_empty()
    }

    /// The open hour that can be judged early: the earliest open hour, when no earlier hour waits
    /// to be evaluated (closing) and the detector has not been fed it. Only then is the detector's
    /// baseline exactly the one the hour's close will use; a later open hour waits (at an hour's
    /// start, for the lateness of the one before).
    fn early_hour(&self) -> Option<i64> {
        if self.cfg.pipeline.detect.mode != Mode::Adaptive || !self.closing.is_empty() {
            return None;
        }
        if !self.manifest.finalize.is_empty() {
            return None;
        }
        let h = *self.open.hours().first()?;
        if self.closed_through.is_some_and(|ct| h < ct)
            || self.detector.last_hour().is_some_and(|l| h <= l)
        {
            return None;
        }
        Some(h)
    }

    /// Judges the sources `touched` of the open hour `hour` (adaptive mode): each whose running
    /// count reached its threshold is evaluated ([`Detector::evaluate_open`]) and its alert,
    /// unless already emitted or queued, is queued for the next checkpoint.
    fn judge_open(&mut self, hour: i64, touched: Vec<String>) {
        if !self.warmed {
            let from = self.cfg.pipeline.detect.warm_from(hour);
            match self.history.read_range(from, hour) {
                Ok(prior) => {
                    warm_detector(&mut self.detector, &prior);
                    self.warmed = true;
                }
                Err(e) => {
                    // The close warms it again (and fails loudly); early alerts wait for it.
                    tracing::warn!(hour, error = %e, "cannot read the history for early alerts");
                    return;
                }
            }
        }
        let open = &self.open;
        let spikes = self.judge.judge(&self.detector, hour, touched, |src| open.row(hour, src));
        for s in spikes {
            if self.emitted.contains_key(&s.id) || self.early.iter().any(|q| q.id == s.id) {
                continue;
            }
            tracing::info!(hour, src_ip = %s.src_ip, id = %s.id, blocked_count = s.blocked_count, p_value = ?s.p_value, "early spike queued");
            self.early.push(s);
            self.dirty = true;
        }
    }

    /// Emits the queued early alerts not emitted meanwhile (the close of their hour may have
    /// been first, after a failed emission) and commits a manifest that records them as emitted.
    /// Called after a commit: a crash before the emission loses nothing (the hour's close
    /// alerts), one after it and before the commit repeats them (at least once, as at the close).
    fn emit_early(&mut self, sink: &mut dyn SpikeSink) -> Result<(), EngineError> {
        self.early.retain(|s| !self.emitted.contains_key(&s.id));
        if self.early.is_empty() {
            return Ok(());
        }
        sink.emit(&self.early)?;
        for s in std::mem::take(&mut self.early) {
            tracing::info!(hour = s.hour, src_ip = %s.src_ip, id = %s.id, blocked_count = s.blocked_count, "early spike");
            self.emitted.insert(s.id, s.hour);
            self.stats.spikes_emitted += 1;
        }
        let mut m = self.manifest.clone();
        m.generation += 1;
        m.written_at = now_secs();
        m.emitted = self.emitted.clone();
        self.commit(m)
    }

    /// Adds one batch: hits of open hours go to the open counter, hits of closed hours to the late
    /// rows; the shard's position and event time advance.
    ///
    /// Rows of an hour past [`MAX_EVENT_TIME`] and such a `max_start` (impossible in a batch of
    /// [`crate::decode_batch`], which applies the event-time rule) are dropped with an error log.
    pub fn apply(&mut self, mut batch: Batch) {
        let mut stats = batch.stats;
        for h in batch.counter.hours() {
            if !TimeBounds::REPRESENTABLE.accepts_hour(h) {
                let rows = batch.counter.take_hour(h);
                tracing::error!(
                    hour = h,
                    rows = rows.len(),
                    "batch rows of an impossible hour dropped"
                );
            }
        }
        if let Some(m) = batch.max_start.filter(|m| TimeBounds::REPRESENTABLE.check(*m).is_err()) {
            tracing::error!(shard_id = %batch.shard_id, max_start = m, "impossible batch max_start ignored");
            batch.max_start = None;
        }
        // The sources this batch counted, per hour: the only ones whose early verdict can change.
        let touched: Vec<(i64, Vec<String>)> = if self.cfg.pipeline.detect.mode == Mode::Adaptive {
            batch.counter.hours().into_iter().map(|h| (h, batch.counter.sources(h))).collect()
        } else {
            Vec::new()
        };
        let cap = self.cfg.pipeline.counter.max_sources_per_hour;
        if let Some(ct) = self.closed_through {
            for h in batch.counter.hours().into_iter().filter(|h| *h < ct) {
                stats.over_source_cap(h, batch.counter.take_hour_overflow(h), cap);
                for row in batch.counter.take_hour(h) {
                    stats.late_counted += row.blocked_count;
                    if let Err(e) = self.late.add_row(&row) {
                        // Rows made by the counter always merge; keep going if one ever does not.
                        tracing::error!(error = %e, "cannot merge a late row");
                    }
                }
            }
        }
        self.open.merge(batch.counter);
        if let Some(mut taps) = batch.taps.take() {
            if let Some(ct) = self.closed_through {
                // A closed hour's tables and findings are final (docs/detections.md): its late
                // records are counted, not applied.
                let late = taps.take_before(ct).records();
                if late > 0 {
                    tracing::debug!(
                        records = late,
                        closed_through = ct,
                        "detections: late records not applied"
                    );
                    stats.detections_late_records += late;
                }
            }
            self.taps.merge(taps);
        }
        let s = self.shards.entry(batch.shard_id).or_default();
        if let Some(seq) = batch.last_sequence_number {
            s.sequence_number = Some(seq);
            self.dirty = true;
        }
        if let Some(m) = batch.max_start {
            s.max_start = Some(s.max_start.map_or(m, |o| o.max(m)));
        }
        if batch.ended && !s.ended {
            s.ended = true;
            self.dirty = true;
        }
        self.stats.add(&stats);
        if let Some(h) = self.early_hour() {
            if let Some((_, srcs)) = touched.into_iter().find(|(t, _)| *t == h) {
                self.judge_open(h, srcs);
            }
        }
    }

    /// Applies `batch` of a push source together with the source's position `key → value`, which
    /// the engine keeps without interpreting it (the Firehose endpoint: a request id and the second
    /// it was applied). Both are committed by the next [`Engine::checkpoint`], so after a crash
    /// either both or neither are in the state.
    pub fn apply_positioned(&mut self, key: &str, value: i64, batch: Batch) {
        self.positions.insert(key.to_owned(), value);
        self.dirty = true;
        self.apply(batch);
    }

    /// The positions of push sources ([`Engine::apply_positioned`]): the committed ones and those
    /// applied since.
    pub fn source_positions(&self) -> &BTreeMap<String, i64> {
        &self.positions
    }

    /// Forgets the source positions `keep` refuses; the next checkpoint commits the shorter map
    /// (pruning alone does not make a checkpoint necessary).
    pub fn retain_source_positions(&mut self, keep: impl FnMut(&String, &mut i64) -> bool) {
        self.positions.retain(keep);
    }

    /// Closes every open hour that ends at or before `watermark`; returns true if one closed.
    /// Hours close in order and never reopen: later records of a closed hour are late.
    ///
    /// A watermark past [`MAX_EVENT_TIME`] comes from no accepted record: it is ignored (logged).
    pub fn advance(&mut self, watermark: i64) -> bool {
        if watermark > MAX_EVENT_TIME as i64 {
            tracing::error!(watermark, "impossible watermark ignored");
            return false;
        }
        let new_ct = watermark.div_euclid(HOUR) * HOUR;
        if self.closed_through.is_some_and(|ct| new_ct <= ct) {
            return false;
        }
        let mut closed = false;
        let cap = self.cfg.pipeline.counter.max_sources_per_hour;
        for h in self.open.hours().into_iter().filter(|h| *h < new_ct) {
            let lost = self.open.take_hour_overflow(h);
            self.stats.over_source_cap(h, lost, cap);
            let rows = self.open.take_hour(h);
            self.closing.entry(h).or_default().extend(rows);
            closed = true;
        }
        // The other detections' hours close with the same watermark, records or not in the
        // counter (an hour of ACCEPTed flows only has no aggregate row but has volume).
        let finalizing: BTreeSet<i64> = self.manifest.finalize_taps.iter().copied().collect();
        for h in self.taps.hours().into_iter().filter(|h| *h < new_ct && !finalizing.contains(h)) {
            closed |= self.taps_closing.insert(h);
        }
        self.closed_through = Some(new_ct);
        self.dirty = true;
        closed
    }

    /// Commits a checkpoint: pending files, then the manifest (the commit point), then the final
    /// files it names, the detection of the closed hours and their spikes, then a second manifest
    /// that records them as done. Finally deletes pending files no manifest names.
    pub fn checkpoint(&mut self, sink: &mut dyn SpikeSink) -> Result<(), EngineError> {
        // Work a failed earlier checkpoint committed but did not finish (its final files) comes
        // first: the manifest written below would otherwise no longer name it.
        self.finish(sink)?;
        let gen = self.manifest.generation + 1;
        let store = self.history.store().clone();
        let pending = pending_prefix(&self.cfg.stream);

        let mut finalize = Vec::new();
        let mut final_rows = Vec::new();
        // The closing and late rows stay in memory until the manifest that names them is
        // committed: a failed write (retried at the next checkpoint) must not lose them.
        let late = self.late.clone().into_rows();
        let mut late_by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
        for r in late {
            late_by_hour.entry(r.hour).or_default().push(r);
        }
        for (h, rows) in &self.closing {
            let h = *h;
            finalize.push(Finalize { hour: h, name: self.main_name(), evaluate: true });
            final_rows.extend(rows.iter().cloned());
            if let Some(l) = late_by_hour.remove(&h) {
                final_rows.extend(l);
            }
        }
        for (h, rows) in late_by_hour {
            finalize.push(Finalize { hour: h, name: self.late_name(gen), evaluate: false });
            final_rows.extend(rows);
        }
        finalize.sort_by_key(|f| f.hour);

        let open_key = format!("{pending}{gen:020}-open.parquet");
        put_rows(store.as_ref(), &open_key, &self.open.clone().into_rows())?;
        let final_key = if finalize.is_empty() {
            None
        } else {
            let k = format!("{pending}{gen:020}-final.parquet");
            put_rows(store.as_ref(), &k, &final_rows)?;
            Some(k)
        };
        // The taps of the open hours and of the hours closing now, in one file: the commit point
        // names it with the hours to finalize, as it names the final rows.
        let taps_key = if self.taps.is_on() {
            let k = format!("{pending}{gen:020}-taps.bin");
            store.put(&k, self.taps.to_snapshot())?;
            Some(k)
        } else {
            None
        };
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            stream: self.cfg.stream.clone(),
            generation: gen,
            written_at: now_secs(),
            closed_through: self.closed_through,
            shards: self.shards.clone(),
            open_rows: Some(open_key),
            final_rows: final_key,
            finalize,
            emitted: self.emitted.clone(),
            positions: self.positions.clone(),
            taps: taps_key,
            finalize_taps: self.taps_closing.iter().copied().collect(),
            emitted_findings: self.emitted_findings.clone(),
        };
        self.commit(manifest)?;
        self.closing.clear();
        self.taps_closing.clear();
        for (h, o) in self.late.overflow() {
            self.stats.over_source_cap(h, Some(o), self.cfg.pipeline.counter.max_sources_per_hour);
        }
        self.late = Counter::new(self.cfg.pipeline.counter);
        self.dirty = false;
        self.emit_early(sink)?;
        self.finish(sink)?;
        self.collect_garbage();
        Ok(())
    }

    /// Writes `m` as the manifest (the commit point) and makes it current.
    fn commit(&mut self, m: Manifest) -> Result<(), EngineError> {
        self.history.store().put(&manifest_key(&self.cfg.stream), m.to_json())?;
        tracing::debug!(
            generation = m.generation,
            finalize = m.finalize.len(),
            "checkpoint committed"
        );
        self.stats.checkpoints += 1;
        self.manifest = m;
        Ok(())
    }

    /// Writes the final files the manifest names (deterministic names: a redo overwrites), evaluates
    /// the closed hours, emits their spikes not yet emitted, and commits a manifest without them.
    fn finish(&mut self, sink: &mut dyn SpikeSink) -> Result<(), EngineError> {
        if self.manifest.finalize.is_empty() && self.manifest.finalize_taps.is_empty() {
            return Ok(());
        }
        let rows = match &self.manifest.final_rows {
            Some(k) => read_rows(self.history.store().as_ref(), k)?,
            None => Vec::new(),
        };
        let finalize = self.manifest.finalize.clone();
        for f in &finalize {
            let hour_rows: Vec<AggregateRow> =
                rows.iter().filter(|r| r.hour == f.hour).cloned().collect();
            let key = self.history.write_hour_file(f.hour, &hour_rows, &f.name)?;
            if f.evaluate {
                self.stats.hours_closed += 1;
            } else {
                self.stats.corrections += 1;
            }
            tracing::info!(hour = f.hour, key = %key, rows = hour_rows.len(), "final aggregates written");
        }
        for f in finalize.iter().filter(|f| f.evaluate) {
            self.evaluate(f.hour, sink)?;
        }
        let taps_done: BTreeSet<i64> = self.manifest.finalize_taps.iter().copied().collect();
        self.finish_taps(sink)?;
        let keep_from = self.closed_through.unwrap_or(i64::MIN).saturating_sub(EMITTED_MEMORY_SECS);
        self.emitted.retain(|_, h| *h >= keep_from);
        self.emitted_findings.retain(|_, h| *h >= keep_from);
        let mut m = self.manifest.clone();
        m.generation += 1;
        m.written_at = now_secs();
        m.finalize.clear();
        m.final_rows = None;
        m.emitted = self.emitted.clone();
        m.finalize_taps.clear();
        m.emitted_findings = self.emitted_findings.clone();
        self.commit(m)?;
        // Recorded as done: their rows are no longer needed.
        self.closed_taps.hours.retain(|h, _| !taps_done.contains(h));
        Ok(())
    }

    /// Writes the other detections' tables of the hours the manifest finalizes (file
    /// `consumer-<stream>.parquet` of each table's hour, beside replay's and other streams':
    /// a redo overwrites) and emits their findings not emitted yet. The hours' rows move from
    /// the taps to `closed_taps` once; a failed write or emission is redone from there.
    fn finish_taps(&mut self, sink: &mut dyn SpikeSink) -> Result<(), EngineError> {
        let hours = self.manifest.finalize_taps.clone();
        if hours.is_empty() {
            return Ok(());
        }
        let wanted: BTreeSet<i64> = hours.iter().copied().collect();
        let part = self.taps.split_hours(|h| wanted.contains(&h));
        for (h, t) in part.finish().hours {
            if t.scan_flows_over_cap > 0 {
                tracing::warn!(
                    hour = h,
                    records = t.scan_flows_over_cap,
                    "port-scan tap over its per-hour cap: the highest sources not judged for scans"
                );
                self.stats.records_over_scan_cap += t.scan_flows_over_cap;
            }
            self.closed_taps.hours.insert(h, t);
        }
        let store = self.history.store().clone();
        let name = self.main_name();
        for &h in &hours {
            let put =
                |t: flowspike_history::Table, b: &_| t.put_hour_file(store.as_ref(), h, b, &name);
            self.closed_taps.write_hour_with(&self.cfg.detections, h, put)?;
        }
        let found = self.closed_taps.evaluate_kept(
            &self.cfg.detections,
            store.as_ref(),
            &hours,
            &mut self.volume_baseline,
        )?;
        let new: Vec<Finding> =
            found.into_iter().filter(|f| !self.emitted_findings.contains_key(&f.id)).collect();
        if !new.is_empty() {
            sink.emit_findings(&new)?;
            for f in &new {
                tracing::info!(hour = f.hour, detection = %f.detection, src_ip = %f.src_ip, id = %f.id, "finding");
                self.emitted_findings.insert(f.id.clone(), f.hour);
            }
            self.stats.findings_emitted += new.len() as u64;
        }
        tracing::info!(hours = ?hours, findings = new.len(), "detections tables written");
        Ok(())
    }

    /// Evaluates the detection for closed hour `hour` and emits its new spikes.
    fn evaluate(&mut self, hour: i64, sink: &mut dyn SpikeSink) -> Result<(), EngineError> {
        if !self.warmed {
            let from = self.cfg.pipeline.detect.warm_from(hour);
            warm_detector(&mut self.detector, &self.history.read_range(from, hour)?);
            self.warmed = true;
        }
        let rows = self.history.read_hour(hour)?;
        let new = new_spikes(&mut self.detector, hour, &rows, |id| self.emitted.contains_key(id));
        if new.is_empty() {
            return Ok(());
        }
        sink.emit(&new)?;
        for s in &new {
            tracing::info!(hour, src_ip = %s.src_ip, id = %s.id, blocked_count = s.blocked_count, "spike");
            self.emitted.insert(s.id.clone(), hour);
        }
        self.stats.spikes_emitted += new.len() as u64;
        Ok(())
    }

    /// Deletes pending files that the current manifest does not name (left by earlier checkpoints
    /// or by a crash before a commit). Failures are logged only: garbage is harmless.
    fn collect_garbage(&self) {
        let store = self.history.store();
        let keep: BTreeSet<&str> =
            [&self.manifest.open_rows, &self.manifest.final_rows, &self.manifest.taps]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
        match store.list(&pending_prefix(&self.cfg.stream)) {
            Ok(keys) => {
                for k in keys.iter().filter(|k| !keep.contains(k.as_str())) {
                    if let Err(e) = store.delete(k) {
                        tracing::warn!(key = %k, error = %e, "cannot delete an old pending file");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list pending files"),
        }
    }

    fn main_name(&self) -> String {
        format!("consumer-{}.parquet", self.cfg.stream)
    }

    fn late_name(&self, gen: u64) -> String {
        format!("consumer-{}-late-{gen:020}.parquet", self.cfg.stream)
    }
}

/// Feeds `prior` (rows sorted by hour, as `History::read_range` returns them) to `detector`, one
/// hour at a time, without verdicts; an hour it refuses is logged and skipped.
pub fn warm_detector(detector: &mut Detector, prior: &[AggregateRow]) {
    for rows in prior.chunk_by(|a, b| a.hour == b.hour) {
        let h = rows[0].hour;
        if let Err(e) = detector.warm(h, rows) {
            tracing::warn!(hour = h, error = %e, "cannot warm the detector with an hour");
        }
    }
}

/// Evaluates `hour` and returns its spikes not already emitted (`emitted(id)`); none, with a
/// warning, when the detector refuses the hour.
pub fn new_spikes(
    detector: &mut Detector,
    hour: i64,
    rows: &[AggregateRow],
    emitted: impl Fn(&str) -> bool,
) -> Vec<Spike> {
    match detector.try_observe_hour(hour, rows) {
        Ok(spikes) => spikes.into_iter().filter(|s| !emitted(&s.id)).collect(),
        Err(e) => {
            tracing::warn!(hour, error = %e, "hour not evaluated");
            Vec::new()
        }
    }
}

/// Writes `rows` as one Parquet object at `key`.
pub fn put_rows(store: &dyn Store, key: &str, rows: &[AggregateRow]) -> Result<(), EngineError> {
    let bytes = encode_parquet(&Columns::from_rows(rows))
        .map_err(|source| EngineError::Codec { key: key.to_owned(), source })?;
    store.put(key, bytes)?;
    Ok(())
}

/// Reads the Parquet object at `key` written by [`put_rows`].
pub fn read_rows(store: &dyn Store, key: &str) -> Result<Vec<AggregateRow>, EngineError> {
    let bytes = store.get(key)?;
    decode_parquet(&bytes).map_err(|source| EngineError::Codec { key: key.to_owned(), source })
}

/// The taps the manifest's snapshot holds (fresh ones when it names none: a state of an earlier
/// release, or one without these detections), without the closed hours already finalized: a
/// manifest written after a finish still names the snapshot its checkpoint wrote, whose closed
/// hours are then done.
fn restore_taps(
    history: &History,
    manifest: &Manifest,
    cfg: &DetectionsConfig,
) -> Result<Taps, EngineError> {
    let Some(key) = &manifest.taps else { return Ok(Taps::new(cfg)) };
    let bytes = history.store().get(key)?;
    let mut taps = Taps::from_snapshot(cfg, &bytes)
        .map_err(|e| EngineError::Manifest { key: key.clone(), reason: e.to_string() })?;
    let finalizing: BTreeSet<i64> = manifest.finalize_taps.iter().copied().collect();
    if let Some(ct) = manifest.closed_through {
        drop(taps.split_hours(|h| h < ct && !finalizing.contains(&h)));
    }
    Ok(taps)
}

/// Repairs what a state written before the event-time rule may hold past `bounds` (the clock at
/// open plus the configured `--max-future-secs`; an hour past it can hold no accepted record), so that such a state
/// opens: a shard `max_start` past it is forgotten (the shard's next records set it again), a final
/// file for an hour past [`MAX_EVENT_TIME`] is not written (and one past `bounds` not evaluated),
/// and a `closed_through` past `bounds` is brought back to the
/// current hour — or just after the latest hour (up to the bound) that already has a file, so that
/// no final file is ever written twice (a second close would replace the first one's rows).
/// Returns true when something was repaired. Open rows past [`MAX_EVENT_TIME`] are dropped by the
/// caller.
fn repair_event_times(m: &mut Manifest, history: &History, bounds: TimeBounds, now: i64) -> bool {
    let mut repaired = false;
    for (id, s) in &mut m.shards {
        if let Some(ms) = s.max_start.filter(|ms| bounds.check(*ms).is_err()) {
            tracing::warn!(shard_id = %id, max_start = ms, latest = bounds.latest(), "impossible shard max_start in the manifest forgotten");
            s.max_start = None;
            repaired = true;
        }
    }
    m.finalize.retain_mut(|f| {
        if !TimeBounds::REPRESENTABLE.accepts_hour(f.hour) {
            // No file can be named for it: writing it failed at every restart.
            tracing::warn!(hour = f.hour, name = %f.name, "final file of an impossible hour in the manifest not written");
            repaired = true;
            return false;
        }
        if f.evaluate && !bounds.accepts_hour(f.hour) {
            // The rows are kept, but an hour that far ahead is not shown to the detector: it
            // would refuse every real hour after it.
            tracing::warn!(hour = f.hour, name = %f.name, "final file of an hour past the event-time bound written without evaluation");
            f.evaluate = false;
            repaired = true;
        }
        true
    });
    let latest = i64::try_from(bounds.latest()).unwrap_or(i64::MAX);
    if let Some(ct) = m.closed_through.filter(|ct| *ct > latest) {
        let now_hour = now.div_euclid(HOUR) * HOUR;
        let after_files = match history.hours() {
            Ok(hours) => {
                hours.into_iter().filter(|h| *h >= now_hour && *h <= latest).max().map(|h| h + HOUR)
            }
            Err(e) => {
                // Unknown: assume files up to the bound (detection resumes a day later).
                tracing::warn!(error = %e, "cannot list the history's hours");
                Some(latest.div_euclid(HOUR) * HOUR + HOUR)
            }
        };
        let fixed = after_files.map_or(now_hour, |h| h.max(now_hour)).min(ct);
        tracing::warn!(
            closed_through = ct,
            repaired = fixed,
            latest = bounds.latest(),
            "impossible closed_through in the manifest repaired"
        );
        m.closed_through = Some(fixed);
        repaired = true;
    }
    repaired
}

/// The wall clock, in unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod detections_tests;
