//! Kinesis records to a [`Batch`]: framing detection, the counting rule, bad input counted.

use flowspike_counter::{CountHooks, CountSink, Counter, Pipeline, SinkStats};
use flowspike_detections::{DetectionsConfig, Taps, WithTaps};

use crate::engine::{Batch, Stats};

/// At most this many malformed lines are logged per Kinesis record (all are counted).
const MAX_LOGGED_PER_RECORD: u64 = 3;

/// At most this many malformed lines are logged per batch (a Firehose request of 200,000 bad
/// records must not write 600,000 log lines; all are counted).
const MAX_LOGGED_PER_BATCH: u64 = 10;

/// One Kinesis record: its sequence number and data.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Sequence number.
    pub sequence_number: &'a str,
    /// The record's data blob.
    pub data: &'a [u8],
}

/// Decodes whole Kinesis records of `shard_id` into a batch. Bad lines and undecodable records are
/// counted in the batch's stats and logged (with shard id and sequence number, a few per record
/// and per batch), never fatal. Event times are checked against the rule's bounds at the wall
/// clock now ([`Rule::bounds_at`](flowspike_counter::Rule::bounds_at)): see [`decode_batch_at`].
/// Of `pipeline` it uses the decoding, the rule and the counter limits; when `detections` runs
/// any detection but the blocked spike, every accepted record also goes to the batch's
/// [`Taps`] (as in replay: through [`WithTaps`]).
pub fn decode_batch(
    pipeline: &Pipeline,
    detections: &DetectionsConfig,
    shard_id: &str,
    records: &[RawRecord<'_>],
) -> Batch {
    decode_batch_at(pipeline, detections, shard_id, records, crate::engine::now_secs())
}

/// [`decode_batch`] with the clock reading `now` (unix seconds). A flow record whose `start` is
/// outside `pipeline.rule.bounds_at(now)` is malformed (counted in `malformed` and
/// `start_out_of_range`): it is not counted and does not move the batch's `max_start`, whatever
/// its action.
pub fn decode_batch_at(
    pipeline: &Pipeline,
    detections: &DetectionsConfig,
    shard_id: &str,
    records: &[RawRecord<'_>],
    now: i64,
) -> Batch {
    let mut counter = Counter::new(pipeline.counter);
    let mut taps = Taps::new(detections);
    let on = taps.is_on();
    let mut stats = Stats::default();
    let mut max_start = None;
    let bounds = pipeline.rule.bounds_at(now);
    let mut logged_in_batch = 0;
    for r in records {
        stats.kinesis_records += 1;
        stats.kinesis_bytes += r.data.len() as u64;
        let hooks = Hooks {
            max_start: &mut max_start,
            shard_id,
            sequence_number: r.sequence_number,
            logged: 0,
            logged_in_batch: &mut logged_in_batch,
        };
        // Two monomorphic loops: with no tap on, the counting sink runs exactly as before.
        let (decoded, seen) = if on {
            let hits = WithTaps { counter: &mut counter, taps: &mut taps };
            let mut sink = CountSink::with_hooks(&pipeline.rule, bounds, hits, hooks);
            (flowlog::for_each_record(r.data, &pipeline.decode, &mut sink), sink.stats)
        } else {
            let mut sink = CountSink::with_hooks(&pipeline.rule, bounds, &mut counter, hooks);
            (flowlog::for_each_record(r.data, &pipeline.decode, &mut sink), sink.stats)
        };
        add_counts(&mut stats, &seen);
        if let Err(e) = decoded {
            stats.undecodable += 1;
            tracing::warn!(shard_id, sequence_number = r.sequence_number, error = %e, "undecodable kinesis record skipped");
        }
    }
    Batch {
        shard_id: shard_id.to_owned(),
        last_sequence_number: records.last().map(|r| r.sequence_number.to_owned()),
        counter,
        taps: on.then_some(taps),
        max_start,
        stats,
        ended: false,
    }
}

/// Adds what a counting sink saw to a batch's counts.
fn add_counts(stats: &mut Stats, seen: &SinkStats) {
    stats.flow_records += seen.records;
    stats.counted += seen.counted;
    stats.malformed += seen.skipped();
    stats.start_out_of_range += seen.start_out_of_range;
    stats.control_messages += seen.control_messages;
}

/// The engine's hooks on the counting sink: the batch's latest event time, and bad input logged
/// (a few per Kinesis record and per batch).
struct Hooks<'a> {
    max_start: &'a mut Option<u64>,
    shard_id: &'a str,
    sequence_number: &'a str,
    logged: u64,
    logged_in_batch: &'a mut u64,
}

impl CountHooks for Hooks<'_> {
    // Every record's `start` moves the watermark, whatever its action: each goes through the
    // rule's bounds first, so a far-future one moves nothing.
    const CHECK_EVERY_START: bool = true;

    #[inline]
    fn start(&mut self, start: Option<u64>) -> bool {
        if let Some(s) = start {
            *self.max_start = Some(self.max_start.map_or(s, |m| m.max(s)));
        }
        true
    }

    fn bad(&mut self, line: u64, error: &dyn std::fmt::Display) {
        if self.logged < MAX_LOGGED_PER_RECORD && *self.logged_in_batch < MAX_LOGGED_PER_BATCH {
            self.logged += 1;
            *self.logged_in_batch += 1;
            tracing::warn!(
                shard_id = self.shard_id,
                sequence_number = self.sequence_number,
                line,
                error = %error,
                "malformed flow log record skipped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Pipeline {
        Pipeline::default()
    }

    #[test]
    fn counts_and_skips_bad_input() {
        let good = b"2 123456789012 eni-1 10.0.0.1 8.8.8.8 443 1234 6 1 40 7200 7260 REJECT OK\n\
                     2 123456789012 eni-1 10.0.0.1 8.8.8.8 443 1234 6 1 40 7300 7360 ACCEPT OK\n";
        let bad =
            b"2 123456789012 eni-1 10.0.0.1 8.8.8.8 443 1234 6 1 40 notanumber 7260 REJECT OK\n";
        let records = [
            RawRecord { sequence_number: "1", data: good },
            RawRecord { sequence_number: "2", data: bad },
        ];
        let b = decode_batch(&ctx(), &DetectionsConfig::none(), "shardId-0", &records);
        assert_eq!(b.last_sequence_number.as_deref(), Some("2"));
        assert_eq!(b.stats.kinesis_records, 2);
        assert_eq!(b.stats.kinesis_bytes, (good.len() + bad.len()) as u64);
        // The line with a damaged `start` is malformed in the parser: never delivered as a record.
        assert_eq!(b.stats.flow_records, 2);
        assert_eq!(b.stats.counted, 1);
        assert_eq!(b.stats.malformed, 1);
        assert_eq!(b.max_start, Some(7300));
        let rows = b.counter.into_rows();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].hour, rows[0].blocked_count), (7200, 1));
    }

    #[test]
    fn empty_batch_keeps_no_position() {
        let b = decode_batch(&ctx(), &DetectionsConfig::none(), "s", &[]);
        assert_eq!(b.last_sequence_number, None);
        assert!(b.counter.is_empty());
    }
}
