//! Spike records and the other detections' [`Finding`]s as findings, in the formats security
//! teams read: flowspike's own JSON line ([`Format::Native`], the record unchanged), an OCSF 1.1
//! Detection Finding ([`Format::Ocsf`], what Amazon Security Lake and OCSF-speaking SIEMs take)
//! and the AWS Security Finding Format ([`Format::Asff`], what Security Hub's BatchImportFindings
//! takes).
//!
//! Pure mapping: no AWS SDK, no I/O. The sinks that deliver findings (Kinesis, Security Hub,
//! EventBridge) live in `flowspike-aws`; they take an [`Encoder`] or an [`AwsContext`] from here.

use std::fmt;
use std::str::FromStr;

use flowspike_detect::{format_hour, Reason, Spike};

pub mod asff;
mod kind;
pub mod ocsf;
mod record;

pub use asff::AsffFinding;
pub use kind::{finding_description, finding_title, Attack, Kind, ATTACK_VERSION};
pub use record::{finding_id, Finding};

/// The ASFF/OCSF type of every finding: ASFF's namespace "Unusual Behaviors", category
/// "Network Flow", and flowspike's classifier.
pub const FINDING_TYPE: &str = "Unusual Behaviors/Network Flow/Blocked Outbound Spike";

/// Longest ASFF `Title` (characters), Security Hub's limit.
pub const TITLE_MAX: usize = 256;
/// Longest ASFF `Description` (characters), Security Hub's limit.
pub const DESCRIPTION_MAX: usize = 1024;

/// The format spike records are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// flowspike's JSON record ([`Spike::to_json_line`]), byte for byte.
    #[default]
    Native,
    /// OCSF 1.1 Detection Finding (class_uid 2004), one JSON object per line.
    Ocsf,
    /// AWS Security Finding Format, one finding object per line.
    Asff,
}

impl Format {
    /// `native`, `ocsf` or `asff`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Native => "native",
            Format::Ocsf => "ocsf",
            Format::Asff => "asff",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = FindingsError;

    fn from_str(s: &str) -> Result<Format, FindingsError> {
        match s {
            "native" => Ok(Format::Native),
            "ocsf" => Ok(Format::Ocsf),
            "asff" => Ok(Format::Asff),
            _ => Err(FindingsError::UnknownFormat(s.to_string())),
        }
    }
}

/// Why findings cannot be produced as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindingsError {
    /// `--output-format` named no known format.
    #[error("unknown output format {0:?}: expected native, ocsf or asff")]
    UnknownFormat(String),
    /// ASFF (and Security Hub) need the account and region the findings belong to.
    #[error("{0} needs the AWS account id (--aws-account-id) and a region (AWS_REGION or the AWS profile)")]
    MissingAccount(&'static str),
    /// An account id is twelve digits.
    #[error("AWS account id {0:?}: expected 12 digits")]
    InvalidAccount(String),
    /// A region is lowercase letters, digits and dashes (`eu-west-1`).
    #[error("AWS region {0:?}: expected a region code such as eu-west-1")]
    InvalidRegion(String),
}

/// The AWS account and region findings belong to (ASFF's `AwsAccountId`, `ProductArn`, resource
/// ARNs; OCSF's `cloud`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsContext {
    account_id: String,
    region: String,
}

impl AwsContext {
    /// Checks `account_id` (12 digits) and `region` (`[a-z0-9-]+`).
    pub fn new(account_id: &str, region: &str) -> Result<AwsContext, FindingsError> {
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FindingsError::InvalidAccount(account_id.to_string()));
        }
        if region.is_empty()
            || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(FindingsError::InvalidRegion(region.to_string()));
        }
        Ok(AwsContext { account_id: account_id.to_string(), region: region.to_string() })
    }

    /// The account id.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The ARN partition of the region: `aws-cn` for China, `aws-us-gov` for GovCloud, else `aws`.
    pub fn partition(&self) -> &'static str {
        if self.region.starts_with("cn-") {
            "aws-cn"
        } else if self.region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        }
    }
}

/// Turns spike records and findings into lines of the chosen [`Format`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoder {
    format: Format,
    aws: Option<AwsContext>,
}

impl Encoder {
    /// An encoder of `format`; `aws` is required by [`Format::Asff`] and adds the `cloud` profile
    /// to OCSF findings.
    pub fn new(format: Format, aws: Option<AwsContext>) -> Result<Encoder, FindingsError> {
        if format == Format::Asff && aws.is_none() {
            return Err(FindingsError::MissingAccount("--output-format asff"));
        }
        Ok(Encoder { format, aws })
    }

    /// The format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The record as one line of JSON, without the trailing newline.
    ///
    /// ```
    /// use flowspike_findings::Encoder;
    /// # let s: flowspike_detect::Spike = serde_json::from_str(r#"{"id":"0123456789abcdef",
    /// #   "detection":"blocked_outbound_spike","mode":"window","hour":"2026-03-05T14:00:00Z",
    /// #   "src_ip":"10.1.2.3","blocked_count":57,"unique_dest_count":1,"dest_ips":["8.8.8.8"],
    /// #   "resource_ids":[],"baseline_mean":3.2,"baseline_stdev":1.4,"data_points":212,
    /// #   "threshold":7.4}"#).unwrap();
    /// // The default encoder writes today's record, byte for byte.
    /// assert_eq!(Encoder::default().to_json_line(&s), s.to_json_line());
    /// ```
    pub fn to_json_line(&self, s: &Spike) -> String {
        self.line(|| s.to_json_line(), |a| ocsf::detection_finding(s, a), |a| asff::finding(s, a))
    }

    /// The finding of another detection as one line of JSON, without the trailing newline: what
    /// [`Encoder::to_json_line`] is for a spike.
    ///
    /// ```
    /// use flowspike_findings::{Encoder, Finding};
    /// # let f: Finding = serde_json::from_str(r#"{"id":"0123456789abcdef",
    /// #   "detection":"port_scan","hour":"2026-03-05T14:00:00Z","src_ip":"10.1.2.3",
    /// #   "summary":"10.1.2.3 probed 812 ports of 10.1.9.9","severity":"high",
    /// #   "dst_ip":"10.1.9.9","count":812,"threshold":500.0,"evidence":{}}"#).unwrap();
    /// // The default encoder writes the record itself.
    /// assert_eq!(Encoder::default().finding_line(&f), f.to_json_line());
    /// ```
    pub fn finding_line(&self, f: &Finding) -> String {
        self.line(
            || f.to_json_line(),
            |a| ocsf::detection_finding_of(f, a),
            |a| asff::finding_of(f, a),
        )
    }

    /// The line of a record given its three forms (a spike's or a finding's).
    fn line(
        &self,
        native: impl FnOnce() -> String,
        ocsf: impl FnOnce(Option<&AwsContext>) -> serde_json::Value,
        asff: impl FnOnce(&AwsContext) -> AsffFinding,
    ) -> String {
        match (self.format, &self.aws) {
            (Format::Native, _) => native(),
            (Format::Ocsf, aws) => ocsf(aws.as_ref()).to_string(),
            // Serialising strings and maps of strings cannot fail.
            (Format::Asff, Some(aws)) => serde_json::to_string(&asff(aws)).unwrap_or_default(),
            // `new` refuses ASFF without an account; native is the safe answer if it ever happens.
            (Format::Asff, None) => native(),
        }
    }
}

/// A finding's severity, the same in OCSF (`severity_id`) and ASFF (`Severity.Label`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// A single source above its baseline; a finding marked `medium` (threat-list flows that
    /// were all rejected).
    Medium,
    /// A fleet incident, or a source at ten times its threshold or more; a finding marked
    /// `high`.
    High,
}

impl Severity {
    /// The severity of `s`: [`Severity::High`] for a fleet incident (many hosts at once) or a
    /// count at least ten times the threshold, else [`Severity::Medium`].
    pub fn of(s: &Spike) -> Severity {
        if s.reason == Some(Reason::Fleet) || s.blocked_count as f64 >= 10.0 * s.threshold.max(1.0)
        {
            Severity::High
        } else {
            Severity::Medium
        }
    }

    /// The severity of another detection's finding: [`Severity::High`] for `high` (or
    /// `critical`), else [`Severity::Medium`].
    pub fn of_finding(f: &Finding) -> Severity {
        if f.severity.eq_ignore_ascii_case("high") || f.severity.eq_ignore_ascii_case("critical") {
            Severity::High
        } else {
            Severity::Medium
        }
    }

    /// OCSF's `severity_id` and `severity`.
    fn ocsf(self) -> (u32, &'static str) {
        match self {
            Severity::Medium => (3, "Medium"),
            Severity::High => (4, "High"),
        }
    }

    /// ASFF's `Severity.Label`.
    fn asff_label(self) -> &'static str {
        match self {
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
        }
    }
}

/// True for a fleet record (many sources, `src_ips`, no `src_ip`).
fn is_fleet(s: &Spike) -> bool {
    s.src_ip.is_empty() && !s.src_ips.is_empty()
}

/// The one-line title of a finding (at most [`TITLE_MAX`] characters).
pub fn title(s: &Spike) -> String {
    let t = if is_fleet(s) {
        format!(
            "Fleet-wide blocked outbound spike: {} sources to {} ({} flows)",
            s.source_count.max(s.src_ips.len() as u64),
            s.dest_ips.first().map_or("several destinations", String::as_str),
            s.blocked_count
        )
    } else {
        match s.reason {
            Some(Reason::NewSource) => format!(
                "New source {} with {} blocked outbound flows in an hour",
                s.src_ip, s.blocked_count
            ),
            Some(Reason::Ramp) => format!(
                "Rising blocked outbound traffic from {}: {} flows in an hour",
                s.src_ip, s.blocked_count
            ),
            _ => format!(
                "Spike in blocked outbound traffic from {}: {} flows in an hour",
                s.src_ip, s.blocked_count
            ),
        }
    };
    clip(t, TITLE_MAX)
}

/// The description of a finding: what was seen against what was expected (at most
/// [`DESCRIPTION_MAX`] characters).
pub fn description(s: &Spike) -> String {
    let mut d = format!(
        "{} during the hour starting {} UTC: {} blocked outbound flows to {} distinct \
         destinations. Detection {} mode",
        if is_fleet(s) {
            format!("{} internal sources together", s.src_ips.len())
        } else {
            format!("Internal source {}", s.src_ip)
        },
        format_hour(s.hour),
        s.blocked_count,
        s.unique_dest_count,
        s.mode.as_str()
    );
    if let Some(r) = s.reason {
        d.push_str(&format!(", reason {}", r.as_str()));
    }
    d.push_str(&format!(
        "; baseline mean {:.2}, stdev {:.2} over {} data points, threshold {:.2}",
        s.baseline_mean, s.baseline_stdev, s.data_points, s.threshold
    ));
    if let Some(e) = s.expected {
        d.push_str(&format!(", expected {e:.2}"));
    }
    if let Some(p) = s.p_value {
        d.push_str(&format!(", p-value {p:.3e}"));
    }
    d.push('.');
    if s.early {
        d.push_str(" Raised while the hour was still open.");
    }
    if let Some(e) = &s.episode {
        d.push_str(&format!(
            " Incident since {} ({} alert hours, peak {} at {}).",
            format_hour(e.first_hour),
            e.hours,
            e.peak_count,
            format_hour(e.peak_hour)
        ));
    }
    if !s.resource_ids.is_empty() {
        d.push_str(&format!(" Interfaces: {}.", s.resource_ids.join(", ")));
    }
    if !s.dest_ips.is_empty() {
        d.push_str(&format!(" Destinations: {}.", s.dest_ips.join(", ")));
    }
    clip(d, DESCRIPTION_MAX)
}

/// `text` cut to at most `max` characters (an ellipsis marks a cut).
fn clip(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The start of the record's incident: its episode's first hour, else its own hour.
fn first_hour(s: &Spike) -> i64 {
    s.episode.as_ref().map_or(s.hour, |e| e.first_hour)
}

/// A number of bytes in binary units (`512 B`, `3.0 GiB`; `–` when not finite): the one spelling
/// of the findings' summaries and the report's pages.
pub fn bytes_text(b: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if !b.is_finite() {
        return "–".into();
    }
    let (mut v, mut i) = (b, 0);
    while v.abs() >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod finding_tests;
