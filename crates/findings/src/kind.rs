//! What OCSF and ASFF take from a [`Finding`] of the detections beside the blocked spike: the
//! labels of its detection ([`Kind`]: ATT&CK technique, ASFF type), its title, description and
//! the times it covers. Both formats read these, so a port scan says the same in each.

use flowspike_detect::format_hour;

use crate::{clip, Finding, DESCRIPTION_MAX, TITLE_MAX};

/// A MITRE ATT&CK technique and its tactic (ids and names as in ATT&CK v14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attack {
    /// `T1046`.
    pub technique_uid: &'static str,
    /// `Network Service Discovery`.
    pub technique: &'static str,
    /// `TA0007`.
    pub tactic_uid: &'static str,
    /// `Discovery`.
    pub tactic: &'static str,
}

/// The ATT&CK matrix version the techniques are named after (`finding_info.attacks[].version`).
pub const ATTACK_VERSION: &str = "14";

/// The labels of one detection in the finding formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The closest ATT&CK technique, if any.
    pub attack: Option<Attack>,
    /// The ASFF type, `namespace/category/classifier` in Security Hub's taxonomy.
    pub asff_type: &'static str,
    /// OCSF `analytic.type_id`: 1 Rule (a fixed threshold or a list), 3 Statistical (a baseline).
    pub analytic_type_id: u32,
}

const DISCOVERY: Attack = Attack {
    technique_uid: "T1046",
    technique: "Network Service Discovery",
    tactic_uid: "TA0007",
    tactic: "Discovery",
};

impl Kind {
    /// The labels of `detection` (a [`Finding::detection`]); a detection this crate does not
    /// know yet gets no technique and a generic ASFF type rather than a wrong one.
    pub fn of(detection: &str) -> Kind {
        match detection {
            "port_scan" => Kind {
                attack: Some(DISCOVERY),
                asff_type: "TTPs/Discovery/Vertical Port Scan",
                analytic_type_id: 1,
            },
            "port_sweep" => Kind {
                attack: Some(DISCOVERY),
                asff_type: "TTPs/Discovery/Port Sweep",
                analytic_type_id: 1,
            },
            "outbound_volume" => Kind {
                attack: Some(Attack {
                    technique_uid: "T1048",
                    technique: "Exfiltration Over Alternative Protocol",
                    tactic_uid: "TA0010",
                    tactic: "Exfiltration",
                }),
                asff_type: "Effects/Data Exfiltration/Unusual Outbound Volume",
                analytic_type_id: 3,
            },
            "threat_list" => Kind {
                attack: Some(Attack {
                    technique_uid: "T1071",
                    technique: "Application Layer Protocol",
                    tactic_uid: "TA0011",
                    tactic: "Command and Control",
                }),
                asff_type: "TTPs/Command and Control/Threat List Contact",
                analytic_type_id: 1,
            },
            _ => Kind {
                attack: None,
                asff_type: "Unusual Behaviors/Network Flow/Other Detection",
                analytic_type_id: 1,
            },
        }
    }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, else the IANA number.
pub(crate) fn protocol_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => n.to_string(),
    }
}

/// `tcp/443`, or the bare port when the protocol is unknown.
pub(crate) fn service(port: u16, protocol: Option<u8>) -> String {
    match protocol {
        Some(p) => format!("{}/{port}", protocol_name(p)),
        None => port.to_string(),
    }
}

/// The one-line title of `f` (at most [`TITLE_MAX`] characters).
pub fn finding_title(f: &Finding) -> String {
    let src = &f.src_ip;
    let t = match f.detection.as_str() {
        "port_scan" => format!(
            "Vertical port scan from {src} to {}: {} ports in an hour",
            f.dst_ip.as_deref().unwrap_or("one destination"),
            f.count
        ),
        "port_sweep" => format!(
            "Port sweep from {src} on port {}: {} destinations in an hour",
            f.dst_port.map_or_else(|| "one port".into(), |p| service(p, f.protocol)),
            f.count
        ),
        "outbound_volume" => {
            format!("Unusual outbound volume from {src}: {} bytes in an hour", f.count)
        }
        "threat_list" => format!(
            "{src} exchanged {} flows with addresses on threat list {}",
            f.count,
            f.list.as_deref().unwrap_or("(unnamed)")
        ),
        other => format!("{other} from {src}: {} in an hour", f.count),
    };
    clip(t, TITLE_MAX)
}

/// The description of `f`: its summary, the hour and the figure against its threshold (at most
/// [`DESCRIPTION_MAX`] characters).
pub fn finding_description(f: &Finding) -> String {
    let mut d = f.summary.trim_end_matches('.').to_string();
    d.push_str(&format!(
        ". Detection {} for the hour starting {}: {} against threshold {}",
        f.detection,
        format_hour(f.hour),
        f.count,
        f.threshold
    ));
    if let Some(l) = &f.list {
        d.push_str(&format!(", list {l}"));
    }
    d.push('.');
    clip(d, DESCRIPTION_MAX)
}

/// The times a finding covers, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// First seen: a threat-list row's first flow, else the hour.
    pub first: i64,
    /// Last seen: a threat-list row's last flow, else the hour (as a spike's last hour).
    pub last: i64,
    /// The end of what was looked at: the last flow, else the end of the hour.
    pub end: i64,
}

/// The times of `f`: a threat-list row's own first and last flow times (`evidence.first_seen`,
/// `evidence.last_seen`: seconds or RFC 3339) when it has them in order, else its hour.
pub(crate) fn seen(f: &Finding) -> Seen {
    let time = |k: &str| match &f.evidence[k] {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => flowspike_detect::parse_hour(s),
        _ => None,
    };
    match (time("first_seen"), time("last_seen")) {
        (Some(first), Some(last)) if f.detection == "threat_list" && first <= last => {
            Seen { first, last, end: last }
        }
        _ => Seen { first: f.hour, last: f.hour, end: f.hour + 3600 },
    }
}
