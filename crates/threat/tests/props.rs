//! The fast path agrees with the naive reference (`flowspike_threat::naive`): matching on random
//! lists with overlapping networks, /0 and host routes, at addresses on and around every
//! network's edges; and the rows of one tap, and of taps merged in any split, on random flows.

use flowspike_threat::naive::{naive_matches, naive_rows};
use flowspike_threat::{
    match_batch, match_rows, merge_match_rows, Flow, MatchRow, ThreatConfig, ThreatList,
    ThreatLists, ThreatTap,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Bases near one another, so networks overlap, nest and touch.
fn v4_base() -> impl Strategy<Value = u32> {
    prop_oneof![
        (0u32..8).prop_map(|i| 0x0a00_0000 + (i << 14)),
        any::<u32>().prop_map(|x| 0x0a00_0000 | (x & 0x0001_ffff)),
        Just(0),
        Just(u32::MAX),
        any::<u32>(),
    ]
}

fn v6_base() -> impl Strategy<Value = u128> {
    prop_oneof![
        (0u128..8).prop_map(|i| (0x2001_0db8u128 << 96) + (i << 80)),
        any::<u128>().prop_map(|x| (0x2001_0db8u128 << 96) | (x & 0xffff_ffff)),
        any::<u32>().prop_map(|x| 0xffff_0000_0000 | u128::from(x)), // IPv4-mapped
        Just(0),
        Just(u128::MAX),
        any::<u128>(),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (v4_base(), prop_oneof![Just(0u8), Just(32u8), 0u8..=32, 14u8..=32])
            .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc())),
        (v6_base(), prop_oneof![Just(0u8), Just(128u8), 0u8..=128, 80u8..=128])
            .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc())),
    ]
}

fn lists() -> impl Strategy<Value = Vec<ThreatList>> {
    prop::collection::vec(prop::collection::vec(net(), 0..12), 1..5).prop_map(|ls| {
        ls.into_iter()
            .enumerate()
            .map(|(i, nets)| ThreatList::from_networks(&format!("list{i}"), nets))
            .collect()
    })
}

/// Every network's first and last address and the addresses just outside either side, their
/// IPv4-mapped forms, and a few random ones.
fn probes(lists: &[ThreatList], extra: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = extra.to_vec();
    for n in lists.iter().flat_map(|l| l.networks()) {
        match n {
            IpNet::V4(n) => {
                let (a, b) = (u32::from(n.network()), u32::from(n.broadcast()));
                for x in
                    [Some(a), Some(b), a.checked_sub(1), b.checked_add(1)].into_iter().flatten()
                {
                    out.push(IpAddr::V4(Ipv4Addr::from(x)));
                    out.push(IpAddr::V6(Ipv4Addr::from(x).to_ipv6_mapped()));
                }
            }
            IpNet::V6(n) => {
                let (a, b) = (u128::from(n.network()), u128::from(n.broadcast()));
                for x in
                    [Some(a), Some(b), a.checked_sub(1), b.checked_add(1)].into_iter().flatten()
                {
                    out.push(IpAddr::V6(Ipv6Addr::from(x)));
                }
            }
        }
    }
    out
}

/// Lists of many small networks packed in a /20 (IPv4) or a /112 (IPv6): deep index nodes.
fn dense_lists() -> impl Strategy<Value = Vec<ThreatList>> {
    let v4 = (0u32..1 << 12, 26u8..=32).prop_map(|(off, len)| {
        IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a14_0000 + off), len).unwrap().trunc())
    });
    let v6 = (0u128..1 << 16, 116u8..=128).prop_map(|(off, len)| {
        let a = Ipv6Addr::from((0x2001_0db8u128 << 96) + off);
        IpNet::V6(Ipv6Net::new(a, len).unwrap().trunc())
    });
    let net = prop_oneof![3 => v4, 1 => v6];
    prop::collection::vec(prop::collection::vec(net, 0..300), 1..3).prop_map(|ls| {
        ls.into_iter()
            .enumerate()
            .map(|(i, nets)| ThreatList::from_networks(&format!("dense{i}"), nets))
            .collect()
    })
}

fn random_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        v4_base().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        v6_base().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn matches_agrees_with_naive(lists in lists(), extra in prop::collection::vec(random_ip(), 0..20)) {
        let fast = ThreatLists::new(lists.clone()).unwrap();
        for ip in probes(&lists, &extra) {
            prop_assert_eq!(fast.matches(ip), naive_matches(&lists, ip), "{}", ip);
        }
    }

    #[test]
    fn dense_matches_agree_with_naive(lists in dense_lists(), offsets in prop::collection::vec(0u32..1 << 13, 0..50)) {
        let fast = ThreatLists::new(lists.clone()).unwrap();
        let extra: Vec<IpAddr> = offsets
            .iter()
            .flat_map(|&o| {
                [
                    IpAddr::V4(Ipv4Addr::from(0x0a14_0000 - 0x800 + o)),
                    IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) + u128::from(o) * 9)),
                ]
            })
            .collect();
        for ip in probes(&lists, &extra) {
            prop_assert_eq!(fast.matches(ip), naive_matches(&lists, ip), "{}", ip);
        }
    }

    #[test]
    fn rows_agree_with_naive(
        lists in lists(),
        picks in prop::collection::vec(
            (any::<prop::sample::Index>(), 0usize..3, 0i64..2, any::<bool>(), any::<bool>(),
             0u16..6, 0u64..100, 0u64..1000),
            0..150),
        cap_ips in 0usize..5,
        cap_ports in 0usize..4,
        split in any::<prop::sample::Index>(),
    ) {
        let remotes = probes(&lists, &[]);
        prop_assume!(!remotes.is_empty());
        let internals: [IpAddr; 3] =
            ["10.0.0.9".parse().unwrap(), "10.0.0.10".parse().unwrap(), "fd00::1".parse().unwrap()];
        let flows: Vec<Flow> = picks
            .iter()
            .map(|&(r, i, h, outbound, accepted, port, start, bytes)| Flow {
                hour: h * 3600,
                internal: internals[i],
                remote: remotes[r.index(remotes.len())],
                outbound,
                internal_port: 443,
                remote_port: port,
                protocol: 6,
                accepted,
                start: start + 3600 * h as u64,
                end: start + 3600 * h as u64 + bytes % 7,
                bytes,
                packets: bytes / 10,
            })
            .collect();
        let cfg = ThreatConfig { max_remote_ips: cap_ips, max_ports: cap_ports };
        let expected = naive_rows(&lists, &flows, &cfg);
        let compiled = Arc::new(ThreatLists::new(lists.clone()).unwrap());

        let mut one = ThreatTap::new(compiled.clone(), &cfg);
        flows.iter().for_each(|f| one.add(f));
        prop_assert_eq!(&one.finish(), &expected);

        // Split between two workers, merged.
        let cut = split.index(flows.len() + 1);
        let (mut a, mut b) = (ThreatTap::new(compiled.clone(), &cfg), ThreatTap::new(compiled, &cfg));
        flows[..cut].iter().for_each(|f| a.add(f));
        flows[cut..].iter().for_each(|f| b.add(f));
        // The same halves finished apart, their rows merged (through Arrow, as a history would).
        let halves: Vec<MatchRow> =
            [a.clone(), b.clone()].into_iter().flat_map(|t| t.finish().into_values().flatten()).collect();
        let merged = merge_match_rows(&match_rows(&match_batch(&halves)).unwrap(), &cfg).unwrap();
        prop_assert_eq!(&merged, &expected.values().flatten().cloned().collect::<Vec<_>>());
        b.merge(a);
        prop_assert_eq!(&b.finish(), &expected);
    }
}
