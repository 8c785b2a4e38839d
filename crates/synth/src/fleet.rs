//! The labelled fleet scenario ([`Scenario::Fleet`](crate::Scenario::Fleet)): the cases real fleets
//! have, for measuring a detector honestly.
//!
//! Hosts have a kind ([`HostKind`]): never blocked, very quiet (Poisson, under 0.15 an hour),
//! steady (mildly overdispersed) and bursty (gamma-Poisson with shape under 1.2), both with a daily
//! cycle peaking at a host-specific hour and a weekend factor, and batch hosts (blocked 30–300 times an
//! hour in a two-hour window each day, nothing otherwise). Every blocked count is gamma-Poisson: a
//! gamma-distributed rate of mean `mu(hour)` and shape `k`, then a Poisson count (`k = inf`: Poisson).
//! About 10% of the hosts are born mid-way (autoscaling, ordinary rates from their first hour) and 5%
//! are retired. Background records go mostly (85%) to a few usual destinations of the host.
//!
//! One benign fleet-wide event: for 3 consecutive hours, 30% of the hosts alive then are each blocked
//! about 25 times an hour (Poisson) towards ONE new shared destination, on top of their background.
//!
//! Anomalies ([`AnomalyKind`], `bursts` of each kind, distinct hosts, after the one-week warm-up, never
//! next to the fleet event) replace the host's count in their hours, with records to random public
//! destinations: `large` 200–2000; `moderate` just clear of the host's own 99.99th percentile under its
//! generating distribution for that hour; `quiet` 6–25 on a very quiet host; `new_source` 60–600 in the
//! first hour of a never-seen host (which then behaves ordinarily); `ramp` four hours doubling each
//! hour from `max(4, 2 * mu)`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::{mix, poisson, public_v4};

/// Hours of warm-up before any anomaly (one week).
pub const WARM_UP_HOURS: u32 = 7 * 24;
/// Hours of the fleet-wide event.
pub const FLEET_EVENT_HOURS: u32 = 3;
/// Mean blocked records per hour of each source of the fleet event.
pub const FLEET_EVENT_RATE: f64 = 25.0;
/// Fraction of the alive hosts in the fleet event.
pub const FLEET_EVENT_FRACTION: f64 = 0.3;

/// What kind of traffic a host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostKind {
    /// Never blocked outbound.
    Silent,
    /// Poisson, mean under 0.15 an hour.
    Quiet,
    /// Daily and weekly cycle, mild overdispersion (gamma shape 5–50).
    Steady,
    /// Daily and weekly cycle, strong overdispersion (gamma shape 0.3–1.2).
    Bursty,
    /// 30–300 an hour in a two-hour window each day, nothing otherwise.
    Batch,
}

/// The kind of a labelled anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// 200–2000 records in one hour.
    Large,
    /// Just clear of the host's own 99.99th percentile for that hour.
    Moderate,
    /// 6–25 records on a very quiet host.
    Quiet,
    /// 60–600 records in the first hour of a never-seen source.
    NewSource,
    /// Four hours, doubling each hour.
    Ramp,
}

impl AnomalyKind {
    /// Every kind, in table order.
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::Large,
        AnomalyKind::Moderate,
        AnomalyKind::Quiet,
        AnomalyKind::NewSource,
        AnomalyKind::Ramp,
    ];

    /// `large`, `moderate`, `quiet`, `new_source` or `ramp`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Large => "large",
            AnomalyKind::Moderate => "moderate",
            AnomalyKind::Quiet => "quiet",
            AnomalyKind::NewSource => "new_source",
            AnomalyKind::Ramp => "ramp",
        }
    }
}

/// A labelled anomaly: one source in one or more consecutive hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Its kind.
    pub kind: AnomalyKind,
    /// The source.
    pub src_ip: String,
    /// Its hours (start, unix seconds), increasing; one except for a ramp.
    pub hours: Vec<i64>,
    /// The source's blocked outbound count in each of those hours.
    pub counts: Vec<u64>,
    /// The 99.99th percentile of the source's generating distribution in the first hour (0 for a
    /// new source).
    pub p9999: u64,
}

/// The benign fleet-wide event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetEvent {
    /// Its hours (start, unix seconds), consecutive.
    pub hours: Vec<i64>,
    /// The shared destination.
    pub dest_ip: String,
    /// Its port.
    pub dstport: u16,
    /// The sources, sorted as text.
    pub src_ips: Vec<String>,
}

/// The label of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLabel {
    /// Its address.
    pub src_ip: String,
    /// Its traffic.
    pub kind: HostKind,
    /// First hour alive (unix seconds), when born after the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born: Option<i64>,
    /// First hour no longer alive, when retired before the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<i64>,
    /// Mean blocked records per hour over the week (0 for silent hosts).
    pub weekly_mean: f64,
}

/// The ground truth of a fleet scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// The anomalies, by first hour then source.
    pub anomalies: Vec<Anomaly>,
    /// The benign event.
    pub fleet_event: FleetEvent,
    /// Every host.
    pub hosts: Vec<HostLabel>,
}

/// One host's generating process.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) kind: HostKind,
    base: f64,
    amp: f64,
    peak: f64,
    weekend: f64,
    /// Gamma shape; infinite: Poisson.
    shape: f64,
    batch_hod: u32,
    usual: Vec<Ipv4Addr>,
    port: u16,
    /// First hour index alive.
    pub(crate) born: u32,
    /// First hour index not alive.
    pub(crate) retired: u32,
}

impl Profile {
    /// Mean blocked records in the hour starting at `t0`.
    pub(crate) fn mean(&self, t0: i64) -> f64 {
        let hod = t0.rem_euclid(86_400) / 3600;
        // 1970-01-01 was a Thursday: day 0 has weekday 4 (0 = Sunday).
        let dow = (t0.div_euclid(86_400) + 4).rem_euclid(7);
        let weekend = if dow == 0 || dow == 6 { self.weekend } else { 1.0 };
        match self.kind {
            HostKind::Silent => 0.0,
            HostKind::Batch => {
                let d = (hod as u32 + 24 - self.batch_hod) % 24;
                if d < 2 {
                    self.base
                } else {
                    0.0
                }
            }
            _ => {
                let phase = std::f64::consts::TAU * (hod as f64 - self.peak) / 24.0;
                self.base * (1.0 + self.amp * phase.cos()) * weekend
            }
        }
    }

    fn sample(&self, rng: &mut impl Rng, mu: f64) -> u64 {
        gamma_poisson(rng, mu, self.shape)
    }
}

/// A gamma-Poisson count of mean `mu` and shape `k` (Poisson when `k` is infinite).
pub(crate) fn gamma_poisson(rng: &mut impl Rng, mu: f64, k: f64) -> u64 {
    if mu <= 0.0 {
        return 0;
    }
    if k.is_finite() {
        let rate = gamma(rng, k) * mu / k;
        poisson(rng, rate)
    } else {
        poisson(rng, mu)
    }
}

/// Standard normal (Box–Muller).
pub(crate) fn std_normal(rng: &mut impl Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia and Tsang (with the `U^(1/shape)` boost below 1).
fn gamma(rng: &mut impl Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let z = std_normal(rng);
        let v = (1.0 + c * z).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * z * z + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// The smallest `c` with `P(X <= c) >= q` for a gamma-Poisson (negative binomial) of mean `mu` and
/// shape `k` (Poisson when `k` is infinite).
pub fn quantile(mu: f64, k: f64, q: f64) -> u64 {
    if mu <= 0.0 {
        return 0;
    }
    // pmf recursion: P(x+1) = P(x) * r(x).
    let (mut p, ratio): (f64, Box<dyn Fn(f64) -> f64>) = if k.is_finite() {
        let p0 = (-k * (mu / k).ln_1p()).exp();
        (p0, Box::new(move |x: f64| (x + k) / (x + 1.0) * mu / (k + mu)))
    } else {
        ((-mu).exp(), Box::new(move |x: f64| mu / (x + 1.0)))
    };
    let mut cdf = p;
    let mut c = 0u64;
    while cdf < q && c < 1_000_000 {
        p *= ratio(c as f64);
        cdf += p;
        c += 1;
    }
    c
}

/// The generating distribution of a fleet scenario's background, for scoring a detector against
/// what a perfect model would know (an *oracle*): see [`background_truth`](crate::background_truth).
#[derive(Debug, Clone)]
pub struct BackgroundTruth {
    start: i64,
    fleet: Fleet,
    hosts: HashMap<String, usize>,
}

impl BackgroundTruth {
    pub(crate) fn new(start: i64, fleet: Fleet, ips: &[Ipv4Addr]) -> BackgroundTruth {
        let hosts = ips.iter().enumerate().map(|(i, ip)| (ip.to_string(), i)).collect();
        BackgroundTruth { start, fleet, hosts }
    }

    /// `(mean, gamma shape)` of the background count of `src_ip` in the hour starting at `hour`
    /// (shape infinite: Poisson), without anomalies or the fleet event; `None` for an unknown
    /// source or an hour it is not alive.
    pub fn distribution(&self, src_ip: &str, hour: i64) -> Option<(f64, f64)> {
        let &i = self.hosts.get(src_ip)?;
        let h = u32::try_from((hour - self.start).div_euclid(3600)).ok()?;
        if !self.fleet.alive(i, h) {
            return None;
        }
        let p = &self.fleet.profiles[i];
        Some((p.mean(hour), p.shape))
    }

    /// The kind of `src_ip`'s traffic.
    pub fn kind(&self, src_ip: &str) -> Option<HostKind> {
        self.hosts.get(src_ip).map(|&i| self.fleet.profiles[i].kind)
    }
}

/// The fleet model of a world: profiles, anomalies and the event.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    pub(crate) profiles: Vec<Profile>,
    /// (host, hour index) -> the count that replaces the background.
    overrides: HashMap<(usize, u32), u64>,
    pub(crate) anomalies: Vec<(AnomalyKind, usize, u32, Vec<u64>, u64)>,
    pub(crate) event_hour: u32,
    pub(crate) event_hosts: HashSet<usize>,
    event_dest: Ipv4Addr,
    hours: u32,
}

fn log_uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

impl Fleet {
    /// Draws the profiles, the event and the anomalies of `hosts` hosts over `hours` hours.
    pub(crate) fn new(seed: u64, start: i64, hosts: usize, hours: u32, per_kind: u32) -> Fleet {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, 0, 7));
        let ports = [443u16, 80, 53, 123, 25, 8080, 9001];
        let mut profiles: Vec<Profile> = (0..hosts)
            .map(|_| {
                let kind = match rng.random_range(0..100) {
                    0..20 => HostKind::Silent,
                    20..35 => HostKind::Quiet,
                    35..70 => HostKind::Steady,
                    70..92 => HostKind::Bursty,
                    _ => HostKind::Batch,
                };
                let (base, amp, weekend, shape) = match kind {
                    HostKind::Silent => (0.0, 0.0, 1.0, f64::INFINITY),
                    HostKind::Quiet => (
                        log_uniform(&mut rng, 0.02, 0.15),
                        rng.random_range(0.0..0.5),
                        rng.random_range(0.5..1.0),
                        f64::INFINITY,
                    ),
                    HostKind::Steady => (
                        log_uniform(&mut rng, 0.3, 8.0),
                        rng.random_range(0.2..0.9),
                        rng.random_range(0.2..1.0),
                        rng.random_range(5.0..50.0),
                    ),
                    HostKind::Bursty => (
                        log_uniform(&mut rng, 0.3, 6.0),
                        rng.random_range(0.0..0.6),
                        rng.random_range(0.5..1.0),
                        rng.random_range(0.3..1.2),
                    ),
                    HostKind::Batch => {
                        (log_uniform(&mut rng, 30.0, 300.0), 0.0, 1.0, rng.random_range(3.0..10.0))
                    }
                };
                let usual = (0..rng.random_range(1..=6)).map(|_| public_v4(&mut rng)).collect();
                Profile {
                    kind,
                    base,
                    amp,
                    peak: rng.random_range(0.0..24.0),
                    weekend,
                    shape,
                    batch_hod: rng.random_range(0..24),
                    usual,
                    port: ports[rng.random_range(0..ports.len())],
                    born: 0,
                    retired: hours,
                }
            })
            .collect();
        let lo = WARM_UP_HOURS.min(hours / 2);
        // The event: after two weeks when there is room, a day before the end.
        let ev_lo = (2 * WARM_UP_HOURS).min(hours / 2);
        let ev_hi = hours.saturating_sub(24 + FLEET_EVENT_HOURS).max(ev_lo + 1);
        let event_hour = rng.random_range(ev_lo..ev_hi);
        let near_event = |h: u32, len: u32| h + len + 1 > event_hour && h < event_hour + 5;
        let mut used: HashSet<usize> = HashSet::new();
        let mut anomalies = Vec::new();
        let mut overrides = HashMap::new();
        let pick_hour = |rng: &mut ChaCha8Rng, len: u32| -> Option<u32> {
            (0..64)
                .map(|_| rng.random_range(lo..hours.saturating_sub(len).max(lo + 1)))
                .find(|&h| !near_event(h, len) && h + len <= hours)
        };
        for kind in AnomalyKind::ALL {
            for _ in 0..per_kind {
                // Up to 200 tries for a host and hour that fit the kind.
                for _ in 0..200 {
                    let host = rng.random_range(0..hosts);
                    let p = &profiles[host];
                    let ordinary = matches!(p.kind, HostKind::Steady | HostKind::Bursty);
                    let fits = match kind {
                        AnomalyKind::Large | AnomalyKind::Moderate | AnomalyKind::Ramp => ordinary,
                        AnomalyKind::Quiet => p.kind == HostKind::Quiet,
                        AnomalyKind::NewSource => ordinary,
                    };
                    if !fits || used.contains(&host) {
                        continue;
                    }
                    let len = if kind == AnomalyKind::Ramp { 4 } else { 1 };
                    let Some(h) = pick_hour(&mut rng, len) else { continue };
                    let t0 = start + i64::from(h) * 3600;
                    let mu = p.mean(t0);
                    let q = quantile(mu, p.shape, 0.9999);
                    let counts: Vec<u64> = match kind {
                        AnomalyKind::Large => vec![rng.random_range(200..=2000)],
                        AnomalyKind::Moderate => {
                            if mu < 0.5 {
                                continue;
                            }
                            vec![q + 1 + rng.random_range(0..=q / 10)]
                        }
                        AnomalyKind::Quiet => vec![rng.random_range(6..=25)],
                        AnomalyKind::NewSource => vec![rng.random_range(60..=600)],
                        AnomalyKind::Ramp => {
                            if mu < 0.5 {
                                continue;
                            }
                            let c0 = (2.0 * mu).ceil().max(4.0) as u64;
                            (0..4).map(|i| c0 << i).collect()
                        }
                    };
                    used.insert(host);
                    let q = if kind == AnomalyKind::NewSource {
                        profiles[host].born = h;
                        0
                    } else {
                        q
                    };
                    for (i, &c) in counts.iter().enumerate() {
                        overrides.insert((host, h + i as u32), c);
                    }
                    anomalies.push((kind, host, h, counts, q));
                    break;
                }
            }
        }
        // Autoscaling and retirement, on hosts without anomalies; batch hosts are not born mid-way
        // (a first hour of 300 would be a new-source anomaly, not an ordinary one).
        for (i, p) in profiles.iter_mut().enumerate() {
            let r: f64 = rng.random();
            if used.contains(&i) {
                continue;
            }
            if r < 0.10 && p.kind != HostKind::Batch {
                p.born = rng.random_range(hours / 7..hours.max(2) * 6 / 7);
            } else if r < 0.15 {
                p.retired = rng.random_range(hours * 3 / 10..hours.max(2) * 9 / 10);
            }
        }
        let alive_in_event =
            |p: &Profile| p.born <= event_hour && p.retired >= event_hour + FLEET_EVENT_HOURS;
        let event_hosts: HashSet<usize> = (0..hosts)
            .filter(|&i| alive_in_event(&profiles[i]) && !used.contains(&i))
            .filter(|_| rng.random_bool(FLEET_EVENT_FRACTION))
            .collect();
        let event_dest = public_v4(&mut rng);
        anomalies.sort_by_key(|a| (a.2, a.1));
        Fleet { profiles, overrides, anomalies, event_hour, event_hosts, event_dest, hours }
    }

    /// Whether host `i` exists in hour index `h`.
    pub(crate) fn alive(&self, i: usize, h: u32) -> bool {
        let p = &self.profiles[i];
        p.born <= h && h < p.retired
    }

    /// The blocked outbound destinations of host `i` in hour `h` (`t0`: its start), drawn from
    /// `rng`: `(destination, port)` per record.
    pub(crate) fn host_hour(
        &self,
        rng: &mut ChaCha8Rng,
        i: usize,
        h: u32,
        t0: i64,
        out: &mut Vec<(Ipv4Addr, u16)>,
    ) {
        if !self.alive(i, h) {
            return;
        }
        let p = &self.profiles[i];
        if let Some(&n) = self.overrides.get(&(i, h)) {
            // Scan-like: random public destinations on one port.
            let port = [22u16, 23, 445, 3389, 4444, 6667, 8443][rng.random_range(0..7)];
            for _ in 0..n {
                out.push((public_v4(rng), port));
            }
        } else {
            let n = p.sample(rng, p.mean(t0));
            for _ in 0..n {
                let dst = if rng.random_bool(0.85) {
                    p.usual[rng.random_range(0..p.usual.len())]
                } else {
                    public_v4(rng)
                };
                out.push((dst, p.port));
            }
        }
        if h >= self.event_hour
            && h < self.event_hour + FLEET_EVENT_HOURS
            && self.event_hosts.contains(&i)
        {
            for _ in 0..poisson(rng, FLEET_EVENT_RATE) {
                out.push((self.event_dest, 443));
            }
        }
    }

    /// The labels, given the hosts' addresses.
    pub(crate) fn labels(&self, start: i64, ips: &[Ipv4Addr]) -> Labels {
        let hour = |h: u32| start + i64::from(h) * 3600;
        let anomalies = self
            .anomalies
            .iter()
            .map(|(kind, host, h, counts, q)| Anomaly {
                kind: *kind,
                src_ip: ips[*host].to_string(),
                hours: (0..counts.len() as u32).map(|i| hour(h + i)).collect(),
                counts: counts.clone(),
                p9999: *q,
            })
            .collect();
        let mut src_ips: Vec<String> =
            self.event_hosts.iter().map(|&i| ips[i].to_string()).collect();
        src_ips.sort();
        let fleet_event = FleetEvent {
            hours: (0..FLEET_EVENT_HOURS).map(|i| hour(self.event_hour + i)).collect(),
            dest_ip: self.event_dest.to_string(),
            dstport: 443,
            src_ips,
        };
        let week: Vec<i64> = (0..168).map(hour).collect();
        let hosts = self
            .profiles
            .iter()
            .zip(ips)
            .map(|(p, ip)| HostLabel {
                src_ip: ip.to_string(),
                kind: p.kind,
                born: (p.born > 0).then(|| hour(p.born)),
                retired: (p.retired < self.hours).then(|| hour(p.retired)),
                weekly_mean: week.iter().map(|&t| p.mean(t)).sum::<f64>() / 168.0,
            })
            .collect();
        Labels { anomalies, fleet_event, hosts }
    }
}
