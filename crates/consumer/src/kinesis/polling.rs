//! Polling: GetRecords on a shard iterator, at most 5 calls per second, retried with backoff,
//! the iterator renewed from the last sequence number when it expires or keeps failing.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use flowspike_retry::{Policy, Retrier};

use super::reader::child_ids;
use super::{classed, is_throttle, Classed, ShardInfo, ShardReader};

/// Most records one GetRecords call returns (the Kinesis maximum).
const GET_RECORDS_LIMIT: i32 = 10_000;
/// Shortest time between two GetRecords calls on one shard (Kinesis allows 5 per second).
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Pause after a poll that returned nothing.
const EMPTY_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Consecutive transient GetRecords failures after which the iterator is renewed (moto answers a
/// bad iterator with HTTP 500).
const RENEW_ITERATOR_AFTER_FAILURES: u32 = 3;

/// What the reader does next.
enum Flow<T> {
    /// Go on with this.
    Go(T),
    /// Start the loop again (after a pause, or to renew the iterator).
    Again,
    /// The shard ended, the consumer is gone or a non-retryable error was reported.
    Stop,
}

/// A polling reader's position between calls.
struct Polling {
    /// The next shard iterator (`None`: get one after `last_seq`).
    iterator: Option<String>,
    /// The last sequence number delivered.
    last_seq: Option<String>,
    /// The current streaks of failures of each call (forever: a reader never gives up on a
    /// retryable error); a success ends the streak.
    it_retry: Retrier,
    get_retry: Retrier,
}

fn it_retrier() -> Retrier {
    Retrier::new("kinesis:GetShardIterator", Policy::Forever)
}

fn get_retrier() -> Retrier {
    Retrier::new("kinesis:GetRecords", Policy::Forever)
}

impl ShardReader {
    /// Polls the shard until it ends, the consumer stops or a non-retryable error happens.
    pub(super) async fn run_polling(mut self) {
        let mut p = Polling {
            iterator: None,
            last_seq: None,
            it_retry: it_retrier(),
            get_retry: get_retrier(),
        };
        while !self.stopped() {
            let it = match self.next_iterator(&mut p).await {
                Flow::Go(it) => it,
                Flow::Again => continue,
                Flow::Stop => break,
            };
            let started = Instant::now();
            let out = match self.get_records(&mut p, it).await {
                Flow::Go(out) => out,
                Flow::Again => continue,
                Flow::Stop => break,
            };
            let Some(empty) = self.deliver(&mut p, out).await else { break };
            let wait = if empty { EMPTY_POLL_INTERVAL } else { MIN_POLL_INTERVAL };
            self.pause(wait.saturating_sub(started.elapsed())).await;
        }
    }

    /// The iterator of the next call: the one the last response gave, or a new one after the last
    /// sequence number. A closed shard read to its end has none: its end is reported.
    async fn next_iterator(&mut self, p: &mut Polling) -> Flow<String> {
        if let Some(it) = p.iterator.take() {
            return Flow::Go(it);
        }
        match self.iterator(p.last_seq.as_deref()).await {
            Ok(it) => {
                p.it_retry.succeeded();
                p.it_retry = it_retrier();
                match it {
                    Some(it) => Flow::Go(it),
                    None => {
                        self.send_end(Vec::new(), "GetShardIterator").await;
                        Flow::Stop
                    }
                }
            }
            Err(Classed(class, e)) => match p.it_retry.failed(class, &e) {
                Some(pause) => {
                    self.pause(pause).await;
                    Flow::Again
                }
                None => {
                    self.fail(e).await;
                    Flow::Stop
                }
            },
        }
    }

    /// One GetRecords call on `it`. An expired iterator is renewed at once; after a few failures
    /// in a row the iterator itself may be bad (moto answers one with HTTP 500) and is renewed too.
    async fn get_records(&mut self, p: &mut Polling, it: String) -> Flow<GetRecordsOutput> {
        let resp =
            self.client.get_records().shard_iterator(&it).limit(GET_RECORDS_LIMIT).send().await;
        self.metrics.getrecords_call();
        let e = match resp {
            Ok(out) => {
                p.get_retry.succeeded();
                p.get_retry = get_retrier();
                return Flow::Go(out);
            }
            Err(e) => e,
        };
        if is_throttle(&e) {
            self.metrics.throttled();
        }
        if e.as_service_error().is_some_and(|s| s.is_expired_iterator_exception()) {
            tracing::info!(shard_id = %self.shard_id, "iterator expired; renewing from the last sequence number");
            return Flow::Again;
        }
        let Classed(class, err) = classed("GetRecords", &self.stream, Some(&self.shard_id), &e);
        let Some(pause) = p.get_retry.failed(class, &err) else {
            self.fail(err).await;
            return Flow::Stop;
        };
        if !p.get_retry.failures().is_multiple_of(RENEW_ITERATOR_AFTER_FAILURES) {
            p.iterator = Some(it);
        }
        self.pause(pause).await;
        Flow::Again
    }

    /// Decodes and sends a response; `Some(empty)` to go on, `None` at the shard's end or when
    /// the coordinator is gone.
    async fn deliver(&mut self, p: &mut Polling, out: GetRecordsOutput) -> Option<bool> {
        let empty = out.records().is_empty();
        let caught_up = empty && out.millis_behind_latest().unwrap_or(0) == 0;
        if let Some(ms) = out.millis_behind_latest() {
            self.metrics.set_millis_behind_latest(ms);
        }
        let mut batch = self.decode(out.records());
        if let Some(s) = &batch.last_sequence_number {
            p.last_seq = Some(s.clone());
        }
        p.iterator = out.next_shard_iterator().map(str::to_owned);
        batch.ended = p.iterator.is_none();
        let children = if batch.ended {
            let c = ShardInfo::from_child_shards(out.child_shards());
            tracing::info!(shard_id = %self.shard_id, children = ?child_ids(&c), "shard ended");
            c
        } else {
            Vec::new()
        };
        let ended = batch.ended;
        (self.send(batch, caught_up, children).await && !ended).then_some(empty)
    }
}
