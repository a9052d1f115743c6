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

/// The git commit `file` sits in (`+dirty` when it differs from it), if it is in a repository.
fn git_commit(file: &Path) -> Option<String> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let git =
        |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output();
    let head = git(&["rev-parse", "HEAD"]).ok().filter(|o| o.status.success())?;
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let name = file.file_name()?.to_str()?;
    let clean =
        git(&["diff", "--quiet", "HEAD", "--", name]).ok().is_some_and(|o| o.status.success());
    Some(if clean { head } else { format!("{head}+dirty") })
}

/// Records the run of `p` that started at `started_ms` (its summary, if it got that far).
pub fn record_run(
    ws: &Workspace,
    p: &Pipeline,
    args: &PipelineArgs,
    started_ms: u64,
    summary: &RunSummary,
    outcome: &str,
    mlflow: Option<&str>,
) {
    let ids = p.stages.iter().map(|s| (s.id.clone(), s.id.clone())).collect();
    record_variant(ws, p, args, &args.set, &ids, "", started_ms, summary, outcome, mlflow);
}

/// Records one variant of a run: its stages are `ids` (the variant's stage id → the id it ran
/// as in `p`), its overrides `overrides`; `suffix` tells the run's variants apart in their ids.
#[allow(clippy::too_many_arguments)]
pub fn record_variant(
    ws: &Workspace,
    p: &Pipeline,
    args: &PipelineArgs,
    overrides: &[String],
    ids: &std::collections::BTreeMap<String, String>,
    suffix: &str,
    started_ms: u64,
    summary: &RunSummary,
    outcome: &str,
    mlflow: Option<&str>,
) {
    let last = ws.store.last_runs(&p.name);
    let mut stages = std::collections::BTreeMap::new();
    let lists: [(&[String], &str); 3] =
        [(&summary.ran, "ran"), (&summary.cached, "cached"), (&summary.skipped, "skipped")];
    let failed: Vec<String> = summary.failed.iter().map(|f| f.0.clone()).collect();
    for (ran_as, what) in lists.into_iter().chain([(failed.as_slice(), "failed")]) {
        for (id, merged) in ids.iter().filter(|(_, m)| ran_as.contains(m)) {
            let Some(spec) = p.index_of(merged).map(|i| &p.stages[i]) else { continue };
            let key = last.get(merged).and_then(|l| l.key);
            let metrics = key
                .and_then(|k| ws.store.lookup(&k).ok().flatten())
                .map(|r| r.metrics.into_iter().collect())
                .unwrap_or_default();
            stages.insert(
                id.clone(),
                StageRun {
                    kind: spec.kind.kind().to_string(),
                    outcome: what.to_string(),
                    key: key.map(|k| k.to_string()),
                    params: spec.params.canonical.clone(),
                    metrics,
                },
            );
        }
    }
    let file = &p.file;
    let record = RunRecord {
        id: format!("{}{suffix}", history::run_id(started_ms, std::process::id())),
        pipeline: p.name.clone(),
        file: args.pipeline.as_ref().unwrap_or(file).display().to_string(),
        file_digest: hone_engine::digest::hash_file(file)
            .map(|d| d.to_string())
            .unwrap_or_default(),
        git: git_commit(file),
        started_unix_ms: started_ms,
        finished_unix_ms: now_ms(),
        overrides: overrides.to_vec(),
        seed: p.seed,
        outcome: outcome.to_string(),
        stages,
    };
    if let Err(e) = history::record(ws.store.root(), &record) {
        eprintln!("hone: warning: the run was not recorded in the history: {e}");
    }
    if let Some(uri) = crate::tracker::uri(mlflow) {
        crate::tracker::send(&uri, ws, &record);
    }
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
