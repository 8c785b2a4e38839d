//! The settings every pipeline shares, from bytes to spikes.

use flowlog::DecodeOptions;
use flowspike_detect::DetectConfig;

use crate::{CounterConfig, Rule};

/// The settings of the four stages every pipeline runs — decode, classify, count, detect — built
/// once from the command line and embedded whole in each pipeline's own settings (a replay, the
/// Kinesis consumer, the Firehose endpoint, the streaming engine), so the stages are configured
/// alike whichever source feeds them.
///
/// It lives in the counter crate because this is the lowest crate that may know all four types:
/// the detection must not know the parser nor the counter (its tree is checked), while the counter
/// may know the detection's settings.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Framing and format of the inputs, and their decompression and line limits.
    pub decode: DecodeOptions,
    /// Which records count, and which event times are accepted: a `start` past
    /// [`Rule::time_bounds`] (set by [`Rule::at_clock`]; every representable time otherwise) or,
    /// for a service, past [`Rule::bounds_at`] the wall clock, is malformed.
    pub rule: Rule,
    /// Counter limits (destinations per key, sources per hour).
    pub counter: CounterConfig,
    /// Detection settings.
    pub detect: DetectConfig,
}
