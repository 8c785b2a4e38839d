//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

use flowlog::{FlowRecord, LineError, RecordSink};

/// Collects every record as its line text, and every line error.
#[derive(Default, Debug)]
pub struct Collect {
    pub lines: Vec<String>,
    pub errors: Vec<LineError>,
    pub controls: u64,
    pub accepts: u64,
    pub rejects: u64,
    pub json: Vec<serde_json::Value>,
}

impl RecordSink for Collect {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.lines.push(String::from_utf8_lossy(rec.line()).into_owned());
        match rec.action() {
            Ok(Some(flowlog::Action::Accept)) => self.accepts += 1,
            Ok(Some(flowlog::Action::Reject)) => self.rejects += 1,
            _ => {}
        }
        let mut out = Vec::new();
        flowlog::write_json(rec, &mut out);
        self.json.push(serde_json::from_slice(&out).expect("write_json gives valid json"));
    }
    fn malformed(&mut self, err: &LineError) {
        self.errors.push(*err);
    }
    fn control_message(&mut self) {
        self.controls += 1;
    }
}

pub fn sample(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/samples").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}
