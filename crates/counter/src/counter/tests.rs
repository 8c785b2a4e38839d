use super::*;
use crate::sharded::{par_count, ShardedCounter};
use flowspike_model::{merge_rows, HOUR};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A hit that owns its interface id (proptest values cannot borrow).
#[derive(Debug, Clone)]
struct OwnedHit {
    hour: i64,
    src: IpAddr,
    dst: IpAddr,
    iface: Option<Vec<u8>>,
    bytes: u64,
    packets: u64,
}

impl OwnedHit {
    fn hit(&self) -> Hit<'_> {
        Hit {
            hour: self.hour,
            src: self.src,
            dst: self.dst,
            interface_id: self.iface.as_deref(),
            bytes: self.bytes,
            packets: self.packets,
        }
    }
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(i))
}

fn cfg(cap: usize) -> CounterConfig {
    CounterConfig { dest_cap: cap, ..CounterConfig::default() }
}

fn count_with(hits: &[OwnedHit], cfg: CounterConfig) -> Counter {
    let mut c = Counter::new(cfg);
    for h in hits {
        c.add(&h.hit());
    }
    c
}

/// Destination caps around the inline (6) and vector (16) sizes.
fn cap_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(3),
        Just(5),
        Just(6),
        Just(7),
        Just(10),
        Just(15),
        Just(16),
        Just(17),
        Just(10_000)
    ]
}

fn hit_strategy() -> impl Strategy<Value = OwnedHit> {
    (
        0i64..3,
        prop_oneof![
            (0u32..6).prop_map(|i| v4(0x0a00_0000 + i)),
            (0u32..2).prop_map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i as u16))),
        ],
        prop_oneof![
            (0u32..40).prop_map(|i| v4(0x0808_0000 + i * 7)),
            // The all-zero address (the inline set's unused slots are zero too).
            Just(v4(0)),
            Just(IpAddr::V6(Ipv4Addr::new(8, 8, 0, 7).to_ipv6_mapped())),
            (0u32..5)
                .prop_map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16))),
        ],
        proptest::option::of(prop_oneof![
            Just(b"eni-a".to_vec()),
            Just(b"eni-b".to_vec()),
            Just(b"eni-c".to_vec()),
            // Empty, a prefix of another id, NUL bytes, exactly the inline room (23 bytes), one
            // byte more, and much longer.
            Just(b"".to_vec()),
            Just(b"eni-ab".to_vec()),
            Just(b"eni-a\0".to_vec()),
            Just(b"eni-0123456789abcdef012".to_vec()),
            Just(b"eni-0123456789abcdef0123".to_vec()),
            Just(b"eni-0123456789abcdef0-and-more".to_vec())
        ]),
        0u64..10_000,
        0u64..100,
    )
        .prop_map(|(h, src, dst, iface, bytes, packets)| OwnedHit {
            hour: h * HOUR,
            src,
            dst,
            iface,
            bytes,
            packets,
        })
}

fn count(hits: &[OwnedHit], cap: usize) -> Counter {
    let mut c = Counter::new(cfg(cap));
    for h in hits {
        c.add(&h.hit());
    }
    c
}

/// The naive reference: BTreeMap + BTreeSet, no cap.
fn naive(hits: &[OwnedHit]) -> Vec<AggregateRow> {
    type V = (u64, BTreeSet<IpAddr>, BTreeSet<Vec<u8>>, u64, u64);
    let mut m: BTreeMap<(i64, String), V> = BTreeMap::new();
    for h in hits {
        let e = m.entry((h.hour, h.src.to_string())).or_default();
        e.0 += 1;
        e.1.insert(h.dst);
        if let Some(i) = &h.iface {
            e.2.insert(i.clone());
        }
        e.3 += h.bytes;
        e.4 += h.packets;
    }
    m.into_iter()
        .map(|((hour, src_ip), (n, d, i, bytes, packets))| AggregateRow {
            hour,
            src_ip,
            blocked_count: n,
            unique_dest_count: d.len() as u64,
            dest_ips: d.iter().map(|x| x.to_string()).collect(),
            interface_ids: i.into_iter().map(|b| String::from_utf8(b).unwrap()).collect(),
            bytes,
            packets,
            dest_ips_truncated: false,
            dest_hll: None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Below the cap the counter equals the naive reference exactly.
    #[test]
    fn counter_equals_naive(hits in proptest::collection::vec(hit_strategy(), 0..300)) {
        prop_assert_eq!(count(&hits, 10_000).into_rows(), naive(&hits));
    }

    /// With any caps: a key with at most `dest_cap` destinations is the naive row exactly; past
    /// it, the row is truncated, keeps the `dest_cap` lowest destinations and counts more than
    /// `dest_cap`; interface ids are the naive ones cut to the `interface_cap` lowest.
    #[test]
    fn counter_with_caps_matches_naive(
        hits in proptest::collection::vec(hit_strategy(), 0..300),
        cap in cap_strategy(),
        icap in prop_oneof![Just(0usize), Just(1), Just(2), Just(256)],
    ) {
        let cfg = CounterConfig { dest_cap: cap, interface_cap: icap, ..CounterConfig::default() };
        let rows = count_with(&hits, cfg).into_rows();
        let expected = naive(&hits);
        prop_assert_eq!(rows.len(), expected.len());
        for (r, e) in rows.iter().zip(&expected) {
            let e_ids: Vec<String> = e.interface_ids.iter().take(icap).cloned().collect();
            prop_assert_eq!((r.hour, &r.src_ip, &r.interface_ids), (e.hour, &e.src_ip, &e_ids));
            prop_assert_eq!((r.blocked_count, r.bytes, r.packets), (e.blocked_count, e.bytes, e.packets));
            if e.dest_ips.len() <= cap {
                prop_assert_eq!(&r.dest_ips, &e.dest_ips);
                prop_assert_eq!(r.unique_dest_count, e.unique_dest_count);
                prop_assert!(!r.dest_ips_truncated && r.dest_hll.is_none());
            } else {
                prop_assert_eq!(&r.dest_ips[..], &e.dest_ips[..cap]);
                prop_assert!(r.unique_dest_count > cap as u64);
                prop_assert!(r.dest_ips_truncated && r.dest_hll.is_some());
            }
        }
    }

    /// Partials counted under larger caps, merged into a counter with a smaller one (a merge
    /// across limits), give the rows of counting everything under the smaller cap.
    #[test]
    fn merge_from_larger_caps_equals_counting_with_the_smaller_cap(
        hits in proptest::collection::vec(hit_strategy(), 0..300),
        cut in 0usize..300,
        cap in cap_strategy(),
        bigger in prop_oneof![Just(0usize), Just(1), Just(5), Just(10_000)],
        icap in prop_oneof![Just(1usize), Just(2), Just(256)],
    ) {
        let cut = cut.min(hits.len());
        let small = CounterConfig { dest_cap: cap, interface_cap: icap, ..CounterConfig::default() };
        let large = CounterConfig { dest_cap: cap.saturating_add(bigger), interface_cap: 256, ..CounterConfig::default() };
        let whole = count_with(&hits, small).into_rows();
        // Into an empty counter and into one that already holds part of the keys.
        let mut into_empty = Counter::new(small);
        into_empty.merge(count_with(&hits[..cut], large));
        into_empty.merge(count_with(&hits[cut..], large));
        prop_assert_eq!(&into_empty.into_rows(), &whole);
        let mut into_part = count_with(&hits[..cut], small);
        into_part.merge(count_with(&hits[cut..], large));
        prop_assert_eq!(&into_part.into_rows(), &whole);
    }

    /// Merging partials in any grouping and order gives the rows of counting everything at once,
    /// also past a small cap (sketch state is a function of the union).
    #[test]
    fn counter_merge_associative_commutative(
        hits in proptest::collection::vec(hit_strategy(), 0..300),
        cut1 in 0usize..300, cut2 in 0usize..300, cap in prop_oneof![Just(1usize), Just(3), Just(6), Just(7), Just(10), Just(16), Just(17), Just(10_000)],
    ) {
        let (c1, c2) = (cut1.min(hits.len()), cut2.min(hits.len()));
        let (lo, hi) = (c1.min(c2), c1.max(c2));
        let parts = [&hits[..lo], &hits[lo..hi], &hits[hi..]];
        let whole = count(&hits, cap).into_rows();
        let mut left = count(parts[0], cap);
        left.merge(count(parts[1], cap));
        left.merge(count(parts[2], cap));
        let mut bc = count(parts[1], cap);
        bc.merge(count(parts[2], cap));
        let mut right = count(parts[0], cap);
        right.merge(bc);
        let mut rev = count(parts[2], cap);
        rev.merge(count(parts[0], cap));
        rev.merge(count(parts[1], cap));
        prop_assert_eq!(&left.into_rows(), &whole);
        prop_assert_eq!(&right.into_rows(), &whole);
        prop_assert_eq!(&rev.into_rows(), &whole);
    }

    /// The same on rows: merge_rows of partial rows, grouped and ordered any way, gives the rows of
    /// counting everything at once; merging a row set with itself-as-rows is the identity.
    #[test]
    fn merge_rows_associative_commutative(
        hits in proptest::collection::vec(hit_strategy(), 0..300),
        cut1 in 0usize..300, cut2 in 0usize..300, cap in prop_oneof![Just(1usize), Just(3), Just(6), Just(7), Just(10), Just(16), Just(17), Just(10_000)],
    ) {
        let (c1, c2) = (cut1.min(hits.len()), cut2.min(hits.len()));
        let (lo, hi) = (c1.min(c2), c1.max(c2));
        let [a, b, c] = [&hits[..lo], &hits[lo..hi], &hits[hi..]].map(|p| count(p, cap).into_rows());
        let whole = count(&hits, cap).into_rows();
        let ab = merge_rows(a.iter().chain(&b).cloned(), cap).unwrap();
        let left = merge_rows(ab.into_iter().chain(c.iter().cloned()), cap).unwrap();
        let bc = merge_rows(b.iter().chain(&c).cloned(), cap).unwrap();
        let right = merge_rows(bc.into_iter().chain(a.iter().cloned()), cap).unwrap();
        let flat = merge_rows(c.iter().chain(&a).chain(&b).cloned(), cap).unwrap();
        prop_assert_eq!(&left, &whole);
        prop_assert_eq!(&right, &whole);
        prop_assert_eq!(&flat, &whole);
        prop_assert_eq!(merge_rows(whole.clone(), cap).unwrap(), whole);
    }

    /// The sharded, parallel counter gives the same rows for any shard count.
    #[test]
    fn sharded_equals_counter(
        hits in proptest::collection::vec(hit_strategy(), 0..300),
        shards in 1usize..9, cap in prop_oneof![Just(3usize), Just(10_000)],
    ) {
        let whole = count(&hits, cap).into_rows();
        let chunks: Vec<&[OwnedHit]> = hits.chunks(17).collect();
        let sc = par_count(&chunks, shards, cfg(cap), |chunk, acc| {
            for h in chunk.iter() {
                acc.add(&h.hit());
            }
        });
        prop_assert_eq!(sc.len(), whole.len());
        prop_assert_eq!(sc.clone().into_counter().into_rows(), whole.clone());
        let hours = sc.clone().into_hours();
        // Columns hold exactly the rows, hour by hour (the sketch path too: cap 3).
        let columns = sc.clone().into_hour_columns();
        prop_assert_eq!(columns.len(), hours.len());
        for ((ch, c), (h, rows)) in columns.iter().zip(&hours) {
            prop_assert_eq!(ch, h);
            prop_assert!(c.is_hour_sorted_unique(*h));
            prop_assert_eq!(&c.to_rows(), rows);
        }
        prop_assert!(hours.windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert!(hours.iter().all(|(h, rows)| !rows.is_empty() && rows.iter().all(|r| r.hour == *h)));
        prop_assert_eq!(hours.into_iter().flat_map(|(_, rows)| rows).collect::<Vec<_>>(), whole.clone());
        prop_assert_eq!(sc.into_rows(), whole);
    }
}

fn distinct_hits(n: u32, base: u32) -> Vec<OwnedHit> {
    (0..n)
        .map(|i| OwnedHit {
            hour: 3600,
            src: v4(0x0a00_0001),
            dst: v4(base + i),
            iface: None,
            bytes: 1,
            packets: 1,
        })
        .collect()
}

#[test]
fn exact_at_the_cap() {
    let rows = count(&distinct_hits(100, 0x0800_0000), 100).into_rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].unique_dest_count, 100);
    assert_eq!(rows[0].dest_ips.len(), 100);
    assert!(!rows[0].dest_ips_truncated);
    assert_eq!(rows[0].dest_hll, None);
}

#[test]
fn truncated_past_the_cap_keeps_lowest_and_sketch() {
    // Insert in descending order so that "lowest" must evict.
    let mut hits = distinct_hits(101, 0x0800_0000);
    hits.reverse();
    let rows = count(&hits, 100).into_rows();
    let r = &rows[0];
    assert!(r.dest_ips_truncated);
    assert_eq!(r.blocked_count, 101);
    assert_eq!(r.dest_ips.len(), 100);
    assert_eq!(r.dest_ips.first().map(String::as_str), Some("8.0.0.0"));
    assert_eq!(r.dest_ips.last().map(String::as_str), Some("8.0.0.99"));
    // At least cap + 1 (a truncated set holds more than the cap); the sketch is near 101.
    assert!((101..=103).contains(&r.unique_dest_count), "{}", r.unique_dest_count);
    assert_eq!(
        Hll::from_bytes(r.dest_hll.as_deref().unwrap()).map(|h| h.estimate() > 99.0),
        Ok(true)
    );
}

/// The documented accuracy: 100k distinct destinations with the default cap, within 3 standard
/// errors; the same after splitting into two partials merged as counters and as rows.
#[test]
fn hll_estimate_on_100k_distinct_within_three_standard_errors() {
    let hits = distinct_hits(100_000, 0x2000_0000);
    let tol = 3.0 * flowspike_model::hll::STANDARD_ERROR * 100_000.0;
    let whole = count(&hits, 10_000).into_rows();
    let (a, b) = hits.split_at(37_000);
    let rows = merge_rows(
        count(a, 10_000).into_rows().into_iter().chain(count(b, 10_000).into_rows()),
        10_000,
    )
    .unwrap();
    assert_eq!(rows, whole);
    let r = &whole[0];
    assert!(r.dest_ips_truncated);
    assert_eq!(r.dest_ips.len(), 10_000);
    assert!((r.unique_dest_count as f64 - 100_000.0).abs() <= tol, "{}", r.unique_dest_count);
}

/// Two partials each below the cap whose union crosses it: the sketch is built from the exact sets.
#[test]
fn merge_crossing_the_cap_builds_sketch_from_exact_sets() {
    let hits = distinct_hits(150, 0x0800_0000);
    let (a, b) = hits.split_at(75);
    let (ra, rb) = (count(a, 100).into_rows(), count(b, 100).into_rows());
    assert!(!ra[0].dest_ips_truncated && !rb[0].dest_ips_truncated);
    let merged = merge_rows(ra.into_iter().chain(rb), 100).unwrap();
    assert_eq!(merged, count(&hits, 100).into_rows());
    assert!(merged[0].dest_ips_truncated);
    assert!((148..=153).contains(&merged[0].unique_dest_count), "{}", merged[0].unique_dest_count);
}

/// A truncated row without registers (another writer) keeps its count as a lower bound.
#[test]
fn truncated_row_without_registers_keeps_its_count_as_floor() {
    let mut row = count(&distinct_hits(50, 0x0800_0000), 10).into_rows().remove(0);
    row.dest_hll = None;
    row.unique_dest_count = 1000;
    let merged = merge_rows([row], 10).unwrap();
    assert_eq!(merged[0].unique_dest_count, 1000);
    assert!(merged[0].dest_ips_truncated && merged[0].dest_hll.is_some());
}

#[test]
fn interface_cap_keeps_lowest_ids() {
    let ids: [&[u8]; 5] = [b"eni-c", b"eni-a", b"eni-d", b"eni-b", b"eni-a"];
    assert_eq!(interface_ids_kept(2, &ids), ["eni-a", "eni-b"]);
}

/// The interface ids of one key after hits with `ids`, under `interface_cap` `cap`.
fn interface_ids_kept(cap: usize, ids: &[&[u8]]) -> Vec<String> {
    let mut c = Counter::new(CounterConfig {
        dest_cap: 10,
        interface_cap: cap,
        ..CounterConfig::default()
    });
    for id in ids {
        c.add(&Hit {
            hour: 0,
            src: v4(1),
            dst: v4(2),
            interface_id: Some(id),
            bytes: 0,
            packets: 0,
        });
    }
    c.into_rows().swap_remove(0).interface_ids
}

#[test]
fn interface_cap_of_zero_and_one_with_short_and_long_ids() {
    let long: &[u8] = b"eni-0123456789abcdef0-and-more";
    for (cap, ids, expected) in [
        (0, vec![&b"eni-b"[..], b"eni-a"], vec![]),
        (1, vec![&b"eni-b"[..], b"eni-a", b"eni-c"], vec!["eni-a"]),
        (1, vec![long, b"eni-z"], vec![std::str::from_utf8(long).unwrap()]),
        (1, vec![b"eni-z", long], vec![std::str::from_utf8(long).unwrap()]),
        (2, vec![b"eni-z", b"eni-z", long], vec![std::str::from_utf8(long).unwrap(), "eni-z"]),
    ] {
        assert_eq!(interface_ids_kept(cap, &ids), expected, "cap {cap}, ids {ids:?}");
    }
}

#[test]
fn hours_take_hour_and_len() {
    let mut hits = distinct_hits(3, 0x0800_0000);
    hits[1].hour = 7200;
    hits[2].src = v4(0x0a00_0002);
    let mut c = count(&hits, 10);
    assert_eq!(c.len(), 3);
    assert_eq!(c.hours(), [3600, 7200]);
    let rows = c.take_hour(3600);
    assert_eq!(
        rows.iter().map(|r| r.src_ip.as_str()).collect::<Vec<_>>(),
        ["10.0.0.1", "10.0.0.2"]
    );
    assert_eq!(c.hours(), [7200]);
    assert_eq!(c.len(), 1);
}

#[test]
fn bad_rows_are_typed_errors() {
    let good = count(&distinct_hits(3, 0x0800_0000), 10).into_rows().remove(0);
    let check = |mutate: &dyn Fn(&mut AggregateRow), want: &str| {
        let mut r = good.clone();
        mutate(&mut r);
        let err = merge_rows([r], 10).unwrap_err().to_string();
        assert!(err.contains(want), "{err} lacks {want}");
    };
    check(&|r| r.src_ip = "nope".into(), "src_ip is not an ip address");
    check(&|r| r.dest_ips.push("300.1.1.1".into()), "dest_ips entry \"300.1.1.1\"");
    check(&|r| r.hour = 3601, "hour is not a multiple of 3600");
    check(
        &|r| {
            r.dest_ips_truncated = true;
            r.dest_hll = Some(vec![1, 2, 3]);
        },
        "dest_hll: hll: expected",
    );
}

/// Re-routing when shard counts differ keeps every key.
#[test]
fn sharded_merge_with_different_shard_counts() {
    let hits: Vec<OwnedHit> = (0..50)
        .map(|i| OwnedHit {
            src: v4(0x0a00_0000 + i % 13),
            ..distinct_hits(1, 0x0800_0000 + i).remove(0)
        })
        .collect();
    let mut a = ShardedCounter::new(3, cfg(10));
    let mut b = ShardedCounter::new(5, cfg(10));
    for (i, h) in hits.iter().enumerate() {
        if i % 2 == 0 {
            a.add(&h.hit())
        } else {
            b.add(&h.hit())
        }
    }
    a.merge(b);
    assert_eq!(a.into_rows(), count(&hits, 10).into_rows());
}

/// Every way out of the counters sorts sources by their text, also where addresses' texts share
/// their first 16 characters (long IPv6 forms) or are prefixes of each other.
#[test]
fn rows_are_sorted_by_source_text() {
    let sources: Vec<IpAddr> = [
        "10.0.0.1",
        "10.0.0.10",
        "10.0.0.100",
        "10.0.0.2",
        "1.2.3.4",
        "100.0.0.0",
        "9.9.9.9",
        "2001:db8:aaaa:bbbb::1",
        "2001:db8:aaaa:bbbb::10",
        "2001:db8:aaaa:bbbb:1::2",
        "2001:db8:aaaa:bbbb:1::1",
        "2001:db8:aaaa:bbb::1",
        "2001:db8::1",
        "fd00::1",
        "::1",
        "::",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let hits: Vec<OwnedHit> = (0..3i64)
        .flat_map(|h| {
            sources.iter().rev().map(move |&src| OwnedHit {
                hour: h * HOUR,
                src,
                dst: v4(0x0808_0808),
                iface: None,
                bytes: 1,
                packets: 1,
            })
        })
        .collect();
    let mut texts: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    texts.sort();
    let srcs = |rows: &[AggregateRow]| rows.iter().map(|r| r.src_ip.clone()).collect::<Vec<_>>();
    let every_hour: Vec<String> = (0..3).flat_map(|_| texts.clone()).collect();

    assert_eq!(srcs(&count(&hits, 100).into_rows()), every_hour);
    assert_eq!(srcs(&count(&hits, 100).take_hour(HOUR)), texts);
    for shards in [1, 3, 16] {
        let sc = || {
            let mut sc = ShardedCounter::new(shards, cfg(100));
            hits.iter().for_each(|h| sc.add(&h.hit()));
            sc
        };
        assert_eq!(srcs(&sc().into_rows()), every_hour, "{shards} shards");
        assert_eq!(srcs(&sc().take_hour(2 * HOUR)), texts, "{shards} shards");
        for (hour, rows) in sc().into_hours() {
            assert!(rows.iter().all(|r| r.hour == hour));
            assert_eq!(srcs(&rows), texts, "{shards} shards, hour {hour}");
        }
        for (hour, c) in sc().into_hour_columns() {
            assert_eq!(srcs(&c.to_rows()), texts, "{shards} shards, columns of hour {hour}");
        }
    }
}

fn source_cap(cap: usize) -> CounterConfig {
    CounterConfig { max_sources_per_hour: cap, ..CounterConfig::default() }
}

/// A blocked record of hour 7200 from the `i`-th address of 10.0.0.0/8 to 8.8.8.8: the sources
/// of the source-cap regression tests.
fn nth_source_hit(i: u32) -> Hit<'static> {
    Hit {
        hour: 7200,
        src: v4(0x0a00_0000 + i),
        dst: v4(0x0808_0808),
        interface_id: None,
        bytes: 1,
        packets: 1,
    }
}

/// The first `n` sources of [`nth_source_hit`], in address order: what a cap of `n` keeps.
fn lowest_sources(n: usize) -> Vec<IpAddr> {
    (0..n as u32).map(|i| v4(0x0a00_0000 + i)).collect()
}

/// The source addresses of `rows`, in address order.
fn sorted_sources(rows: &[AggregateRow]) -> Vec<IpAddr> {
    let mut srcs: Vec<IpAddr> = rows.iter().map(|r| r.src_ip.parse().unwrap()).collect();
    srcs.sort();
    srcs
}

/// The naive rows of the `cap` lowest sources of each hour, and per hour what the others held
/// (records, distinct sources).
fn naive_capped(hits: &[OwnedHit], cap: usize) -> (Vec<AggregateRow>, Vec<(i64, SourceOverflow)>) {
    let rows = naive(hits);
    let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
    for r in rows {
        by_hour.entry(r.hour).or_default().push(r);
    }
    let (mut kept, mut over) = (Vec::new(), Vec::new());
    for (hour, mut rows) in by_hour {
        rows.sort_by_key(|r| r.src_ip.parse::<IpAddr>().unwrap());
        let dropped = rows.split_off(rows.len().min(cap));
        if !dropped.is_empty() {
            let records = dropped.iter().map(|r| r.blocked_count).sum();
            over.push((hour, SourceOverflow { records, sources: dropped.len() as u64 }));
        }
        rows.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
        kept.extend(rows);
    }
    (kept, over)
}

proptest! {
    /// Past the source cap an hour keeps its lowest sources with their exact aggregates and counts
    /// the rest, whatever order and split the hits were counted in (chunks merged in reverse,
    /// rows re-added under the cap).
    #[test]
    fn source_cap_keeps_the_lowest_sources_in_any_order_and_split(
        hits in proptest::collection::vec(hit_strategy(), 0..300),
        cap in 0usize..9,
        split in 1usize..60,
    ) {
        let (want, want_over) = naive_capped(&hits, cap);
        let c = source_cap(cap);
        let seq = count_with(&hits, c);
        prop_assert_eq!(seq.overflow(), want_over.clone());
        prop_assert_eq!(seq.into_rows(), want.clone());
        let mut merged = Counter::new(c);
        for chunk in hits.chunks(split).rev() {
            merged.merge(count_with(chunk, c));
        }
        prop_assert_eq!(merged.overflow(), want_over.clone());
        prop_assert_eq!(merged.into_rows(), want.clone());
        // Rows counted without a cap, re-added one by one under it (another limit: per key).
        let mut readded = Counter::new(c);
        for r in naive(&hits).iter().rev() {
            readded.add_row(r).unwrap();
        }
        prop_assert_eq!(readded.overflow(), want_over);
        prop_assert_eq!(readded.into_rows(), want);
    }

    /// A sharded counter under a source cap gives the same rows and overflow on 1 and 4 threads,
    /// and no hour has more rows than the cap.
    #[test]
    fn source_cap_of_sharded_counters_does_not_depend_on_threads(
        hits in proptest::collection::vec(hit_strategy(), 0..300),
        cap in 0usize..9,
        chunk in 1usize..40,
    ) {
        let chunks: Vec<&[OwnedHit]> = hits.chunks(chunk).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let sc = par_count(&chunks, 4, source_cap(cap), |chunk, acc| {
                    for h in chunk.iter() {
                        acc.add(&h.hit());
                    }
                });
                (sc.overflow(), sc.into_hours())
            })
        };
        let one = run(1);
        let four = run(4);
        prop_assert_eq!(&one, &four);
        prop_assert!(one.1.iter().all(|(_, rows)| rows.len() <= cap));
        // The cap holds for the hour over all shards: the rows and overflow of one counter.
        let (want, want_over) = naive_capped(&hits, cap);
        let rows: Vec<AggregateRow> = one.1.iter().flat_map(|(_, r)| r.clone()).collect();
        prop_assert_eq!(&rows, &want);
        prop_assert_eq!(one.0.clone().into_iter().collect::<Vec<_>>(), want_over);
        // Every counted hit is in a row or in the overflow.
        let kept: u64 = one.1.iter().flat_map(|(_, r)| r).map(|r| r.blocked_count).sum();
        let over: u64 = one.0.values().map(|o| o.records).sum();
        prop_assert_eq!(kept + over, hits.len() as u64);
    }
}

/// Regression (#28 item 9): sources per hour were unbounded, ~440 B each, so a scan of spoofed
/// sources grew the counter without limit. Past the cap only the lowest sources are kept, and
/// the rest is counted.
#[test]
fn regression_sources_per_hour_are_unbounded() {
    let cap = 100;
    let mut c = Counter::new(source_cap(cap));
    // 10,000 distinct sources, highest first (every one but the last 100 is dropped later).
    for i in (0..10_000u32).rev() {
        for _ in 0..2 {
            c.add(&nth_source_hit(i));
        }
    }
    c.add(&Hit { hour: 10_800, src: v4(1), dst: v4(2), interface_id: None, bytes: 1, packets: 1 });
    assert_eq!(c.len(), cap + 1);
    let over = c.overflow();
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!((over[0].0, over[0].1.records), (7200, 2 * 9_900));
    let sources = over[0].1.sources as f64;
    assert!((sources - 9_900.0).abs() < 9_900.0 * 0.03, "{sources}");
    let rows = c.take_hour(7200);
    assert_eq!(rows.len(), cap);
    assert!(rows.iter().all(|r| r.blocked_count == 2));
    assert_eq!(sorted_sources(&rows), lowest_sources(cap));
    assert_eq!(c.take_hour_overflow(7200).map(|o| o.records), Some(19_800));
    assert_eq!(c.take_hour_overflow(7200), None);
}

/// Regression (#28): a sharded counter (replay's, 16 shards) split the source cap into equal
/// shares over its shards, which hashed sources do not fill evenly, so an hour with exactly `cap`
/// sources already lost some (1,532 of 1,000,000 at the default cap).
#[test]
fn regression_replay_source_cap_split_over_shards() {
    let cap = 1000;
    let hit = nth_source_hit;
    let want = lowest_sources(cap);

    // Exactly `cap` sources, highest first: none dropped.
    let mut sc = ShardedCounter::new(16, source_cap(cap));
    for i in (0..cap as u32).rev() {
        sc.add(&hit(i));
    }
    assert!(sc.overflow().is_empty(), "{:?}", sc.overflow());
    assert_eq!(sc.len(), cap);
    // One more, the highest address (two records): exactly it is dropped and counted.
    sc.add(&hit(cap as u32));
    sc.add(&hit(cap as u32));
    let over = sc.overflow();
    assert_eq!(
        over.into_iter().collect::<Vec<_>>(),
        [(7200, SourceOverflow { records: 2, sources: 1 })]
    );
    assert_eq!(sorted_sources(&sc.clone().take_hour(7200)), want);

    // A lower source arriving last pushes out the highest kept one, whichever shard holds it.
    let mut sc = ShardedCounter::new(16, source_cap(cap));
    for i in 1..=cap as u32 {
        sc.add(&hit(i));
    }
    sc.add(&hit(0));
    assert_eq!(sc.overflow().get(&7200).map(|o| (o.records, o.sources)), Some((1, 1)));
    assert_eq!(sorted_sources(&sc.into_rows()), want);

    // The same `cap + 1` sources counted by two workers and merged.
    let (mut a, mut b) =
        (ShardedCounter::new(16, source_cap(cap)), ShardedCounter::new(16, source_cap(cap)));
    for i in 0..=cap as u32 {
        if i % 2 == 0 {
            a.add(&hit(i))
        } else {
            b.add(&hit(i))
        }
    }
    assert!(a.overflow().is_empty() && b.overflow().is_empty());
    a.merge(b);
    assert_eq!(a.overflow().get(&7200).map(|o| (o.records, o.sources)), Some((1, 1)));
    assert_eq!(sorted_sources(&a.into_rows()), want);
}
