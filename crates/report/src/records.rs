//! The records a report lists, read from JSON Lines: spike records ([`Spike`]) and the other
//! detections' findings ([`Finding`]), from files or from a state's `spikes/` and `findings/`.
//!
//! A streaming service writing to standard output puts both kinds in one stream (its
//! `WriterSink`), so each reader skips the other kind's lines without calling them bad: one saved
//! file can be given as `--spikes` and as `--findings`.

use serde::de::DeserializeOwned;

use flowspike_detect::Spike;
use flowspike_findings::Finding;
use flowspike_history::Store;

use crate::ReportError;

/// Key prefix of the spike records a replay into a local state writes by default
/// (`<state>/spikes/replay-<time>.jsonl`).
pub const SPIKES_PREFIX: &str = "spikes/";

/// Key prefix of the findings a replay into a local state writes by default
/// (`<state>/findings/replay-<time>.jsonl`, `replay --findings-out`).
pub const FINDINGS_PREFIX: &str = "findings/";

/// Records of one kind found in a state.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordFiles<T> {
    /// Every record read, in file order.
    pub records: Vec<T>,
    /// The keys read (`<prefix>**/*.jsonl`, sorted).
    pub files: Vec<String>,
    /// Lines that were no record of either kind (skipped).
    pub bad_lines: usize,
}

impl<T> Default for RecordFiles<T> {
    fn default() -> Self {
        RecordFiles { records: Vec::new(), files: Vec::new(), bad_lines: 0 }
    }
}

/// The spike records of a state ([`read_state_spikes`]).
pub type SpikeFiles = RecordFiles<Spike>;

/// The findings of a state ([`read_state_findings`]).
pub type FindingFiles = RecordFiles<Finding>;

/// Reads the lines of `bytes` that are a `T`; blank lines and lines of the other kind
/// (`is_other`) are skipped, the rest counted as bad.
fn read_lines<T: DeserializeOwned>(
    bytes: &[u8],
    is_other: impl Fn(&[u8]) -> bool,
) -> (Vec<T>, usize) {
    let (mut records, mut bad) = (Vec::new(), 0);
    for line in bytes.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<T>(line) {
            Ok(r) => records.push(r),
            Err(_) if is_other(line) => {}
            Err(_) => bad += 1,
        }
    }
    (records, bad)
}

/// Reads spike records from JSON Lines (what `replay --spikes`, `demo` and the services write);
/// blank lines and findings are skipped. Returns the records and the number of lines that are
/// neither (skipped: a report shows what it can).
pub fn read_spike_lines(bytes: &[u8]) -> (Vec<Spike>, usize) {
    read_lines(bytes, |l| serde_json::from_slice::<Finding>(l).is_ok())
}

/// Reads findings in flowspike's native JSON from JSON Lines (`replay --findings-out`, `demo`,
/// the services' sinks); blank lines and spike records are skipped. Returns the findings and the
/// number of lines that are neither (OCSF or ASFF lines among them).
pub fn read_finding_lines(bytes: &[u8]) -> (Vec<Finding>, usize) {
    read_lines(bytes, |l| serde_json::from_slice::<Spike>(l).is_ok())
}

/// Reads every `*.jsonl` under `prefix` of `store` (at any depth) with `parse`.
fn read_state<T>(
    store: &dyn Store,
    prefix: &str,
    parse: fn(&[u8]) -> (Vec<T>, usize),
) -> Result<RecordFiles<T>, ReportError> {
    let mut out = RecordFiles::default();
    for key in store.list(prefix)? {
        if !key.ends_with(".jsonl") {
            continue;
        }
        let (records, bad) = parse(&store.get(&key)?);
        out.records.extend(records);
        out.bad_lines += bad;
        out.files.push(key);
    }
    Ok(out)
}

/// Reads every `spikes/*.jsonl` of `store` ([`read_spike_lines`]).
pub fn read_state_spikes(store: &dyn Store) -> Result<SpikeFiles, ReportError> {
    read_state(store, SPIKES_PREFIX, read_spike_lines)
}

/// Reads every `*.jsonl` under `findings/` of `store` ([`read_finding_lines`]).
pub fn read_state_findings(store: &dyn Store) -> Result<FindingFiles, ReportError> {
    read_state(store, FINDINGS_PREFIX, read_finding_lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding_incidents::tests::finding;
    use crate::incidents::tests::spike;
    use flowspike_detect::Mode;

    #[test]
    fn state_spikes_are_the_jsonl_files_under_spikes() {
        let dir = tempfile::tempdir().unwrap();
        let store = flowspike_history::LocalStore::new(dir.path());
        assert_eq!(read_state_spikes(&store).unwrap(), SpikeFiles::default(), "no spikes/ yet");
        let a = spike(Mode::Window, 0, "10.0.0.1", 30, &[]);
        let b = spike(Mode::Window, 5, "10.0.0.2", 30, &[]);
        store.put("spikes/replay-1.jsonl", (a.to_json_line() + "\n").into_bytes()).unwrap();
        store.put("spikes/replay-2.jsonl", (b.to_json_line() + "\nbad\n").into_bytes()).unwrap();
        store.put("spikes/notes.txt", b"not records".to_vec()).unwrap();
        let got = read_state_spikes(&store).unwrap();
        assert_eq!(got.records, vec![a, b]);
        assert_eq!(got.files, ["spikes/replay-1.jsonl", "spikes/replay-2.jsonl"]);
        assert_eq!(got.bad_lines, 1);
    }

    #[test]
    fn state_findings_are_every_jsonl_under_findings() {
        let dir = tempfile::tempdir().unwrap();
        let store = flowspike_history::LocalStore::new(dir.path());
        assert_eq!(read_state_findings(&store).unwrap(), FindingFiles::default());
        let a = finding("port_scan", 0, "10.0.0.1", "10.0.9.9", 600);
        let b = finding("outbound_volume", 3, "10.0.0.2", "", 9_000_000);
        store.put("findings/replay-1.jsonl", (a.to_json_line() + "\n").into_bytes()).unwrap();
        let nested = format!("{}\n{{\"ocsf\":1}}\n", b.to_json_line());
        store.put("findings/stream/2026/out.jsonl", nested.into_bytes()).unwrap();
        store.put("findings/readme.md", b"not records".to_vec()).unwrap();
        store.put("spikes/replay-1.jsonl", (a.to_json_line() + "\n").into_bytes()).unwrap();
        let got = read_state_findings(&store).unwrap();
        assert_eq!(got.records, vec![a, b]);
        assert_eq!(got.files, ["findings/replay-1.jsonl", "findings/stream/2026/out.jsonl"]);
        assert_eq!(got.bad_lines, 1, "the OCSF line");
    }

    #[test]
    fn lines_round_trip_and_a_mixed_stream_splits_by_kind() {
        let s = spike(Mode::Adaptive, 0, "10.0.0.1", 30, &["198.51.100.1"]);
        let f = finding("threat_list", 0, "10.0.0.1", "tor-exits", 3);
        let text = format!(
            "{}\n\nnot json\n{{\"id\":1}}\n{}\n{}\n",
            s.to_json_line(),
            f.to_json_line(),
            s.to_json_line()
        );
        let (spikes, bad) = read_spike_lines(text.as_bytes());
        assert_eq!((spikes, bad), (vec![s.clone(), s], 2), "the finding is skipped, not bad");
        let (findings, bad) = read_finding_lines(text.as_bytes());
        assert_eq!((findings, bad), (vec![f], 2), "the spikes are skipped, not bad");
    }
}
