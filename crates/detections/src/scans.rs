//! Port scans and port sweeps: the findings of the scan aggregates (`flowspike-scan`) of an hour.

use flowspike_scan::{HorizontalRow, ScanConfig, VerticalRow};
use serde_json::json;

use crate::{finding_id, Detection, Finding};

/// The finding of a vertical-scan row that meets the thresholds.
pub(crate) fn port_scan(cfg: &ScanConfig, r: &VerticalRow) -> Option<Finding> {
    if !r.alerts(cfg) {
        return None;
    }
    let d = Detection::PortScan;
    Some(Finding {
        id: finding_id(d.record_name(), r.hour, &r.src_ip, &r.dst_ip),
        detection: d.record_name().to_owned(),
        hour: r.hour,
        src_ip: r.src_ip.clone(),
        summary: format!(
            "{} probed {}{} distinct ports ({} below 1024) on {} in an hour",
            r.src_ip,
            if r.estimated { "about " } else { "" },
            r.distinct_ports,
            r.low_ports,
            r.dst_ip
        ),
        severity: "high".to_owned(),
        dst_ip: Some(r.dst_ip.clone()),
        dst_port: None,
        protocol: None,
        list: None,
        count: r.distinct_ports,
        threshold: f64::from(cfg.vertical_min_ports),
        evidence: json!({
            "distinct_ports": r.distinct_ports,
            "low_ports": r.low_ports,
            "min_low_ports": cfg.vertical_min_low_ports,
            "flows": r.flows,
            "ports_sample": r.ports,
            "estimated": r.estimated,
        }),
    })
}

/// The finding of a horizontal-scan row that meets the threshold.
pub(crate) fn port_sweep(cfg: &ScanConfig, r: &HorizontalRow) -> Option<Finding> {
    if !r.alerts(cfg) {
        return None;
    }
    let d = Detection::PortSweep;
    let subject = format!("{}/{}", r.dst_port, r.protocol);
    Some(Finding {
        id: finding_id(d.record_name(), r.hour, &r.src_ip, &subject),
        detection: d.record_name().to_owned(),
        hour: r.hour,
        src_ip: r.src_ip.clone(),
        summary: format!(
            "{} reached {}{} distinct addresses on port {} ({}) in an hour",
            r.src_ip,
            if r.estimated { "about " } else { "" },
            r.distinct_dests,
            r.dst_port,
            protocol_name(r.protocol)
        ),
        severity: "high".to_owned(),
        dst_ip: None,
        dst_port: Some(r.dst_port),
        protocol: Some(r.protocol),
        list: None,
        count: r.distinct_dests,
        threshold: f64::from(cfg.horizontal_min_dests),
        evidence: json!({
            "distinct_dests": r.distinct_dests,
            "flows": r.flows,
            "dest_ips_sample": r.dest_ips,
            "estimated": r.estimated,
        }),
    })
}

/// `tcp`, `udp`, `icmp`, or the number.
pub(crate) fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => format!("protocol {n}"),
    }
}
