//! Which records count: the ESCU "blocked outbound" rule.

use flowlog::{Action, FieldError, FlowRecord, LogStatus};
use ipnet::IpNet;
use std::net::IpAddr;

/// The latest event time any part of flowspike accepts: 9999-12-31T23:59:59Z (unix seconds), the
/// bound `flowspike-synth` uses. Every hour at or before it converts to a chrono date, a Parquet
/// `TIMESTAMP` and a `date=YYYY-MM-DD` partition; later ones do not all (8.3e12 s overflows chrono).
pub const MAX_EVENT_TIME: u64 = 253_402_300_799;

/// Default of `--max-future-secs`: how far past the clock a record's `start` may be (one day).
pub const DEFAULT_MAX_FUTURE_SECS: u64 = 86_400;

/// Which event times (`start`, unix seconds) are accepted: at most [`TimeBounds::latest`], which
/// is never past [`MAX_EVENT_TIME`]. The one rule for every reader of `start` (counting, the
/// consumer's watermark, the lease worker, replay): a record outside it is malformed
/// ([`StartOutOfRange`]), counted and skipped, and moves no watermark.
///
/// There is no lower bound: a record of any past hour is legitimate late data (a catch-up after
/// a long outage).
///
/// ```
/// use flowspike_counter::{TimeBounds, MAX_EVENT_TIME};
/// let b = TimeBounds::at(1_767_225_600, 86_400);
/// assert_eq!(b.hour_of(1_767_225_601), Ok(1_767_225_600));
/// assert!(b.check(1_767_225_600 + 86_401).is_err());
/// assert!(TimeBounds::REPRESENTABLE.check(MAX_EVENT_TIME).is_ok());
/// assert!(TimeBounds::REPRESENTABLE.check(u64::MAX).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBounds {
    latest: u64,
}

impl Default for TimeBounds {
    /// [`TimeBounds::REPRESENTABLE`].
    fn default() -> Self {
        TimeBounds::REPRESENTABLE
    }
}

impl TimeBounds {
    /// Every representable event time (up to [`MAX_EVENT_TIME`]), whatever the clock: for tools
    /// without a notion of "now" (parsing, benchmarks) and for state read back from storage.
    pub const REPRESENTABLE: TimeBounds = TimeBounds { latest: MAX_EVENT_TIME };

    /// The bounds of a clock reading `now` (unix seconds) with a slack of `max_future_secs`:
    /// `start <= min(now + max_future_secs, MAX_EVENT_TIME)`. A clock before 1970 counts as 0.
    pub fn at(now: i64, max_future_secs: u64) -> TimeBounds {
        let now = u64::try_from(now).unwrap_or(0);
        TimeBounds { latest: now.saturating_add(max_future_secs).min(MAX_EVENT_TIME) }
    }

    /// The latest accepted `start` (unix seconds).
    pub fn latest(&self) -> u64 {
        self.latest
    }

    /// `start` when it is accepted.
    #[inline]
    pub fn check(&self, start: u64) -> Result<u64, StartOutOfRange> {
        if start <= self.latest {
            Ok(start)
        } else {
            Err(StartOutOfRange { start, latest: self.latest })
        }
    }

    /// The hour of an accepted `start` (see [`hour_of`]), which always fits an `i64`.
    #[inline]
    pub fn hour_of(&self, start: u64) -> Result<i64, StartOutOfRange> {
        let s = self.check(start)?;
        // `s <= MAX_EVENT_TIME`, far below `i64::MAX`: the conversion is exact.
        Ok((s - s % 3600) as i64)
    }

    /// True when hour `hour` (unix seconds) can hold an accepted `start`: `0 <= hour <= latest`.
    /// For state read back (manifests, lease tables) written before this rule existed.
    pub fn accepts_hour(&self, hour: i64) -> bool {
        u64::try_from(hour).is_ok_and(|h| h <= self.latest)
    }
}

/// A `start` outside the accepted event times ([`TimeBounds`]): the record is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("field start: {start} is out of range (latest accepted {latest}: the clock plus --max-future-secs, at most 9999-12-31T23:59:59Z)")]
pub struct StartOutOfRange {
    /// The record's `start`.
    pub start: u64,
    /// The latest accepted `start` when it was read.
    pub latest: u64,
}

/// Why [`Rule::classify`] refused a record that could have counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// A field value does not parse.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// `start` is outside the accepted event times.
    #[error(transparent)]
    Start(#[from] StartOutOfRange),
}

impl ClassifyError {
    /// A short fixed reason, for metric labels: `bad_value` or `start_out_of_range`.
    pub fn reason(&self) -> &'static str {
        match self {
            ClassifyError::Field(_) => "bad_value",
            ClassifyError::Start(_) => "start_out_of_range",
        }
    }
}

/// The start of the UTC hour holding `start` (unix seconds): `floor(start / 3600) * 3600`.
/// `None` when the result does not fit an `i64` (after the year 292 billion).
#[inline]
pub fn hour_of(start: u64) -> Option<i64> {
    i64::try_from(start - start % 3600).ok()
}

/// The values of one counted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<'a> {
    /// Start of the hour of `start` (unix seconds, a multiple of 3600).
    pub hour: i64,
    /// Source address (inside the internal networks).
    pub src: IpAddr,
    /// Destination address (outside the internal networks).
    pub dst: IpAddr,
    /// Raw `interface-id`, when present.
    pub interface_id: Option<&'a [u8]>,
    /// `bytes` (0 when absent).
    pub bytes: u64,
    /// `packets` (0 when absent).
    pub packets: u64,
}

/// IPv4 networks a [`Rule`] tests without a loop (RFC 1918's three and one more).
const V4_INLINE: usize = 4;

/// The counting rule: a record counts when `action` is REJECT, `log-status` is OK, `srcaddr` is
/// inside the internal networks and `dstaddr` is outside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    nets: Vec<IpNet>,
    /// IPv4 networks as (network, mask), for a branch-light test on the hot path: the first
    /// [`V4_INLINE`] in a fixed array (padded with a network no address is in), so the test
    /// unrolls; more, when there are, in `v4_more` (all of them).
    v4: [(u32, u32); V4_INLINE],
    /// Every IPv4 network when there are more than [`V4_INLINE`], else empty.
    v4_more: Vec<(u32, u32)>,
    /// IPv6 networks as (network, mask).
    v6: Vec<(u128, u128)>,
    /// Slack of event time past the clock (`--max-future-secs`).
    max_future_secs: u64,
    /// The event times [`Rule::classify`] accepts: see [`Rule::at_clock`].
    time: TimeBounds,
}

impl Default for Rule {
    /// RFC 1918: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 (so IPv6 sources never count).
    fn default() -> Self {
        Rule::new(vec![
            IpNet::V4(ipnet::Ipv4Net::new_assert([10, 0, 0, 0].into(), 8)),
            IpNet::V4(ipnet::Ipv4Net::new_assert([172, 16, 0, 0].into(), 12)),
            IpNet::V4(ipnet::Ipv4Net::new_assert([192, 168, 0, 0].into(), 16)),
        ])
    }
}

impl Rule {
    /// A rule whose internal networks are exactly `nets` (IPv4 and/or IPv6).
    pub fn new(nets: Vec<IpNet>) -> Rule {
        let mut v4_all = Vec::new();
        let mut v6 = Vec::new();
        for n in &nets {
            match n {
                IpNet::V4(n) => {
                    let mask = u32::from(n.netmask());
                    v4_all.push((u32::from(n.network()) & mask, mask));
                }
                IpNet::V6(n) => {
                    let mask = u128::from(n.netmask());
                    v6.push((u128::from(n.network()) & mask, mask));
                }
            }
        }
        // Mask 0 and network 1: `x & 0 == 1` holds for no address.
        let mut v4 = [(1, 0); V4_INLINE];
        let v4_more = if v4_all.len() <= V4_INLINE {
            v4[..v4_all.len()].copy_from_slice(&v4_all);
            Vec::new()
        } else {
            v4_all
        };
        Rule {
            nets,
            v4,
            v4_more,
            v6,
            max_future_secs: DEFAULT_MAX_FUTURE_SECS,
            time: TimeBounds::REPRESENTABLE,
        }
    }

    /// The same rule with a slack of `secs` for event times past the clock
    /// (default [`DEFAULT_MAX_FUTURE_SECS`]); applies from the next [`Rule::at_clock`] or
    /// [`Rule::bounds_at`].
    pub fn with_max_future_secs(mut self, secs: u64) -> Rule {
        self.max_future_secs = secs;
        self
    }

    /// The slack of event time past the clock, in seconds.
    pub fn max_future_secs(&self) -> u64 {
        self.max_future_secs
    }

    /// The accepted event times for a clock reading `now` (unix seconds): see [`TimeBounds::at`].
    pub fn bounds_at(&self, now: i64) -> TimeBounds {
        TimeBounds::at(now, self.max_future_secs)
    }

    /// The same rule, with [`Rule::classify`] accepting the event times of a clock reading `now`
    /// (a replay: the clock when it starts). A rule never set to a clock accepts every
    /// representable time ([`TimeBounds::REPRESENTABLE`]).
    pub fn at_clock(&self, now: i64) -> Rule {
        Rule { time: self.bounds_at(now), ..self.clone() }
    }

    /// The event times [`Rule::classify`] accepts.
    pub fn time_bounds(&self) -> TimeBounds {
        self.time
    }

    /// The internal networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    /// True when `ip` is inside one of the internal networks. Same answer as
    /// `self.networks().iter().any(|n| n.contains(&ip))`.
    #[inline]
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.is_internal_v4(a),
            IpAddr::V6(a) => {
                let x = u128::from(a);
                self.v6.iter().any(|&(net, mask)| x & mask == net)
            }
        }
    }

    /// [`Rule::is_internal`] of an IPv4 address.
    ///
    /// Every network is tested, the answers OR-ed: no early exit, whose branch depends on the
    /// address and so mispredicted about once per address tested (three networks by default).
    #[inline]
    pub fn is_internal_v4(&self, ip: std::net::Ipv4Addr) -> bool {
        let x = u32::from(ip);
        let test = |found, &(net, mask): &(u32, u32)| found | (x & mask == net);
        if self.v4_more.is_empty() {
            self.v4.iter().fold(false, test)
        } else {
            self.v4_more.iter().fold(false, test)
        }
    }

    /// The values to count for `rec`, or `None` when it does not count.
    ///
    /// Fields are read lazily in the order action, log-status, srcaddr, dstaddr, start, bytes,
    /// packets: a bad value is an `Err` only when the record could still count at that point (a bad
    /// `dstaddr` on an ACCEPT record is ignored). A REJECT/OK record missing `start`, `srcaddr` or
    /// `dstaddr` (absent from the format, or `-`) is not counted; missing `bytes`/`packets` count as 0.
    /// A `start` outside [`Rule::time_bounds`] is an `Err` ([`ClassifyError::Start`]).
    ///
    /// Nothing is parsed twice: for records of the decoder's scan, `action`, `log-status` and IPv4
    /// addresses are the values its check of the line already parsed (kept in the
    /// [`FlowRecord`]), and the numbers read here (`start`, `bytes`, `packets`) were only checked
    /// for digits there.
    #[inline]
    pub fn classify<'a>(&self, rec: &FlowRecord<'a>) -> Result<Option<Hit<'a>>, ClassifyError> {
        self.classify_within(rec, self.time)
    }

    /// [`Rule::classify`] with the event times `bounds` instead of [`Rule::time_bounds`] (a live
    /// service: the bounds of the clock at each batch, [`Rule::bounds_at`]).
    pub fn classify_within<'a>(
        &self,
        rec: &FlowRecord<'a>,
        bounds: TimeBounds,
    ) -> Result<Option<Hit<'a>>, ClassifyError> {
        if rec.action()? != Some(Action::Reject) {
            return Ok(None);
        }
        if rec.log_status()? != Some(LogStatus::Ok) {
            return Ok(None);
        }
        let Some(src) = rec.srcaddr()? else { return Ok(None) };
        if !self.is_internal(src) {
            return Ok(None);
        }
        let Some(dst) = rec.dstaddr()? else { return Ok(None) };
        if self.is_internal(dst) {
            return Ok(None);
        }
        let Some(start) = rec.start()? else { return Ok(None) };
        let hour = bounds.hour_of(start)?;
        let bytes = rec.bytes()?.unwrap_or(0);
        let packets = rec.packets()?.unwrap_or(0);
        Ok(Some(Hit { hour, src, dst, interface_id: rec.interface_id(), bytes, packets }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(rule: &Rule, ip: &str, expected: bool) {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(rule.is_internal(ip), expected, "{ip}");
    }

    #[test]
    fn default_rule_is_rfc1918() {
        let r = Rule::default();
        for (ip, exp) in [
            ("10.0.0.0", true),
            ("10.255.255.255", true),
            ("11.0.0.1", false),
            ("9.255.255.255", false),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("172.15.255.255", false),
            ("192.168.1.1", true),
            ("192.169.0.1", false),
            ("8.8.8.8", false),
            ("fd00::1", false),
            ("::ffff:10.0.0.1", false),
        ] {
            check(&r, ip, exp);
        }
    }

    #[test]
    fn custom_ipv6_and_ipv4_networks() {
        let r = Rule::new(vec!["fd00::/8".parse().unwrap(), "100.64.0.0/10".parse().unwrap()]);
        for (ip, exp) in [
            ("fd12::1", true),
            ("fe80::1", false),
            ("100.64.0.1", true),
            ("100.128.0.1", false),
            ("10.0.0.1", false),
        ] {
            check(&r, ip, exp);
        }
        assert!(!Rule::new(vec![]).is_internal("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn hour_of_floors_to_the_hour() {
        for (start, hour) in [
            (0, Some(0)),
            (3599, Some(0)),
            (3600, Some(3600)),
            (1_700_003_599, Some(1_700_002_800)),
        ] {
            assert_eq!(hour_of(start), hour, "{start}");
        }
        assert_eq!(hour_of(u64::MAX), None);
    }

    #[test]
    fn time_bounds_table() {
        let now: i64 = 1_767_225_600;
        let n = now as u64;
        let b = TimeBounds::at(now, 86_400);
        assert_eq!(b.latest(), n + 86_400);
        for (start, hour) in [
            (0, Some(0)),
            (n - 7 * 86_400, Some(now - 7 * 86_400)),
            (n + 86_399, Some(now + 82_800)),
            (n + 86_400, Some(now + 86_400)),
            (n + 86_401, None),
            (MAX_EVENT_TIME, None),
            (8_300_000_000_000, None),
            (i64::MAX as u64 + 1, None),
            (u64::MAX, None),
        ] {
            assert_eq!(b.hour_of(start).ok(), hour, "{start}");
            assert_eq!(b.check(start).is_ok(), hour.is_some(), "{start}");
        }
        assert_eq!(b.check(u64::MAX), Err(StartOutOfRange { start: u64::MAX, latest: n + 86_400 }));
        // The slack never reaches past what a timestamp can hold; a clock before 1970 is 0.
        assert_eq!(TimeBounds::at(i64::MAX, u64::MAX).latest(), MAX_EVENT_TIME);
        assert_eq!(TimeBounds::at(-5, 10).latest(), 10);
        assert_eq!(TimeBounds::REPRESENTABLE.hour_of(MAX_EVENT_TIME), Ok(253_402_297_200));
        assert!(TimeBounds::REPRESENTABLE.check(MAX_EVENT_TIME + 1).is_err());
        for (hour, ok) in [(-3600, false), (0, true), (now + 86_400, true), (now + 90_000, false)] {
            assert_eq!(b.accepts_hour(hour), ok, "{hour}");
        }
        assert!(!TimeBounds::REPRESENTABLE.accepts_hour(i64::MAX));
    }

    #[test]
    fn rule_clock_sets_the_bounds_of_classify() {
        let r = Rule::default().with_max_future_secs(60);
        assert_eq!(r.time_bounds(), TimeBounds::REPRESENTABLE);
        assert_eq!(r.at_clock(1000).time_bounds().latest(), 1060);
        assert_eq!(r.bounds_at(1000), TimeBounds::at(1000, 60));
        assert_eq!(Rule::default().max_future_secs(), DEFAULT_MAX_FUTURE_SECS);
    }

    proptest! {
        /// The mask test agrees with ipnet's `contains` for arbitrary networks and addresses.
        #[test]
        fn is_internal_agrees_with_ipnet(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<u128>(), 0u8..=128, any::<bool>()), 0..9),
            a4 in any::<u32>(), a6 in any::<u128>(),
        ) {
            let nets: Vec<IpNet> = nets.into_iter().map(|(n4, p4, n6, p6, v4)| if v4 {
                IpNet::V4(ipnet::Ipv4Net::new_assert(n4.into(), p4))
            } else {
                IpNet::V6(ipnet::Ipv6Net::new_assert(n6.into(), p6))
            }).collect();
            let r = Rule::new(nets.clone());
            for ip in [IpAddr::V4(a4.into()), IpAddr::V6(a6.into())] {
                prop_assert_eq!(r.is_internal(ip), nets.iter().any(|n| n.contains(&ip)));
            }
        }
    }
}
