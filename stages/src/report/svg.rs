//! Inline SVG: line charts with axes, ticks, labels and a legend, and the stage graph.
//! Everything is escaped; the output is well-formed XML.

use std::fmt::Write as _;

use super::text::{duration, esc};
use super::{Chart, StageView, State};

/// Colours of the series, in order (matplotlib's tab10).
const COLOURS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Points drawn per series at most: longer series are thinned evenly (keeping the last).
const MAX_POINTS: usize = 600;

/// A series with at most this many points also gets a dot per point (evaluations).
const DOTS_UP_TO: usize = 24;

/// About `n` round tick values covering [lo, hi].
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // The round step nearest to the raw one (by ratio).
    let far = |s: f64| (s / raw).ln().abs();
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| far(*a).total_cmp(&far(*b)))
        .expect("candidates");
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// The labels of an axis's ticks: with as many decimals as their spacing needs, or all in
/// scientific notation when they are very large or very small.
pub fn tick_labels(ticks: &[f64]) -> Vec<String> {
    let step = if ticks.len() > 1 { ticks[1] - ticks[0] } else { 1.0 };
    let top = ticks.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let sci = top >= 1e5 || (top > 0.0 && top < 1e-2);
    ticks
        .iter()
        .map(|&v| match (sci, v == 0.0) {
            (true, true) => "0".into(),
            (true, false) => format!("{v:.1e}"),
            (false, _) => tick_label(v, step),
        })
        .collect()
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize + usize::from(step_needs_extra_digit(step))
    };
    format!("{v:.decimals$}")
}

fn step_needs_extra_digit(step: f64) -> bool {
    let mag = 10f64.powf(step.log10().floor());
    ((step / mag) - (step / mag).round()).abs() > 1e-9
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi > lo {
        return (lo, hi);
    }
    let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
    (lo - pad, hi + pad)
}

fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(MAX_POINTS);
    let mut out: Vec<(f64, f64)> = points.iter().step_by(stride).copied().collect();
    if out.last() != points.last() {
        out.push(*points.last().expect("non-empty"));
    }
    out
}

/// A line chart of `chart`'s series with x and y axes, ticks, axis labels, a title and a
/// legend.
pub fn line_chart(chart: &Chart) -> String {
    let (w, h) = (360.0, 250.0);
    let (left, right, top, bottom) = (58.0, 12.0, 28.0, 58.0);
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(points().map(|p| p.0));
    let (y0, y1) = range(points().map(|p| p.1));
    let (xt, yt) = (ticks(x0, x1, 5), ticks(y0, y1, 5));
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let sy = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom);
    let mut s = String::new();
    let title = esc(&chart.title);
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{title}">"#).unwrap();
    writeln!(s, "<title>{title}</title>").unwrap();
    writeln!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle" class="title">{title}</text>"#,
        w / 2.0
    )
    .unwrap();
    // Grid and tick labels.
    for (&y, label) in yt.iter().zip(tick_labels(&yt)) {
        let py = sy(y);
        writeln!(
            s,
            r#"<line x1="{left}" x2="{:.1}" y1="{py:.1}" y2="{py:.1}" class="grid"/>"#,
            w - right
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{label}</text>"#,
            left - 5.0,
            py + 4.0
        )
        .unwrap();
    }
    for (&x, label) in xt.iter().zip(tick_labels(&xt)) {
        let px = sx(x);
        writeln!(
            s,
            r#"<line x1="{px:.1}" x2="{px:.1}" y1="{:.1}" y2="{:.1}" class="axis"/>"#,
            h - bottom,
            h - bottom + 4.0
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle" class="tick">{label}</text>"#,
            h - bottom + 16.0
        )
        .unwrap();
    }
    // Axes and their labels.
    writeln!(
        s,
        r#"<path d="M{left},{top} V{:.1} H{:.1}" class="axis" fill="none"/>"#,
        h - bottom,
        w - right
    )
    .unwrap();
    writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="label">{}</text>"#,
        left + (w - left - right) / 2.0,
        h - bottom + 32.0,
        esc(&chart.x_label)
    )
    .unwrap();
    let cy = top + (h - top - bottom) / 2.0;
    writeln!(s, r#"<text x="14" y="{cy:.1}" text-anchor="middle" class="label" transform="rotate(-90 14 {cy:.1})">{title}</text>"#).unwrap();
    // Series.
    for (i, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts = thin(&series.points);
        let coords: Vec<String> =
            pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        writeln!(s, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"><title>{}</title></polyline>"#, coords.join(" "), esc(&series.name)).unwrap();
        if pts.len() <= DOTS_UP_TO {
            for &(x, y) in &pts {
                writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#,
                    sx(x),
                    sy(y)
                )
                .unwrap();
            }
        }
    }
    // Legend, under the x label.
    let mut lx = left;
    for (i, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let ly = h - 8.0;
        writeln!(s, r#"<line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="3"/>"#, lx + 16.0, ly - 4.0, ly - 4.0).unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{ly:.1}" class="legend">{}</text>"#,
            lx + 20.0,
            esc(&series.name)
        )
        .unwrap();
        lx += 34.0 + 7.0 * series.name.chars().count() as f64;
    }
    s.push_str("</svg>\n");
    s
}

/// The stage graph, left to right: a stage sits one column right of its furthest input.
/// Each box shows the id, kind, state and time, coloured by state.
pub fn dag(stages: &[StageView]) -> String {
    let index = |id: &str| stages.iter().position(|s| s.id == id);
    let mut column = vec![0usize; stages.len()];
    // Stages come in an order where inputs precede their readers (the pipeline is acyclic).
    for _ in 0..stages.len() {
        for (i, s) in stages.iter().enumerate() {
            column[i] =
                s.inputs.iter().filter_map(|d| index(d)).map(|d| column[d] + 1).max().unwrap_or(0);
        }
    }
    let columns = column.iter().max().map_or(0, |m| m + 1);
    let mut row = vec![0usize; stages.len()];
    let mut used = vec![0usize; columns];
    for (i, &c) in column.iter().enumerate() {
        row[i] = used[c];
        used[c] += 1;
    }
    let rows = used.iter().copied().max().unwrap_or(0);
    let (bw, bh, gx, gy, pad) = (150.0, 58.0, 50.0, 16.0, 10.0);
    let w = pad * 2.0 + columns as f64 * bw + columns.saturating_sub(1) as f64 * gx;
    let h = pad * 2.0 + rows as f64 * bh + rows.saturating_sub(1) as f64 * gy;
    let at = |i: usize| (pad + column[i] as f64 * (bw + gx), pad + row[i] as f64 * (bh + gy));
    let mut s = String::new();
    writeln!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" class="dag" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="stage graph">"#).unwrap();
    writeln!(s, "<title>stage graph</title>").unwrap();
    writeln!(s, r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>"##).unwrap();
    for (i, st) in stages.iter().enumerate() {
        for d in st.inputs.iter().filter_map(|d| index(d)) {
            let ((ax, ay), (bx, by)) = (at(d), at(i));
            let (x1, y1, x2, y2) = (ax + bw, ay + bh / 2.0, bx, by + bh / 2.0);
            let mid = (x1 + x2) / 2.0;
            writeln!(s, r#"<path d="M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}" class="edge" marker-end="url(#arrow)"/>"#).unwrap();
        }
    }
    for (i, st) in stages.iter().enumerate() {
        let (x, y) = at(i);
        let time = st.seconds.map(duration).unwrap_or_default();
        writeln!(
            s,
            r#"<g class="node {}"><title>{} ({}): {}</title>"#,
            st.state.class(),
            esc(&st.id),
            esc(&st.kind),
            st.state.label()
        )
        .unwrap();
        writeln!(s, r#"<rect x="{x:.1}" y="{y:.1}" width="{bw}" height="{bh}" rx="6"/>"#).unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="id">{}</text>"#,
            x + 8.0,
            y + 18.0,
            esc(&truncate(&st.id, 18))
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="kind">{}</text>"#,
            x + 8.0,
            y + 34.0,
            esc(&truncate(&st.kind, 20))
        )
        .unwrap();
        writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="state">{}{}</text>"#,
            x + 8.0,
            y + 50.0,
            st.state.label(),
            if time.is_empty() { String::new() } else { format!(" · {time}") }
        )
        .unwrap();
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The colour of each state's boxes (used by the page's style sheet).
pub fn state_colours() -> [(State, &'static str, &'static str); 6] {
    [
        (State::Ran, "#d9f2d9", "#2ca02c"),
        (State::Cached, "#dde8f6", "#1f77b4"),
        (State::Failed, "#fbdada", "#d62728"),
        (State::Skipped, "#fde9d2", "#ff7f0e"),
        (State::OutOfDate, "#fbf5cf", "#bcbd22"),
        (State::NeverRan, "#f2f2f2", "#999999"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(1.3, 3.9, 5), [1.5, 2.0, 2.5, 3.0, 3.5]);
        assert_eq!(ticks(0.0, 800.0, 5), [0.0, 200.0, 400.0, 600.0, 800.0]);
        let t = ticks(0.0002, 0.002, 4);
        assert!(t.len() >= 3 && t.iter().all(|v| (0.0002..=0.002 + 1e-12).contains(v)), "{t:?}");
        assert_eq!(tick_labels(&[2.0, 2.5, 3.0]), ["2.0", "2.5", "3.0"]);
        assert_eq!(tick_labels(&[2.0, 2.25]), ["2.00", "2.25"]);
        assert_eq!(tick_labels(&[0.0, 200.0, 400.0]), ["0", "200", "400"]);
        assert_eq!(tick_labels(&[0.0, 0.0005, 0.001]), ["0", "5.0e-4", "1.0e-3"]);
    }

    #[test]
    fn long_series_are_thinned_keeping_the_ends() {
        let pts: Vec<(f64, f64)> = (0..2001).map(|i| (i as f64, 1.0)).collect();
        let t = thin(&pts);
        assert!(t.len() <= MAX_POINTS + 1, "{}", t.len());
        assert_eq!((t[0], *t.last().unwrap()), (pts[0], pts[2000]));
    }
}
