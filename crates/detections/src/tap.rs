//! The per-worker taps: what every detection reads of each record, in the counting pass.

use std::collections::BTreeMap;

use std::net::IpAddr;

use flowlog::{Action, Field, FlowRecord, LogStatus};
use flowspike_counter::{Hit, HitSink, Rule, TimeBounds};
use flowspike_history::Store;

use flowspike_scan::{horizontal_batch, vertical_batch, HorizontalRow, ScanTap, VerticalRow};
use flowspike_threat::{match_batch, Flow, MatchRow, ThreatTap};

use crate::volume::{detect_volume_kept, volume_batch, VolumeBaseline, VolumeRow, VolumeTap};

mod snapshot;
use crate::{
    Detection, DetectionsConfig, DetectionsError, Finding, PORT_SCAN_TABLE, PORT_SWEEP_TABLE,
    THREAT_TABLE, VOLUME_TABLE,
};
pub use snapshot::TAPS_SNAPSHOT_VERSION;

/// One worker's aggregates of every detection of a [`DetectionsConfig`] but the blocked spike
/// (which the counter keeps).
#[derive(Debug, Clone)]
pub struct Taps {
    /// Vertical and horizontal scans share one tap (the same records, two folds).
    scan: Option<ScanTap>,
    volume: Option<VolumeTap>,
    threat: Option<ThreatTap>,
}

impl Taps {
    /// The taps of `cfg`'s detections.
    pub fn new(cfg: &DetectionsConfig) -> Taps {
        let volume = cfg.set.contains(Detection::OutboundVolume).then(VolumeTap::default);
        let threat = match cfg.lists_now() {
            Some(lists) if cfg.set.contains(Detection::ThreatList) && !lists.is_empty() => {
                Some(ThreatTap::new(lists, &cfg.threat))
            }
            _ => None,
        };
        let scans = cfg.set.contains(Detection::PortScan) || cfg.set.contains(Detection::PortSweep);
        let scan = scans.then(|| ScanTap::new(&cfg.scan));
        Taps { scan, volume, threat }
    }

    /// Whether any detection other than the blocked spike runs (else the taps hold nothing, and a
    /// record costs these three tests).
    #[inline]
    pub fn is_on(&self) -> bool {
        self.scan.is_some() || self.volume.is_some() || self.threat.is_some()
    }

    /// Reads one record the counting sink accepted. Values that do not parse or are absent
    /// (`-`) leave the record out of the detections that need them; the counting sink has
    /// already counted any bad value.
    /// `start`: the record's `start` when the caller already read it (`None`: read it here).
    #[inline]
    pub fn record(
        &mut self,
        rec: &FlowRecord<'_>,
        rule: &Rule,
        bounds: TimeBounds,
        start: Option<u64>,
    ) {
        if !self.is_on() {
            return;
        }
        self.tap(rec, rule, bounds, start);
    }

    fn tap(&mut self, rec: &FlowRecord<'_>, rule: &Rule, bounds: TimeBounds, start: Option<u64>) {
        if rec.log_status() != Ok(Some(LogStatus::Ok)) {
            return;
        }
        // Two copies of the rest: IPv4 values kept by the line's check stay in registers (the
        // `Result<Option<IpAddr>>` of the general accessors goes through memory).
        match (rec.ipv4(Field::SrcAddr), rec.ipv4(Field::DstAddr)) {
            (Some(s), Some(d)) => {
                let (src_in, dst_in) = (rule.is_internal_v4(s), rule.is_internal_v4(d));
                if src_in || dst_in {
                    let (s, d) = ((IpAddr::V4(s), src_in), (IpAddr::V4(d), dst_in));
                    self.tap_addrs(rec, bounds, start, s, d);
                }
            }
            _ => {
                let (Ok(Some(src)), Ok(Some(dst))) = (rec.srcaddr(), rec.dstaddr()) else {
                    return;
                };
                let (src_in, dst_in) = (rule.is_internal(src), rule.is_internal(dst));
                if src_in || dst_in {
                    self.tap_addrs(rec, bounds, start, (src, src_in), (dst, dst_in));
                }
            }
        }
    }

    /// The taps of a record with both addresses, each with whether it is internal (one at least).
    #[inline(always)]
    fn tap_addrs(
        &mut self,
        rec: &FlowRecord<'_>,
        bounds: TimeBounds,
        start: Option<u64>,
        (src, src_in): (IpAddr, bool),
        (dst, dst_in): (IpAddr, bool),
    ) {
        let start = match start {
            Some(s) => s,
            None => match rec.start() {
                Ok(Some(s)) => s,
                _ => return,
            },
        };
        let Ok(hour) = bounds.hour_of(start) else { return };
        if src_in {
            if let Some(s) = &mut self.scan {
                s.add(hour, src, dst, port(rec.dstport()), protocol(rec));
            }
        }
        if src_in && !dst_in {
            if let Some(v) = &mut self.volume {
                if rec.action() == Ok(Some(Action::Accept)) {
                    let bytes = rec.bytes().ok().flatten().unwrap_or(0);
                    let packets = rec.packets().ok().flatten().unwrap_or(0);
                    v.add(hour, src, bytes, packets);
                }
            }
        }
        if src_in != dst_in {
            if let Some(t) = &mut self.threat {
                let (internal, remote) = if src_in { (src, dst) } else { (dst, src) };
                // Nearly every address is on no list: the rest of the record is read only for
                // the few that are.
                if t.lists().matches(remote) != 0 {
                    t.add(&threat_flow(rec, hour, start, src_in, internal, remote));
                }
            }
        }
    }

    /// Adds another worker's aggregates (same configuration).
    pub fn merge(&mut self, other: Taps) {
        merge_opt(&mut self.scan, other.scan, ScanTap::merge);
        merge_opt(&mut self.volume, other.volume, VolumeTap::merge);
        merge_opt(&mut self.threat, other.threat, ThreatTap::merge);
    }

    /// The aggregates by hour.
    pub fn finish(self) -> TapsOutput {
        let mut out = TapsOutput::default();
        let Taps { scan, volume, threat } = self;
        // The three are independent: each in parallel with the others (and within itself).
        let (scan, (volume, threat)) = rayon::join(
            || scan.map(ScanTap::finish),
            || rayon::join(|| volume.map(VolumeTap::finish), || threat.map(ThreatTap::finish)),
        );
        if let Some(s) = scan {
            for (hour, scans) in s {
                let t = out.hours.entry(hour).or_default();
                t.vertical = scans.vertical;
                t.horizontal = scans.horizontal;
                t.scan_flows_over_cap = scans.overflow.dropped_flows;
            }
        }
        if let Some(v) = volume {
            for (hour, rows) in v {
                out.hours.entry(hour).or_default().volume = rows;
            }
        }
        if let Some(t) = threat {
            for (hour, rows) in t {
                out.hours.entry(hour).or_default().matches = rows;
            }
        }
        out
    }
}

/// A port value as the taps keep it: absent (`-`, ICMP) is 0; the parser's check keeps values
/// within 16 bits, the clamp only guards the narrowing.
#[inline(always)]
fn port(v: Result<Option<u64>, flowlog::FieldError>) -> u16 {
    v.ok().flatten().map_or(0, |p| p.min(65_535) as u16)
}

/// The record's IANA protocol number (0 when absent).
#[inline(always)]
fn protocol(rec: &FlowRecord<'_>) -> u8 {
    rec.protocol().ok().flatten().map_or(0, |p| p.min(255) as u8)
}

/// The threat tap's view of a record whose `remote` side is on a list.
fn threat_flow(
    rec: &FlowRecord<'_>,
    hour: i64,
    start: u64,
    outbound: bool,
    internal: std::net::IpAddr,
    remote: std::net::IpAddr,
) -> Flow {
    let (sport, dport) = (port(rec.srcport()), port(rec.dstport()));
    let (internal_port, remote_port) = if outbound { (sport, dport) } else { (dport, sport) };
    Flow {
        hour,
        internal,
        remote,
        outbound,
        internal_port,
        remote_port,
        protocol: protocol(rec),
        accepted: rec.action() == Ok(Some(Action::Accept)),
        start,
        end: rec.end().ok().flatten().unwrap_or(start),
        bytes: rec.bytes().ok().flatten().unwrap_or(0),
        packets: rec.packets().ok().flatten().unwrap_or(0),
    }
}

/// Merges `b` into `a` with `merge`; takes `b` when `a` has none.
fn merge_opt<T>(a: &mut Option<T>, b: Option<T>, merge: impl FnOnce(&mut T, T)) {
    match (a.as_mut(), b) {
        (Some(x), Some(y)) => merge(x, y),
        (None, Some(y)) => *a = Some(y),
        (_, None) => {}
    }
}

/// A counter with the taps beside it: the [`HitSink`] a counting sink feeds when other
/// detections run (hits go to the counter, every accepted record to the taps).
#[derive(Debug)]
pub struct WithTaps<'a, C> {
    /// The blocked-spike counter.
    pub counter: C,
    /// The other detections' taps.
    pub taps: &'a mut Taps,
}

impl<C: HitSink> HitSink for WithTaps<'_, C> {
    #[inline]
    fn add_hit(&mut self, hit: &Hit<'_>) {
        self.counter.add_hit(hit);
    }

    #[inline]
    fn record(
        &mut self,
        rec: &FlowRecord<'_>,
        rule: &Rule,
        bounds: TimeBounds,
        start: Option<u64>,
    ) {
        self.taps.record(rec, rule, bounds, start);
    }
}

/// One hour's rows of every table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourTables {
    /// Vertical-scan candidates: (source, destination) with many ports.
    pub vertical: Vec<VerticalRow>,
    /// Sweep candidates: (source, port, protocol) with many destinations.
    pub horizontal: Vec<HorizontalRow>,
    /// Records of sources the scan tap dropped past its per-hour cap
    /// (`ScanConfig::max_keys_per_hour`): not judged for scans.
    pub scan_flows_over_cap: u64,
    /// Outbound volume per source.
    pub volume: Vec<VolumeRow>,
    /// Threat-list matches per (internal address, list).
    pub matches: Vec<MatchRow>,
}

/// What the taps made: every hour with rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TapsOutput {
    /// Rows by hour.
    pub hours: BTreeMap<i64, HourTables>,
}

impl TapsOutput {
    /// Writes the tables of `hour` (empty tables when the hour has no row: it was covered) for
    /// every detection of `cfg` that has a table, each as file `name`, replacing the hour.
    pub fn write_hour(
        &self,
        cfg: &DetectionsConfig,
        store: &dyn Store,
        hour: i64,
        name: &str,
    ) -> Result<(), DetectionsError> {
        self.write_hour_with(cfg, hour, |table, batch| table.replace_hour(store, hour, batch, name))
    }

    /// Hands the batch of each table of `hour` that `cfg` writes (empty when the hour has no
    /// row) to `write`: [`TapsOutput::write_hour`] replaces the hour; a streaming source puts its
    /// own file beside the hour's others (`Table::put_hour_file`: replay's and other streams'
    /// files stay, a redo with the same name overwrites its own).
    pub fn write_hour_with(
        &self,
        cfg: &DetectionsConfig,
        hour: i64,
        write: impl Fn(
            flowspike_history::Table,
            &arrow_array::RecordBatch,
        ) -> Result<String, flowspike_history::HistoryError>,
    ) -> Result<(), DetectionsError> {
        let empty = HourTables::default();
        let t = self.hours.get(&hour).unwrap_or(&empty);
        let put = |table: flowspike_history::Table, batch: &arrow_array::RecordBatch| {
            write(table, batch)
                .map(drop)
                .map_err(|source| DetectionsError::History { table: table.name, source })
        };
        if cfg.set.contains(Detection::PortScan) {
            put(PORT_SCAN_TABLE, &vertical_batch(&t.vertical))?;
        }
        if cfg.set.contains(Detection::PortSweep) {
            put(PORT_SWEEP_TABLE, &horizontal_batch(&t.horizontal))?;
        }
        if cfg.set.contains(Detection::OutboundVolume) {
            put(VOLUME_TABLE, &volume_batch(&t.volume))?;
        }
        if cfg.set.contains(Detection::ThreatList) && cfg.threat_lists.is_some() {
            put(THREAT_TABLE, &match_batch(&t.matches))?;
        }
        Ok(())
    }

    /// The findings of `hours` (the covered hours, every one with its rows in `self`), sorted by
    /// hour, detection, source and id.
    pub fn evaluate(
        &self,
        cfg: &DetectionsConfig,
        store: &dyn Store,
        hours: &[i64],
    ) -> Result<Vec<Finding>, DetectionsError> {
        self.evaluate_kept(cfg, store, hours, &mut VolumeBaseline::default())
    }

    /// [`TapsOutput::evaluate`] for a caller that evaluates hour after hour: the volume
    /// detector is kept warmed in `volume` between calls ([`VolumeBaseline`]).
    pub fn evaluate_kept(
        &self,
        cfg: &DetectionsConfig,
        store: &dyn Store,
        hours: &[i64],
        volume: &mut VolumeBaseline,
    ) -> Result<Vec<Finding>, DetectionsError> {
        let mut out = Vec::new();
        if cfg.set.contains(Detection::OutboundVolume) {
            // The covered hours' rows in place (an hour with none is an empty slice: covered).
            let written: BTreeMap<i64, &[VolumeRow]> = hours
                .iter()
                .map(|h| (*h, self.hours.get(h).map_or(&[][..], |t| t.volume.as_slice())))
                .collect();
            out.extend(detect_volume_kept(&cfg.volume, store, &written, volume)?);
        }
        for t in hours.iter().filter_map(|h| self.hours.get(h)) {
            if cfg.set.contains(Detection::PortScan) {
                out.extend(t.vertical.iter().filter_map(|r| crate::scans::port_scan(&cfg.scan, r)));
            }
            if cfg.set.contains(Detection::PortSweep) {
                let sweeps =
                    t.horizontal.iter().filter_map(|r| crate::scans::port_sweep(&cfg.scan, r));
                out.extend(sweeps);
            }
            out.extend(t.matches.iter().map(crate::threats::threat_match));
        }
        out.sort_by(|a, b| {
            (a.hour, &a.detection, &a.src_ip, &a.id).cmp(&(b.hour, &b.detection, &b.src_ip, &b.id))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlog::{for_each_record, DecodeOptions};
    use flowspike_counter::{CountSink, Counter, CounterConfig};
    use flowspike_threat::{ThreatList, ThreatLists};
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// Runs default-format `lines` through the counting sink with taps of `cfg`.
    fn run(cfg: &DetectionsConfig, lines: &str) -> TapsOutput {
        let rule = Rule::default();
        let mut taps = Taps::new(cfg);
        let counter = WithTaps { counter: Counter::new(CounterConfig::default()), taps: &mut taps };
        let mut sink = CountSink::new(&rule, counter);
        for_each_record(lines.as_bytes(), &DecodeOptions::default(), &mut sink).unwrap();
        taps.finish()
    }

    fn line(src: &str, dst: &str, dport: u16, bytes: u64, start: u64, action: &str) -> String {
        format!(
            "2 123456789012 eni-0a {src} {dst} 40000 {dport} 6 3 {bytes} {start} {} {action} OK\n",
            start + 5
        )
    }

    fn lists() -> Arc<ThreatLists> {
        let a = ThreatList::parse("bad", b"# test\n198.51.7.0/28\n2a02::1\n").unwrap();
        let b = ThreatList::parse("other", b"198.51.7.15\n").unwrap();
        Arc::new(ThreatLists::new(vec![a, b]).unwrap())
    }

    #[test]
    fn threat_matches_both_directions_and_cidr_edges() {
        let cfg = DetectionsConfig { threat_lists: Some(lists()), ..DetectionsConfig::default() };
        let t = 1_767_225_600;
        let text = [
            line("10.0.0.1", "198.51.7.0", 443, 100, t, "ACCEPT"),
            line("198.51.7.15", "10.0.0.1", 22, 50, t + 10, "REJECT"),
            // One past the /28: on no list.
            line("10.0.0.1", "198.51.7.16", 443, 100, t, "ACCEPT"),
            // Both sides external: not ours.
            line("8.8.8.8", "198.51.7.1", 443, 100, t, "ACCEPT"),
        ]
        .concat();
        let out = run(&cfg, &text);
        let rows = &out.hours[&(t as i64)].matches;
        let got: Vec<(&str, &str, u64, u64, u64)> = rows
            .iter()
            .map(|r| {
                (r.src_ip.as_str(), r.list.as_str(), r.flows, r.outbound_flows, r.accepted_flows)
            })
            .collect();
        assert_eq!(got, vec![("10.0.0.1", "bad", 2, 1, 1), ("10.0.0.1", "other", 1, 0, 0)]);
        let findings =
            out.evaluate(&cfg, &flowspike_history::LocalStore::new("/nonexistent"), &[t as i64]);
        let findings = findings.unwrap();
        assert_eq!(findings.len(), 2);
        assert!(findings.iter().all(|f| f.detection == "threat_list"));
        assert_eq!(
            findings.iter().find(|f| f.list.as_deref() == Some("other")).unwrap().severity,
            "medium"
        );
    }

    /// Taps made after a reload of a changed list file match against the new list; taps made
    /// before keep the lists they were made with.
    #[test]
    fn taps_made_after_a_reload_use_the_new_lists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tor-exits.txt");
        std::fs::write(&path, "198.51.7.1\n").unwrap();
        let source = flowspike_threat::FileSource::named_by_stem(&path);
        let reloader = Arc::new(flowspike_threat::Reloader::load(vec![Box::new(source)]).unwrap());
        let cfg = DetectionsConfig {
            threat_lists: Some(reloader.current()),
            threat_reloader: Some(reloader.clone()),
            ..DetectionsConfig::default()
        };
        let t = 1_767_225_600;
        let text = [
            line("10.0.0.1", "198.51.7.1", 443, 100, t, "ACCEPT"),
            line("10.0.0.2", "198.51.7.2", 443, 100, t, "ACCEPT"),
        ]
        .concat();
        let matched = |out: &TapsOutput| -> Vec<String> {
            out.hours.values().flat_map(|h| h.matches.iter().map(|r| r.src_ip.clone())).collect()
        };
        assert_eq!(matched(&run(&cfg, &text)), ["10.0.0.1"]);
        // A longer file: a new fingerprint whatever the clock's resolution.
        std::fs::write(&path, "198.51.7.1\n198.51.7.2\n").unwrap();
        assert!(reloader.reload_if_changed().unwrap());
        assert_eq!(matched(&run(&cfg, &text)), ["10.0.0.1", "10.0.0.2"]);
    }

    #[test]
    fn no_taps_when_only_the_blocked_spike_runs() {
        let cfg = DetectionsConfig { threat_lists: Some(lists()), ..DetectionsConfig::none() };
        let t = 1_767_225_600;
        let out = run(&cfg, &line("10.0.0.1", "198.51.7.0", 443, 100, t, "ACCEPT"));
        assert!(out.hours.is_empty());
    }

    proptest! {
        /// The volume table equals a naive sum over the records: ACCEPT, log-status OK, internal
        /// source, external destination, by (hour, source).
        #[test]
        fn volume_equals_naive(recs in proptest::collection::vec(
            (0u8..6, 0u8..6, 0u64..5_000, 0u64..4 * 3600, any::<bool>()), 0..200)
        ) {
            let addr = |i: u8| ["10.0.0.1", "10.0.0.2", "192.168.1.1", "8.8.8.8", "172.32.0.1", "fd00::1"][i as usize];
            let t0 = 1_767_225_600;
            let mut text = String::new();
            let mut naive: BTreeMap<(i64, String), (u64, u64)> = BTreeMap::new();
            for (s, d, bytes, dt, accept) in &recs {
                let (src, dst) = (addr(*s), addr(*d));
                let start = t0 + dt;
                text.push_str(&line(src, dst, 443, *bytes, start, if *accept { "ACCEPT" } else { "REJECT" }));
                let internal = |a: &str| a.starts_with("10.") || a.starts_with("192.168.");
                if *accept && internal(src) && !internal(dst) {
                    let e = naive.entry(((start - start % 3600) as i64, src.to_owned())).or_default();
                    e.0 += 1;
                    e.1 += bytes;
                }
            }
            let out = run(&DetectionsConfig::default(), &text);
            let fast: BTreeMap<(i64, String), (u64, u64)> = out
                .hours
                .values()
                .flat_map(|t| t.volume.iter())
                .map(|r| ((r.hour, r.src_ip.clone()), (r.flows, r.bytes)))
                .collect();
            prop_assert_eq!(fast, naive);
        }
    }
}
