//! Parse benchmarks: plain default-format text through the line parser and through
//! `for_each_record`, each with the blocked-outbound filter (REJECT, OK, RFC1918 source,
//! non-RFC1918 destination). Every run checks the count known from the generator.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowlog::{
    for_each_record, Action, DecodeOptions, FlowRecord, Format, LineError, LineParser, LogStatus,
    RecordSink,
};
use flowspike_bench::generate;

const LINES: usize = 200_000;

fn rfc1918(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168)
        }
        IpAddr::V6(_) => false,
    }
}

/// The ESCU blocked-outbound filter, cheapest test first.
#[inline]
fn blocked_outbound(rec: &FlowRecord<'_>) -> bool {
    rec.action() == Ok(Some(Action::Reject))
        && rec.log_status() == Ok(Some(LogStatus::Ok))
        && matches!(rec.srcaddr(), Ok(Some(ip)) if rfc1918(ip))
        && matches!(rec.dstaddr(), Ok(Some(ip)) if !rfc1918(ip))
}

#[derive(Default)]
struct Filter {
    hits: u64,
    malformed: u64,
}

impl RecordSink for Filter {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.hits += u64::from(blocked_outbound(rec));
    }
    fn malformed(&mut self, _: &LineError) {
        self.malformed += 1;
    }
}

fn parse(c: &mut Criterion) {
    let g = generate(LINES, 42);
    let data = &g.data;
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(data.len() as u64));

    group.bench_function("for_each_record_blocked_outbound", |b| {
        b.iter(|| {
            let mut sink = Filter::default();
            let s = for_each_record(black_box(data), &DecodeOptions::default(), &mut sink)
                .expect("plain lines decode");
            assert_eq!((s.records, sink.malformed), (g.lines, 0));
            assert_eq!(sink.hits, g.blocked_outbound);
            sink.hits
        })
    });

    let format = Format::default_v2();
    let mut parser = LineParser::new();
    group.bench_function("line_parser_std_split_blocked_outbound", |b| {
        b.iter(|| {
            let mut hits = 0u64;
            let mut n = 0u64;
            for line in std_split_lines(black_box(data)) {
                n += 1;
                if let Ok(rec) = parser.parse(line, &format, n, 1 << 16) {
                    hits += u64::from(blocked_outbound(&rec));
                }
            }
            assert_eq!((n, hits), (g.lines, g.blocked_outbound));
            hits
        })
    });
    group.finish();
    eprintln!(
        "parse data set: {} lines, {} bytes ({:.1} bytes/line), {} blocked-outbound",
        g.lines,
        data.len(),
        data.len() as f64 / g.lines as f64,
        g.blocked_outbound
    );
}

/// Splits with `slice::split` (a byte loop, no memchr): shows what memchr line splitting buys.
fn std_split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

criterion_group!(benches, parse);
criterion_main!(benches);
