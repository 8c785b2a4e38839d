//! Kinesis records to a [`Batch`]: framing detection, the counting rule, bad input counted.

use flowlog::{DecodeOptions, FlowRecord, LineError, RecordSink};
use flowspike_counter::{Counter, CounterConfig, Rule};

use crate::engine::{Batch, Stats};

/// At most this many malformed lines are logged per Kinesis record (all are counted).
const MAX_LOGGED_PER_RECORD: u64 = 3;

/// Everything a shard reader needs to turn bytes into aggregates.
#[derive(Debug, Clone)]
pub struct DecodeContext {
    /// Framing and format (framing `auto` detects CloudWatch Logs envelopes, gzip, KPL, lines).
    pub decode: DecodeOptions,
    /// Which records count.
    pub rule: Rule,
    /// Counter limits.
    pub counter: CounterConfig,
}

/// One Kinesis record: its sequence number and data.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    /// Sequence number.
    pub sequence_number: &'a str,
    /// The record's data blob.
    pub data: &'a [u8],
}

/// Decodes whole Kinesis records of `shard_id` into a batch. Bad lines and undecodable records are
/// counted in the batch's stats and logged (with shard id and sequence number), never fatal.
pub fn decode_batch(ctx: &DecodeContext, shard_id: &str, records: &[RawRecord<'_>]) -> Batch {
    let mut counter = Counter::new(ctx.counter);
    let mut stats = Stats::default();
    let mut max_start = None;
    for r in records {
        stats.kinesis_records += 1;
        stats.kinesis_bytes += r.data.len() as u64;
        let mut sink = Sink {
            counter: &mut counter,
            rule: &ctx.rule,
            stats: &mut stats,
            max_start: &mut max_start,
            shard_id,
            sequence_number: r.sequence_number,
            logged: 0,
        };
        if let Err(e) = flowlog::for_each_record(r.data, &ctx.decode, &mut sink) {
            stats.undecodable += 1;
            tracing::warn!(shard_id, sequence_number = r.sequence_number, error = %e, "undecodable kinesis record skipped");
        }
    }
    Batch {
        shard_id: shard_id.to_owned(),
        last_sequence_number: records.last().map(|r| r.sequence_number.to_owned()),
        counter,
        max_start,
        stats,
        ended: false,
    }
}

struct Sink<'a> {
    counter: &'a mut Counter,
    rule: &'a Rule,
    stats: &'a mut Stats,
    max_start: &'a mut Option<u64>,
    shard_id: &'a str,
    sequence_number: &'a str,
    logged: u64,
}

impl Sink<'_> {
    fn bad(&mut self, line: u64, error: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        if self.logged < MAX_LOGGED_PER_RECORD {
            self.logged += 1;
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

impl RecordSink for Sink<'_> {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.stats.flow_records += 1;
        match rec.start() {
            Ok(Some(s)) => *self.max_start = Some(self.max_start.map_or(s, |m| m.max(s))),
            Ok(None) => {}
            Err(e) => return self.bad(rec.line_number(), &e),
        }
        match self.rule.classify(rec) {
            Ok(Some(hit)) => {
                self.counter.add(&hit);
                self.stats.counted += 1;
            }
            Ok(None) => {}
            Err(e) => self.bad(rec.line_number(), &e),
        }
    }

    fn malformed(&mut self, err: &LineError) {
        self.bad(err.line, err);
    }

    fn control_message(&mut self) {
        self.stats.control_messages += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DecodeContext {
        DecodeContext {
            decode: DecodeOptions::default(),
            rule: Rule::default(),
            counter: CounterConfig::default(),
        }
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
        let b = decode_batch(&ctx(), "shardId-0", &records);
        assert_eq!(b.last_sequence_number.as_deref(), Some("2"));
        assert_eq!(b.stats.kinesis_records, 2);
        assert_eq!(b.stats.kinesis_bytes, (good.len() + bad.len()) as u64);
        assert_eq!(b.stats.flow_records, 3);
        assert_eq!(b.stats.counted, 1);
        assert_eq!(b.stats.malformed, 1);
        assert_eq!(b.max_start, Some(7300));
        let rows = b.counter.into_rows();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].hour, rows[0].blocked_count), (7200, 1));
    }

    #[test]
    fn empty_batch_keeps_no_position() {
        let b = decode_batch(&ctx(), "s", &[]);
        assert_eq!(b.last_sequence_number, None);
        assert!(b.counter.is_empty());
    }
}
