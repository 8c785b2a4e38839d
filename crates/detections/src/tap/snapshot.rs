//! The taps of a streaming engine: split by hour when hours close, and serialized into its
//! checkpoints so that the open hours survive a restart (`kill -9` included) exactly as the open
//! aggregate rows do.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use flowspike_scan::{ScanSnapshot, ScanTap};
use flowspike_threat::{ThreatSnapshot, ThreatTap};

use super::Taps;
use crate::volume::{VolumeSnapshot, VolumeTap};
use crate::{DetectionsConfig, DetectionsError};

/// Version of the serialized taps ([`Taps::to_snapshot`]); a snapshot of another version is
/// refused.
pub const TAPS_SNAPSHOT_VERSION: u32 = 1;

/// The serialized form, borrowing the taps.
#[derive(Serialize)]
struct Out<'a> {
    version: u32,
    scan: Option<&'a ScanTap>,
    volume: Option<&'a VolumeTap>,
    threat: Option<&'a ThreatTap>,
}

/// The same form read back.
#[derive(Deserialize)]
struct In {
    version: u32,
    scan: Option<ScanSnapshot>,
    volume: Option<VolumeSnapshot>,
    threat: Option<ThreatSnapshot>,
}

impl Taps {
    /// Takes the hours for which `take(hour)` holds into taps of their own; `self` keeps the
    /// others. [`Taps::finish`] of the part gives those hours' rows exactly as `finish` of the
    /// whole would.
    pub fn split_hours(&mut self, mut take: impl FnMut(i64) -> bool) -> Taps {
        Taps {
            scan: self.scan.as_mut().map(|s| s.split_hours(&mut take)),
            volume: self.volume.as_mut().map(|v| v.split_hours(&mut take)),
            threat: self.threat.as_mut().map(|t| t.split_hours(&mut take)),
        }
    }

    /// The hours before `hour` ([`Taps::split_hours`]).
    pub fn take_before(&mut self, hour: i64) -> Taps {
        self.split_hours(|h| h < hour)
    }

    /// Every hour any tap holds.
    pub fn hours(&self) -> BTreeSet<i64> {
        let scan = self.scan.iter().flat_map(ScanTap::hours);
        let volume = self.volume.iter().flat_map(VolumeTap::hours);
        let threat = self.threat.iter().flat_map(ThreatTap::hours);
        scan.chain(volume).chain(threat).collect()
    }

    /// The records the taps read, once per tap that read one (the scan tap reads every record
    /// with an internal source, the volume tap the ACCEPTed outbound ones, the threat tap each
    /// listed match once per list).
    pub fn records(&self) -> u64 {
        self.scan.as_ref().map_or(0, ScanTap::records)
            + self.volume.as_ref().map_or(0, VolumeTap::records)
            + self.threat.as_ref().map_or(0, ThreatTap::records)
    }

    /// The taps' state as bytes (postcard), the scan groups folded first (which keeps every
    /// key: the rows made later are unchanged) so that sets, not raw records, are written.
    pub fn to_snapshot(&mut self) -> Vec<u8> {
        if let Some(s) = &mut self.scan {
            s.fold();
        }
        let out = Out {
            version: TAPS_SNAPSHOT_VERSION,
            scan: self.scan.as_ref(),
            volume: self.volume.as_ref(),
            threat: self.threat.as_ref(),
        };
        // Serializing plain data into a vector cannot fail.
        postcard::to_allocvec(&out).unwrap_or_default()
    }

    /// The taps of `cfg` holding the state `bytes` ([`Taps::to_snapshot`]) held: a detection
    /// `cfg` turned off since is dropped, one turned on starts empty, the threat tap matches
    /// against `cfg`'s lists (rows of a list no longer loaded keep its name).
    pub fn from_snapshot(cfg: &DetectionsConfig, bytes: &[u8]) -> Result<Taps, DetectionsError> {
        let saved: In =
            postcard::from_bytes(bytes).map_err(|e| DetectionsError::Snapshot(e.to_string()))?;
        if saved.version != TAPS_SNAPSHOT_VERSION {
            return Err(DetectionsError::Snapshot(format!(
                "unsupported taps snapshot version {}",
                saved.version
            )));
        }
        let mut taps = Taps::new(cfg);
        if let (Some(t), Some(s)) = (&mut taps.scan, saved.scan) {
            *t = ScanTap::restore(&cfg.scan, s);
        }
        if let (Some(t), Some(s)) = (&mut taps.volume, saved.volume) {
            *t = VolumeTap::restore(s);
        }
        if let (Some(t), Some(s)) = (&mut taps.threat, saved.threat) {
            *t = ThreatTap::restore(t.lists().clone(), &cfg.threat, s);
        }
        Ok(taps)
    }
}
