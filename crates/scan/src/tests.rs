//! Thresholds, keys, IPv6, the Parquet round trip, the memory bound, and the property test
//! against [`crate::naive`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use proptest::prelude::*;

use crate::naive::{self, Record};
use crate::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(i: u32) -> IpAddr {
    IpAddr::V4(i.into())
}

/// Runs `records` through one tap and returns the only hour's rows.
fn one_hour(
    cfg: &ScanConfig,
    records: impl IntoIterator<Item = (IpAddr, IpAddr, u16, u8)>,
) -> HourScans {
    let mut tap = ScanTap::new(cfg);
    for (s, d, p, pr) in records {
        tap.add(7200, s, d, p, pr);
    }
    let mut hours = tap.finish();
    assert_eq!(hours.len(), 1);
    hours.remove(&7200).unwrap()
}

/// `ports` distinct ports from 10.0.0.1 to 10.0.0.2, of which `low` below 1024.
fn vertical(ports: u16, low: u16) -> HourScans {
    let list = (1..=low).chain((0..ports - low).map(|i| 2000 + i));
    one_hour(&ScanConfig::default(), list.map(|p| (ip("10.0.0.1"), ip("10.0.0.2"), p, 6)))
}

#[test]
fn vertical_thresholds_exactly_at_and_one_below() {
    let cfg = ScanConfig::default();
    for (ports, low, alerts) in
        [(500, 20, true), (499, 20, false), (500, 19, false), (600, 400, true)]
    {
        let h = vertical(ports, low);
        assert_eq!(h.vertical.len(), 1, "{ports}/{low}");
        let r = &h.vertical[0];
        assert_eq!(
            (r.distinct_ports, r.low_ports, r.flows),
            (u64::from(ports), u64::from(low), u64::from(ports))
        );
        assert_eq!(r.alerts(&cfg), alerts, "{ports}/{low}");
        assert!(!r.estimated);
        assert_eq!(r.ports.len(), 32);
        assert_eq!(r.ports[0], 1, "low ports first");
    }
    // Below keep_ports (250): no row.
    assert!(vertical(249, 10).vertical.is_empty());
    assert_eq!(vertical(250, 10).vertical.len(), 1);
}

#[test]
fn horizontal_thresholds_exactly_at_and_one_below() {
    let cfg = ScanConfig::default();
    for (dests, alerts) in [(250u32, true), (249, false)] {
        // Each destination twice: flows count records, the set counts addresses.
        let recs =
            (0..dests).flat_map(|i| [i, i]).map(|i| (ip("10.1.2.3"), v4(0x0a09_0000 + i), 445, 6));
        let h = one_hour(&cfg, recs);
        assert_eq!(h.horizontal.len(), 1);
        let r = &h.horizontal[0];
        assert_eq!(
            (r.distinct_dests, r.flows, r.dst_port, r.protocol),
            (u64::from(dests), 2 * u64::from(dests), 445, 6)
        );
        assert_eq!(r.alerts(&cfg), alerts);
        assert!(!r.estimated);
        assert_eq!(r.dest_ips[..2], ["10.9.0.0".to_string(), "10.9.0.1".to_string()]);
        // One destination each: no vertical rows.
        assert!(h.vertical.is_empty());
    }
}

#[test]
fn tcp_and_udp_on_the_same_port_are_different_keys() {
    let cfg = ScanConfig { keep_dests: 3, ..ScanConfig::default() };
    let recs = (0..5)
        .map(|i| (ip("10.0.0.9"), v4(100 + i), 53, 17))
        .chain((0..3).map(|i| (ip("10.0.0.9"), v4(200 + i), 53, 6)));
    let h = one_hour(&cfg, recs);
    let got: Vec<_> =
        h.horizontal.iter().map(|r| (r.dst_port, r.protocol, r.distinct_dests)).collect();
    assert_eq!(got, vec![(53, 6, 3), (53, 17, 5)]);
}

#[test]
fn ipv6_sources_and_destinations() {
    let cfg = ScanConfig { keep_ports: 3, keep_dests: 3, ..ScanConfig::default() };
    let src = ip("fd00::1");
    let recs = [22u16, 80, 443, 8080]
        .map(|p| (src, ip("fd00::2"), p, 6))
        .into_iter()
        .chain((0..4).map(|i| (src, format!("2001:db8::{i:x}").parse().unwrap(), 443, 6)));
    let h = one_hour(&cfg, recs);
    assert_eq!(h.vertical.len(), 1);
    assert_eq!(
        (h.vertical[0].src_ip.as_str(), h.vertical[0].dst_ip.as_str()),
        ("fd00::1", "fd00::2")
    );
    assert_eq!((h.vertical[0].distinct_ports, h.vertical[0].low_ports), (4, 3));
    assert_eq!(h.horizontal.len(), 1);
    assert_eq!(h.horizontal[0].distinct_dests, 5);
    assert_eq!(h.horizontal[0].dest_ips[0], "2001:db8::");
    assert_eq!(h.horizontal[0].dest_ips[4], "fd00::2");
}

/// An IPv4 source that reached IPv4 and IPv6 destinations on one port has one horizontal row.
#[test]
fn mixed_family_destinations_make_one_row() {
    let cfg = ScanConfig { keep_dests: 4, ..ScanConfig::default() };
    let recs = (0..2)
        .map(|i| (ip("10.0.0.1"), v4(i), 80, 6))
        .chain((0..2).map(|i| (ip("10.0.0.1"), format!("2001:db8::{i}").parse().unwrap(), 80, 6)));
    let h = one_hour(&cfg, recs);
    assert_eq!(h.horizontal.len(), 1);
    assert_eq!(h.horizontal[0].distinct_dests, 4);
    assert_eq!(h.horizontal[0].dest_ips, ["0.0.0.0", "0.0.0.1", "2001:db8::", "2001:db8::1"]);
}

#[test]
fn parquet_round_trip() {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    fn through_parquet(batch: &arrow_array::RecordBatch) -> arrow_array::RecordBatch {
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        let mut r = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(buf))
            .unwrap()
            .build()
            .unwrap();
        r.next().unwrap().unwrap()
    }
    let v = vec![
        VerticalRow {
            hour: 3600,
            src_ip: "10.0.0.1".into(),
            dst_ip: "fd00::2".into(),
            distinct_ports: 65535,
            low_ports: 1023,
            flows: 70000,
            ports: vec![1, 2, 65535],
            estimated: false,
        },
        VerticalRow {
            hour: 7200,
            src_ip: "10.0.0.2".into(),
            dst_ip: "8.8.8.8".into(),
            distinct_ports: 50,
            low_ports: 0,
            flows: 50,
            ports: vec![],
            estimated: true,
        },
    ];
    let h = vec![HorizontalRow {
        hour: 3600,
        src_ip: "10.0.0.1".into(),
        dst_port: 65535,
        protocol: 255,
        distinct_dests: 65536,
        flows: 1 << 40,
        dest_ips: vec!["10.0.0.0".into(), "::1".into()],
        estimated: true,
    }];
    let vb = through_parquet(&vertical_batch(&v));
    assert_eq!(vb.schema().fields(), vertical_schema().fields());
    assert_eq!(vertical_rows(&vb).unwrap(), v);
    let hb = through_parquet(&horizontal_batch(&h));
    assert_eq!(horizontal_rows(&hb).unwrap(), h);
    assert!(vertical_rows(&vertical_batch(&[])).unwrap().is_empty());
    // A batch of the other table is refused with the column it lacks.
    assert!(matches!(vertical_rows(&hb), Err(ScanError::MissingColumn { column: "dst_ip" })));
}

/// The byte bound of the crate docs: about 200 bytes per key slot, plus the buffers.
fn assert_within_bound(tap: &ScanTap, slots: usize, what: &str) {
    let bytes = tap.approx_bytes();
    assert!(bytes <= 200 * slots + 64 * 1024, "{what}: {bytes} bytes for {slots} slots");
}

#[test]
fn a_slash_16_sweep_stays_bounded_and_is_estimated() {
    let cfg = ScanConfig { compact_at: 4096, ..ScanConfig::default() };
    let mut tap = ScanTap::new(&cfg);
    let src = ip("10.0.0.5");
    for i in 0..65_536u32 {
        tap.add(0, src, v4(0x0a01_0000 + i), 445, 6);
    }
    // 65,536 vertical keys of one port, one sketched horizontal key.
    assert_within_bound(&tap, 65_536 + 257, "sweep");
    let h = tap.finish().remove(&0).unwrap();
    assert!(h.vertical.is_empty());
    assert_eq!(h.horizontal.len(), 1);
    let r = &h.horizontal[0];
    assert!(r.estimated && r.alerts(&cfg));
    let err = (r.distinct_dests as f64 - 65_536.0).abs() / 65_536.0;
    assert!(err < 3.0 * flowspike_model::hll::STANDARD_ERROR, "{}", r.distinct_dests);
    assert_eq!(r.flows, 65_536);
    assert_eq!(r.dest_ips.len(), 32);
    assert_eq!(r.dest_ips[0], "10.1.0.0");
}

#[test]
fn every_port_of_one_host_stays_bounded_and_is_exact() {
    let cfg = ScanConfig { compact_at: 4096, ..ScanConfig::default() };
    let mut tap = ScanTap::new(&cfg);
    for p in 1..=65_535u16 {
        tap.add(0, ip("10.0.0.5"), ip("10.0.9.9"), p, 6);
    }
    // One bitmap key, 65,535 horizontal keys of one address.
    assert_within_bound(&tap, 129 + 65_535, "ports");
    let h = tap.finish().remove(&0).unwrap();
    assert!(h.horizontal.is_empty());
    let r = &h.vertical[0];
    assert_eq!(
        (r.distinct_ports, r.low_ports, r.flows, r.estimated),
        (65_535, 1023, 65_535, false)
    );
    assert!(r.alerts(&cfg));
}

#[test]
fn key_cap_keeps_the_lowest_sources_and_counts_the_rest() {
    let cfg = ScanConfig {
        keep_ports: 1,
        keep_dests: 1,
        max_keys_per_hour: 10,
        compact_at: 2,
        ..ScanConfig::default()
    };
    let mut tap = ScanTap::new(&cfg);
    // Each source: one destination on one port = 2 slots. Five sources fit.
    for i in (0..8u32).rev() {
        tap.add(0, v4(0x0a00_0000 + i), ip("8.8.8.8"), 53, 17);
    }
    let h = tap.finish().remove(&0).unwrap();
    assert_eq!(h.vertical.len(), 5);
    assert_eq!(h.overflow, Overflow { dropped_flows: 3, cutoff: Some("10.0.0.5".into()) });
}

fn records() -> impl Strategy<Value = Vec<Record>> {
    let addr = prop_oneof![
        6 => (0u32..40).prop_map(|i| v4(0x0a00_0000 + i)),
        1 => (0u16..6).prop_map(|i| IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i))),
    ];
    let src = prop_oneof![
        5 => (0u32..4).prop_map(|i| v4(0x0a00_0000 + i)),
        1 => Just(ip("fd00::1")),
    ];
    let port = prop_oneof![(0u16..12), (1020u16..1030), (40000u16..40010)];
    let rec = (0i64..3, src, addr, port, prop_oneof![Just(6u8), Just(17)])
        .prop_map(|(h, src, dst, port, proto)| Record { hour: h * 3600, src, dst, port, proto });
    proptest::collection::vec(rec, 0..400)
}

/// Rows equal, except that an estimated count need only be within the sketch's error.
fn assert_same(fast: &BTreeMap<i64, HourScans>, slow: &BTreeMap<i64, HourScans>) {
    assert_eq!(fast.keys().collect::<Vec<_>>(), slow.keys().collect::<Vec<_>>());
    for (h, f) in fast {
        let s = &slow[h];
        assert_eq!(f.vertical, s.vertical, "hour {h}");
        assert_eq!(f.overflow, s.overflow, "hour {h}");
        assert_eq!(f.horizontal.len(), s.horizontal.len(), "hour {h}");
        for (a, b) in f.horizontal.iter().zip(&s.horizontal) {
            assert_eq!(a.estimated, b.estimated, "{a:?} vs {b:?}");
            if a.estimated {
                let tolerance = (b.distinct_dests as f64 * 0.03).max(1.0);
                assert!(
                    (a.distinct_dests as f64 - b.distinct_dests as f64).abs() <= tolerance,
                    "{a:?} vs {b:?}"
                );
                let a = HorizontalRow { distinct_dests: b.distinct_dests, ..a.clone() };
                assert_eq!(&a, b);
            } else {
                assert_eq!(a, b);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Split among taps at random, folded at random sizes, merged in any order, with small caps
    /// (bitmaps, sketches and the key cap all happen): the rows are the naive ones.
    #[test]
    fn fast_equals_naive(
        recs in records(),
        taps in 1usize..4,
        split in proptest::collection::vec(0usize..4, 400),
        compact_at in 1usize..40,
        max_keys in prop_oneof![Just(usize::MAX), 5usize..400],
        exact in 2u32..6,
        reverse in any::<bool>(),
    ) {
        let cfg = ScanConfig {
            vertical_min_ports: 6, vertical_min_low_ports: 2, horizontal_min_dests: 5,
            keep_ports: 2, keep_dests: 2, max_keys_per_hour: max_keys, sample: 3,
            exact_ports: exact, exact_dests: exact, compact_at,
        };
        let mut parts: Vec<ScanTap> = (0..taps).map(|_| ScanTap::new(&cfg)).collect();
        for (r, &t) in recs.iter().zip(split.iter().cycle()) {
            parts[t % taps].add(r.hour, r.src, r.dst, r.port, r.proto);
        }
        if reverse {
            parts.reverse();
        }
        let mut all = parts.pop().unwrap();
        for p in parts {
            all.merge(p);
        }
        assert_same(&all.finish(), &naive::scans(&recs, &cfg));
    }
}

/// The per-record sizes the crate docs state.
#[test]
fn buffered_record_sizes_are_as_documented() {
    use crate::sets::Addr;
    assert_eq!(std::mem::size_of::<<u32 as Addr>::Raw>(), 8);
    assert_eq!(std::mem::size_of::<<IpAddr as Addr>::Raw>(), 28);
    // An hour's flat buffer: the source beside the packed record.
    assert_eq!(std::mem::size_of::<(u32, <u32 as Addr>::Raw)>(), 16);
}

#[test]
fn ipv4_text_is_to_string() {
    use crate::sets::Addr;
    for a in [0u32, 9, 10, 99, 100, 255, 0x0a00_0001, 0xc0a8_6401, 0x6463_0a09, u32::MAX] {
        assert_eq!(a.text(), a.ip().to_string());
    }
}
