//! Spike records to AWS Security Hub as ASFF findings ([`SecurityHubSink`], BatchImportFindings).

use aws_sdk_securityhub::types::{
    AwsSecurityFinding, Network, NetworkDirection, Partition, RecordState, Resource, Severity,
    SeverityLabel,
};
use aws_sdk_securityhub::Client;
use flowspike_detect::Spike;
use flowspike_engine::{EngineError, SpikeSink};
use flowspike_findings::{asff, AsffFinding, AwsContext};
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
                .build(),
        )
        .set_product_fields(Some(f.product_fields.clone().into_iter().collect()))
        .record_state(RecordState::Active)
        .build()
}

/// Spikes to Security Hub with BatchImportFindings, at most [`BATCH_IMPORT_MAX`] per call.
///
/// A failed or throttled call is made again (forever, with backoff); findings the answer names in
/// `FailedFindings` are sent again alone when their error is throttling or a transient fault, and
/// stop the process otherwise (an invalid finding, a product ARN the account may not use:
/// retrying cannot help). A finding's `Id` comes from the spike's id, so sending a record again
/// updates its finding instead of adding one.
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
    async fn import(&self, spikes: &[Spike]) -> Result<(), EngineError> {
        for chunk in spikes.chunks(BATCH_IMPORT_MAX) {
            let findings: Vec<AwsSecurityFinding> =
                chunk.iter().map(|s| to_sdk(&asff::finding(s, &self.aws))).collect();
            let target = format!("Security Hub ({})", self.aws.region());
            deliver(
                "securityhub:BatchImportFindings",
                self.policy,
                &target,
                Class::Fatal,
                findings,
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
        self.handle.block_on(self.import(spikes))
    }
}
