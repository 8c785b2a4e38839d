//! Splunk mode: ESCU's running baseline, bootstrapped like its support search.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::expect::{count_floor, smallest_alerting, Expectation};
use crate::{stats_from_sums, Baseline, DetectConfig, DetectError, Mode, Obs, Spike};

/// One source's baseline.
#[derive(Debug, Clone, Default, PartialEq)]
struct Source {
    n: u64,
    latest_count: u64,
    latest_hour: i64,
    avg: f64,
    stdev: f64,
    /// Exact Σc and Σc² while the bootstrap lasts (`None` once finalised).
    boot: Option<(u128, u128)>,
}

/// Streaming splunk-mode detector.
#[derive(Debug, Clone, Default)]
pub(crate) struct SplunkDetector {
    sources: HashMap<String, Source>,
    bootstrap_start: Option<i64>,
    bootstrapped: bool,
    pub(crate) last_hour: Option<i64>,
}

impl SplunkDetector {
    pub(crate) fn feed(
        &mut self,
        cfg: &DetectConfig,
        hour: i64,
        obs: &[Obs<'_>],
        verdicts: bool,
    ) -> Vec<Spike> {
        let start = *self.bootstrap_start.get_or_insert(hour);
        self.last_hour = Some(hour);
        let mut spikes = Vec::new();
        if hour < start.saturating_add(cfg.window_secs()) {
            // Support search: count, Σc, Σc² per source over the bootstrap hours.
            for o in obs {
                let s = self.sources.entry(o.src.to_string()).or_default();
                let (sum, sum_sq) = s.boot.get_or_insert((0, 0));
                *sum += u128::from(o.count);
                *sum_sq = sum_sq.saturating_add(u128::from(o.count) * u128::from(o.count));
                s.n += 1;
                s.latest_count = o.count;
                s.latest_hour = hour;
            }
            return spikes;
        }
        if !self.bootstrapped {
            self.finalize_bootstrap();
        }
        let big_n = f64::from(cfg.window_hours);
        for o in obs {
            let c = o.count as f64;
            let Some(s) = self.sources.get_mut(o.src) else {
                // Our fix: ESCU never baselines a source first seen after the support search ran.
                let s = Source {
                    n: 1,
                    latest_count: o.count,
                    latest_hour: hour,
                    avg: c,
                    stdev: 0.0,
                    boot: None,
                };
                self.sources.insert(o.src.to_string(), s);
                continue;
            };
            let (avg, stdev) = update(s.avg, s.stdev, c, big_n);
            s.avg = avg;
            s.stdev = stdev;
            s.n = s.n.saturating_add(1);
            s.latest_count = o.count;
            s.latest_hour = hour;
            let threshold = avg + cfg.deviations * stdev;
            if verdicts && alerts(cfg, s.n, o.count, avg, stdev) {
                spikes.push(o.spike(
                    Mode::Splunk,
                    hour,
                    Baseline { mean: avg, stdev, n: s.n },
                    threshold,
                ));
            }
        }
        spikes
    }

    fn finalize_bootstrap(&mut self) {
        for s in self.sources.values_mut() {
            if let Some((sum, sum_sq)) = s.boot.take() {
                (s.avg, s.stdev) = boot_stats(s.n, sum, sum_sq);
            }
        }
        self.bootstrapped = true;
    }

    /// What `src` is compared with in `hour` (after the last hour fed): its running average and
    /// stdev before the hour, and the smallest count that the test on the updated values flags.
    pub(crate) fn expectation(
        &self,
        cfg: &DetectConfig,
        hour: i64,
        src: &str,
    ) -> Option<Expectation> {
        let start = self.bootstrap_start?;
        let s = self.sources.get(src);
        let (avg, stdev, n) = match s {
            Some(s) => match s.boot {
                Some((sum, sum_sq)) => {
                    let (a, d) = boot_stats(s.n, sum, sum_sq);
                    (a, d, s.n)
                }
                None => (s.avg, s.stdev, s.n),
            },
            None => (0.0, 0.0, 0),
        };
        let judged = hour >= start.saturating_add(cfg.window_secs()) && s.is_some();
        let big_n = f64::from(cfg.window_hours);
        let alert_at = judged
            .then(|| {
                // For the usual settings (`deviations * sqrt(N - 1) / N + 1 / N < 1`, e.g. 3 and
                // 720) the updated values rise slower than the count: the test is monotone in it.
                smallest_alerting(count_floor(cfg), |c| {
                    let (a, d) = update(avg, stdev, c as f64, big_n);
                    alerts(cfg, n.saturating_add(1), c, a, d)
                })
            })
            .flatten();
        Some(Expectation { mode: Mode::Splunk, expected: avg, stdev, data_points: n, alert_at })
    }

    pub(crate) fn to_state(&self, window_hours: u32) -> SplunkState {
        let mut sources: Vec<SplunkSource> = self
            .sources
            .iter()
            .map(|(k, s)| SplunkSource {
                src_ip: k.clone(),
                num_data_points: s.n,
                latest_count: s.latest_count,
                latest_hour: s.latest_hour,
                avg_blocked_connections: s.avg,
                stdev_blocked_connections: s.stdev,
                bootstrap_sums: s.boot.map(|(a, b)| [a.to_string(), b.to_string()]),
            })
            .collect();
        sources.sort_by(|a, b| a.src_ip.cmp(&b.src_ip));
        SplunkState {
            version: 1,
            window_hours,
            bootstrap_start: self.bootstrap_start,
            bootstrapped: self.bootstrapped,
            last_hour: self.last_hour,
            sources,
        }
    }

    pub(crate) fn from_state(
        st: SplunkState,
        window_hours: u32,
    ) -> Result<SplunkDetector, DetectError> {
        if st.version != 1 {
            return Err(DetectError::InvalidState(format!(
                "unsupported splunk state version {}",
                st.version
            )));
        }
        if st.window_hours != window_hours {
            return Err(DetectError::InvalidState(format!(
                "splunk state was built with window_hours {} but the config has {window_hours}",
                st.window_hours
            )));
        }
        let mut sources = HashMap::with_capacity(st.sources.len());
        for src in st.sources {
            let boot = match &src.bootstrap_sums {
                None => None,
                Some([a, b]) => Some((parse_u128(a, &src.src_ip)?, parse_u128(b, &src.src_ip)?)),
            };
            if boot.is_some() == st.bootstrapped {
                return Err(DetectError::InvalidState(format!(
                    "source {}: bootstrap sums must be present exactly while the bootstrap lasts",
                    src.src_ip
                )));
            }
            let s = Source {
                n: src.num_data_points,
                latest_count: src.latest_count,
                latest_hour: src.latest_hour,
                avg: src.avg_blocked_connections,
                stdev: src.stdev_blocked_connections,
                boot,
            };
            sources.insert(src.src_ip, s);
        }
        Ok(SplunkDetector {
            sources,
            bootstrap_start: st.bootstrap_start,
            bootstrapped: st.bootstrapped,
            last_hour: st.last_hour,
        })
    }
}

/// ESCU's running update of `(avg, stdev)` by count `c` with `N = big_n`:
/// `avg' = avg + (c - avg) / N`, `stdev' = sqrt((stdev² (N - 1) + (c - avg')(c - avg)) / N)`.
fn update(avg: f64, stdev: f64, c: f64, big_n: f64) -> (f64, f64) {
    let a = avg + (c - avg) / big_n;
    let var = (stdev * stdev * (big_n - 1.0) + (c - a) * (c - avg)) / big_n;
    (a, var.max(0.0).sqrt())
}

/// ESCU's test on the updated values: `n' > min_points`, `c >= min_count`, `c > avg' + k stdev'`.
fn alerts(cfg: &DetectConfig, n_updated: u64, c: u64, avg: f64, stdev: f64) -> bool {
    n_updated > cfg.min_points && c >= cfg.min_count && c as f64 > avg + cfg.deviations * stdev
}

/// The bootstrap's mean and sample stdev from its exact sums.
fn boot_stats(n: u64, sum: u128, sum_sq: u128) -> (f64, f64) {
    if sum_sq == u128::MAX {
        // Saturated (counts near 2^64): the mean is still exact enough; a huge stdev.
        (sum as f64 / n as f64, f64::MAX.sqrt())
    } else {
        stats_from_sums(n, sum, sum_sq).unwrap_or((sum as f64 / n as f64, f64::MAX.sqrt()))
    }
}

fn parse_u128(s: &str, src: &str) -> Result<u128, DetectError> {
    s.parse()
        .map_err(|_| DetectError::InvalidState(format!("source {src}: bad bootstrap sum {s:?}")))
}

/// Saved state of splunk mode: ESCU's lookup `baseline_blocked_outbound_connections` plus what a
/// stream needs to resume.
///
/// # Semantics (port of ESCU)
/// - Bootstrap: the hours `bootstrap_start <= h < bootstrap_start + window_hours` (the first hours
///   ever fed) only build the baseline, like the support search "Baseline of blocked outbound traffic
///   from AWS": per source `numDataPoints` = active hours, `avgBlockedConnections` = mean,
///   `stdevBlockedConnections` = sample stdev (0 when fewer than 2 points). No verdicts.
/// - After it, each active hour updates `avg' = avg + (c - avg)/N`,
///   `stdev' = sqrt((stdev² (N-1) + (c - avg')(c - avg)) / N)`, `n' = n + 1` (`N = window_hours`, 720 in
///   ESCU) and flags a spike iff `n' > min_points` and `c > avg' + deviations * stdev'`, comparing with
///   the updated values as ESCU does; the state is updated whether or not it is a spike.
///
/// # Difference from ESCU
/// ESCU never baselines a source that first appears after the support search ran (its `avg` stays
/// null forever, so it can never alert). Here such a source starts with `avg = c`, `stdev = 0`,
/// `n = 1` and gets no verdict for that hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplunkState {
    /// Format version (1).
    pub version: u32,
    /// The `N` of the update and the bootstrap length the state was built with.
    pub window_hours: u32,
    /// First hour ever fed: the bootstrap covers `[start, start + window_hours)`.
    pub bootstrap_start: Option<i64>,
    /// True once an hour after the bootstrap was fed (averages are then final).
    pub bootstrapped: bool,
    /// Last hour fed.
    pub last_hour: Option<i64>,
    /// The lookup rows, sorted by source.
    pub sources: Vec<SplunkSource>,
}

/// One row of ESCU's lookup (field names as in the lookup) plus resume bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplunkSource {
    /// Source address.
    pub src_ip: String,
    /// Active hours seen.
    #[serde(rename = "numDataPoints")]
    pub num_data_points: u64,
    /// Count of the last active hour.
    #[serde(rename = "latestCount")]
    pub latest_count: u64,
    /// The last active hour (not in ESCU's lookup).
    #[serde(rename = "latestHour")]
    pub latest_hour: i64,
    /// Running average (meaningless until the bootstrap is finalised).
    #[serde(rename = "avgBlockedConnections")]
    pub avg_blocked_connections: f64,
    /// Running standard deviation (meaningless until the bootstrap is finalised).
    #[serde(rename = "stdevBlockedConnections")]
    pub stdev_blocked_connections: f64,
    /// Exact `[Σc, Σc²]` as decimal strings while the bootstrap lasts.
    #[serde(rename = "bootstrapSums", default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_sums: Option<[String; 2]>,
}

impl SplunkState {
    /// JSON encoding (a splunk-mode replay saves it as `<state>/baseline/splunk.json`).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        crate::state_json::to_bytes(self)
    }

    /// Decodes what [`SplunkState::to_json_bytes`] wrote.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<SplunkState, DetectError> {
        crate::state_json::from_bytes(bytes, "splunk state")
    }
}
