//! Which detections run: `--detections blocked-spike,port-scan,...`.

use std::fmt;
use std::str::FromStr;

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detection {
    /// Blocked outbound spike (ESCU "Detect Spike in blocked Outbound Traffic from your AWS").
    BlockedSpike,
    /// Vertical port scan (ESCU "Internal Vertical Port Scan").
    PortScan,
    /// Horizontal port scan / port sweep (ESCU "Internal Horizontal Port Scan").
    PortSweep,
    /// Unusual outbound volume (GuardDuty Behavior:EC2/TrafficVolumeUnusual).
    OutboundVolume,
    /// Flows with addresses on threat lists (GuardDuty MaliciousIPCaller.Custom).
    ThreatList,
}

impl Detection {
    /// Every detection, in the order of the documentation.
    pub const ALL: [Detection; 5] = [
        Detection::BlockedSpike,
        Detection::PortScan,
        Detection::PortSweep,
        Detection::OutboundVolume,
        Detection::ThreatList,
    ];

    /// The name on the command line (`port-scan`).
    pub fn as_str(self) -> &'static str {
        match self {
            Detection::BlockedSpike => "blocked-spike",
            Detection::PortScan => "port-scan",
            Detection::PortSweep => "port-sweep",
            Detection::OutboundVolume => "outbound-volume",
            Detection::ThreatList => "threat-list",
        }
    }

    /// The `detection` field of its records (`port_scan`; the blocked spike's is
    /// `blocked_outbound_spike`, `flowspike_detect::DETECTION`).
    pub fn record_name(self) -> &'static str {
        match self {
            Detection::BlockedSpike => flowspike_detect::DETECTION,
            Detection::PortScan => "port_scan",
            Detection::PortSweep => "port_sweep",
            Detection::OutboundVolume => "outbound_volume",
            Detection::ThreatList => "threat_list",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Detection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no detection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown detection {0:?}: expected all or a comma-separated list of blocked-spike, port-scan, port-sweep, outbound-volume, threat-list")]
pub struct UnknownDetection(pub String);

impl FromStr for Detection {
    type Err = UnknownDetection;

    fn from_str(s: &str) -> Result<Detection, UnknownDetection> {
        Detection::ALL
            .into_iter()
            .find(|d| d.as_str() == s || d.record_name() == s)
            .ok_or_else(|| UnknownDetection(s.to_owned()))
    }
}

/// A set of detections. The default is every detection: each meets its quality bar on the
/// labelled cases (docs/detections.md). The threat-list detection only runs with lists
/// (`--threat-list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectionSet(u8);

impl Default for DetectionSet {
    fn default() -> DetectionSet {
        DetectionSet::all()
    }
}

impl DetectionSet {
    /// Every detection.
    pub fn all() -> DetectionSet {
        DetectionSet(Detection::ALL.iter().fold(0, |m, d| m | d.bit()))
    }

    /// Only the blocked-outbound spike (flowspike before the other detections).
    pub fn blocked_spike_only() -> DetectionSet {
        DetectionSet(Detection::BlockedSpike.bit())
    }

    /// Whether `d` runs.
    #[inline]
    pub fn contains(self, d: Detection) -> bool {
        self.0 & d.bit() != 0
    }

    /// Whether any detection other than the blocked spike runs (then records go to [`crate::Taps`]).
    #[inline]
    pub fn any_tap(self) -> bool {
        self.0 & !Detection::BlockedSpike.bit() != 0
    }

    /// The detections of the set, in [`Detection::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Detection> {
        Detection::ALL.into_iter().filter(move |d| self.contains(*d))
    }
}

impl FromStr for DetectionSet {
    type Err = UnknownDetection;

    /// `all`, or names separated by commas (spaces around them ignored).
    fn from_str(s: &str) -> Result<DetectionSet, UnknownDetection> {
        if s.trim() == "all" {
            return Ok(DetectionSet::all());
        }
        let mut m = 0;
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            m |= name.parse::<Detection>()?.bit();
        }
        if m == 0 {
            return Err(UnknownDetection(s.to_owned()));
        }
        Ok(DetectionSet(m))
    }
}

impl fmt::Display for DetectionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Detection::as_str).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        let s: DetectionSet = "port-scan, threat-list".parse().unwrap();
        assert!(s.contains(Detection::PortScan) && s.contains(Detection::ThreatList));
        assert!(!s.contains(Detection::BlockedSpike) && !s.contains(Detection::PortSweep));
        assert_eq!(s.to_string(), "port-scan,threat-list");
        assert!(s.any_tap());
        assert_eq!("all".parse::<DetectionSet>().unwrap(), DetectionSet::all());
        assert_eq!("blocked_outbound_spike".parse(), Ok(DetectionSet::blocked_spike_only()));
        assert!(!DetectionSet::blocked_spike_only().any_tap());
        assert!("port-scan,nope".parse::<DetectionSet>().is_err());
        assert!("".parse::<DetectionSet>().is_err());
        for d in Detection::ALL {
            assert_eq!(d.as_str().parse::<Detection>(), Ok(d));
        }
    }
}
