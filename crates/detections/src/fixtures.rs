//! A workload with a case of each detection, shared by the tests of the streaming sources that
//! run them (the engine's, the lease worker's): built with the `fixtures` feature, which only
//! their dev-dependencies turn on.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use flowspike_history::Store;
use flowspike_scan::ScanConfig;
use flowspike_threat::{ThreatList, ThreatLists};

use crate::{DetectionsConfig, PORT_SCAN_TABLE, PORT_SWEEP_TABLE, THREAT_TABLE, VOLUME_TABLE};

/// Every detection on, the list `tor-exits` (`198.51.7.0/28`), and small exact caps of the scan
/// sets, so that the taps' snapshots carry port bitmaps and destination sketches.
pub fn config() -> DetectionsConfig {
    let list = ThreatList::parse("tor-exits", b"198.51.7.0/28\n").expect("a valid list");
    DetectionsConfig {
        scan: ScanConfig {
            exact_ports: 64,
            exact_dests: 64,
            compact_at: 50,
            ..ScanConfig::default()
        },
        threat_lists: Some(Arc::new(ThreatLists::new(vec![list]).expect("one list"))),
        ..DetectionsConfig::default()
    }
}

/// One default-format (v2) TCP record of one packet and 40 bytes, ending 5 s after `start`.
pub fn line(src: &str, dst: &str, dport: u32, start: i64, action: &str) -> String {
    format!(
        "2 123456789012 eni-1 {src} {dst} 40000 {dport} 6 1 40 {start} {} {action} OK\n",
        start + 5
    )
}

/// Four hours from `base` (an hour's start): a vertical scan of 600 ports (hour 0), a sweep of
/// 300 addresses on 445 (hour 1), threat-list flows both ways (hours 0 and 2), ACCEPTed volume and
/// blocked traffic every hour; in time order, interleaved.
pub fn records(base: i64) -> Vec<String> {
    let mut recs: Vec<(i64, String)> = Vec::new();
    for p in 0..600i64 {
        let t = base + 2400 + p * 2; // 2400 s .. 3598 s: the end of the first hour
        recs.push((t, line("10.0.0.5", "10.0.1.9", 1 + p as u32 * 3, t, "REJECT")));
    }
    for d in 0..300i64 {
        let t = base + 3600 + 100 + d * 7;
        let dst = format!("172.16.{}.{}", d / 200, d % 200 + 1);
        recs.push((t, line("10.0.0.6", &dst, 445, t, "REJECT")));
    }
    for (h, n) in [(0i64, 3i64), (2, 5)] {
        for i in 0..n {
            let t = base + h * 3600 + 60 + i * 300;
            recs.push((t, line("10.0.0.7", &format!("198.51.7.{}", i + 1), 9001, t, "ACCEPT")));
            recs.push((t + 1, line("198.51.7.9", "10.0.0.7", 22, t + 1, "REJECT")));
        }
    }
    for h in 0..4i64 {
        for i in 0..40i64 {
            let t = base + h * 3600 + i * 90;
            let src = format!("10.0.9.{}", i % 4);
            recs.push((t, line(&src, &format!("8.8.{}.{}", h, i % 9), 443, t, "ACCEPT")));
            recs.push((t + 2, line(&src, "1.1.1.1", 23, t + 2, "REJECT")));
        }
    }
    recs.sort_by_key(|r| r.0);
    recs.into_iter().map(|r| r.1).collect()
}

/// Every file of every detection table in `store`, decoded, by table and hour (what two runs
/// compare).
pub fn tables(store: &dyn Store) -> BTreeMap<(&'static str, i64), Vec<RecordBatch>> {
    let mut out = BTreeMap::new();
    for t in [PORT_SCAN_TABLE, PORT_SWEEP_TABLE, VOLUME_TABLE, THREAT_TABLE] {
        for h in t.hours(store).expect("the table's hours") {
            out.insert((t.name, h), t.read_hour(store, h).expect("the table's hour"));
        }
    }
    out
}
