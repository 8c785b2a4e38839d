//! Where spike records go and in what form ([`Output`]), the writer sink every source shares and
//! [`FanOut`], one record list delivered to several sinks.

use flowspike_detect::Spike;
use flowspike_findings::{AwsContext, Encoder, Finding};

use crate::{EngineError, SpikeSink};

/// Where spike records go and in what form. The default: JSON lines of flowspike's own record on
/// standard output, no other sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// PutRecords to this Kinesis stream; `None`: JSON lines on standard output.
    pub stream: Option<String>,
    /// The format of the records on the stream or standard output (and in EventBridge events).
    pub encoder: Encoder,
    /// Also import every record into Security Hub (ASFF, BatchImportFindings) of this account and
    /// region.
    pub securityhub: Option<AwsContext>,
    /// Also send every record to this EventBridge event bus (PutEvents).
    pub eventbridge_bus: Option<String>,
}

/// Spikes as JSON lines (in the encoder's format) to a writer (standard output by default).
pub struct WriterSink<W: std::io::Write> {
    out: W,
    encoder: Encoder,
}

impl<W: std::io::Write> WriterSink<W> {
    /// Lines of `encoder`'s format to `out`.
    pub fn new(out: W, encoder: Encoder) -> WriterSink<W> {
        WriterSink { out, encoder }
    }

    /// Writes `records` as lines made by `line`, then flushes.
    fn write_lines<T>(
        &mut self,
        records: &[T],
        line: impl Fn(&Encoder, &T) -> String,
    ) -> Result<(), EngineError> {
        let io =
            |e: std::io::Error| EngineError::Output { message: e.to_string(), retryable: false };
        for r in records {
            self.out.write_all(line(&self.encoder, r).as_bytes()).map_err(io)?;
            self.out.write_all(b"\n").map_err(io)?;
        }
        self.out.flush().map_err(io)
    }
}

impl<W: std::io::Write> SpikeSink for WriterSink<W> {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        self.write_lines(spikes, Encoder::to_json_line)
    }

    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
        self.write_lines(findings, Encoder::finding_line)
    }
}

/// Delivers every list of spikes to each of its sinks in order; the list is accepted when every
/// sink accepted it. A sink that fails stops the delivery with its error: the engine does not
/// checkpoint the records, and after a restart they go to every sink again (those that had
/// them already get them twice — at least once, like any retry of a sink).
pub struct FanOut(pub Vec<Box<dyn SpikeSink + Send>>);

impl SpikeSink for FanOut {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        for sink in &mut self.0 {
            sink.emit(spikes)?;
        }
        Ok(())
    }

    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
        for sink in &mut self.0 {
            sink.emit_findings(findings)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowspike_findings::Format;

    fn spike(src: &str) -> Spike {
        serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "detection": "blocked_outbound_spike", "mode": "window",
            "hour": "2026-03-05T14:00:00Z", "src_ip": src, "blocked_count": 57,
            "unique_dest_count": 1, "dest_ips": ["8.8.8.8"], "resource_ids": [],
            "baseline_mean": 3.2, "baseline_stdev": 1.4, "data_points": 212, "threshold": 7.4
        }))
        .unwrap()
    }

    #[test]
    fn writer_sink_writes_lines_of_its_format() {
        let s = [spike("10.0.0.1"), spike("10.0.0.2")];
        let mut native = WriterSink::new(Vec::new(), Encoder::default());
        native.emit(&s).unwrap();
        let want: String = s.iter().map(|s| s.to_json_line() + "\n").collect();
        assert_eq!(String::from_utf8(native.out).unwrap(), want);
        let mut ocsf = WriterSink::new(Vec::new(), Encoder::new(Format::Ocsf, None).unwrap());
        ocsf.emit(&s).unwrap();
        let text = String::from_utf8(ocsf.out).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["class_uid"], 2004);
        assert_eq!(lines[1]["evidences"][0]["src_endpoint"]["ip"], "10.0.0.2");
    }

    struct Refuses;
    impl SpikeSink for Refuses {
        fn emit(&mut self, _: &[Spike]) -> Result<(), EngineError> {
            Err(EngineError::Output { message: "no".into(), retryable: false })
        }
        fn emit_findings(&mut self, _: &[Finding]) -> Result<(), EngineError> {
            Err(EngineError::Output { message: "no".into(), retryable: false })
        }
    }

    #[derive(Clone, Default)]
    struct Shared(
        std::sync::Arc<std::sync::Mutex<Vec<Spike>>>,
        std::sync::Arc<std::sync::Mutex<Vec<Finding>>>,
    );
    impl SpikeSink for Shared {
        fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
            self.0.lock().unwrap().extend_from_slice(spikes);
            Ok(())
        }
        fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
            self.1.lock().unwrap().extend_from_slice(findings);
            Ok(())
        }
    }

    #[test]
    fn fan_out_delivers_to_every_sink_and_fails_with_any() {
        let (a, b) = (Shared::default(), Shared::default());
        let mut both = FanOut(vec![Box::new(a.clone()), Box::new(b.clone())]);
        both.emit(&[spike("10.0.0.1")]).unwrap();
        assert_eq!(a.0.lock().unwrap().len(), 1);
        assert_eq!(b.0.lock().unwrap().len(), 1);
        let mut failing = FanOut(vec![Box::new(a.clone()), Box::new(Refuses)]);
        assert!(failing.emit(&[spike("10.0.0.2")]).is_err());

        // Findings take the same way: every sink, and any sink's failure fails the list.
        let f: Finding = serde_json::from_value(serde_json::json!({
            "id": "00112233445566ff", "detection": "port_scan", "hour": "2026-03-05T14:00:00Z",
            "src_ip": "10.0.0.7", "summary": "scan", "severity": "high", "dst_ip": "10.1.0.9",
            "count": 600, "threshold": 500.0, "evidence": {}
        }))
        .unwrap();
        both.emit_findings(std::slice::from_ref(&f)).unwrap();
        assert_eq!(*a.1.lock().unwrap(), vec![f.clone()]);
        assert_eq!(*b.1.lock().unwrap(), vec![f.clone()]);
        assert!(failing.emit_findings(&[f]).is_err());
        assert_eq!(a.1.lock().unwrap().len(), 2, "the sink before the failing one had it");
    }
}
