//! The AWS Security Finding Format (ASFF) of a spike record or of another detection's
//! [`Finding`] ([`finding_of`]): what Security Hub's
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

use crate::kind::{protocol_name, seen};
use crate::{
    description, finding_description, finding_title, first_hour, is_fleet, title, AwsContext,
    Finding, Kind, Severity, FINDING_TYPE,
};

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
/// Most product fields of one finding.
pub const PRODUCT_FIELDS_MAX: usize = 50;
/// Most characters of a product field's name.
const PRODUCT_FIELD_NAME_MAX: usize = 128;

/// One ASFF finding (the attributes flowspike fills; names as in ASFF).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AsffFinding {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// `flowspike/<region>/<account>/<spike or finding id>`: stable for a spike (and its
    /// episode) or a finding.
    pub id: String,
    /// `arn:<partition>:securityhub:<region>:<account>:product/<account>/default`, the product
    /// ARN of findings an account imports itself.
    pub product_arn: String,
    /// `flowspike/blocked_outbound_spike/<mode>`: the detection and its baseline mode; for a
    /// finding `flowspike/<detection>`.
    pub generator_id: String,
    /// The account.
    pub aws_account_id: String,
    /// [`FINDING_TYPE`], or a finding's [`Kind::asff_type`].
    pub types: Vec<String>,
    /// The incident's first hour, or a finding's first seen (RFC 3339).
    pub created_at: String,
    /// The record's hour, or a finding's last seen (RFC 3339).
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
    /// without interface ids, and every finding, names its source (`Type: Other`).
    pub resources: Vec<AsffResource>,
    /// Outbound, the source (none for a fleet) and the first destination; a finding's
    /// destination port and protocol where it has them.
    pub network: AsffNetwork,
    /// The detection's figures (`flowspike/blocked_count`, `flowspike/threshold`, ...; a
    /// finding's `flowspike/count`, `flowspike/evidence/<field>`), at most [`PRODUCT_FIELDS_MAX`].
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
    /// The destination port, where the finding has one (a scan's target, a sweep's port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    /// The protocol (`tcp`, `udp`, ... or its IANA number), where the finding has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `(v4, v6)`: `ip` in the field of its family, none if it is no address.
fn by_family(ip: Option<&String>) -> (Option<String>, Option<String>) {
    match ip.and_then(|t| t.parse::<IpAddr>().ok()) {
        Some(IpAddr::V4(a)) => (Some(a.to_string()), None),
        Some(IpAddr::V6(a)) => (None, Some(a.to_string())),
        None => (None, None),
    }
}

/// What differs from one ASFF finding to the next; [`assemble`] adds the account's parts.
struct Parts<'a> {
    /// The record's id (`Id` is `flowspike/<region>/<account>/<id>`).
    id: &'a str,
    generator_id: String,
    types: Vec<String>,
    /// `CreatedAt` / `FirstObservedAt`, `UpdatedAt` / `LastObservedAt` (seconds).
    first: i64,
    last: i64,
    severity: Severity,
    title: String,
    description: String,
    resources: Vec<AsffResource>,
    network: AsffNetwork,
    product_fields: BTreeMap<String, String>,
}

/// The finding of `p` in the account and region of `aws`.
fn assemble(p: Parts<'_>, aws: &AwsContext) -> AsffFinding {
    let (account, region, partition) = (aws.account_id(), aws.region(), aws.partition());
    AsffFinding {
        schema_version: SCHEMA_VERSION.into(),
        id: format!("flowspike/{region}/{account}/{}", p.id),
        product_arn: format!(
            "arn:{partition}:securityhub:{region}:{account}:product/{account}/default"
        ),
        generator_id: p.generator_id,
        aws_account_id: account.into(),
        types: p.types,
        created_at: format_hour(p.first),
        updated_at: format_hour(p.last),
        first_observed_at: format_hour(p.first),
        last_observed_at: format_hour(p.last),
        severity: AsffSeverity { label: p.severity.asff_label().into() },
        title: p.title,
        description: p.description,
        resources: p.resources,
        network: p.network,
        product_fields: p.product_fields,
        record_state: "ACTIVE".into(),
    }
}

/// A resource that is no AWS resource flowspike can name: `id` is an address (or a fleet's
/// destination), so Security Hub still has the one resource it needs.
fn other_resource(id: String, aws: &AwsContext) -> AsffResource {
    AsffResource {
        kind: "Other".into(),
        id,
        partition: aws.partition().into(),
        region: aws.region().into(),
    }
}

/// An outbound `Network` from `source` to `destination` (each in the field of its family).
fn outbound(source: Option<&String>, destination: Option<&String>) -> AsffNetwork {
    let (source_ip_v4, source_ip_v6) = by_family(source);
    let (destination_ip_v4, destination_ip_v6) = by_family(destination);
    AsffNetwork {
        direction: "OUT".into(),
        source_ip_v4,
        source_ip_v6,
        destination_ip_v4,
        destination_ip_v6,
        destination_port: None,
        protocol: None,
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
        resources.push(other_resource(id, aws));
    }
    let source = if is_fleet(s) { None } else { Some(&s.src_ip) };
    let parts = Parts {
        id: &s.id,
        generator_id: format!("flowspike/{}/{}", s.detection, s.mode.as_str()),
        types: vec![FINDING_TYPE.into()],
        first: first_hour(s),
        last: s.hour,
        severity: Severity::of(s),
        title: title(s),
        description: description(s),
        resources,
        network: outbound(source, s.dest_ips.first()),
        product_fields: product_fields(s),
    };
    assemble(parts, aws)
}

/// The ASFF finding of another detection's [`Finding`] in the account and region of `aws`.
///
/// `Types` is the detection's in Security Hub's taxonomy ([`Kind::asff_type`]: `TTPs/Discovery/…`
/// for scans and sweeps, `Effects/Data Exfiltration/…` for volume, `TTPs/Command and Control/…`
/// for threat lists); the one resource is the source address (`Other`: a finding names no
/// interface); `Network` has the source, and the destination address, port and protocol where
/// the finding has them; `ProductFields` the figure, its threshold and the evidence's fields.
/// `Id` comes from the finding's id, so the same hour replayed updates the same finding.
pub fn finding_of(f: &Finding, aws: &AwsContext) -> AsffFinding {
    let seen = seen(f);
    let mut network = outbound(Some(&f.src_ip), f.dst_ip.as_ref());
    network.destination_port = f.dst_port;
    network.protocol = f.protocol.map(protocol_name);
    let parts = Parts {
        id: &f.id,
        generator_id: format!("flowspike/{}", f.detection),
        types: vec![Kind::of(&f.detection).asff_type.into()],
        first: seen.first,
        last: seen.last,
        severity: Severity::of_finding(f),
        title: finding_title(f),
        description: finding_description(f),
        resources: vec![other_resource(f.src_ip.clone(), aws)],
        network,
        product_fields: finding_fields(f),
    };
    assemble(parts, aws)
}

/// ASFF product fields (`flowspike/<name>`): values cut to 2048 characters, at most
/// [`PRODUCT_FIELDS_MAX`] fields (later ones are dropped), names of at most 128 characters.
#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Fields {
    fn put(&mut self, name: &str, value: String) {
        let key = format!("flowspike/{name}");
        if self.0.len() < PRODUCT_FIELDS_MAX && key.len() <= PRODUCT_FIELD_NAME_MAX {
            self.0.insert(key, crate::clip(value, PRODUCT_FIELD_VALUE_MAX));
        }
    }
}

/// The detection's figures as ASFF product fields (strings, at most 2048 characters each).
fn product_fields(s: &Spike) -> BTreeMap<String, String> {
    let mut m = Fields::default();
    let mut put = |k: &str, v: String| m.put(k, v);
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
    m.0
}

/// A finding's figures and its evidence as ASFF product fields: the record's own fields first,
/// then each field of `evidence` (`flowspike/evidence/<name>`, text as is, anything else as
/// JSON) while there is room.
fn finding_fields(f: &Finding) -> BTreeMap<String, String> {
    let mut m = Fields::default();
    m.put("finding_id", f.id.clone());
    m.put("detection", f.detection.clone());
    m.put("hour", format_hour(f.hour));
    m.put("count", f.count.to_string());
    m.put("threshold", f.threshold.to_string());
    if let Some(l) = &f.list {
        m.put("list", l.clone());
    }
    if let Some(e) = f.evidence.as_object() {
        for (k, v) in e {
            let text = match v {
                serde_json::Value::String(t) => t.clone(),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            m.put(&format!("evidence/{k}"), text);
        }
    }
    m.0
}
