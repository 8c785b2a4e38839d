//! The other detections' findings grouped into incidents, as spike records are
//! ([`crate::incidents`]).
//!
//! A finding incident is the findings of one detection and one subject — the source and the
//! destination scanned (port scan), the source and the port/protocol swept (port sweep), the
//! source (outbound volume), the internal address and the list (threat list): what each
//! finding's id is made of ([`flowspike_findings::finding_id`]) — whose hours follow each other
//! with at most [`EPISODE_MAX_GAP_HOURS`] quiet hours between them, the blocked spike's episode
//! rule. A finding read twice (a replay run twice over the same hours, the same id) counts once.
//!
//! [`EPISODE_MAX_GAP_HOURS`]: flowspike_detect::incident::EPISODE_MAX_GAP_HOURS

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use flowspike_findings::Finding;

use crate::incidents::episodes;

/// The detections with findings, in the order the report shows them, with their heading.
pub const DETECTIONS: [(&str, &str); 4] = [
    ("port_scan", "Vertical port scans"),
    ("port_sweep", "Port sweeps"),
    ("outbound_volume", "Unusual outbound volume"),
    ("threat_list", "Threat-list contacts"),
];

/// The findings of one incident, one per hour, hours increasing.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingIncident {
    /// Its findings (at least one), all of one detection and subject.
    pub findings: Vec<Finding>,
}

impl FindingIncident {
    /// The id of its first finding.
    pub fn id(&self) -> &str {
        &self.findings[0].id
    }

    /// Its detection (`port_scan`, `port_sweep`, `outbound_volume`, `threat_list`).
    pub fn detection(&self) -> &str {
        &self.findings[0].detection
    }

    /// The internal address it is about.
    pub fn src_ip(&self) -> &str {
        &self.findings[0].src_ip
    }

    /// What it is about beside the source ([`subject`]); empty for outbound volume.
    pub fn subject(&self) -> String {
        subject(&self.findings[0])
    }

    /// Its source and subject in words: `10.0.0.5 → 10.0.3.9`, `10.0.0.5 on tcp/22`,
    /// `10.0.0.5 ↔ list tor-exits`, `10.0.0.5`.
    pub fn subject_label(&self) -> String {
        let f = &self.findings[0];
        let src = &f.src_ip;
        match (f.detection.as_str(), self.subject()) {
            (_, s) if s.is_empty() => src.clone(),
            ("port_scan", dst) => format!("{src} → {dst}"),
            ("port_sweep", _) => match f.dst_port {
                Some(p) => format!("{src} on {}", service(p, f.protocol)),
                None => src.clone(),
            },
            ("threat_list", list) => format!("{src} ↔ list {list}"),
            (_, s) => format!("{src} · {s}"),
        }
    }

    /// Its first hour with a finding.
    pub fn first_hour(&self) -> i64 {
        self.findings[0].hour
    }

    /// Its last hour with a finding.
    pub fn last_hour(&self) -> i64 {
        self.findings[self.findings.len() - 1].hour
    }

    /// The finding with the largest count (the first of equals).
    pub fn peak(&self) -> &Finding {
        crate::incidents::first_max_by_key(&self.findings, |f| f.count)
    }

    /// The most severe of its findings' severities (`high` over `medium` over `low`).
    pub fn severity(&self) -> &str {
        let rank = |s: &str| match s {
            "critical" => 4,
            "high" => 3,
            "medium" => 2,
            "low" => 1,
            _ => 0,
        };
        let mut best = self.findings[0].severity.as_str();
        for f in &self.findings[1..] {
            if rank(&f.severity) > rank(best) {
                best = &f.severity;
            }
        }
        best
    }

    /// The ids of its findings, hours increasing.
    pub fn ids(&self) -> Vec<&str> {
        self.findings.iter().map(|f| f.id.as_str()).collect()
    }
}

/// `tcp/443`, `udp/53`, or the protocol number (`proto 47/0`) for another protocol.
pub(crate) fn service(port: u16, protocol: Option<u8>) -> String {
    match protocol {
        Some(6) => format!("tcp/{port}"),
        Some(17) => format!("udp/{port}"),
        Some(p) => format!("proto {p}/{port}"),
        None => format!("port {port}"),
    }
}

/// What a finding is about beside its detection and source, as its id names it: the destination
/// scanned, `port/protocol` swept, the list; nothing for volume. A detection this crate does not
/// know is keyed by every field that may name a subject.
pub fn subject(f: &Finding) -> String {
    let port = || match (f.dst_port, f.protocol) {
        (Some(p), Some(pr)) => format!("{p}/{pr}"),
        (Some(p), None) => p.to_string(),
        _ => String::new(),
    };
    match f.detection.as_str() {
        "port_scan" => f.dst_ip.clone().unwrap_or_default(),
        "port_sweep" => port(),
        "outbound_volume" => String::new(),
        "threat_list" => f.list.clone().unwrap_or_default(),
        _ => [f.dst_ip.clone().unwrap_or_default(), port(), f.list.clone().unwrap_or_default()]
            .join("|"),
    }
}

/// Groups `findings` (any order: the result does not depend on it) into incidents, newest
/// first: by last hour, then larger peak count, then detection, then subject.
///
/// Findings of one (detection, source, subject, hour) — one id — count once: when two differ
/// (replays with other settings) the one with the larger count is kept, then the larger JSON
/// text, so that the choice does not depend on the order read.
pub fn group_findings(findings: Vec<Finding>) -> Vec<FindingIncident> {
    type Key = (String, String, String);
    let mut by_hour: BTreeMap<(Key, i64), Finding> = BTreeMap::new();
    for f in findings {
        let key = ((f.detection.clone(), f.src_ip.clone(), subject(&f)), f.hour);
        match by_hour.entry(key) {
            Entry::Vacant(v) => {
                v.insert(f);
            }
            Entry::Occupied(mut o) => {
                let kept = o.get();
                let wins = (f.count, f.to_json_line()) > (kept.count, kept.to_json_line());
                if wins {
                    o.insert(f);
                }
            }
        }
    }
    let runs = episodes(by_hour.into_iter().map(|((key, hour), f)| (key, hour, f)));
    let mut out: Vec<FindingIncident> =
        runs.into_iter().map(|findings| FindingIncident { findings }).collect();
    out.sort_by(|a, b| {
        b.last_hour()
            .cmp(&a.last_hour())
            .then_with(|| b.peak().count.cmp(&a.peak().count))
            .then_with(|| a.detection().cmp(b.detection()))
            .then_with(|| a.src_ip().cmp(b.src_ip()))
            .then_with(|| a.subject().cmp(&b.subject()))
    });
    out
}

/// The number of incidents of each detection: the four of [`DETECTIONS`] in their order (zero
/// included), then any other detection named by a finding, by name.
pub fn count_by_detection(incidents: &[FindingIncident]) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in incidents {
        *counts.entry(i.detection()).or_default() += 1;
    }
    let mut out: Vec<(String, usize)> =
        DETECTIONS.iter().map(|(d, _)| (d.to_string(), counts.remove(d).unwrap_or(0))).collect();
    out.extend(counts.into_iter().map(|(d, n)| (d.to_string(), n)));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::incidents::tests::H;

    /// A finding of `detection` by `src` at hour index `h` after `H` about `subject` (the
    /// destination scanned, `port/protocol` swept, the list; ignored for volume).
    pub(crate) fn finding(
        detection: &str,
        h: i64,
        src: &str,
        subject: &str,
        count: u64,
    ) -> Finding {
        let hour = H + h * 3600;
        let evidence = serde_json::json!({ "flows": count });
        let summary = format!("{src} did {count} things");
        let mut f = Finding::new(detection, hour, src, subject, summary, (count, 1.0), evidence);
        match detection {
            "port_scan" => f.dst_ip = Some(subject.into()),
            "port_sweep" => {
                let (port, proto) = subject.split_once('/').unwrap();
                f.dst_port = Some(port.parse().unwrap());
                f.protocol = Some(proto.parse().unwrap());
            }
            "threat_list" => {
                f.list = Some(subject.into());
                // A threat finding's destination is its first remote address: not its subject.
                f.dst_ip = Some(format!("198.51.100.{h}"));
            }
            _ => {}
        }
        f
    }

    /// (detection, subject label, first and last hour index, ids) of each incident.
    fn shape(inc: &[FindingIncident]) -> Vec<(String, String, i64, i64, usize)> {
        inc.iter()
            .map(|i| {
                let (f, l) = ((i.first_hour() - H) / 3600, (i.last_hour() - H) / 3600);
                (i.detection().to_string(), i.subject_label(), f, l, i.ids().len())
            })
            .collect()
    }

    fn check(findings: Vec<Finding>, want: &[(&str, &str, i64, i64, usize)]) {
        let want: Vec<(String, String, i64, i64, usize)> =
            want.iter().map(|&(d, s, f, l, n)| (d.into(), s.into(), f, l, n)).collect();
        assert_eq!(shape(&group_findings(findings.clone())), want, "in order");
        let mut reversed = findings.clone();
        reversed.reverse();
        assert_eq!(shape(&group_findings(reversed)), want, "reversed");
        // A fixed shuffle (a rotation by 3 of every other element).
        let mut shuffled = findings;
        let n = shuffled.len();
        for i in (0..n).step_by(2) {
            shuffled.swap(i, (i + 3) % n);
        }
        assert_eq!(shape(&group_findings(shuffled)), want, "shuffled");
    }

    #[test]
    fn one_quiet_hour_joins_two_split() {
        let scan = |h| finding("port_scan", h, "10.0.0.5", "10.0.9.9", 600);
        check(
            vec![scan(0), scan(2), scan(3), scan(6)],
            &[
                ("port_scan", "10.0.0.5 → 10.0.9.9", 6, 6, 1),
                ("port_scan", "10.0.0.5 → 10.0.9.9", 0, 3, 3),
            ],
        );
    }

    #[test]
    fn a_different_subject_is_another_incident() {
        check(
            vec![
                finding("port_scan", 0, "10.0.0.5", "10.0.9.9", 600),
                finding("port_scan", 1, "10.0.0.5", "10.0.9.8", 700),
                finding("port_scan", 1, "10.0.0.6", "10.0.9.9", 500),
                finding("port_sweep", 0, "10.0.0.5", "22/6", 300),
                finding("port_sweep", 1, "10.0.0.5", "22/17", 300),
                finding("port_sweep", 1, "10.0.0.5", "22/6", 260),
                finding("threat_list", 0, "10.0.0.7", "tor-exits", 4),
                finding("threat_list", 1, "10.0.0.7", "custom", 2),
                finding("threat_list", 1, "10.0.0.7", "tor-exits", 1),
                finding("outbound_volume", 0, "10.0.0.8", "", 9_000),
                finding("outbound_volume", 1, "10.0.0.8", "", 7_000),
            ],
            // Newest first, then the larger peak; equal peaks by subject text ("22/17" < "22/6").
            &[
                ("outbound_volume", "10.0.0.8", 0, 1, 2),
                ("port_scan", "10.0.0.5 → 10.0.9.8", 1, 1, 1),
                ("port_scan", "10.0.0.6 → 10.0.9.9", 1, 1, 1),
                ("port_sweep", "10.0.0.5 on udp/22", 1, 1, 1),
                ("port_sweep", "10.0.0.5 on tcp/22", 0, 1, 2),
                ("threat_list", "10.0.0.7 ↔ list tor-exits", 0, 1, 2),
                ("threat_list", "10.0.0.7 ↔ list custom", 1, 1, 1),
                ("port_scan", "10.0.0.5 → 10.0.9.9", 0, 0, 1),
            ],
        );
    }

    #[test]
    fn a_finding_read_twice_counts_once_whatever_the_order() {
        let a = finding("threat_list", 0, "10.0.0.7", "tor-exits", 4);
        let mut more = a.clone();
        more.count = 9;
        let b = finding("threat_list", 1, "10.0.0.7", "tor-exits", 2);
        for input in [
            vec![a.clone(), b.clone(), a.clone(), more.clone()],
            vec![more.clone(), a.clone(), b.clone(), b.clone()],
        ] {
            let inc = group_findings(input);
            assert_eq!(inc.len(), 1);
            assert_eq!(inc[0].ids(), [a.id.as_str(), b.id.as_str()]);
            assert_eq!(inc[0].peak(), &more, "the larger of two versions of an id is kept");
        }
    }

    #[test]
    fn severity_peak_and_counts() {
        let mut low = finding("threat_list", 0, "10.0.0.7", "custom", 5);
        low.severity = "medium".into();
        let high = finding("threat_list", 1, "10.0.0.7", "custom", 5);
        let inc = group_findings(vec![high.clone(), low.clone()]);
        assert_eq!(inc[0].severity(), "high");
        assert_eq!(inc[0].peak(), &low, "the first of equal counts");
        let inc = group_findings(vec![low, finding("port_scan", 0, "10.0.0.1", "10.0.0.2", 900)]);
        assert_eq!(
            count_by_detection(&inc),
            [("port_scan", 1), ("port_sweep", 0), ("outbound_volume", 0), ("threat_list", 1)]
                .map(|(d, n)| (d.to_string(), n))
        );
        let odd = finding("dns_tunnel", 0, "10.0.0.1", "", 1);
        assert_eq!(count_by_detection(&group_findings(vec![odd]))[4], ("dns_tunnel".into(), 1));
    }
}
