//! Seeded synthetic VPC Flow Logs archives with labelled blocked-outbound bursts.
//!
//! [`generate`] writes, for a [`SynthConfig`], the objects an S3 flow-log destination would hold —
//! `AWSLogs/<acct>/vpcflowlogs/<region>/YYYY/MM/DD/<acct>_vpcflowlogs_<region>_<fl-id>_<YYYYMMDDTHHmmZ>_<hash>.log.gz`,
//! each a gzip of the header line and default-format (v2) records — and returns the ground truth:
//! a [`Manifest`] (with the injected bursts) and the exact blocked outbound count of every
//! (hour, source), [`ExpectedCount`].
//!
//! # Model
//! - `hosts` internal hosts (10/8, 172.16/12, 192.168/16) spread over `accounts` accounts with one flow
//!   log each; each host has an ENI, a diurnal ACCEPT volume and a host-specific Poisson rate of
//!   blocked outbound REJECTs (a quarter of the hosts are never blocked; many hours are quiet).
//! - Noise that must not count: inbound REJECTs from public scanners, internal-to-internal REJECTs,
//!   ACCEPTs in every direction, NODATA/SKIPDATA records and a few IPv6 records.
//! - `bursts` injected spikes: distinct hosts with a blocked rate of at least 0.5/h, each in one hour at
//!   least 31 days after the start (the second half of shorter ranges), 200–2000 blocked records to
//!   random public destinations on one port (scan/C2-like).
//! - `cases` (0 by default: then none of this happens and the output is unchanged): labelled port
//!   scans, port sweeps, outbound volume anomalies and threat-list flows, with near-threshold
//!   negatives, on hosts of their own ([`CaseLabel`], [`Manifest::cases`], [`write_threat_lists`]);
//!   see the `cases` module's documentation.
//! - Delivery: one object per flow log per `file_minutes` (default 10) window holding the records
//!   whose `start` falls in it, except that about `late_fraction` (1%) of them are delivered in the
//!   next window's object — for the last window of an hour, an object of the next hour (and after the
//!   last hour, an extra object holding only late records). Empty windows produce no object. The key's
//!   timestamp is the window start.
//!
//! The counted rule (ESCU's): `REJECT`, IPv4 source in RFC 1918, IPv4 destination outside it, hour of
//! `start`. Counted records come from their own random stream, so [`expected_counts`] is cheap, and
//! `scale` (volume of everything else) leaves the ground truth unchanged.
//!
//! ```
//! use flowspike_synth::{generate, SynthConfig};
//! let cfg = SynthConfig { hours: 3, hosts: 5, bursts: 0, ..SynthConfig::default() };
//! let mut keys = Vec::new();
//! let out = generate(&cfg, |key: &str, _gz: Vec<u8>| {
//!     keys.push(key.to_string());
//!     Ok::<(), std::io::Error>(())
//! }).unwrap();
//! assert_eq!(out.manifest.files as usize, keys.len());
//! assert!(keys[0].starts_with("AWSLogs/"));
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

mod cases;
mod fleet;
mod model;

pub use cases::{
    score_cases, threat_lists, write_threat_lists, CaseKind, CaseLabel, CaseScore, ThreatList,
    PORT_SCAN_LOW_PORTS, PORT_SCAN_PORTS, PORT_SWEEP_ADDRESSES, THREAT_LIST_NAMES,
};

pub use fleet::{
    quantile, Anomaly, AnomalyKind, BackgroundTruth, FleetEvent, HostKind, HostLabel, Labels,
    FLEET_EVENT_FRACTION, FLEET_EVENT_HOURS, FLEET_EVENT_RATE, WARM_UP_HOURS,
};
pub use model::is_rfc1918;
use model::{counts, Rec, World};

/// The S3 header line (default format) of every object, without newline.
pub const HEADER: &str =
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";

/// What to generate. Defaults: 40 days of 300 hosts in 2 accounts, 6 bursts, 10-minute files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Seed: equal configs give byte-identical output.
    pub seed: u64,
    /// First hour, unix seconds (a multiple of 3600).
    pub start: i64,
    /// Number of hours.
    pub hours: u32,
    /// Internal hosts.
    pub hosts: u32,
    /// Accounts, one flow log each.
    pub accounts: u32,
    /// AWS region in the keys.
    pub region: String,
    /// Injected bursts (fewer if there are not enough eligible hosts or hours).
    pub bursts: u32,
    /// Multiplier of the volume of uncounted traffic (ACCEPT, inbound, internal, NODATA, IPv6).
    pub scale: f64,
    /// Minutes per delivered object (divides 60; 10 as AWS, 60 for fewer objects).
    pub file_minutes: u32,
    /// Fraction of records delivered one object late.
    pub late_fraction: f64,
    /// Which world: the default one, or the labelled fleet ([`SynthConfig::fleet`]). Not serialised
    /// when default, so default manifests are unchanged.
    #[serde(default, skip_serializing_if = "Scenario::is_default")]
    pub scenario: Scenario,
    /// Labelled cases of the detections of [`CaseKind`]: this many positives and as many
    /// near-threshold negatives of each (see the crate documentation). Not serialised when 0, and 0 leaves
    /// the output byte-identical to a generator without cases.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cases: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The world a [`SynthConfig`] generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Host-specific Poisson background with a daily cycle and `bursts` large bursts.
    #[default]
    Default,
    /// The labelled fleet of [`fleet`](mod@fleet): cycles, bursty and batch hosts, births and
    /// retirements, a benign fleet-wide event and `bursts` anomalies of each [`AnomalyKind`].
    Fleet,
}

impl Scenario {
    /// `"default"` or `"fleet"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Default => "default",
            Scenario::Fleet => "fleet",
        }
    }

    /// True for [`Scenario::Default`].
    pub fn is_default(&self) -> bool {
        *self == Scenario::Default
    }
}

impl std::str::FromStr for Scenario {
    type Err = SynthError;

    fn from_str(s: &str) -> Result<Scenario, SynthError> {
        match s {
            "default" => Ok(Scenario::Default),
            "fleet" => Ok(Scenario::Fleet),
            _ => Err(SynthError::InvalidConfig(format!(
                "unknown scenario {s:?}: expected \"default\" or \"fleet\""
            ))),
        }
    }
}

impl Default for SynthConfig {
    fn default() -> SynthConfig {
        SynthConfig {
            seed: 1,
            start: 1_767_225_600, // 2026-01-01T00:00:00Z
            hours: 40 * 24,
            hosts: 300,
            accounts: 2,
            region: "us-east-1".to_string(),
            bursts: 6,
            scale: 1.0,
            file_minutes: 10,
            late_fraction: 0.01,
            scenario: Scenario::Default,
            cases: 0,
        }
    }
}

impl SynthConfig {
    /// The labelled fleet scenario of `seed`: 6 weeks from Monday 2026-01-05 of 500 hosts in 3
    /// accounts, 10 anomalies of each kind (`bursts`), hourly objects.
    pub fn fleet(seed: u64) -> SynthConfig {
        SynthConfig {
            seed,
            start: 1_767_571_200, // 2026-01-05T00:00:00Z, a Monday
            hours: 42 * 24,
            hosts: 500,
            accounts: 3,
            bursts: 10,
            file_minutes: 60,
            scenario: Scenario::Fleet,
            ..SynthConfig::default()
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::InvalidConfig(m));
        if self.start.rem_euclid(3600) != 0 {
            return bad(format!("start {} is not a multiple of 3600", self.start));
        }
        if self.start < 0
            || self
                .start
                .checked_add(i64::from(self.hours) * 3600 + 7200)
                .is_none_or(|e| e > 253_402_300_799)
        {
            return bad("start and hours must stay within years 1970..=9999".into());
        }
        if self.scenario == Scenario::Fleet && (self.hours < 14 * 24 || self.hosts < 50) {
            return bad(format!(
                "the fleet scenario needs at least 336 hours and 50 hosts, got {} and {}",
                self.hours, self.hosts
            ));
        }
        if self.hosts == 0 || self.hosts > 1_000_000 {
            return bad(format!("hosts must be in 1..=1000000, got {}", self.hosts));
        }
        if self.cases > 1000 {
            return bad(format!("cases must be in 0..=1000, got {}", self.cases));
        }
        if self.accounts == 0 || self.accounts > 1000 {
            return bad(format!("accounts must be in 1..=1000, got {}", self.accounts));
        }
        if self.file_minutes == 0 || 60 % self.file_minutes != 0 {
            return bad(format!("file_minutes must divide 60, got {}", self.file_minutes));
        }
        if !(self.scale.is_finite() && self.scale >= 0.0 && self.scale <= 1e4) {
            return bad(format!("scale must be in 0..=10000, got {}", self.scale));
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            return bad(format!("late_fraction must be in 0..=1, got {}", self.late_fraction));
        }
        if self.region.is_empty()
            || !self.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad(format!(
                "region {:?} must be non-empty letters, digits and '-'",
                self.region
            ));
        }
        Ok(())
    }
}

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A setting out of range.
    #[error("invalid synth config: {0}")]
    InvalidConfig(String),
    /// The output callback failed for an object.
    #[error("writing object {key}: {source}")]
    Sink {
        /// The object key.
        key: String,
        /// The callback's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A filesystem error of [`generate_to_dir`].
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// An injected burst (ground truth for recall).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedSpike {
    /// Start of the hour, unix seconds.
    pub hour: i64,
    /// The bursting host.
    pub src_ip: String,
    /// Injected blocked records (the hour's count also includes the host's background).
    pub records: u64,
}

/// Summary of a generated archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The configuration.
    pub config: SynthConfig,
    /// Records written (header lines excluded).
    pub records: u64,
    /// Of which counted (blocked outbound).
    pub blocked_outbound_records: u64,
    /// Objects written.
    pub files: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Uncompressed bytes (headers included).
    pub raw_bytes: u64,
    /// Records delivered one object late.
    pub late_records: u64,
    /// The injected bursts, by hour (fleet scenario: every labelled anomalous hour).
    pub injected: Vec<InjectedSpike>,
    /// The fleet scenario's labels (`None` for the default scenario).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// The labelled cases ([`SynthConfig::cases`]; empty, and not serialised, without cases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<CaseLabel>,
}

impl Manifest {
    /// The case labels covering `src_ip` in the hour starting at `hour`: a case's records that are
    /// blocked outbound (scans and sweeps to the internet, threat-list REJECTs) are in that hour's
    /// count, so a blocked-spike alert there is explained by the case, not a false alert.
    pub fn cases_at<'a>(
        &'a self,
        hour: i64,
        src_ip: &'a str,
    ) -> impl Iterator<Item = &'a CaseLabel> {
        self.cases.iter().filter(move |l| {
            l.src_ip == src_ip && (l.hour..l.hour + i64::from(l.hours) * 3600).contains(&hour)
        })
    }
}

/// Exact blocked outbound count of one (hour, source).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpectedCount {
    /// Start of the hour, unix seconds.
    pub hour: i64,
    /// Source address.
    pub src_ip: String,
    /// Counted records.
    pub blocked_count: u64,
}

/// Result of [`generate`]: the manifest and the exact counts (sorted by hour, then source).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Summary and injected bursts.
    pub manifest: Manifest,
    /// Ground truth counts; equal to [`expected_counts`] of the same config.
    pub expected: Vec<ExpectedCount>,
}

/// Generates the archive, handing each object (key, gzip bytes) to `out` in key-time order.
pub fn generate<F, E>(cfg: &SynthConfig, mut out: F) -> Result<Generated, SynthError>
where
    F: FnMut(&str, Vec<u8>) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    cfg.validate()?;
    let world = World::new(cfg);
    let windows = (60 / cfg.file_minutes) as usize;
    let win_secs = i64::from(cfg.file_minutes) * 60;
    let accounts = world.account_ids.len();
    let mut m = Manifest {
        config: cfg.clone(),
        records: 0,
        blocked_outbound_records: 0,
        files: 0,
        bytes: 0,
        raw_bytes: 0,
        late_records: 0,
        injected: world.injected(),
        labels: world.labels(),
        cases: world.case_labels(),
    };
    let mut counts_map: BTreeMap<(i64, u32), u64> = BTreeMap::new();
    // bufs[account][window]; window `windows` is the next hour's first window (late records).
    let mut bufs: Vec<Vec<Vec<u8>>> = vec![vec![Vec::new(); windows + 1]; accounts];
    let mut recs: Vec<Rec> = Vec::new();
    let mut emit = |m: &mut Manifest, acct: usize, t: i64, body: &[u8]| -> Result<(), SynthError> {
        if body.is_empty() {
            return Ok(());
        }
        let key = object_key(&world, acct, t);
        let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 8 + 64), Compression::fast());
        // Writing to a Vec cannot fail.
        let _ = enc
            .write_all(HEADER.as_bytes())
            .and_then(|_| enc.write_all(b"\n"))
            .and_then(|_| enc.write_all(body));
        let gz = enc.finish().unwrap_or_default();
        m.files += 1;
        m.bytes += gz.len() as u64;
        m.raw_bytes += (HEADER.len() + 1 + body.len()) as u64;
        out(&key, gz).map_err(|e| SynthError::Sink { key, source: e.into() })
    };
    for h in 0..cfg.hours {
        let t0 = world.hour_start(h);
        recs.clear();
        world.hour_records(h, &mut recs);
        let late = world.late_flags(h, recs.len());
        for (r, &is_late) in recs.iter().zip(&late) {
            let w = ((r.start - t0) / win_secs) as usize + usize::from(is_late);
            world.write_line(r, &mut bufs[r.account][w]);
            m.records += 1;
            m.late_records += u64::from(is_late);
            if counts(r) {
                m.blocked_outbound_records += 1;
                *counts_map.entry((t0, world_host_key(r))).or_default() += 1;
            }
        }
        for w in 0..windows {
            for (a, acct_bufs) in bufs.iter_mut().enumerate() {
                emit(&mut m, a, t0 + w as i64 * win_secs, &acct_bufs[w])?;
                acct_bufs[w].clear();
            }
        }
        // Late records of the last window open the next hour's first window.
        for acct_bufs in bufs.iter_mut() {
            acct_bufs.swap(0, windows);
        }
    }
    let t_end = cfg.start + i64::from(cfg.hours) * 3600;
    for (a, acct_bufs) in bufs.iter().enumerate() {
        emit(&mut m, a, t_end, &acct_bufs[0])?;
    }
    let expected = to_expected(&world, counts_map);
    Ok(Generated { manifest: m, expected })
}

fn world_host_key(r: &Rec) -> u32 {
    r.host as u32
}

fn to_expected(world: &World, counts_map: BTreeMap<(i64, u32), u64>) -> Vec<ExpectedCount> {
    let mut v: Vec<ExpectedCount> = counts_map
        .into_iter()
        .map(|((hour, host), c)| ExpectedCount {
            hour,
            src_ip: world.hosts[host as usize].ip.to_string(),
            blocked_count: c,
        })
        .collect();
    v.sort();
    v
}

fn object_key(world: &World, acct: usize, t: i64) -> String {
    let (acct_id, fl, region) =
        (&world.account_ids[acct], &world.flow_log_ids[acct], &world.cfg.region);
    let dt = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
    let stamp = dt.format("%Y%m%dT%H%MZ");
    let hash = model_hash(world.cfg.seed, acct, t);
    format!(
        "AWSLogs/{acct_id}/vpcflowlogs/{region}/{}/{acct_id}_vpcflowlogs_{region}_{fl}_{stamp}_{hash:08x}.log.gz",
        dt.format("%Y/%m/%d")
    )
}

fn model_hash(seed: u64, acct: usize, t: i64) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in
        seed.to_le_bytes().into_iter().chain((acct as u64).to_le_bytes()).chain(t.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 32) as u32
}

/// [`generate`] into a directory: each object at `dir/<key>`, and with cases the threat lists at
/// `dir/threat-lists/<name>.txt` ([`write_threat_lists`]).
pub fn generate_to_dir(cfg: &SynthConfig, dir: &Path) -> Result<Generated, SynthError> {
    write_threat_lists(cfg, dir)?;
    let mut made: Option<PathBuf> = None;
    let mut write = |key: &str, gz: Vec<u8>| -> Result<(), SynthError> {
        let path = dir.join(key);
        let parent = path.parent().unwrap_or(dir).to_path_buf();
        if made.as_ref() != Some(&parent) {
            std::fs::create_dir_all(&parent)
                .map_err(|source| SynthError::Io { path: parent.clone(), source })?;
            made = Some(parent);
        }
        std::fs::write(&path, gz).map_err(|source| SynthError::Io { path, source })
    };
    generate(cfg, &mut write).map_err(|e| match e {
        // Unwrap our own error from the sink wrapper so callers see the path.
        SynthError::Sink { source, key } => match source.downcast::<SynthError>() {
            Ok(inner) => *inner,
            Err(source) => SynthError::Sink { key, source },
        },
        other => other,
    })
}

/// The exact blocked outbound count of every (hour, source) that [`generate`] would write, sorted by
/// hour then source, computed without generating the uncounted traffic.
pub fn expected_counts(cfg: &SynthConfig) -> Result<Vec<ExpectedCount>, SynthError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let mut counts_map: BTreeMap<(i64, u32), u64> = BTreeMap::new();
    let mut recs = Vec::new();
    for h in 0..cfg.hours {
        recs.clear();
        world.blocked_records(h, &mut recs);
        for r in recs.iter().filter(|r| counts(r)) {
            *counts_map.entry((world.hour_start(h), world_host_key(r))).or_default() += 1;
        }
    }
    Ok(to_expected(&world, counts_map))
}

/// The injected bursts of `cfg` (as in [`Manifest::injected`]) without generating anything.
pub fn injected_spikes(cfg: &SynthConfig) -> Result<Vec<InjectedSpike>, SynthError> {
    cfg.validate()?;
    Ok(World::new(cfg).injected())
}

/// The labels of a fleet-scenario config (`None` for the default scenario), without generating
/// anything.
pub fn labels(cfg: &SynthConfig) -> Result<Option<Labels>, SynthError> {
    cfg.validate()?;
    Ok(World::new(cfg).labels())
}

/// The case labels of a config (as in [`Manifest::cases`]; empty when `cases` is 0), without
/// generating anything but the blocked outbound records of the burst hours.
pub fn case_labels(cfg: &SynthConfig) -> Result<Vec<CaseLabel>, SynthError> {
    cfg.validate()?;
    Ok(World::new(cfg).case_labels())
}

/// The generating distribution of a fleet-scenario config's background (`None` for the default
/// scenario): what a perfect model of each source would know, for diagnosing a detector.
pub fn background_truth(cfg: &SynthConfig) -> Result<Option<BackgroundTruth>, SynthError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let ips: Vec<std::net::Ipv4Addr> = world.hosts.iter().map(|h| h.ip).collect();
    Ok(world.fleet.map(|f| BackgroundTruth::new(cfg.start, *f, &ips)))
}

/// The exact blocked outbound aggregate of one (hour, source), as the counter would build it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExpectedRow {
    /// Start of the hour, unix seconds.
    pub hour: i64,
    /// Source address.
    pub src_ip: String,
    /// Counted records.
    pub blocked_count: u64,
    /// Distinct destinations.
    pub unique_dest_count: u64,
    /// The distinct destinations, in address order (as the counter keeps them).
    pub dest_ips: Vec<String>,
    /// The interface id that logged them.
    pub interface_id: String,
}

/// Every (hour, source) aggregate [`generate`] would write, hour by hour: `f(hour, rows)` for each
/// of the config's hours in order, with that hour's rows sorted by source text (possibly none).
/// Same counts as [`expected_counts`], plus destinations; computed without the uncounted traffic.
pub fn expected_rows_by_hour(
    cfg: &SynthConfig,
    mut f: impl FnMut(i64, Vec<ExpectedRow>),
) -> Result<(), SynthError> {
    cfg.validate()?;
    let world = World::new(cfg);
    let mut recs = Vec::new();
    let mut per_host: Vec<Vec<u32>> = vec![Vec::new(); world.hosts.len()];
    for h in 0..cfg.hours {
        recs.clear();
        world.blocked_records(h, &mut recs);
        for r in recs.iter().filter(|r| counts(r)) {
            if let std::net::IpAddr::V4(d) = r.dst {
                per_host[r.host].push(u32::from(d));
            }
        }
        let t0 = world.hour_start(h);
        let mut rows = Vec::new();
        for (i, dests) in per_host.iter_mut().enumerate() {
            if dests.is_empty() {
                continue;
            }
            let n = dests.len() as u64;
            dests.sort_unstable();
            dests.dedup();
            let host = &world.hosts[i];
            rows.push(ExpectedRow {
                hour: t0,
                src_ip: host.ip.to_string(),
                blocked_count: n,
                unique_dest_count: dests.len() as u64,
                dest_ips: dests.iter().map(|&d| std::net::Ipv4Addr::from(d).to_string()).collect(),
                interface_id: host.eni.clone(),
            });
            dests.clear();
        }
        rows.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
        f(t0, rows);
    }
    Ok(())
}

/// In-memory records for benchmarks: the world of a config, reused across calls.
#[derive(Debug, Clone)]
pub struct Synth {
    world: World,
    recs: Vec<Rec>,
}

impl Synth {
    /// Builds the hosts and bursts of `cfg`.
    pub fn new(cfg: &SynthConfig) -> Result<Synth, SynthError> {
        cfg.validate()?;
        Ok(Synth { world: World::new(cfg), recs: Vec::new() })
    }

    /// Appends every record whose `start` is in hour index `h` (0-based, any value: the model is
    /// defined for every hour) as default-format lines without header; returns `(records, counted)`.
    pub fn lines_for_hour(&mut self, h: u32, out: &mut Vec<u8>) -> (u64, u64) {
        self.recs.clear();
        self.world.hour_records(h, &mut self.recs);
        let mut counted = 0;
        for r in &self.recs {
            self.world.write_line(r, out);
            counted += u64::from(counts(r));
        }
        (self.recs.len() as u64, counted)
    }
}

#[cfg(test)]
mod tests;
