//! Any bytes through every framing: never panics, and the summary is consistent with what the
//! sink saw.
#![no_main]

use flowlog::{for_each_record, DecodeOptions, FlowRecord, Framing, LineError, RecordSink};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Count(u64, u64);

impl RecordSink for Count {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.0 += 1;
        assert_eq!(rec.len(), rec.format().len());
        let _ = (rec.srcaddr(), rec.dstaddr(), rec.start(), rec.action(), rec.log_status());
        let mut out = Vec::new();
        flowlog::write_json(rec, &mut out);
        assert!(out.starts_with(b"{") && out.ends_with(b"}"));
    }
    fn malformed(&mut self, e: &LineError) {
        assert!(e.line >= 1);
        self.1 += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    for framing in Framing::ALL {
        let opts = DecodeOptions { framing, max_decompressed_bytes: 1 << 22, ..Default::default() };
        let mut c = Count::default();
        if let Ok(s) = for_each_record(data, &opts, &mut c) {
            assert_eq!((s.records, s.malformed), (c.0, c.1));
        }
    }
});
