//! The static HTML report: `index.html` listing the blocked-spike incidents newest first, each
//! with its chart, reason, expected vs observed, destinations and a link to its explain page
//! (`explain-<id>.html`, written beside it), then the other detections' incidents, a section per
//! detection ([`crate::finding_incidents`]). Inline SVG and CSS, no script, nothing fetched: it
//! reads the same from a `file://` URL or an S3 static website.
//!
//! Where the incidents come from: the spike records the run emitted (the caller reads them: the
//! state's `spikes/*.jsonl`, `--spikes` files, `demo`'s records); when there are none (a consumer
//! writes its records to Kinesis, not to the state), the detection is replayed over the history
//! with the configured settings and its records are the incidents ([`ReportInput::spikes`]
//! `None`). Either way the charts replay a detector of each incident's recorded mode over the
//! history, one pass per mode. Findings are only ever the records given
//! ([`ReportInput::findings`]: the state's `findings/`, `--findings` files, `demo`'s): this crate
//! does not run the other detections (they read the flow records, not the history).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

use flowspike_detect::{DetectConfig, Mode, Reason, Spike};
use flowspike_findings::Finding;
use flowspike_history::History;
use flowspike_model::HOUR;

use crate::explain::{Explanation, HOURS_AFTER};
use crate::finding_incidents::{count_by_detection, group_findings, FindingIncident};
use crate::findings_html::{findings_part, heading};
use crate::html::{self, escape, hour, num, pval};
use crate::incidents::{group_incidents, Incident};
use crate::timeline::{run_pass, Subject};
use crate::ReportError;

/// Chart size on both pages: wide enough for a 30-day window (about one pixel per hour).
const CHART_SIZE: (u32, u32) = (1000, 330);

/// What a report is made of.
pub struct ReportInput<'a> {
    /// The history.
    pub history: &'a History,
    /// The detection settings of a mode (the records carry their mode, not its settings).
    pub config_for: &'a dyn Fn(Mode) -> DetectConfig,
    /// The mode in force: the one replayed when there are no records.
    pub mode: Mode,
    /// The spike records the run emitted; `None`: replay the detection over the history.
    pub spikes: Option<Vec<Spike>>,
    /// Only incidents with an alerted hour in `from <= h < to`.
    pub from: Option<i64>,
    /// See `from`.
    pub to: Option<i64>,
    /// Where the records came from, in words (shown on the page).
    pub records_from: String,
    /// The other detections' findings (any order, duplicates allowed: an id counts once).
    pub findings: Vec<Finding>,
    /// Where the findings came from, or where they were looked for, in words (shown on the page).
    pub findings_from: String,
    /// The state, as the user named it (shown on the page).
    pub state: String,
}

/// What [`write_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    /// The page to open: `<dir>/index.html`.
    pub index: PathBuf,
    /// Incidents listed (one explain page each).
    pub incidents: usize,
    /// True when the incidents were replayed from the history (no records given).
    pub recomputed: bool,
    /// The other detections' incidents listed, per detection: `port_scan`, `port_sweep`,
    /// `outbound_volume`, `threat_list` (zeros included), then any other detection found.
    pub finding_incidents: Vec<(String, usize)>,
}

impl ReportSummary {
    /// The other detections' incidents in all.
    pub fn finding_incidents_total(&self) -> usize {
        self.finding_incidents.iter().map(|(_, n)| n).sum()
    }
}

/// Writes `index.html` and one `explain-<id>.html` per incident into `dir` (created if missing).
pub fn write_report(input: &ReportInput<'_>, dir: &Path) -> Result<ReportSummary, ReportError> {
    let recomputed = input.spikes.is_none();
    let spikes = match &input.spikes {
        Some(s) => s.clone(),
        None => run_pass(input.history, &(input.config_for)(input.mode), Vec::new())?.spikes,
    };
    let in_range = |h: i64| input.from.is_none_or(|f| h >= f) && input.to.is_none_or(|t| h < t);
    let incidents: Vec<Incident> = group_incidents(spikes)
        .into_iter()
        .filter(|i| i.records.iter().any(|r| in_range(r.hour)))
        .collect();
    let finding_incidents: Vec<FindingIncident> = group_findings(input.findings.clone())
        .into_iter()
        .filter(|i| i.findings.iter().any(|f| in_range(f.hour)))
        .collect();
    let counts = count_by_detection(&finding_incidents);

    // One pass per mode over the history, following every incident of that mode.
    let mut by_mode: BTreeMap<&'static str, Vec<usize>> = BTreeMap::new();
    for (i, inc) in incidents.iter().enumerate() {
        by_mode.entry(inc.mode().as_str()).or_default().push(i);
    }
    let mut explained: Vec<Option<Explanation>> = vec![None; incidents.len()];
    let mut bounds = None;
    for members in by_mode.values() {
        let cfg = (input.config_for)(incidents[members[0]].mode());
        let subjects = members.iter().map(|&i| subject(&cfg, &incidents[i])).collect();
        let pass = run_pass(input.history, &cfg, subjects)?;
        bounds = bounds.or(pass.history);
        for (&i, series) in members.iter().zip(pass.series) {
            let inc = &incidents[i];
            explained[i] = Some(Explanation::of_incident(
                cfg.clone(),
                inc.peak().hour,
                series,
                inc.records.clone(),
                pass.history.unwrap_or((inc.first_hour(), inc.last_hour())),
            ));
        }
    }

    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let names = page_names(&incidents);
    let mut sections = String::new();
    for ((inc, e), name) in incidents.iter().zip(&explained).zip(&names) {
        let e = e.as_ref().expect("every incident's mode had a pass");
        let svg = e.svg(CHART_SIZE)?;
        let charts = [svg, e.zoom_svg((CHART_SIZE.0, 280))?];
        let page = html::page(
            &format!("flowspike explain {} at {}", inc.subject_label(), hour(e.focus)),
            &e.html_body(Some("index.html"), &charts),
        );
        let svg = &charts[0];
        write(&dir.join(name), &page)?;
        sections.push_str(&section(inc, svg, name));
    }
    sections.push_str(&findings_part(&finding_incidents, &counts, &input.findings_from));
    let body = index_body(input, (&incidents, &counts), bounds, recomputed, &sections);
    let index = dir.join("index.html");
    write(&index, &html::page("flowspike report", &body))?;
    Ok(ReportSummary { index, incidents: incidents.len(), recomputed, finding_incidents: counts })
}

/// The subject of an incident: its sources over the baseline window before its first hour to
/// [`HOURS_AFTER`] after its last; its hours' rows kept.
fn subject(cfg: &DetectConfig, inc: &Incident) -> Subject {
    let from = inc.first_hour() - i64::from(cfg.window_hours) * HOUR;
    Subject {
        sources: inc.sources(),
        span: Some((from, inc.last_hour() + (HOURS_AFTER + 1) * HOUR)),
        detail_hours: inc.hours(),
    }
}

/// File names of the explain pages: `explain-<id>.html`, the id reduced to `[0-9A-Za-z_-]`,
/// a suffix when two incidents share one (an id seen again after its episode closed).
fn page_names(incidents: &[Incident]) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    incidents
        .iter()
        .map(|inc| {
            let id: String = inc
                .id()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .take(64)
                .collect();
            let mut name = format!("explain-{id}.html");
            let mut n = 2;
            while !seen.insert(name.clone()) {
                name = format!("explain-{id}-{n}.html");
                n += 1;
            }
            name
        })
        .collect()
}

/// Why an incident was raised, in words, from its peak record.
fn reason_text(inc: &Incident) -> String {
    let p = inc.peak();
    let pv = p
        .p_value
        .map(|v| {
            let t = pval(v);
            let op = if t.starts_with('<') { "" } else { "= " };
            format!(", P(X ≥ {}) {op}{t}", p.blocked_count)
        })
        .unwrap_or_default();
    let expected = p.expected.map_or_else(|| num(p.baseline_mean), num);
    match p.reason {
        Some(Reason::Spike) => format!(
            "Far above its own model for this hour of the week: {} blocked flows where {} were expected{pv}.",
            p.blocked_count, expected
        ),
        Some(Reason::NewSource) => format!(
            "A source not seen before (or silent for 90 days) whose first hour is far above what new sources of the fleet do: {} blocked flows where {} were expected{pv}.",
            p.blocked_count, expected
        ),
        Some(Reason::Ramp) => format!(
            "A ramp: its last hours together are far above its model ({} blocked flows in the hour, {} expected){pv}.",
            p.blocked_count, expected
        ),
        Some(Reason::Fleet) => format!(
            "{} sources rose together towards {} in the same hour: {} blocked flows where {} were expected in total.",
            p.source_count,
            p.dest_ips.first().map_or("one destination", String::as_str),
            p.blocked_count,
            expected
        ),
        None => format!(
            "Above Splunk ESCU's threshold ({} mode): {} blocked flows > mean {} + deviations × stdev {} = {} over {} data points.",
            p.mode,
            p.blocked_count,
            num(p.baseline_mean),
            num(p.baseline_stdev),
            num(p.threshold),
            p.data_points
        ),
    }
}

/// One incident's section of the index.
fn section(inc: &Incident, svg: &str, page: &str) -> String {
    let mut s = String::new();
    let fleet = if inc.is_fleet() { " fleet" } else { "" };
    let _ = write!(s, "<section class=\"incident{fleet}\" id=\"incident-{}\">", escape(inc.id()));
    let when = if inc.first_hour() == inc.last_hour() {
        hour(inc.first_hour())
    } else {
        format!("{} – {}", hour(inc.first_hour()), hour(inc.last_hour()))
    };
    let reason = inc.peak().reason.map_or("threshold", Reason::as_str);
    let _ = write!(
        s,
        "<h2>{} · {}<span class=\"badge\">{}</span><span class=\"badge\">{} mode</span></h2>",
        escape(&when),
        escape(&inc.subject_label()),
        reason,
        inc.mode()
    );
    let _ = write!(s, "<p class=\"reason\">{}</p>", escape(&reason_text(inc)));
    s.push_str("<table><tr><th class=\"l\">hour</th><th>observed</th><th>expected</th><th>alerts above</th><th>p</th><th>destinations</th></tr>");
    for r in &inc.records {
        let expected = r
            .expected
            .map_or_else(|| format!("{} ± {}", num(r.baseline_mean), num(r.baseline_stdev)), num);
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            hour(r.hour),
            r.blocked_count,
            escape(&expected),
            // A fleet record's threshold is the number of sources a fleet incident needs.
            if r.reason == Some(Reason::Fleet) {
                format!("{} sources", num(r.threshold))
            } else {
                num(r.threshold)
            },
            r.p_value.map_or("–".into(), pval),
            r.unique_dest_count
        );
    }
    s.push_str("</table>");
    let _ = write!(s, "<div class=\"chart\">{svg}</div>");
    if inc.is_fleet() {
        let sources: Vec<(String, usize)> = inc.sources().into_iter().map(|x| (x, 1)).collect();
        let _ = write!(s, "<p class=\"meta\">Sources ({}):</p>", sources.len());
        s.push_str(&html::ranked_list(&sources, 1, 60));
    }
    let hours = inc.records.len();
    let _ =
        write!(s, "<p class=\"meta\">Destinations ({} distinct):</p>", inc.destinations().len());
    s.push_str(&html::ranked_list(&inc.destinations(), hours, 12));
    let _ = write!(s, "<p class=\"meta\">Interfaces:</p>");
    s.push_str(&html::ranked_list(&inc.interfaces(), hours, 8));
    let _ =
        write!(s, "<p><a class=\"explain\" href=\"{}\">explain →</a></p></section>", escape(page));
    s
}

fn index_body(
    input: &ReportInput<'_>,
    (incidents, finding_counts): (&[Incident], &[(String, usize)]),
    bounds: Option<(i64, i64)>,
    recomputed: bool,
    sections: &str,
) -> String {
    let mut b = String::from("<header><h1>flowspike: incidents</h1>");
    let _ = write!(b, "<p>State: {}", escape(&input.state));
    if let Some((f, l)) =
        bounds.or_else(|| input.history.hours().ok().and_then(|h| Some((*h.first()?, *h.last()?))))
    {
        let _ = write!(b, " · history {} – {}", hour(f), hour(l));
    }
    b.push_str("</p>");
    let range = match (input.from, input.to) {
        (None, None) => String::new(),
        (f, t) => format!(
            " between {} and {}",
            f.map_or("the start".into(), hour),
            t.map_or("the end".into(), hour)
        ),
    };
    let origin = if recomputed {
        format!(
            "replayed from the history in {} mode ({})",
            input.mode,
            escape(&input.records_from)
        )
    } else {
        format!("from {}", escape(&input.records_from))
    };
    let _ = write!(
        b,
        "<p>{} blocked outbound incident{}{range}, newest first; records {origin}.</p>",
        incidents.len(),
        if incidents.len() == 1 { "" } else { "s" }
    );
    // The other detections at a glance, each linking to its section.
    let glance: Vec<String> = finding_counts
        .iter()
        .map(|(d, n)| {
            let name = escape(heading(d));
            if *n == 0 {
                format!("{name}: 0")
            } else {
                format!("<a href=\"#findings-{}\">{name}: {n}</a>", escape(d))
            }
        })
        .collect();
    let _ = write!(
        b,
        "<p class=\"glance\">Other detections (<a href=\"#findings\">incidents</a>): {}</p>",
        glance.join(" · ")
    );
    let mut modes: Vec<Mode> = incidents.iter().map(Incident::mode).collect();
    modes.dedup();
    modes.sort_by_key(|m| m.as_str());
    modes.dedup();
    for m in modes {
        let _ = write!(
            b,
            "<p class=\"meta\">Mode: {}</p>",
            escape(&html::describe_config(&(input.config_for)(m)))
        );
    }
    b.push_str("<p class=\"meta\">Each chart: the observed blocked flows per hour, the band expected ± one standard deviation and the alert threshold as the detector had them before each hour, the incident's hours shaded, alerts dotted.</p></header><main>");
    if incidents.is_empty() {
        b.push_str("<p>No blocked outbound incidents.</p>");
    }
    b.push_str(sections);
    b.push_str("</main>");
    b
}

fn io_err(path: &Path, source: std::io::Error) -> ReportError {
    ReportError::Io { path: path.display().to_string(), source }
}

fn write(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::read_spike_lines;
    use crate::tests::{history_with, row};
    use flowspike_model::AggregateRow;

    /// Three weeks of two sources, 10.0.0.1 bursting at hours 200-201 and 300, and ten sources
    /// rising together towards one destination at hour 400 (a fleet incident in adaptive mode).
    fn rows() -> Vec<AggregateRow> {
        let mut rows = Vec::new();
        for h in 0..420 {
            for s in 1..=12 {
                let src = format!("10.0.0.{s}");
                let mut c = 2 + ((h + s) as u64 % 3);
                let mut dests = vec![format!("198.51.100.{s}")];
                if s == 1 && (h == 200 || h == 201 || h == 300) {
                    c = 90;
                    dests.push(format!("203.0.113.{}", h % 7));
                }
                if s >= 3 && h == 400 {
                    c = 60;
                    dests.push("52.1.2.3".into());
                }
                let d: Vec<&str> = dests.iter().map(String::as_str).collect();
                rows.push(row(h, &src, c, &d));
            }
        }
        rows
    }

    fn config_for(m: Mode) -> DetectConfig {
        DetectConfig::for_mode(m)
    }

    #[test]
    fn report_lists_incidents_newest_first_with_one_chart_each() {
        let (_dir, history) = history_with(&rows());
        let out = tempfile::tempdir().unwrap();
        let input = ReportInput {
            history: &history,
            config_for: &config_for,
            mode: Mode::Adaptive,
            spikes: None,
            from: None,
            to: None,
            records_from: "no records in the state".into(),
            findings: Vec::new(),
            findings_from: "none in test-state/findings/".into(),
            state: "test-state".into(),
        };
        let summary = write_report(&input, out.path()).unwrap();
        assert!(summary.recomputed);
        assert_eq!(summary.finding_incidents_total(), 0);
        let index = std::fs::read_to_string(&summary.index).unwrap();
        assert!(index.contains("Other detections: 0 incidents"), "{index}");
        assert!(index.contains("Findings none in test-state/findings/."));
        assert!(index.contains("Vertical port scans: 0 · Port sweeps: 0"), "no link to no section");
        let sections: Vec<&str> = index.split("<section class=\"incident").skip(1).collect();
        assert_eq!(sections.len(), summary.incidents);
        assert!(summary.incidents >= 3, "{index}");
        // Newest first: the fleet incident (hour 400), then 10.0.0.1's burst at 300, then 200-201.
        assert!(sections[0].starts_with(" fleet"), "{}", &sections[0][..200]);
        assert!(sections[0].contains("fleet → 52.1.2.3"));
        assert!(sections[0].contains("10.0.0.12"), "fleet incidents list their sources");
        assert!(sections[0].contains("<td>5 sources</td>"), "a fleet needs 5 sources");
        let burst = sections
            .iter()
            .position(|s| s.contains("10.0.0.1 <") || s.contains("· 10.0.0.1<"))
            .unwrap();
        assert!(sections[burst].contains("1970-01-13T12:00:00Z"), "hour 300");
        for s in &sections {
            assert_eq!(s.matches("<svg").count(), 1, "one chart per incident");
            let link = s.split("href=\"").nth(1).unwrap().split('"').next().unwrap();
            let page = std::fs::read_to_string(out.path().join(link)).unwrap();
            assert_eq!(page.matches("<svg").count(), 2);
            assert!(page.contains("href=\"index.html\""));
        }
        assert!(!index.contains("<script"));
    }

    #[test]
    fn recorded_spikes_are_the_incidents_and_the_range_filters_them() {
        let (_dir, history) = history_with(&rows());
        let window = |m: Mode| DetectConfig { window_hours: 168, ..DetectConfig::for_mode(m) };
        let spikes = run_pass(&history, &window(Mode::Window), Vec::new()).unwrap().spikes;
        let lines: String = spikes.iter().map(|s| s.to_json_line() + "\n").collect();
        let (spikes, bad) = read_spike_lines(lines.as_bytes());
        assert_eq!(bad, 0);
        let out = tempfile::tempdir().unwrap();
        let input = ReportInput {
            history: &history,
            config_for: &window,
            mode: Mode::Adaptive,
            spikes: Some(spikes),
            from: Some(250 * HOUR),
            to: Some(350 * HOUR),
            records_from: "spikes.jsonl".into(),
            findings: findings(),
            findings_from: "from findings.jsonl".into(),
            state: "test-state".into(),
        };
        let summary = write_report(&input, out.path()).unwrap();
        assert!(!summary.recomputed);
        assert_eq!(summary.incidents, 1, "only the burst at hour 300 is in the range");
        let index = std::fs::read_to_string(&summary.index).unwrap();
        assert!(index.contains("window mode") && index.contains("Above Splunk ESCU"), "{index}");
        assert!(index.contains("203.0.113.6"), "the burst's destination (300 % 7)");
        // The findings in the range, the scan's two hours one incident, the sweep out of range.
        let want =
            [("port_scan", 1), ("port_sweep", 0), ("outbound_volume", 0), ("threat_list", 1)];
        assert_eq!(summary.finding_incidents, want.map(|(d, n)| (d.to_string(), n)));
        assert_eq!(summary.finding_incidents_total(), 2);
        assert!(index.contains("<a href=\"#findings-port_scan\">Vertical port scans: 1</a>"));
        assert!(index.contains("Port sweeps: 0 ·"), "{index}");
        let part = index.split("<div class=\"part\" id=\"findings\">").nth(1).unwrap();
        assert!(
            part.contains("Other detections: 2 incidents") && part.contains("from findings.jsonl")
        );
        assert_eq!(part.matches("<article class=\"finding").count(), 2);
        assert!(part.find("findings-port_scan") < part.find("findings-threat_list"));
        assert!(!part.contains("10.0.0.66"), "the sweep at hour 100 is out of the range");
    }

    /// A port scan at hours 300-301 (read twice), a sweep at hour 100, a threat-list match at 320.
    fn findings() -> Vec<Finding> {
        let f = |d: &str, h: i64, src: &str, subject: &str, count: u64| {
            let mut f = Finding::new(
                d,
                h * HOUR,
                src,
                subject,
                format!("{src} {d}"),
                (count, 1.0),
                serde_json::json!({}),
            );
            match d {
                "port_scan" => f.dst_ip = Some(subject.into()),
                "port_sweep" => (f.dst_port, f.protocol) = (Some(22), Some(6)),
                _ => f.list = Some(subject.into()),
            }
            f
        };
        let scan = f("port_scan", 300, "10.0.0.1", "10.0.0.2", 600);
        vec![
            scan.clone(),
            f("port_scan", 301, "10.0.0.1", "10.0.0.2", 650),
            scan,
            f("port_sweep", 100, "10.0.0.66", "22/6", 300),
            f("threat_list", 320, "10.0.0.3", "tor-exits", 2),
        ]
    }

    #[test]
    fn page_names_are_safe_and_unique() {
        use crate::incidents::tests::spike;
        let mut a = spike(Mode::Window, 0, "10.0.0.1", 9, &[]);
        a.id = "../../etc/passwd".into();
        let mut b = spike(Mode::Window, 9, "10.0.0.1", 9, &[]);
        b.id = a.id.clone();
        let inc = group_incidents(vec![a, b]);
        assert_eq!(page_names(&inc), ["explain-etcpasswd.html", "explain-etcpasswd-2.html"]);
    }
}
