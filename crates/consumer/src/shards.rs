//! The shard table: which shards the stream has, which are being read, and when a child shard of a
//! split or a merge may start.
//!
//! The rule (as the KCL's): a shard is read only after every parent it has (one after a split, two
//! after a merge) was read to its end **and** that end is committed in the manifest. A shard whose
//! end is committed is finished: it is never read again, in this run or after a restart. Parents
//! that are no longer listed (past the stream's retention) do not hold their children back.
//!
//! Nothing here does I/O; the single task (`run.rs`) feeds it listings, `ChildShards` and
//! shard ends, and asks it which readers to start.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowspike_engine::ShardCheckpoint;

use crate::kinesis::{ShardInfo, StartAt};
use crate::services::StartPosition;

/// Run-time state of one shard (not checkpointed; the engine holds the positions).
#[derive(Debug)]
pub(crate) struct ShardState {
    /// Parent shards (none, one after a split, two after a merge).
    pub parents: Vec<String>,
    /// A reader was started in this run.
    pub started: bool,
    /// The shard was read to its end (in this run, or in an earlier one per the manifest).
    pub ended: bool,
    /// The reader is at the tip of the shard.
    pub caught_up: bool,
    /// Last time the shard delivered a record (or its reader started).
    pub last_data: Instant,
    /// The end is committed and was announced in the log.
    pub announced: bool,
}

impl ShardState {
    fn new(parents: Vec<String>) -> ShardState {
        ShardState {
            parents,
            started: false,
            ended: false,
            caught_up: false,
            last_data: Instant::now(),
            announced: false,
        }
    }

    /// Caught up and without records for `d`.
    pub fn idle_for(&self, d: Duration) -> bool {
        self.caught_up && self.last_data.elapsed() >= d
    }
}

/// Every known shard of the stream, by id.
#[derive(Debug, Default)]
pub(crate) struct ShardTable {
    shards: BTreeMap<String, ShardState>,
}

impl ShardTable {
    /// Adds the shards of a listing (ListShards, or the `ChildShards` of a shard's end) that are not
    /// known yet; returns how many were new.
    pub fn merge(&mut self, list: impl IntoIterator<Item = ShardInfo>) -> usize {
        let mut new = 0;
        for info in list {
            self.shards.entry(info.id).or_insert_with(|| {
                new += 1;
                ShardState::new(info.parents)
            });
        }
        new
    }

    /// The shard `id`.
    pub fn get(&self, id: &str) -> Option<&ShardState> {
        self.shards.get(id)
    }

    /// The shard `id`, mutable.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut ShardState> {
        self.shards.get_mut(id)
    }

    /// Marks as ended the shards whose end the manifest has committed (finished in an earlier run)
    /// and returns the shards that may start now, with their start positions: not started, not
    /// ended, and every listed parent's end committed in `committed`. Marks them started.
    ///
    /// A shard with a committed position resumes after it. A shard without one starts at
    /// `--start-position`, except a child of a parent this consumer has read, which starts at
    /// TRIM_HORIZON (everything in it follows what its parents held); with `at-timestamp` every
    /// shard without a position starts at that time.
    pub fn start_ready(
        &mut self,
        committed: &BTreeMap<String, ShardCheckpoint>,
        start: StartPosition,
    ) -> Vec<(String, StartAt)> {
        let ids: Vec<String> = self.shards.keys().cloned().collect();
        let mut out = Vec::new();
        for id in ids {
            if committed.get(&id).is_some_and(|c| c.ended) {
                if let Some(s) = self.shards.get_mut(&id) {
                    s.ended = true;
                }
                continue;
            }
            let Some(s) = self.shards.get(&id) else { continue };
            if s.started || s.ended {
                continue;
            }
            let parents_done = s
                .parents
                .iter()
                .all(|p| !self.shards.contains_key(p) || committed.get(p).is_some_and(|c| c.ended));
            if !parents_done {
                continue;
            }
            let at = match committed.get(&id).and_then(|c| c.sequence_number.clone()) {
                Some(seq) => StartAt::After(seq),
                None => match start {
                    StartPosition::AtTimestamp(t) => StartAt::AtTimestamp(t),
                    _ if s.parents.iter().any(|p| committed.contains_key(p)) => {
                        StartAt::TrimHorizon
                    }
                    other => other.into(),
                },
            };
            if let Some(s) = self.shards.get_mut(&id) {
                s.started = true;
                s.last_data = Instant::now();
            }
            out.push((id, at));
        }
        out
    }

    /// Shards that ended in this run and whose end `committed` now holds, not yet announced;
    /// marks them announced.
    pub fn newly_finished(&mut self, committed: &BTreeMap<String, ShardCheckpoint>) -> Vec<String> {
        let mut out = Vec::new();
        for (id, s) in &mut self.shards {
            if s.ended && s.started && !s.announced && committed.get(id).is_some_and(|c| c.ended) {
                s.announced = true;
                out.push(id.clone());
            }
        }
        out
    }

    /// The inputs of [`flowspike_engine::global_watermark`]: `(max_start, idle)` of every shard being read,
    /// and of every shard waiting only for its parents' end to be committed (then with the
    /// largest `max_start` of its parents and never idle), so that the hours a child is about to
    /// deliver do not close in the short gap between its parents' end and its own start.
    pub fn watermark_inputs(
        &self,
        max_start: impl Fn(&str) -> Option<u64>,
        idle_after: Duration,
    ) -> Vec<(Option<u64>, bool)> {
        let mut out = Vec::new();
        for (id, s) in &self.shards {
            if s.ended {
                continue;
            }
            if s.started {
                out.push((max_start(id), s.idle_for(idle_after)));
                continue;
            }
            let waiting = !s.parents.is_empty()
                && s.parents.iter().all(|p| self.shards.get(p).is_none_or(|ps| ps.ended));
            if waiting {
                if let Some(m) = s.parents.iter().filter_map(|p| max_start(p)).max() {
                    out.push((Some(m), false));
                }
            }
        }
        out
    }

    /// True when every shard has ended or has been idle for `d` (shards waiting for their
    /// parents are neither).
    pub fn all_idle(&self, d: Duration) -> bool {
        self.shards.values().all(|s| s.ended || (s.started && s.idle_for(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, parents: &[&str]) -> ShardInfo {
        ShardInfo { id: id.into(), parents: parents.iter().map(|p| p.to_string()).collect() }
    }

    fn cp(seq: Option<&str>, ended: bool) -> ShardCheckpoint {
        ShardCheckpoint { sequence_number: seq.map(str::to_owned), max_start: Some(7200), ended }
    }

    fn ids(v: &[(String, StartAt)]) -> Vec<&str> {
        v.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// A split (0 → 1, 2) then a merge (1 + 2 → 3).
    fn table() -> ShardTable {
        let mut t = ShardTable::default();
        let n = t.merge([
            info("s0", &[]),
            info("s1", &["s0"]),
            info("s2", &["s0"]),
            info("s3", &["s1", "s2"]),
        ]);
        assert_eq!(n, 4);
        t
    }

    #[test]
    fn children_wait_for_committed_parent_ends() {
        let mut t = table();
        let mut committed = BTreeMap::new();
        let got = t.start_ready(&committed, StartPosition::TrimHorizon);
        assert_eq!(got, vec![("s0".to_string(), StartAt::TrimHorizon)]);
        // Started once only.
        assert!(t.start_ready(&committed, StartPosition::TrimHorizon).is_empty());

        // The parent ended in memory but its end is not committed yet: children wait.
        t.get_mut("s0").unwrap().ended = true;
        committed.insert("s0".to_string(), cp(Some("9"), false));
        assert!(t.start_ready(&committed, StartPosition::TrimHorizon).is_empty());

        committed.insert("s0".to_string(), cp(Some("9"), true));
        let got = t.start_ready(&committed, StartPosition::Latest);
        assert_eq!(ids(&got), ["s1", "s2"]);
        // Children of a parent this consumer read start at their beginning, even with `latest`.
        assert!(got.iter().all(|(_, at)| *at == StartAt::TrimHorizon));
        assert_eq!(t.newly_finished(&committed), ["s0"]);
        assert!(t.newly_finished(&committed).is_empty());

        // The merge child needs both parents.
        committed.insert("s1".to_string(), cp(Some("11"), true));
        t.get_mut("s1").unwrap().ended = true;
        assert!(t.start_ready(&committed, StartPosition::TrimHorizon).is_empty());
        committed.insert("s2".to_string(), cp(Some("12"), true));
        t.get_mut("s2").unwrap().ended = true;
        assert_eq!(ids(&t.start_ready(&committed, StartPosition::TrimHorizon)), ["s3"]);
    }

    #[test]
    fn restart_skips_finished_shards_and_resumes_positions() {
        let mut t = table();
        let mut committed = BTreeMap::new();
        committed.insert("s0".to_string(), cp(Some("9"), true));
        committed.insert("s1".to_string(), cp(Some("10"), false));
        let got = t.start_ready(&committed, StartPosition::TrimHorizon);
        assert_eq!(
            got,
            vec![
                ("s1".to_string(), StartAt::After("10".into())),
                ("s2".to_string(), StartAt::TrimHorizon)
            ]
        );
        assert!(t.get("s0").unwrap().ended, "a finished shard is not read again");
        assert!(!t.get("s0").unwrap().started);
        // A finished shard of an earlier run is not announced again.
        assert!(t.newly_finished(&committed).is_empty());
    }

    #[test]
    fn start_positions_without_checkpoint() {
        let committed = BTreeMap::new();
        for (pos, want) in [
            (StartPosition::TrimHorizon, StartAt::TrimHorizon),
            (StartPosition::Latest, StartAt::Latest),
            (StartPosition::AtTimestamp(77), StartAt::AtTimestamp(77)),
        ] {
            let mut t = ShardTable::default();
            t.merge([info("a", &[])]);
            assert_eq!(t.start_ready(&committed, pos), vec![("a".to_string(), want)]);
        }
        // A parent past retention (not listed) does not hold its child back.
        let mut t = ShardTable::default();
        t.merge([info("child", &["expired"])]);
        assert_eq!(
            t.start_ready(&committed, StartPosition::AtTimestamp(5)),
            vec![("child".to_string(), StartAt::AtTimestamp(5))]
        );
    }

    #[test]
    fn merge_keeps_the_first_description() {
        let mut t = ShardTable::default();
        assert_eq!(t.merge([info("c", &["a", "b"])]), 1);
        assert_eq!(t.merge([info("c", &["a"]), info("d", &[])]), 1);
        assert_eq!(t.get("c").unwrap().parents, ["a", "b"]);
    }

    #[test]
    fn waiting_children_hold_the_watermark() {
        let mut t = table();
        let committed = BTreeMap::new();
        t.start_ready(&committed, StartPosition::TrimHorizon);
        let ms = |id: &str| (id == "s0").then_some(9000u64);
        assert_eq!(t.watermark_inputs(ms, Duration::from_secs(60)), vec![(Some(9000), false)]);
        // s0 ended, its children not started yet: they count with their parent's event time.
        t.get_mut("s0").unwrap().ended = true;
        assert_eq!(
            t.watermark_inputs(ms, Duration::from_secs(60)),
            vec![(Some(9000), false), (Some(9000), false)]
        );
        assert!(!t.all_idle(Duration::ZERO));
    }
}
