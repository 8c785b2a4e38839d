//! Enhanced fan-out: SubscribeToShard, one batch per event (applied whole, like a GetRecords
//! response), resubscribing from the last continuation sequence number when a subscription ends
//! (Kinesis ends them after 5 minutes), fails, or reaches `Efo::subscription_max`. At the shard's
//! end (an event with `ChildShards`) the reader reports the children and stops.

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput;
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{
    StartingPosition, SubscribeToShardEvent, SubscribeToShardEventStream,
};

use super::reader::{child_ids, position};
use super::{backoff, classed, is_throttle, Efo, ShardInfo, ShardReader};
use crate::ConsumeError;

/// An enhanced fan-out reader's state across subscriptions.
#[derive(Default)]
struct Subscriptions {
    /// Where the next subscription starts: the last continuation sequence number.
    position: Option<String>,
    /// The last record delivered.
    last_record: Option<String>,
    /// The last event found the shard at its tip.
    at_tip: bool,
    /// Failures in a row (backoff).
    failures: u32,
    /// Subscriptions established so far.
    established: u64,
}

/// What the reader does after a subscription.
enum Next {
    /// Subscribe again.
    Resubscribe,
    /// The shard ended, the consumer stops or is gone, or a non-retryable error was reported.
    Stop,
}

impl ShardReader {
    /// Reads the shard through subscriptions until it ends, the consumer stops or a
    /// non-retryable error happens.
    pub(super) async fn run_efo(mut self, efo: Efo) {
        let mut subs = Subscriptions::default();
        while !self.stopped() {
            if subs.at_tip && subs.established > 0 {
                // Between two subscriptions of a shard at its tip: is it a closed shard read to
                // its end? Kinesis says so with ChildShards in an event; emulators may not
                // (kinesis-local never does), so ask GetRecords once.
                if let Some(children) = self.ended_at(subs.last_record.as_deref()).await {
                    self.send_end(children, "GetRecords").await;
                    break;
                }
            }
            let next = match self.subscribe(&efo, &mut subs).await {
                Ok(Some((starting, out))) => {
                    self.read_events(&efo, &mut subs, &starting, out).await
                }
                Ok(None) => Next::Resubscribe,
                Err(e) => {
                    self.fail(e).await;
                    Next::Stop
                }
            };
            if let Next::Stop = next {
                break;
            }
        }
    }

    /// SubscribeToShard from the current position; `Ok(None)` after a retryable failure (backed
    /// off already). A subscription of this consumer to this shard that is still active (the
    /// previous one not released yet) is retried too.
    async fn subscribe(
        &mut self,
        efo: &Efo,
        subs: &mut Subscriptions,
    ) -> Result<Option<(StartingPosition, SubscribeToShardOutput)>, ConsumeError> {
        let starting = self.starting_position(subs.position.as_deref())?;
        let resp = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&efo.consumer_arn)
            .shard_id(&self.shard_id)
            .starting_position(starting.clone())
            .send()
            .await;
        let e = match resp {
            Ok(out) => return Ok(Some((starting, out))),
            Err(e) => e,
        };
        if is_throttle(&e) {
            self.metrics.throttled();
        }
        let in_use = e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception());
        let err = classed("SubscribeToShard", &self.stream, Some(&self.shard_id), &e).1;
        if !in_use && !err.is_retryable() {
            return Err(err);
        }
        subs.failures += 1;
        tracing::warn!(shard_id = %self.shard_id, error = %err, attempt = subs.failures, "SubscribeToShard failed; backing off");
        self.pause(backoff(subs.failures)).await;
        Ok(None)
    }

    /// Delivers the events of one subscription until it ends, fails, reaches its longest time,
    /// or the consumer stops.
    async fn read_events(
        &mut self,
        efo: &Efo,
        subs: &mut Subscriptions,
        starting: &StartingPosition,
        mut out: SubscribeToShardOutput,
    ) -> Next {
        let mut active = false;
        let renew_at = tokio::time::Instant::now() + efo.subscription_max;
        loop {
            let next = tokio::select! {
                ev = out.event_stream.recv() => ev,
                _ = tokio::time::sleep_until(renew_at) => {
                    tracing::info!(shard_id = %self.shard_id, "subscription renewed before Kinesis ends it");
                    return Next::Resubscribe;
                }
                _ = self.stop.changed() => return Next::Stop,
            };
            if self.fenced() {
                return Next::Stop;
            }
            let event = match next {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => e,
                Ok(Some(other)) => {
                    tracing::debug!(shard_id = %self.shard_id, event = ?other, "unknown event ignored");
                    continue;
                }
                Ok(None) => {
                    tracing::info!(shard_id = %self.shard_id, "subscription ended; resubscribing");
                    return Next::Resubscribe;
                }
                Err(e) => {
                    subs.failures += 1;
                    self.log_stream_error(&e, subs.failures);
                    self.pause(backoff(subs.failures)).await;
                    return Next::Resubscribe;
                }
            };
            subs.failures = 0;
            if !active {
                active = true;
                subs.established += 1;
                tracing::info!(
                    shard_id = %self.shard_id,
                    starting_position = %starting.r#type(),
                    sequence_number = starting.sequence_number().unwrap_or_default(),
                    subscriptions = subs.established,
                    "subscribed to shard"
                );
            }
            if !self.deliver_event(subs, event).await {
                return Next::Stop;
            }
        }
    }

    /// Decodes and sends one event; false at the shard's end or when the coordinator is gone.
    async fn deliver_event(
        &mut self,
        subs: &mut Subscriptions,
        event: SubscribeToShardEvent,
    ) -> bool {
        let behind = event.millis_behind_latest();
        self.metrics.set_millis_behind_latest(behind);
        let mut batch = self.decode(event.records());
        if let Some(s) = &batch.last_sequence_number {
            subs.position = Some(s.clone());
            subs.last_record = Some(s.clone());
        }
        subs.at_tip = event.records().is_empty() && behind == 0;
        let cont = event.continuation_sequence_number();
        if !cont.is_empty() {
            subs.position = Some(cont.to_owned());
        }
        let children = ShardInfo::from_child_shards(event.child_shards());
        batch.ended = !children.is_empty();
        let ended = batch.ended;
        if ended {
            tracing::info!(shard_id = %self.shard_id, children = ?child_ids(&children), "shard ended");
        }
        self.send(batch, behind == 0, children).await && !ended
    }

    /// Logs a failed subscription (it is resubscribed after a backoff).
    fn log_stream_error<R: std::fmt::Debug + 'static>(
        &self,
        e: &SdkError<SubscribeToShardEventStreamError, R>,
        attempt: u32,
    ) {
        let shard = &self.shard_id;
        match e.as_service_error() {
            // Kinesis refuses a new subscription within 5 s of the previous one (and while it is
            // still held): expected after a renewal.
            Some(s) if s.is_resource_in_use_exception() => {
                tracing::debug!(shard_id = %shard, attempt, "previous subscription still active; retrying");
            }
            Some(s) => {
                tracing::warn!(shard_id = %shard, code = s.code().unwrap_or_default(), error = s.message().unwrap_or_default(), attempt, "subscription failed; resubscribing");
            }
            None => {
                tracing::warn!(shard_id = %shard, error = %DisplayErrorContext(e), attempt, "subscription failed; resubscribing");
            }
        }
    }

    /// The SubscribeToShard starting position: after `after` (the last continuation sequence
    /// number of this reader), else the reader's configured start.
    fn starting_position(&self, after: Option<&str>) -> Result<StartingPosition, ConsumeError> {
        let (kind, seq, at) = position(after, &self.start);
        let b = StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(seq.map(str::to_owned))
            .set_timestamp(at);
        // The builder only fails without a type, which is always set.
        b.build().map_err(|e| ConsumeError::Kinesis {
            op: "SubscribeToShard",
            stream: self.stream.clone(),
            shard: Some(self.shard_id.clone()),
            message: e.to_string(),
            retryable: false,
        })
    }

    /// `Some(children)` when the shard is closed and nothing follows `after` (or the reader's
    /// start): GetRecords there answers no records and no next iterator. Errors count as "not
    /// known to be at the end" (the next check retries).
    async fn ended_at(&self, after: Option<&str>) -> Option<Vec<ShardInfo>> {
        let it = match self.iterator(after).await {
            Ok(Some(it)) => it,
            Ok(None) => return Some(Vec::new()),
            Err(e) => {
                tracing::debug!(shard_id = %self.shard_id, error = %e, "end check failed");
                return None;
            }
        };
        let resp = self.client.get_records().shard_iterator(it).limit(1).send().await;
        self.metrics.getrecords_call();
        match resp {
            Ok(out) if out.records().is_empty() && out.next_shard_iterator().is_none() => {
                Some(ShardInfo::from_child_shards(out.child_shards()))
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(shard_id = %self.shard_id, error = %DisplayErrorContext(&e), "end check failed");
                None
            }
        }
    }
}
