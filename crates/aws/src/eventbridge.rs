//! Spike records and the other detections' findings to an Amazon EventBridge event bus
//! ([`EventBridgeSink`], PutEvents).

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_eventbridge::Client;
use flowspike_detect::Spike;
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_findings::{Encoder, Finding};
use flowspike_retry::{Class, Policy};

use crate::deliver::{deliver, refused_in_order, Answer};

/// Most entries of one PutEvents call.
pub const PUT_EVENTS_MAX: usize = 10;
/// Most bytes of one PutEvents call, counted as EventBridge does: the UTF-8 bytes of each
/// entry's `Source`, `DetailType` and `Detail` (and `Resources`, `Time`: flowspike sets none).
pub const PUT_EVENTS_MAX_BYTES: usize = 256 * 1024;
/// The `Source` of every event.
pub const SOURCE: &str = "flowspike";
/// The `DetailType` of a spike's event.
pub const DETAIL_TYPE: &str = "Blocked Outbound Spike";
/// The `DetailType` of a finding's event (port scan, port sweep, outbound volume, threat list:
/// the detection is in the detail), so that a rule tells findings from spikes.
pub const FINDING_DETAIL_TYPE: &str = "Flowspike Finding";
/// Destinations kept in a record too large for one event (the count stays in
/// `unique_dest_count`).
const TRIMMED_DESTS: usize = 100;

/// An EventBridge client from the SDK's standard configuration (`AWS_ENDPOINT_URL_EVENTBRIDGE`
/// too) and flowspike's SDK retry settings.
pub async fn client_from_env() -> Client {
    Client::new(&flowspike_retry::sdk_config().await)
}

/// One event: its `DetailType` ([`DETAIL_TYPE`] or [`FINDING_DETAIL_TYPE`]) and `Detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `DetailType`.
    pub detail_type: &'static str,
    /// The `Detail`: a record in the encoder's format.
    pub detail: String,
}

impl Event {
    /// The size EventBridge counts for this event.
    pub fn size(&self) -> usize {
        SOURCE.len() + self.detail_type.len() + self.detail.len()
    }
}

/// The event of `s`: its record in the encoder's format; a record over the size of a whole call
/// (thousands of destinations) keeps only its first [`TRIMMED_DESTS`] destinations.
pub fn spike_event(encoder: &Encoder, s: &Spike) -> Event {
    let e = Event { detail_type: DETAIL_TYPE, detail: encoder.to_json_line(s) };
    if e.size() <= PUT_EVENTS_MAX_BYTES {
        return e;
    }
    let mut t = s.clone();
    t.dest_ips.truncate(TRIMMED_DESTS);
    tracing::warn!(id = %s.id, dests = s.dest_ips.len(), "spike record too large for one event; destinations trimmed");
    Event { detail: encoder.to_json_line(&t), ..e }
}

/// The event of `f`: the finding in the encoder's format; a finding over the size of a whole call
/// (evidence with a huge sample) loses its evidence, which its table keeps (docs/detections.md).
pub fn finding_event(encoder: &Encoder, f: &Finding) -> Event {
    let e = Event { detail_type: FINDING_DETAIL_TYPE, detail: encoder.finding_line(f) };
    if e.size() <= PUT_EVENTS_MAX_BYTES {
        return e;
    }
    let mut t = f.clone();
    t.evidence = serde_json::Value::Null;
    tracing::warn!(id = %f.id, detection = %f.detection, "finding too large for one event; evidence left out");
    Event { detail: encoder.finding_line(&t), ..e }
}

/// `events` in calls of at most [`PUT_EVENTS_MAX`] entries and [`PUT_EVENTS_MAX_BYTES`] bytes,
/// in order.
pub fn batches(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut out: Vec<Vec<Event>> = Vec::new();
    let mut bytes = 0;
    for d in events {
        let size = d.size();
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

/// Spikes and findings to an EventBridge bus with PutEvents: `Source` [`SOURCE`], `DetailType`
/// [`DETAIL_TYPE`] (spikes) or [`FINDING_DETAIL_TYPE`] (findings), `Detail` the record in the
/// encoder's format.
///
/// A failed or throttled call is made again (forever, with backoff); entries the answer refuses
/// are sent again alone when their error is throttling or a transient fault, and stop the process
/// otherwise (a missing bus, a malformed detail). EventBridge has no idempotency key: a record sent
/// again after a restart is a second event (at least once; rules can dedupe on `detail.id`, or
/// `detail.finding_info.uid` in OCSF).
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
    async fn put(&self, events: Vec<Event>) -> Result<(), EngineError> {
        for batch in batches(events) {
            let entries: Vec<PutEventsRequestEntry> = batch
                .into_iter()
                .map(|e| {
                    PutEventsRequestEntry::builder()
                        .source(SOURCE)
                        .detail_type(e.detail_type)
                        .detail(e.detail)
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
        let events = spikes.iter().map(|s| spike_event(&self.encoder, s)).collect();
        self.handle.block_on(self.put(events))
    }

    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
        let events = findings.iter().map(|f| finding_event(&self.encoder, f)).collect();
        self.handle.block_on(self.put(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spike_detail(detail: String) -> Event {
        Event { detail_type: DETAIL_TYPE, detail }
    }

    fn finding(n: u32) -> Finding {
        serde_json::from_value(serde_json::json!({
            "id": format!("{n:016x}"), "detection": "port_scan",
            "hour": "2026-03-05T14:00:00Z", "src_ip": "10.0.0.7", "summary": "scan",
            "severity": "high", "dst_ip": "10.1.0.9", "count": 600, "threshold": 500.0,
            "evidence": {"ports": 600}
        }))
        .unwrap()
    }

    #[test]
    fn batches_respect_entry_and_byte_limits() {
        let small: Vec<Event> = (0..25).map(|i| spike_detail(format!("{{\"n\":{i}}}"))).collect();
        let b = batches(small);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 5]);
        // 100 KB details: two fit in 256 KB, a third does not.
        let big: Vec<Event> = (0..5).map(|_| spike_detail("x".repeat(100 * 1024))).collect();
        let b = batches(big);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
        for batch in &b {
            assert!(batch.iter().map(Event::size).sum::<usize>() <= PUT_EVENTS_MAX_BYTES);
        }
        assert!(batches(Vec::new()).is_empty());
    }

    #[test]
    fn findings_go_in_calls_of_at_most_10_with_their_own_detail_type() {
        let encoder = Encoder::default();
        let events: Vec<Event> = (0..23).map(|n| finding_event(&encoder, &finding(n))).collect();
        assert!(events.iter().all(|e| e.detail_type == FINDING_DETAIL_TYPE));
        assert_ne!(FINDING_DETAIL_TYPE, DETAIL_TYPE);
        let back: Finding = serde_json::from_str(&events[3].detail).unwrap();
        assert_eq!(back, finding(3));
        let b = batches(events.clone());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10, 3]);
        assert_eq!(b.concat(), events);
        // The byte limit counts the finding's longer detail type: 26 events whose sizes are a
        // tenth of the limit each fill calls of 9 (10 would be just over).
        let tenth = PUT_EVENTS_MAX_BYTES / 10 - SOURCE.len() - FINDING_DETAIL_TYPE.len() + 1;
        let near: Vec<Event> = (0..26)
            .map(|_| Event { detail_type: FINDING_DETAIL_TYPE, detail: "y".repeat(tenth) })
            .collect();
        let b = batches(near);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![9, 9, 8]);
    }

    #[test]
    fn an_oversized_finding_loses_its_evidence_to_fit() {
        let mut f = finding(1);
        f.evidence = serde_json::json!({"sample": vec!["203.0.113.77"; 30000]});
        let e = finding_event(&Encoder::default(), &f);
        assert!(e.size() <= PUT_EVENTS_MAX_BYTES);
        let back: Finding = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(back.evidence, serde_json::Value::Null);
        assert_eq!(back.id, f.id);
        assert_eq!(back.count, 600);
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
        let e = spike_event(&Encoder::default(), &s);
        assert!(e.size() <= PUT_EVENTS_MAX_BYTES);
        assert_eq!(e.detail_type, DETAIL_TYPE);
        let back: Spike = serde_json::from_str(&e.detail).unwrap();
        assert_eq!(back.dest_ips.len(), TRIMMED_DESTS);
        assert_eq!(back.unique_dest_count, 20000);
    }
}
