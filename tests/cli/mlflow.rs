//! `hone run` logging to a real MLflow tracking server (`mlflow server` from PyPI, started here
//! on loopback with a SQLite store): params, stepwise metrics, keys and artifact paths; and a
//! server that is down costing a warning, never the run.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Ws, env_flag, system_part};

/// `make` writes a two-step `metrics.jsonl`; `double` reads it.
const PIPELINE: &str = r#"
name: tracked
seed: 3
vars: { lr: 0.5 }
stages:
  make:
    uses: command
    with: { cmd: "printf '{\"step\": 1, \"loss\": 2.0}\\n{\"step\": 2, \"loss\": ${vars.lr}}\\n' > $HONE_OUT/metrics.jsonl" }
  double:
    uses: command
    inputs: { x: make }
    with: { cmd: "cat $HONE_IN_x/metrics.jsonl $HONE_IN_x/metrics.jsonl > $HONE_OUT/twice" }
"#;

/// The `mlflow` command: `HONE_MLFLOW`, else on PATH, else `.ci/venv/bin/mlflow`.
fn mlflow_bin() -> Option<PathBuf> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("HONE_MLFLOW").map(PathBuf::from),
        Some(PathBuf::from("mlflow")),
        Some(repo.join(".ci/venv/bin/mlflow")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// A running `mlflow server`, stopped when dropped.
struct Server {
    child: Child,
    uri: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    /// Stops the server's whole process group: `mlflow server` starts uvicorn and a job
    /// consumer that outlive it otherwise.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(bin: &PathBuf) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        use std::os::unix::process::CommandExt;
        let child = Command::new(bin)
            .process_group(0)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.path().join("db.sqlite").display()))
            .arg("--default-artifact-root")
            .arg(dir.path().join("artifacts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server { child, uri: format!("http://127.0.0.1:{port}"), _dir: dir };
        let t0 = Instant::now();
        while ureq::get(&format!("{}/health", s.uri)).call().is_err() {
            assert!(t0.elapsed() < Duration::from_secs(120), "mlflow server did not start");
            std::thread::sleep(Duration::from_millis(300));
        }
        s
    }

    fn post(&self, path: &str, body: Value) -> Value {
        ureq::post(&format!("{}/api/2.0/mlflow/{path}", self.uri))
            .send_json(&body)
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let mut r = ureq::get(&format!("{}/api/2.0/mlflow/{path}", self.uri));
        for (k, v) in query {
            r = r.query(*k, *v);
        }
        r.call().unwrap().body_mut().read_json().unwrap()
    }
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (p["key"].as_str().unwrap().into(), p["value"].as_str().unwrap_or("").into())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn runs_are_logged_to_a_real_mlflow_server() {
    let bin = mlflow_bin();
    let how = "`pip install mlflow` (then `mlflow` on PATH, or HONE_MLFLOW=/path/to/mlflow)";
    if !system_part("MLflow", bin.is_some(), how, "HONE_REQUIRE_MLFLOW") {
        return;
    }
    let server = Server::start(&bin.unwrap());
    let ws = Ws::new();
    ws.write("pipeline.yaml", PIPELINE);
    let out = ws.cmd(&["run"]).env("MLFLOW_TRACKING_URI", &server.uri).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{out:?}");
    // The flag, a second run with an override, into another experiment.
    let out = ws
        .cmd(&["run", "-s", "vars.lr=0.25", "--mlflow", &server.uri])
        .env("MLFLOW_EXPERIMENT_NAME", "tracked-lr")
        .output()
        .unwrap();
    assert!(out.status.success());

    let exp = server.get("experiments/get-by-name", &[("experiment_name", "tracked")]);
    let id = exp["experiment"]["experiment_id"].as_str().unwrap().to_string();
    let runs = server.post("runs/search", json!({ "experiment_ids": [id] }));
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(run["info"]["status"], "FINISHED");
    let params = pairs(&run["data"]["params"]);
    assert!(params.contains(&("seed".into(), "3".into())), "{params:?}");
    assert!(params.iter().any(|(k, v)| k == "make.cmd" && v.contains("printf")), "{params:?}");
    let tags = pairs(&run["data"]["tags"]);
    let local = json_of(&ws.hone(&["runs", "--json", "--full"]).ok().stdout);
    let key = local[1]["stages"]["make"]["key"].as_str().unwrap().to_string();
    assert!(tags.contains(&("hone.key.make".into(), key)), "{tags:?}");
    assert!(
        tags.iter().any(|(k, v)| k == "hone.artifact.make" && std::path::Path::new(v).is_dir())
    );
    assert!(tags.contains(&("mlflow.runName".into(), local[1]["id"].as_str().unwrap().into())));
    let run_id = run["info"]["run_id"].as_str().unwrap();
    let history =
        server.get("metrics/get-history", &[("run_id", run_id), ("metric_key", "make/loss")]);
    let steps: Vec<(i64, f64)> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(steps, [(1, 2.0), (2, 0.5)]);

    let exp = server.get("experiments/get-by-name", &[("experiment_name", "tracked-lr")]);
    let id = exp["experiment"]["experiment_id"].as_str().unwrap().to_string();
    let runs = server.post("runs/search", json!({ "experiment_ids": [id] }));
    let params = pairs(&runs["runs"][0]["data"]["params"]);
    assert!(params.contains(&("overrides".into(), "vars.lr=0.25".into())), "{params:?}");
    // A server that answers, but not as MLflow: a warning with the HTTP status, never the run.
    let out = ws.cmd(&["run", "--mlflow", &format!("{}/not-mlflow", server.uri)]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("could not log run") && stderr.contains("404"), "{stderr}");

    if env_flag("HONE_KEEP_MLFLOW") {
        std::mem::forget(server);
    }
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// Nothing listens: the run succeeds, says what it could not do, and is in the local history.
#[test]
fn a_server_that_is_down_costs_a_warning_never_the_run() {
    let ws = Ws::new();
    ws.write("pipeline.yaml", PIPELINE);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = ws
        .cmd(&["run"])
        .env("MLFLOW_TRACKING_URI", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("could not log run") && stderr.contains("hone runs"), "{stderr}");
    let out = ws.cmd(&["run", "--mlflow", "file:///tmp/mlruns"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an http:// URI"));
    assert_eq!(json_of(&ws.hone(&["runs", "--json"]).ok().stdout).as_array().unwrap().len(), 2);
}
