//! The page's runs: the pipeline's recorded runs (`hone runs`) as a table, variants as rows,
//! the params that differ between them and the final metrics of the pipeline's last stages
//! as columns, sortable by any column without a script (each order is rendered, and a column's
//! header links to it: CSS `:target` shows the chosen one); and the curves of the stages whose
//! key differs, one line per run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use hone_engine::history::{self, RunRecord};
use hone_engine::spec::Pipeline;
use hone_engine::workspace::Workspace;
use serde_json::Value;

use super::curves::{self, Chart, Series};
use super::svg;
use super::text::esc;

/// Runs shown at most (the newest).
const MAX_RUNS: usize = 30;
/// Runs whose curves are overlaid at most (the newest).
const MAX_CURVES: usize = 8;
const MAX_PARAMS: usize = 10;
const MAX_METRICS: usize = 12;

/// The table and the overlaid curves.
#[derive(Debug, Clone, Default)]
pub struct RunsView {
    pub columns: Vec<String>,
    /// Rows newest first: each cell's text.
    pub rows: Vec<Vec<String>>,
    /// Per column, the rows' order when sorted by it.
    pub orders: Vec<Vec<usize>>,
    pub charts: Vec<Chart>,
}

/// A cell: a param as written (`3e-5` stays exact), a metric to 4 decimals.
fn text(v: Option<&Value>, metric: bool) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if metric && n.is_f64() => format!("{x:.4}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

/// The recorded runs of `p` in the store (newest first, at most [`MAX_RUNS`]) as a view.
pub fn gather(ws: &Workspace, p: &Pipeline) -> RunsView {
    let root = ws.store.root();
    let ids: Vec<String> = history::summaries(root)
        .into_iter()
        .rev()
        .filter(|s| s.pipeline == p.name)
        .take(MAX_RUNS)
        .map(|s| s.id)
        .collect();
    let runs: Vec<RunRecord> = ids.iter().filter_map(|id| history::load(root, id).ok()).collect();
    if runs.is_empty() {
        return RunsView::default();
    }
    // Params (stage.param) whose values differ between the runs.
    let params: Vec<BTreeMap<String, Value>> = runs
        .iter()
        .map(|r| {
            let mut m = BTreeMap::new();
            for (id, s) in &r.stages {
                history::flatten(id, &s.params, &mut m);
            }
            m
        })
        .collect();
    let varying = |maps: &[BTreeMap<String, Value>]| -> Vec<String> {
        let keys: BTreeSet<&String> = maps.iter().flat_map(|m| m.keys()).collect();
        keys.into_iter()
            .filter(|k| maps.iter().any(|m| m.get(*k) != maps[0].get(*k)))
            .cloned()
            .collect()
    };
    let mut param_cols = varying(&params);
    param_cols.truncate(MAX_PARAMS);
    // The final metrics of the pipeline's last stages (those no stage reads).
    let sinks: BTreeSet<&str> = (0..p.stages.len())
        .filter(|&i| !p.stages.iter().any(|s| s.inputs.values().flatten().any(|r| r.stage == i)))
        .map(|i| p.stages[i].id.as_str())
        .collect();
    let metrics: Vec<BTreeMap<String, Value>> = runs
        .iter()
        .map(|r| {
            r.stages
                .iter()
                .filter(|(id, _)| sinks.contains(id.as_str()))
                .flat_map(|(id, s)| {
                    s.metrics.iter().map(move |(k, v)| (format!("{id}.{k}"), v.clone()))
                })
                .collect()
        })
        .collect();
    let mut metric_cols =
        if runs.len() > 1 { varying(&metrics) } else { metrics[0].keys().cloned().collect() };
    metric_cols.truncate(MAX_METRICS);

    let mut columns = vec!["run".to_string(), "outcome".to_string(), "overrides".to_string()];
    columns.extend(param_cols.iter().cloned());
    columns.extend(metric_cols.iter().cloned());
    let rows: Vec<Vec<String>> = runs
        .iter()
        .zip(params.iter().zip(&metrics))
        .map(|(r, (pm, mm))| {
            let mut row = vec![r.id.clone(), r.outcome.clone(), r.overrides.join(" ")];
            row.extend(param_cols.iter().map(|c| text(pm.get(c), false)));
            row.extend(metric_cols.iter().map(|c| text(mm.get(c), true)));
            row
        })
        .collect();
    // Sorted by each column: numbers as numbers (largest first), text as text; the run column
    // newest first.
    let orders = (0..columns.len())
        .map(|c| {
            let mut order: Vec<usize> = (0..rows.len()).collect();
            order.sort_by(|&a, &b| {
                let (x, y) = (&rows[a][c], &rows[b][c]);
                match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(x), Ok(y)) => y.total_cmp(&x),
                    _ if c == 0 => y.cmp(x),
                    _ => x.cmp(y),
                }
            });
            order
        })
        .collect();

    // Overlaid curves: for each stage whose key differs between the newest runs, its first
    // chart (the loss), one line per run.
    let recent = &runs[..runs.len().min(MAX_CURVES)];
    let mut charts = Vec::new();
    let stage_ids: BTreeSet<&String> = recent.iter().flat_map(|r| r.stages.keys()).collect();
    for id in stage_ids {
        let keys: BTreeSet<Option<&String>> =
            recent.iter().map(|r| r.stages.get(id).and_then(|s| s.key.as_ref())).collect();
        if keys.len() < 2 {
            continue;
        }
        let mut by_title: BTreeMap<String, Vec<Series>> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        for r in recent {
            let Some(key) = r.stages.get(id).and_then(|s| s.key.as_ref()) else { continue };
            if !seen.insert(key.clone()) {
                continue;
            }
            let Ok(k) = key.parse() else { continue };
            let Some(record) = ws.store.lookup(&k).ok().flatten() else { continue };
            let path = ws.store.object_path(&record.artifact).join("metrics.jsonl");
            let Ok(m) = std::fs::read_to_string(path) else { continue };
            let (cs, _) = curves::charts(&m);
            if let Some(first) = cs.into_iter().next() {
                let label =
                    if r.overrides.is_empty() { r.id.clone() } else { r.overrides.join(" ") };
                if let Some(s) = first.series.into_iter().next() {
                    by_title
                        .entry(format!("{id}: {}", first.title))
                        .or_default()
                        .push(Series { name: label, points: s.points });
                }
            }
        }
        for (title, series) in by_title.into_iter().filter(|(_, s)| s.len() > 1) {
            charts.push(Chart { title, x_label: "step".into(), series });
        }
    }
    RunsView { columns, rows, orders, charts }
}

/// The section.
pub fn render(v: &RunsView, h: &mut String) {
    h.push_str("<section id=\"runs\">\n<h2>Runs</h2>\n");
    if v.rows.is_empty() {
        h.push_str("<p class=\"note\">No recorded run of this pipeline yet: <code>hone run</code> records each.</p>\n</section>\n");
        return;
    }
    writeln!(
        h,
        "<p class=\"note\">The last {} recorded runs (<code>hone runs</code>, <code>hone diff</code>): the params that differ between them and the final metrics of the pipeline's last stages. A column's header sorts by it.</p>",
        v.rows.len()
    )
    .unwrap();
    h.push_str("<div class=\"runs\">\n");
    for (c, order) in v.orders.iter().enumerate() {
        let default = if c == 0 { " default" } else { "" };
        writeln!(
            h,
            "<div class=\"sorted{default}\" id=\"runs-by-{c}\">\n<table class=\"runs\">\n<tr>"
        )
        .unwrap();
        for (j, name) in v.columns.iter().enumerate() {
            let mark = if j == c { " ▾" } else { "" };
            writeln!(h, "<th><a href=\"#runs-by-{j}\">{}</a>{mark}</th>", esc(name)).unwrap();
        }
        h.push_str("</tr>\n");
        for &r in order {
            h.push_str("<tr>");
            for (j, cell) in v.rows[r].iter().enumerate() {
                let class =
                    if j > 2 && cell.parse::<f64>().is_ok() { " class=\"num\"" } else { "" };
                write!(h, "<td{class}>{}</td>", esc(cell)).unwrap();
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n</div>\n");
    }
    h.push_str("</div>\n");
    if !v.charts.is_empty() {
        h.push_str("<h3 id=\"runs-curves\">Curves of the stages the runs changed</h3>\n<div class=\"charts\">\n");
        for c in &v.charts {
            h.push_str(&svg::line_chart(c));
        }
        h.push_str("</div>\n");
    }
    h.push_str("</section>\n");
}
