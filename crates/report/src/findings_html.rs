//! The report's part for the other detections: a section per detection (port scans, port
//! sweeps, outbound volume, threat lists), its incidents newest first, each with its summary,
//! severity, hours, source and subject, count against threshold hour by hour and the evidence the
//! findings carry. Static HTML like the rest of the page: no chart (a finding's table row is all
//! the history of it the state keeps beside the detection's Parquet table).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

use flowspike_findings::Finding;
use serde_json::Value;

use crate::finding_incidents::{service, FindingIncident, DETECTIONS};
use crate::html::{self, bytes_text, escape, hour, num};

/// At most this many ports or addresses of an incident's evidence are listed.
const EVIDENCE_MAX: usize = 40;

/// The heading of `detection`'s section.
pub(crate) fn heading(detection: &str) -> &str {
    DETECTIONS.iter().find(|(d, _)| *d == detection).map_or(detection, |&(_, h)| h)
}

/// What makes a finding of `detection`, in words.
fn rule(detection: &str) -> &'static str {
    match detection {
        "port_scan" => "One source probing many distinct ports of one destination in an hour: a finding when the distinct ports reach the threshold with enough of them below 1024 (ESCU's Internal Vertical Port Scan).",
        "port_sweep" => "One source reaching many distinct addresses on one port and protocol in an hour: a finding when the distinct destinations reach the threshold (GuardDuty's PortSweep).",
        "outbound_volume" => "ACCEPTed bytes from an internal source to external destinations far above its own baseline: the blocked spike's detector run on bytes; a finding above the largest volume that would not alert.",
        "threat_list" => "Flows between an internal address and addresses on a threat list: every hour with a match is a finding; medium severity when every flow was rejected.",
        _ => "Findings of a detection this report does not know: listed as they are.",
    }
}

/// A number of the evidence (`–` when absent).
fn ev_num(f: &Finding, key: &str) -> String {
    match &f.evidence[key] {
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), num),
        _ => "–".into(),
    }
}

/// A time of the evidence, unix seconds or RFC 3339 text, as RFC 3339.
fn ev_time(f: &Finding, key: &str) -> Option<i64> {
    match &f.evidence[key] {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp()),
        _ => None,
    }
}

fn time_text(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or_else(|| "–".into(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A byte count of the evidence in words (`–` when absent).
fn ev_bytes(f: &Finding, key: &str) -> String {
    f.evidence[key].as_f64().map_or_else(|| "–".into(), bytes_text)
}

/// One column of an incident's table of hours.
struct Column {
    head: &'static str,
    cell: fn(&Finding) -> String,
}

/// The columns of `detection`'s table after the hour: its count, what the count was compared
/// with, then what its evidence adds.
fn columns(detection: &str) -> Vec<Column> {
    fn col(head: &'static str, cell: fn(&Finding) -> String) -> Column {
        Column { head, cell }
    }
    fn at_least(f: &Finding) -> String {
        format!("≥ {}", num(f.threshold))
    }
    match detection {
        "port_scan" => vec![
            col("distinct ports", |f| f.count.to_string()),
            col("alerts at", at_least),
            col("below 1024", |f| ev_num(f, "low_ports")),
            col("needed below 1024", |f| format!("≥ {}", ev_num(f, "min_low_ports"))),
            col("flows", |f| ev_num(f, "flows")),
        ],
        "port_sweep" => vec![
            col("distinct destinations", |f| f.count.to_string()),
            col("alerts at", at_least),
            col("flows", |f| ev_num(f, "flows")),
        ],
        "outbound_volume" => vec![
            col("bytes", |f| bytes_text(f.count as f64)),
            col("expected", |f| ev_bytes(f, "expected_bytes")),
            col("alerts above", |f| bytes_text(f.threshold)),
            col("p", |f| f.evidence["p_value"].as_f64().map_or("–".into(), html::pval)),
        ],
        "threat_list" => vec![
            col("flows", |f| f.count.to_string()),
            col("accepted", |f| ev_num(f, "accepted_flows")),
            col("rejected", |f| ev_num(f, "rejected_flows")),
            col("addresses", |f| ev_num(f, "remote_ip_count")),
            col("first seen", |f| time_text(ev_time(f, "first_seen"))),
            col("last seen", |f| time_text(ev_time(f, "last_seen"))),
        ],
        _ => vec![col("count", |f| f.count.to_string()), col("threshold", |f| num(f.threshold))],
    }
}

/// The items of the evidence arrays `key` of an incident's findings with the number of hours
/// naming each, in their natural order (ports numerically, addresses as addresses).
fn evidence_union(inc: &FindingIncident, key: &str) -> Vec<(String, usize)> {
    let mut seen: BTreeMap<(u8, u64, Option<IpAddr>, String), usize> = BTreeMap::new();
    for f in &inc.findings {
        let Some(items) = f.evidence[key].as_array() else { continue };
        for v in items {
            let sort = match v {
                Value::Number(n) => (0, n.as_u64().unwrap_or(u64::MAX), None, n.to_string()),
                Value::String(s) => (1, 0, s.parse::<IpAddr>().ok(), s.clone()),
                other => (2, 0, None, other.to_string()),
            };
            *seen.entry(sort).or_default() += 1;
        }
    }
    seen.into_iter().map(|((_, _, _, text), n)| (text, n)).collect()
}

/// One labelled list of evidence (`none recorded` when no finding has it).
fn evidence_list(out: &mut String, label: &str, inc: &FindingIncident, key: &str) {
    let items = evidence_union(inc, key);
    let _ = write!(out, "<p class=\"meta\">{label} ({}):</p>", items.len());
    out.push_str(&html::ranked_list(&items, inc.findings.len(), EVIDENCE_MAX));
}

/// What an incident's findings carry beside their counts.
fn evidence(inc: &FindingIncident) -> String {
    let mut s = String::new();
    match inc.detection() {
        "port_scan" => {
            evidence_list(&mut s, "Ports (the lowest of each hour)", inc, "ports_sample")
        }
        "port_sweep" => {
            evidence_list(&mut s, "Destinations (the lowest of each hour)", inc, "dest_ips_sample")
        }
        "outbound_volume" => {
            let p = inc.peak();
            let _ = write!(
                s,
                "<p class=\"meta\">Peak hour {}: {} sent where {} were expected (mean {} ± {}, {} mode).</p>",
                hour(p.hour),
                bytes_text(p.count as f64),
                ev_bytes(p, "expected_bytes"),
                ev_bytes(p, "baseline_mean_bytes"),
                ev_bytes(p, "baseline_stdev_bytes"),
                escape(p.evidence["mode"].as_str().unwrap_or("?"))
            );
        }
        "threat_list" => {
            let times = |k: &'static str| inc.findings.iter().filter_map(move |f| ev_time(f, k));
            let _ = write!(
                s,
                "<p class=\"meta\">List <b>{}</b> · first seen {} · last seen {}</p>",
                escape(inc.findings[0].list.as_deref().unwrap_or("(unnamed)")),
                time_text(times("first_seen").min()),
                time_text(times("last_seen").max())
            );
            evidence_list(&mut s, "Remote addresses on the list", inc, "remote_ips");
            evidence_list(&mut s, "Ports", inc, "ports");
        }
        _ => {
            let _ = write!(
                s,
                "<p class=\"meta\">Evidence of the peak hour: <code>{}</code></p>",
                escape(&inc.peak().evidence.to_string())
            );
        }
    }
    s
}

/// The subject of an incident beside its source, in words (empty for volume).
fn subject_text(inc: &FindingIncident) -> String {
    let f = &inc.findings[0];
    match (inc.detection(), &f.dst_ip, f.dst_port) {
        ("port_scan", Some(d), _) => format!(" · destination <code>{}</code>", escape(d)),
        ("port_sweep", _, Some(p)) => format!(" · port <code>{}</code>", service(p, f.protocol)),
        ("threat_list", _, _) => {
            format!(" · list <code>{}</code>", escape(f.list.as_deref().unwrap_or("")))
        }
        _ if !inc.subject().is_empty() => format!(" · <code>{}</code>", escape(&inc.subject())),
        _ => String::new(),
    }
}

/// One incident.
fn article(inc: &FindingIncident) -> String {
    let mut s = String::new();
    let sev = inc.severity();
    let sev_class: String = sev.chars().filter(char::is_ascii_alphanumeric).collect();
    let _ = write!(
        s,
        "<article class=\"finding sev-{sev_class}\" id=\"finding-{}\">",
        escape(inc.id())
    );
    let hours = inc.findings.len();
    let when = if inc.first_hour() == inc.last_hour() {
        hour(inc.first_hour())
    } else {
        format!("{} – {}", hour(inc.first_hour()), hour(inc.last_hour()))
    };
    let _ = write!(
        s,
        "<h3>{} · {}<span class=\"badge sev-{sev_class}\">{}</span><span class=\"badge\">{hours} h</span></h3>",
        escape(&when),
        escape(&inc.subject_label()),
        escape(sev),
    );
    let peak = inc.peak();
    let _ = write!(s, "<p class=\"reason\">{}</p>", escape(&peak.summary));
    let cols = columns(inc.detection());
    // Volume's threshold is bytes (the largest volume that would not alert); the others' a count.
    let judged = if inc.detection() == "outbound_volume" {
        format!(
            "{} against {} (alerts above)",
            bytes_text(peak.count as f64),
            bytes_text(peak.threshold)
        )
    } else {
        format!(
            "{} {} against threshold {}",
            (cols[0].cell)(peak),
            cols[0].head,
            num(peak.threshold)
        )
    };
    let _ = write!(
        s,
        "<p class=\"meta\">Source <code>{}</code>{} · {hours} hour{} with a finding · peak {}</p>",
        escape(inc.src_ip()),
        subject_text(inc),
        if hours == 1 { "" } else { "s" },
        escape(&judged)
    );
    s.push_str("<table><tr><th class=\"l\">hour</th>");
    for c in &cols {
        let _ = write!(s, "<th>{}</th>", c.head);
    }
    s.push_str("<th class=\"l\">severity</th></tr>");
    for f in &inc.findings {
        let _ = write!(s, "<tr><td class=\"l\">{}</td>", hour(f.hour));
        for c in &cols {
            let _ = write!(s, "<td>{}</td>", escape(&(c.cell)(f)));
        }
        let _ = write!(s, "<td class=\"l\">{}</td></tr>", escape(&f.severity));
    }
    s.push_str("</table>");
    s.push_str(&evidence(inc));
    let ids: Vec<(String, usize)> = inc.ids().into_iter().map(|i| (i.to_string(), 1)).collect();
    let _ = write!(s, "<p class=\"meta\">Finding ids ({}):</p>", ids.len());
    s.push_str(&html::ranked_list(&ids, 1, 48));
    s.push_str("</article>");
    s
}

/// The other detections' part of the index: a heading saying where the findings came from, then
/// one section per detection with incidents (`incidents` newest first, kept in that order within
/// a section).
pub(crate) fn findings_part(
    incidents: &[FindingIncident],
    counts: &[(String, usize)],
    origin: &str,
) -> String {
    let mut s = String::from("<div class=\"part\" id=\"findings\">");
    let n = incidents.len();
    let _ = write!(
        s,
        "<h2>Other detections: {n} incident{}</h2><p class=\"meta\">Findings {}. An incident is the findings of one detection and subject in hours at most one quiet hour apart, newest first.</p></div>",
        if n == 1 { "" } else { "s" },
        escape(origin)
    );
    for (detection, count) in counts.iter().filter(|(_, c)| *c > 0) {
        let _ = write!(
            s,
            "<section class=\"findings\" id=\"findings-{}\"><h2>{} · {count} incident{}</h2><p class=\"meta\">{}</p>",
            escape(detection),
            escape(heading(detection)),
            if *count == 1 { "" } else { "s" },
            escape(rule(detection))
        );
        for inc in incidents.iter().filter(|i| i.detection() == detection) {
            s.push_str(&article(inc));
        }
        s.push_str("</section>");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding_incidents::count_by_detection;
    use crate::finding_incidents::group_findings;
    use crate::finding_incidents::tests::finding;
    use serde_json::json;

    /// One finding of each detection with the evidence the detections write, a scan over two
    /// hours.
    fn four() -> Vec<Finding> {
        let mut scan = finding("port_scan", 0, "10.0.0.5", "10.0.9.9", 612);
        scan.evidence = json!({"distinct_ports": 612, "low_ports": 40, "min_low_ports": 20,
            "flows": 700, "ports_sample": [22, 80, 1000], "estimated": false});
        let mut scan2 = finding("port_scan", 1, "10.0.0.5", "10.0.9.9", 800);
        scan2.evidence = json!({"low_ports": 41, "ports_sample": [9, 22]});
        let mut sweep = finding("port_sweep", 3, "10.0.0.6", "445/6", 300);
        sweep.evidence = json!({"distinct_dests": 300, "flows": 310,
            "dest_ips_sample": ["10.0.1.10", "10.0.1.9"], "estimated": false});
        let mut volume = finding("outbound_volume", 2, "10.0.0.7", "", 3 << 30);
        volume.threshold = 1.5e9;
        volume.evidence = json!({"bytes": 3u64 << 30, "expected_bytes": 2.0e8,
            "baseline_mean_bytes": 1.9e8, "baseline_stdev_bytes": 5e7, "mode": "adaptive",
            "p_value": 1e-9});
        let mut threat = finding("threat_list", 2, "fd00::8", "tor-exits", 3);
        threat.severity = "medium".into();
        let t0 = threat.hour + 60;
        threat.evidence = json!({"flows": 3, "accepted_flows": 0, "rejected_flows": 3,
            "remote_ips": ["2a02::1", "198.51.0.7"], "remote_ip_count": 2, "ports": [443, 9001],
            "first_seen": t0, "last_seen": t0 + 120});
        vec![scan, scan2, sweep, volume, threat, finding("dns_tunnel", 0, "10.0.0.9", "", 7)]
    }

    #[test]
    fn a_section_per_detection_with_its_evidence() {
        let inc = group_findings(four());
        let html = findings_part(&inc, &count_by_detection(&inc), "from <x>");
        assert!(html.contains("Other detections: 5 incidents") && html.contains("from &lt;x&gt;"));
        let sections: Vec<&str> = html.split("<section class=\"findings\"").skip(1).collect();
        let ids: Vec<&str> =
            sections.iter().map(|s| s.split('"').nth(1).unwrap()).collect::<Vec<_>>();
        assert_eq!(
            ids,
            [
                "findings-port_scan",
                "findings-port_sweep",
                "findings-outbound_volume",
                "findings-threat_list",
                "findings-dns_tunnel"
            ]
        );
        let scan = sections[0];
        assert!(scan.contains("Vertical port scans · 1 incident<"), "{scan}");
        let h = |i: i64| hour(crate::incidents::tests::H + i * 3600);
        assert!(scan.contains(&format!("{} – {} · 10.0.0.5 → 10.0.9.9<", h(0), h(1))), "{scan}");
        assert!(
            scan.contains("2 h<") && scan.contains("peak 800 distinct ports against threshold 1")
        );
        assert!(scan.contains("<td>612</td><td>≥ 1</td><td>40</td><td>≥ 20</td><td>700</td>"));
        assert!(scan.contains("<td>41</td><td>≥ –</td>"), "missing evidence is a dash: {scan}");
        // Ports of both hours, numerically, with the hours naming each.
        let ports = scan.split("Ports (the lowest of each hour) (4):").nth(1).unwrap();
        assert!(ports.starts_with(
            "</p><ul class=\"inline\"><li>9 (1/2 h)</li><li>22 (2/2 h)</li><li>80 (1/2 h)</li><li>1000 (1/2 h)</li>"
        ), "{ports}");
        let scan_ids = inc.iter().find(|i| i.detection() == "port_scan").unwrap().ids();
        assert!(scan.contains(scan_ids[1]), "the second hour's id");
        let sweep = sections[1];
        assert!(
            sweep.contains("10.0.0.6 on tcp/445") && sweep.contains("port <code>tcp/445</code>")
        );
        assert!(sweep.contains("<li>10.0.1.9</li><li>10.0.1.10</li>"), "address order: {sweep}");
        let volume = sections[2];
        assert!(
            volume.contains("<td>3.0 GiB</td><td>190.7 MiB</td><td>1.4 GiB</td><td>1.0e-9</td>"),
            "{volume}"
        );
        assert!(volume.contains("3.0 GiB sent where 190.7 MiB were expected"));
        assert!(volume.contains("peak 3.0 GiB against 1.4 GiB (alerts above)"), "{volume}");
        let threat = sections[3];
        assert!(threat.contains("class=\"finding sev-medium\""), "{threat}");
        assert!(
            threat.contains("fd00::8 ↔ list tor-exits") && threat.contains("List <b>tor-exits</b>")
        );
        assert!(threat.contains("<li>198.51.0.7</li><li>2a02::1</li>"), "IPv4 first: {threat}");
        assert!(threat.contains("<li>443</li><li>9001</li>"));
        assert!(threat.contains(&format!("first seen {}", &h(2)[..14])), "{threat}");
        assert!(threat.contains(":01:00Z · last seen") && threat.contains(":03:00Z</p>"));
        assert!(sections[4].contains("Evidence of the peak hour"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn no_findings_says_where_they_were_looked_for() {
        let html = findings_part(&[], &count_by_detection(&[]), "none in state/findings/");
        assert!(html.contains("Other detections: 0 incidents"));
        assert!(html.contains("none in state/findings/"));
        assert!(!html.contains("<section"));
    }
}
