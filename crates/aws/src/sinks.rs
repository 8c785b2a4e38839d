//! The sinks of spikes and findings an [`Output`] asks for, built once for every source (the
//! consumer, the Firehose endpoint, replay).

use flowspike_engine::{EngineError, FanOut, Output, SpikeSink, WriterSink};

use crate::eventbridge::EventBridgeSink;
use crate::kinesis::KinesisSink;
use crate::securityhub::SecurityHubSink;
use crate::{AwsError, Policy};

/// The sinks of `output`, in order: the Kinesis stream or standard output (in the encoder's
/// format), then Security Hub, then EventBridge. A list of spikes is accepted when every sink
/// accepted it ([`FanOut`]); AWS clients are built on `handle`'s runtime.
pub fn spike_sink(output: &Output, handle: &tokio::runtime::Handle) -> Box<dyn SpikeSink + Send> {
    let mut sinks: Vec<Box<dyn SpikeSink + Send>> = Vec::new();
    sinks.push(match &output.stream {
        None => Box::new(WriterSink::new(std::io::stdout(), output.encoder.clone())),
        Some(s) => Box::new(KinesisSink {
            client: handle.block_on(crate::kinesis::client_from_env()),
            stream: s.clone(),
            encoder: output.encoder.clone(),
            handle: handle.clone(),
        }),
    });
    sinks.extend(extras(output, handle, Policy::Forever));
    if sinks.len() == 1 {
        return sinks.pop().unwrap_or_else(|| Box::new(FanOut(Vec::new())));
    }
    Box::new(FanOut(sinks))
}

/// The Security Hub and EventBridge sinks `output` asks for, in that order, retrying under `policy`.
fn extras(
    output: &Output,
    handle: &tokio::runtime::Handle,
    policy: Policy,
) -> Vec<Box<dyn SpikeSink + Send>> {
    let mut sinks: Vec<Box<dyn SpikeSink + Send>> = Vec::new();
    if let Some(aws) = &output.securityhub {
        sinks.push(Box::new(SecurityHubSink {
            client: handle.block_on(crate::securityhub::client_from_env()),
            aws: aws.clone(),
            policy,
            handle: handle.clone(),
        }));
    }
    if let Some(bus) = &output.eventbridge_bus {
        sinks.push(Box::new(EventBridgeSink {
            client: handle.block_on(crate::eventbridge::client_from_env()),
            bus: bus.clone(),
            encoder: output.encoder.clone(),
            policy,
            handle: handle.clone(),
        }));
    }
    sinks
}

/// Security Hub and EventBridge sinks for a synchronous caller without a runtime (`replay`, which
/// writes its spikes file itself): owns a small runtime.
pub struct ExtraSinks {
    // Declared first: dropped (and its clients with it) before the runtime they run on.
    sink: FanOut,
    _rt: tokio::runtime::Runtime,
}

impl ExtraSinks {
    /// The Security Hub and EventBridge sinks `output` asks for (its stream is ignored); `None`
    /// when it asks for neither.
    /// Their calls are retried under `policy`.
    pub fn new(output: &Output, policy: Policy) -> Result<Option<ExtraSinks>, AwsError> {
        if output.securityhub.is_none() && output.eventbridge_bus.is_none() {
            return Ok(None);
        }
        // A worker thread drives the clients' connections: `Handle::block_on` (how the sinks
        // wait) does not drive a current-thread runtime, so a call on one would never complete.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("flowspike-sinks")
            .enable_all()
            .build()?;
        let sinks = extras(output, rt.handle(), policy);
        Ok(Some(ExtraSinks { sink: FanOut(sinks), _rt: rt }))
    }
}

impl SpikeSink for ExtraSinks {
    fn emit(&mut self, spikes: &[flowspike_detect::Spike]) -> Result<(), EngineError> {
        self.sink.emit(spikes)
    }

    fn emit_findings(
        &mut self,
        findings: &[flowspike_findings::Finding],
    ) -> Result<(), EngineError> {
        self.sink.emit_findings(findings)
    }
}
