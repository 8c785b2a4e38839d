//! Kinesis: the client every Kinesis caller builds (the consumer's shard readers, the spike
//! output) and [`KinesisSink`], spike records to a Kinesis stream.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use flowspike_detect::Spike;
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_retry::{Class, Policy, Retrier};

/// Most entries of one PutRecords call.
const PUT_RECORDS_MAX: usize = 500;

/// A Kinesis client from the SDK's standard configuration: credential chain, region,
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_KINESIS`, and flowspike's SDK retry settings.
pub async fn client_from_env() -> Client {
    Client::new(&flowspike_retry::sdk_config().await)
}

/// Spikes to a Kinesis stream with PutRecords (partition key: the source address); a partial
/// failure retries only the failed entries, with backoff.
pub struct KinesisSink {
    /// The client.
    pub client: Client,
    /// The output stream.
    pub stream: String,
    /// The runtime to block on (the coordinator is synchronous).
    pub handle: tokio::runtime::Handle,
}

impl KinesisSink {
    async fn put(&self, spikes: &[Spike]) -> Result<(), EngineError> {
        for chunk in spikes.chunks(PUT_RECORDS_MAX) {
            let mut entries = Vec::with_capacity(chunk.len());
            for s in chunk {
                let e = PutRecordsRequestEntry::builder()
                    .data(Blob::new(s.to_json_line().into_bytes()))
                    .partition_key(&s.src_ip)
                    .build()
                    .map_err(|e| EngineError::Output {
                        message: e.to_string(),
                        retryable: false,
                    })?;
                entries.push(e);
            }
            // Forever, like every call of the services: a throttled or failed call is made again,
            // and the entries a partial failure names (`FailedRecordCount`) are sent again alone.
            let mut retrier = Retrier::new("kinesis:PutRecords", Policy::Forever);
            while !entries.is_empty() {
                let resp = self
                    .client
                    .put_records()
                    .stream_name(&self.stream)
                    .set_records(Some(entries.clone()))
                    .send()
                    .await;
                let (failed, class, why) = match resp {
                    Ok(out) => {
                        let mut class = Class::Transient;
                        let mut why = String::new();
                        let failed: Vec<PutRecordsRequestEntry> = out
                            .records()
                            .iter()
                            .zip(entries.iter())
                            .filter(|(r, _)| r.error_code().is_some())
                            .map(|(r, e)| {
                                let code = r.error_code().unwrap_or_default();
                                if flowspike_retry::is_throttling_code(code) {
                                    class = Class::Throttled;
                                }
                                why = format!("{code}: {}", r.error_message().unwrap_or_default());
                                e.clone()
                            })
                            .collect();
                        (failed, class, why)
                    }
                    Err(e) => {
                        let class = flowspike_retry::classify(&e);
                        (entries.clone(), class, flowspike_retry::describe(&e))
                    }
                };
                if failed.is_empty() {
                    retrier.succeeded();
                    break;
                }
                let err = EngineError::Output {
                    message: format!(
                        "PutRecords to {}: {} of {} entries failed: {why}",
                        self.stream,
                        failed.len(),
                        entries.len()
                    ),
                    retryable: class.is_retryable(),
                };
                match retrier.failed(class, &err) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(err),
                }
                entries = failed;
            }
        }
        Ok(())
    }
}

impl SpikeSink for KinesisSink {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        self.handle.block_on(self.put(spikes))
    }
}
