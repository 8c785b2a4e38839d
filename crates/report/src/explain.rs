//! `flowspike explain`: one source (or a fleet incident's sources) around one hour: its hourly
//! blocked counts over the baseline window against the band and the threshold of the mode in
//! force, its alerts, and what its alerted hours blocked (destinations, interfaces, bytes).

use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

use flowspike_detect::incident::EPISODE_MAX_GAP_HOURS;
use flowspike_detect::{DetectConfig, Spike};
use flowspike_history::History;
use flowspike_model::{AggregateRow, HOUR};

use crate::chart::{render_svg, ChartOptions};
use crate::html::{self, escape, hour, num, pval, NOT_IN_HISTORY};
use crate::incidents::rank;
use crate::timeline::{run_pass, HourPoint, Series, Subject};
use crate::ReportError;

/// Hours drawn after the hour explained (the baseline window is drawn before it).
pub const HOURS_AFTER: i64 = 24;

/// Hours before the hour explained in the second, zoomed chart of an explain page.
pub const ZOOM_BEFORE: i64 = 72;

/// The forms `flowspike explain` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// Plain text (standard output).
    Text,
    /// The chart alone, an SVG file.
    Svg,
    /// A self-contained HTML page: the summary, the chart inline, the tables.
    Html,
}

impl OutputKind {
    /// The kind of an output file by its extension (`.svg`, `.html`/`.htm`).
    pub fn from_path(path: &Path) -> Result<OutputKind, ReportError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(OutputKind::Svg),
            Some("html" | "htm") => Ok(OutputKind::Html),
            _ => Err(ReportError::OutputKind(path.display().to_string())),
        }
    }
}

/// One subject around one hour, ready to print or draw.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The detection settings replayed (the mode in force).
    pub config: DetectConfig,
    /// The hour explained.
    pub focus: i64,
    /// The hours drawn: the baseline window before `focus`, [`HOURS_AFTER`] after it (within the
    /// history), with the alerts the replayed detector raised in them.
    pub series: Series,
    /// The hours shaded: the incident's (report) or the run of alerts around `focus` (gaps of at
    /// most one quiet hour), else `focus` alone.
    pub highlight: BTreeSet<i64>,
    /// The recorded spikes of the incident, when explaining one (their reasons and p-values are
    /// shown as recorded).
    pub recorded: Vec<Spike>,
    /// First and last hour of the history.
    pub history: (i64, i64),
}

/// Explains `src_ip` around `hour` (default: its latest alert, else its latest active hour) with
/// a detector of `cfg` replayed over `history`.
pub fn explain(
    history: &History,
    cfg: &DetectConfig,
    src_ip: &str,
    hour: Option<i64>,
) -> Result<Explanation, ReportError> {
    let mut subject = Subject::source(src_ip, None);
    subject.detail_hours.extend(hour);
    let pass = run_pass(history, cfg, vec![subject])?;
    let series = pass.series.into_iter().next().expect("one subject, one series");
    let Some(bounds) = pass.history else {
        return Err(ReportError::UnknownSource(src_ip.to_string()));
    };
    let last_active = series.points.iter().rev().find(|p| p.count > 0).map(|p| p.hour);
    let Some(last_active) = last_active else {
        return Err(ReportError::UnknownSource(src_ip.to_string()));
    };
    let focus = hour
        .map(|h| h.div_euclid(HOUR) * HOUR)
        .unwrap_or_else(|| series.alerts.last().map_or(last_active, |s| s.hour));
    let mut series = series;
    if let std::collections::btree_map::Entry::Vacant(e) = series.rows.entry(focus) {
        // The hour explained is no alert: its rows were not kept by the pass.
        e.insert(history.read_hour(focus)?.into_iter().filter(|r| r.src_ip == src_ip).collect());
    }
    let span = window(cfg, focus);
    let series = clip(series, span);
    let highlight = alert_run(&series.alerts, focus);
    Ok(Explanation {
        config: cfg.clone(),
        focus,
        series,
        highlight,
        recorded: Vec::new(),
        history: bounds,
    })
}

/// The hours drawn around `focus`: the baseline window before it, [`HOURS_AFTER`] after it.
pub fn window(cfg: &DetectConfig, focus: i64) -> (i64, i64) {
    (focus - i64::from(cfg.window_hours) * HOUR, focus + (HOURS_AFTER + 1) * HOUR)
}

/// `series` restricted to the hours `span.0 <= h < span.1`.
fn clip(mut s: Series, span: (i64, i64)) -> Series {
    let inside = |h: i64| (span.0..span.1).contains(&h);
    s.points.retain(|p| inside(p.hour));
    s.alerts.retain(|a| inside(a.hour));
    s.rows.retain(|h, _| inside(*h));
    s.subject.span = Some(span);
    s
}

/// The alerted hours around `focus` that follow each other with at most
/// `EPISODE_MAX_GAP_HOURS` quiet hours between (the episode rule); `{focus}` when it is no alert.
fn alert_run(alerts: &[Spike], focus: i64) -> BTreeSet<i64> {
    let hours: BTreeSet<i64> = alerts.iter().map(|a| a.hour).collect();
    let mut run = BTreeSet::from([focus]);
    if !hours.contains(&focus) {
        return run;
    }
    let reach = (EPISODE_MAX_GAP_HOURS + 1) * HOUR;
    let mut edge = focus;
    while let Some(&h) = hours.range(..edge).next_back().filter(|&&h| edge - h <= reach) {
        run.insert(h);
        edge = h;
    }
    edge = focus;
    while let Some(&h) = hours.range(edge + 1..).next().filter(|&&h| h - edge <= reach) {
        run.insert(h);
        edge = h;
    }
    run
}

/// One alerted hour as shown: the point and what the records and rows say of it.
struct AlertHour<'a> {
    point: Option<&'a HourPoint>,
    hour: i64,
    /// The record of that hour (recorded for an incident, else the replayed detector's).
    record: Option<&'a Spike>,
    rows: &'a [AggregateRow],
}

impl Explanation {
    /// Builds the explanation of an incident from a series the report's pass made (its span
    /// already the window around `focus`).
    pub fn of_incident(
        config: DetectConfig,
        focus: i64,
        series: Series,
        recorded: Vec<Spike>,
        history: (i64, i64),
    ) -> Explanation {
        let highlight = recorded.iter().map(|s| s.hour).collect();
        Explanation { config, focus, series, highlight, recorded, history }
    }

    /// What the subject is: its source, or the sources of a fleet incident.
    pub fn label(&self) -> String {
        match &self.series.subject.sources[..] {
            [one] => one.clone(),
            many => format!("{} sources", many.len()),
        }
    }

    /// The hours described in the tables: the highlighted ones and every alert drawn.
    fn alert_hours(&self) -> Vec<AlertHour<'_>> {
        let mut hours: BTreeSet<i64> = self.highlight.clone();
        hours.extend(self.series.alerts.iter().map(|a| a.hour));
        hours
            .into_iter()
            .map(|h| {
                let record = self
                    .recorded
                    .iter()
                    .find(|s| s.hour == h)
                    .or_else(|| self.series.alerts.iter().find(|s| s.hour == h));
                AlertHour {
                    point: self.series.point(h),
                    hour: h,
                    record,
                    rows: self.series.rows.get(&h).map_or(&[], Vec::as_slice),
                }
            })
            .collect()
    }

    /// The rows of the highlighted hours (what the incident blocked).
    fn highlighted_rows(&self) -> impl Iterator<Item = &AggregateRow> {
        self.highlight.iter().filter_map(|h| self.series.rows.get(h)).flatten()
    }

    /// Destinations of the highlighted hours, ranked by the hours naming them.
    pub fn top_destinations(&self) -> Vec<(String, usize)> {
        rank(self.highlighted_rows().flat_map(|r| &r.dest_ips))
    }

    /// Interface ids of the highlighted hours, ranked likewise.
    pub fn top_interfaces(&self) -> Vec<(String, usize)> {
        rank(self.highlighted_rows().flat_map(|r| &r.interface_ids))
    }

    /// The chart, as one `<svg>` element of `size` pixels.
    pub fn svg(&self, size: (u32, u32)) -> Result<String, ReportError> {
        let opts = ChartOptions {
            size,
            caption: format!(
                "{} — blocked outbound flows per hour ({} mode)",
                self.label(),
                self.config.mode
            ),
            highlight: self.highlight.clone(),
            alerts: self
                .series
                .alerts
                .iter()
                .map(|a| a.hour)
                .chain(self.recorded.iter().map(|a| a.hour))
                .collect(),
        };
        render_svg(&self.series, &opts)
    }

    /// The chart of the hours around the one explained ([`ZOOM_BEFORE`] hours before it,
    /// [`HOURS_AFTER`] after): the band and the threshold of each hour legible.
    pub fn zoom_svg(&self, size: (u32, u32)) -> Result<String, ReportError> {
        let mut zoom = self.series.clone();
        let span = (self.focus - ZOOM_BEFORE * HOUR, self.focus + (HOURS_AFTER + 1) * HOUR);
        zoom.points.retain(|p| (span.0..span.1).contains(&p.hour));
        let opts = ChartOptions {
            size,
            caption: format!("{} — the hours around {}", self.label(), hour(self.focus)),
            highlight: self.highlight.clone(),
            alerts: self.alert_marks(),
        };
        render_svg(&zoom, &opts)
    }

    /// The hours marked as alerts: the replayed detector's and the recorded ones.
    fn alert_marks(&self) -> BTreeSet<i64> {
        self.series.alerts.iter().chain(&self.recorded).map(|a| a.hour).collect()
    }

    /// The plain-text summary `flowspike explain` prints without `--out`.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{}: blocked outbound flows per hour", self.label());
        if self.series.subject.sources.len() > 1 {
            let _ = writeln!(o, "sources: {}", self.series.subject.sources.join(", "));
        }
        let _ = writeln!(o, "mode: {}", html::describe_config(&self.config));
        let (first, last) = (self.series.points.first(), self.series.points.last());
        let _ = writeln!(
            o,
            "history {} – {}; shown {} – {} ({} hours)",
            hour(self.history.0),
            hour(self.history.1),
            first.map_or_else(String::new, |p| hour(p.hour)),
            last.map_or_else(String::new, |p| hour(p.hour)),
            self.series.points.len()
        );
        let _ = writeln!(
            o,
            "hour explained: {}",
            describe_point(self.series.point(self.focus), self.focus)
        );
        let alerts = self.alert_hours();
        let n_alerts = self.series.alerts.len().max(self.recorded.len());
        let _ = writeln!(o, "\nalerts in the window: {n_alerts}");
        let _ = writeln!(
            o,
            "  {:<21} {:>9} {:>9} {:>13} {:>8} {:<10} {:>8} {:>6} {:>9}",
            "hour", "observed", "expected", "band", "alert at", "reason", "p", "dests", "bytes"
        );
        for a in &alerts {
            let (exp, band, at) = figures(a.point);
            let (reason, p) = record_figures(a.record);
            let dests: u64 = a.rows.iter().map(|r| r.unique_dest_count).sum();
            let bytes: u64 = a.rows.iter().map(|r| r.bytes).sum();
            let _ = writeln!(
                o,
                "  {:<21} {:>9} {:>9} {:>13} {:>8} {:<10} {:>8} {:>6} {:>9}",
                hour(a.hour),
                a.point.map_or(0, |p| p.count),
                exp,
                band,
                at,
                reason,
                p,
                dests,
                bytes
            );
        }
        let shaded = self.highlight.len();
        let _ = writeln!(
            o,
            "\ntop destinations of the hours explained ({shaded} h; hours naming each):"
        );
        for (d, n) in self.top_destinations().iter().take(10) {
            let _ = writeln!(o, "  {d:<40} {n}");
        }
        let more = self.top_destinations().len().saturating_sub(10);
        if more > 0 {
            let _ = writeln!(o, "  … {more} more");
        }
        let _ = writeln!(o, "interfaces:");
        for (i, n) in self.top_interfaces() {
            let _ = writeln!(o, "  {i:<40} {n}");
        }
        let _ = writeln!(o, "\nhours around it:");
        let _ = writeln!(
            o,
            "  {:<21} {:>9} {:>9} {:>13} {:>8}",
            "hour", "observed", "expected", "band", "alert at"
        );
        for p in self.series.points.iter().filter(|p| (p.hour - self.focus).abs() <= 6 * HOUR) {
            let (exp, band, at) = figures(Some(p));
            let mark = if self.highlight.contains(&p.hour) { "  <" } else { "" };
            let _ = writeln!(
                o,
                "  {:<21} {:>9} {:>9} {:>13} {:>8}{mark}",
                hour(p.hour),
                p.count,
                exp,
                band,
                at
            );
        }
        let _ = writeln!(o, "\n{NOT_IN_HISTORY}");
        o
    }

    /// The body of the HTML page (the `charts` inline), for [`Explanation::to_html`] and the
    /// report.
    pub(crate) fn html_body(&self, back: Option<&str>, charts: &[String]) -> String {
        let mut b = String::new();
        if let Some(back) = back {
            let _ = write!(b, "<p><a href=\"{}\">← all incidents</a></p>", escape(back));
        }
        let _ = write!(b, "<header><h1>{}</h1>", escape(&format!("explain {}", self.label())));
        let _ = write!(b, "<p>Mode: {}</p>", escape(&html::describe_config(&self.config)));
        let _ = write!(
            b,
            "<p>Hour explained: {}</p></header>",
            escape(&describe_point(self.series.point(self.focus), self.focus))
        );
        if self.series.subject.sources.len() > 1 {
            let _ = write!(b, "<h2>Sources ({})</h2>", self.series.subject.sources.len());
            let list: Vec<(String, usize)> =
                self.series.subject.sources.iter().map(|s| (s.clone(), 1)).collect();
            b.push_str(&html::ranked_list(&list, 1, usize::MAX));
        }
        for svg in charts {
            let _ = write!(b, "<div class=\"chart\">{svg}</div>");
        }
        b.push_str("<h2>Alerted hours</h2><table><tr><th class=\"l\">hour</th><th>observed</th><th>expected</th><th>band</th><th>alert at</th><th class=\"l\">reason</th><th>p</th><th>destinations</th><th>bytes</th><th>packets</th></tr>");
        for a in self.alert_hours() {
            let (exp, band, at) = figures(a.point);
            let (reason, p) = record_figures(a.record);
            let dests: u64 = a.rows.iter().map(|r| r.unique_dest_count).sum();
            let truncated =
                if a.rows.iter().any(|r| r.dest_ips_truncated) { " (est.)" } else { "" };
            let _ = write!(
                b,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                hour(a.hour),
                a.point.map_or(0, |p| p.count),
                exp,
                escape(&band),
                at,
                reason,
                p,
                dests,
                truncated,
                a.rows.iter().map(|r| r.bytes).sum::<u64>(),
                a.rows.iter().map(|r| r.packets).sum::<u64>()
            );
        }
        b.push_str("</table>");
        let shaded = self.highlight.len();
        let _ = write!(b, "<h2>Top destinations of the hours explained</h2>");
        b.push_str(&html::ranked_list(&self.top_destinations(), shaded, 25));
        b.push_str("<h2>Interfaces</h2>");
        b.push_str(&html::ranked_list(&self.top_interfaces(), shaded, 25));
        let _ = write!(b, "<p class=\"na\">{}</p>", escape(NOT_IN_HISTORY));
        b
    }

    /// A self-contained HTML page (no script, nothing loaded).
    pub fn to_html(&self) -> Result<String, ReportError> {
        let charts = [self.svg((1000, 380))?, self.zoom_svg((1000, 300))?];
        Ok(html::page(
            &format!("flowspike explain {}", self.label()),
            &self.html_body(None, &charts),
        ))
    }
}

/// `observed … expected … (band …), alerts at ≥ …` of one hour.
fn describe_point(p: Option<&HourPoint>, h: i64) -> String {
    let Some(p) = p else { return format!("{} (outside the history)", hour(h)) };
    let (exp, band, at) = figures(Some(p));
    format!("{}: observed {}, expected {exp} (band {band}), alerts at ≥ {at}", hour(h), p.count)
}

/// Expected count, band and threshold of a point as text (`–` when unknown).
fn figures(p: Option<&HourPoint>) -> (String, String, String) {
    match p.and_then(|p| p.expectation) {
        Some(e) => {
            let (lo, hi) = e.band();
            (
                num(e.expected),
                format!("{}–{}", num(lo), num(hi)),
                e.alert_at.map_or("–".into(), |t| t.to_string()),
            )
        }
        None => ("–".into(), "–".into(), "–".into()),
    }
}

/// Reason and p-value of a record as text.
fn record_figures(r: Option<&Spike>) -> (String, String) {
    match r {
        Some(s) => (
            s.reason.map_or_else(|| format!("{} rule", s.mode), |r| r.as_str().to_string()),
            s.p_value.map_or("–".into(), pval),
        ),
        None => ("–".into(), "–".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{history_with, row};
    use flowspike_detect::Mode;

    fn burst_history() -> (tempfile::TempDir, History) {
        let mut rows: Vec<AggregateRow> =
            (0..30).map(|h| row(h, "10.0.0.1", 2 + (h as u64 % 3), &["198.51.100.1"])).collect();
        rows.push(row(30, "10.0.0.1", 80, &["198.51.100.1", "203.0.113.9"]));
        rows.push(row(31, "10.0.0.1", 60, &["203.0.113.9"]));
        rows.extend((32..40).map(|h| row(h, "10.0.0.1", 3, &["198.51.100.1"])));
        rows.extend((0..40).map(|h| row(h, "10.0.0.2", 1, &["198.51.100.1"])));
        history_with(&rows)
    }

    #[test]
    fn explains_the_latest_alert_by_default() {
        let (_dir, history) = burst_history();
        let cfg = DetectConfig::for_mode(Mode::Window);
        let e = explain(&history, &cfg, "10.0.0.1", None).unwrap();
        assert_eq!(e.focus, 31 * HOUR, "the latest alert");
        assert_eq!(e.highlight, BTreeSet::from([30 * HOUR, 31 * HOUR]), "its run of alerts");
        assert_eq!(e.series.points.len(), 40, "the whole (short) history, quiet hours included");
        assert_eq!(
            e.top_destinations(),
            vec![("203.0.113.9".to_string(), 2), ("198.51.100.1".to_string(), 1)]
        );
        assert_eq!(e.top_interfaces(), vec![("eni-10001".to_string(), 2)]);
        let text = e.to_text();
        assert!(text.contains("alerts in the window: 2"), "{text}");
        let burst: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("  1970-01-02T06:00:00Z"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(burst[1..6], ["80", "3", "2.2–3.8", "6", "window"], "{text}");
        assert!(text.contains("203.0.113.9"), "{text}");
        assert!(text.contains("Not in the history: destination ports"), "{text}");
        let page = e.to_html().unwrap();
        assert_eq!(page.matches("<svg").count(), 2, "the window and the hours around the focus");
        assert!(!page.contains("<script"));
    }

    #[test]
    fn explains_a_given_quiet_hour_and_knows_unknown_sources() {
        let (_dir, history) = burst_history();
        let cfg = DetectConfig::for_mode(Mode::Window);
        let e = explain(&history, &cfg, "10.0.0.1", Some(35 * HOUR + 120)).unwrap();
        assert_eq!(e.focus, 35 * HOUR, "rounded down to its hour");
        assert_eq!(e.highlight, BTreeSet::from([35 * HOUR]));
        assert_eq!(e.top_destinations(), vec![("198.51.100.1".to_string(), 1)], "its row was read");
        assert!(matches!(
            explain(&history, &cfg, "10.9.9.9", None),
            Err(ReportError::UnknownSource(s)) if s == "10.9.9.9"
        ));
    }

    #[test]
    fn output_kinds_by_extension() {
        assert_eq!(OutputKind::from_path(Path::new("a/b.SVG")).unwrap(), OutputKind::Svg);
        assert_eq!(OutputKind::from_path(Path::new("b.html")).unwrap(), OutputKind::Html);
        assert!(matches!(
            OutputKind::from_path(Path::new("b.png")),
            Err(ReportError::OutputKind(_))
        ));
    }
}
