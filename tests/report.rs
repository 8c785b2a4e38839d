//! `flowspike report` and `flowspike explain` looked at as a person would: a seeded run's report
//! rendered by headless Chromium (Debian's `chromium`, installed by `tests/run.sh`), asserting on
//! the DOM it built (every injected burst listed, one chart per incident, the explain pages), on
//! its console (no message at all: the pages have no script, so any message is an error) and on
//! its screenshot.
//!
//! Console: Chromium run with `--enable-logging=stderr --v=0` writes every console message and
//! uncaught exception of the page to stderr as `...:CONSOLE(...)...` lines (a DevTools-protocol
//! client is not needed); `console_is_watched` proves on a page that does log one that the check
//! sees it.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowspike_synth::Manifest;

use crate::util::{assert_code, flowspike, run, run_demo};

/// The Chromium binary: `FLOWSPIKE_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
/// `None` (the test is skipped, saying so) when there is none, except under `CI=true` where a
/// missing browser fails the test.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("FLOWSPIKE_CHROMIUM").map(PathBuf::from).or_else(|| {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            let ok = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
            ok.then(|| PathBuf::from(name))
        })
    });
    if found.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "chromium is not installed: tests/run.sh installs Debian's chromium package"
        );
        eprintln!("SKIPPED: chromium not installed (tests/run.sh installs it)");
    }
    found
}

/// What Chromium made of a page: the DOM after load and its console messages.
struct Rendered {
    dom: String,
    console: Vec<String>,
}

/// Loads `page` from a `file://` URL in headless Chromium; with `screenshot`, also writes a PNG
/// of the top of the page there.
fn render(browser: &Path, page: &Path, screenshot: Option<&Path>) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        // As root in a container: no user namespace for the sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(png) => cmd.arg(format!("--screenshot={}", png.display())),
        None => cmd.arg("--dump-dom"),
    };
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let out = run(cmd.arg(url));
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    Rendered { dom: String::from_utf8_lossy(&out.stdout).into_owned(), console }
}

/// The incident sections of a rendered report.
fn sections(dom: &str) -> Vec<&str> {
    dom.split("<section class=\"incident")
        .skip(1)
        .map(|s| s.split("</section>").next().unwrap())
        .collect()
}

/// Generates a small seeded archive (16 days of 40 hosts, 3 bursts after the adaptive mode's
/// first week) and replays it into a state, whose `spikes/` then holds the run's records.
fn seeded_state(dir: &Path) -> (PathBuf, Manifest) {
    let archive = dir.join("archive");
    let state = dir.join("state");
    let gen = ["gen", "--hours", "384", "--hosts", "40", "--bursts", "3", "--seed", "5", "--out"];
    assert_code(&run(flowspike().args(gen).arg(&archive)), 0);
    assert_code(&run(flowspike().arg("replay").arg(&archive).arg("--state").arg(&state)), 0);
    let manifest =
        serde_json::from_slice(&std::fs::read(archive.join("manifest.json")).unwrap()).unwrap();
    (state, manifest)
}

#[test]
fn report_of_a_seeded_run_in_a_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (state, manifest) = seeded_state(dir.path());
    assert_eq!(manifest.injected.len(), 3);
    let out_dir = dir.path().join("report");
    let out = run(flowspike().arg("report").arg("--state").arg(&state).arg("--out").arg(&out_dir));
    assert_code(&out, 0);
    let index = out_dir.join("index.html");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), index.display().to_string());

    // Self-contained: nothing to fetch, no script.
    let html = std::fs::read_to_string(&index).unwrap();
    for banned in ["<script", "<link", "src=", "@import", "url(", "https://"] {
        assert!(!html.contains(banned), "the page must load nothing: found {banned:?}");
    }

    let r = render(&browser, &index, None);
    assert!(r.console.is_empty(), "console messages: {:#?}", r.console);
    assert!(r.dom.contains("<h1>flowspike: incidents</h1>"), "{}", r.dom);
    let incidents = sections(&r.dom);
    assert_eq!(incidents.len(), 3, "one incident per injected burst (the run's only alerts)");
    // Newest first, each burst with its hour, its source, one chart and an explain page.
    let mut injected = manifest.injected.clone();
    injected.sort_by_key(|b| std::cmp::Reverse(b.hour));
    for (section, burst) in incidents.iter().zip(&injected) {
        let hour = chrono::DateTime::from_timestamp(burst.hour, 0).unwrap();
        let heading = format!("{} · {}<", hour.format("%Y-%m-%dT%H:00:00Z"), burst.src_ip);
        assert!(section.contains(&heading), "{heading} in {section}");
        assert_eq!(section.matches("<svg").count(), 1, "one chart per incident");
        assert!(section.contains("Far above its own model"), "the reason");
        let link =
            section.split("class=\"explain\" href=\"").nth(1).unwrap().split('"').next().unwrap();
        let explain = render(&browser, &out_dir.join(link), None);
        assert!(explain.console.is_empty(), "console messages: {:#?}", explain.console);
        assert!(explain.dom.contains(&format!("<h1>explain {}</h1>", burst.src_ip)));
        assert_eq!(explain.dom.matches("<svg").count(), 2, "the window and the hours around it");
        assert!(explain.dom.contains("Alerted hours") && explain.dom.contains("Top destinations"));
    }

    // What a person sees: a screenshot of the top of the page.
    let png = dir.path().join("report.png");
    let shot = render(&browser, &index, Some(&png));
    assert!(shot.console.is_empty(), "console messages: {:#?}", shot.console);
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
}

/// The finding-incident articles of a rendered report's section `findings-<detection>`.
fn finding_articles<'a>(dom: &'a str, detection: &str) -> Vec<&'a str> {
    let start = format!("<section class=\"findings\" id=\"findings-{detection}\">");
    let Some(section) = dom.split(&start).nth(1) else { return Vec::new() };
    let section = section.split("</section>").next().unwrap();
    section.split("<article class=\"finding").skip(1).collect()
}

/// Issue #32: the report `flowspike demo` writes lists the other detections' findings as
/// incidents — one section per detection, each with the incident of the demo's labelled case
/// (its source, one of its hours), one article per incident, the counts `demo` prints — and the
/// browser shows it without a console message; `flowspike report` finds the same incidents in the
/// state's `findings/` (read twice: ids count once) or in `--findings` files.
#[test]
fn findings_incidents_of_the_demo_in_a_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let (stdout, manifest) = run_demo(&demo);
    let (findings, bad) =
        flowspike_report::read_finding_lines(&std::fs::read(demo.join("findings.jsonl")).unwrap());
    assert_eq!(bad, 0);
    let incidents = flowspike_report::group_findings(findings);

    let index = demo.join("report/index.html");
    let r = render(&browser, &index, None);
    assert!(r.console.is_empty(), "console messages: {:#?}", r.console);
    assert!(r.dom.contains("<h1>flowspike: incidents</h1>"), "{}", r.dom);
    let mut printed = Vec::new();
    let detections = ["port_scan", "port_sweep", "outbound_volume", "threat_list"];
    for detection in detections {
        let articles = finding_articles(&r.dom, detection);
        let want = incidents.iter().filter(|i| i.detection() == detection).count();
        assert_eq!(articles.len(), want, "{detection}: one article per incident");
        printed.push(format!("{detection} {want}"));
        let case = manifest
            .cases
            .iter()
            .find(|c| c.positive && serde_json::to_value(c.kind).unwrap() == detection)
            .unwrap_or_else(|| panic!("the demo injects a {detection} case"));
        let hours: Vec<String> = (0..i64::from(case.hours))
            .map(|h| {
                let t = chrono::DateTime::from_timestamp(case.hour + h * 3600, 0).unwrap();
                format!("<td class=\"l\">{}</td>", t.format("%Y-%m-%dT%H:00:00Z"))
            })
            .collect();
        let found = articles.iter().find(|a| {
            a.contains(&format!(" · {}", case.src_ip)) && hours.iter().any(|h| a.contains(h))
        });
        let article = found.unwrap_or_else(|| {
            panic!("{detection}: the case of {} ({}) listed: {articles:#?}", case.src_ip, case.what)
        });
        assert!(article.contains("<h3>") && article.contains("Finding ids"), "{article}");
        let link = format!("<a href=\"#findings-{detection}\">");
        assert!(r.dom.contains(&link), "the header links to the {detection} section");
    }
    let line = format!("findings: {} incidents ({})", incidents.len(), printed.join(", "));
    assert!(stdout.contains(&line), "demo prints {line:?}: {stdout}");
    // The scan's evidence: its destination and the ports it probed.
    let scan = finding_articles(&r.dom, "port_scan")[0];
    assert!(scan.contains("destination <code>") && scan.contains("Ports (the lowest"), "{scan}");
    let threat = finding_articles(&r.dom, "threat_list")[0];
    assert!(threat.contains("Remote addresses on the list") && threat.contains("first seen"));

    // `flowspike report` reads the same findings from every *.jsonl under the state's findings/
    // (two copies here, one nested: each id counts once), or from --findings files instead.
    let state = demo.join("state");
    let copies = [state.join("findings/a.jsonl"), state.join("findings/stream/b.jsonl")];
    for c in &copies {
        std::fs::create_dir_all(c.parent().unwrap()).unwrap();
        std::fs::copy(demo.join("findings.jsonl"), c).unwrap();
    }
    let report = |args: &[&std::ffi::OsStr], out: &str| {
        let mut cmd = flowspike();
        cmd.arg("report").arg("--state").arg(&state).arg("--out").arg(dir.path().join(out));
        let out = run(cmd.args(args));
        assert_code(&out, 0);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let from_state = report(&[], "from-state");
    assert!(from_state.contains(&line), "{line:?} in {from_state}");
    let page = std::fs::read_to_string(dir.path().join("from-state/index.html")).unwrap();
    assert!(page.contains("Findings from 2 files in "), "where they came from");
    let file = demo.join("findings.jsonl");
    let given = report(&["--findings".as_ref(), file.as_os_str()], "given");
    assert!(given.contains(&line), "{line:?} in {given}");
    let page = std::fs::read_to_string(dir.path().join("given/index.html")).unwrap();
    assert!(page.contains(&format!("Findings from {}.", file.display())));
}

#[test]
fn console_is_watched() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><p>x</p><script>console.error('boom'); no_such_function();</script>",
    )
    .unwrap();
    let r = render(&browser, &page, None);
    assert_eq!(r.console.len(), 2, "{:#?}", r.console);
    assert!(r.console[0].contains("boom") && r.console[1].contains("no_such_function"));
}

#[test]
fn explain_prints_a_summary_and_writes_svg_png_or_html() {
    let dir = tempfile::tempdir().unwrap();
    let (state, manifest) = seeded_state(dir.path());
    let burst = &manifest.injected[0];
    let hour = chrono::DateTime::from_timestamp(burst.hour, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:00:00Z")
        .to_string();
    // `flowspike explain --state STATE SRC ARGS...`.
    let explain = |src: &str, args: &[&std::ffi::OsStr]| {
        run(flowspike().arg("explain").arg("--state").arg(&state).arg(src).args(args))
    };
    let out = explain(&burst.src_ip, &["--hour".as_ref(), hour.as_ref()]);
    assert_code(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("{}: blocked outbound flows per hour", burst.src_ip)),
        "{text}"
    );
    let alert_line = text.lines().find(|l| l.trim_start().starts_with(&hour)).unwrap();
    let fields: Vec<&str> = alert_line.split_whitespace().collect();
    assert_eq!(fields[5], "spike", "{alert_line}");
    let counted: u64 = fields[1].parse().unwrap();
    assert!(
        counted >= burst.records,
        "{counted} blocked flows counted, {} injected",
        burst.records
    );
    assert!(text.contains("Not in the history: destination ports"));

    for (name, head) in [("chart.svg", "<svg"), ("page.html", "<!DOCTYPE html>")] {
        let path = dir.path().join(name);
        assert_code(&explain(&burst.src_ip, &["--out".as_ref(), path.as_os_str()]), 0);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with(head), "{name}");
    }
    let png = dir.path().join("chart.png");
    assert_code(&explain(&burst.src_ip, &["--out".as_ref(), png.as_os_str()]), 0);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // The IHDR chunk: the chart's 1000 x 380 pixels; the file holds more than a blank image.
    assert_eq!(&bytes[16..24], &[0, 0, 0x03, 0xe8, 0, 0, 0x01, 0x7c]);
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    let out = explain(&burst.src_ip, &["--out".as_ref(), dir.path().join("chart.gif").as_os_str()]);
    assert_code(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported output"));
    let out = explain("10.255.255.254", &[]);
    assert_code(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no hour of the history has source 10.255.255.254"));
}
