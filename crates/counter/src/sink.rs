//! The one counting sink: parse → classify → count. [`CountSink`] is the [`flowlog::RecordSink`]
//! every pipeline that counts feeds (replay's workers, the streaming engine's `decode_batch`, the
//! benchmarks); what differs between them is a [`CountHooks`] (where a record's event time goes,
//! what happens to a bad line), not a copy of the loop.

use crate::{ClassifyError, Counter, Hit, Rule, ShardedCounter, TimeBounds};
use flowlog::{FlowRecord, LineError, RecordSink};
use std::fmt::Display;

/// Anything that counts hits ([`Counter`], [`ShardedCounter`]; `()` drops them, for a pipeline
/// that only needs [`SinkStats::counted`]).
pub trait HitSink {
    /// Counts one hit.
    fn add_hit(&mut self, hit: &Hit<'_>);

    /// Sees every record the [`CountSink`] accepted (its `start` within `bounds` when the hooks
    /// check it, the rule found no bad value), after the rule: where the other detections read
    /// what they need of the same pass (`flowspike-detections`). `start` is the record's `start`
    /// when the sink already read it (within `bounds`); `None` when it did not, or the record has
    /// none. Default: nothing.
    #[inline]
    fn record(
        &mut self,
        _rec: &FlowRecord<'_>,
        _rule: &Rule,
        _bounds: TimeBounds,
        _start: Option<u64>,
    ) {
    }
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

    #[inline]
    fn record(
        &mut self,
        rec: &FlowRecord<'_>,
        rule: &Rule,
        bounds: TimeBounds,
        start: Option<u64>,
    ) {
        (**self).record(rec, rule, bounds, start);
    }
}

impl HitSink for ShardedCounter {
    #[inline]
    fn add_hit(&mut self, hit: &Hit<'_>) {
        self.add(hit);
    }
}

impl HitSink for () {
    #[inline]
    fn add_hit(&mut self, _hit: &Hit<'_>) {}
}

/// What a [`CountSink`] saw: what the rule made of the parser's records and lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Records delivered by the parser.
    pub records: u64,
    /// Records that counted.
    pub counted: u64,
    /// Records skipped because a field value does not parse.
    pub bad_values: u64,
    /// Records skipped because their `start` is outside the event-time bounds
    /// ([`crate::TimeBounds`]).
    pub start_out_of_range: u64,
    /// Damaged lines reported by the parser.
    pub malformed: u64,
    /// CloudWatch Logs control messages skipped.
    pub control_messages: u64,
}

impl SinkStats {
    /// Everything skipped as damaged: damaged lines, bad values and starts out of range (what
    /// replay and the engine report as `malformed`).
    pub fn skipped(&self) -> u64 {
        self.malformed + self.bad_values + self.start_out_of_range
    }
}

/// What differs between the pipelines that count, called by [`CountSink`] around the rule.
/// Every method has a default that does nothing; `()` is the sink without hooks.
pub trait CountHooks {
    /// Whether every record's `start` goes through the event-time bounds before the rule,
    /// whatever its action (one past them is then skipped as bad): `true` where a record's
    /// `start` moves something (a watermark, the hours a replay rewrites), so a far-future
    /// `start` must move nothing. `false`: only the records that count are checked (by the rule).
    const CHECK_EVERY_START: bool = false;

    /// With [`CountHooks::CHECK_EVERY_START`]: the `start` of a record that passed the bounds
    /// (`None`: it has none). `false` skips the record (it is not classified).
    #[inline]
    fn start(&mut self, _start: Option<u64>) -> bool {
        true
    }

    /// A damaged line, or a record skipped as bad (its line number, and why); it is already
    /// counted in the [`SinkStats`].
    #[inline]
    fn bad(&mut self, _line: u64, _why: &dyn Display) {}
}

/// No hooks: every record goes to the rule; bad input is counted only.
impl CountHooks for () {}

/// A [`RecordSink`] that applies `rule` (within `bounds`) to every record, adds the hits to
/// `counter` and counts what it saw in `stats`; `hooks` decide the rest ([`CountHooks`]).
#[derive(Debug)]
pub struct CountSink<'r, C, H = ()> {
    /// The rule.
    pub rule: &'r Rule,
    /// The accepted event times ([`Rule::time_bounds`], or those of a live clock).
    pub bounds: TimeBounds,
    /// The counter fed.
    pub counter: C,
    /// What differs between pipelines.
    pub hooks: H,
    /// Counts of what was seen.
    pub stats: SinkStats,
}

impl<'r, C: HitSink> CountSink<'r, C> {
    /// A sink feeding `counter`, with the rule's own event-time bounds and no hooks.
    pub fn new(rule: &'r Rule, counter: C) -> Self {
        CountSink::with_hooks(rule, rule.time_bounds(), counter, ())
    }
}

impl<'r, C: HitSink, H: CountHooks> CountSink<'r, C, H> {
    /// A sink feeding `counter`, accepting the event times `bounds`, with `hooks`.
    pub fn with_hooks(rule: &'r Rule, bounds: TimeBounds, counter: C, hooks: H) -> Self {
        CountSink { rule, bounds, counter, hooks, stats: SinkStats::default() }
    }

    /// The `start` check of [`CountHooks::CHECK_EVERY_START`]: `None` when the record is skipped,
    /// else its `start` (`Some(None)`: it has none).
    #[inline]
    fn check_start(&mut self, rec: &FlowRecord<'_>) -> Option<Option<u64>> {
        let start = match rec.start() {
            Ok(Some(s)) => match self.bounds.check(s) {
                Ok(s) => Some(s),
                Err(e) => {
                    self.stats.start_out_of_range += 1;
                    self.hooks.bad(rec.line_number(), &e);
                    return None;
                }
            },
            Ok(None) => None,
            Err(e) => {
                self.stats.bad_values += 1;
                self.hooks.bad(rec.line_number(), &e);
                return None;
            }
        };
        self.hooks.start(start).then_some(start)
    }
}

impl<C: HitSink, H: CountHooks> RecordSink for CountSink<'_, C, H> {
    #[inline]
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.stats.records += 1;
        // With the check, the `start` read here goes on to the other detections' taps: read once.
        let start = if H::CHECK_EVERY_START {
            match self.check_start(rec) {
                Some(s) => s,
                None => return,
            }
        } else {
            None
        };
        match self.rule.classify_within(rec, self.bounds) {
            Ok(Some(hit)) => {
                self.stats.counted += 1;
                self.counter.add_hit(&hit);
                self.counter.record(rec, self.rule, self.bounds, start);
            }
            Ok(None) => self.counter.record(rec, self.rule, self.bounds, start),
            Err(e) => {
                match e {
                    ClassifyError::Field(_) => self.stats.bad_values += 1,
                    ClassifyError::Start(_) => self.stats.start_out_of_range += 1,
                }
                self.hooks.bad(rec.line_number(), &e);
            }
        }
    }

    fn malformed(&mut self, err: &LineError) {
        self.stats.malformed += 1;
        self.hooks.bad(err.line, err);
    }

    fn control_message(&mut self) {
        self.stats.control_messages += 1;
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
                malformed: 2,
                control_messages: 0,
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

    /// Hooks that check every `start`: a record past the bounds is bad whatever its action (it
    /// would move a watermark), one without a `start` reaches the hook as `None`, and a skipped
    /// record is not classified. Without hooks only the rule checks (counted records only).
    #[test]
    fn hooks_check_every_start_first() {
        #[derive(Default)]
        struct Seen {
            starts: Vec<Option<u64>>,
            bad: Vec<u64>,
        }
        impl CountHooks for Seen {
            const CHECK_EVERY_START: bool = true;
            fn start(&mut self, start: Option<u64>) -> bool {
                self.starts.push(start);
                start != Some(3700) // skips the record starting at 3700
            }
            fn bad(&mut self, line: u64, _why: &dyn Display) {
                self.bad.push(line);
            }
        }
        let input = "2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 2 60 3600 3660 REJECT OK\n\
                     2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 10 999999 999999 ACCEPT OK\n\
                     2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 10 - - REJECT OK\n\
                     2 1 eni-1 10.0.0.1 8.8.8.8 1 53 17 1 10 3700 3760 REJECT OK\n\
                     garbage\n";
        let rule = Rule::default();
        // Starts up to 86,400 s past a clock at 0.
        let bounds = rule.bounds_at(0);
        let mut hooked = CountSink::with_hooks(&rule, bounds, (), Seen::default());
        for_each_record(input.as_bytes(), &DecodeOptions::default(), &mut hooked).unwrap();
        assert_eq!(hooked.hooks.starts, [Some(3600), None, Some(3700)]);
        assert_eq!(hooked.hooks.bad, [2, 5]);
        assert_eq!(
            hooked.stats,
            SinkStats {
                records: 4,
                counted: 1,
                start_out_of_range: 1,
                malformed: 1,
                ..SinkStats::default()
            }
        );
        assert_eq!(hooked.stats.skipped(), 2);
        let mut plain = CountSink::with_hooks(&rule, bounds, (), ());
        for_each_record(input.as_bytes(), &DecodeOptions::default(), &mut plain).unwrap();
        // The ACCEPT record past the bounds does not count either way, so the rule never checks
        // its `start`; the one at 3700 counts.
        assert_eq!(
            plain.stats,
            SinkStats { records: 4, counted: 2, malformed: 1, ..SinkStats::default() }
        );
    }
}
