//! The page: a [`Report`] as one XHTML document with inline styles and SVG, no scripts and
//! no external resources (the runs table sorts with CSS `:target`, [`super::runs`]).

use std::fmt::Write as _;

use serde_json::Value;

use super::text::{duration, esc};
use super::{CurvesView, DataView, EvalView, Report, State, svg};

fn style() -> String {
    let mut css = String::from(
        "body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 24px 48px; color: #222; }\n\
         h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }\n\
         .meta, .note { color: #666; font-size: 14px; }\n\
         nav a { margin-right: 14px; }\n\
         table { border-collapse: collapse; margin: 10px 0 18px; font-size: 14px; }\n\
         th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }\n\
         th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }\n\
         code, pre { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: 13px; }\n\
         pre { white-space: pre-wrap; margin: 4px 0; }\n\
         .charts { display: flex; flex-wrap: wrap; gap: 12px; }\n\
         svg.chart { border: 1px solid #eee; background: #fff; }\n\
         svg text { font-family: system-ui, sans-serif; font-size: 11px; fill: #333; }\n\
         svg text.title { font-size: 13px; font-weight: bold; } svg text.label { font-size: 12px; }\n\
         svg .grid { stroke: #eee; } svg .axis { stroke: #333; } svg .edge { stroke: #888; fill: none; stroke-width: 1.5; }\n\
         svg .node text.id { font-weight: bold; font-size: 13px; } svg .node rect { stroke-width: 1.5; }\n\
         .dag-wrap { overflow-x: auto; }\n\
         .pill { display: inline-block; border-radius: 9px; padding: 0 8px; border: 1px solid; font-size: 13px; }\n\
         .sample { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; margin: 10px 0; }\n\
         .user { font-weight: bold; } .ok { color: #2ca02c; } .bad { color: #d62728; }\n\
         .runs .sorted { display: none; } .runs .sorted:target, .runs:not(:has(.sorted:target)) .sorted.default { display: block; }\n\
         table.runs th a { color: inherit; }\n",
    );
    for (state, fill, stroke) in svg::state_colours() {
        let c = state.class();
        writeln!(css, "svg .node.{c} rect {{ fill: {fill}; stroke: {stroke}; }} .pill.{c} {{ background: {fill}; border-color: {stroke}; }}").unwrap();
    }
    writeln!(css, "svg .node.never rect {{ stroke-dasharray: 4 3; }}").unwrap();
    css
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let name = esc(&r.pipeline);
    h.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    writeln!(
        h,
        "<title>hone report: {name}</title>\n<style>\n{}</style>\n</head>\n<body>",
        style()
    )
    .unwrap();
    writeln!(h, "<h1>{name}</h1>").unwrap();
    writeln!(
        h,
        "<p class=\"meta\">pipeline <code>{}</code> · store <code>{}</code></p>",
        esc(&r.file.display().to_string()),
        esc(&r.workspace.join(".hone").display().to_string())
    )
    .unwrap();
    h.push_str("<nav><a href=\"#stages\">Stages</a><a href=\"#curves\">Training curves</a><a href=\"#data\">Data</a><a href=\"#evaluation\">Evaluation</a><a href=\"#samples\">Sample conversations</a><a href=\"#runs\">Runs</a></nav>\n");
    stages(r, &mut h);
    curves(&r.curves, r, &mut h);
    data(&r.data, &mut h);
    evaluation(&r.evals, &mut h);
    samples(&r.evals, &mut h);
    super::runs::render(&r.runs, &mut h);
    h.push_str("</body>\n</html>\n");
    h
}

fn stages(r: &Report, h: &mut String) {
    h.push_str("<section id=\"stages\">\n<h2>Stages</h2>\n");
    let mut counts: Vec<(State, usize)> = Vec::new();
    for s in &r.stages {
        match counts.iter_mut().find(|(st, _)| *st == s.state) {
            Some(c) => c.1 += 1,
            None => counts.push((s.state, 1)),
        }
    }
    let summary: Vec<String> = counts
        .iter()
        .map(|(st, n)| format!("<span class=\"pill {}\">{n} {}</span>", st.class(), st.label()))
        .collect();
    writeln!(h, "<p>{} stages: {}</p>", r.stages.len(), summary.join(" ")).unwrap();
    writeln!(h, "<div class=\"dag-wrap\">{}</div>", svg::dag(&r.stages)).unwrap();
    h.push_str("<table class=\"stages\">\n<tr><th>stage</th><th>kind</th><th>state</th><th>time</th><th>cache</th><th>key</th></tr>\n");
    for s in &r.stages {
        let time = s.seconds.map(duration).unwrap_or_else(|| "–".into());
        let cache = match (&s.artifact, s.reasons.is_empty()) {
            (Some(a), _) => {
                format!("up to date: output <code title=\"{}\">{}</code>", a.to_hex(), a.short())
            }
            (None, false) => format!("will run: {}", esc(&s.reasons.join("; "))),
            (None, true) => "will run".into(),
        };
        let key = s.key.map_or_else(
            || "–".to_string(),
            |k| format!("<code title=\"{}\">{}</code>", k.to_hex(), k.short()),
        );
        let mut state =
            format!("<span class=\"pill {}\">{}</span>", s.state.class(), s.state.label());
        if let Some(e) = &s.error {
            write!(state, "<pre>{}</pre>", esc(e)).unwrap();
        }
        if let (Some(log), State::Failed) = (&s.log, s.state) {
            write!(state, "log: <code>{}</code>", esc(&log.display().to_string())).unwrap();
        }
        writeln!(h, "<tr id=\"stage-{id}\"><td><b>{id}</b></td><td>{}</td><td>{state}</td><td class=\"num\">{time}</td><td>{cache}</td><td>{key}</td></tr>", esc(&s.kind), id = esc(&s.id)).unwrap();
    }
    h.push_str("</table>\n</section>\n");
}

fn curves(views: &[CurvesView], r: &Report, h: &mut String) {
    h.push_str("<section id=\"curves\">\n<h2>Training curves</h2>\n");
    if views.is_empty() {
        h.push_str("<p class=\"note\">No stage with an up-to-date output logged metrics (<code>metrics.jsonl</code>).</p>\n");
    }
    for v in views {
        writeln!(
            h,
            "<h3 id=\"curves-{id}\">{id} <span class=\"note\">({})</span></h3>",
            esc(&v.kind),
            id = esc(&v.stage)
        )
        .unwrap();
        if v.unreadable > 0 {
            writeln!(h, "<p class=\"note\">{} line(s) of metrics.jsonl were not JSON objects and are left out.</p>", v.unreadable).unwrap();
        }
        h.push_str("<div class=\"charts\">\n");
        for c in &v.charts {
            h.push_str(&svg::line_chart(c));
        }
        h.push_str("</div>\n");
    }
    let waiting: Vec<String> = r
        .stages
        .iter()
        .filter(|s| s.output.is_none())
        .map(|s| format!("{} ({})", esc(&s.id), s.state.label()))
        .collect();
    if !waiting.is_empty() {
        writeln!(
            h,
            "<p class=\"note\">Without an up-to-date output, so not shown here: {}.</p>",
            waiting.join(", ")
        )
        .unwrap();
    }
    h.push_str("</section>\n");
}

fn data(views: &[DataView], h: &mut String) {
    h.push_str("<section id=\"data\">\n<h2>Data</h2>\n");
    if views.is_empty() {
        h.push_str("<p class=\"note\">No ingest stage has an up-to-date output.</p>\n");
    }
    for d in views {
        writeln!(
            h,
            "<h3 id=\"data-{id}\">{id} <span class=\"note\">({} records)</span></h3>",
            esc(&d.format),
            id = esc(&d.stage)
        )
        .unwrap();
        let sources: Vec<String> =
            d.sources.iter().map(|(s, n)| format!("<code>{}</code> ({n})", esc(s))).collect();
        writeln!(
            h,
            "<p>{} records read from {}: {} train, {} validation; {} empty, {} malformed skipped.</p>",
            d.records,
            sources.join(", "),
            d.train,
            d.val,
            d.empty,
            d.skipped
        )
        .unwrap();
        if d.filters.is_empty() {
            h.push_str("<p class=\"note\">No filters.</p>\n");
            continue;
        }
        h.push_str("<table class=\"filters\">\n<tr><th>filter</th><th>kept</th><th>rewritten</th><th>dropped</th><th>why dropped</th></tr>\n");
        for f in &d.filters {
            let why: Vec<String> =
                f.reasons.iter().map(|(k, n)| format!("{} {n}", esc(k))).collect();
            writeln!(
                h,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&f.name),
                f.kept,
                f.rewritten,
                f.dropped,
                why.join(", ")
            )
            .unwrap();
        }
        h.push_str("</table>\n");
    }
    h.push_str("</section>\n");
}

/// A column's header: the known ones spelled out.
fn header(c: &str) -> String {
    match c {
        "name" => "model".into(),
        "accuracy" => "answer accuracy".into(),
        "mean_length" => "mean response length (tokens)".into(),
        other => other.replace('_', " "),
    }
}

/// A number with at most 3 decimals, without trailing zeros.
fn number(f: f64) -> String {
    let s = format!("{f:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// A cell (and whether it is a number): accuracies as percentages, null as n/a.
fn cell(column: &str, v: &Value) -> (String, bool) {
    match v {
        Value::Null => ("n/a".into(), true),
        Value::Number(n) if column.contains("accuracy") => {
            (n.as_f64().map_or_else(|| n.to_string(), |f| format!("{:.1}%", 100.0 * f)), true)
        }
        Value::Number(n) if n.is_f64() => (number(n.as_f64().unwrap_or(f64::NAN)), true),
        Value::Number(n) => (n.to_string(), true),
        Value::String(s) => (esc(s), false),
        other => (esc(&other.to_string()), false),
    }
}

fn evaluation(views: &[EvalView], h: &mut String) {
    h.push_str("<section id=\"evaluation\">\n<h2>Evaluation</h2>\n");
    if views.is_empty() {
        h.push_str("<p class=\"note\">No evaluate stage has an up-to-date output.</p>\n");
    }
    for e in views {
        writeln!(h, "<h3 id=\"eval-{id}\">{id}</h3>", id = esc(&e.stage)).unwrap();
        let settings: Vec<String> = e
            .settings
            .iter()
            .map(|(k, v)| format!("{} {}", esc(&k.replace('_', " ")), cell(k, v).0))
            .collect();
        if !settings.is_empty() {
            writeln!(h, "<p class=\"note\">{}</p>", settings.join(" · ")).unwrap();
        }
        h.push_str("<table class=\"evaluation\">\n<tr>");
        for c in &e.columns {
            write!(h, "<th>{}</th>", esc(&header(c))).unwrap();
        }
        h.push_str("</tr>\n");
        for row in &e.rows {
            h.push_str("<tr>");
            for (c, v) in e.columns.iter().zip(row) {
                let (text, num) = cell(c, v);
                write!(h, "<td{}>{text}</td>", if num { " class=\"num\"" } else { "" }).unwrap();
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    h.push_str("</section>\n");
}

fn samples(views: &[EvalView], h: &mut String) {
    h.push_str("<section id=\"samples\">\n<h2>Sample conversations</h2>\n");
    if views.iter().all(|e| e.samples.is_empty()) {
        h.push_str("<p class=\"note\">No evaluate stage has answers to show.</p>\n");
    }
    for e in views.iter().filter(|e| !e.samples.is_empty()) {
        writeln!(h, "<h3>{}</h3>", esc(&e.stage)).unwrap();
        for s in &e.samples {
            h.push_str("<div class=\"sample\">\n");
            writeln!(h, "<p><span class=\"user\">user:</span> {}</p>", esc(&s.prompt.display()))
                .unwrap();
            if let Some(a) = &s.answer {
                writeln!(h, "<p class=\"note\">expected answer: {}</p>", esc(a)).unwrap();
            }
            h.push_str("<table class=\"responses\">\n");
            for (model, response, correct) in &s.responses {
                let mark = match correct {
                    Some(true) => "<span class=\"ok\" title=\"correct\">✓</span>",
                    Some(false) => "<span class=\"bad\" title=\"wrong\">✗</span>",
                    None => "",
                };
                writeln!(
                    h,
                    "<tr><th>{}</th><td>{}</td><td>{mark}</td></tr>",
                    esc(model),
                    esc(response)
                )
                .unwrap();
            }
            h.push_str("</table>\n</div>\n");
        }
    }
    h.push_str("</section>\n");
}
