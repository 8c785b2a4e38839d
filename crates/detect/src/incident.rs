//! Fleet incidents and episodes: the layer between adaptive mode's candidate alerts of an hour and
//! the records it emits (window and splunk modes do not use it).
//!
//! - **Fleet**: when at least [`fleet_min_sources`] candidates of one hour share a destination (in
//!   their `dest_ips`), they become ONE record with `reason: "fleet"`, `src_ips` (sorted), no
//!   `src_ip`, the shared destination as its only `dest_ips`, `source_count`, the summed
//!   `blocked_count` (and summed `expected` and baseline mean); their single alerts are suppressed.
//!   Destinations are taken greedily, the one shared by the most remaining candidates first.
//! - **Episodes**: a source (or a fleet incident's destination) alerting again at most
//!   [`EPISODE_MAX_GAP_HOURS`] quiet hours after its last alert continues its episode: the record
//!   keeps the episode's first `id` (so a consumer keyed by id updates one incident) and carries
//!   `episode` {first_hour, last_hour, peak_hour, peak_count, hours}. Every record of this layer
//!   carries its episode (`hours: 1` for a first hour).
//!
//! The state ([`Incidents`]) is the open episodes only: entries that can no longer continue are
//! dropped at every hour, so it stays as small as the alerts of the last two hours.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::spike::hour_rfc3339;
use crate::{spike_id, Mode, Reason, Spike};

/// A fleet incident needs at least this many candidate sources sharing a destination.
pub const FLEET_MIN_SOURCES: usize = 5;

/// ... and at least this fraction of the hour's active sources: 2% keeps one noisy hour of a large
/// fleet (5,000 sources: 100 needed) from grouping unrelated alerts that happen to share a popular
/// destination, while a rollout blocking a fifth of the fleet is far above it.
pub const FLEET_SOURCE_FRACTION: f64 = 0.02;

/// Quiet hours allowed between two alert hours of one episode.
pub const EPISODE_MAX_GAP_HOURS: i64 = 1;

/// The candidates needed for a fleet incident in an hour with `active_sources` active sources:
/// `max(FLEET_MIN_SOURCES, ceil(FLEET_SOURCE_FRACTION * active_sources))`.
pub fn fleet_min_sources(active_sources: usize) -> usize {
    let frac = (FLEET_SOURCE_FRACTION * active_sources as f64).ceil() as usize;
    FLEET_MIN_SOURCES.max(frac)
}

/// One incident over consecutive hours, as carried by each of its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// Its first alert hour (RFC 3339 in JSON).
    #[serde(with = "hour_rfc3339")]
    pub first_hour: i64,
    /// Its last alert hour so far (the record's hour).
    #[serde(with = "hour_rfc3339")]
    pub last_hour: i64,
    /// The alert hour with the largest `blocked_count` so far (the first of equals).
    #[serde(with = "hour_rfc3339")]
    pub peak_hour: i64,
    /// That count.
    pub peak_count: u64,
    /// Alert hours so far (quiet hours in the gaps not counted).
    pub hours: u64,
}

/// An open episode: its id and its figures so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenEpisode {
    /// Key: the source, or `fleet:<destination>` for a fleet incident.
    pub key: String,
    /// The id of its first record.
    pub id: String,
    /// Its figures.
    pub episode: Episode,
}

/// The incident layer's state: the open episodes, sorted by key. Saved with the detector's state
/// so an episode survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Incidents {
    /// Open episodes.
    pub open: Vec<OpenEpisode>,
}

impl Incidents {
    /// True when no episode is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Turns the candidate alerts of `hour` (with their ids, as the detector built them) into the
    /// records to emit: fleet incidents grouped, then every record given its episode. Hours must
    /// increase from call to call (the detector's rule); `active_sources` is the number of sources
    /// with at least one counted flow in the hour. Records come sorted by `src_ip` (fleet records,
    /// which have none, first, by destination).
    pub fn apply(
        &mut self,
        mode: Mode,
        hour: i64,
        active_sources: usize,
        candidates: Vec<Spike>,
    ) -> Vec<Spike> {
        let reach = (EPISODE_MAX_GAP_HOURS + 1) * 3600;
        self.open.retain(|o| hour - o.episode.last_hour <= reach && o.episode.last_hour < hour);
        let mut out = group_fleet(mode, hour, active_sources, candidates);
        let mut open: BTreeMap<String, OpenEpisode> =
            std::mem::take(&mut self.open).into_iter().map(|o| (o.key.clone(), o)).collect();
        for rec in &mut out {
            let key = episode_key(rec);
            let o = open
                .entry(key.clone())
                .and_modify(|o| {
                    let e = &mut o.episode;
                    e.last_hour = hour;
                    e.hours += 1;
                    if rec.blocked_count > e.peak_count {
                        e.peak_count = rec.blocked_count;
                        e.peak_hour = hour;
                    }
                })
                .or_insert_with(|| OpenEpisode {
                    key,
                    id: rec.id.clone(),
                    episode: Episode {
                        first_hour: hour,
                        last_hour: hour,
                        peak_hour: hour,
                        peak_count: rec.blocked_count,
                        hours: 1,
                    },
                });
            rec.id.clone_from(&o.id);
            rec.episode = Some(o.episode.clone());
        }
        self.open = open.into_values().collect();
        out.sort_by(|a, b| (&a.src_ip, &a.dest_ips).cmp(&(&b.src_ip, &b.dest_ips)));
        out
    }
}

fn fleet_key(dest: &str) -> String {
    format!("fleet:{dest}")
}

fn episode_key(rec: &Spike) -> String {
    if rec.src_ips.is_empty() {
        rec.src_ip.clone()
    } else {
        fleet_key(rec.dest_ips.first().map_or("", String::as_str))
    }
}

/// Groups the candidates sharing a destination into fleet records; the others pass unchanged.
fn group_fleet(mode: Mode, hour: i64, active_sources: usize, candidates: Vec<Spike>) -> Vec<Spike> {
    let k = fleet_min_sources(active_sources);
    if candidates.len() < k {
        return candidates;
    }
    let mut by_dest: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        for d in &c.dest_ips {
            by_dest.entry(d.as_str()).or_default().push(i);
        }
    }
    by_dest.retain(|_, v| v.len() >= k);
    let mut taken = vec![false; candidates.len()];
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    loop {
        // The destination shared by the most candidates not yet grouped (ties: lowest text).
        let best = by_dest
            .iter()
            .map(|(d, v)| (v.iter().filter(|&&i| !taken[i]).count(), *d))
            .filter(|&(n, _)| n >= k)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
        let Some((_, dest)) = best else { break };
        let members: Vec<usize> = by_dest[dest].iter().copied().filter(|&i| !taken[i]).collect();
        for &i in &members {
            taken[i] = true;
        }
        groups.push((dest.to_string(), members));
        by_dest.remove(dest);
    }
    let mut out: Vec<Spike> = groups
        .iter()
        .map(|(dest, members)| fleet_record(mode, hour, k, dest, members, &candidates))
        .collect();
    out.extend(candidates.into_iter().zip(taken).filter(|(_, t)| !t).map(|(c, _)| c));
    out
}

fn fleet_record(
    mode: Mode,
    hour: i64,
    k: usize,
    dest: &str,
    members: &[usize],
    candidates: &[Spike],
) -> Spike {
    let m: Vec<&Spike> = members.iter().map(|&i| &candidates[i]).collect();
    let mut src_ips: Vec<String> = m.iter().map(|s| s.src_ip.clone()).collect();
    src_ips.sort();
    let mut resource_ids: Vec<String> =
        m.iter().flat_map(|s| s.resource_ids.iter().cloned()).collect();
    resource_ids.sort();
    resource_ids.dedup();
    let expected = m.iter().filter_map(|s| s.expected).reduce(|a, b| a + b);
    Spike {
        id: spike_id(mode, hour, &fleet_key(dest)),
        detection: m[0].detection.clone(),
        mode,
        hour,
        src_ip: String::new(),
        src_ips,
        source_count: m.len() as u64,
        blocked_count: m.iter().map(|s| s.blocked_count).sum(),
        unique_dest_count: 1,
        dest_ips: vec![dest.to_string()],
        resource_ids,
        episode: None,
        baseline_mean: m.iter().map(|s| s.baseline_mean).sum(),
        // Sources are modelled independently: variances add.
        baseline_stdev: m.iter().map(|s| s.baseline_stdev.powi(2)).sum::<f64>().sqrt(),
        data_points: m.iter().map(|s| s.data_points).sum(),
        threshold: k as f64,
        reason: Some(Reason::Fleet),
        expected,
        p_value: None,
        early: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DETECTION;

    const H: i64 = 1_767_571_200;

    fn cand(hour: i64, src: &str, count: u64, dests: &[&str]) -> Spike {
        Spike {
            id: spike_id(Mode::Adaptive, hour, src),
            detection: DETECTION.into(),
            mode: Mode::Adaptive,
            hour,
            src_ip: src.into(),
            src_ips: Vec::new(),
            source_count: 0,
            blocked_count: count,
            unique_dest_count: dests.len() as u64,
            dest_ips: dests.iter().map(|d| d.to_string()).collect(),
            resource_ids: vec![format!("eni-{src}")],
            episode: None,
            baseline_mean: 1.0,
            baseline_stdev: 1.0,
            data_points: 10,
            threshold: 5.0,
            reason: Some(Reason::Spike),
            expected: Some(1.0),
            p_value: Some(1e-9),
            early: false,
        }
    }

    /// `n` candidates towards `shared` (and one destination of their own), plus two unrelated.
    fn hour_of(hour: i64, n: usize, shared: &str) -> Vec<Spike> {
        let mut v: Vec<Spike> = (0..n)
            .map(|i| {
                let own = format!("198.51.{i}.1");
                cand(hour, &format!("10.0.0.{}", 10 + i), 25 + i as u64, &[shared, &own])
            })
            .collect();
        v.push(cand(hour, "10.9.9.1", 300, &["8.8.4.4"]));
        v.push(cand(hour, "10.9.9.2", 40, &["1.1.1.1", shared]));
        v
    }

    #[test]
    fn fleet_groups_candidates_sharing_a_destination_into_one_record() {
        let mut inc = Incidents::default();
        let out = inc.apply(Mode::Adaptive, H, 100, hour_of(H, 8, "52.1.2.3"));
        // 8 + the unrelated one that also names the shared destination: 9 sources, one record.
        assert_eq!(out.len(), 2, "{out:#?}");
        let f = &out[0];
        assert_eq!((f.src_ip.as_str(), f.reason), ("", Some(Reason::Fleet)));
        assert_eq!(f.src_ips.len(), 9);
        assert!(f.src_ips.is_sorted());
        assert_eq!(f.source_count, 9);
        assert_eq!(f.blocked_count, (25..33).sum::<u64>() + 40);
        assert_eq!(f.dest_ips, vec!["52.1.2.3".to_string()]);
        assert_eq!(f.expected, Some(9.0));
        assert_eq!(f.id, spike_id(Mode::Adaptive, H, "fleet:52.1.2.3"));
        assert_eq!(out[1].src_ip, "10.9.9.1");
        assert_eq!(out[1].id, spike_id(Mode::Adaptive, H, "10.9.9.1"));
        // JSON: src_ips and episode present, no src_ip.
        let json = f.to_json_line();
        assert!(!json.contains("\"src_ip\""), "{json}");
        assert!(json.contains("\"src_ips\":[\"10.0.0.10\","), "{json}");
        assert!(json.contains("\"episode\":{\"first_hour\":\"2026-01-05T00:00:00Z\""), "{json}");
    }

    #[test]
    fn fleet_needs_k_sources_of_the_hours_active_ones() {
        assert_eq!(fleet_min_sources(0), 5);
        assert_eq!(fleet_min_sources(250), 5);
        assert_eq!(fleet_min_sources(251), 6);
        assert_eq!(fleet_min_sources(5000), 100);
        let mut inc = Incidents::default();
        // 3 + 1 sharing a destination: under 5, nothing grouped.
        let out = inc.apply(Mode::Adaptive, H, 100, hour_of(H, 3, "52.1.2.3"));
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|s| s.src_ips.is_empty() && !s.src_ip.is_empty()));
        // 9 sharing among 1,000 active sources: under 20, nothing grouped.
        let out = inc.apply(Mode::Adaptive, H + 3600, 1000, hour_of(H + 3600, 8, "52.1.2.3"));
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn episode_keeps_the_first_id_across_a_one_hour_gap() {
        let mut inc = Incidents::default();
        let src = "10.1.2.3";
        let first_id = spike_id(Mode::Adaptive, H, src);
        let mut seen = Vec::new();
        for (h, c) in [(0, 20), (1, 80), (3, 50), (6, 30)] {
            let hour = H + h * 3600;
            let out = inc.apply(Mode::Adaptive, hour, 100, vec![cand(hour, src, c, &["8.8.8.8"])]);
            assert_eq!(out.len(), 1);
            seen.push((out[0].id.clone(), out[0].episode.clone().unwrap()));
        }
        let ep = |first: i64, last: i64, peak: i64, peak_count: u64, hours: u64| Episode {
            first_hour: H + first * 3600,
            last_hour: H + last * 3600,
            peak_hour: H + peak * 3600,
            peak_count,
            hours,
        };
        assert_eq!(seen[0], (first_id.clone(), ep(0, 0, 0, 20, 1)));
        assert_eq!(seen[1], (first_id.clone(), ep(0, 1, 1, 80, 2)));
        // Hour 2 quiet: the gap of one hour continues the episode.
        assert_eq!(seen[2], (first_id, ep(0, 3, 1, 80, 3)));
        // Hours 4 and 5 quiet: a new episode with its own id.
        assert_eq!(seen[3], (spike_id(Mode::Adaptive, H + 6 * 3600, src), ep(6, 6, 6, 30, 1)));
        assert_eq!(inc.open.len(), 1, "closed episodes are dropped");
    }

    #[test]
    fn fleet_incident_over_three_hours_is_one_episode() {
        let mut inc = Incidents::default();
        let ids: Vec<String> = (0..3)
            .map(|h| {
                let hour = H + h * 3600;
                let out = inc.apply(Mode::Adaptive, hour, 150, hour_of(hour, 40, "52.1.2.3"));
                assert_eq!(out.iter().filter(|s| s.reason == Some(Reason::Fleet)).count(), 1);
                assert_eq!(out[0].episode.as_ref().unwrap().hours, h as u64 + 1);
                out[0].id.clone()
            })
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        // The state round-trips through JSON (it is saved with the detector's).
        let back: Incidents = serde_json::from_slice(&serde_json::to_vec(&inc).unwrap()).unwrap();
        assert_eq!(back, inc);
    }
}
