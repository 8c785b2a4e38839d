//! The reader task of one shard: what polling and enhanced fan-out share (settings, the stop
//! and lease-deadline checks, shard iterators, delivering batches to the coordinator).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};
use aws_sdk_kinesis::Client;
use crossbeam_utils::CachePadded;
use flowspike_counter::Pipeline;
use flowspike_engine::metrics::ShardMetrics;
use flowspike_engine::{decode_batch, Batch, DetectionsConfig, RawRecord};
use tokio::sync::{mpsc, watch};

use super::{classed, is_throttle, Classed, Efo, Event, ShardInfo, StartAt};
use crate::ConsumeError;

/// A reader of one shard: polling GetRecords, or SubscribeToShard when `efo` is set.
pub struct ShardReader {
    /// The client.
    pub client: Client,
    /// The stream.
    pub stream: String,
    /// The shard.
    pub shard_id: String,
    /// Where to start.
    pub start: StartAt,
    /// Decoding settings.
    pub pipeline: Arc<Pipeline>,
    /// The other detections' settings: each batch's taps.
    pub detections: Arc<DetectionsConfig>,
    /// Where batches go (bounded: a slow coordinator slows the readers).
    pub tx: mpsc::Sender<Event>,
    /// Becomes true when the consumer stops; the reader finishes its in-flight call first.
    pub stop: watch::Receiver<bool>,
    /// This shard's metrics (GetRecords calls, throttles, MillisBehindLatest).
    pub metrics: Arc<CachePadded<ShardMetrics>>,
    /// Enhanced fan-out (SubscribeToShard) instead of polling.
    pub efo: Option<Efo>,
    /// Tags this reader's batches ([`Event::Batch::epoch`]).
    pub epoch: u64,
    /// Lease mode: unix milliseconds after which this reader must not read (its lease may be
    /// another worker's by then); moved forward by every renewal. The reader checks it before every
    /// GetRecords call and every SubscribeToShard event, so it stops even if its coordinator stalls.
    pub lease_deadline: Option<Arc<AtomicU64>>,
}

impl ShardReader {
    /// Reads the shard until it ends, the consumer stops or a non-retryable error happens.
    pub async fn run(self) {
        match self.efo.clone() {
            Some(efo) => self.run_efo(efo).await,
            None => self.run_polling().await,
        }
    }

    /// True when the reader must stop: the consumer stops, or (lease mode) the lease deadline has
    /// passed — then it sends nothing more.
    pub(super) fn stopped(&self) -> bool {
        *self.stop.borrow() || self.fenced()
    }

    /// True once the lease deadline has passed (lease mode).
    pub(super) fn fenced(&self) -> bool {
        let Some(d) = &self.lease_deadline else { return false };
        // Acquire: pairs with the worker's Release store of a renewed deadline.
        if crate::worker::unix_millis() >= d.load(Ordering::Acquire) {
            tracing::warn!(shard_id = %self.shard_id, "lease not renewed in time: reader stops");
            return true;
        }
        false
    }

    /// Sleeps `d`, or less if the consumer stops.
    pub(super) async fn pause(&mut self, d: Duration) {
        if d.is_zero() || *self.stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
        }
    }

    /// A shard iterator after `after` (this reader's last sequence number), else at the reader's
    /// start; `None` for a closed shard read to its end.
    pub(super) async fn iterator(&self, after: Option<&str>) -> Result<Option<String>, Classed> {
        let (kind, seq, at) = position(after, &self.start);
        let req = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard_id)
            .shard_iterator_type(kind)
            .set_starting_sequence_number(seq.map(str::to_owned))
            .set_timestamp(at);
        let resp = req.send().await.map_err(|e| {
            if is_throttle(&e) {
                self.metrics.throttled();
            }
            classed("GetShardIterator", &self.stream, Some(&self.shard_id), &e)
        })?;
        Ok(resp.shard_iterator().map(str::to_owned))
    }

    /// Decodes `records` into a batch of this shard (CPU work: the runtime moves other tasks off
    /// this worker thread meanwhile).
    pub(super) fn decode(&self, records: &[Record]) -> Batch {
        let raw = raw_records(records);
        tokio::task::block_in_place(|| {
            decode_batch(&self.pipeline, &self.detections, &self.shard_id, &raw)
        })
    }

    /// Sends a batch to the coordinator; false when the coordinator is gone.
    pub(super) async fn send(
        &self,
        batch: Batch,
        caught_up: bool,
        children: Vec<ShardInfo>,
    ) -> bool {
        let event = Event::Batch { batch, caught_up, children, epoch: self.epoch };
        self.tx.send(event).await.is_ok()
    }

    /// Reports the end of the shard (an empty batch marked `ended`, with the children it names).
    pub(super) async fn send_end(&self, children: Vec<ShardInfo>, detected_by: &str) {
        let batch = Batch {
            ended: true,
            ..decode_batch(&self.pipeline, &self.detections, &self.shard_id, &[])
        };
        tracing::info!(shard_id = %self.shard_id, children = ?child_ids(&children), detected_by, "shard ended");
        self.send(batch, true, children).await;
    }

    /// Reports a non-retryable error: the consumer stops.
    pub(super) async fn fail(&self, e: ConsumeError) {
        let _ = self.tx.send(Event::Failed(e)).await;
    }
}

/// Where a read starts: after `after` (the reader's last sequence number), else at `start`; the
/// iterator type with its sequence number or timestamp (GetShardIterator and SubscribeToShard
/// take the same three).
pub(super) fn position<'a>(
    after: Option<&'a str>,
    start: &'a StartAt,
) -> (ShardIteratorType, Option<&'a str>, Option<DateTime>) {
    match (after, start) {
        (Some(seq), _) => (ShardIteratorType::AfterSequenceNumber, Some(seq), None),
        (None, StartAt::After(seq)) => (ShardIteratorType::AfterSequenceNumber, Some(seq), None),
        (None, StartAt::TrimHorizon) => (ShardIteratorType::TrimHorizon, None, None),
        (None, StartAt::Latest) => (ShardIteratorType::Latest, None, None),
        (None, StartAt::AtTimestamp(t)) => {
            (ShardIteratorType::AtTimestamp, None, Some(DateTime::from_secs(*t)))
        }
    }
}

/// The records of a response as [`RawRecord`]s.
fn raw_records(records: &[Record]) -> Vec<RawRecord<'_>> {
    records
        .iter()
        .map(|r| RawRecord { sequence_number: r.sequence_number(), data: r.data().as_ref() })
        .collect()
}

/// The ids of `children`, for the log.
pub(super) fn child_ids(children: &[ShardInfo]) -> Vec<&str> {
    children.iter().map(|c| c.id.as_str()).collect()
}
