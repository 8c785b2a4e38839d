//! The size of the streaming engine's taps snapshot (docs/limits.md): every record of the given
//! flow log files (plain, gzip, any framing `flowspike parse` reads) through one `Taps` of every
//! detection, as the engine's open hours hold them; prints, per hour, the snapshot of that hour
//! alone (`Taps::to_snapshot`, scan groups folded) and the records read.
//!
//! `cargo run --release -p flowspike-detections --example snapshot_size -- FILE... [--threat-list FILE...]`

use std::sync::Arc;

use flowlog::{for_each_record, DecodeOptions};
use flowspike_counter::{CountSink, Counter, CounterConfig, Rule};
use flowspike_detections::{DetectionsConfig, Taps, WithTaps};
use flowspike_threat::{list_name, ThreatList, ThreatLists};

fn main() {
    let mut files = Vec::new();
    let mut lists = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--threat-list" {
            let path = args.next().expect("--threat-list FILE");
            let text = std::fs::read(&path).expect("threat list");
            let name = list_name(path.rsplit('/').next().unwrap_or(&path)).to_owned();
            lists.push(ThreatList::parse(&name, &text).expect("threat list parses"));
        } else {
            files.push(a);
        }
    }
    let cfg = DetectionsConfig {
        threat_lists: (!lists.is_empty())
            .then(|| Arc::new(ThreatLists::new(lists).expect("threat lists"))),
        ..DetectionsConfig::default()
    };
    let rule = Rule::default();
    let mut taps = Taps::new(&cfg);
    for f in &files {
        let data = std::fs::read(f).expect("input file");
        let hits = WithTaps { counter: Counter::new(CounterConfig::default()), taps: &mut taps };
        let mut sink = CountSink::new(&rule, hits);
        for_each_record(&data, &DecodeOptions::default(), &mut sink).expect("decodes");
    }
    println!("hour\trecords_read_by_taps\tsnapshot_bytes");
    for hour in taps.hours() {
        let mut one = taps.split_hours(|h| h == hour);
        let records = one.records();
        println!("{hour}\t{records}\t{}", one.to_snapshot().len());
    }
}
