//! Where spike records go: the choice ([`Output`]) and the writer sink every source shares.

use flowspike_detect::Spike;

use crate::{EngineError, SpikeSink};

/// Where spike records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// JSON lines on standard output.
    Stdout,
    /// PutRecords to this Kinesis stream.
    Stream(String),
}

/// Spikes as JSON lines to a writer (standard output by default).
pub struct WriterSink<W: std::io::Write>(pub W);

impl<W: std::io::Write> SpikeSink for WriterSink<W> {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        let io =
            |e: std::io::Error| EngineError::Output { message: e.to_string(), retryable: false };
        for s in spikes {
            self.0.write_all(s.to_json_line().as_bytes()).map_err(io)?;
            self.0.write_all(b"\n").map_err(io)?;
        }
        self.0.flush().map_err(io)
    }
}
