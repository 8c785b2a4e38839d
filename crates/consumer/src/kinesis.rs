//! Kinesis I/O: the client, ListShards, one reader task per shard (polling GetRecords, or
//! enhanced fan-out with SubscribeToShard), consumer registration. Spikes to a stream:
//! `flowspike_aws::kinesis::KinesisSink`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ChildShard, ConsumerStatus, Record, ShardIteratorType, StartingPosition,
    SubscribeToShardEventStream,
};
use aws_sdk_kinesis::Client;
use crossbeam_utils::CachePadded;
use flowspike_retry::{Class, Policy, Retrier};
use tokio::sync::{mpsc, watch};

use flowspike_engine::metrics::ShardMetrics;
use flowspike_engine::{decode_batch, Batch, DecodeContext, RawRecord};

use crate::ConsumeError;

/// Most records one GetRecords call returns (the Kinesis maximum).
const GET_RECORDS_LIMIT: i32 = 10_000;
/// Shortest time between two GetRecords calls on one shard (Kinesis allows 5 per second).
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Pause after a poll that returned nothing.
const EMPTY_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive transient GetRecords failures after which the iterator is renewed (moto answers a
/// bad iterator with HTTP 500).
const RENEW_ITERATOR_AFTER_FAILURES: u32 = 3;
/// Pause between two DescribeStreamConsumer calls while a consumer is being created or deleted.
const CONSUMER_POLL_INTERVAL: Duration = Duration::from_millis(500);

pub use flowspike_aws::kinesis::client_from_env;

/// True when Kinesis throttled the call (the shard's or the account's limits, or KMS).
fn is_throttle<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    flowspike_retry::classify(e) == Class::Throttled
}

fn kinesis_err<E>(
    op: &'static str,
    stream: &str,
    shard: Option<&str>,
    e: &SdkError<E, HttpResponse>,
) -> ConsumeError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    ConsumeError::Kinesis {
        op,
        stream: stream.to_owned(),
        shard: shard.map(str::to_owned),
        message: flowspike_retry::describe(e),
        retryable: flowspike_retry::classify(e).is_retryable(),
    }
}

/// A consumer error with the retry class of the SDK error behind it (for `flowspike_retry`'s
/// loops, which count throttles apart from other faults).
struct Classed(Class, ConsumeError);

impl std::fmt::Display for Classed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.1.fmt(f)
    }
}

/// [`kinesis_err`] with its class.
fn classed<E>(
    op: &'static str,
    stream: &str,
    shard: Option<&str>,
    e: &SdkError<E, HttpResponse>,
) -> Classed
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    Classed(flowspike_retry::classify(e), kinesis_err(op, stream, shard, e))
}

/// Capped exponential backoff with full jitter (`flowspike_retry::backoff`).
pub use flowspike_retry::backoff;

/// A shard of the stream, as ListShards (or the `ChildShards` of a parent's end) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard id.
    pub id: String,
    /// Parent shards (split or merge); they are read to their end before this one starts.
    pub parents: Vec<String>,
}

impl ShardInfo {
    /// The children a closed shard names at its end (GetRecords or SubscribeToShard).
    pub fn from_child_shards(children: &[ChildShard]) -> Vec<ShardInfo> {
        children
            .iter()
            .map(|c| ShardInfo { id: c.shard_id().to_owned(), parents: c.parent_shards().to_vec() })
            .collect()
    }
}

/// Every shard of `stream` (open and closed ones still within retention).
pub async fn list_shards(
    client: &Client,
    stream: &str,
    policy: Policy,
) -> Result<Vec<ShardInfo>, ConsumeError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        // Each page is retried on its own; an unknown stream stops at once.
        let resp = flowspike_retry::retry(
            "kinesis:ListShards",
            policy,
            |e: &Classed| e.0,
            |_| {
                let req = match &token {
                    Some(t) => client.list_shards().next_token(t),
                    None => client.list_shards().stream_name(stream),
                };
                async move {
                    req.send().await.map_err(|e| {
                        let not_found = e
                            .as_service_error()
                            .is_some_and(|s| s.is_resource_not_found_exception());
                        if not_found {
                            let msg = format!("kinesis stream {stream:?} does not exist");
                            Classed(Class::Fatal, ConsumeError::Config(msg))
                        } else {
                            classed("ListShards", stream, None, &e)
                        }
                    })
                }
            },
        )
        .await
        .map_err(|e| e.1)?;
        for s in resp.shards() {
            let parents = [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect();
            out.push(ShardInfo { id: s.shard_id().to_owned(), parents });
        }
        token = resp.next_token().map(str::to_owned);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// Where a shard reader starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// After a checkpointed sequence number.
    After(String),
    /// The oldest record in retention.
    TrimHorizon,
    /// Only records written from now on.
    Latest,
    /// The first record at or after this time (unix seconds).
    AtTimestamp(i64),
}

/// What a shard reader tells the coordinator.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every event is a batch, moved once through a bounded channel: boxing it would only add an allocation per batch"
)]
pub enum Event {
    /// One GetRecords response or SubscribeToShard event, decoded.
    Batch {
        /// The aggregates and position.
        batch: Batch,
        /// True when the shard is at its tip (an empty GetRecords response, or a
        /// SubscribeToShard event with `MillisBehindLatest` 0).
        caught_up: bool,
        /// At a closed shard's end (`batch.ended`): the child shards it names (`ChildShards`).
        children: Vec<ShardInfo>,
        /// The [`ShardReader::epoch`] of the reader that read it (a lease-mode worker drops batches
        /// of readers it has replaced).
        epoch: u64,
    },
    /// A non-retryable error: the consumer stops.
    Failed(ConsumeError),
}

/// Enhanced fan-out settings of a reader.
#[derive(Debug, Clone)]
pub struct Efo {
    /// ARN of the registered stream consumer (see [`register_consumer`]).
    pub consumer_arn: String,
    /// Longest time one subscription is kept before resubscribing (Kinesis ends them after 5
    /// minutes; resubscribing earlier is harmless).
    pub subscription_max: Duration,
}

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
    pub ctx: Arc<DecodeContext>,
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
    pub lease_deadline: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl ShardReader {
    /// True once the lease deadline has passed (lease mode): stop reading, send nothing more.
    fn fenced(&self) -> bool {
        let Some(d) = &self.lease_deadline else { return false };
        if crate::worker::unix_millis() >= d.load(std::sync::atomic::Ordering::Acquire) {
            tracing::warn!(shard_id = %self.shard_id, "lease not renewed in time: reader stops");
            return true;
        }
        false
    }

    async fn iterator(&self, after: Option<&str>) -> Result<Option<String>, Classed> {
        let mut req =
            self.client.get_shard_iterator().stream_name(&self.stream).shard_id(&self.shard_id);
        req = match (after, &self.start) {
            (Some(seq), _) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            (None, StartAt::After(seq)) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            (None, StartAt::TrimHorizon) => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            (None, StartAt::Latest) => req.shard_iterator_type(ShardIteratorType::Latest),
            (None, StartAt::AtTimestamp(t)) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_secs(*t)),
        };
        let resp = req.send().await.map_err(|e| {
            if is_throttle(&e) {
                self.metrics.throttled();
            }
            classed("GetShardIterator", &self.stream, Some(&self.shard_id), &e)
        })?;
        Ok(resp.shard_iterator().map(str::to_owned))
    }

    /// Sleeps `d`, or less if the consumer stops.
    async fn pause(&mut self, d: Duration) {
        if d.is_zero() || *self.stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
        }
    }

    /// Reads the shard until it ends, the consumer stops or a non-retryable error happens.
    pub async fn run(self) {
        match self.efo.clone() {
            Some(efo) => self.run_efo(efo).await,
            None => self.run_polling().await,
        }
    }

    async fn run_polling(mut self) {
        let mut iterator: Option<String> = None;
        let mut last_seq: Option<String> = None;
        // The current streak of failures of each call (forever: a reader never gives up on a
        // retryable error); a success ends the streak.
        let mut it_retry = Retrier::new("kinesis:GetShardIterator", Policy::Forever);
        let mut get_retry = Retrier::new("kinesis:GetRecords", Policy::Forever);
        let shard = self.shard_id.clone();
        loop {
            if *self.stop.borrow() || self.fenced() {
                break;
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => match self.iterator(last_seq.as_deref()).await {
                    Ok(it) => {
                        it_retry.succeeded();
                        it_retry = Retrier::new("kinesis:GetShardIterator", Policy::Forever);
                        match it {
                            Some(it) => it,
                            None => {
                                // A closed shard read to its end has no iterator.
                                let batch = decode_batch(&self.ctx, &shard, &[]);
                                let batch = Batch { ended: true, ..batch };
                                tracing::info!(shard_id = %shard, "shard ended");
                                let event = Event::Batch {
                                    batch,
                                    caught_up: true,
                                    children: Vec::new(),
                                    epoch: self.epoch,
                                };
                                let _ = self.tx.send(event).await;
                                break;
                            }
                        }
                    }
                    Err(Classed(class, e)) => match it_retry.failed(class, &e) {
                        Some(pause) => {
                            self.pause(pause).await;
                            continue;
                        }
                        None => {
                            let _ = self.tx.send(Event::Failed(e)).await;
                            break;
                        }
                    },
                },
            };
            let started = Instant::now();
            let resp =
                self.client.get_records().shard_iterator(&it).limit(GET_RECORDS_LIMIT).send().await;
            self.metrics.getrecords_call();
            let out = match resp {
                Ok(out) => out,
                Err(e) => {
                    if is_throttle(&e) {
                        self.metrics.throttled();
                    }
                    let expired =
                        e.as_service_error().is_some_and(|s| s.is_expired_iterator_exception());
                    let Classed(class, err) = classed("GetRecords", &self.stream, Some(&shard), &e);
                    if expired {
                        tracing::info!(shard_id = %shard, "iterator expired; renewing from the last sequence number");
                        continue;
                    }
                    let Some(pause) = get_retry.failed(class, &err) else {
                        let _ = self.tx.send(Event::Failed(err)).await;
                        break;
                    };
                    // After a few failures in a row the iterator itself may be bad (moto answers
                    // one with HTTP 500): renew it from the last sequence number.
                    if get_retry.failures() % RENEW_ITERATOR_AFTER_FAILURES != 0 {
                        iterator = Some(it);
                    }
                    self.pause(pause).await;
                    continue;
                }
            };
            get_retry.succeeded();
            get_retry = Retrier::new("kinesis:GetRecords", Policy::Forever);
            let raw = raw_records(out.records());
            let empty = raw.is_empty();
            let caught_up = empty && out.millis_behind_latest().unwrap_or(0) == 0;
            if let Some(ms) = out.millis_behind_latest() {
                self.metrics.set_millis_behind_latest(ms);
            }
            // Decoding is CPU work: let the runtime move other tasks off this worker meanwhile.
            let mut batch = tokio::task::block_in_place(|| decode_batch(&self.ctx, &shard, &raw));
            if let Some(s) = &batch.last_sequence_number {
                last_seq = Some(s.clone());
            }
            iterator = out.next_shard_iterator().map(str::to_owned);
            batch.ended = iterator.is_none();
            let ended = batch.ended;
            let children = if ended {
                let c = ShardInfo::from_child_shards(out.child_shards());
                tracing::info!(shard_id = %shard, children = ?child_ids(&c), "shard ended");
                c
            } else {
                Vec::new()
            };
            if self
                .tx
                .send(Event::Batch { batch, caught_up, children, epoch: self.epoch })
                .await
                .is_err()
                || ended
            {
                break;
            }
            let wait = if empty { EMPTY_POLL_INTERVAL } else { MIN_POLL_INTERVAL };
            self.pause(wait.saturating_sub(started.elapsed())).await;
        }
    }
    /// The SubscribeToShard starting position: after `after` (the last continuation sequence
    /// number of this reader), else the reader's configured start.
    fn starting_position(&self, after: Option<&str>) -> Result<StartingPosition, ConsumeError> {
        let b = StartingPosition::builder();
        let b = match (after, &self.start) {
            (Some(seq), _) => b.r#type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
            (None, StartAt::After(seq)) => {
                b.r#type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq)
            }

            (None, StartAt::TrimHorizon) => b.r#type(ShardIteratorType::TrimHorizon),
            (None, StartAt::Latest) => b.r#type(ShardIteratorType::Latest),
            (None, StartAt::AtTimestamp(t)) => {
                b.r#type(ShardIteratorType::AtTimestamp).timestamp(DateTime::from_secs(*t))
            }
        };
        // The builder only fails without a type, which every arm sets.
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

    /// Enhanced fan-out: SubscribeToShard, one batch per event (applied whole, like a GetRecords
    /// response), resubscribing from the last continuation sequence number when a subscription
    /// ends (Kinesis ends them after 5 minutes), fails, or reaches `efo.subscription_max`.
    /// At the shard's end (an event with `ChildShards`) the reader reports the children and stops.
    async fn run_efo(mut self, efo: Efo) {
        let shard = self.shard_id.clone();
        // Where the next subscription starts: the last continuation sequence number.
        let mut position: Option<String> = None;
        // The last record delivered, and whether the last event found the shard at its tip.
        let mut last_record: Option<String> = None;
        let mut at_tip = false;
        let mut failures: u32 = 0;
        let mut subscriptions: u64 = 0;
        'subscribe: loop {
            if *self.stop.borrow() || self.fenced() {
                break;
            }
            if at_tip && subscriptions > 0 {
                // Between two subscriptions of a shard at its tip: is it a closed shard read to
                // its end? Kinesis says so with ChildShards in an event; emulators may not
                // (kinesis-local never does), so ask GetRecords once.
                if let Some(children) = self.ended_at(last_record.as_deref()).await {
                    let batch = Batch { ended: true, ..decode_batch(&self.ctx, &shard, &[]) };
                    tracing::info!(shard_id = %shard, children = ?child_ids(&children), detected_by = "GetRecords", "shard ended");
                    let _ = self
                        .tx
                        .send(Event::Batch { batch, caught_up: true, children, epoch: self.epoch })
                        .await;
                    break;
                }
            }
            let starting = match self.starting_position(position.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    let _ = self.tx.send(Event::Failed(e)).await;
                    break;
                }
            };
            let resp = self
                .client
                .subscribe_to_shard()
                .consumer_arn(&efo.consumer_arn)
                .shard_id(&shard)
                .starting_position(starting.clone())
                .send()
                .await;
            let mut out = match resp {
                Ok(out) => out,
                Err(e) => {
                    if is_throttle(&e) {
                        self.metrics.throttled();
                    }
                    // A subscription of this consumer to this shard is still active (the previous
                    // one has not been released yet): retry.
                    let in_use =
                        e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception());
                    let err = kinesis_err("SubscribeToShard", &self.stream, Some(&shard), &e);
                    if !in_use && !err.is_retryable() {
                        let _ = self.tx.send(Event::Failed(err)).await;
                        break;
                    }
                    failures += 1;
                    tracing::warn!(shard_id = %shard, error = %err, attempt = failures, "SubscribeToShard failed; backing off");
                    self.pause(backoff(failures)).await;
                    continue;
                }
            };
            let mut active = false;
            let renew_at = tokio::time::Instant::now() + efo.subscription_max;
            loop {
                let next = tokio::select! {
                    ev = out.event_stream.recv() => ev,
                    _ = tokio::time::sleep_until(renew_at) => {
                        tracing::info!(shard_id = %shard, "subscription renewed before Kinesis ends it");
                        continue 'subscribe;
                    }
                    _ = self.stop.changed() => break 'subscribe,
                };
                if self.fenced() {
                    break 'subscribe;
                }
                let event = match next {
                    Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(e))) => e,
                    Ok(Some(other)) => {
                        tracing::debug!(shard_id = %shard, event = ?other, "unknown event ignored");
                        continue;
                    }
                    Ok(None) => {
                        tracing::info!(shard_id = %shard, "subscription ended; resubscribing");
                        continue 'subscribe;
                    }
                    Err(e) => {
                        failures += 1;
                        match e.as_service_error() {
                            // Kinesis refuses a new subscription within 5 s of the previous one
                            // (and while it is still held): expected after a renewal.
                            Some(s) if s.is_resource_in_use_exception() => {
                                tracing::debug!(shard_id = %shard, attempt = failures, "previous subscription still active; retrying");
                            }
                            Some(s) => {
                                tracing::warn!(shard_id = %shard, code = s.code().unwrap_or_default(), error = s.message().unwrap_or_default(), attempt = failures, "subscription failed; resubscribing");
                            }
                            None => {
                                tracing::warn!(shard_id = %shard, error = %DisplayErrorContext(&e), attempt = failures, "subscription failed; resubscribing");
                            }
                        }
                        self.pause(backoff(failures)).await;
                        continue 'subscribe;
                    }
                };
                failures = 0;
                if !active {
                    // The first event: the subscription is established.
                    active = true;
                    subscriptions += 1;
                    tracing::info!(
                        shard_id = %shard,
                        starting_position = %starting.r#type(),
                        sequence_number = starting.sequence_number().unwrap_or_default(),
                        subscriptions,
                        "subscribed to shard"
                    );
                }
                self.metrics.set_millis_behind_latest(event.millis_behind_latest());
                let raw = raw_records(event.records());
                let mut batch =
                    tokio::task::block_in_place(|| decode_batch(&self.ctx, &shard, &raw));
                if let Some(s) = &batch.last_sequence_number {
                    position = Some(s.clone());
                    last_record = Some(s.clone());
                }
                at_tip = raw.is_empty() && event.millis_behind_latest() == 0;
                let cont = event.continuation_sequence_number();
                if !cont.is_empty() {
                    position = Some(cont.to_owned());
                }
                let children = ShardInfo::from_child_shards(event.child_shards());
                batch.ended = !children.is_empty();
                let ended = batch.ended;
                if ended {
                    tracing::info!(shard_id = %shard, children = ?child_ids(&children), "shard ended");
                }
                let caught_up = event.millis_behind_latest() == 0;
                if self
                    .tx
                    .send(Event::Batch { batch, caught_up, children, epoch: self.epoch })
                    .await
                    .is_err()
                    || ended
                {
                    break 'subscribe;
                }
            }
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

fn child_ids(children: &[ShardInfo]) -> Vec<&str> {
    children.iter().map(|c| c.id.as_str()).collect()
}

/// Registers the enhanced fan-out consumer `name` on `stream` (or finds it, if it exists) and
/// waits until it is ACTIVE; returns its ARN. A consumer being deleted is waited for and
/// registered again. Gives up when it is not ACTIVE after `timeout`; throttled and failed calls are
/// retried without end (a permission or an unknown stream stops at once).
pub async fn register_consumer(
    client: &Client,
    stream: &str,
    name: &str,
    timeout: Duration,
) -> Result<String, ConsumeError> {
    // Throttling and transient faults are retried without end, as on every other AWS path of the
    // service; only an unknown stream or a refused permission stops.
    let summary = flowspike_retry::retry(
        "kinesis:DescribeStreamSummary",
        Policy::Forever,
        |e: &Classed| e.0,
        |_| {
            let req = client.describe_stream_summary().stream_name(stream);
            async move {
                req.send().await.map_err(|e| {
                    if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) {
                        let msg = format!("kinesis stream {stream:?} does not exist");
                        Classed(Class::Fatal, ConsumeError::Config(msg))
                    } else {
                        classed("DescribeStreamSummary", stream, None, &e)
                    }
                })
            }
        },
    )
    .await
    .map_err(|e| e.1)?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|s| s.stream_arn().to_owned())
        .ok_or_else(|| ConsumeError::Kinesis {
            op: "DescribeStreamSummary",
            stream: stream.to_owned(),
            shard: None,
            message: "no stream description in the answer".into(),
            retryable: true,
        })?;
    // `timeout` bounds the wait for the consumer to become ACTIVE; a throttled or failed call is
    // retried (forever, like every AWS call of the service) without spending it.
    let mut deadline = Instant::now() + timeout;
    let mut describe_retry = Retrier::new("kinesis:DescribeStreamConsumer", Policy::Forever);
    let mut register_retry = Retrier::new("kinesis:RegisterStreamConsumer", Policy::Forever);
    loop {
        let described = client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await;
        let status = match described {
            Ok(out) => out
                .consumer_description()
                .map(|d| (d.consumer_arn().to_owned(), d.consumer_status().clone())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                None
            }
            Err(e) => {
                let Classed(class, err) = classed("DescribeStreamConsumer", stream, None, &e);
                let started = Instant::now();
                match describe_retry.failed(class, &err) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(err),
                }
                deadline += started.elapsed();
                continue;
            }
        };
        describe_retry.succeeded();
        describe_retry = Retrier::new("kinesis:DescribeStreamConsumer", Policy::Forever);
        match status {
            Some((arn, ConsumerStatus::Active)) => {
                tracing::info!(consumer = name, consumer_arn = %arn, "enhanced fan-out consumer active");
                return Ok(arn);
            }
            Some((arn, status)) => {
                tracing::info!(consumer = name, consumer_arn = %arn, status = %status, "waiting for the stream consumer");
            }
            None => {
                let reg = client
                    .register_stream_consumer()
                    .stream_arn(&stream_arn)
                    .consumer_name(name)
                    .send()
                    .await;
                match reg {
                    Ok(out) => {
                        register_retry.succeeded();
                        register_retry =
                            Retrier::new("kinesis:RegisterStreamConsumer", Policy::Forever);
                        tracing::info!(consumer = name, consumer_arn = ?out.consumer().map(|c| c.consumer_arn()), "registered the stream consumer");
                    }
                    // Registered meanwhile (by another task): describe it again.
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_resource_in_use_exception()) => {}
                    Err(e) => {
                        let Classed(class, err) =
                            classed("RegisterStreamConsumer", stream, None, &e);
                        let started = Instant::now();
                        match register_retry.failed(class, &err) {
                            Some(pause) => tokio::time::sleep(pause).await,
                            None => return Err(err),
                        }
                        deadline += started.elapsed();
                        continue;
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(ConsumeError::Kinesis {
                op: "DescribeStreamConsumer",
                stream: stream.to_owned(),
                shard: None,
                message: format!("consumer {name:?} not ACTIVE after {timeout:?}"),
                retryable: true,
            });
        }
        tokio::time::sleep(CONSUMER_POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_the_shared_full_jitter() {
        for attempt in 0..20 {
            let ceiling = flowspike_retry::BASE_DELAY
                .saturating_mul(1 << attempt.min(16))
                .min(flowspike_retry::MAX_DELAY);
            assert!(backoff(attempt) <= ceiling, "{attempt}");
        }
    }
}
