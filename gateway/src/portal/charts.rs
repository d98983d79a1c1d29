//! Line charts rendered on the server as inline SVG: readable without JavaScript, and
//! allowed by the portal's Content-Security-Policy (presentation attributes and
//! classes only, no `style`). Every point is a circle carrying its time (`data-t`,
//! Unix seconds) and value (`data-v`), with a `<title>` tooltip; the chart has a title
//! for screen readers, and the page lists the same points in a table.
//!
//! [`Svg`] is the only markup the templates do not escape: only this module makes one,
//! and it writes nothing into it but numbers and escaped text.

use std::fmt::{self, Write as _};

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Markup made by this module, safe to put in a page as is.
#[derive(Debug, Clone)]
pub(super) struct Svg(String);

impl fmt::Display for Svg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A named line of points (time in Unix seconds, value).
pub(super) struct Series {
    pub(super) name: &'static str,
    /// The CSS class giving its colour.
    pub(super) class: &'static str,
    pub(super) points: Vec<(f64, f64)>,
}

/// A chart of one or more series over time.
pub(super) struct Chart {
    /// Its element id (unique on the page).
    pub(super) id: &'static str,
    pub(super) title: &'static str,
    pub(super) unit: &'static str,
    pub(super) series: Vec<Series>,
}

/// `text` with the characters that mean something in markup escaped.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// A time as the charts label it (UTC, to the minute).
fn when(t: f64) -> String {
    arrow::temporal_conversions::timestamp_s_to_datetime(t as i64)
        .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d %H:%M").to_string())
}

/// A value as the axis labels it: whole numbers plainly, others to 2 decimals.
fn label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart {
    /// The chart as SVG; a chart with no points says so.
    pub(super) fn render(&self) -> Svg {
        let title = escaped(self.title);
        let unit = escaped(self.unit);
        let id = escaped(self.id);
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" id="chart-{id}" role="img" aria-labelledby="chart-{id}-title" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title id="chart-{id}-title">{title} ({unit})</title>"#
        );
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .collect();
        if points.is_empty() {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" class="empty">No measurements yet</text></svg>"#,
                WIDTH / 2.0,
                HEIGHT / 2.0
            );
            return Svg(svg);
        }
        let (t0, t1) = points
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), (t, _)| {
                (lo.min(*t), hi.max(*t))
            });
        let (v0, v1) = points.iter().fold((0f64, f64::MIN), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        });
        let v1 = if v1 <= v0 { v0 + 1.0 } else { v1 };
        let x = |t: f64| {
            if t1 > t0 {
                LEFT + (t - t0) / (t1 - t0) * (WIDTH - LEFT - RIGHT)
            } else {
                LEFT + (WIDTH - LEFT - RIGHT) / 2.0
            }
        };
        let y = |v: f64| TOP + (1.0 - (v - v0) / (v1 - v0)) * (HEIGHT - TOP - BOTTOM);
        // Axes and their labels.
        let _ = write!(
            svg,
            r#"<g class="axis"><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><text x="{lx}" y="{ty}" text-anchor="end">{hi}</text><text x="{lx}" y="{b}" text-anchor="end">{lo}</text><text x="{LEFT}" y="{tx}">{start}</text><text x="{r}" y="{tx}" text-anchor="end">{end}</text></g>"#,
            b = HEIGHT - BOTTOM,
            r = WIDTH - RIGHT,
            lx = LEFT - 6.0,
            ty = TOP + 10.0,
            tx = HEIGHT - 8.0,
            hi = label(v1),
            lo = label(v0),
            start = when(t0),
            end = when(t1),
        );
        for series in &self.series {
            let class = escaped(series.class);
            let name = escaped(series.name);
            let mut path = String::new();
            for (t, v) in series
                .points
                .iter()
                .filter(|(t, v)| t.is_finite() && v.is_finite())
            {
                let _ = write!(path, "{:.1},{:.1} ", x(*t), y(*v));
            }
            let _ = write!(
                svg,
                r#"<g class="series {class}" data-series="{name}"><polyline fill="none" points="{}"/>"#,
                path.trim_end()
            );
            for (t, v) in series
                .points
                .iter()
                .filter(|(t, v)| t.is_finite() && v.is_finite())
            {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" data-t="{t}" data-v="{v}"><title>{}: {} {name} ({unit})</title></circle>"#,
                    x(*t),
                    y(*v),
                    when(*t),
                    label(*v),
                );
            }
            svg.push_str("</g>");
        }
        svg.push_str("</svg>");
        Svg(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>) -> String {
        Chart {
            id: "c",
            title: "Rows <b>",
            unit: "rows",
            series: vec![Series {
                name: "rows",
                class: "s-main",
                points,
            }],
        }
        .render()
        .to_string()
    }

    #[test]
    fn no_points_says_so() {
        let svg = chart(Vec::new());
        assert!(svg.contains("No measurements yet"), "{svg}");
        assert!(!svg.contains("<circle"));
    }

    #[test]
    fn every_point_carries_its_time_and_value() {
        let svg = chart(vec![(1_700_000_000.0, 10.0), (1_700_003_600.0, 12.5)]);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(r#"data-t="1700000000" data-v="10""#), "{svg}");
        assert!(
            svg.contains(r#"data-t="1700003600" data-v="12.5""#),
            "{svg}"
        );
        assert!(svg.contains("2023-11-14 22:13"), "{svg}");
    }

    #[test]
    fn one_point_and_gaps_draw_without_dividing_by_zero() {
        let svg = chart(vec![(5.0, 0.0)]);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let svg = chart(vec![(1.0, f64::NAN), (2.0, 3.0)]);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(!svg.contains("NaN"), "{svg}");
    }

    #[test]
    fn text_is_escaped() {
        let svg = chart(vec![(1.0, 1.0)]);
        assert!(svg.contains("Rows &lt;b&gt;"), "{svg}");
        assert!(!svg.contains("<b>"));
    }
}
