//! Kinesis: the client every Kinesis caller builds (the consumer's shard readers, the spike
//! output) and [`KinesisSink`], spike records and findings to a Kinesis stream.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use flowspike_detect::Spike;
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_findings::{Encoder, Finding};
use flowspike_retry::{Class, Policy};

use crate::deliver::{deliver, refused_in_order, Answer};

/// Most entries of one PutRecords call.
const PUT_RECORDS_MAX: usize = 500;

/// A Kinesis client from the SDK's standard configuration: credential chain, region,
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_KINESIS`, and flowspike's SDK retry settings.
pub async fn client_from_env() -> Client {
    Client::new(&flowspike_retry::sdk_config().await)
}

/// The partition key of a record: its source address, or for a fleet record (which has none:
/// Kinesis refuses an empty key) its id.
pub fn partition_key(s: &Spike) -> &str {
    if s.src_ip.is_empty() {
        &s.id
    } else {
        &s.src_ip
    }
}

/// The partition key of a finding: its source address like a spike's, so that a source's spikes
/// and findings land on one shard in order; its id if it has none (Kinesis refuses an empty key).
pub fn finding_partition_key(f: &Finding) -> &str {
    if f.src_ip.is_empty() {
        &f.id
    } else {
        &f.src_ip
    }
}

/// One PutRecords entry: `data` under partition key `key`.
fn entry(data: String, key: &str) -> Result<PutRecordsRequestEntry, EngineError> {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(data.into_bytes()))
        .partition_key(key)
        .build()
        .map_err(|e| EngineError::Output { message: e.to_string(), retryable: false })
}

/// Spikes and findings to a Kinesis stream with PutRecords, one record each in the encoder's
/// format (partition key: [`partition_key`], [`finding_partition_key`]); a partial failure
/// retries only the failed entries, with backoff.
pub struct KinesisSink {
    /// The client.
    pub client: Client,
    /// The output stream.
    pub stream: String,
    /// The format of the records.
    pub encoder: Encoder,
    /// The runtime to block on (the coordinator is synchronous).
    pub handle: tokio::runtime::Handle,
}

impl KinesisSink {
    /// Sends `entries` in calls of at most [`PUT_RECORDS_MAX`].
    async fn put(&self, entries: Vec<PutRecordsRequestEntry>) -> Result<(), EngineError> {
        for chunk in entries.chunks(PUT_RECORDS_MAX) {
            // Forever, like every call of the services: a throttled or failed call is made again,
            // and the entries a partial failure names (`FailedRecordCount`) are sent again alone;
            // Kinesis refuses entries only for throttling or internal failures, so any code is
            // retried.
            deliver(
                "kinesis:PutRecords",
                Policy::Forever,
                &self.stream,
                Class::Transient,
                chunk.to_vec(),
                |batch| async move {
                    let resp = self
                        .client
                        .put_records()
                        .stream_name(&self.stream)
                        .set_records(Some(batch.clone()))
                        .send()
                        .await;
                    Answer::of(resp, |out| {
                        let results =
                            out.records().iter().map(|r| (r.error_code(), r.error_message()));
                        refused_in_order(batch, results)
                    })
                },
            )
            .await?;
        }
        Ok(())
    }
}

impl SpikeSink for KinesisSink {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        let entries = spikes
            .iter()
            .map(|s| entry(self.encoder.to_json_line(s), partition_key(s)))
            .collect::<Result<Vec<_>, _>>()?;
        self.handle.block_on(self.put(entries))
    }

    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
        let entries = findings
            .iter()
            .map(|f| entry(self.encoder.finding_line(f), finding_partition_key(f)))
            .collect::<Result<Vec<_>, _>>()?;
        self.handle.block_on(self.put(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a fleet record has no `src_ip`, and Kinesis refuses an empty partition key, so
    /// PutRecords failed on the first fleet incident; its id is the key instead.
    #[test]
    fn fleet_records_have_a_partition_key() {
        let mut s: Spike = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "detection": "blocked_outbound_spike", "mode": "adaptive",
            "hour": "2026-03-05T14:00:00Z", "src_ips": ["10.0.0.1", "10.0.0.2"],
            "source_count": 2, "blocked_count": 57, "unique_dest_count": 1,
            "dest_ips": ["8.8.8.8"], "resource_ids": [], "baseline_mean": 3.2,
            "baseline_stdev": 1.4, "data_points": 212, "threshold": 7.4
        }))
        .unwrap();
        assert_eq!(partition_key(&s), "0123456789abcdef");
        s.src_ip = "10.0.0.9".into();
        assert_eq!(partition_key(&s), "10.0.0.9");
    }

    #[test]
    fn a_finding_is_keyed_by_its_source_like_a_spike() {
        let mut f: Finding = serde_json::from_value(serde_json::json!({
            "id": "00112233445566ff", "detection": "port_sweep", "hour": "2026-03-05T14:00:00Z",
            "src_ip": "10.0.0.7", "summary": "sweep", "severity": "high", "dst_port": 445,
            "protocol": 6, "count": 300, "threshold": 250.0, "evidence": {}
        }))
        .unwrap();
        assert_eq!(finding_partition_key(&f), "10.0.0.7");
        let e = entry(Encoder::default().finding_line(&f), finding_partition_key(&f)).unwrap();
        assert_eq!(e.partition_key(), Some("10.0.0.7"));
        assert_eq!(e.data().as_ref(), f.to_json_line().as_bytes());
        f.src_ip.clear();
        assert_eq!(finding_partition_key(&f), "00112233445566ff");
    }
}
