//! Any bytes through every framing: never panics, the summary is consistent with what the sink
//! saw, and every record delivered has only values of their fields' types.
#![no_main]

use flowlog::{for_each_record, DecodeOptions, FlowRecord, Framing, LineError, RecordSink};
use libfuzzer_sys::fuzz_target;

#[derive(Default)]
struct Count(u64, u64);

impl RecordSink for Count {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.0 += 1;
        assert_eq!(rec.len(), rec.format().len());
        for (field, value) in rec.fields() {
            if let Some(v) = value {
                assert!(field.value_type().accepts(v), "{field}: {v:?}");
            }
        }
        assert!(rec.srcaddr().is_ok() && rec.dstaddr().is_ok() && rec.start().is_ok());
        assert!(rec.action().is_ok() && rec.log_status().is_ok() && rec.bytes().is_ok());
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
