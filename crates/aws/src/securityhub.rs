//! Spike records and the other detections' findings to AWS Security Hub as ASFF findings
//! ([`SecurityHubSink`], BatchImportFindings).

use aws_sdk_securityhub::types::{
    AwsSecurityFinding, Network, NetworkDirection, Partition, RecordState, Resource, Severity,
    SeverityLabel,
};
use aws_sdk_securityhub::Client;
use flowspike_detect::Spike;
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_findings::{asff, AsffFinding, AwsContext, Finding};
use flowspike_retry::{Class, Policy};

use crate::deliver::{deliver, Answer};

/// Most findings of one BatchImportFindings call (Security Hub's limit).
pub const BATCH_IMPORT_MAX: usize = 100;

/// A Security Hub client from the SDK's standard configuration (`AWS_ENDPOINT_URL_SECURITYHUB`
/// too) and flowspike's SDK retry settings.
pub async fn client_from_env() -> Client {
    Client::new(&flowspike_retry::sdk_config().await)
}

/// The SDK form of an ASFF finding.
pub fn to_sdk(f: &AsffFinding) -> AwsSecurityFinding {
    let resources = f
        .resources
        .iter()
        .map(|r| {
            Resource::builder()
                .r#type(&r.kind)
                .id(&r.id)
                .partition(Partition::from(r.partition.as_str()))
                .region(&r.region)
                .build()
        })
        .collect();
    AwsSecurityFinding::builder()
        .schema_version(&f.schema_version)
        .id(&f.id)
        .product_arn(&f.product_arn)
        .generator_id(&f.generator_id)
        .aws_account_id(&f.aws_account_id)
        .set_types(Some(f.types.clone()))
        .created_at(&f.created_at)
        .updated_at(&f.updated_at)
        .first_observed_at(&f.first_observed_at)
        .last_observed_at(&f.last_observed_at)
        .severity(Severity::builder().label(SeverityLabel::from(f.severity.label.as_str())).build())
        .title(&f.title)
        .description(&f.description)
        .set_resources(Some(resources))
        .network(
            Network::builder()
                .direction(NetworkDirection::Out)
                .set_source_ipv4(f.network.source_ip_v4.clone())
                .set_source_ipv6(f.network.source_ip_v6.clone())
                .set_destination_ipv4(f.network.destination_ip_v4.clone())
                .set_destination_ipv6(f.network.destination_ip_v6.clone())
                // A scan's target port, a sweep's port and protocol (none for a spike).
                .set_destination_port(f.network.destination_port.map(i32::from))
                .set_protocol(f.network.protocol.clone())
                .build(),
        )
        .set_product_fields(Some(f.product_fields.clone().into_iter().collect()))
        .record_state(RecordState::Active)
        .build()
}

/// The calls of `findings`: at most [`BATCH_IMPORT_MAX`] each, in order.
pub fn batches(findings: Vec<AwsSecurityFinding>) -> Vec<Vec<AwsSecurityFinding>> {
    let mut out = Vec::with_capacity(findings.len().div_ceil(BATCH_IMPORT_MAX));
    let mut findings = findings.into_iter().peekable();
    while findings.peek().is_some() {
        out.push(findings.by_ref().take(BATCH_IMPORT_MAX).collect());
    }
    out
}

/// Spikes ([`asff::finding`]) and the other detections' findings ([`asff::finding_of`]) to
/// Security Hub with BatchImportFindings, at most [`BATCH_IMPORT_MAX`] per call.
///
/// A failed or throttled call is made again (forever, with backoff); findings the answer names in
/// `FailedFindings` are sent again alone when their error is throttling or a transient fault, and
/// stop the process otherwise (an invalid finding, a product ARN the account may not use:
/// retrying cannot help). A finding's `Id` comes from the spike's or the finding's id, so sending a
/// record again updates its finding instead of adding one.
pub struct SecurityHubSink {
    /// The client.
    pub client: Client,
    /// The account and region of the findings (`ProductArn`, `AwsAccountId`).
    pub aws: AwsContext,
    /// How long a failing call is retried ([`Policy::Forever`] in the services).
    pub policy: Policy,
    /// The runtime to block on (the callers are synchronous).
    pub handle: tokio::runtime::Handle,
}

impl SecurityHubSink {
    async fn import(&self, findings: Vec<AwsSecurityFinding>) -> Result<(), EngineError> {
        let target = format!("Security Hub ({})", self.aws.region());
        for batch in batches(findings) {
            deliver(
                "securityhub:BatchImportFindings",
                self.policy,
                &target,
                Class::Fatal,
                batch,
                |batch| async move {
                    let resp = self
                        .client
                        .batch_import_findings()
                        .set_findings(Some(batch.clone()))
                        .send()
                        .await;
                    // Refused findings are named by `Id`, not by position.
                    Answer::of(resp, |out| {
                        out.failed_findings()
                            .iter()
                            .filter_map(|e| {
                                let f = batch.iter().find(|f| f.id() == e.id())?;
                                let code = e.error_code().unwrap_or_default().to_string();
                                Some((
                                    f.clone(),
                                    code,
                                    e.error_message().unwrap_or_default().into(),
                                ))
                            })
                            .collect()
                    })
                },
            )
            .await?;
        }
        Ok(())
    }
}

impl SpikeSink for SecurityHubSink {
    fn emit(&mut self, spikes: &[Spike]) -> Result<(), EngineError> {
        let findings = spikes.iter().map(|s| to_sdk(&asff::finding(s, &self.aws))).collect();
        self.handle.block_on(self.import(findings))
    }

    fn emit_findings(&mut self, findings: &[Finding]) -> Result<(), EngineError> {
        let findings = findings.iter().map(|f| to_sdk(&asff::finding_of(f, &self.aws))).collect();
        self.handle.block_on(self.import(findings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(n: u32) -> Finding {
        serde_json::from_value(serde_json::json!({
            "id": format!("{n:016x}"), "detection": "port_sweep",
            "hour": "2026-03-05T14:00:00Z", "src_ip": "10.0.0.7", "summary": "sweep",
            "severity": "high", "dst_port": 445, "protocol": 6, "count": 300,
            "threshold": 250.0, "evidence": {"dests_sample": ["203.0.113.1"]}
        }))
        .unwrap()
    }

    fn aws() -> AwsContext {
        AwsContext::new("123456789012", "eu-west-1").unwrap()
    }

    /// Regression: the SDK form dropped the ASFF finding's destination port and protocol, so
    /// Security Hub showed a port sweep without the port swept.
    #[test]
    fn a_findings_port_and_protocol_reach_the_sdk() {
        let f = to_sdk(&asff::finding_of(&sweep(1), &aws()));
        let n = f.network().expect("network");
        assert_eq!(n.destination_port(), Some(445));
        assert_eq!(n.protocol(), Some("tcp"));
        assert_eq!(n.source_ipv4(), Some("10.0.0.7"));
        assert_eq!(f.id(), Some("flowspike/eu-west-1/123456789012/0000000000000001"));
        assert_eq!(f.types(), ["TTPs/Discovery/Port Sweep"]);
    }

    #[test]
    fn findings_go_in_calls_of_at_most_100() {
        let all: Vec<AwsSecurityFinding> =
            (0..250).map(|n| to_sdk(&asff::finding_of(&sweep(n), &aws()))).collect();
        let b = batches(all.clone());
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![100, 100, 50]);
        // In order, none lost or repeated.
        assert_eq!(b.concat(), all);
        assert_eq!(batches(all[..100].to_vec()).len(), 1);
        assert!(batches(Vec::new()).is_empty());
    }
}
