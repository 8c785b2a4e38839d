//! The checkpoint manifest: the one object whose write commits a checkpoint.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the manifest format written. 2 added the other detections' checkpoint (`taps`,
/// `finalize_taps`, `emitted_findings`); a version-1 manifest (none of them) still opens.
pub const MANIFEST_VERSION: u32 = 2;

/// The oldest manifest version that opens.
const OLDEST_VERSION: u32 = 1;

/// Where a stream's consumer state lives in the store: `consumer/<stream>/`.
pub fn state_prefix(stream: &str) -> String {
    format!("consumer/{stream}/")
}

/// The key of a stream's manifest: `consumer/<stream>/manifest.json`.
pub fn manifest_key(stream: &str) -> String {
    format!("{}manifest.json", state_prefix(stream))
}

/// The prefix of a stream's pending (uncommitted or not yet final) files.
pub fn pending_prefix(stream: &str) -> String {
    format!("{}pending/", state_prefix(stream))
}

/// One shard's committed position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// Sequence number of the last Kinesis record whose flow records are in the committed state;
    /// reading resumes AFTER it. `None`: nothing read yet (start from `--start-position`).
    pub sequence_number: Option<String>,
    /// Largest `start` (unix seconds) seen on the shard: its event-time watermark before lateness.
    pub max_start: Option<u64>,
    /// True once the shard is closed (resharding) and read to its end.
    #[serde(default)]
    pub ended: bool,
}

/// A final aggregate file to write from the committed pending rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalize {
    /// The hour (unix seconds).
    pub hour: i64,
    /// The file name under the hour's `aggregates/date=…/hr=…/` prefix. Deterministic:
    /// `consumer-<stream>.parquet` for an hour's close, `consumer-<stream>-late-<generation>.parquet`
    /// for a correction with records that arrived after the close.
    pub name: String,
    /// True for an hour's close: the detection evaluates the hour once the file is written.
    pub evaluate: bool,
}

/// The consumer's committed state. Written last and atomically: everything it names was written
/// before it, so a reader (or a restart) never sees a half-done checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// The Kinesis stream.
    pub stream: String,
    /// Increases by one with every committed manifest.
    pub generation: u64,
    /// Wall-clock time of the write (unix seconds), for operators.
    pub written_at: i64,
    /// Every hour before this one (unix seconds) is closed: its records are late.
    pub closed_through: Option<i64>,
    /// Shard positions, by shard id.
    pub shards: BTreeMap<String, ShardCheckpoint>,
    /// Pending Parquet file with the partial rows of the open hours (outside `aggregates/`).
    pub open_rows: Option<String>,
    /// Pending Parquet file with the rows of `finalize` (outside `aggregates/`).
    pub final_rows: Option<String>,
    /// Final files still to write from `final_rows` (idempotent: redone after a crash).
    pub finalize: Vec<Finalize>,
    /// Ids of the spikes already emitted, with their hour (recent hours only).
    pub emitted: BTreeMap<String, i64>,
    /// Positions of push sources, opaque to the engine ([`crate::Engine::apply_positioned`]),
    /// committed together with the records they cover. The Firehose endpoint keeps here the ids of
    /// its recently applied requests (`X-Amz-Firehose-Request-Id`) with the wall-clock second each
    /// was applied, so a retry of a committed request is acknowledged without being counted again,
    /// and prunes the ids older than its dedup window. Stored as `requests` (the name readers
    /// know); always empty for the Kinesis consumer; absent in manifests written before it existed.
    #[serde(rename = "requests", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub positions: BTreeMap<String, i64>,
    /// Pending file with the other detections' taps (outside every table): the open hours and
    /// those of `finalize_taps`. `None` when only the blocked spike runs, and in manifests of
    /// version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taps: Option<String>,
    /// Closed hours whose detection tables and findings are still to write from `taps`
    /// (idempotent: redone after a crash).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalize_taps: Vec<i64>,
    /// Ids of the other detections' findings already emitted, with their hour (recent hours
    /// only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub emitted_findings: BTreeMap<String, i64>,
}

impl Manifest {
    /// JSON encoding.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Decodes [`Manifest::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !(OLDEST_VERSION..=MANIFEST_VERSION).contains(&m.version) {
            return Err(format!("unsupported manifest version {}", m.version));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_keys() {
        let mut m =
            Manifest { version: MANIFEST_VERSION, stream: "flows".into(), ..Manifest::default() };
        m.shards.insert(
            "shardId-000000000001".into(),
            ShardCheckpoint {
                sequence_number: Some("4955".into()),
                max_start: Some(7200),
                ended: false,
            },
        );
        m.finalize.push(Finalize {
            hour: 3600,
            name: "consumer-flows.parquet".into(),
            evaluate: true,
        });
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        m.positions.insert("6b0a1ef2-request".into(), 1_767_225_600);
        assert!(String::from_utf8(m.to_json()).unwrap().contains("\"requests\": {"));
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(manifest_key("flows"), "consumer/flows/manifest.json");
        assert_eq!(pending_prefix("flows"), "consumer/flows/pending/");
        assert!(Manifest::from_json(b"{\"version\":9}").is_err());
        m.taps = Some("consumer/flows/pending/00000000000000000003-taps.bin".into());
        m.finalize_taps = vec![3600];
        m.emitted_findings.insert("port_scan-1".into(), 3600);
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert!(Manifest::from_json(b"not json").is_err());
    }

    /// Manifests written before the `requests` field existed still load (with no request ids).
    #[test]
    fn manifest_without_requests_field_loads() {
        let old = br#"{"version":1,"stream":"flows","generation":3,"written_at":0,
            "closed_through":null,"shards":{},"open_rows":null,"final_rows":null,
            "finalize":[],"emitted":{}}"#;
        let m = Manifest::from_json(old).expect("old manifest");
        assert_eq!(m.generation, 3);
        assert!(m.positions.is_empty());
    }

    /// A manifest written before the engine crate existed (a Firehose endpoint's, with request ids
    /// and its virtual shard) loads, and is written back with the same fields and values.
    #[test]
    fn manifest_written_by_the_consumer_crate_loads_unchanged() {
        let old = br#"{
  "version": 1,
  "stream": "flows",
  "generation": 12,
  "written_at": 1767229200,
  "closed_through": 1767225600,
  "shards": {
    "firehose": { "sequence_number": null, "max_start": 1767229100, "ended": false }
  },
  "open_rows": "consumer/flows/pending/00000000000000000012-open.parquet",
  "final_rows": null,
  "finalize": [ { "hour": 1767222000, "name": "consumer-flows.parquet", "evaluate": true } ],
  "emitted": { "spike-1": 1767222000 },
  "requests": { "req-1": 1767229000, "req-2": 1767229001 }
}"#;
        let m = Manifest::from_json(old).expect("manifest of the consumer crate");
        assert_eq!(m.positions.len(), 2);
        assert_eq!(m.positions["req-2"], 1_767_229_001);
        assert_eq!(m.shards["firehose"].max_start, Some(1_767_229_100));
        let again: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        let before: serde_json::Value = serde_json::from_slice(old).unwrap();
        assert_eq!(again, before);
    }
}
