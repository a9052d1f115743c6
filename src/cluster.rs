//! Running stages elsewhere than in this process: `hone run --executor slurm [--detach]`,
//! `hone status`, and the hidden `hone exec-stage JOB.json`, the worker remote executors run.
//!
//! `exec-stage` runs one stage job in this process against the job's workspace and prints
//! the run's events as JSON lines on stdout. Exit 0 when the stage ran or was cached, 1 when
//! it failed or could not run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hone_engine::digest::ArtifactDigest;
use hone_engine::events::{Event, EventSink};
use hone_engine::exec::job::{JobResult, StageJob, run_job};
use hone_engine::exec::slurm::{self, Slurm, SlurmOptions};
use hone_engine::exec::{self, Executor, JobId, Launch, Outcome, RunOptions, RunSummary};
use hone_engine::resources::ExecutorKind;
use hone_engine::spec::Pipeline;
use hone_engine::workspace::Workspace;

use crate::exit::{EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Fatal, on_ctrl_c};
use crate::report::JsonReporter;

pub fn exec_stage(path: &Path) -> Result<u8, Fatal> {
    let cancel = on_ctrl_c();
    let sink = JsonReporter;
    let job = StageJob::read(path);
    let outcome = job.as_ref().map_err(|e| e.to_string()).and_then(|job| {
        run_job(job, &hone_stages::registry(), &sink, &cancel).map_err(|e| e.to_string())
    });
    match outcome {
        Ok(Outcome::Ran { .. } | Outcome::Cached { .. }) => Ok(0),
        Ok(_) if cancel.load(Ordering::SeqCst) => Ok(EXIT_INTERRUPTED),
        Ok(_) => Ok(EXIT_FAILED),
        Err(error) => {
            // Said as an event too, so whoever follows the job sees why.
            let (stage, log) = job.map(|j| (j.stage, j.log)).unwrap_or_default();
            sink.emit(Event::StageFailed { stage, error: error.clone(), log });
            Err(Fatal { message: format!("error: {error}"), code: EXIT_FAILED })
        }
    }
}

/// Where `hone run` runs the stages.
#[derive(clap::Args, Clone, Default)]
pub struct ExecArgs {
    /// `local` (threads of this process) or `slurm` (one sbatch job per stage); default: the
    /// pipeline's `executor: { kind: ... }`, else local.
    #[arg(long, value_name = "KIND")]
    pub executor: Option<ExecutorKind>,
    /// With Slurm: return once the jobs are submitted (`hone status` follows them).
    #[arg(long)]
    pub detach: bool,
}

/// Run the pipeline with the executor the flags or the pipeline ask for.
pub fn run_pipeline(
    ws: &Workspace,
    p: &Pipeline,
    opts: &RunOptions,
    ex: &ExecArgs,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<RunSummary, Fatal> {
    let kind = ex.executor.unwrap_or(p.executor.kind);
    if kind == ExecutorKind::Local {
        if ex.detach {
            return Err(Fatal {
                message:
                    "error: --detach needs a cluster executor\n   = help: add `--executor slurm`"
                        .into(),
                code: EXIT_USAGE,
            });
        }
        return std::thread::scope(|scope| {
            let local = exec::local::Local::new(scope, ws, sink, cancel, opts.jobs);
            Ok(exec::run_with(
                ws,
                p,
                opts,
                sink,
                cancel,
                &mut WarnsOfSlurmJobs { ex: local, ws, p, asked: false },
            )?)
        });
    }
    let hone = match std::env::var_os("HONE_SLURM_BIN") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_exe()
            .map_err(|e| Fatal::workspace(format!("cannot find the hone binary to submit: {e}")))?,
    };
    let poll_ms =
        std::env::var("HONE_SLURM_POLL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let sopts = SlurmOptions {
        spec: p.executor.clone(),
        hone,
        poll: Duration::from_millis(poll_ms),
        detach: ex.detach,
    };
    let ask = |n: usize| ask_to_cancel(n);
    let mut slurm = Slurm::new(ws, &p.name, sopts, sink, cancel, &ask);
    let summary = exec::run_with(ws, p, opts, sink, cancel, &mut slurm)?;
    if !summary.detached.is_empty() {
        let ids: Vec<&str> = summary.detached.iter().map(|(_, j)| j.as_str()).collect();
        eprintln!(
            "hone: {} stage(s) left running as Slurm jobs {}; `hone status` follows them",
            ids.len(),
            ids.join(",")
        );
    }
    Ok(summary)
}

/// The local executor, saying at the first stage it starts whether jobs of an earlier Slurm
/// submission are still computing (a run that starts nothing, a no-op, never asks).
struct WarnsOfSlurmJobs<'a, E> {
    ex: E,
    ws: &'a Workspace,
    p: &'a Pipeline,
    asked: bool,
}

impl<'p, E: Executor<'p>> Executor<'p> for WarnsOfSlurmJobs<'_, E> {
    fn capacity(&self) -> usize {
        self.ex.capacity()
    }

    fn defers_inputs(&self) -> bool {
        self.ex.defers_inputs()
    }

    fn start(&mut self, launch: Launch<'p>) -> Result<JobId, String> {
        if !std::mem::replace(&mut self.asked, true) {
            warn_of_jobs_in_flight(self.ws, self.p);
        }
        self.ex.start(launch)
    }

    fn next(&mut self) -> Option<(usize, Outcome)> {
        self.ex.next()
    }
}

/// A local run while jobs of an earlier Slurm submission are still queued or running computes
/// their stages again: say so (Slurm is asked only when a submission has such jobs).
fn warn_of_jobs_in_flight(ws: &Workspace, p: &Pipeline) {
    let Ok(jobs) = slurm::in_flight(ws, &p.name) else { return };
    if jobs.is_empty() {
        return;
    }
    let list: Vec<String> =
        jobs.values().map(|j| format!("`{}` (job {})", j.stage, j.job)).collect();
    eprintln!(
        "hone: warning: Slurm jobs of an earlier submission are still computing {}; this local run computes what it needs of them again\n   = help: `hone run --executor slurm` follows those jobs instead of running them again; `hone status` shows them",
        list.join(", ")
    );
}

/// Ctrl-C during a Slurm run: cancel the jobs? Asked on a terminal; elsewhere they are cancelled.
fn ask_to_cancel(n: usize) -> bool {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        eprintln!("hone: cancelling {n} Slurm job(s)");
        return true;
    }
    eprint!("hone: {n} Slurm job(s) are queued or running. Cancel them (scancel)? [Y/n] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let keep = matches!(line.trim(), "n" | "N" | "no");
    if keep {
        eprintln!("hone: leaving them running; `hone status` follows them");
    }
    !keep
}

/// A job of `hone status`.
#[derive(serde::Serialize)]
struct JobRow<'a> {
    stage: &'a str,
    job: &'a str,
    state: String,
    reason: String,
    log: &'a Path,
    artifact: Option<ArtifactDigest>,
}

/// `hone status`: the jobs of the workspace's latest Slurm submission, and how each stands.
pub fn status(ws: &Workspace, p: &Pipeline, json: bool) -> Result<u8, Fatal> {
    let Some((dir, sub)) =
        slurm::submissions(ws).into_iter().rev().find(|(_, s)| s.pipeline == p.name)
    else {
        return Err(Fatal::workspace(format!(
            "no Slurm submission of `{}` in `{}`\n   = help: `hone run --executor slurm` submits one",
            p.name,
            ws.root().display()
        )));
    };
    let ids: Vec<String> = sub.jobs.iter().map(|j| j.job.clone()).collect();
    let states = slurm::job_states(&ids).map_err(Fatal::workspace)?;
    let rows: Vec<JobRow> = sub
        .jobs
        .iter()
        .map(|j| {
            let done = std::fs::read(&j.result)
                .ok()
                .and_then(|b| serde_json::from_slice::<JobResult>(&b).ok());
            let (state, reason) = match (states.get(&j.job), &done) {
                (Some((s, r)), _) => (s.clone(), r.clone()),
                (None, Some(_)) => ("COMPLETED".to_string(), String::new()),
                (None, None) => (
                    "UNKNOWN".to_string(),
                    "Slurm no longer knows this job; see its log".to_string(),
                ),
            };
            JobRow {
                stage: &j.stage,
                job: &j.job,
                state,
                reason,
                log: &j.log,
                artifact: done.map(|r| r.artifact),
            }
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({ "submission": dir, "pipeline": sub.pipeline, "jobs": rows })
        );
        return Ok(0);
    }
    println!("submission {} ({} job(s))", dir.display(), rows.len());
    for r in &rows {
        let reason = if r.reason.is_empty() { String::new() } else { format!(" ({})", r.reason) };
        let artifact = r.artifact.map(|a| format!("  [{}]", a.short())).unwrap_or_default();
        println!("  {:<10} {:<20} job {}{reason}{artifact}", r.state, r.stage, r.job);
        if matches!(
            r.state.as_str(),
            "FAILED" | "CANCELLED" | "TIMEOUT" | "OUT_OF_MEMORY" | "NODE_FAIL" | "UNKNOWN"
        ) {
            println!("             log: {}", r.log.display());
        }
    }
    Ok(0)
}
