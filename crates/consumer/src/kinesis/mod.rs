//! Kinesis I/O, one job per module: [`list_shards`] (`list.rs`), the shard reader task
//! ([`ShardReader`], `reader.rs`) reading by polling GetRecords (`polling.rs`) or by enhanced
//! fan-out SubscribeToShard (`efo.rs`), and the registration of the enhanced fan-out consumer
//! ([`register_consumer`], `register.rs`). This module holds what they share: the shard and
//! start-position types, the reader's [`Event`]s and the SDK error mapping. Spikes to a stream:
//! `flowspike_aws::kinesis::KinesisSink`.

use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ChildShard;
use flowspike_engine::Batch;
use flowspike_retry::Class;

use crate::ConsumeError;

mod efo;
mod list;
mod polling;
mod reader;
mod register;

pub use flowspike_aws::kinesis::client_from_env;
/// Capped exponential backoff with full jitter (`flowspike_retry::backoff`).
pub use flowspike_retry::backoff;
pub use list::list_shards;
pub use reader::ShardReader;
pub use register::register_consumer;

/// True when Kinesis throttled the call (the shard's or the account's limits, or KMS).
fn is_throttle<E>(e: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    flowspike_retry::classify(e) == Class::Throttled
}

/// A consumer error with the retry class of the SDK error behind it (for `flowspike_retry`'s
/// loops, which count throttles apart from other faults).
struct Classed(Class, ConsumeError);

impl std::fmt::Display for Classed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.1.fmt(f)
    }
}

/// The consumer error of a failed Kinesis call, with its class (`flowspike_retry::classify`: the
/// error is retryable as the class says).
fn classed<E>(
    op: &'static str,
    stream: &str,
    shard: Option<&str>,
    e: &SdkError<E, HttpResponse>,
) -> Classed
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let class = flowspike_retry::classify(e);
    let err = ConsumeError::Kinesis {
        op,
        stream: stream.to_owned(),
        shard: shard.map(str::to_owned),
        message: flowspike_retry::describe(e),
        retryable: class.is_retryable(),
    };
    Classed(class, err)
}

/// The error of a call about a stream that does not exist: a configuration error, never retried.
fn no_such_stream(stream: &str) -> Classed {
    let msg = format!("kinesis stream {stream:?} does not exist");
    Classed(Class::Fatal, ConsumeError::Config(msg))
}

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
        /// The [`ShardReader::epoch`] of the reader that read it (the coordinator drops batches
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
