//! The chart of a [`Series`]: plotters' SVG backend, one `<svg>` element as a string.
//!
//! Drawn, back to front: the highlighted hours (an incident's), the band `expected ± stdev`, the
//! expected count, the alert threshold (the smallest count that alerts, a step per hour), the
//! observed counts and a dot on every alerted hour.

use std::collections::BTreeSet;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;

use flowspike_detect::Expectation;

use crate::html::num;
use crate::timeline::{HourPoint, Series};
use crate::ReportError;

/// Colours, chosen to stay apart for the common forms of colour blindness (blue/orange/grey).
const OBSERVED: RGBColor = RGBColor(33, 37, 41);
const EXPECTED: RGBColor = RGBColor(31, 119, 180);
const THRESHOLD: RGBColor = RGBColor(214, 39, 40);
const ALERT: RGBColor = RGBColor(255, 127, 14);

/// What to draw besides the series itself.
#[derive(Debug, Clone, Default)]
pub struct ChartOptions {
    /// Width and height in pixels.
    pub size: (u32, u32),
    /// The caption above the plot.
    pub caption: String,
    /// Hours shaded behind the plot (an incident's hours).
    pub highlight: BTreeSet<i64>,
    /// Hours marked with a dot (alerts).
    pub alerts: BTreeSet<i64>,
}

/// Renders `series` as one `<svg>` element (no XML declaration, so it can be inlined in HTML).
pub fn render_svg(series: &Series, opts: &ChartOptions) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, opts.size).into_drawing_area();
        draw(&root, series, opts).map_err(|e| ReportError::Chart(e.to_string()))?;
        root.present().map_err(|e| ReportError::Chart(e.to_string()))?;
    }
    Ok(svg)
}

type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &Series,
    opts: &ChartOptions,
) -> DrawResult {
    root.fill(&WHITE)?;
    let points = &series.points;
    let (x0, x1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.hour, b.hour + 3600),
        // Nothing to draw: an empty frame keeps the page's layout (one chart per incident).
        _ => (0, 3600),
    };
    let top = points
        .iter()
        .flat_map(|p| {
            let e = p.expectation;
            [
                Some(p.count as f64),
                e.map(|e| e.band().1),
                e.and_then(|e| e.alert_at).map(|t| t as f64),
            ]
        })
        .flatten()
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    // A burst can be a thousand times its source's normal hour: then the y axis is log(1 + y),
    // or the band and the threshold would be a flat line at the bottom.
    let normal = points
        .iter()
        .filter_map(|p| p.expectation.map(|e| e.band().1))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let scale = YScale { log: top > LOG_RATIO * normal, max: top * 1.08 };
    let mut chart = ChartBuilder::on(root)
        .caption(&opts.caption, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(52)
        .build_cartesian_2d(x0..x1, scale)?;
    let span_days = (x1 - x0) / 86_400;
    let label = move |x: &i64| {
        let fmt = if span_days >= 7 { "%m-%d" } else { "%m-%d %H:00" };
        chrono::DateTime::from_timestamp(*x, 0)
            .map_or_else(String::new, |t| t.format(fmt).to_string())
    };
    let y_label = |y: &f64| num(*y);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .max_light_lines(1)
        .bold_line_style(RGBColor(230, 230, 230))
        .x_labels(8)
        .x_label_formatter(&label)
        .y_label_formatter(&y_label)
        .y_desc(if scale.log {
            "blocked flows per hour (log scale)"
        } else {
            "blocked flows per hour"
        })
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    let y_top = scale.max;

    // Highlighted hours: one shaded column each.
    chart.draw_series(
        opts.highlight
            .iter()
            .filter(|h| (x0..x1).contains(*h))
            .map(|&h| Rectangle::new([(h, 0.0), (h + 3600, y_top)], ALERT.mix(0.18).filled())),
    )?;

    // Over a short span each value is drawn as a step over its hour; over weeks, as a point at
    // the middle of the hour like the counts (half the points: the page stays small).
    let stepped = span_days < 7;
    // The band, one polygon per run of hours that have an expectation.
    let mut first_band = true;
    for run in runs(points, |p| p.expectation.map(|e| e.band())) {
        let highs: Vec<(i64, f64)> = run.iter().map(|&(h, (_, hi))| (h, hi)).collect();
        let lows: Vec<(i64, f64)> = run.iter().rev().map(|&(h, (lo, _))| (h, lo)).collect();
        let mut outline = trace(&highs, stepped);
        if stepped {
            // Back along the lows, hours reversed: each step from the end of its hour to its start.
            outline.extend(lows.iter().flat_map(|&(h, v)| [(h + 3600, v), (h, v)]));
        } else {
            outline.extend(trace(&lows, false));
        }
        let drawn = chart
            .draw_series(std::iter::once(Polygon::new(outline, EXPECTED.mix(0.18).filled())))?;
        if std::mem::take(&mut first_band) {
            drawn.label("expected ± 1 sd").legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], EXPECTED.mix(0.18).filled())
            });
        }
    }
    // The expected count and the threshold.
    let lines: [(&str, RGBColor, ValueOf); 2] = [
        ("expected", EXPECTED, |e| Some(e.expected)),
        ("alert threshold", THRESHOLD, |e| e.alert_at.map(|t| t as f64)),
    ];
    for (label, color, value) in lines {
        let mut first = true;
        for run in runs(points, |p| p.expectation.as_ref().and_then(value)) {
            let line = LineSeries::new(trace(&run, stepped), color.stroke_width(1));
            let drawn = chart.draw_series(line)?;
            if std::mem::take(&mut first) {
                drawn
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
            }
        }
    }
    // Observed counts: a point at the middle of each hour.
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.hour + 1800, p.count as f64)),
            OBSERVED.stroke_width(1),
        ))?
        .label("observed")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], OBSERVED));
    let alerted: Vec<&HourPoint> =
        points.iter().filter(|p| opts.alerts.contains(&p.hour)).collect();
    if !alerted.is_empty() {
        chart
            .draw_series(
                alerted
                    .iter()
                    .map(|p| Circle::new((p.hour + 1800, p.count as f64), 4, ALERT.filled())),
            )?
            .label("alert")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, ALERT.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// What a line draws of an hour's expectation.
type ValueOf = fn(&Expectation) -> Option<f64>;

/// The maximal runs of consecutive points for which `f` gives a value, as `(hour, value)`.
fn runs<T: Copy>(points: &[HourPoint], f: impl Fn(&HourPoint) -> Option<T>) -> Vec<Vec<(i64, T)>> {
    let mut out: Vec<Vec<(i64, T)>> = Vec::new();
    let mut current: Vec<(i64, T)> = Vec::new();
    for p in points {
        match f(p) {
            Some(v) if current.last().is_none_or(|&(h, _)| h + 3600 == p.hour) => {
                current.push((p.hour, v))
            }
            Some(v) => {
                out.push(std::mem::take(&mut current));
                current.push((p.hour, v));
            }
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The points of a line through `run`: with `stepped`, each value from the start to the end of
/// its hour; else one point at the middle of each hour.
fn trace(run: &[(i64, f64)], stepped: bool) -> Vec<(i64, f64)> {
    if stepped {
        run.iter().flat_map(|&(h, v)| [(h, v), (h + 3600, v)]).collect()
    } else {
        run.iter().map(|&(h, v)| (h + 1800, v)).collect()
    }
}

/// The y axis switches to log(1 + y) when the top of the chart is more than this many times the
/// top of the band.
const LOG_RATIO: f64 = 25.0;

/// The y axis from 0 to `max`: linear, or `log10(1 + y)` (zero stays at the bottom, unlike a
/// plain log axis), with round ticks on both.
#[derive(Debug, Clone, Copy)]
struct YScale {
    log: bool,
    max: f64,
}

impl Ranged for YScale {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let top = self.y(self.max);
        let share = if top > 0.0 { self.y(*value) / top } else { 0.0 };
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks(self.max)
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.max
    }
}

impl YScale {
    /// Where value `v` is drawn.
    fn y(self, v: f64) -> f64 {
        if self.log {
            (1.0 + v.max(0.0)).log10()
        } else {
            v
        }
    }

    /// Tick values up to `max`: 0, 1, 5, 10, 50, 100, … on a log axis (decades alone past
    /// 100,000), about six round values on a linear one.
    fn ticks(self, max: f64) -> Vec<f64> {
        let mut out = vec![0.0];
        if self.log {
            let mut decade = 1.0;
            let steps: &[f64] = if max > 1e5 { &[1.0] } else { &[1.0, 5.0] };
            while decade <= max {
                out.extend(steps.iter().map(|m| m * decade).filter(|&v| v <= max));
                decade *= 10.0;
            }
        } else {
            let raw = max / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|&s| s >= raw)
                .unwrap_or(10.0 * mag)
                .max(1.0);
            let mut v = step;
            while v <= max {
                out.push(v);
                v += step;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::Subject;
    use flowspike_detect::{Expectation, Mode};

    fn series() -> Series {
        let e = |expected: f64, alert_at: Option<u64>| Expectation {
            mode: Mode::Window,
            expected,
            stdev: 1.0,
            data_points: 5,
            alert_at,
        };
        let points = vec![
            HourPoint { hour: 0, count: 3, expectation: None },
            HourPoint { hour: 3600, count: 2, expectation: Some(e(3.0, Some(6))) },
            HourPoint { hour: 7200, count: 40, expectation: Some(e(2.5, Some(5))) },
        ];
        Series {
            subject: Subject::source("10.0.0.1", None),
            points,
            alerts: Vec::new(),
            rows: Default::default(),
        }
    }

    #[test]
    fn svg_is_one_element_with_every_layer() {
        let opts = ChartOptions {
            size: (600, 200),
            caption: "10.0.0.1 <&>".into(),
            highlight: BTreeSet::from([7200]),
            alerts: BTreeSet::from([7200]),
        };
        let svg = render_svg(&series(), &opts).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("\n10.0.0.1 &lt;&amp;&gt;\n"), "the caption is escaped");
        for legend in ["expected ± 1 sd", "expected", "alert threshold", "observed", "alert"] {
            assert!(svg.contains(&format!(">\n{legend}\n<")), "legend {legend:?} missing");
        }
        assert!(svg.contains("<circle"), "the alert dot");
        assert!(svg.contains("<polygon"), "the band");
    }

    #[test]
    fn runs_split_at_gaps_and_missing_values() {
        let s = series();
        let r = runs(&s.points, |p| p.expectation.map(|e| e.expected));
        assert_eq!(r, vec![vec![(3600, 3.0), (7200, 2.5)]]);
        let r = runs(&s.points, |p| (p.count < 10).then_some(p.count));
        assert_eq!(r, vec![vec![(0, 3), (3600, 2)]]);
        assert_eq!(trace(&[(0, 1.0)], true), vec![(0, 1.0), (3600, 1.0)]);
        assert_eq!(trace(&[(0, 1.0)], false), vec![(1800, 1.0)]);
    }

    #[test]
    fn y_scale_ticks_and_mapping() {
        let log = YScale { log: true, max: 1.0 };
        assert_eq!(log.ticks(600.0), [0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0]);
        assert_eq!(log.ticks(200_000.0), [0.0, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5]);
        assert_eq!((log.y(0.0), log.y(99.0)), (0.0, 2.0));
        let lin = YScale { log: false, max: 1.0 };
        assert_eq!(lin.ticks(23.0), [0.0, 5.0, 10.0, 15.0, 20.0]);
        assert_eq!(lin.ticks(3.0), [0.0, 1.0, 2.0, 3.0]);
        assert_eq!(lin.y(7.0), 7.0);
        // Mapped onto pixels: 0 at the bottom, max at the top, log(1 + y) in between.
        let axis = YScale { log: true, max: 999.0 };
        assert_eq!((axis.map(&0.0, (300, 0)), axis.map(&999.0, (300, 0))), (300, 0));
        assert_eq!(axis.map(&(10f64.powf(1.5) - 1.0), (300, 0)), 150);
    }

    #[test]
    fn a_burst_far_above_the_band_switches_to_a_log_axis() {
        let opts = ChartOptions { size: (600, 200), ..Default::default() };
        let mut s = series();
        assert!(!render_svg(&s, &opts).unwrap().contains("log scale"), "40 is 10 times the band");
        s.points[2].count = 400;
        assert!(render_svg(&s, &opts).unwrap().contains("log scale"));
    }

    #[test]
    fn an_empty_series_still_draws_a_frame() {
        let mut s = series();
        s.points.clear();
        let svg = render_svg(&s, &ChartOptions { size: (300, 120), ..Default::default() }).unwrap();
        assert_eq!(svg.matches("<svg").count(), 1);
    }
}
