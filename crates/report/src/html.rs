//! The pieces of the static pages: escaping, the page frame with its inline style sheet, number
//! and hour formats shared by the text and HTML outputs.

use std::fmt::Write;

use flowspike_detect::{format_hour, DetectConfig, Mode};

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The inline style sheet: the pages load nothing (no CDN, no font, no script), so they read the
/// same from a `file://` URL, an S3 static website or a mail attachment.
const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1080px;padding:16px 24px;color:#212529;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:.2em 0 .4em}
header p,.meta{color:#555;margin:.2em 0}
.incident{border:1px solid #dee2e6;border-left:5px solid #ff7f0e;border-radius:6px;padding:12px 16px;margin:18px 0}
.incident.fleet{border-left-color:#d62728}
.reason{margin:.3em 0 .6em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
th,td{padding:3px 10px;text-align:right;border-bottom:1px solid #eee}
th{background:#f5f5f5}td.l,th.l{text-align:left}
.chart svg{max-width:100%;height:auto}
ul.inline{list-style:none;padding:0;margin:.2em 0}ul.inline li{display:inline-block;margin:0 12px 2px 0;font-family:ui-monospace,monospace;font-size:.88em}
.na{color:#777;font-size:.88em}
a{color:#1f77b4}
.badge{display:inline-block;padding:0 6px;border-radius:4px;background:#fff3e6;color:#a04b00;font-size:.85em;margin-left:6px}
.part{margin-top:28px;border-top:2px solid #dee2e6;padding-top:6px}
.findings>h2{margin-top:18px}
h3{font-size:1.05em;margin:.2em 0 .4em}
.finding{border:1px solid #dee2e6;border-left:5px solid #9467bd;border-radius:6px;padding:10px 16px;margin:14px 0}
.finding.sev-high,.finding.sev-critical{border-left-color:#d62728}
.badge.sev-high,.badge.sev-critical{background:#fde2e1;color:#a1141a}
code{font-family:ui-monospace,monospace;font-size:.92em}
";

/// A whole page: `title` and the already escaped `body`.
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"flowspike {}\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n{body}\n</body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
        escape(title),
    )
}

/// A number of flows with at most one decimal (`3.1`, `412`).
pub(crate) fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if (v - v.round()).abs() < 0.05 {
        format!("{:.0}", v.round())
    } else {
        format!("{v:.1}")
    }
}

pub(crate) use flowspike_findings::bytes_text;

/// A p-value in a short scientific form (below what a double holds: `< 1e-300`).
pub(crate) fn pval(p: f64) -> String {
    if p < 1e-300 {
        "< 1e-300".into()
    } else if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

/// An hour as RFC 3339 (`2026-03-05T14:00:00Z`).
pub(crate) fn hour(h: i64) -> String {
    format_hour(h)
}

/// The mode in force and the settings it uses, in words.
pub(crate) fn describe_config(cfg: &DetectConfig) -> String {
    match cfg.mode {
        Mode::Adaptive => format!(
            "adaptive (each source's seasonal count model; alerts when P(X ≥ count) < {} and count ≥ {})",
            cfg.alpha, cfg.min_count
        ),
        Mode::Window => format!(
            "window (Splunk ESCU: count > mean + {} × stdev of the active hours of the last {} hours, \
             at least {} of them, count ≥ {})",
            cfg.deviations, cfg.window_hours, cfg.min_points, cfg.min_count
        ),
        Mode::Splunk => format!(
            "splunk (Splunk ESCU's running update, N = {}: count > updated mean + {} × updated stdev, \
             more than {} data points, count ≥ {})",
            cfg.window_hours, cfg.deviations, cfg.min_points, cfg.min_count
        ),
    }
}

/// A list of `(item, hours)` as an HTML inline list (at most `max`, then how many more).
pub(crate) fn ranked_list(items: &[(String, usize)], of_hours: usize, max: usize) -> String {
    if items.is_empty() {
        return "<p class=\"na\">none recorded</p>".into();
    }
    let mut out = String::from("<ul class=\"inline\">");
    for (item, n) in items.iter().take(max) {
        let hours = if of_hours > 1 { format!(" ({n}/{of_hours} h)") } else { String::new() };
        let _ = write!(out, "<li>{}{}</li>", escape(item), hours);
    }
    if items.len() > max {
        let _ = write!(out, "<li>… {} more</li>", items.len() - max);
    }
    out.push_str("</ul>");
    out
}

/// What the history does not hold, said once on every page and in the text output.
pub(crate) const NOT_IN_HISTORY: &str = "Not in the history: destination ports and counts per \
     destination (per hour and source it keeps the blocked count, the set of destinations — capped, \
     with an estimate past the cap —, the interface ids, bytes and packets); destinations are \
     ranked by the alerted hours they appear in.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            escape("<a href=\"x\">O'Neil & co</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
        for (v, s) in [(3.0, "3"), (3.04, "3"), (3.12, "3.1"), (412.0, "412"), (f64::NAN, "–")] {
            assert_eq!(num(v), s, "{v}");
        }
        assert_eq!(pval(0.0123), "0.012");
        assert_eq!(pval(1.5e-7), "1.5e-7");
        assert_eq!(pval(0.0), "< 1e-300");
        let p = page("a < b", "<p>x</p>");
        assert!(p.starts_with("<!DOCTYPE html>") && p.contains("<title>a &lt; b</title>"));
        assert!(!p.contains("<script") && !p.contains("http://") && !p.contains("https://"));
    }

    #[test]
    fn bytes_in_binary_units() {
        for (b, s) in
            [(512.0, "512 B"), (1536.0, "1.5 KiB"), (3.0 * 1024.0 * 1024.0 * 1024.0, "3.0 GiB")]
        {
            assert_eq!(bytes_text(b), s);
        }
        assert_eq!(bytes_text(f64::NAN), "–");
    }

    #[test]
    fn ranked_list_is_capped() {
        let items: Vec<(String, usize)> = (0..5).map(|i| (format!("d{i}"), 5 - i)).collect();
        let html = ranked_list(&items, 5, 3);
        assert_eq!(html.matches("<li>").count(), 4);
        assert!(html.contains("d0 (5/5 h)") && html.contains("… 2 more"));
        assert!(ranked_list(&[], 1, 3).contains("none recorded"));
    }
}
