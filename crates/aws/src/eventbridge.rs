//! Spike records to an Amazon EventBridge event bus ([`EventBridgeSink`], PutEvents).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use flowspike_detect::Spike;
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_findings::Encoder;
use flowspike_retry::{Class, Policy};

use crate::deliver::{deliver, refused_in_order, Answer};

/// Most entries of one PutEvents call.
pub const PUT_EVENTS_MAX: usize = 10;
/// Most bytes of one PutEvents call, counted as EventBridge does: the UTF-8 bytes of each
/// entry's `Source`, `DetailType` and `Detail` (and `Resources`, `Time`: flowspike sets none).
pub const PUT_EVENTS_MAX_BYTES: usize = 256 * 1024;
/// The `Source` of every event.
pub const SOURCE: &str = "flowspike";
/// The `DetailType` of every event.
pub const DETAIL_TYPE: &str = "Blocked Outbound Spike";
/// Destinations kept in a record too large for one event (the count stays in
/// `unique_dest_count`).
const TRIMMED_DESTS: usize = 100;

/// An EventBridge client from the SDK's standard configuration (`AWS_ENDPOINT_URL_EVENTBRIDGE`
/// too) and flowspike's SDK retry settings.
pub async fn client_from_env() -> Client {
    Client::new(&flowspike_retry::sdk_config().await)
}

/// The size EventBridge counts for an event whose `Detail` is `detail`.
pub fn entry_size(detail: &str) -> usize {
    SOURCE.len() + DETAIL_TYPE.len() + detail.len()
}

/// The `Detail` of `s`: its record in the encoder's format; a record over the size of a whole
/// call (thousands of destinations) keeps only its first [`TRIMMED_DESTS`] destinations.
pub fn detail(encoder: &Encoder, s: &Spike) -> String {
    let d = encoder.to_json_line(s);
    if entry_size(&d) <= PUT_EVENTS_MAX_BYTES {
        return d;
    }
    let mut t = s.clone();
    t.dest_ips.truncate(TRIMMED_DESTS);
    tracing::warn!(id = %s.id, dests = s.dest_ips.len(), "spike record too large for one event; destinations trimmed");
    encoder.to_json_line(&t)
}

/// The details of `spikes` in calls of at most [`PUT_EVENTS_MAX`] entries and
/// [`PUT_EVENTS_MAX_BYTES`] bytes.
pub fn batches(details: Vec<String>) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for d in details {
        let size = entry_size(&d);
        match out.last_mut() {
            Some(b) if b.len() < PUT_EVENTS_MAX && bytes + size <= PUT_EVENTS_MAX_BYTES => {
                bytes += size;
                b.push(d);
            }
            _ => {
                bytes = size;
                out.push(vec![d]);
            }
        }
    }
    out
}

/// Spikes to an EventBridge bus with PutEvents: `Source` [`SOURCE`], `DetailType`
/// [`DETAIL_TYPE`], `Detail` the record in the encoder's format.
///
/// A failed or throttled call is made again (forever, with backoff); entries the answer refuses
/// are sent again alone when their error is throttling or a transient fault, and stop the process
/// otherwise (a missing bus, a malformed detail). EventBridge has no idempotency key: a record sent
/// again after a restart is a second event (at least once; rules can dedupe on `detail.id`).
pub struct EventBridgeSink {
    /// The client.
    pub client: Client,
    /// The event bus name or ARN.
    pub bus: String,
    /// The format of the `Detail`.
    pub encoder: Encoder,
    /// How long a failing call is retried ([`Policy::Forever`] in the services).
    pub policy: Policy,
    /// The runtime to block on (the callers are synchronous).
    pub handle: tokio::runtime::Handle,
}

impl EventBridgeSink {
    async fn put(&self, spikes: &[Spike]) -> Result<(), EngineError> {
        let details = spikes.iter().map(|s| detail(&self.encoder, s)).collect();
        for batch in batches(details) {
            let entries: Vec<PutEventsRequestEntry> = batch
                .into_iter()
                .map(|d| {
                    PutEventsRequestEntry::builder()
                        .source(SOURCE)
                        .detail_type(DETAIL_TYPE)
                        .detail(d)
                        .event_bus_name(&self.bus)
                        .build()
                })
                .collect();
            deliver(
                "events:PutEvents",
                self.policy,
                &self.bus,
                Class::Fatal,
                entries,
                |batch| async move {
                    let resp =
                        self.client.put_events().set_entries(Some(batch.clone())).send().await;
                    Answer::of(resp, |out| {
                        let results =
                            out.entries().iter().map(|r| (r.error_code(), r.error_message()));
                        refused_in_order(batch, results)
                    })
                },
            )
            .await?;
        }
        Ok(())
    }
}

impl SpikeSink for EventBridgeSink {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        self.handle.block_on(self.put(spikes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_entry_and_byte_limits() {
        let small: Vec<String> = (0..25).map(|i| format!("{{\"n\":{i}}}")).collect();
        let b = batches(small);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
        // 100 KB details: two fit in 256 KB, a third does not.
        let big: Vec<String> = (0..5).map(|_| "x".repeat(100 * 1024)).collect();
        let b = batches(big);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
        for batch in &b {
            assert!(batch.iter().map(|d| entry_size(d)).sum::<usize>() <= PUT_EVENTS_MAX_BYTES);
        }
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn an_oversized_record_is_trimmed_to_fit() {
        let mut s: Spike = serde_json::from_value(serde_json::json!({
            "id": "0123456789abcdef", "detection": "blocked_outbound_spike", "mode": "window",
            "hour": "2026-03-05T14:00:00Z", "src_ip": "10.0.0.1", "blocked_count": 20000,
            "unique_dest_count": 20000, "dest_ips": [], "resource_ids": [],
            "baseline_mean": 3.2, "baseline_stdev": 1.4, "data_points": 212, "threshold": 7.4
        }))
        .unwrap();
        s.dest_ips = (0..20000).map(|i| format!("2001:db8::{i:x}")).collect();
        let d = detail(&Encoder::default(), &s);
        assert!(entry_size(&d) <= PUT_EVENTS_MAX_BYTES);
        let back: Spike = serde_json::from_str(&d).unwrap();
        assert_eq!(back.dest_ips.len(), TRIMMED_DESTS);
        assert_eq!(back.unique_dest_count, 20000);
    }
}
