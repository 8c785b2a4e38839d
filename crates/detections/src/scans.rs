//! Port scans and port sweeps: the findings of the scan aggregates (`flowspike-scan`) of an hour.

use flowspike_scan::{HorizontalRow, ScanConfig, VerticalRow};
use serde_json::json;

use crate::{finding, Detection, Finding};

/// "about " before an estimated count.
fn about(estimated: bool) -> &'static str {
    if estimated {
        "about "
    } else {
        ""
    }
}

/// The finding of a vertical-scan row that meets the thresholds.
pub(crate) fn port_scan(cfg: &ScanConfig, r: &VerticalRow) -> Option<Finding> {
    if !r.alerts(cfg) {
        return None;
    }
    let summary = format!(
        "{} probed {}{} distinct ports ({} below 1024) on {} in an hour",
        r.src_ip,
        about(r.estimated),
        r.distinct_ports,
        r.low_ports,
        r.dst_ip
    );
    let evidence = json!({
        "distinct_ports": r.distinct_ports,
        "low_ports": r.low_ports,
        "min_low_ports": cfg.vertical_min_low_ports,
        "flows": r.flows,
        "ports_sample": r.ports,
        "estimated": r.estimated,
    });
    let threshold = f64::from(cfg.vertical_min_ports);
    let d = Detection::PortScan;
    let mut f =
        finding(d, r.hour, &r.src_ip, &r.dst_ip, summary, (r.distinct_ports, threshold), evidence);
    f.dst_ip = Some(r.dst_ip.clone());
    Some(f)
}

/// The finding of a horizontal-scan row that meets the threshold.
pub(crate) fn port_sweep(cfg: &ScanConfig, r: &HorizontalRow) -> Option<Finding> {
    if !r.alerts(cfg) {
        return None;
    }
    let summary = format!(
        "{} reached {}{} distinct addresses on port {} ({}) in an hour",
        r.src_ip,
        about(r.estimated),
        r.distinct_dests,
        r.dst_port,
        protocol_name(r.protocol)
    );
    let evidence = json!({
        "distinct_dests": r.distinct_dests,
        "flows": r.flows,
        "dest_ips_sample": r.dest_ips,
        "estimated": r.estimated,
    });
    let subject = format!("{}/{}", r.dst_port, r.protocol);
    let threshold = f64::from(cfg.horizontal_min_dests);
    let d = Detection::PortSweep;
    let mut f =
        finding(d, r.hour, &r.src_ip, &subject, summary, (r.distinct_dests, threshold), evidence);
    f.dst_port = Some(r.dst_port);
    f.protocol = Some(r.protocol);
    Some(f)
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or `protocol N`.
pub(crate) fn protocol_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmpv6".into(),
        n => format!("protocol {n}"),
    }
}
