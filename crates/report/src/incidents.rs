//! Spike records grouped into incidents, the unit the report lists.
//!
//! An incident is the records of one subject (a source, or a fleet incident's shared destination)
//! and one mode whose hours follow each other with at most
//! [`EPISODE_MAX_GAP_HOURS`] quiet hours
//! between them: adaptive mode's episode rule, applied to every mode so that a three-hour burst in
//! window mode is one incident too. An early record (`early: true`) and the close's record of the
//! same hour are one hour of the incident (the close's is kept); the same record read twice (two
//! replays' files) counts once.

use std::collections::{BTreeMap, BTreeSet};

use flowspike_detect::incident::EPISODE_MAX_GAP_HOURS;
use flowspike_detect::{Mode, Spike};

/// The records of one incident, one per hour, hours increasing.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Its records (at least one).
    pub records: Vec<Spike>,
}

impl Incident {
    /// The id of its first record (adaptive mode: the episode's id).
    pub fn id(&self) -> &str {
        &self.records[0].id
    }

    /// The mode that raised it.
    pub fn mode(&self) -> Mode {
        self.records[0].mode
    }

    /// Its first alerted hour.
    pub fn first_hour(&self) -> i64 {
        self.records[0].hour
    }

    /// Its last alerted hour.
    pub fn last_hour(&self) -> i64 {
        self.records[self.records.len() - 1].hour
    }

    /// The record with the largest count (the first of equals).
    pub fn peak(&self) -> &Spike {
        first_max_by_key(&self.records, |r| r.blocked_count)
    }

    /// True for a fleet incident (records with `src_ips`).
    pub fn is_fleet(&self) -> bool {
        !self.records[0].src_ips.is_empty()
    }

    /// The sources: the one source, or every source of the fleet records, sorted.
    pub fn sources(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .records
            .iter()
            .flat_map(|r| std::iter::once(&r.src_ip).chain(&r.src_ips))
            .filter(|s| !s.is_empty())
            .collect();
        set.into_iter().cloned().collect()
    }

    /// What the incident is about: its source, or `fleet → <destination>`.
    pub fn subject_label(&self) -> String {
        match (self.is_fleet(), self.records[0].dest_ips.first()) {
            (true, Some(d)) => format!("fleet → {d}"),
            (true, None) => "fleet".to_string(),
            (false, _) => self.records[0].src_ip.clone(),
        }
    }

    /// Its alerted hours.
    pub fn hours(&self) -> BTreeSet<i64> {
        self.records.iter().map(|r| r.hour).collect()
    }

    /// The destinations its records name, with the number of records (alerted hours) naming
    /// each; most often named first, then by address.
    pub fn destinations(&self) -> Vec<(String, usize)> {
        rank(self.records.iter().flat_map(|r| &r.dest_ips))
    }

    /// The interface ids its records name, ranked like [`Incident::destinations`].
    pub fn interfaces(&self) -> Vec<(String, usize)> {
        rank(self.records.iter().flat_map(|r| &r.resource_ids))
    }
}

/// The first of `items` with the largest `key` (`Iterator::max_by_key` gives the last of equals).
/// `items` is not empty (an incident has at least one record).
pub(crate) fn first_max_by_key<T>(items: &[T], key: impl Fn(&T) -> u64) -> &T {
    let mut best = &items[0];
    for x in &items[1..] {
        if key(x) > key(best) {
            best = x;
        }
    }
    best
}

/// Counts `items` and sorts them by count (descending), then by text.
pub(crate) fn rank<'a>(items: impl Iterator<Item = &'a String>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in items {
        *counts.entry(i.as_str()).or_default() += 1;
    }
    let mut out: Vec<(String, usize)> =
        counts.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// The key of a record's subject: its source, or `fleet:<destination>`.
fn subject_key(s: &Spike) -> String {
    if s.src_ips.is_empty() {
        s.src_ip.clone()
    } else {
        format!("fleet:{}", s.dest_ips.first().map_or("", String::as_str))
    }
}

/// Splits `items` — (subject, hour, record), sorted by subject then hour, one record per
/// subject and hour — into episodes: the runs of one subject whose hours are at most
/// [`EPISODE_MAX_GAP_HOURS`] quiet hours apart. Spike and finding incidents are both made here.
pub(crate) fn episodes<K: PartialEq, T>(
    items: impl IntoIterator<Item = (K, i64, T)>,
) -> Vec<Vec<T>> {
    let reach = (EPISODE_MAX_GAP_HOURS + 1) * 3600;
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut last: Option<(K, i64)> = None;
    for (key, hour, item) in items {
        match (&mut last, out.last_mut()) {
            (Some((k, h)), Some(run)) if *k == key && hour - *h <= reach => {
                run.push(item);
                *h = hour;
            }
            _ => {
                out.push(vec![item]);
                last = Some((key, hour));
            }
        }
    }
    out
}

/// Groups `spikes` (any order) into incidents, newest first: by last hour, then larger peak
/// first, then subject.
pub fn group_incidents(spikes: Vec<Spike>) -> Vec<Incident> {
    // One record per (mode, subject, hour): the close's over an early one, else the last read.
    let mut by_hour: BTreeMap<(&'static str, String, i64), Spike> = BTreeMap::new();
    for s in spikes {
        let key = (s.mode.as_str(), subject_key(&s), s.hour);
        match by_hour.get(&key) {
            Some(kept) if !kept.early && s.early => {}
            _ => {
                by_hour.insert(key, s);
            }
        }
    }
    let runs = episodes(by_hour.into_iter().map(|((mode, key, hour), s)| ((mode, key), hour, s)));
    let mut out: Vec<Incident> = runs.into_iter().map(|records| Incident { records }).collect();
    out.sort_by(|a, b| {
        b.last_hour()
            .cmp(&a.last_hour())
            .then_with(|| b.peak().blocked_count.cmp(&a.peak().blocked_count))
            .then_with(|| a.subject_label().cmp(&b.subject_label()))
    });
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use flowspike_detect::{format_hour, spike_id, DETECTION};

    pub(crate) const H: i64 = 1_767_571_200;

    /// A record of `src` at hour index `h` after `H`, as read from its JSON line.
    pub(crate) fn spike(mode: Mode, h: i64, src: &str, count: u64, dests: &[&str]) -> Spike {
        let hour = H + h * 3600;
        let line = serde_json::json!({
            "id": spike_id(mode, hour, src), "detection": DETECTION, "mode": mode,
            "hour": format_hour(hour), "src_ip": src, "blocked_count": count,
            "unique_dest_count": dests.len(), "dest_ips": dests, "resource_ids": ["eni-1"],
            "baseline_mean": 2.0, "baseline_stdev": 1.0, "data_points": 100, "threshold": 5.0,
        });
        serde_json::from_value(line).unwrap()
    }

    #[test]
    fn records_group_by_subject_and_gap_newest_first() {
        let w = Mode::Window;
        let mut fleet = spike(Mode::Adaptive, 30, "", 90, &["52.1.2.3"]);
        fleet.src_ips = vec!["10.0.0.7".into(), "10.0.0.8".into()];
        let mut early = spike(w, 0, "10.0.0.1", 30, &["198.51.100.1"]);
        early.early = true;
        let spikes = vec![
            spike(w, 4, "10.0.0.1", 12, &["198.51.100.1", "198.51.100.2"]), // 2 quiet hours: new
            spike(w, 1, "10.0.0.1", 50, &["198.51.100.1"]),
            early,
            spike(w, 0, "10.0.0.1", 40, &["198.51.100.1"]),
            spike(w, 0, "10.0.0.1", 40, &["198.51.100.1"]), // read twice
            spike(w, 1, "10.0.0.2", 9, &["203.0.113.5"]),
            fleet,
        ];
        let inc = group_incidents(spikes);
        let summary: Vec<(String, i64, i64, usize)> = inc
            .iter()
            .map(|i| {
                let (f, l) = ((i.first_hour() - H) / 3600, (i.last_hour() - H) / 3600);
                (i.subject_label(), f, l, i.records.len())
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("fleet → 52.1.2.3".to_string(), 30, 30, 1),
                ("10.0.0.1".to_string(), 4, 4, 1),
                ("10.0.0.1".to_string(), 0, 1, 2),
                ("10.0.0.2".to_string(), 1, 1, 1),
            ]
        );
        let burst = &inc[2];
        assert_eq!(
            burst.records[0].blocked_count, 40,
            "the close's record wins over the early one"
        );
        assert_eq!(burst.peak().blocked_count, 50);
        assert_eq!(burst.id(), spike_id(w, H, "10.0.0.1"));
        assert_eq!(burst.destinations(), vec![("198.51.100.1".to_string(), 2)]);
        assert!(inc[0].is_fleet());
        assert_eq!(inc[0].sources(), ["10.0.0.7", "10.0.0.8"]);
        assert_eq!(inc[1].destinations()[0], ("198.51.100.1".to_string(), 1));
    }
}
