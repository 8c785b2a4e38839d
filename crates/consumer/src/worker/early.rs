//! Early alerts in lease mode (adaptive detection, "Alerts within minutes"): a worker judges the
//! group's next hour to close on its own partial count and sends each alert once for the group.
//!
//! - **Which hour**: the earliest hour after the claim frontier with rows in a delta or in this
//!   worker, once every claimed hour is finalized: the history then holds every hour its close
//!   evaluates after, so the detector (warmed from the history) has the baseline of the close.
//! - **Which count**: this worker's share of the hour — what this process committed of it plus its
//!   held shards' uncommitted rows. Another worker's records of the same source are not in it: an
//!   early alert fires on the worker's partial count; the close judges the merged hour.
//! - **Once for the group**: each alert is claimed in the lease table (`alert#<spike id>`, a
//!   conditional put), sent, then marked sent, all before the worker's next commit
//!   ([`Worker::send_early`]). The hour is only judged while one of the worker's own leases holds
//!   the group's watermark before the hour's end, so the hour cannot be claimed (closed) before
//!   that commit: its close sees every alert marked sent and does not send it again. A claim left
//!   unsent (the worker stopped in between) is sent by the close. A worker restarted with the same
//!   id sends its own unsent claims again (at least once, with the same id, as at the close).

use std::collections::BTreeMap;

use flowspike_counter::{merge_rows, AggregateRow, Counter, CounterConfig, HOUR};
use flowspike_detect::{Mode, Spike};
use flowspike_engine::{OpenHourJudge, SpikeSink};
use flowspike_lease::{alert_key, AlertClaim, HourState, Snapshot};

use super::{Owned, Worker};
use crate::ConsumeError;

/// A worker's early-alert state.
pub(super) struct EarlyAlerts {
    judge: OpenHourJudge,
    /// Rows this process committed of hours not claimed yet.
    committed: Counter,
    /// Alerts waiting for [`Worker::send_early`].
    queued: Vec<Spike>,
    /// Alerts sent whose claim is not marked sent yet.
    unmarked: Vec<String>,
    /// Alerts sent by this worker or claimed by another one, with their hour: not judged again.
    known: BTreeMap<String, i64>,
}

impl EarlyAlerts {
    pub(super) fn new(counter: CounterConfig) -> EarlyAlerts {
        EarlyAlerts {
            judge: OpenHourJudge::default(),
            committed: Counter::new(counter),
            queued: Vec::new(),
            unmarked: Vec::new(),
            known: BTreeMap::new(),
        }
    }

    /// Adds the rows of a commit (adaptive mode only: no other mode alerts early).
    pub(super) fn committed(&mut self, rows: &[AggregateRow], mode: Mode) {
        if mode != Mode::Adaptive {
            return;
        }
        for r in rows {
            if let Err(e) = self.committed.add_row(r) {
                // Rows made by the counter always merge; the count is only lower if one does not.
                tracing::error!(error = %e, "cannot add a committed row to the early-alert count");
            }
        }
    }

    /// Forgets the hours up to `hour`: claimed, they are no longer open.
    pub(super) fn forget_through(&mut self, hour: i64) {
        for h in self.committed.hours().into_iter().filter(|h| *h <= hour) {
            self.committed.take_hour(h);
        }
        self.known.retain(|_, h| *h > hour);
    }
}

impl Worker {
    /// True when early alerts wait to be sent: [`Worker::send_early`] and commit now rather than at
    /// the checkpoint interval (the alert is worth little later).
    pub fn has_early_alerts(&self) -> bool {
        !self.early.queued.is_empty() || !self.early.unmarked.is_empty()
    }

    /// The hour to judge early, if any (see the module docs).
    fn early_hour(&self) -> Option<i64> {
        if self.cfg.pipeline.detect.mode != Mode::Adaptive {
            return None;
        }
        let snap = self.last_snapshot.as_ref()?;
        if snap.hours.values().any(|c| c.state != HourState::Done) {
            return None;
        }
        let open = |h: &i64| snap.frontier.is_none_or(|f| *h > f);
        let group = snap.deltas.values().flat_map(|d| d.hours.iter().copied());
        let own = self.owned.values().flat_map(|o| o.rows.hours());
        let hour = group.chain(own).chain(self.early.committed.hours()).filter(open).min()?;
        // The group's watermark is the least of the active leases' committed ones: while one of
        // ours is before the hour's end, the hour cannot close before our next commit.
        let holds = self
            .owned
            .values()
            .any(|o| o.committed_watermark.is_none_or(|w| w < hour.saturating_add(HOUR)));
        let fed = self.detector.last_hour().is_some_and(|l| l >= hour);
        (holds && !fed).then_some(hour)
    }

    /// Judges the sources a batch `touched` (per hour) in the hour to judge early; queues their
    /// alerts not known yet.
    pub(super) fn judge_early(&mut self, touched: Vec<(i64, Vec<String>)>) {
        if touched.is_empty() {
            return;
        }
        let Some(hour) = self.early_hour() else { return };
        let Some((_, sources)) = touched.into_iter().find(|(h, _)| *h == hour) else { return };
        if self.warmed_to.is_none_or(|w| w < hour) {
            if let Err(e) = self.warm_to(hour) {
                // The close warms it again (and fails loudly); early alerts wait for it.
                tracing::warn!(hour, error = %e, "cannot read the history for early alerts");
                return;
            }
            self.warmed_to = Some(hour);
        }
        let cap = self.cfg.pipeline.counter.dest_cap;
        let EarlyAlerts { judge, committed, .. } = &mut self.early;
        let (owned, committed) = (&self.owned, &*committed);
        let spikes = judge.judge(&self.detector, hour, sources, |src| {
            partial_row(owned, committed, hour, src, cap)
        });
        for s in spikes {
            let e = &self.early;
            if self.emitted.contains(&s.id)
                || e.known.contains_key(&s.id)
                || e.queued.iter().any(|q| q.id == s.id)
            {
                continue;
            }
            tracing::info!(hour, src_ip = %s.src_ip, id = %s.id, blocked_count = s.blocked_count, p_value = ?s.p_value, "early spike queued");
            self.early.queued.push(s);
        }
    }

    /// Sends the queued early alerts: each is claimed in the lease table (one another worker
    /// claimed is dropped), sent, and marked sent. Call it before every commit and commit only
    /// after it succeeded (see the module docs); a failure is retried by the next call.
    pub fn send_early(&mut self, sink: &mut dyn SpikeSink) -> Result<(), ConsumeError> {
        self.mark_sent()?;
        if self.early.queued.is_empty() {
            return Ok(());
        }
        let mut mine = Vec::new();
        for s in &self.early.queued {
            let claim = AlertClaim {
                id: s.id.clone(),
                hour: s.hour,
                owner: self.cfg.worker_id.clone(),
                sent: false,
            };
            if self.table.claim_alert(&claim)? {
                mine.push(s.clone());
            } else {
                tracing::info!(hour = s.hour, src_ip = %s.src_ip, id = %s.id, "early spike already sent by another worker");
            }
        }
        if !mine.is_empty() {
            sink.emit(&mine)?;
        }
        for s in std::mem::take(&mut self.early.queued) {
            self.early.known.insert(s.id, s.hour);
        }
        for s in &mine {
            tracing::info!(hour = s.hour, src_ip = %s.src_ip, id = %s.id, blocked_count = s.blocked_count, worker = %self.cfg.worker_id, "early spike");
            self.emitted.insert(s.id.clone());
            self.early.unmarked.push(s.id.clone());
        }
        self.stats.spikes_emitted += mine.len() as u64;
        self.mark_sent()
    }

    /// Marks the sent alerts sent in the table.
    fn mark_sent(&mut self) -> Result<(), ConsumeError> {
        while let Some(id) = self.early.unmarked.last() {
            self.table.alert_sent(id)?;
            self.early.unmarked.pop();
        }
        Ok(())
    }

    /// Deletes the alert claims of `hour` and earlier (finalized: no worker judges them again).
    /// A failure only leaves a small item behind, deleted with a later hour.
    pub(super) fn delete_alerts(&self, hour: i64, snap: &Snapshot) {
        for a in snap.alerts.values().filter(|a| a.hour <= hour) {
            if let Err(e) = self.table.delete(&alert_key(&a.id)) {
                tracing::warn!(id = %a.id, error = %e, "cannot delete an early alert claim");
            }
        }
    }
}

/// This worker's running count of `src` in `hour`: what it committed of it plus its held shards'
/// uncommitted rows.
fn partial_row(
    owned: &BTreeMap<String, Owned>,
    committed: &Counter,
    hour: i64,
    src: &str,
    dest_cap: usize,
) -> Option<AggregateRow> {
    let parts: Vec<AggregateRow> = std::iter::once(committed)
        .chain(owned.values().map(|o| &o.rows))
        .filter_map(|c| c.row(hour, src))
        .collect();
    match merge_rows(parts, dest_cap) {
        Ok(rows) => rows.into_iter().next(),
        Err(e) => {
            tracing::error!(hour, src, error = %e, "cannot merge the rows of an early verdict");
            None
        }
    }
}
