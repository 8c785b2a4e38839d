//! Per-source baselines of blocked outbound traffic and the spikes they flag.
//!
//! The detection is Splunk ESCU's "Detect Spike in blocked Outbound Traffic from your AWS": for every
//! hour and internal source, the number `c` of blocked outbound records is compared with that source's
//! history. Three baselines are offered ([`Mode`]):
//!
//! - [`Mode::Adaptive`] (default): a model of each source's normal hour (hour of day × weekday or
//!   weekend, decayed sums, quiet hours as zeros once the source exists, negative binomial
//!   overdispersion, shrunk towards the fleet for young sources) and an alert when
//!   `P(X >= c) < alpha` and `c >= min_count`; a new source is judged against what new sources
//!   of the fleet do. See docs/detection.md.
//!
//! In the two ESCU modes only hours with `c > 0` are data points (as in Splunk, where quiet hours
//! produce no rows):
//!
//! - [`Mode::Window`]: the prior points of the last `window_hours` hours
//!   (`H - window <= h < H`); a spike needs `n >= min_points` and `c > mean + deviations * stdev`
//!   (sample standard deviation, 0 when `n < 2`).
//! - [`Mode::Splunk`]: a port of ESCU's search and its support search "Baseline of blocked outbound
//!   traffic from AWS", including its exponential-style update and its `numDataPoints > 5` test. See
//!   [`SplunkState`] for the one deliberate difference (sources first seen after the bootstrap).
//!
//! All modes also require `c >= min_count`. [`Detector`] is the streaming form (hours in increasing
//! order), [`detect`] the batch form, and [`reference`](mod@reference) the naive implementation the fast one is tested
//! against.
//!
//! ```
//! use flowspike_model::AggregateRow;
//! use flowspike_detect::{detect, DetectConfig, Mode};
//!
//! let row = |hour: i64, c: u64| AggregateRow {
//!     hour: hour * 3600, src_ip: "10.0.0.1".into(), blocked_count: c, unique_dest_count: c,
//!     interface_ids: vec!["eni-0123456789abcdef0".into()], ..AggregateRow::default()
//! };
//! let mut rows: Vec<_> = (0..10).map(|h| row(h, 2 + (h as u64 % 2))).collect();
//! rows.push(row(10, 50));
//! let spikes = detect(&DetectConfig::for_mode(Mode::Window), &rows);
//! assert_eq!(spikes.len(), 1);
//! assert_eq!(spikes[0].blocked_count, 50);
//! assert_eq!(spikes[0].data_points, 10);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use flowspike_model::{AggregateRow, HourRows};
use serde::{Deserialize, Serialize};

mod adaptive;
mod expect;
pub mod incident;
mod nb;
pub mod reference;
mod spike;
mod splunk;
mod state_json;
mod window;

pub use adaptive::{AdaptiveSource, AdaptiveState, FleetSums};
pub use expect::Expectation;
pub use spike::{fnv1a64, format_hour, parse_hour, spike_id, Reason, Spike, DETECTION};
pub use splunk::{SplunkSource, SplunkState};
pub use window::{WindowSource, WindowState};

/// Which baseline decides what a spike is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The default: each source's seasonal, overdispersed count model and a calibrated tail test
    /// (docs/detection.md).
    #[default]
    Adaptive,
    /// Sliding window of the prior `window_hours` hours, exact mean and sample stdev.
    Window,
    /// ESCU's running average/stdev with a bootstrap of the first `window_hours` hours.
    Splunk,
}

impl Mode {
    /// `"adaptive"`, `"window"` or `"splunk"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Adaptive => "adaptive",
            Mode::Window => "window",
            Mode::Splunk => "splunk",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = DetectError;

    fn from_str(s: &str) -> Result<Mode, DetectError> {
        match s {
            "adaptive" => Ok(Mode::Adaptive),
            "window" => Ok(Mode::Window),
            "splunk" => Ok(Mode::Splunk),
            _ => Err(DetectError::UnknownMode(s.to_string())),
        }
    }
}

/// Detection settings. [`DetectConfig::default`] is adaptive mode with its calibrated `alpha` and
/// `min_count`; [`DetectConfig::for_mode`] gives each mode's defaults (for window and splunk,
/// ESCU's `720`, `5`, `3.0` plus a neutral `min_count` of 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectConfig {
    /// Baseline mode.
    pub mode: Mode,
    /// Window mode: width of the window of prior hours. Splunk mode: length of the bootstrap and the
    /// `N` of the update (`avg + (c - avg) / N`; ESCU hard-codes 720).
    pub window_hours: u32,
    /// Window mode: a spike needs `n >= min_points` prior points. Splunk mode: `n' > min_points`
    /// (ESCU's `numDataPoints > dataPointThreshold`).
    pub min_points: u64,
    /// Standard deviations above the mean (ESCU's `deviationThreshold`).
    pub deviations: f64,
    /// A spike also needs `blocked_count >= min_count` (1: no effect).
    pub min_count: u64,
    /// Adaptive mode: an hour alerts when its tail probability under the source's model is below
    /// `alpha` (window and splunk modes ignore it).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

/// Adaptive mode's default `alpha` (see docs/detection-quality.md for how it was chosen).
pub const DEFAULT_ALPHA: f64 = 1e-4;
/// Adaptive mode's default `min_count`.
pub const DEFAULT_ADAPTIVE_MIN_COUNT: u64 = 5;

/// An early alert ([`Detector::evaluate_open`]) needs `p_value < alpha * EARLY_ALPHA_FACTOR`: a
/// hundred times clearer than the hour-close test, so that only sources far past their threshold
/// page before the close (a fleet-wide rise of many sources just over it waits to be merged).
pub const EARLY_ALPHA_FACTOR: f64 = 0.01;

fn default_alpha() -> f64 {
    DEFAULT_ALPHA
}

impl Default for DetectConfig {
    /// Adaptive mode with its defaults: `DetectConfig::for_mode(Mode::Adaptive)`.
    fn default() -> DetectConfig {
        DetectConfig::for_mode(Mode::Adaptive)
    }
}

impl DetectConfig {
    /// The defaults of `mode`: `min_count` [`DEFAULT_ADAPTIVE_MIN_COUNT`] in adaptive mode, 1 (no
    /// effect) in the others; `window_hours` 720, `min_points` 5, `deviations` 3 (ESCU's, unused
    /// by adaptive mode) and `alpha` [`DEFAULT_ALPHA`] (used only by adaptive mode).
    pub fn for_mode(mode: Mode) -> DetectConfig {
        DetectConfig {
            mode,
            window_hours: 720,
            min_points: 5,
            deviations: 3.0,
            min_count: if mode == Mode::Adaptive { DEFAULT_ADAPTIVE_MIN_COUNT } else { 1 },
            alpha: DEFAULT_ALPHA,
        }
    }

    /// Checks the settings: `window_hours >= 1`, a finite `deviations` and `0 < alpha < 1`.
    pub fn validate(&self) -> Result<(), DetectError> {
        if self.alpha.is_nan() || self.alpha <= 0.0 || self.alpha >= 1.0 {
            return Err(DetectError::InvalidConfig(format!(
                "alpha must be in (0, 1), got {}",
                self.alpha
            )));
        }
        if self.window_hours == 0 {
            return Err(DetectError::InvalidConfig("window_hours must be at least 1".into()));
        }
        if !self.deviations.is_finite() {
            return Err(DetectError::InvalidConfig(format!(
                "deviations must be a finite number, got {}",
                self.deviations
            )));
        }
        Ok(())
    }

    /// The first hour whose history a fresh detector must be warmed with before it evaluates
    /// `hour`: the window before it in `window` mode, all history (`i64::MIN`) in `splunk` and
    /// `adaptive` modes (whose state depends on every hour since the first).
    pub fn warm_from(&self, hour: i64) -> i64 {
        match self.mode {
            Mode::Window => hour.saturating_sub(self.window_secs()),
            Mode::Splunk | Mode::Adaptive => i64::MIN,
        }
    }

    /// The window (or bootstrap) length in seconds.
    pub(crate) fn window_secs(&self) -> i64 {
        i64::from(self.window_hours) * 3600
    }
}

/// Errors of the detection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectError {
    /// A mode name other than `adaptive`, `window` or `splunk`.
    #[error("unknown detection mode {0:?}: expected \"adaptive\", \"window\" or \"splunk\"")]
    UnknownMode(String),
    /// A setting out of range.
    #[error("invalid detection config: {0}")]
    InvalidConfig(String),
    /// An hour fed at or before the last hour already processed.
    #[error("hour {hour} ({}) is not after the last processed hour {last} ({})", format_hour(*.hour), format_hour(*.last))]
    OutOfOrder {
        /// The hour fed.
        hour: i64,
        /// The last hour processed.
        last: i64,
    },
    /// A saved state that does not fit the configuration or is malformed.
    #[error("invalid detector state: {0}")]
    InvalidState(String),
}

/// The serialisable state of a [`Detector`], for resuming a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum DetectorState {
    /// Window mode: the points of the last window.
    Window(WindowState),
    /// Splunk mode: the ESCU lookup plus bootstrap bookkeeping.
    Splunk(SplunkState),
    /// Adaptive mode: every source's decayed sums and the fleet's new-source sums.
    Adaptive(AdaptiveState),
}

impl DetectorState {
    /// JSON encoding.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::state_json::to_bytes(self)
    }

    /// Decodes what [`DetectorState::to_json_bytes`] wrote.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<DetectorState, DetectError> {
        crate::state_json::from_bytes(bytes, "detector state")
    }
}

/// One source's observation in one hour: the merged rows of that source.
#[derive(Debug)]
pub(crate) struct Obs<'a> {
    pub(crate) src: &'a str,
    pub(crate) count: u64,
    /// The hour's rows.
    rows: HourRows<'a>,
    /// The index of the source's first row in the hour.
    first: usize,
    /// Its other rows, if any (rare: a counter or a history file holds one row per source and
    /// hour); kept apart so that the usual observation allocates nothing.
    more: Vec<usize>,
}

/// Groups the rows of one hour by source, drops zero counts (not data points) and sums duplicates;
/// the result is sorted by source.
pub(crate) fn group_hour<'a>(rows: impl Into<HourRows<'a>>) -> Vec<Obs<'a>> {
    let rows = rows.into();
    let mut counted: Vec<usize> = (0..rows.len()).filter(|&i| rows.blocked_count(i) > 0).collect();
    // Rows of an hour usually come sorted by source (counter and history order); otherwise a
    // stable sort keeps each source's rows in input order.
    if !counted.is_sorted_by_key(|&i| rows.src_ip(i)) {
        counted.sort_by_key(|&i| rows.src_ip(i));
    }
    let mut out: Vec<Obs<'_>> = Vec::with_capacity(counted.len());
    for i in counted {
        let src = rows.src_ip(i);
        match out.last_mut() {
            Some(o) if o.src == src => {
                o.count = o.count.saturating_add(rows.blocked_count(i));
                o.more.push(i);
            }
            _ => out.push(Obs {
                src,
                count: rows.blocked_count(i),
                rows,
                first: i,
                more: Vec::new(),
            }),
        }
    }
    out
}

/// Baseline numbers that a spike is compared against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Baseline {
    pub(crate) mean: f64,
    pub(crate) stdev: f64,
    pub(crate) n: u64,
}

impl Obs<'_> {
    /// Builds the spike record for this observation.
    pub(crate) fn spike(&self, mode: Mode, hour: i64, b: Baseline, threshold: f64) -> Spike {
        let (dest_ips, unique_dest_count, resource_ids) = if self.more.is_empty() {
            let (u, d, i) = self.rows.dests_and_interfaces(self.first);
            (d, u, i)
        } else {
            let (mut d, mut i, mut u) = (Vec::new(), Vec::new(), 0);
            for r in std::iter::once(self.first).chain(self.more.iter().copied()) {
                let (ru, rd, ri) = self.rows.dests_and_interfaces(r);
                d.extend(rd);
                i.extend(ri);
                u = u.max(ru);
            }
            d.sort_unstable();
            d.dedup();
            i.sort_unstable();
            i.dedup();
            let u = u.max(d.len() as u64);
            (d, u, i)
        };
        Spike {
            id: spike_id(mode, hour, self.src),
            detection: DETECTION.to_string(),
            mode,
            hour,
            src_ip: self.src.to_string(),
            src_ips: Vec::new(),
            source_count: 0,
            blocked_count: self.count,
            unique_dest_count,
            dest_ips,
            resource_ids,
            episode: None,
            baseline_mean: b.mean,
            baseline_stdev: b.stdev,
            data_points: b.n,
            threshold,
            reason: None,
            expected: None,
            p_value: None,
            early: false,
        }
    }
}

#[derive(Debug, Clone)]
enum Inner {
    Window(window::WindowDetector),
    Splunk(splunk::SplunkDetector),
    Adaptive(Box<adaptive::AdaptiveDetector>),
}

/// Streaming detector: feed hours in strictly increasing order with [`Detector::observe_hour`]
/// (verdicts) or [`Detector::warm`] (history only). Quiet hours need not be fed.
///
/// The `hour` argument is authoritative: `row.hour` is not consulted. Rows with `blocked_count == 0`
/// are ignored, and several rows of one source in one hour are summed (their destinations and
/// interfaces are unioned). Invariant: an hour is evaluated at most once.
#[derive(Debug, Clone)]
pub struct Detector {
    cfg: DetectConfig,
    inner: Inner,
    rejected_hours: u64,
    /// Adaptive mode's fleet incidents and episodes (unused in the other modes).
    incidents: incident::Incidents,
}

impl Detector {
    /// A detector with empty history. The configuration is not checked: see
    /// [`DetectConfig::validate`] (with invalid values nothing panics, but few or no spikes result).
    pub fn new(cfg: DetectConfig) -> Detector {
        let inner = match cfg.mode {
            Mode::Window => Inner::Window(window::WindowDetector::default()),
            Mode::Splunk => Inner::Splunk(splunk::SplunkDetector::default()),
            Mode::Adaptive => Inner::Adaptive(Box::default()),
        };
        Detector { cfg, inner, rejected_hours: 0, incidents: incident::Incidents::default() }
    }

    /// Resumes from a saved state; its mode must be `cfg.mode` (and, for splunk mode, its window
    /// must be `cfg.window_hours`).
    pub fn restore(cfg: DetectConfig, state: DetectorState) -> Result<Detector, DetectError> {
        let mut incidents = incident::Incidents::default();
        let inner = match (cfg.mode, state) {
            (Mode::Window, DetectorState::Window(s)) => {
                Inner::Window(window::WindowDetector::from_state(s))
            }
            (Mode::Splunk, DetectorState::Splunk(s)) => {
                Inner::Splunk(splunk::SplunkDetector::from_state(s, cfg.window_hours)?)
            }
            (Mode::Adaptive, DetectorState::Adaptive(mut s)) => {
                incidents = std::mem::take(&mut s.incidents);
                Inner::Adaptive(Box::new(adaptive::AdaptiveDetector::from_state(s)?))
            }
            (m, _) => {
                return Err(DetectError::InvalidState(format!(
                    "state was saved by another mode than the configured {m}"
                )))
            }
        };
        Ok(Detector { cfg, inner, rejected_hours: 0, incidents })
    }

    /// The state to save for [`Detector::restore`].
    pub fn snapshot(&self) -> DetectorState {
        match &self.inner {
            Inner::Window(w) => DetectorState::Window(w.to_state()),
            Inner::Splunk(s) => DetectorState::Splunk(s.to_state(self.cfg.window_hours)),
            Inner::Adaptive(a) => {
                let mut st = a.to_state();
                st.incidents = self.incidents.clone();
                DetectorState::Adaptive(st)
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    /// The last hour fed (observed or warmed), if any.
    pub fn last_hour(&self) -> Option<i64> {
        match &self.inner {
            Inner::Window(w) => w.last_hour,
            Inner::Splunk(s) => s.last_hour,
            Inner::Adaptive(a) => a.last_hour,
        }
    }

    /// The smallest `blocked_count` of `src_ip` that [`Detector::observe_hour`] would flag in
    /// `hour` (adaptive mode; `None` in the other modes, for an hour already fed, during the
    /// warm-up, or when no count would). The test is monotone in the count: every count at or
    /// above the threshold alerts, none below, so a stream can alert as soon as a source's
    /// running count reaches it.
    pub fn threshold(&self, hour: i64, src_ip: &str) -> Option<u64> {
        match &self.inner {
            Inner::Adaptive(a) => a.threshold(&self.cfg, hour, src_ip),
            Inner::Window(_) | Inner::Splunk(_) => None,
        }
    }

    /// What `src_ip` is compared with in `hour`, an hour after [`Detector::last_hour`]: the
    /// expected count, its standard deviation and the smallest count that would alert (see
    /// [`Expectation`]; for every mode, a count alerts in [`Detector::observe_hour`] iff it is
    /// at least `alert_at`, tested). Changes nothing. `None` for an hour at or before the last
    /// one fed, before any hour was fed, and (adaptive mode) for a source it has not seen while
    /// the fleet has no prior yet.
    ///
    /// ```
    /// use flowspike_model::AggregateRow;
    /// use flowspike_detect::{DetectConfig, Detector, Mode};
    ///
    /// let mut d = Detector::new(DetectConfig::for_mode(Mode::Window));
    /// for h in 0..10 {
    ///     let row = AggregateRow {
    ///         hour: h * 3600, src_ip: "10.0.0.1".into(), blocked_count: 2 + (h as u64 % 2),
    ///         ..AggregateRow::default()
    ///     };
    ///     d.observe_hour(h * 3600, &[row]);
    /// }
    /// let e = d.expectation(10 * 3600, "10.0.0.1").unwrap();
    /// assert_eq!((e.expected, e.data_points), (2.5, 10));
    /// assert_eq!(e.alert_at, Some(5)); // 2.5 + 3 * 0.527 = 4.08
    /// ```
    pub fn expectation(&self, hour: i64, src_ip: &str) -> Option<Expectation> {
        if self.last_hour().is_some_and(|l| hour <= l) {
            return None;
        }
        match &self.inner {
            Inner::Window(w) => w.last_hour.map(|_| w.expectation(&self.cfg, hour, src_ip)),
            Inner::Splunk(s) => s.expectation(&self.cfg, hour, src_ip),
            Inner::Adaptive(a) => a.expectation(&self.cfg, hour, src_ip),
        }
    }

    /// The early alerts of the still open `hour` given its partial `rows` so far, without
    /// changing the detector (adaptive mode; nothing in window and splunk modes, nor for an hour
    /// at or before [`Detector::last_hour`]).
    ///
    /// Each record is what [`Detector::observe_hour`] would give for that source at those counts,
    /// with the same `id` (a source continuing an open episode keeps the episode's first id, as
    /// at the close) and its `episode` as the close would extend it, plus `early: true`. Only
    /// clear cases alert early: `p_value < alpha * EARLY_ALPHA_FACTOR`. A fleet-wide rise (many
    /// sources slightly over, towards one destination) is merged into one record only at the
    /// close, where the hour's every source is known; a borderline source waits for it, so such an
    /// incident does not page once per source first. Sources are judged alone: `rows` may hold
    /// only the sources whose counts changed.
    pub fn evaluate_open(&self, hour: i64, rows: &[AggregateRow]) -> Vec<Spike> {
        let Inner::Adaptive(a) = &self.inner else { return Vec::new() };
        let bar = self.cfg.alpha * EARLY_ALPHA_FACTOR;
        let reach = (incident::EPISODE_MAX_GAP_HOURS + 1) * 3600;
        let mut out = Vec::new();
        for o in group_hour(rows) {
            let Some(mut s) = a.candidate(&self.cfg, hour, &o) else { continue };
            if s.p_value.is_none_or(|p| p >= bar) {
                continue;
            }
            // The incident layer's rule (`Incidents::apply`): an episode of this source whose
            // last alert hour is at most `reach` before `hour` continues, with its first id.
            let open = self.incidents.open.iter().find(|e| {
                e.key == s.src_ip
                    && e.episode.last_hour < hour
                    && hour - e.episode.last_hour <= reach
            });
            let episode = match open {
                Some(e) => {
                    s.id.clone_from(&e.id);
                    let mut ep = e.episode.clone();
                    ep.last_hour = hour;
                    ep.hours += 1;
                    if s.blocked_count > ep.peak_count {
                        ep.peak_count = s.blocked_count;
                        ep.peak_hour = hour;
                    }
                    ep
                }
                None => incident::Episode {
                    first_hour: hour,
                    last_hour: hour,
                    peak_hour: hour,
                    peak_count: s.blocked_count,
                    hours: 1,
                },
            };
            s.episode = Some(episode);
            s.early = true;
            out.push(s);
        }
        out
    }

    /// How many calls [`Detector::observe_hour`] or [`Detector::warm`] ignored as out of order.
    pub fn rejected_hours(&self) -> u64 {
        self.rejected_hours
    }

    /// Evaluates `hour` against the history, then adds it to the history; returns its spikes sorted
    /// by source. An hour at or before [`Detector::last_hour`] is a no-op returning nothing (counted
    /// in [`Detector::rejected_hours`]); use [`Detector::try_observe_hour`] to get an error instead.
    pub fn observe_hour(&mut self, hour: i64, rows: &[AggregateRow]) -> Vec<Spike> {
        self.try_observe_hour(hour, rows).unwrap_or_default()
    }

    /// [`Detector::observe_hour`] with an error for out-of-order hours.
    pub fn try_observe_hour(
        &mut self,
        hour: i64,
        rows: &[AggregateRow],
    ) -> Result<Vec<Spike>, DetectError> {
        self.feed(hour, rows, true)
    }

    /// Adds `hour` to the history without verdicts (replaying the history that precedes a range).
    /// Same ordering rule and error as [`Detector::try_observe_hour`].
    pub fn warm(&mut self, hour: i64, rows: &[AggregateRow]) -> Result<(), DetectError> {
        self.feed(hour, rows, false).map(|_| ())
    }

    /// Feeds `hours` in order ([`Detector::warm`] for those without verdicts,
    /// [`Detector::try_observe_hour`] for the others) and returns the spikes of them all.
    pub fn feed_hours(&mut self, hours: &[HourInput<'_>]) -> Result<Vec<Spike>, DetectError> {
        let mut spikes = Vec::new();
        for &HourInput { hour, rows, verdicts } in hours {
            spikes.extend(self.feed(hour, rows, verdicts)?);
        }
        Ok(spikes)
    }

    fn feed<'a>(
        &mut self,
        hour: i64,
        rows: impl Into<HourRows<'a>>,
        verdicts: bool,
    ) -> Result<Vec<Spike>, DetectError> {
        if let Some(last) = self.last_hour() {
            if hour <= last {
                self.rejected_hours += 1;
                return Err(DetectError::OutOfOrder { hour, last });
            }
        }
        let obs = group_hour(rows);
        Ok(match &mut self.inner {
            Inner::Window(w) => w.feed(&self.cfg, hour, &obs, verdicts),
            Inner::Splunk(s) => s.feed(&self.cfg, hour, &obs, verdicts),
            Inner::Adaptive(a) => {
                let candidates = a.feed(&self.cfg, hour, &obs, verdicts);
                if verdicts {
                    // Every source of `obs` has a counted flow: they are the hour's active sources.
                    self.incidents.apply(Mode::Adaptive, hour, obs.len(), candidates)
                } else {
                    candidates
                }
            }
        })
    }
}

/// Batch detection: groups `rows` (in any order) by hour and feeds every hour, in order, to a fresh
/// [`Detector`]. Spikes come sorted by hour, then source.
pub fn detect(cfg: &DetectConfig, rows: &[AggregateRow]) -> Vec<Spike> {
    let mut by_hour: BTreeMap<i64, Vec<AggregateRow>> = BTreeMap::new();
    for r in rows {
        by_hour.entry(r.hour).or_default().push(r.clone());
    }
    let mut d = Detector::new(cfg.clone());
    let mut out = Vec::new();
    for (hour, rows) in by_hour {
        out.extend(d.observe_hour(hour, &rows));
    }
    out
}

/// One hour handed to [`detect_hours`] or [`Detector::feed_hours`].
#[derive(Debug, Clone, Copy)]
pub struct HourInput<'a> {
    /// Start of the hour, unix seconds.
    pub hour: i64,
    /// The hour's rows.
    pub rows: HourRows<'a>,
    /// Whether the hour gets verdicts (`false`: it only warms the baseline, like
    /// [`Detector::warm`]).
    pub verdicts: bool,
}

/// Batch detection over `hours` (strictly increasing) on the current rayon pool.
///
/// Window mode keeps nothing across sources, so the sources are split into `shards` groups by a
/// hash of the address and each group runs its own detector over every hour, all at once; the
/// spikes are exactly those of one [`Detector`] fed the same hours (tested), sorted by hour, then
/// source. Splunk mode (whose bootstrap is shared by all sources), adaptive mode (whose warm-up
/// and new-source prior are) and `shards <= 1` run one detector. Errors: [`DetectError::OutOfOrder`] when the hours are not increasing.
pub fn detect_hours(
    cfg: &DetectConfig,
    hours: &[HourInput<'_>],
    shards: usize,
) -> Result<Vec<Spike>, DetectError> {
    use rayon::prelude::*;
    if let Some(w) = hours.windows(2).find(|w| w[1].hour <= w[0].hour) {
        return Err(DetectError::OutOfOrder { hour: w[1].hour, last: w[0].hour });
    }
    if cfg.mode != Mode::Window || shards <= 1 {
        return Detector::new(cfg.clone()).feed_hours(hours);
    }
    // Each hour grouped once (in parallel), its observations split by shard.
    let grouped: Vec<Vec<Vec<Obs<'_>>>> = hours
        .par_iter()
        .map(|h| {
            let obs = group_hour(h.rows);
            // Room for an even split and then some: no vector grows step by step.
            let room = obs.len() / shards + obs.len() / (2 * shards) + 8;
            let mut parts: Vec<Vec<Obs<'_>>> =
                (0..shards).map(|_| Vec::with_capacity(room)).collect();
            for o in obs {
                let i = (fnv1a64(o.src.as_bytes()) % shards as u64) as usize;
                parts[i].push(o);
            }
            parts
        })
        .collect();
    let per_shard: Vec<Vec<Spike>> = (0..shards)
        .into_par_iter()
        .map(|i| {
            let mut w = window::WindowDetector::default();
            let mut spikes = Vec::new();
            for (h, parts) in hours.iter().zip(&grouped) {
                spikes.extend(w.feed(cfg, h.hour, &parts[i], h.verdicts));
            }
            spikes
        })
        .collect();
    let mut spikes: Vec<Spike> = per_shard.into_iter().flatten().collect();
    spikes.sort_by(|a, b| (a.hour, &a.src_ip).cmp(&(b.hour, &b.src_ip)));
    Ok(spikes)
}

/// Sample mean and standard deviation (0 when `n < 2`) from exact integer sums.
///
/// Returns `None` when an intermediate overflows `u128` (counts near `2^60` in a full window);
/// callers then fall back to a two-pass computation.
pub(crate) fn stats_from_sums(n: u64, sum: u128, sum_sq: u128) -> Option<(f64, f64)> {
    if n == 0 {
        return Some((0.0, 0.0));
    }
    let nf = n as f64;
    let mean = sum as f64 / nf;
    if n < 2 {
        return Some((mean, 0.0));
    }
    // n * Σc² - (Σc)² = n² * population variance, exact and >= 0 (Cauchy–Schwarz).
    let num = u128::from(n).checked_mul(sum_sq)?.checked_sub(sum.checked_mul(sum)?)?;
    let var = num as f64 / (nf * (nf - 1.0));
    Some((mean, var.sqrt()))
}

/// Two-pass sample mean and standard deviation (0 when fewer than two values).
pub(crate) fn stats_two_pass(values: impl Iterator<Item = u64> + Clone) -> (f64, f64) {
    let (n, s) = values.clone().fold((0u64, 0f64), |(n, s), c| (n + 1, s + c as f64));
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = s / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let ss: f64 = values.map(|c| (c as f64 - mean).powi(2)).sum();
    (mean, (ss / (n as f64 - 1.0)).sqrt())
}

#[cfg(test)]
mod tests;
