//! The AWS Security Finding Format (ASFF) of a spike record: what Security Hub's
//! BatchImportFindings takes, with its 12 required attributes (`SchemaVersion`, `Id`,
//! `ProductArn`, `GeneratorId`, `AwsAccountId`, `Types`, `CreatedAt`, `UpdatedAt`, `Severity`,
//! `Title`, `Description`, `Resources`) and its limits (`Title` ≤ 256 and `Description` ≤ 1024
//! characters, at most 32 resources, 50 product fields).
//!
//! `Id` is derived from the spike's id only, so a record emitted again (a restart before the
//! checkpoint, a later hour of the same episode, which keeps its first id) updates the finding
//! instead of adding one. Times are event time (the record's hours), so the same input always
//! gives the same finding.

use std::collections::BTreeMap;
use std::net::IpAddr;

use flowspike_detect::{format_hour, Spike};
use serde::Serialize;

use crate::{description, first_hour, is_fleet, title, AwsContext, Severity, FINDING_TYPE};

/// The attributes Security Hub requires of every finding (the user guide's "Required top-level
/// attributes in ASFF"), in its order.
pub const REQUIRED_ATTRIBUTES: [&str; 12] = [
    "SchemaVersion",
    "Id",
    "ProductArn",
    "GeneratorId",
    "AwsAccountId",
    "Types",
    "CreatedAt",
    "UpdatedAt",
    "Severity",
    "Title",
    "Description",
    "Resources",
];

/// ASFF's schema version.
pub const SCHEMA_VERSION: &str = "2018-10-08";
/// Most resources of one finding.
pub const RESOURCES_MAX: usize = 32;
/// Most characters of a product field's value.
const PRODUCT_FIELD_VALUE_MAX: usize = 2048;

/// One ASFF finding (the attributes flowspike fills; names as in ASFF).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffFinding {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// `flowspike/<region>/<account>/<spike id>`: stable for a spike (and its episode).
    pub id: String,
    /// `arn:<partition>:securityhub:<region>:<account>:product/<account>/default`, the product
    /// ARN of findings an account imports itself.
    pub product_arn: String,
    /// `flowspike/blocked_outbound_spike/<mode>`: the detection and its baseline mode.
    pub generator_id: String,
    /// The account.
    pub aws_account_id: String,
    /// [`FINDING_TYPE`].
    pub types: Vec<String>,
    /// The incident's first hour (RFC 3339).
    pub created_at: String,
    /// The record's hour (RFC 3339).
    pub updated_at: String,
    /// Same as `created_at`.
    pub first_observed_at: String,
    /// Same as `updated_at`.
    pub last_observed_at: String,
    /// The severity.
    pub severity: AsffSeverity,
    /// At most 256 characters.
    pub title: String,
    /// At most 1024 characters.
    pub description: String,
    /// The network interfaces (ENIs) that logged the flows, at most [`RESOURCES_MAX`]; a record
    /// without interface ids names its source (`Type: Other`).
    pub resources: Vec<AsffResource>,
    /// Outbound, the source (none for a fleet) and the first destination.
    pub network: AsffNetwork,
    /// The detection's figures (`flowspike/blocked_count`, `flowspike/threshold`, ...).
    pub product_fields: BTreeMap<String, String>,
    /// `ACTIVE`.
    pub record_state: String,
}

/// ASFF `Severity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffSeverity {
    /// `MEDIUM` or `HIGH` ([`Severity`]).
    pub label: String,
}

/// One ASFF resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffResource {
    /// `AwsEc2NetworkInterface` or `Other`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The interface's ARN, or the source address (`Other`).
    pub id: String,
    /// The ARN partition.
    pub partition: String,
    /// The region.
    pub region: String,
}

/// ASFF `Network` (addresses by family).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffNetwork {
    /// `OUT`.
    pub direction: String,
    /// The source, if IPv4.
    #[serde(rename = "SourceIpV4", skip_serializing_if = "Option::is_none")]
    pub source_ip_v4: Option<String>,
    /// The source, if IPv6.
    #[serde(rename = "SourceIpV6", skip_serializing_if = "Option::is_none")]
    pub source_ip_v6: Option<String>,
    /// The first destination, if IPv4.
    #[serde(rename = "DestinationIpV4", skip_serializing_if = "Option::is_none")]
    pub destination_ip_v4: Option<String>,
    /// The first destination, if IPv6.
    #[serde(rename = "DestinationIpV6", skip_serializing_if = "Option::is_none")]
    pub destination_ip_v6: Option<String>,
}

/// `(v4, v6)`: `ip` in the field of its family, none if it is no address.
fn by_family(ip: Option<&String>) -> (Option<String>, Option<String>) {
    match ip.and_then(|t| t.parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(a)) => (Some(a.to_string()), None),
        Some(IpAddr::V6(a)) => (None, Some(a.to_string())),
        None => (None, None),
    }
}

/// The ASFF finding of `s` in the account and region of `aws`.
pub fn finding(s: &Spike, aws: &AwsContext) -> AsffFinding {
    let (account, region, partition) = (aws.account_id(), aws.region(), aws.partition());
    let mut resources: Vec<AsffResource> = s
        .resource_ids
        .iter()
        .take(RESOURCES_MAX)
        .map(|eni| AsffResource {
            kind: "AwsEc2NetworkInterface".into(),
            id: format!("arn:{partition}:ec2:{region}:{account}:network-interface/{eni}"),
            partition: partition.into(),
            region: region.into(),
        })
        .collect();
    if resources.is_empty() {
        // Security Hub needs at least one resource; without interface ids, the source itself.
        let id = if is_fleet(s) {
            format!("fleet:{}", s.dest_ips.first().map_or("", String::as_str))
        } else {
            s.src_ip.clone()
        };
        resources.push(AsffResource {
            kind: "Other".into(),
            id,
            partition: partition.into(),
            region: region.into(),
        });
    }
    let source = if is_fleet(s) { None } else { Some(&s.src_ip) };
    let (source_ip_v4, source_ip_v6) = by_family(source);
    let (destination_ip_v4, destination_ip_v6) = by_family(s.dest_ips.first());
    AsffFinding {
        schema_version: SCHEMA_VERSION.into(),
        id: format!("flowspike/{region}/{account}/{}", s.id),
        product_arn: format!(
            "arn:{partition}:securityhub:{region}:{account}:product/{account}/default"
        ),
        generator_id: format!("flowspike/{}/{}", s.detection, s.mode.as_str()),
        aws_account_id: account.into(),
        types: vec![FINDING_TYPE.into()],
        created_at: format_hour(first_hour(s)),
        updated_at: format_hour(s.hour),
        first_observed_at: format_hour(first_hour(s)),
        last_observed_at: format_hour(s.hour),
        severity: AsffSeverity {
            label: match Severity::of(s) {
                Severity::Medium => "MEDIUM",
                Severity::High => "HIGH",
            }
            .into(),
        },
        title: title(s),
        description: description(s),
        resources,
        network: AsffNetwork {
            direction: "OUT".into(),
            source_ip_v4,
            source_ip_v6,
            destination_ip_v4,
            destination_ip_v6,
        },
        product_fields: product_fields(s),
        record_state: "ACTIVE".into(),
    }
}

/// The detection's figures as ASFF product fields (strings, at most 2048 characters each).
fn product_fields(s: &Spike) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(format!("flowspike/{k}"), crate::clip(v, PRODUCT_FIELD_VALUE_MAX));
    };
    put("spike_id", s.id.clone());
    put("hour", format_hour(s.hour));
    put("mode", s.mode.as_str().into());
    put("blocked_count", s.blocked_count.to_string());
    put("unique_dest_count", s.unique_dest_count.to_string());
    put("baseline_mean", s.baseline_mean.to_string());
    put("baseline_stdev", s.baseline_stdev.to_string());
    put("data_points", s.data_points.to_string());
    put("threshold", s.threshold.to_string());
    if let Some(r) = s.reason {
        put("reason", r.as_str().into());
    }
    if let Some(e) = s.expected {
        put("expected", e.to_string());
    }
    if let Some(p) = s.p_value {
        put("p_value", p.to_string());
    }
    if s.early {
        put("early", "true".into());
    }
    if is_fleet(s) {
        put("source_count", s.source_count.to_string());
        put("src_ips", s.src_ips.join(","));
    }
    if !s.dest_ips.is_empty() {
        put("dest_ips", s.dest_ips.join(","));
    }
    m
}
