//! `hone runs` and `hone diff`, and recording each `hone run` in the store's history
//! ([`hone_engine::history`]).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hone_engine::exec::RunSummary;
use hone_engine::history::{self, RunRecord, StageRun};
use hone_engine::spec::Pipeline;
use hone_engine::workspace::Workspace;
use serde_json::Value;

use crate::exit::{EXIT_USAGE, EXIT_WORKSPACE, Fatal};
use crate::pipeline::load;
use crate::{HistoryArgs, PipelineArgs};

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The git commit of the work tree `file` sits in (`-dirty` when the tree has changes), if it
/// is in a repository: one `git` process.
fn git_commit(file: &Path) -> Option<String> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["describe", "--always", "--dirty", "--abbrev=40", "--exclude=*"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the record of every variant of one `hone run` shares: the pipeline file, its digest and
/// git commit (read once), the run's start and summary, and where to send it.
pub struct RunContext<'a> {
    ws: &'a Workspace,
    p: &'a Pipeline,
    file: String,
    file_digest: String,
    git: Option<String>,
    started_ms: u64,
    summary: &'a RunSummary,
    mlflow: Option<String>,
}

impl<'a> RunContext<'a> {
    pub fn new(
        ws: &'a Workspace,
        p: &'a Pipeline,
        args: &PipelineArgs,
        started_ms: u64,
        summary: &'a RunSummary,
        mlflow: Option<&str>,
    ) -> RunContext<'a> {
        RunContext {
            ws,
            p,
            file: args.pipeline.as_ref().unwrap_or(&p.file).display().to_string(),
            file_digest: hone_engine::digest::hash_file(&p.file)
                .map(|d| d.to_string())
                .unwrap_or_default(),
            git: git_commit(&p.file),
            started_ms,
            summary,
            mlflow: crate::tracker::uri(mlflow),
        }
    }

    /// How stage `id` (as it ran) ended in the run.
    pub fn outcome_of(&self, id: &str) -> Option<hone_engine::store::Outcome> {
        self.summary.outcomes.get(id).map(|l| l.outcome)
    }

    /// Records one variant of the run: its stages `ids` (the variant's stage id, and the id it
    /// ran as in the pipeline), its `overrides`; `suffix` tells a run's variants apart.
    pub fn record<'i>(
        &self,
        overrides: &[String],
        ids: impl Iterator<Item = (&'i String, &'i String)>,
        suffix: &str,
        outcome: &str,
    ) {
        let (p, summary) = (self.p, self.summary);
        let specs: std::collections::HashMap<&str, &hone_engine::spec::StageSpec> =
            p.stages.iter().map(|s| (s.id.as_str(), s)).collect();
        let stages = ids
            .filter_map(|(id, ran_as)| {
                let last = summary.outcomes.get(ran_as)?;
                let spec = specs.get(ran_as.as_str())?;
                let outcome = serde_json::to_value(last.outcome).ok()?.as_str()?.to_string();
                let metrics = summary.metrics.get(ran_as).cloned().unwrap_or_default();
                Some((
                    id.clone(),
                    StageRun {
                        kind: spec.kind.kind().to_string(),
                        outcome,
                        key: last.key.map(|k| k.to_string()),
                        params: spec.params.canonical.clone(),
                        metrics: metrics.into_iter().collect(),
                    },
                ))
            })
            .collect();
        let record = RunRecord {
            id: format!("{}{suffix}", history::run_id(self.started_ms, std::process::id())),
            pipeline: p.name.clone(),
            file: self.file.clone(),
            file_digest: self.file_digest.clone(),
            git: self.git.clone(),
            started_unix_ms: self.started_ms,
            finished_unix_ms: now_ms(),
            overrides: overrides.to_vec(),
            seed: p.seed,
            outcome: outcome.to_string(),
            stages,
        };
        if let Err(e) = history::record(self.ws.store.root(), &record) {
            eprintln!("hone: warning: the run was not recorded in the history: {e}");
        }
        if let Some(uri) = &self.mlflow {
            crate::tracker::send(uri, self.ws, &record);
        }
    }
}

/// Records the run of `p` (a run without variants).
pub fn record_run(
    ws: &Workspace,
    p: &Pipeline,
    args: &PipelineArgs,
    started_ms: u64,
    summary: &RunSummary,
    outcome: &str,
    mlflow: Option<&str>,
) {
    let cx = RunContext::new(ws, p, args, started_ms, summary, mlflow);
    cx.record(&args.set, p.stages.iter().map(|s| (&s.id, &s.id)), "", outcome);
}

/// The store root that holds the history.
fn store_of(h: &HistoryArgs) -> Result<std::path::PathBuf, Fatal> {
    let args = PipelineArgs {
        pipeline: h.pipeline.clone(),
        set: Vec::new(),
        workspace: h.workspace.clone(),
    };
    let (_, ws) = load(&args)?;
    Ok(ws.store.root().to_path_buf())
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => {
                format!("{x:.6}").trim_end_matches('0').trim_end_matches('.').to_string()
            }
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

pub fn runs(h: &HistoryArgs, last: Option<usize>, json: bool, full: bool) -> Result<u8, Fatal> {
    let root = store_of(h)?;
    let n = last.unwrap_or(usize::MAX);
    if full {
        let all = history::list(&root);
        let shown: Vec<&RunRecord> = all.iter().rev().take(n).collect();
        println!("{}", serde_json::to_string(&shown).expect("records serialise"));
        return Ok(0);
    }
    let all = history::summaries(&root);
    if json {
        let shown: Vec<_> = all.iter().rev().take(n).collect();
        println!("{}", serde_json::to_string(&shown).expect("summaries serialise"));
        return Ok(0);
    }
    if all.is_empty() {
        println!("no recorded runs yet: `hone run` records each run");
        return Ok(0);
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<28} {:<16} {:<11} {:>3} {:>6} {:>6}  overrides",
        "run", "pipeline", "outcome", "ran", "cached", "failed"
    );
    for r in all.iter().rev().take(n) {
        let _ = writeln!(
            out,
            "{:<28} {:<16} {:<11} {:>3} {:>6} {:>6}  {}",
            r.id,
            r.pipeline,
            r.outcome,
            r.ran,
            r.cached,
            r.failed,
            r.overrides.join(" ")
        );
    }
    Ok(0)
}

pub fn diff(h: &HistoryArgs, a: Option<&str>, b: Option<&str>, json: bool) -> Result<u8, Fatal> {
    let root = store_of(h)?;
    let ids = history::ids(&root);
    let usage = |message: String| Fatal {
        message: format!("error: {message}\n   = help: `hone runs` lists them"),
        code: EXIT_USAGE,
    };
    let (a, b) = match (a, b) {
        (None, None) => ("-2", "-1"),
        (Some(a), None) => (a, "-1"),
        (Some(a), Some(b)) => (a, b),
        (None, Some(_)) => unreachable!("clap fills positionals in order"),
    };
    if ids.is_empty() {
        return Err(Fatal {
            message: "error: no recorded runs yet\n   = help: `hone run` records each run".into(),
            code: EXIT_WORKSPACE,
        });
    }
    let (a, b) = (history::find(&ids, a).map_err(usage)?, history::find(&ids, b).map_err(usage)?);
    let read = |id: &str| {
        history::load(&root, id)
            .map_err(|e| Fatal { message: format!("error: {e}"), code: EXIT_WORKSPACE })
    };
    let (ra, rb) = (read(a)?, read(b)?);
    let (ra, rb) = (&ra, &rb);
    let d = history::diff(ra, rb);
    if json {
        println!("{}", serde_json::to_string(&d).expect("a diff serialises"));
        return Ok(0);
    }
    println!("a: {} ({})\nb: {} ({})", ra.id, ra.pipeline, rb.id, rb.pipeline);
    for (what, x, y) in &d.run {
        println!("{what}: {} → {}", short(x), short(y));
    }
    if !d.params.is_empty() {
        println!("\nparams:");
        for (stage, path, x, y) in &d.params {
            println!("  {:<32} {} → {}", format!("{stage}.{path}"), short(x), short(y));
        }
    }
    if !d.keys.is_empty() {
        println!(
            "\nstages whose key changed: {}",
            d.keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if !d.metrics.is_empty() {
        println!("\nmetrics:");
        for (stage, name, x, y) in &d.metrics {
            println!("  {:<40} {:>12} → {:>12}", format!("{stage}.{name}"), short(x), short(y));
        }
    }
    if d.run.is_empty() && d.params.is_empty() && d.keys.is_empty() && d.metrics.is_empty() {
        println!("\nthe same: params, keys and metrics");
    }
    Ok(0)
}
