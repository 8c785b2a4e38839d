//! `flowspike parse`: records as JSON lines, a summary on stderr.

use std::io::Write;

use anyhow::Context;
use flowlog::{FlowRecord, LineError, RecordSink, Summary};

use crate::args::ParseArgs;

/// Writes each record as JSON; keeps the first malformed lines for the summary.
struct JsonSink<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    file: String,
    samples: &'a mut Vec<String>,
    error: Option<std::io::Error>,
}

impl<W: Write> RecordSink for JsonSink<'_, W> {
    fn record(&mut self, rec: &FlowRecord<'_>) {
        self.buf.clear();
        flowlog::write_json(rec, &mut self.buf);
        self.buf.push(b'\n');
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(&self.buf) {
                self.error = Some(e);
            }
        }
    }

    fn malformed(&mut self, err: &LineError) {
        if self.samples.len() < 10 {
            self.samples.push(format!("{}:{}: {err}", self.file, err.line));
        }
    }
}

/// Runs the command: exit code 0 when every input decoded without a damaged line, 3 when some
/// line or input was skipped (counted and sampled on stderr); an input that cannot be read or an
/// output that cannot be written is an error (1).
pub fn run(a: ParseArgs) -> anyhow::Result<u8> {
    let opts = crate::settings::decode_options(&a.input)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut total = Summary::default();
    let mut samples = Vec::new();
    let mut unreadable = 0u64;
    for path in &a.files {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {file}"))?;
        let mut sink = JsonSink {
            out: &mut out,
            buf: Vec::new(),
            file: file.clone(),
            samples: &mut samples,
            error: None,
        };
        let result = flowlog::for_each_record(&bytes, &opts, &mut sink);
        if let Some(e) = sink.error.take() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(0);
            }
            return Err(e).context("cannot write to standard output");
        }
        match result {
            Ok(s) => total.merge(&s),
            Err(e) => {
                unreadable += 1;
                eprintln!("flowspike: {file}: cannot decode: {e}");
            }
        }
    }
    out.flush().context("cannot write to standard output")?;
    eprintln!(
        "records: {}, malformed lines: {}, control messages skipped: {}, undecodable inputs: {}",
        total.records, total.malformed, total.control_messages, unreadable
    );
    for s in &samples {
        eprintln!("  malformed: {s}");
    }
    // The same contract as `replay` (README "Exit codes"): input skipped, whether damaged lines
    // or whole inputs that cannot be decoded, is exit 3 once everything else is printed.
    Ok(if unreadable > 0 || total.malformed > 0 { crate::EXIT_SKIPPED } else { 0 })
}
