//! Threat lists: the findings of an hour's list matches (`flowspike-threat`).

use flowspike_threat::MatchRow;
use serde_json::json;

use crate::{finding, Detection, Finding};

/// The finding of one (hour, internal address, list) with matches: every such row alerts.
pub(crate) fn threat_match(r: &MatchRow) -> Finding {
    let summary = format!(
        "{} exchanged {} flows ({} accepted, {} outbound) with {} address{} on list {}",
        r.src_ip,
        r.flows,
        r.accepted_flows,
        r.outbound_flows,
        r.remote_ip_count,
        if r.remote_ip_count == 1 { "" } else { "es" },
        r.list
    );
    let evidence = json!({
        "flows": r.flows,
        "outbound_flows": r.outbound_flows,
        "inbound_flows": r.inbound_flows,
        "accepted_flows": r.accepted_flows,
        "rejected_flows": r.rejected_flows,
        "bytes": r.bytes,
        "packets": r.packets,
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
        "remote_ips": r.remote_ips,
        "remote_ip_count": r.remote_ip_count,
        "ports": r.ports,
        "truncated": r.truncated,
    });
    let mut f = finding(
        Detection::ThreatList,
        r.hour,
        &r.src_ip,
        &r.list,
        summary,
        (r.flows, 1.0),
        evidence,
    );
    // A contact every flow of which was rejected is a blocked attempt: worth a look, not a page.
    if r.accepted_flows == 0 {
        f.severity = "medium".to_owned();
    }
    f.dst_ip = r.remote_ips.first().cloned();
    f.list = Some(r.list.clone());
    f
}
