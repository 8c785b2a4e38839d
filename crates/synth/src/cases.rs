//! Labelled cases for the detections of issue #32: vertical port scans, horizontal port sweeps,
//! unusual outbound volume and threat-list matches, each with near-threshold negatives.
//!
//! With [`SynthConfig::cases`] `= n > 0`, [`generate`](crate::generate) injects `n` positive and `n`
//! negative cases of each [`CaseKind`] (fewer when hosts or hours run out) and labels them in
//! [`Manifest::cases`](crate::Manifest::cases); [`generate_to_dir`](crate::generate_to_dir) also
//! writes the two threat lists ([`write_threat_lists`]). With `n = 0` nothing here runs and the output
//! is byte-identical to what it was before cases existed.
//!
//! # Invariants
//! - Each case has a host of its own: not a burst or fleet-anomaly host, not in the fleet event, alive
//!   over the whole range. Its ordinary traffic goes on around the case (the case is hidden in it).
//! - Case records come from random streams of their own (one per case and hour), so the ordinary
//!   records of other hosts are those of the same config without cases. Those that count as blocked
//!   outbound (REJECT, RFC 1918 source, non-RFC 1918 IPv4 destination: many scan and threat-list
//!   records) follow the hour's ordinary blocked outbound records and are in
//!   [`expected_counts`](crate::expected_counts), so the counts and the blocked-spike labels stay
//!   exact: a scan to the internet is a blocked outbound spike too
//!   ([`Manifest::cases_at`](crate::Manifest::cases_at) names the case); the rest follow the hour's
//!   ordinary records.
//! - Negatives sit where ordinary traffic cannot push them over a threshold: scan negatives probe
//!   external destinations (no ordinary record goes to them) or, for a server's responses, an
//!   internal client (ordinary traffic adds no low port there); sweep negatives use ports the
//!   background never sends to (or a margin of 100 addresses on udp/53).
//! - No ordinary record touches a threat list: the lists live in 198.51.0.0/16 and 2a02::/16, which the
//!   background never draws; one past each end of a listed CIDR is in no list.
//! - Every (hour, source, port, protocol) of the whole archive with at least
//!   [`PORT_SWEEP_ADDRESSES`] distinct destinations is a labelled positive: the blocked-spike bursts of
//!   200–2000 random destinations on one port are sweeps too, and are labelled as such.
//!
//! # Outbound volume
//! With cases on, the ACCEPTed outbound records (internal host to a public address) get bytes from a
//! host-specific model: a per-record lognormal of host median (20 KB–2 MB) and shape (sigma 0.5–1.0:
//! heavy-tailed, yet a record stands for a host's flows of some minutes), times a host daily cycle
//! (own peak hour, amplitude 0.1–0.6) and an hourly noise (lognormal, sigma 0.25, mean 1); the number
//! of records keeps its Poisson rate and fleet-wide cycle. Hosts with few records have many empty
//! hours: on seed 1's default config, 0.08% of the hours of hosts with at least one outbound record an
//! hour on average exceed 10 times the host's mean (the median host's largest hour is 8.7 times its
//! mean); counting the quieter hosts too, 0.6%.
//! A volume case replaces the host's ordinary outbound records in its hours with flows to one
//! destination that sum to exactly `factor * usual`, where `usual` is the host's expected outbound
//! bytes in that hour (the case is placed in hours whose expectation is 0.9–1.3 times the host's
//! daily mean, so "the usual hour" and "the host's baseline" agree).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::fleet::std_normal;
use crate::model::{diurnal, is_drawn_public, mix, public_v4, Host, Kind, Rec};
use crate::{SynthConfig, SynthError};

/// Distinct destination ports on one destination in an hour from which a vertical scan is flagged
/// (ESCU's default, the detection's default).
pub const PORT_SCAN_PORTS: usize = 500;
/// Of those, how many must be below 1024.
pub const PORT_SCAN_LOW_PORTS: usize = 20;
/// Distinct destination addresses on one (port, protocol) in an hour from which a sweep is flagged.
pub const PORT_SWEEP_ADDRESSES: usize = 250;
/// Outbound ACCEPT records' share of a host's ACCEPT records (the model's `0..5` of `0..10`).
const OUTBOUND_SHARE: f64 = 0.5;
/// Sigma of the hourly noise of a host's outbound flow sizes.
const HOUR_NOISE: f64 = 0.25;
/// How much larger than its own median the always-heavy host's flows are.
const HEAVY_FACTOR: f64 = 40.0;
/// The threat lists' names, in file order.
pub const THREAT_LIST_NAMES: [&str; 2] = ["tor-exits", "custom"];

/// The detection a case is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseKind {
    /// Vertical port scan: one source, one destination, many ports.
    PortScan,
    /// Horizontal scan: one source, one (port, protocol), many destinations.
    PortSweep,
    /// Unusual ACCEPTed outbound bytes of a source against its own baseline.
    OutboundVolume,
    /// Flows between an internal host and an address on a threat list.
    ThreatList,
}

impl CaseKind {
    /// Every kind, in label order.
    pub const ALL: [CaseKind; 4] =
        [CaseKind::PortScan, CaseKind::PortSweep, CaseKind::OutboundVolume, CaseKind::ThreatList];

    /// `port_scan`, `port_sweep`, `outbound_volume` or `threat_list`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseKind::PortScan => "port_scan",
            CaseKind::PortSweep => "port_sweep",
            CaseKind::OutboundVolume => "outbound_volume",
            CaseKind::ThreatList => "threat_list",
        }
    }
}

/// The ground truth of one injected case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseLabel {
    /// The detection it is for.
    pub kind: CaseKind,
    /// Whether the detection should fire (false: a near-threshold negative).
    pub positive: bool,
    /// First hour (start, unix seconds).
    pub hour: i64,
    /// Consecutive hours it covers (the whole range for an always-heavy host).
    pub hours: u32,
    /// The internal source (for a threat-list case the internal host, whichever way the flows go;
    /// an fd00::/8 address for the IPv6 ones).
    pub src_ip: String,
    /// Scan: the destination. Sweep: the swept network (CIDR). Volume: the receiving address.
    /// Threat list: the list entry matched (or, for a negative, the CIDR whose edges are probed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<String>,
    /// Sweep and volume: the destination port, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    /// IP protocol number, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    /// Threat list: the list name (`custom,tor-exits` for the address on both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    /// One line saying what it is.
    pub what: String,
}

/// A listed network: an address is a network of full length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Net {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

impl Net {
    fn bits(self) -> (u128, u32, u32) {
        match self {
            Net::V4(a, l) => (u128::from(u32::from(a)), u32::from(l), 32),
            Net::V6(a, l) => (u128::from(a), u32::from(l), 128),
        }
    }

    fn addr(self, v: u128) -> IpAddr {
        match self {
            Net::V4(..) => IpAddr::V4(Ipv4Addr::from(v as u32)),
            Net::V6(..) => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }

    /// (first, last) as numbers.
    fn range(self) -> (u128, u128) {
        let (a, l, w) = self.bits();
        let host = if w - l >= 128 { u128::MAX } else { (1u128 << (w - l)) - 1 };
        (a & !host, a | host)
    }

    pub(crate) fn first(self) -> IpAddr {
        self.addr(self.range().0)
    }

    pub(crate) fn last(self) -> IpAddr {
        self.addr(self.range().1)
    }

    /// One below the first address and one above the last.
    pub(crate) fn outside(self) -> (IpAddr, IpAddr) {
        let (lo, hi) = self.range();
        (self.addr(lo - 1), self.addr(hi + 1))
    }

    fn is_v6(self) -> bool {
        matches!(self, Net::V6(..))
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Net::V4(a, 32) => write!(f, "{a}"),
            Net::V6(a, 128) => write!(f, "{a}"),
            Net::V4(a, l) => write!(f, "{a}/{l}"),
            Net::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}

/// The two threat lists: `(list index, entry)`, in file order. The shared address is on both.
#[derive(Debug, Clone)]
pub(crate) struct Lists {
    tor_v4: Vec<Net>,
    tor_v4_cidr: Net,
    tor_v6: Vec<Net>,
    tor_v6_cidr: Net,
    custom_v4: Vec<Net>,
    custom_v4_cidr: Net,
    custom_v6: Net,
    custom_v6_cidr: Net,
    shared: Net,
}

impl Lists {
    fn new(seed: u64) -> Lists {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0, 13));
        // Third octets of 198.51.0.0/16: even ones only, so that one past a /24 (an odd octet) is in
        // no entry; not near 198.51.100.0/24 (documentation).
        let mut octets: Vec<u8> =
            (2..=252u8).step_by(2).filter(|o| !(98..=102).contains(o)).collect();
        shuffle(&mut rng, &mut octets);
        let mut next_octet = octets.into_iter();
        let mut v4 = |rng: &mut ChaCha8Rng, len: u8| {
            let c = next_octet.next().unwrap_or(2);
            let d = match len {
                32 => rng.random_range(1..=254),
                28 => 16 * rng.random_range(1..=14u8),
                _ => 0,
            };
            Net::V4(Ipv4Addr::new(198, 51, c, d), len)
        };
        // A /32 of 2a02::/16 of its own per entry, so one past a CIDR is in no entry either.
        let mut used = HashSet::new();
        let mut v6 = |rng: &mut ChaCha8Rng, len: u8| {
            let x: u16 = loop {
                let x = rng.random_range(1..=0xfffe);
                if used.insert(x) {
                    break x;
                }
            };
            let base = (0x2a02u128 << 112) | (u128::from(x) << 96);
            let a = match len {
                48 => base | (u128::from(rng.random_range(1..=0xfffeu16)) << 80),
                64 => {
                    base | (u128::from(rng.random_range(1..=0xfffeu16)) << 80)
                        | (u128::from(rng.random_range(1..=0xfffeu16)) << 64)
                }
                _ => base | (rng.random::<u128>() >> 32).max(1),
            };
            Net::V6(Ipv6Addr::from(a), len)
        };
        Lists {
            tor_v4: (0..4).map(|_| v4(&mut rng, 32)).collect(),
            tor_v4_cidr: v4(&mut rng, 28),
            tor_v6: (0..2).map(|_| v6(&mut rng, 128)).collect(),
            tor_v6_cidr: v6(&mut rng, 64),
            custom_v4: (0..2).map(|_| v4(&mut rng, 32)).collect(),
            custom_v4_cidr: v4(&mut rng, 24),
            custom_v6: v6(&mut rng, 128),
            custom_v6_cidr: v6(&mut rng, 48),
            shared: v4(&mut rng, 32),
        }
    }

    /// The entries of list `i` ([`THREAT_LIST_NAMES`]), in file order.
    fn entries(&self, i: usize) -> Vec<Net> {
        let mut v = Vec::new();
        if i == 0 {
            v.extend(&self.tor_v4);
            v.push(self.tor_v4_cidr);
            v.extend(&self.tor_v6);
            v.push(self.tor_v6_cidr);
        } else {
            v.extend(&self.custom_v4);
            v.push(self.custom_v4_cidr);
            v.push(self.custom_v6);
            v.push(self.custom_v6_cidr);
        }
        v.push(self.shared);
        v
    }
}

/// A threat list as written to `threat-lists/<name>.txt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreatList {
    /// The list name (`tor-exits` or `custom`): the file is `<name>.txt`.
    pub name: String,
    /// Its entries: IPv4 and IPv6 addresses and CIDRs, as written.
    pub entries: Vec<String>,
}

impl ThreatList {
    /// The file's text: comment lines (`#`), a blank line, then one entry per line.
    pub fn text(&self, seed: u64) -> String {
        let about = if self.name == "tor-exits" {
            "Tor exit relays (synthetic)"
        } else {
            "custom block list (synthetic)"
        };
        let mut s = format!(
            "# {about}: flowspike-synth seed {seed}\n# one IPv4 or IPv6 address or CIDR per line; '#' starts a comment line\n\n"
        );
        for e in &self.entries {
            s.push_str(e);
            s.push('\n');
        }
        s
    }
}

/// The threat lists of `cfg` (none when `cfg.cases` is 0).
pub fn threat_lists(cfg: &SynthConfig) -> Result<Vec<ThreatList>, SynthError> {
    cfg.validate()?;
    if cfg.cases == 0 {
        return Ok(Vec::new());
    }
    let lists = Lists::new(cfg.seed);
    Ok(THREAT_LIST_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| ThreatList {
            name: name.to_string(),
            entries: lists.entries(i).iter().map(|n| n.to_string()).collect(),
        })
        .collect())
}

/// Writes the threat lists of `cfg` to `dir/threat-lists/<name>.txt` and returns their paths (none,
/// and nothing written, when `cfg.cases` is 0). [`generate_to_dir`](crate::generate_to_dir) calls it.
pub fn write_threat_lists(cfg: &SynthConfig, dir: &Path) -> Result<Vec<PathBuf>, SynthError> {
    let lists = threat_lists(cfg)?;
    if lists.is_empty() {
        return Ok(Vec::new());
    }
    let sub = dir.join("threat-lists");
    std::fs::create_dir_all(&sub).map_err(|source| SynthError::Io { path: sub.clone(), source })?;
    let mut paths = Vec::new();
    for l in &lists {
        let path = sub.join(format!("{}.txt", l.name));
        std::fs::write(&path, l.text(cfg.seed))
            .map_err(|source| SynthError::Io { path: path.clone(), source })?;
        paths.push(path);
    }
    Ok(paths)
}

/// A host's ACCEPTed outbound flow sizes.
#[derive(Debug, Clone, Copy)]
struct ByteProfile {
    /// Median bytes of a flow at the cycle's mean.
    median: f64,
    /// Lognormal shape of a flow's bytes.
    sigma: f64,
    amp: f64,
    peak: f64,
}

impl ByteProfile {
    fn cycle(&self, t0: i64) -> f64 {
        let hod = t0.rem_euclid(86_400) as f64 / 3600.0;
        1.0 + self.amp * (std::f64::consts::TAU * (hod - self.peak) / 24.0).cos()
    }
}

/// A threat-list flow: (remote address, outbound, action, destination port).
type Flow = (IpAddr, bool, Kind, u16);

/// What a case injects.
#[derive(Debug, Clone)]
enum Spec {
    /// Probes of `ports[k]` (hour `k` of the case) on `dst`; `responses`: a server's ACCEPTed replies
    /// from port 443 instead of probes.
    Scan { dst: IpAddr, ports: Vec<Vec<u16>>, responses: bool },
    /// Probes of each (address, port, protocol).
    Sweep { targets: Vec<(Ipv4Addr, u16, u8)> },
    /// ACCEPTed flows to `dst` summing to `bytes[k]` in hour `k` (the host's ordinary outbound
    /// records of those hours are dropped).
    Volume { dst: Ipv4Addr, bytes: Vec<u64> },
    /// No records: the host's profile is heavy.
    Heavy,
    /// Flows between `local` and each `(remote, outbound, action, port)`.
    Threat { local: IpAddr, flows: Vec<Flow> },
}

#[derive(Debug, Clone)]
struct Plan {
    host: usize,
    hour: u32,
    seed: u64,
    spec: Spec,
}

/// The planned cases of a world.
#[derive(Debug, Clone)]
pub(crate) struct Cases {
    /// Labels of the injected cases, in plan order.
    pub(crate) labels: Vec<CaseLabel>,
    plans: Vec<Plan>,
    /// Hour index -> plans with records in it.
    by_hour: HashMap<u32, Vec<usize>>,
    profiles: Vec<ByteProfile>,
    /// (host, hour index) whose ordinary outbound records a volume case replaces.
    replaced: HashSet<(usize, u32)>,
    /// The world's seed (hourly noise of the flow sizes).
    seed: u64,
}

fn shuffle<T>(rng: &mut ChaCha8Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.random_range(0..=i));
    }
}

/// A label with the fields every case has; the others `None`, the hours set by `Planner::push`.
fn label(kind: CaseKind, positive: bool, src_ip: String, what: String) -> CaseLabel {
    CaseLabel {
        kind,
        positive,
        hour: 0,
        hours: 0,
        src_ip,
        dst_ip: None,
        dst_port: None,
        protocol: None,
        list: None,
        what,
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b => format!("{:.0} KB", b / 1e3),
    }
}

/// `n` distinct ports: `low` below 1024 (from 1), the rest from 1024 up, avoiding `avoid`.
fn ports(rng: &mut ChaCha8Rng, n: usize, low: usize, avoid: &HashSet<u16>) -> Vec<u16> {
    let mut seen: HashSet<u16> = avoid.clone();
    let mut v = Vec::with_capacity(n);
    while v.len() < low {
        let p = rng.random_range(1..1024);
        if seen.insert(p) {
            v.push(p);
        }
    }
    while v.len() < n {
        let p = rng.random_range(1024..=65535);
        if seen.insert(p) {
            v.push(p);
        }
    }
    v
}

/// An internal (10/8) or public network of length 24 or 20, every address of it public for a public one.
fn sweep_net(rng: &mut ChaCha8Rng, internal: bool, len: u8) -> Ipv4Addr {
    let mask = u32::MAX << (32 - len);
    loop {
        let base = if internal {
            u32::from(Ipv4Addr::new(10, rng.random_range(0..=255), rng.random_range(0..=255), 0))
        } else {
            u32::from(public_v4(rng))
        } & mask;
        let all_public =
            (0..1u32 << (32 - len)).step_by(256).all(|o| is_drawn_public(Ipv4Addr::from(base + o)));
        if internal || all_public {
            return Ipv4Addr::from(base);
        }
    }
}

fn proto_name(p: u8) -> &'static str {
    if p == 17 {
        "udp"
    } else {
        "tcp"
    }
}

/// What the planner needs of the world.
pub(crate) struct PlanInput<'a> {
    pub(crate) cfg: &'a SynthConfig,
    pub(crate) hosts: &'a [Host],
    /// Hosts that may carry a case (alive throughout, no burst, anomaly or fleet event).
    pub(crate) eligible: Vec<usize>,
    /// First hour index a case may start in.
    pub(crate) lo: u32,
}

struct Planner<'a> {
    inp: &'a PlanInput<'a>,
    rng: ChaCha8Rng,
    pool: Vec<usize>,
    cases: Cases,
}

impl Planner<'_> {
    fn host(&mut self, pred: impl Fn(&Host) -> bool) -> Option<usize> {
        let pos = self.pool.iter().position(|&i| pred(&self.inp.hosts[i]))?;
        Some(self.pool.remove(pos))
    }

    fn hour(&mut self, len: u32) -> Option<u32> {
        let hours = self.inp.cfg.hours;
        (self.inp.lo + len <= hours).then(|| self.rng.random_range(self.inp.lo..=hours - len))
    }

    fn t0(&self, h: u32) -> i64 {
        self.inp.cfg.start + i64::from(h) * 3600
    }

    fn ip(&self, host: usize) -> Ipv4Addr {
        self.inp.hosts[host].ip
    }

    /// Records a case of `hours` hours from hour index `hour` on `host`; `label`'s hour fields are
    /// set here.
    fn push(&mut self, host: usize, hour: u32, hours: u32, mut label: CaseLabel, spec: Spec) {
        let idx = self.cases.plans.len();
        if !matches!(spec, Spec::Heavy) {
            for k in 0..hours {
                self.cases.by_hour.entry(hour + k).or_default().push(idx);
            }
        }
        if matches!(spec, Spec::Volume { .. }) {
            for k in 0..hours {
                self.cases.replaced.insert((host, hour + k));
            }
        }
        let seed = self.rng.random();
        self.cases.plans.push(Plan { host, hour, seed, spec });
        (label.hour, label.hours) = (self.t0(hour), hours);
        self.cases.labels.push(label);
    }

    fn port_scan(&mut self, positive: bool, i: u32) {
        let Some(host) = self.host(|_| true) else { return };
        let variant = if positive { 0 } else { 1 + i % 3 };
        let len = if variant == 3 { 2 } else { 1 };
        let Some(hour) = self.hour(len) else { return };
        // Positives alternate internal and external targets. Negative scans probe external ones,
        // which no ordinary record reaches (an internal one could gain a port from ordinary
        // traffic). The server's responses go to an internal client: ordinary traffic can add only
        // ports 3306 and 5432 there, never a low one, and external replies would be an outbound
        // volume anomaly of their own.
        let internal = (positive && i % 2 == 1) || variant == 2;
        let dst = if internal {
            let hosts = self.inp.hosts;
            let mut j = self.rng.random_range(0..hosts.len());
            if j == host {
                j = (j + 1) % hosts.len();
            }
            hosts[j].ip
        } else {
            public_v4(&mut self.rng)
        };
        let none = HashSet::new();
        let (port_sets, responses, what) = match variant {
            0 => {
                let n = self.rng.random_range(PORT_SCAN_PORTS..=3000);
                let low = self.rng.random_range(PORT_SCAN_LOW_PORTS..=100);
                let where_ = if internal { "internal" } else { "external" };
                let what = format!(
                    "vertical scan of {} ports ({low} low) on {dst} ({where_})",
                    thousands(n as u64)
                );
                (vec![ports(&mut self.rng, n, low, &none)], false, what)
            }
            1 => {
                let n = self.rng.random_range(450..PORT_SCAN_PORTS);
                let what = format!("near-threshold scan: {n} ports (30 low) on {dst}");
                (vec![ports(&mut self.rng, n, 30, &none)], false, what)
            }
            2 => {
                let low = self.rng.random_range(10..PORT_SCAN_LOW_PORTS);
                let what = format!(
                    "a busy server's responses from port 443 to 1,000 ephemeral ports ({low} low) of {dst}"
                );
                (vec![ports(&mut self.rng, 1000, low, &none)], true, what)
            }
            _ => {
                let a = ports(&mut self.rng, 300, 30, &none);
                let b = ports(&mut self.rng, 300, 30, &a.iter().copied().collect());
                let what =
                    format!("scan split over two hours: 300 + 300 ports (30 + 30 low) on {dst}");
                (vec![a, b], false, what)
            }
        };
        let spec = Spec::Scan { dst: IpAddr::V4(dst), ports: port_sets, responses };
        let src = self.ip(host).to_string();
        let dst_s = Some(dst.to_string());
        let label = CaseLabel {
            dst_ip: dst_s,
            protocol: Some(6),
            ..label(CaseKind::PortScan, positive, src, what)
        };
        self.push(host, hour, len, label, spec);
    }

    fn port_sweep(&mut self, positive: bool, i: u32) {
        let Some(host) = self.host(|_| true) else { return };
        let Some(hour) = self.hour(1) else { return };
        // Ports the background never sends to from a case host (a sweep negative must not gain
        // addresses from ordinary traffic).
        const QUIET_PORTS: [u16; 5] = [22, 445, 3389, 5900, 23];
        let port = QUIET_PORTS[self.rng.random_range(0..QUIET_PORTS.len())];
        let (targets, net, dst_port, protocol, what) = if positive {
            let (internal, len) =
                [(true, 24), (false, 20), (false, 24), (true, 20)][i as usize % 4];
            let net = sweep_net(&mut self.rng, internal, len);
            let n = if len == 24 {
                self.rng.random_range(PORT_SWEEP_ADDRESSES as u32..=254)
            } else {
                self.rng.random_range(PORT_SWEEP_ADDRESSES as u32..=2000)
            };
            let targets: Vec<_> =
                (1..=n).map(|o| (Ipv4Addr::from(u32::from(net) + o), port, 6u8)).collect();
            let where_ = if internal { "internal" } else { "external" };
            let what = format!(
                "sweep of {} addresses of {net}/{len} ({where_}) on tcp/{port}",
                thousands(u64::from(n))
            );
            (targets, format!("{net}/{len}"), Some(port), Some(6), what)
        } else {
            match i % 3 {
                0 => {
                    let net = sweep_net(&mut self.rng, false, 24);
                    let n = self.rng.random_range(200..PORT_SWEEP_ADDRESSES as u32);
                    let t =
                        (1..=n).map(|o| (Ipv4Addr::from(u32::from(net) + o), port, 6u8)).collect();
                    let what =
                        format!("near-threshold sweep: {n} addresses of {net}/24 on tcp/{port}");
                    (t, format!("{net}/24"), Some(port), Some(6), what)
                }
                1 => {
                    let net = sweep_net(&mut self.rng, false, 20);
                    let three = [22u16, 3389, 445];
                    let t = (1..=400u32)
                        .map(|o| (Ipv4Addr::from(u32::from(net) + o), three[o as usize % 3], 6u8))
                        .collect();
                    let what = format!(
                        "400 addresses of {net}/20 spread over tcp/22, tcp/3389 and tcp/445 (133-134 each)"
                    );
                    (t, format!("{net}/20"), None, Some(6), what)
                }
                _ => {
                    let net = sweep_net(&mut self.rng, false, 20);
                    let t = (1..=300u32)
                        .map(|o| {
                            (Ipv4Addr::from(u32::from(net) + o), 53, if o <= 150 { 6 } else { 17 })
                        })
                        .collect();
                    let what =
                        format!("port 53 on 150 addresses of {net}/20 over tcp and 150 over udp");
                    (t, format!("{net}/20"), Some(53), None, what)
                }
            }
        };
        let src = self.ip(host).to_string();
        let spec = Spec::Sweep { targets };
        let label = CaseLabel {
            dst_ip: Some(net),
            dst_port,
            protocol,
            ..label(CaseKind::PortSweep, positive, src, what)
        };
        self.push(host, hour, 1, label, spec);
    }

    /// Expected outbound bytes of `host` in the hour starting at `t0`, and the mean over a day.
    fn usual(&self, host: usize, t0: i64) -> (f64, f64) {
        let p = self.cases.profiles[host];
        let per_flow = p.median * (p.sigma * p.sigma / 2.0).exp();
        let rate =
            self.inp.hosts[host].accept_rate * OUTBOUND_SHARE * self.inp.cfg.scale * per_flow;
        let at = |t: i64| rate * diurnal(t) * p.cycle(t);
        let day = (0..24).map(|k| at(k * 3600)).sum::<f64>() / 24.0;
        (at(t0), day)
    }

    fn outbound_volume(&mut self, positive: bool, i: u32) {
        if self.inp.cfg.scale <= 0.0 {
            return; // no ACCEPTed traffic at all: no baseline, no volume
        }
        // Enough ordinary outbound flows (one an hour or more on average) for a baseline.
        let enough = |h: &Host| h.accept_rate >= 2.0;
        if !positive && i % 2 == 1 {
            let Some(host) = self.host(enough) else { return };
            let src = self.ip(host).to_string();
            self.cases.profiles[host].median *= HEAVY_FACTOR;
            let (_, day) = self.usual(host, 0);
            let what = format!(
                "always heavy: flows {HEAVY_FACTOR}x its own usual size every hour ({} an hour on average)",
                human_bytes(day)
            );
            let (start, hours) = (0, self.inp.cfg.hours);
            let label = CaseLabel {
                protocol: Some(6),
                ..label(CaseKind::OutboundVolume, false, src, what)
            };
            self.push(host, start, hours, label, Spec::Heavy);
            return;
        }
        let len = if positive { self.rng.random_range(1..=3) } else { 1 };
        // Hours whose expectation is near the host's daily mean (at least 0.9 of it for a positive,
        // 0.9-1.3 for a negative, so that 2x the usual hour is not 10x a quiet hour's). A host with
        // no such hours (a steep cycle) goes back for another case.
        let fits = |s: &Self, host: usize, h: u32| {
            (0..len).all(|k| {
                let (at, day) = s.usual(host, s.t0(h + k));
                at / day >= 0.9 && (positive || at / day <= 1.3)
            })
        };
        let mut tried = Vec::new();
        let mut found = None;
        'hosts: while let Some(host) = self.host(enough) {
            for _ in 0..100 {
                match self.hour(len) {
                    Some(h) if fits(self, host, h) => {
                        found = Some((host, h));
                        break 'hosts;
                    }
                    Some(_) => {}
                    None => break 'hosts,
                }
            }
            tried.push(host);
        }
        self.pool.extend(tried);
        let Some((host, hour)) = found else { return };
        let src = self.ip(host).to_string();
        let factor = if positive {
            self.rng.random_range(10.0..=50.0)
        } else {
            self.rng.random_range(1.5..=2.0)
        };
        let bytes: Vec<u64> = (0..len)
            .map(|k| (factor * self.usual(host, self.t0(hour + k)).0).round() as u64)
            .collect();
        if bytes.iter().any(|&b| b < 1000) {
            return;
        }
        let dst = public_v4(&mut self.rng);
        let usual = self.usual(host, self.t0(hour)).0;
        let total: u64 = bytes.iter().sum();
        let what = if positive {
            format!(
                "exfiltration: {factor:.1}x the usual hour ({} -> {} in the first) for {len} h, {} in all, to {dst}",
                human_bytes(usual),
                human_bytes(factor * usual),
                human_bytes(total as f64)
            )
        } else {
            format!(
                "{factor:.2}x the usual hour ({} -> {}) to {dst}",
                human_bytes(usual),
                human_bytes(factor * usual)
            )
        };
        let spec = Spec::Volume { dst, bytes };
        let dst_s = Some(dst.to_string());
        let label = CaseLabel {
            dst_ip: dst_s,
            dst_port: Some(443),
            protocol: Some(6),
            ..label(CaseKind::OutboundVolume, positive, src, what)
        };
        self.push(host, hour, len, label, spec);
    }

    /// An fd00::/8 (unique local) address for an IPv6 case host.
    fn ula(&mut self) -> Ipv6Addr {
        let global: u128 = self.rng.random_range(0..1u128 << 40);
        let iid: u128 = u128::from(self.rng.random::<u64>() | 1);
        Ipv6Addr::from((0xfdu128 << 120) | (global << 80) | (1u128 << 64) | iid)
    }

    fn threat_list(&mut self, lists: &Lists, positive: bool, i: u32) {
        let Some(host) = self.host(|_| true) else { return };
        let Some(hour) = self.hour(1) else { return };
        let (tor, custom) = (THREAT_LIST_NAMES[0], THREAT_LIST_NAMES[1]);
        let both = format!("{custom},{tor}");
        type Ends = fn(Net) -> (IpAddr, IpAddr);
        let first: Ends = |n| (n.first(), n.first());
        let edges: Ends = |n| (n.first(), n.last());
        let outside: Ends = Net::outside;
        let k = (i / 5) as usize;
        // (entry, list, (outbound to, inbound from), the outbound action; the inbound one is the
        // other): every case goes both ways, ACCEPT one way and REJECT the other.
        let (entry, list, ends, out_action) = if positive {
            match i % 5 {
                0 => (lists.tor_v4[k % lists.tor_v4.len()], tor.to_string(), first, Kind::Accept),
                1 => (lists.custom_v4_cidr, custom.to_string(), edges, Kind::Reject),
                2 => (lists.custom_v6_cidr, custom.to_string(), edges, Kind::Accept),
                3 => (lists.tor_v6[k % lists.tor_v6.len()], tor.to_string(), first, Kind::Accept),
                _ => (lists.shared, both, first, Kind::Reject),
            }
        } else {
            let (n, name) = [
                (lists.custom_v4_cidr, custom),
                (lists.custom_v6_cidr, custom),
                (lists.tor_v4_cidr, tor),
                (lists.tor_v6_cidr, tor),
            ][i as usize % 4];
            (n, name.to_string(), outside, Kind::Accept)
        };
        let (to, from) = ends(entry);
        let local = if entry.is_v6() { IpAddr::V6(self.ula()) } else { IpAddr::V4(self.ip(host)) };
        let in_action = if out_action == Kind::Accept { Kind::Reject } else { Kind::Accept };
        let port_of = |a: Kind, out: bool| match (a, out) {
            (_, true) if list == tor => 9001,
            (Kind::Reject, false) => 22,
            _ => 443,
        };
        let flows = vec![
            (to, true, out_action, port_of(out_action, true)),
            (from, false, in_action, port_of(in_action, false)),
        ];
        let action = |a: Kind| if a == Kind::Accept { "ACCEPT" } else { "REJECT" };
        let v6 = if entry.is_v6() {
            "IPv6 from an fd00::/8 host (configure it as internal): "
        } else {
            ""
        };
        let span = match (positive, to == from) {
            (false, _) => format!(", one past each end of {entry}"),
            (true, false) => format!(", first and last of {entry}"),
            (true, true) => String::new(),
        };
        let what = format!(
            "{v6}outbound {} to {to} and inbound {} from {from}{span} ({list})",
            action(out_action),
            action(in_action)
        );
        let spec = Spec::Threat { local, flows };
        let (src, dst) = (local.to_string(), Some(entry.to_string()));
        let label = CaseLabel {
            dst_ip: dst,
            protocol: Some(6),
            list: Some(list),
            ..label(CaseKind::ThreatList, positive, src, what)
        };
        self.push(host, hour, 1, label, spec);
    }
}

impl Cases {
    /// The hosts that carry a case.
    pub(crate) fn hosts(&self) -> HashSet<usize> {
        self.plans.iter().map(|p| p.host).collect()
    }

    /// Plans `cfg.cases` positives and negatives of each kind.
    pub(crate) fn new(inp: &PlanInput<'_>) -> Cases {
        let cfg = inp.cfg;
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, 0, 11));
        let profiles = inp
            .hosts
            .iter()
            .map(|_| ByteProfile {
                median: (rng.random_range(20e3f64.ln()..2e6f64.ln())).exp(),
                sigma: rng.random_range(0.5..1.0),
                amp: rng.random_range(0.1..0.6),
                peak: rng.random_range(0.0..24.0),
            })
            .collect();
        let mut pool = inp.eligible.clone();
        shuffle(&mut rng, &mut pool);
        let cases = Cases {
            labels: Vec::new(),
            plans: Vec::new(),
            by_hour: HashMap::new(),
            profiles,
            replaced: HashSet::new(),
            seed: cfg.seed,
        };
        let mut p = Planner { inp, rng, pool, cases };
        let lists = Lists::new(cfg.seed);
        // Volume first: it needs busy hosts, which the others would use up.
        for positive in [true, false] {
            for i in 0..cfg.cases {
                p.outbound_volume(positive, i);
            }
        }
        for positive in [true, false] {
            for i in 0..cfg.cases {
                p.port_scan(positive, i);
            }
        }
        for positive in [true, false] {
            for i in 0..cfg.cases {
                p.port_sweep(positive, i);
            }
        }
        for positive in [true, false] {
            for i in 0..cfg.cases {
                p.threat_list(&lists, positive, i);
            }
        }
        p.cases
    }

    /// Gives the ACCEPTed outbound records `recs` (of hour `h`, starting at `t0`) their bytes from
    /// the hosts' profiles, and drops those a volume case replaces.
    pub(crate) fn shape_outbound(
        &self,
        hosts: &[Host],
        h: u32,
        t0: i64,
        rng: &mut ChaCha8Rng,
        recs: &mut Vec<Rec>,
        from: usize,
    ) {
        let outbound = |r: &Rec| {
            r.kind == Kind::Accept
                && r.src == IpAddr::V4(hosts[r.host].ip)
                && matches!(r.dst, IpAddr::V4(d) if !crate::is_rfc1918(d))
        };
        for r in recs[from..].iter_mut().filter(|r| outbound(r)) {
            let p = &self.profiles[r.host];
            let noise =
                HOUR_NOISE * hash_normal(mix(self.seed ^ 0x5eed, u64::from(h) + 1, r.host as u64));
            let z = std_normal(rng);
            let b = p.median
                * p.cycle(t0)
                * (noise - HOUR_NOISE * HOUR_NOISE / 2.0 + p.sigma * z).exp();
            r.bytes = (b.round() as u64).max(64);
            r.packets = r.bytes.div_ceil(1400);
        }
        if self.by_hour.contains_key(&h) && self.replaced.iter().any(|&(_, hh)| hh == h) {
            let kept: Vec<Rec> = recs
                .drain(from..)
                .filter(|r| !(outbound(r) && self.replaced.contains(&(r.host, h))))
                .collect();
            recs.extend(kept);
        }
    }

    /// Appends the case records of hour `h` (starting at `t0`) that `keep` accepts.
    pub(crate) fn records(
        &self,
        hosts: &[Host],
        h: u32,
        t0: i64,
        keep: impl Fn(&Rec) -> bool,
        out: &mut Vec<Rec>,
    ) {
        let Some(plans) = self.by_hour.get(&h) else { return };
        for &pi in plans {
            let plan = &self.plans[pi];
            let k = (h - plan.hour) as usize;
            let mut rng = ChaCha8Rng::seed_from_u64(mix(plan.seed, u64::from(h) + 1, 0));
            let host = &hosts[plan.host];
            let me = IpAddr::V4(host.ip);
            let mut rec = |rng: &mut ChaCha8Rng,
                           src,
                           dst,
                           srcport,
                           dstport,
                           proto,
                           kind,
                           packets: u64,
                           bytes| {
                let start = t0 + rng.random_range(0..3600);
                let r = Rec {
                    account: host.account,
                    host: plan.host,
                    src,
                    dst,
                    srcport,
                    dstport,
                    proto,
                    packets,
                    bytes,
                    start,
                    end: start + rng.random_range(0..60),
                    kind,
                };
                if keep(&r) {
                    out.push(r);
                }
            };
            match &plan.spec {
                Spec::Scan { dst, ports, responses } => {
                    for &port in &ports[k] {
                        // Scanners retry some probes.
                        for _ in 0..1 + u32::from(rng.random_bool(0.3)) {
                            if *responses {
                                let packets = rng.random_range(2..20);
                                let bytes = packets * rng.random_range(200..1400);
                                rec(&mut rng, me, *dst, 443, port, 6, Kind::Accept, packets, bytes);
                            } else {
                                let kind =
                                    if rng.random_bool(0.7) { Kind::Reject } else { Kind::Accept };
                                let srcport = rng.random_range(32768..61000);
                                let packets = rng.random_range(1..=2);
                                rec(
                                    &mut rng,
                                    me,
                                    *dst,
                                    srcport,
                                    port,
                                    6,
                                    kind,
                                    packets,
                                    packets * 44,
                                );
                            }
                        }
                    }
                }
                Spec::Sweep { targets } => {
                    for &(dst, port, proto) in targets {
                        for _ in 0..1 + u32::from(rng.random_bool(0.2)) {
                            let kind =
                                if rng.random_bool(0.6) { Kind::Reject } else { Kind::Accept };
                            let srcport = rng.random_range(32768..61000);
                            let packets = rng.random_range(1..=2);
                            let size = if proto == 17 { 60 } else { 44 };
                            rec(
                                &mut rng,
                                me,
                                IpAddr::V4(dst),
                                srcport,
                                port,
                                proto,
                                kind,
                                packets,
                                packets * size,
                            );
                        }
                    }
                }
                Spec::Volume { dst, bytes } => {
                    let total = bytes[k];
                    let n = rng.random_range(4..=24u64).min(total / 1000).max(1);
                    let w: Vec<f64> = (0..n).map(|_| std_normal(&mut rng).exp()).collect();
                    let sum: f64 = w.iter().sum();
                    let mut parts: Vec<u64> =
                        w.iter().map(|x| (x / sum * total as f64) as u64).collect();
                    parts[0] += total - parts.iter().sum::<u64>();
                    for b in parts {
                        let srcport = rng.random_range(32768..61000);
                        rec(
                            &mut rng,
                            me,
                            IpAddr::V4(*dst),
                            srcport,
                            443,
                            6,
                            Kind::Accept,
                            b.div_ceil(1400).max(1),
                            b,
                        );
                    }
                }
                Spec::Heavy => {}
                Spec::Threat { local, flows } => {
                    for &(remote, outbound, kind, port) in flows {
                        for _ in 0..rng.random_range(2..=5) {
                            let eph = rng.random_range(32768..61000);
                            let packets = if kind == Kind::Accept {
                                rng.random_range(2..30)
                            } else {
                                rng.random_range(1..4)
                            };
                            let bytes = packets * rng.random_range(40..1500);
                            let (s, d) = if outbound { (*local, remote) } else { (remote, *local) };
                            rec(&mut rng, s, d, eph, port, 6, kind, packets, bytes);
                        }
                    }
                }
            }
        }
    }
}

/// A standard normal from a 64-bit hash (Box–Muller on its two halves).
fn hash_normal(x: u64) -> f64 {
    let u1 = ((x >> 32) as f64 + 1.0) / 4_294_967_297.0;
    let u2 = (x & 0xffff_ffff) as f64 / 4_294_967_296.0;
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The blocked-spike bursts (or fleet anomalies) of hour `h` that are sweeps as well: a label for
/// every (source, port, protocol) of `blocked` with at least [`PORT_SWEEP_ADDRESSES`] destinations.
pub(crate) fn burst_sweeps(blocked: &[Rec], hour: i64) -> Vec<CaseLabel> {
    let mut by: HashMap<(IpAddr, u16, u8), HashSet<IpAddr>> = HashMap::new();
    for r in blocked {
        by.entry((r.src, r.dstport, r.proto)).or_default().insert(r.dst);
    }
    let mut v: Vec<CaseLabel> = by
        .into_iter()
        .filter(|(_, d)| d.len() >= PORT_SWEEP_ADDRESSES)
        .map(|((src, port, proto), d)| CaseLabel {
            kind: CaseKind::PortSweep,
            positive: true,
            hour,
            hours: 1,
            src_ip: src.to_string(),
            dst_ip: None,
            dst_port: Some(port),
            protocol: Some(proto),
            list: None,
            what: format!(
                "a blocked-spike burst (in `injected`): {} random public addresses on {}/{port}",
                thousands(d.len() as u64),
                proto_name(proto)
            ),
        })
        .collect();
    v.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
    v
}

/// Recall and false alerts of one detection against the case labels ([`score_cases`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaseScore {
    /// Positive labels of the kind.
    pub positives: usize,
    /// Of which at least one alert covers.
    pub found: usize,
    /// Negative labels of the kind.
    pub negatives: usize,
    /// Of which at least one alert covers (false alerts on purpose-built negatives).
    pub negatives_alerted: usize,
    /// Alerts that cover no label of the kind (false alerts on ordinary traffic).
    pub other_alerts: usize,
}

impl CaseScore {
    /// `found / positives` (1 when there are no positives).
    pub fn recall(&self) -> f64 {
        if self.positives == 0 {
            1.0
        } else {
            self.found as f64 / self.positives as f64
        }
    }
}

/// Scores the alerts of the `kind` detection, each an (hour start, source address), against
/// `labels`: an alert covers a label when the source is the label's and the hour one of its hours.
pub fn score_cases(labels: &[CaseLabel], kind: CaseKind, alerts: &[(i64, String)]) -> CaseScore {
    let covers = |l: &CaseLabel, (hour, src): &(i64, String)| {
        *src == l.src_ip && (l.hour..l.hour + i64::from(l.hours) * 3600).contains(hour)
    };
    let mine: Vec<&CaseLabel> = labels.iter().filter(|l| l.kind == kind).collect();
    let hit = |l: &&&CaseLabel| alerts.iter().any(|a| covers(l, a));
    let (pos, neg): (Vec<&CaseLabel>, Vec<&CaseLabel>) = mine.iter().partition(|l| l.positive);
    CaseScore {
        positives: pos.len(),
        found: pos.iter().filter(hit).count(),
        negatives: neg.len(),
        negatives_alerted: neg.iter().filter(hit).count(),
        other_alerts: alerts.iter().filter(|a| !mine.iter().any(|l| covers(l, a))).count(),
    }
}
