//! Which records count: the ESCU "blocked outbound" rule.

use flowlog::{Action, FieldError, FlowRecord, LogStatus};
use ipnet::IpNet;
use std::net::IpAddr;

/// Seconds in an hour.
pub const HOUR: i64 = 3600;

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

/// The counting rule: a record counts when `action` is REJECT, `log-status` is OK, `srcaddr` is
/// inside the internal networks and `dstaddr` is outside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    nets: Vec<IpNet>,
    /// IPv4 networks as (network, mask), for a branch-light test on the hot path.
    v4: Vec<(u32, u32)>,
    /// IPv6 networks as (network, mask).
    v6: Vec<(u128, u128)>,
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
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for n in &nets {
            match n {
                IpNet::V4(n) => {
                    let mask = u32::from(n.netmask());
                    v4.push((u32::from(n.network()) & mask, mask));
                }
                IpNet::V6(n) => {
                    let mask = u128::from(n.netmask());
                    v6.push((u128::from(n.network()) & mask, mask));
                }
            }
        }
        Rule { nets, v4, v6 }
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
            IpAddr::V4(a) => {
                let x = u32::from(a);
                self.v4.iter().any(|&(net, mask)| x & mask == net)
            }
            IpAddr::V6(a) => {
                let x = u128::from(a);
                self.v6.iter().any(|&(net, mask)| x & mask == net)
            }
        }
    }

    /// The values to count for `rec`, or `None` when it does not count.
    ///
    /// Fields are read lazily in the order action, log-status, srcaddr, dstaddr, start, bytes,
    /// packets: a bad value is an `Err` only when the record could still count at that point (a bad
    /// `dstaddr` on an ACCEPT record is ignored). A REJECT/OK record missing `start`, `srcaddr` or
    /// `dstaddr` (absent from the format, or `-`) is not counted; missing `bytes`/`packets` count as 0.
    /// A `start` too large for an `i64` hour is not counted.
    pub fn classify<'a>(&self, rec: &FlowRecord<'a>) -> Result<Option<Hit<'a>>, FieldError> {
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
        let Some(hour) = hour_of(start) else { return Ok(None) };
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

    proptest! {
        /// The mask test agrees with ipnet's `contains` for arbitrary networks and addresses.
        #[test]
        fn is_internal_agrees_with_ipnet(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<u128>(), 0u8..=128, any::<bool>()), 0..4),
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
