//! Each recorded run sent to an MLflow tracking server through its REST API
//! (`/api/2.0/mlflow/...`), when `MLFLOW_TRACKING_URI` is set or `hone run --mlflow URI` given:
//! one MLflow run per hone run (per variant of a sweep) in the experiment named after the
//! pipeline (`MLFLOW_EXPERIMENT_NAME` overrides it). Params: the overrides, the seed and each
//! stage's params (`stage.param`); metrics: every stage's `metrics.jsonl` stepwise
//! (`stage/metric` at its `step`), and the final metrics of stages without one; tags: each
//! stage's key, outcome and artifact path, the run's id, file and git commit.
//!
//! A server that is down or refuses costs a warning, never the run: the run is in the local
//! history either way (`hone runs`).

use std::collections::BTreeMap;
use std::time::Duration;

use hone_engine::history::RunRecord;
use hone_engine::workspace::Workspace;
use serde_json::{Value, json};

/// The tracking server to send to: the flag, else `MLFLOW_TRACKING_URI` (only `http(s)://`).
pub fn uri(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok())
        .filter(|u| !u.trim().is_empty())
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Sends `run`, warning (never failing) when the server cannot take it.
pub fn send(uri: &str, ws: &Workspace, run: &RunRecord) {
    if let Err(e) = try_send(uri, ws, run) {
        eprintln!(
            "hone: warning: could not log run {} to MLflow at {uri}: {e}\n   = help: the run is recorded here all the same (`hone runs`); check the server, or unset MLFLOW_TRACKING_URI",
            run.id
        );
    }
}

/// MLflow's limits: 250 characters per key, 6,000 per param value, 5,000 per tag value.
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn try_send(uri: &str, ws: &Workspace, run: &RunRecord) -> Result<String, String> {
    if !uri.starts_with("http://") {
        return Err(format!("`{uri}` is not an http:// URI (this build speaks plain HTTP only)"));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let call = |path: &str, body: Value| -> Result<Value, String> {
        let mut resp = agent
            .post(&format!("{uri}/api/2.0/mlflow/{path}"))
            .send_json(&body)
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let v: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        if status.is_success() { Ok(v) } else { Err(format!("{path}: HTTP {status}: {v}")) }
    };
    let experiment =
        std::env::var("MLFLOW_EXPERIMENT_NAME").unwrap_or_else(|_| run.pipeline.clone());
    let found = agent
        .get(&format!("{uri}/api/2.0/mlflow/experiments/get-by-name"))
        .query("experiment_name", &experiment)
        .call()
        .map_err(|e| e.to_string())?;
    let experiment_id = if found.status().is_success() {
        let mut found = found;
        let v: Value = found.body_mut().read_json().map_err(|e| e.to_string())?;
        v["experiment"]["experiment_id"].as_str().unwrap_or_default().to_string()
    } else {
        let v = call("experiments/create", json!({ "name": experiment }))?;
        v["experiment_id"].as_str().unwrap_or_default().to_string()
    };
    let created = call(
        "runs/create",
        json!({
            "experiment_id": experiment_id,
            "run_name": run.id,
            "start_time": run.started_unix_ms,
            "tags": [{ "key": "mlflow.runName", "value": run.id }],
        }),
    )?;
    let run_id =
        created["run"]["info"]["run_id"].as_str().ok_or("no run id in the reply")?.to_string();

    let mut params = vec![
        ("seed".to_string(), run.seed.to_string()),
        ("overrides".to_string(), run.overrides.join(" ")),
    ];
    let mut tags = vec![
        ("hone.run".to_string(), run.id.clone()),
        ("hone.pipeline_file".to_string(), run.file.clone()),
        ("hone.outcome".to_string(), run.outcome.clone()),
    ];
    if let Some(g) = &run.git {
        tags.push(("hone.git".into(), g.clone()));
    }
    let mut metrics: Vec<Value> = Vec::new();
    for (id, s) in &run.stages {
        let mut flat = BTreeMap::new();
        hone_engine::history::flatten(id, &s.params, &mut flat);
        params.extend(flat.into_iter().map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        }));
        tags.push((format!("hone.outcome.{id}"), s.outcome.clone()));
        let Some(key) = &s.key else { continue };
        tags.push((format!("hone.key.{id}"), key.clone()));
        let record = key.parse().ok().and_then(|k| ws.store.lookup(&k).ok().flatten());
        let Some(record) = record else { continue };
        let dir = ws.store.object_path(&record.artifact);
        tags.push((format!("hone.artifact.{id}"), dir.display().to_string()));
        let stepwise = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
        let mut any = false;
        for line in stepwise.lines() {
            let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) else { continue };
            let step = m.get("step").and_then(Value::as_i64).unwrap_or(0);
            for (k, v) in &m {
                if let (false, Some(x)) = (k == "step", v.as_f64().filter(|x| x.is_finite())) {
                    metrics.push(json!({ "key": clip(&format!("{id}/{k}"), 250), "value": x, "timestamp": run.finished_unix_ms, "step": step }));
                    any = true;
                }
            }
        }
        if !any {
            let finals: BTreeMap<&String, f64> =
                s.metrics.iter().filter_map(|(k, v)| Some((k, v.as_f64()?))).collect();
            for (k, x) in finals.into_iter().filter(|(_, x)| x.is_finite()) {
                metrics.push(json!({ "key": clip(&format!("{id}/{k}"), 250), "value": x, "timestamp": run.finished_unix_ms, "step": 0 }));
            }
        }
    }
    let kv = |v: &[(String, String)], max: usize| -> Vec<Value> {
        v.iter().map(|(k, x)| json!({ "key": clip(k, 250), "value": clip(x, max) })).collect()
    };
    let (params, tags) = (kv(&params, 6000), kv(&tags, 5000));
    // log-batch takes at most 100 params, 100 tags and 1,000 metrics per call.
    for chunk in params.chunks(100) {
        call("runs/log-batch", json!({ "run_id": run_id, "params": chunk }))?;
    }
    for chunk in tags.chunks(100) {
        call("runs/log-batch", json!({ "run_id": run_id, "tags": chunk }))?;
    }
    for chunk in metrics.chunks(1000) {
        call("runs/log-batch", json!({ "run_id": run_id, "metrics": chunk }))?;
    }
    let status = if run.outcome == "ok" { "FINISHED" } else { "FAILED" };
    call(
        "runs/update",
        json!({ "run_id": run_id, "status": status, "end_time": run.finished_unix_ms }),
    )?;
    Ok(run_id)
}
