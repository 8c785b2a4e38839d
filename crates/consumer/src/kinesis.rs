//! Kinesis I/O: the client, ListShards, one polling reader task per shard, PutRecords for spikes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use aws_sdk_kinesis::Client;
use crossbeam_utils::CachePadded;
use flowspike_detect::Spike;
use rand::Rng;
use tokio::sync::{mpsc, watch};

use crate::decode::{decode_batch, DecodeContext, RawRecord};
use crate::engine::{Batch, SpikeSink};
use crate::metrics::ShardMetrics;
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
/// Most entries of one PutRecords call.
const PUT_RECORDS_MAX: usize = 500;
/// Attempts of one PutRecords batch before giving up.
const PUT_ATTEMPTS: u32 = 8;

/// A Kinesis client from the SDK's standard configuration: credential chain, region,
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_KINESIS`.
pub async fn client_from_env() -> Client {
    let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    Client::new(&conf)
}

/// The error text and retry class of an SDK error.
fn describe<E>(e: &SdkError<E, HttpResponse>) -> (String, bool)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let retryable = match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or_default();
            s.raw().status().as_u16() >= 500
                || matches!(
                    code,
                    "ProvisionedThroughputExceededException"
                        | "LimitExceededException"
                        | "ExpiredIteratorException"
                        | "KMSThrottlingException"
                        | "ThrottlingException"
                )
        }
        _ => false,
    };
    (DisplayErrorContext(e).to_string(), retryable)
}

/// True when Kinesis throttled the call (the shard's or the account's limits, or KMS).
fn is_throttle<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    e.as_service_error().is_some_and(|s| {
        matches!(
            s.code().unwrap_or_default(),
            "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "KMSThrottlingException"
                | "ThrottlingException"
        )
    })
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
    let (message, retryable) = describe(e);
    ConsumeError::Kinesis {
        op,
        stream: stream.to_owned(),
        shard: shard.map(str::to_owned),
        message,
        retryable,
    }
}

/// Exponential backoff with jitter: about `200 ms * 2^attempt`, capped at 10 s, randomised to
/// between half and all of it.
pub fn backoff(attempt: u32) -> Duration {
    let full =
        Duration::from_millis(200).saturating_mul(1 << attempt.min(6)).min(Duration::from_secs(10));
    let ms = full.as_millis() as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms.max(1)))
}

/// A shard of the stream, as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard id.
    pub id: String,
    /// Parent shards (split or merge); they are read to their end before this one starts.
    pub parents: Vec<String>,
}

/// Every shard of `stream` (open and closed ones still within retention).
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<ShardInfo>, ConsumeError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let resp = req.send().await.map_err(|e| {
            let not_found =
                e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception());
            if not_found {
                ConsumeError::Config(format!("kinesis stream {stream:?} does not exist"))
            } else {
                kinesis_err("ListShards", stream, None, &e)
            }
        })?;
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
pub enum Event {
    /// One GetRecords response, decoded.
    Batch {
        /// The aggregates and position.
        batch: Batch,
        /// True when the response was empty and the shard is at its tip.
        caught_up: bool,
    },
    /// A non-retryable error: the consumer stops.
    Failed(ConsumeError),
}

/// A polling reader of one shard.
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
}

impl ShardReader {
    async fn iterator(&self, after: Option<&str>) -> Result<Option<String>, ConsumeError> {
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
            kinesis_err("GetShardIterator", &self.stream, Some(&self.shard_id), &e)
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
    pub async fn run(mut self) {
        let mut iterator: Option<String> = None;
        let mut last_seq: Option<String> = None;
        let mut failures: u32 = 0;
        let shard = self.shard_id.clone();
        loop {
            if *self.stop.borrow() {
                break;
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => match self.iterator(last_seq.as_deref()).await {
                    Ok(Some(it)) => it,
                    Ok(None) => {
                        // A closed shard read to its end has no iterator.
                        let batch = decode_batch(&self.ctx, &shard, &[]);
                        let batch = Batch { ended: true, ..batch };
                        let _ = self.tx.send(Event::Batch { batch, caught_up: true }).await;
                        break;
                    }
                    Err(e) if e.is_retryable() => {
                        failures += 1;
                        tracing::warn!(shard_id = %shard, error = %e, attempt = failures, "retrying");
                        self.pause(backoff(failures)).await;
                        continue;
                    }
                    Err(e) => {
                        let _ = self.tx.send(Event::Failed(e)).await;
                        break;
                    }
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
                    let err = kinesis_err("GetRecords", &self.stream, Some(&shard), &e);
                    if expired {
                        tracing::info!(shard_id = %shard, "iterator expired; renewing from the last sequence number");
                        continue;
                    }
                    if !err.is_retryable() {
                        let _ = self.tx.send(Event::Failed(err)).await;
                        break;
                    }
                    failures += 1;
                    if failures < RENEW_ITERATOR_AFTER_FAILURES {
                        iterator = Some(it);
                    }
                    tracing::warn!(shard_id = %shard, error = %err, attempt = failures, "GetRecords failed; backing off");
                    self.pause(backoff(failures)).await;
                    continue;
                }
            };
            failures = 0;
            let raw: Vec<RawRecord<'_>> = out
                .records()
                .iter()
                .map(|r| RawRecord {
                    sequence_number: r.sequence_number(),
                    data: r.data().as_ref(),
                })
                .collect();
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
            if self.tx.send(Event::Batch { batch, caught_up }).await.is_err() || ended {
                if ended {
                    tracing::info!(shard_id = %shard, "shard ended");
                }
                break;
            }
            let wait = if empty { EMPTY_POLL_INTERVAL } else { MIN_POLL_INTERVAL };
            self.pause(wait.saturating_sub(started.elapsed())).await;
        }
    }
}

/// Spikes to a Kinesis stream with PutRecords (partition key: the source address); a partial
/// failure retries only the failed entries, with backoff.
pub struct KinesisSink {
    /// The client.
    pub client: Client,
    /// The output stream.
    pub stream: String,
    /// The runtime to block on (the coordinator is synchronous).
    pub handle: tokio::runtime::Handle,
}

impl KinesisSink {
    async fn put(&self, spikes: &[Spike]) -> Result<(), ConsumeError> {
        for chunk in spikes.chunks(PUT_RECORDS_MAX) {
            let mut entries = Vec::with_capacity(chunk.len());
            for s in chunk {
                let e = PutRecordsRequestEntry::builder()
                    .data(Blob::new(s.to_json_line().into_bytes()))
                    .partition_key(&s.src_ip)
                    .build()
                    .map_err(|e| ConsumeError::Output {
                        message: e.to_string(),
                        retryable: false,
                    })?;
                entries.push(e);
            }
            let mut attempt = 0;
            while !entries.is_empty() {
                attempt += 1;
                let resp = self
                    .client
                    .put_records()
                    .stream_name(&self.stream)
                    .set_records(Some(entries.clone()))
                    .send()
                    .await;
                let failed: Vec<PutRecordsRequestEntry> = match resp {
                    Ok(out) => out
                        .records()
                        .iter()
                        .zip(entries.iter())
                        .filter(|(r, _)| r.error_code().is_some())
                        .map(|(_, e)| e.clone())
                        .collect(),
                    Err(e) => {
                        let (message, retryable) = describe(&e);
                        if !retryable || attempt >= PUT_ATTEMPTS {
                            return Err(ConsumeError::Output {
                                message: format!("PutRecords to {}: {message}", self.stream),
                                retryable,
                            });
                        }
                        entries.clone()
                    }
                };
                if !failed.is_empty() {
                    if attempt >= PUT_ATTEMPTS {
                        return Err(ConsumeError::Output {
                            message: format!(
                                "PutRecords to {}: {} entries still failing after {attempt} attempts",
                                self.stream,
                                failed.len()
                            ),
                            retryable: true,
                        });
                    }
                    tracing::warn!(stream = %self.stream, failed = failed.len(), attempt, "PutRecords partial failure; retrying the failed entries");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                entries = failed;
            }
        }
        Ok(())
    }
}

impl SpikeSink for KinesisSink {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), ConsumeError> {
        self.handle.block_on(self.put(spikes))
    }
}

/// Spikes as JSON lines to a writer (standard output by default).
pub struct WriterSink<W: std::io::Write>(pub W);

impl<W: std::io::Write> SpikeSink for WriterSink<W> {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), ConsumeError> {
        let io =
            |e: std::io::Error| ConsumeError::Output { message: e.to_string(), retryable: false };
        for s in spikes {
            self.0.write_all(s.to_json_line().as_bytes()).map_err(io)?;
            self.0.write_all(b"\n").map_err(io)?;
        }
        self.0.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let full = 200u64.saturating_mul(1 << attempt.min(6)).min(10_000);
            assert!(
                d.as_millis() as u64 >= full / 2 && d.as_millis() as u64 <= full,
                "{attempt}: {d:?}"
            );
        }
    }
}
