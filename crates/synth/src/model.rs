//! The traffic model: hosts, injected bursts and the records of one hour.

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cases::{burst_sweeps, CaseLabel, Cases, PlanInput};
use crate::fleet::{Fleet, WARM_UP_HOURS};
use crate::{InjectedSpike, Scenario, SynthConfig};

/// Hours after the start before which no burst is injected (31 days: baselines exist by then).
pub(crate) const BURST_AFTER_HOURS: u32 = 31 * 24;

/// Independent random streams of one hour. Counted records come from [`Stream::Blocked`] only, so
/// the ground truth is computed without generating the rest.
#[derive(Clone, Copy)]
enum Stream {
    Blocked = 1,
    Accept = 2,
    Inbound = 3,
    Internal = 4,
    Other = 5,
    Delivery = 6,
    /// Flow sizes of the ACCEPTed outbound traffic when cases are on (the cases' own records
    /// come from seeds of their plans).
    Volume = 7,
}

/// One internal host.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) ip: Ipv4Addr,
    pub(crate) ip6: Ipv6Addr,
    pub(crate) eni: String,
    pub(crate) account: usize,
    /// Mean ACCEPT records per hour at the diurnal mean.
    pub(crate) accept_rate: f64,
    /// Mean blocked outbound records per hour at the diurnal mean (0: never blocked).
    pub(crate) blocked_rate: f64,
}

/// A planned burst: host index, hour index, records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Burst {
    pub(crate) host: usize,
    pub(crate) hour: u32,
    pub(crate) records: u64,
    dstport: u16,
}

/// What a record says in `action` / `log-status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Accept,
    Reject,
    NoData,
    SkipData,
}

/// One flow log record.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub(crate) account: usize,
    pub(crate) host: usize,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) srcport: u16,
    pub(crate) dstport: u16,
    pub(crate) proto: u8,
    pub(crate) packets: u64,
    pub(crate) bytes: u64,
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) kind: Kind,
}

/// RFC 1918, the ranges ESCU's search calls internal.
pub fn is_rfc1918(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 10 || (o[0] == 172 && (16..32).contains(&o[1])) || (o[0] == 192 && o[1] == 168)
}

/// The ESCU rule: `action=blocked`, IPv4 source in RFC 1918, IPv4 destination outside it
/// (`log-status` OK implied: NODATA/SKIPDATA records carry no addresses).
pub(crate) fn counts(r: &Rec) -> bool {
    match (r.kind, r.src, r.dst) {
        (Kind::Reject, IpAddr::V4(s), IpAddr::V4(d)) => is_rfc1918(s) && !is_rfc1918(d),
        _ => false,
    }
}

/// Unmistakably public unicast IPv4 (no private, shared, loopback, link-local, documentation,
/// benchmark, multicast or reserved space): counters cannot disagree about these.
pub(crate) fn public_v4(rng: &mut impl Rng) -> Ipv4Addr {
    loop {
        let ip = Ipv4Addr::from(rng.random::<u32>());
        if is_drawn_public(ip) {
            return ip;
        }
    }
}

/// Whether [`public_v4`] can return `ip`. It never returns 192.0.0.0/16 or 198.51.0.0/16 (whole
/// /16s around special /24s), which is why the threat lists of [`crate::cases`] live there: no
/// background record can hit them by chance.
pub(crate) fn is_drawn_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    let special = o[0] == 0
        || o[0] == 127
        || o[0] >= 224
        || is_rfc1918(ip)
        || (o[0] == 100 && (64..128).contains(&o[1]))
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 192 && o[1] == 0)
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19 || o[1] == 51))
        || (o[0] == 203 && o[1] == 0 && o[2] == 113);
    !special
}

/// A public IPv6 address, always in 2a00::/16 (the threat lists use 2a02::/16).
fn public_v6(rng: &mut impl Rng) -> Ipv6Addr {
    // 2001:db8::/32 is documentation; use 2a00::/12-like global unicast.
    Ipv6Addr::from((0x2a00u128 << 112) | (rng.random::<u128>() >> 16))
}

/// Poisson sample: Knuth's product method below 30, a rounded normal above.
pub(crate) fn poisson(rng: &mut impl Rng, lambda: f64) -> u64 {
    if lambda <= 0.0 || !lambda.is_finite() {
        return 0;
    }
    if lambda < 30.0 {
        let l = (-lambda).exp();
        let mut k = 0u64;
        let mut p: f64 = rng.random();
        while p > l {
            k += 1;
            p *= rng.random::<f64>();
        }
        return k;
    }
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(f64::MIN_POSITIVE), rng.random());
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (lambda + lambda.sqrt() * z).round().max(0.0) as u64
}

/// Diurnal factor of an hour, in [0.4, 1.6], peaking at 14:00 UTC.
pub(crate) fn diurnal(hour_start: i64) -> f64 {
    let hod = hour_start.rem_euclid(86_400) as f64 / 3600.0;
    1.0 + 0.6 * (std::f64::consts::TAU * (hod - 8.0) / 24.0).sin()
}

/// The deterministic world of one configuration.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub(crate) cfg: SynthConfig,
    pub(crate) hosts: Vec<Host>,
    pub(crate) account_ids: Vec<String>,
    pub(crate) flow_log_ids: Vec<String>,
    pub(crate) bursts: Vec<Burst>,
    scanners: Vec<Ipv4Addr>,
    /// The fleet scenario's model (`None`: the default scenario).
    pub(crate) fleet: Option<Box<Fleet>>,
    /// The labelled cases (`None` when `cases` is 0).
    pub(crate) cases: Option<Box<Cases>>,
}

pub(crate) fn mix(seed: u64, a: u64, b: u64) -> u64 {
    // splitmix64 finaliser over a combination: distinct streams for distinct (hour, stream).
    let mut z =
        seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl World {
    pub(crate) fn new(cfg: &SynthConfig) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, 0, 0));
        let accounts = cfg.accounts as usize;
        let account_ids: Vec<String> = (0..accounts)
            .map(|_| format!("{:012}", rng.random_range(100_000_000_000u64..1_000_000_000_000)))
            .collect();
        let flow_log_ids: Vec<String> = (0..accounts)
            .map(|_| format!("fl-{:017x}", rng.random::<u128>() & ((1u128 << 68) - 1)))
            .collect();
        let mut seen = HashSet::new();
        let mut hosts = Vec::with_capacity(cfg.hosts as usize);
        for i in 0..cfg.hosts as usize {
            let ip = loop {
                let ip = match rng.random_range(0..10) {
                    0..6 => Ipv4Addr::new(
                        10,
                        rng.random_range(0..=255),
                        rng.random_range(0..=255),
                        rng.random_range(1..255),
                    ),
                    6..8 => Ipv4Addr::new(
                        172,
                        rng.random_range(16..32),
                        rng.random_range(0..=255),
                        rng.random_range(1..255),
                    ),
                    _ => {
                        Ipv4Addr::new(192, 168, rng.random_range(0..=255), rng.random_range(1..255))
                    }
                };
                if seen.insert(ip) {
                    break ip;
                }
            };
            let ip6 = Ipv6Addr::from((0x2600_1f18u128 << 96) | (rng.random::<u128>() >> 32));
            let eni = format!("eni-{:017x}", rng.random::<u128>() & ((1u128 << 68) - 1));
            let accept_rate = log_uniform(&mut rng, 0.5, 8.0);
            let blocked_rate =
                if rng.random_bool(0.25) { 0.0 } else { log_uniform(&mut rng, 0.05, 6.0) };
            hosts.push(Host {
                ip,
                ip6,
                eni,
                account: i % accounts.max(1),
                accept_rate,
                blocked_rate,
            });
        }
        let scanners: Vec<Ipv4Addr> = (0..64).map(|_| public_v4(&mut rng)).collect();

        // Bursts: distinct hosts with a real baseline, hours after the first 31 days (or in the second
        // half of shorter ranges), distinct hours.
        let mut eligible: Vec<usize> =
            (0..hosts.len()).filter(|&i| hosts[i].blocked_rate >= 0.5).collect();
        let lo = if cfg.hours > BURST_AFTER_HOURS { BURST_AFTER_HOURS } else { cfg.hours / 2 };
        let mut bursts = Vec::new();
        let mut used_hours = HashSet::new();
        for _ in 0..cfg.bursts {
            if eligible.is_empty() || lo >= cfg.hours {
                break;
            }
            let host = eligible.swap_remove(rng.random_range(0..eligible.len()));
            let mut hour = rng.random_range(lo..cfg.hours);
            for _ in 0..16 {
                if used_hours.insert(hour) {
                    break;
                }
                hour = rng.random_range(lo..cfg.hours);
            }
            let records = rng.random_range(200..=2000);
            let dstport = [22u16, 23, 445, 3389, 4444, 6667, 8443][rng.random_range(0..7)];
            bursts.push(Burst { host, hour, records, dstport });
        }
        bursts.sort_by_key(|b| (b.hour, b.host));
        let fleet = (cfg.scenario == Scenario::Fleet)
            .then(|| Box::new(Fleet::new(cfg.seed, cfg.start, hosts.len(), cfg.hours, cfg.bursts)));
        if fleet.is_some() {
            bursts.clear();
        }
        let cases =
            (cfg.cases > 0).then(|| Box::new(plan_cases(cfg, &hosts, &bursts, fleet.as_deref())));
        World { cfg: cfg.clone(), hosts, account_ids, flow_log_ids, bursts, scanners, fleet, cases }
    }

    /// The case labels (empty when `cases` is 0), by kind, positives first, then hour: the planned
    /// cases, and the bursts (fleet anomalies) that are sweeps too.
    pub(crate) fn case_labels(&self) -> Vec<CaseLabel> {
        let Some(c) = &self.cases else { return Vec::new() };
        let mut v = c.labels.clone();
        let mut hours: Vec<u32> = self.bursts.iter().map(|b| b.hour).collect();
        if let Some(f) = &self.fleet {
            hours.extend(
                f.anomalies
                    .iter()
                    .flat_map(|(_, _, h, counts, _)| (0..counts.len() as u32).map(move |i| h + i)),
            );
        }
        hours.sort_unstable();
        hours.dedup();
        let case_hosts = c.hosts();
        let mut recs = Vec::new();
        for h in hours {
            recs.clear();
            self.blocked_records(h, &mut recs);
            recs.retain(|r| !case_hosts.contains(&r.host));
            v.extend(burst_sweeps(&recs, self.hour_start(h)));
        }
        v.sort_by_key(|l| (l.kind, !l.positive, l.hour));
        v
    }

    pub(crate) fn labels(&self) -> Option<crate::Labels> {
        let ips: Vec<Ipv4Addr> = self.hosts.iter().map(|h| h.ip).collect();
        self.fleet.as_ref().map(|f| f.labels(self.cfg.start, &ips))
    }

    pub(crate) fn hour_start(&self, h: u32) -> i64 {
        self.cfg.start + i64::from(h) * 3600
    }

    fn rng(&self, h: u32, s: Stream) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, u64::from(h) + 1, s as u64))
    }

    pub(crate) fn injected(&self) -> Vec<InjectedSpike> {
        if let Some(f) = &self.fleet {
            let mut v: Vec<InjectedSpike> = f
                .anomalies
                .iter()
                .flat_map(|(_, host, h, counts, _)| {
                    counts.iter().enumerate().map(move |(i, &c)| InjectedSpike {
                        hour: self.hour_start(h + i as u32),
                        src_ip: self.hosts[*host].ip.to_string(),
                        records: c,
                    })
                })
                .collect();
            v.sort_by(|a, b| (a.hour, &a.src_ip).cmp(&(b.hour, &b.src_ip)));
            return v;
        }
        self.bursts
            .iter()
            .map(|b| InjectedSpike {
                hour: self.hour_start(b.hour),
                src_ip: self.hosts[b.host].ip.to_string(),
                records: b.records,
            })
            .collect()
    }

    /// The blocked outbound records of hour `h` (background, bursts and the counted records of the
    /// cases): the only counted ones.
    pub(crate) fn blocked_records(&self, h: u32, out: &mut Vec<Rec>) {
        self.background_blocked(h, out);
        if let Some(c) = &self.cases {
            c.records(&self.hosts, h, self.hour_start(h), counts, out);
        }
    }

    fn background_blocked(&self, h: u32, out: &mut Vec<Rec>) {
        let t0 = self.hour_start(h);
        let d = diurnal(t0);
        let mut rng = self.rng(h, Stream::Blocked);
        if let Some(f) = &self.fleet {
            let mut dests = Vec::new();
            for (i, host) in self.hosts.iter().enumerate() {
                dests.clear();
                f.host_hour(&mut rng, i, h, t0, &mut dests);
                for &(dst, port) in &dests {
                    let proto = if port == 53 || port == 123 { 17 } else { 6 };
                    let (src, dst) = (IpAddr::V4(host.ip), IpAddr::V4(dst));
                    out.push(self.rec(&mut rng, i, t0, src, dst, port, proto, Kind::Reject));
                }
            }
            return;
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let n = poisson(&mut rng, host.blocked_rate * d);
            for _ in 0..n {
                let dst = public_v4(&mut rng);
                let dstport = [443u16, 80, 53, 123, 25, 8080, 9001][rng.random_range(0..7)];
                let proto = if dstport == 53 || dstport == 123 { 17 } else { 6 };
                out.push(self.rec(
                    &mut rng,
                    i,
                    t0,
                    IpAddr::V4(host.ip),
                    IpAddr::V4(dst),
                    dstport,
                    proto,
                    Kind::Reject,
                ));
            }
        }
        for b in self.bursts.iter().filter(|b| b.hour == h) {
            let host = &self.hosts[b.host];
            for _ in 0..b.records {
                let dst = public_v4(&mut rng);
                out.push(self.rec(
                    &mut rng,
                    b.host,
                    t0,
                    IpAddr::V4(host.ip),
                    IpAddr::V4(dst),
                    b.dstport,
                    6,
                    Kind::Reject,
                ));
            }
        }
    }

    /// Every record of hour `h`, in a fixed order.
    pub(crate) fn hour_records(&self, h: u32, out: &mut Vec<Rec>) {
        self.blocked_records(h, out);
        let t0 = self.hour_start(h);
        let d = diurnal(t0);
        let scale = self.cfg.scale;
        let nh = self.hosts.len();
        if nh == 0 {
            return;
        }
        // ACCEPT traffic: outbound to the internet, inbound replies/requests, internal.
        let accept_from = out.len();
        let mut rng = self.rng(h, Stream::Accept);
        for (i, host) in self.hosts.iter().enumerate() {
            // Hosts not yet born or retired send nothing (the default scenario has none).
            if self.fleet.as_ref().is_some_and(|f| !f.alive(i, h)) {
                continue;
            }
            for _ in 0..poisson(&mut rng, host.accept_rate * d * scale) {
                let me = IpAddr::V4(host.ip);
                let (src, dst, port) = match rng.random_range(0..10) {
                    0..5 => (me, IpAddr::V4(public_v4(&mut rng)), 443),
                    5..8 => (IpAddr::V4(public_v4(&mut rng)), me, 443),
                    _ => (me, IpAddr::V4(self.hosts[rng.random_range(0..nh)].ip), 5432),
                };
                out.push(self.rec(&mut rng, i, t0, src, dst, port, 6, Kind::Accept));
            }
        }
        if let Some(c) = &self.cases {
            // Realistic outbound volumes only with cases on: outputs without cases stay as they were.
            let mut rng = self.rng(h, Stream::Volume);
            c.shape_outbound(&self.hosts, h, t0, &mut rng, out, accept_from);
        }
        // Inbound REJECTs from public scanners.
        let mut rng = self.rng(h, Stream::Inbound);
        for _ in 0..poisson(&mut rng, 10.0 * self.cfg.accounts as f64 * scale) {
            let i = rng.random_range(0..nh);
            let src = IpAddr::V4(self.scanners[rng.random_range(0..self.scanners.len())]);
            let port = [22u16, 23, 80, 445, 3389, 1433, 6379][rng.random_range(0..7)];
            out.push(self.rec(
                &mut rng,
                i,
                t0,
                src,
                IpAddr::V4(self.hosts[i].ip),
                port,
                6,
                Kind::Reject,
            ));
        }
        // Internal-to-internal REJECTs (security group denies between tiers).
        let mut rng = self.rng(h, Stream::Internal);
        for _ in 0..poisson(&mut rng, 0.02 * nh as f64 * scale) {
            let i = rng.random_range(0..nh);
            let j = rng.random_range(0..nh);
            let (src, dst) = (IpAddr::V4(self.hosts[i].ip), IpAddr::V4(self.hosts[j].ip));
            out.push(self.rec(&mut rng, i, t0, src, dst, 3306, 6, Kind::Reject));
        }
        // NODATA / SKIPDATA and a few IPv6 records (ACCEPT either way, REJECT inbound only).
        let mut rng = self.rng(h, Stream::Other);
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        for _ in 0..poisson(&mut rng, 0.01 * nh as f64 * scale) {
            let i = rng.random_range(0..nh);
            let kind = if rng.random_bool(0.8) { Kind::NoData } else { Kind::SkipData };
            out.push(self.rec(&mut rng, i, t0, unspecified, unspecified, 0, 0, kind));
        }
        for _ in 0..poisson(&mut rng, 4.0 * scale) {
            let i = rng.random_range(0..nh);
            let (me, other) = (IpAddr::V6(self.hosts[i].ip6), IpAddr::V6(public_v6(&mut rng)));
            let (src, dst, kind) = match rng.random_range(0..3) {
                0 => (me, other, Kind::Accept),
                1 => (other, me, Kind::Accept),
                _ => (other, me, Kind::Reject),
            };
            out.push(self.rec(&mut rng, i, t0, src, dst, 443, 6, kind));
        }
        if let Some(c) = &self.cases {
            c.records(&self.hosts, h, t0, |r| !counts(r), out);
        }
    }

    #[allow(clippy::too_many_arguments)] // a record constructor: every argument is a field
    fn rec(
        &self,
        rng: &mut ChaCha8Rng,
        host: usize,
        t0: i64,
        src: IpAddr,
        dst: IpAddr,
        dstport: u16,
        proto: u8,
        kind: Kind,
    ) -> Rec {
        let start = t0 + rng.random_range(0..3600);
        let end = start + rng.random_range(0..60);
        let packets =
            if kind == Kind::Accept { rng.random_range(1..200) } else { rng.random_range(1..4) };
        let bytes = packets * rng.random_range(40..1500);
        Rec {
            account: self.hosts[host].account,
            host,
            src,
            dst,
            srcport: rng.random_range(1024..65535),
            dstport,
            proto,
            packets,
            bytes,
            start,
            end,
            kind,
        }
    }

    /// For each record, whether it is delivered one file late (decided by its own stream).
    pub(crate) fn late_flags(&self, h: u32, n: usize) -> Vec<bool> {
        let mut rng = self.rng(h, Stream::Delivery);
        let p = self.cfg.late_fraction;
        (0..n).map(|_| rng.random_bool(p)).collect()
    }

    /// Appends the default-format (v2) line of `r`, with its newline.
    pub(crate) fn write_line(&self, r: &Rec, out: &mut Vec<u8>) {
        let acct = &self.account_ids[r.account];
        let eni = &self.hosts[r.host].eni;
        // Writing to a Vec cannot fail.
        let _ = match r.kind {
            Kind::NoData | Kind::SkipData => {
                let status = if r.kind == Kind::NoData { "NODATA" } else { "SKIPDATA" };
                writeln!(out, "2 {acct} {eni} - - - - - - - {} {} - {status}", r.start, r.end)
            }
            Kind::Accept | Kind::Reject => {
                let action = if r.kind == Kind::Accept { "ACCEPT" } else { "REJECT" };
                writeln!(
                    out,
                    "2 {acct} {eni} {} {} {} {} {} {} {} {} {} {action} OK",
                    r.src, r.dst, r.srcport, r.dstport, r.proto, r.packets, r.bytes, r.start, r.end
                )
            }
        };
    }
}

fn log_uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// Plans the cases of a world: hosts alive throughout that carry no burst, anomaly or fleet event,
/// hours after the warm-up (as bursts and anomalies).
fn plan_cases(cfg: &SynthConfig, hosts: &[Host], bursts: &[Burst], fleet: Option<&Fleet>) -> Cases {
    let mut excluded: HashSet<usize> = bursts.iter().map(|b| b.host).collect();
    if let Some(f) = fleet {
        excluded.extend(f.anomalies.iter().map(|a| a.1));
        excluded.extend(&f.event_hosts);
    }
    let last = cfg.hours.saturating_sub(1);
    let eligible = (0..hosts.len())
        .filter(|i| !excluded.contains(i))
        .filter(|&i| fleet.is_none_or(|f| f.alive(i, 0) && f.alive(i, last)))
        .collect();
    let lo = match fleet {
        Some(_) => WARM_UP_HOURS.min(cfg.hours / 2),
        None if cfg.hours > BURST_AFTER_HOURS => BURST_AFTER_HOURS,
        None => cfg.hours / 2,
    };
    Cases::new(&PlanInput { cfg, hosts, eligible, lo })
}
