//! Glue from the parser: a [`flowlog::RecordSink`] that classifies records and counts the hits.

use crate::{ClassifyError, Counter, Hit, Rule, ShardedCounter};
use flowlog::{FlowRecord, LineError, RecordSink};

/// Anything that counts hits ([`Counter`], [`ShardedCounter`]).
pub trait HitSink {
    /// Counts one hit.
    fn add_hit(&mut self, hit: &Hit<'_>);
}

impl HitSink for Counter {
    #[inline]
    fn add_hit(&mut self, hit: &Hit<'_>) {
        self.add(hit);
    }
}

impl<C: HitSink + ?Sized> HitSink for &mut C {
    #[inline]
    fn add_hit(&mut self, hit: &Hit<'_>) {
        (**self).add_hit(hit);
    }
}

impl HitSink for ShardedCounter {
    #[inline]
    fn add_hit(&mut self, hit: &Hit<'_>) {
        self.add(hit);
    }
}

/// What a [`CountSink`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records delivered by the parser.
    pub records: u64,
    /// Records that counted.
    pub counted: u64,
    /// Records skipped because a field value does not parse.
    pub bad_values: u64,
    /// Records skipped because their `start` is outside the rule's event times
    /// ([`crate::TimeBounds`]).
    pub start_out_of_range: u64,
    /// Damaged lines reported by the parser.
    pub malformed: u64,
}

/// A [`RecordSink`] that applies `rule` to every record and adds the hits to `counter`.
#[derive(Debug)]
pub struct CountSink<'r, C> {
    /// The rule.
    pub rule: &'r Rule,
    /// The counter fed.
    pub counter: C,
    /// Counts of what was seen.
    pub stats: SinkStats,
}

impl<'r, C: HitSink> CountSink<'r, C> {
    /// A sink feeding `counter`.
    pub fn new(rule: &'r Rule, counter: C) -> Self {
        CountSink { rule, counter, stats: SinkStats::default() }
    }
}

impl<C: HitSink> RecordSink for CountSink<'_, C> {
    #[inline]
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.stats.records += 1;
        match self.rule.classify(rec) {
            Ok(Some(hit)) => {
                self.stats.counted += 1;
                self.counter.add_hit(&hit);
            }
            Ok(None) => {}
            Err(ClassifyError::Field(_)) => self.stats.bad_values += 1,
            Err(ClassifyError::Start(_)) => self.stats.start_out_of_range += 1,
        }
    }

    fn malformed(&mut self, _err: &LineError) {
        self.stats.malformed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CounterConfig;
    use flowlog::{for_each_record, DecodeOptions};

    /// Runs one default-format line (no header) through the rule: `Some((hour, src, dst))` when it
    /// counts, `None` when not, `Err` for a bad value.
    fn check(line: &str, expected: Result<Option<(i64, &str, &str)>, ()>) {
        type Outcome = Result<Option<(i64, String, String)>, ()>;
        struct One(Option<Outcome>);
        impl RecordSink for One {
            fn record(&mut self, rec: &FlowRecord<'_>) {
                self.0 = Some(
                    Rule::default()
                        .classify(rec)
                        .map(|o| o.map(|h| (h.hour, h.src.to_string(), h.dst.to_string())))
                        .map_err(|_| ()),
                );
            }
            fn malformed(&mut self, _: &LineError) {}
        }
        let mut s = One(None);
        for_each_record(line.as_bytes(), &DecodeOptions::default(), &mut s).unwrap();
        // A bad value makes the line malformed in the parser (#28 item 3): no record, `Err`.
        let got = s.0.unwrap_or(Err(()));
        let want = expected.map(|o| o.map(|(h, s, d)| (h, s.to_owned(), d.to_owned())));
        assert_eq!(got, want, "{line}");
    }

    #[test]
    fn classify_table() {
        let l = |src: &str, dst: &str, start: &str, action: &str, status: &str| {
            format!("2 123 eni-1 {src} {dst} 1 53 17 1 60 {start} 7300 {action} {status}")
        };
        check(
            &l("10.0.0.1", "8.8.8.8", "7250", "REJECT", "OK"),
            Ok(Some((7200, "10.0.0.1", "8.8.8.8"))),
        );
        check(
            &l("172.20.0.1", "1.1.1.1", "3599", "REJECT", "OK"),
            Ok(Some((0, "172.20.0.1", "1.1.1.1"))),
        );
        check(&l("10.0.0.1", "8.8.8.8", "7250", "ACCEPT", "OK"), Ok(None));
        check(&l("10.0.0.1", "192.168.1.1", "7250", "REJECT", "OK"), Ok(None));
        check(&l("8.8.8.8", "1.1.1.1", "7250", "REJECT", "OK"), Ok(None));
        check(&l("fd00::1", "2001:db8::1", "7250", "REJECT", "OK"), Ok(None));
        check(&l("10.0.0.1", "-", "7250", "REJECT", "OK"), Ok(None));
        check(&l("10.0.0.1", "8.8.8.8", "-", "REJECT", "OK"), Ok(None));
        check(&l("10.0.0.1", "8.8.8.8", "7250", "REJECT", "SKIPDATA"), Ok(None));
        check(&l("10.0.0.1", "8.8.8.8", "x7250", "REJECT", "OK"), Err(()));
        // Past 9999-12-31T23:59:59Z: not representable, malformed (8.3e12 used to reach chrono).
        check(
            &l("10.0.0.1", "8.8.8.8", "253402300799", "REJECT", "OK"),
            Ok(Some((253402297200, "10.0.0.1", "8.8.8.8"))),
        );
        check(&l("10.0.0.1", "8.8.8.8", "253402300800", "REJECT", "OK"), Err(()));
        check(&l("10.0.0.1", "8.8.8.8", "8300000000000", "REJECT", "OK"), Err(()));
        check(&l("10.0.0.1", "8.8.8.8", "18446744073709551615", "REJECT", "OK"), Err(()));
        check(&l("10.0.0.999", "8.8.8.8", "7250", "REJECT", "OK"), Err(()));
        // A bad value in a field not needed to decide damages the line too.
        check(&l("10.0.0.1", "not-an-ip", "7250", "ACCEPT", "OK"), Err(()));
    }

    #[test]
    fn count_sink_counts_lines() {
        let input = "2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 2 60 3600 3660 REJECT OK\n\
                     2 1 eni-2 10.0.0.1 8.8.4.4 1 53 17 3 70 3700 3760 REJECT OK\n\
                     2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 10 3800 3860 ACCEPT OK\n\
                     2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 bad 3800 3860 REJECT OK\n\
                     garbage\n";
        let rule = Rule::default();
        let mut sink = CountSink::new(&rule, Counter::new(CounterConfig::default()));
        for_each_record(input.as_bytes(), &DecodeOptions::default(), &mut sink).unwrap();
        assert_eq!(
            sink.stats,
            SinkStats {
                records: 3,
                counted: 2,
                bad_values: 0,
                start_out_of_range: 0,
                malformed: 2
            }
        );
        let rows = sink.counter.into_rows();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.hour, r.blocked_count, r.unique_dest_count, r.bytes, r.packets),
            (3600, 2, 2, 130, 5)
        );
        assert_eq!(r.interface_ids, ["eni-1", "eni-2"]);
    }
}
