//! Kinesis: the client every Kinesis caller builds (the consumer's shard readers, the spike
//! output) and [`KinesisSink`], spike records to a Kinesis stream.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use flowspike_detect::Spike;
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_findings::Encoder;
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

/// Spikes to a Kinesis stream with PutRecords (partition key: [`partition_key`]), one record per
/// spike in the encoder's format; a partial failure retries only the failed entries, with backoff.
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
    async fn put(&self, spikes: &[Spike]) -> Result<(), EngineError> {
        for chunk in spikes.chunks(PUT_RECORDS_MAX) {
            let mut entries = Vec::with_capacity(chunk.len());
            for s in chunk {
                let e = PutRecordsRequestEntry::builder()
                    .data(Blob::new(self.encoder.to_json_line(s).into_bytes()))
                    .partition_key(partition_key(s))
                    .build()
                    .map_err(|e| EngineError::Output {
                        message: e.to_string(),
                        retryable: false,
                    })?;
                entries.push(e);
            }
            // Forever, like every call of the services: a throttled or failed call is made again,
            // and the entries a partial failure names (`FailedRecordCount`) are sent again alone;
            // Kinesis refuses entries only for throttling or internal failures, so any code is
            // retried.
            deliver(
                "kinesis:PutRecords",
                Policy::Forever,
                &self.stream,
                Class::Transient,
                entries,
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
        self.handle.block_on(self.put(spikes))
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
}
