//! The charts of a `metrics.jsonl`: every numeric field becomes a series over `step`, and
//! series are grouped into charts so that a value and its validation counterpart share one
//! (`accuracy` with `val_accuracy`), every loss shares the loss chart (`loss`,
//! `val_loss`, `loss/value_avg`), and a reward model's scores of chosen and rejected responses
//! share one (`rewards/chosen`, `val_rejected`, ...). Nested objects are flattened with `/`, TRL's spelling
//! (`{"objective": {"kl": 0.1}}` is `objective/kl`). Anything else (strings, booleans) is
//! not drawn.

use serde_json::Value;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// (x, y), in file order.
    pub points: Vec<(f64, f64)>,
}

/// One chart: series that share an axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub series: Vec<Series>,
}

/// The charts of a `metrics.jsonl` (loss, learning rate, gradient norm, then the others by
/// name; in each, the series named like the chart first, then the others by name), and the
/// number of lines that were not JSON objects.
pub fn charts(metrics: &str) -> (Vec<Chart>, usize) {
    let mut series: Vec<Series> = Vec::new();
    let mut unreadable = 0;
    let mut any_step = false;
    for (i, line) in metrics.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) else {
            unreadable += 1;
            continue;
        };
        let step = m.get("step").and_then(Value::as_f64);
        any_step |= step.is_some();
        let x = step.unwrap_or((i + 1) as f64);
        let mut fields = Vec::new();
        for (k, v) in &m {
            if k != "step" {
                numbers(k, v, &mut fields);
            }
        }
        for (name, y) in fields {
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push((x, y)),
                None => series.push(Series { name, points: vec![(x, y)] }),
            }
        }
    }
    let x_label = if any_step { "step" } else { "line" };
    let mut out: Vec<Chart> = Vec::new();
    for s in series {
        let title = group(&s.name);
        match out.iter_mut().find(|c| c.title == title) {
            Some(c) => c.series.push(s),
            None => out.push(Chart { title, x_label: x_label.to_string(), series: vec![s] }),
        }
    }
    let rank = |t: &str| ["loss", "lr", "grad_norm"].iter().position(|&f| f == t).unwrap_or(3);
    out.sort_by(|a, b| (rank(&a.title), &a.title).cmp(&(rank(&b.title), &b.title)));
    for c in &mut out {
        let t = c.title.clone();
        c.series.sort_by(|a, b| (a.name != t, &a.name).cmp(&(b.name != t, &b.name)));
    }
    (out, unreadable)
}

/// The finite numbers in `v`, named `prefix` or `prefix/field/...`.
fn numbers(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                out.push((prefix.to_string(), f));
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                numbers(&format!("{prefix}/{k}"), v, out);
            }
        }
        _ => {}
    }
}

/// The chart a series belongs to: its name without a split marker (`val_`, `eval/`,
/// `_train`, ...), `loss` for every loss, `rewards` for scores of chosen and rejected responses.
pub fn group(name: &str) -> String {
    let mut base = name;
    for p in ["val_", "eval_", "train_", "val/", "eval/", "train/"] {
        if let Some(rest) = base.strip_prefix(p) {
            base = rest;
            break;
        }
    }
    for s in ["_val", "_eval", "_train"] {
        if let Some(rest) = base.strip_suffix(s) {
            base = rest;
            break;
        }
    }
    if base == "loss"
        || base.ends_with("_loss")
        || base.starts_with("loss/")
        || base.ends_with("/loss")
    {
        return "loss".into();
    }
    if matches!(base.rsplit('/').next(), Some("chosen" | "rejected")) {
        return "rewards".into();
    }
    base.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_numeric_field_is_drawn_and_validation_shares_the_chart() {
        let metrics = "{\"step\":1,\"loss\":3.0,\"lr\":0.001,\"grad_norm\":2.0}\n\
                       {\"step\":2,\"loss\":2.5,\"lr\":0.002,\"grad_norm\":1.5}\n\
                       {\"step\":2,\"val_loss\":2.7,\"accuracy\":0.5,\"val_accuracy\":0.4,\"note\":\"x\",\"ok\":true}\n\
                       not json\n\
                       {\"step\":3,\"objective\":{\"kl\":0.1,\"scores\":0.7},\"loss/value_avg\":0.2}\n";
        let (charts, unreadable) = charts(metrics);
        assert_eq!(unreadable, 1);
        let titles: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(
            titles,
            ["loss", "lr", "grad_norm", "accuracy", "objective/kl", "objective/scores"]
        );
        let names = |c: &Chart| c.series.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&charts[0]), ["loss", "loss/value_avg", "val_loss"]);
        assert_eq!(charts[0].series[2].points, [(2.0, 2.7)]);
        assert_eq!(charts[0].series[0].points, [(1.0, 3.0), (2.0, 2.5)]);
        assert_eq!(names(&charts[3]), ["accuracy", "val_accuracy"]);
        assert!(charts.iter().all(|c| c.x_label == "step"));
    }

    /// The reward stage's names (TRL's reward trainer's, and its held-out ones).
    #[test]
    fn a_reward_models_series_pair_up() {
        let line = r#"{"step":1,"loss":0.7,"accuracy":0.5,"margin":0.1,"rewards/chosen":0.2,"rewards/rejected":0.1,"val_loss":0.69,"val_accuracy":0.6,"val_margin":0.2,"val_chosen":0.3,"val_rejected":0.1}"#;
        let (charts, _) = charts(line);
        let got: Vec<(String, Vec<String>)> = charts
            .iter()
            .map(|c| (c.title.clone(), c.series.iter().map(|s| s.name.clone()).collect()))
            .collect();
        let want = [
            ("loss", vec!["loss", "val_loss"]),
            ("accuracy", vec!["accuracy", "val_accuracy"]),
            ("margin", vec!["margin", "val_margin"]),
            ("rewards", vec!["rewards/chosen", "rewards/rejected", "val_chosen", "val_rejected"]),
        ];
        let want: Vec<(String, Vec<String>)> = want
            .iter()
            .map(|(t, s)| (t.to_string(), s.iter().map(|x| x.to_string()).collect()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn without_a_step_field_the_line_number_is_the_x_axis() {
        let (charts, _) = charts("{\"reward\": 1}\n\n{\"reward\": 2}\n");
        assert_eq!(charts[0].x_label, "line");
        assert_eq!(charts[0].series[0].points, [(1.0, 1.0), (3.0, 2.0)]);
        assert!(super::charts("").0.is_empty());
    }
}
