//! Where `hone run` runs the stages: the executor that `--executor` or the pipeline's
//! `executor:` block names, through the engine's list of them ([`KINDS`]); `hone status`,
//! and the hidden `hone exec-stage JOB.json`, the worker remote executors run.
//!
//! `exec-stage` runs one stage job in this process against the job's workspace and prints
//! the run's events as JSON lines on stdout. Exit 0 when the stage ran or was cached, 1 when
//! it failed or could not run.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use hone_engine::digest::ArtifactDigest;
use hone_engine::events::{Event, EventSink};
use hone_engine::exec::{self, RunOptions, RunSummary};
use hone_engine::executors::job::{JobResult, StageJob, run_job};
use hone_engine::executors::slurm;
use hone_engine::executors::{
    Cx, Executor, ExecutorKind, JobId, KINDS, Launch, Outcome, Person, or_list,
};
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
    // The executors, and so the help, come from the engine's list of them.
    #[arg(
        long,
        value_name = "KIND",
        value_parser = hone_engine::executors::named,
        help = executor_help()
    )]
    pub executor: Option<&'static ExecutorKind>,
    /// With Slurm: return once the jobs are submitted (`hone status` follows them).
    #[arg(long)]
    pub detach: bool,
}

/// `--executor`'s help: every executor, and which one runs when it is not given.
fn executor_help() -> String {
    let kinds: Vec<String> = KINDS.iter().map(|k| format!("`{}` ({})", k.name, k.about)).collect();
    format!(
        "{}; default: the pipeline's `executor: {{ kind: ... }}`, else {}",
        or_list(&kinds),
        KINDS[0].name
    )
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
    if ex.detach && !kind.detaches {
        let cluster = KINDS.iter().find(|k| k.detaches).map_or("", |k| k.name);
        return Err(Fatal {
            message: format!(
                "error: --detach needs a cluster executor\n   = help: add `--executor {cluster}`"
            ),
            code: EXIT_USAGE,
        });
    }
    let cx = Cx {
        ws,
        pipeline: &p.name,
        settings: &p.executor.settings,
        jobs: opts.jobs,
        detach: ex.detach,
        sink,
        cancel,
        person: &Terminal,
        remote: opts.remote.clone(),
    };
    let mut summary = None;
    (kind.open)(&cx, &mut |executor| {
        let mut ex = WarnsOfEarlierJobs { ex: executor, ws, p, run_by: kind, asked: false };
        let run = exec::run_with(ws, p, opts, sink, cancel, &mut ex);
        let ended = run.is_ok();
        summary = Some(run);
        ended
    })
    .map_err(Fatal::workspace)?;
    let summary = summary.ok_or_else(|| {
        Fatal::workspace(format!("the {} executor did not run the pipeline", kind.name))
    })?;
    Ok(summary?)
}

/// An executor that, at the first stage it starts, says which stages the other executors'
/// jobs of an earlier run still compute (a run that starts nothing, a no-op, never asks).
struct WarnsOfEarlierJobs<'a, 'p> {
    ex: &'a mut dyn Executor<'p>,
    ws: &'a Workspace,
    p: &'a Pipeline,
    run_by: &'static ExecutorKind,
    asked: bool,
}

impl<'p> Executor<'p> for WarnsOfEarlierJobs<'_, 'p> {
    fn capacity(&self) -> usize {
        self.ex.capacity()
    }

    fn defers_inputs(&self) -> bool {
        self.ex.defers_inputs()
    }

    fn start(&mut self, launch: Launch<'p>) -> Result<JobId, String> {
        if !std::mem::replace(&mut self.asked, true) {
            for k in KINDS.iter().filter(|k| **k != self.run_by) {
                let warning =
                    k.still_running.and_then(|f| f(self.ws, &self.p.name, self.run_by.name));
                if let Some(w) = warning {
                    eprintln!("hone: warning: {w}");
                }
            }
        }
        self.ex.start(launch)
    }

    fn next(&mut self) -> Option<(usize, Outcome)> {
        self.ex.next()
    }
}

/// The person at the terminal: questions and news on stderr, answers from stdin.
struct Terminal;

impl Person for Terminal {
    fn confirm(&self, question: &str) -> Option<bool> {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return None;
        }
        eprint!("{question}");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        Some(!matches!(line.trim(), "n" | "N" | "no"))
    }

    fn tell(&self, line: &str) {
        eprintln!("{line}");
    }
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
