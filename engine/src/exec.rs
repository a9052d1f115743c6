//! Running a pipeline: a scheduler over the plan, and [`Executor`]s that run stage jobs.
//!
//! [`run_with`] walks the stages in dependency order. A stage whose inputs all exist gets its
//! key; a cache hit is resolved on the spot (never handed to an executor). Every other stage
//! becomes a [`StageJob`] (serialisable: kind, canonical params, seed, inputs, log path) given
//! to the executor, and every finished stage is committed and recorded as it ends, so a
//! failure elsewhere keeps it cached.
//!
//! Executors:
//! - [`local::Local`] (what [`run`] uses): threads of this process, at most `jobs` at once;
//!   a stage starts when its inputs exist.
//! - [`slurm::Slurm`]: one `sbatch` job per stage, submitted before its inputs exist with a
//!   dependency on the jobs that make them ([`Executor::defers_inputs`]); each job runs
//!   `hone exec-stage JOB.json`, i.e. [`job::run_job`], which computes the key once its
//!   inputs exist (a reproduced input makes it a cache hit: early cutoff still works).

pub mod job;
pub mod local;
pub mod slurm;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use job::{JobInput, StageJob};

use crate::EngineError;
use crate::digest::{ArtifactDigest, StageKey};
use crate::events::{Event, EventSink};
use crate::plan::{Selection, manifest, why_changed};
use crate::spec::{Pipeline, StageSpec};
use crate::store::{KeyManifest, LastRun, Outcome as LastOutcome, Record, StageState};
use crate::workspace::Workspace;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages running at once (local executor).
    pub jobs: usize,
    pub selection: Selection,
    /// Run these even if cached.
    pub force: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            selection: Selection::All,
            force: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    /// (stage, error, log file)
    pub failed: Vec<(String, String, Option<PathBuf>)>,
    pub skipped: Vec<String>,
    /// (stage, job id) of every job an executor started or submitted.
    pub jobs: Vec<(String, JobId)>,
    /// (stage, job id) of the jobs left running on a cluster.
    pub detached: Vec<(String, JobId)>,
    /// (stage, message): stages waiting for input from a person ([`StageError::AwaitingInput`]).
    pub awaiting: Vec<(String, String)>,
}

impl RunSummary {
    /// Every selected stage ran or was cached.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.awaiting.is_empty()
    }
}

/// An executor's name for a job it started (a Slurm job id, a thread number).
pub type JobId = String;

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    Ran {
        record: Record,
        seconds: f64,
    },
    /// The job found its key already stored when its inputs existed (an upstream stage
    /// reproduced its output, or another run made it).
    Cached {
        record: Record,
    },
    Failed {
        error: String,
        log: Option<PathBuf>,
    },
    /// It never ran (an input failed and the cluster cancelled it).
    Skipped {
        because: String,
    },
    /// Left running on the cluster (`--detach`, or Ctrl-C answered "keep them").
    Submitted {
        job: JobId,
        because: String,
    },
    /// It waits for input from a person ([`StageError::AwaitingInput`]); nothing was stored.
    Awaiting {
        message: String,
    },
}

/// A stage handed to an executor.
pub struct Launch<'p> {
    /// The stage's index in the pipeline.
    pub index: usize,
    /// The stage as loaded in this process (for executors that run it in process).
    pub spec: &'p StageSpec,
    pub job: StageJob,
    /// Its manifest and key, when every input already exists (then `job`'s inputs are all
    /// artifacts); `None` for a job submitted ahead of its inputs.
    pub manifest: Option<(KeyManifest, StageKey)>,
    /// Why it runs, for the reporter.
    pub reasons: Vec<String>,
    /// The jobs in flight that produce some of its inputs (only for [`Executor::defers_inputs`]).
    pub after: Vec<JobId>,
}

/// Runs stage jobs somewhere and says when each ends.
pub trait Executor<'p> {
    /// Jobs in flight at once.
    fn capacity(&self) -> usize;
    /// Whether a job may be started before its inputs exist, after the jobs that make them
    /// (the executor then runs it only when they succeed, and reports it skipped otherwise).
    fn defers_inputs(&self) -> bool {
        false
    }
    /// Start (or submit) a job; an error says why it could not be.
    fn start(&mut self, launch: Launch<'p>) -> Result<JobId, String>;
    /// Block until a job ends: its stage index and outcome. `None` when none is in flight.
    fn next(&mut self) -> Option<(usize, Outcome)>;
}

/// Run the pipeline on threads of this process, in a workspace whose lock the caller holds.
pub fn run(
    ws: &Workspace,
    p: &Pipeline,
    opts: &RunOptions,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<RunSummary, EngineError> {
    std::thread::scope(|scope| {
        let mut ex = local::Local::new(scope, ws, sink, cancel, opts.jobs);
        run_with(ws, p, opts, sink, cancel, &mut ex)
    })
}

/// Where a stage is: waiting for its inputs, handed to the executor, or resolved.
#[derive(Clone, PartialEq)]
enum Status {
    Waiting,
    InFlight(JobId),
    Resolved,
}

/// Run the pipeline with `ex`, in a workspace whose lock the caller holds.
pub fn run_with<'p>(
    ws: &'p Workspace,
    p: &'p Pipeline,
    opts: &RunOptions,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
    ex: &mut dyn Executor<'p>,
) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    let selected = opts.selection.resolve(p, &opts.force)?;
    let outcomes = Outcomes { sink, started: Default::default(), outcomes: Default::default() };
    let sink: &dyn EventSink = &outcomes;
    let force: HashSet<&str> = opts.force.iter().map(String::as_str).collect();
    let n = p.stages.len();
    let defers = ex.defers_inputs();
    sink.emit(Event::RunStarted {
        pipeline: p.name.clone(),
        stages: selected.iter().filter(|&&s| s).count(),
    });

    let mut dependents = vec![Vec::new(); n];
    let mut waiting = vec![0usize; n];
    for (i, w) in waiting.iter_mut().enumerate() {
        let ups: BTreeSet<usize> = p.deps_of(i).collect();
        *w = ups.len();
        for u in ups {
            dependents[u].push(i);
        }
    }
    let mut artifacts: Vec<Option<ArtifactDigest>> = vec![None; n];
    let mut blocked: Vec<Option<String>> = vec![None; n];
    let mut status = vec![Status::Waiting; n];
    // A stage's recorded state when it was handed out, to tell whether its output changed.
    let mut before: Vec<Option<StageState>> = vec![None; n];
    let mut logs: Vec<Option<PathBuf>> = vec![None; n];
    let mut summary = RunSummary::default();
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    // (stage, its manifest and key when its inputs exist, why it runs)
    type Runnable = (usize, Option<(KeyManifest, StageKey)>, Vec<String>);
    let mut runnable: VecDeque<Runnable> = VecDeque::new();
    let mut running = 0usize;

    loop {
        // Resolve every ready stage: blocked, cached, or queued to run.
        while let Some(i) = ready.pop_first() {
            let s = &p.stages[i];
            if let Some(why) = blocked[i].clone() {
                if selected[i] {
                    sink.emit(Event::StageSkipped { stage: s.id.clone(), because: why.clone() });
                    summary.skipped.push(s.id.clone());
                }
                block_dependents(i, p, &dependents, &mut blocked, "did not produce an output");
                status[i] = Status::Resolved;
                release(i, &dependents, &mut waiting, &mut ready);
                continue;
            }
            // Inputs still being made by jobs in flight (only with an executor that defers).
            let pending: BTreeSet<usize> =
                p.deps_of(i).filter(|&u| artifacts[u].is_none()).collect();
            if !pending.is_empty() {
                if !selected[i] {
                    block_unselected(i, p, &dependents, &mut blocked);
                    status[i] = Status::Resolved;
                    release(i, &dependents, &mut waiting, &mut ready);
                    continue;
                }
                let mut reasons = Vec::new();
                for (port, refs) in &s.inputs {
                    for r in refs.iter().filter(|r| pending.contains(&r.stage)) {
                        let up = &p.stages[r.stage].id;
                        reasons.push(format!("input `{port}` will be rebuilt by `{up}` (stays cached if `{up}` reproduces its output)"));
                    }
                }
                runnable.push_back((i, None, reasons));
                continue;
            }
            let m = match manifest(ws, p, i, &artifacts) {
                Ok(m) => m,
                Err(e) => {
                    fail(sink, &mut summary, &s.id, format!("cannot compute its key: {e}"), None);
                    block_dependents(i, p, &dependents, &mut blocked, "failed");
                    status[i] = Status::Resolved;
                    release(i, &dependents, &mut waiting, &mut ready);
                    continue;
                }
            };
            let key = m.key();
            let forced = force.contains(s.id.as_str()) && selected[i];
            if !forced && let Some(rec) = ws.store.lookup(&key)? {
                artifacts[i] = Some(rec.artifact);
                if selected[i] {
                    let before = ws.store.state(&p.name, &s.id);
                    let log =
                        before.as_ref().filter(|st| st.key == key).and_then(|st| st.log.clone());
                    ws.store.set_state(
                        &p.name,
                        &s.id,
                        &StageState { key, artifact: rec.artifact, log },
                        before.as_ref(),
                    )?;
                    sink.emit(Event::StageCached {
                        stage: s.id.clone(),
                        key,
                        artifact: rec.artifact,
                    });
                    summary.cached.push(s.id.clone());
                }
                status[i] = Status::Resolved;
                release(i, &dependents, &mut waiting, &mut ready);
                continue;
            }
            if !selected[i] {
                block_unselected(i, p, &dependents, &mut blocked);
                status[i] = Status::Resolved;
                release(i, &dependents, &mut waiting, &mut ready);
                continue;
            }
            let reasons = if forced {
                vec!["forced (--force)".to_string()]
            } else {
                why_changed(ws, &p.name, &s.id, &m)
            };
            runnable.push_back((i, Some((m, key)), reasons));
        }

        // Start as many as allowed.
        while running < ex.capacity().max(1) && !cancel.load(Ordering::Relaxed) {
            let Some((i, m, reasons)) = runnable.pop_front() else { break };
            let s = &p.stages[i];
            let job = StageJob::new(ws, p, i, &artifacts, force.contains(s.id.as_str()));
            let after: Vec<JobId> = p
                .deps_of(i)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|u| match &status[u] {
                    Status::InFlight(id) if artifacts[u].is_none() => Some(id.clone()),
                    _ => None,
                })
                .collect();
            before[i] = ws.store.state(&p.name, &s.id);
            let log = job.log.clone();
            logs[i] = Some(log.clone());
            // A stage that starts with its inputs in place starts now; a deferred one says so itself.
            let starts = (!defers)
                .then(|| {
                    m.as_ref().map(|(_, key)| Event::StageStarted {
                        stage: s.id.clone(),
                        key: *key,
                        log: log.clone(),
                        reasons: reasons.clone(),
                    })
                })
                .flatten();
            match ex.start(Launch { index: i, spec: s, job, manifest: m, reasons, after }) {
                Ok(id) => {
                    if let Some(e) = starts {
                        sink.emit(e);
                    }
                    summary.jobs.push((s.id.clone(), id.clone()));
                    status[i] = Status::InFlight(id);
                    running += 1;
                    if defers {
                        release(i, &dependents, &mut waiting, &mut ready);
                    }
                }
                Err(e) => {
                    fail(sink, &mut summary, &s.id, e, Some(log));
                    block_dependents(i, p, &dependents, &mut blocked, "failed");
                    status[i] = Status::Resolved;
                    release(i, &dependents, &mut waiting, &mut ready);
                }
            }
            if defers && !ready.is_empty() {
                break; // submit the stages this one unblocked before the rest of the queue
            }
        }

        if running == 0 {
            if cancel.load(Ordering::Relaxed) {
                for (i, ..) in runnable.drain(..) {
                    sink.emit(Event::StageSkipped {
                        stage: p.stages[i].id.clone(),
                        because: "the run was stopped".into(),
                    });
                    summary.skipped.push(p.stages[i].id.clone());
                }
            }
            if ready.is_empty() && runnable.is_empty() {
                break;
            }
            continue;
        }
        if !ready.is_empty()
            || (!runnable.is_empty()
                && running < ex.capacity().max(1)
                && !cancel.load(Ordering::Relaxed))
        {
            continue; // more to hand out before waiting
        }

        let (i, outcome) = ex.next().expect("a job in flight always reports");
        running -= 1;
        let s = &p.stages[i];
        status[i] = Status::Resolved;
        match outcome {
            Outcome::Ran { record, seconds } => {
                let st =
                    StageState { key: record.key, artifact: record.artifact, log: logs[i].take() };
                ws.store.set_state(&p.name, &s.id, &st, before[i].as_ref())?;
                artifacts[i] = Some(record.artifact);
                sink.emit(Event::StageFinished {
                    stage: s.id.clone(),
                    key: record.key,
                    artifact: record.artifact,
                    seconds,
                    unchanged: before[i].as_ref().map(|b| b.artifact) == Some(record.artifact),
                    metrics: record.metrics.clone(),
                });
                summary.ran.push(s.id.clone());
            }
            Outcome::Cached { record } => {
                let st = StageState { key: record.key, artifact: record.artifact, log: None };
                ws.store.set_state(&p.name, &s.id, &st, ws.store.state(&p.name, &s.id).as_ref())?;
                artifacts[i] = Some(record.artifact);
                sink.emit(Event::StageCached {
                    stage: s.id.clone(),
                    key: record.key,
                    artifact: record.artifact,
                });
                summary.cached.push(s.id.clone());
            }
            Outcome::Failed { error, log } => {
                fail(sink, &mut summary, &s.id, error, log);
                block_dependents(i, p, &dependents, &mut blocked, "failed");
            }
            Outcome::Skipped { because } => {
                sink.emit(Event::StageSkipped { stage: s.id.clone(), because });
                summary.skipped.push(s.id.clone());
                block_dependents(i, p, &dependents, &mut blocked, "did not produce an output");
            }
            Outcome::Submitted { job, because } => {
                tracing::debug!(stage = %s.id, "{because}");
                summary.detached.push((s.id.clone(), job));
            }
            Outcome::Awaiting { message } => {
                sink.emit(Event::StageAwaiting { stage: s.id.clone(), message: message.clone() });
                summary.awaiting.push((s.id.clone(), message));
                block_dependents(i, p, &dependents, &mut blocked, "awaits input");
            }
        }
        if !defers {
            release(i, &dependents, &mut waiting, &mut ready);
        }
    }
    ws.save_stat_cache();
    ws.store.record_runs(&p.name, std::mem::take(&mut *outcomes.outcomes.lock().unwrap()))?;
    sink.emit(Event::RunFinished {
        ran: summary.ran.len(),
        cached: summary.cached.len(),
        failed: summary.failed.len(),
        skipped: summary.skipped.len(),
        awaiting: summary.awaiting.len(),
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(summary)
}

/// Stage `i` is resolved: its dependents wait for one stage fewer.
fn release(
    i: usize,
    dependents: &[Vec<usize>],
    waiting: &mut [usize],
    ready: &mut BTreeSet<usize>,
) {
    for &d in &dependents[i] {
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.insert(d);
        }
    }
}

/// Stage `i` gives no output: its dependents cannot run (the first reason wins).
fn block_dependents(
    i: usize,
    p: &Pipeline,
    dependents: &[Vec<usize>],
    blocked: &mut [Option<String>],
    what: &str,
) {
    for &d in &dependents[i] {
        blocked[d].get_or_insert_with(|| format!("input stage `{}` {what}", p.stages[i].id));
    }
}

fn block_unselected(
    i: usize,
    p: &Pipeline,
    dependents: &[Vec<usize>],
    blocked: &mut [Option<String>],
) {
    for &d in &dependents[i] {
        blocked[d].get_or_insert_with(|| {
            format!("input stage `{}` is not selected and has no cached output; include it or run without --only", p.stages[i].id)
        });
    }
}

fn fail(
    sink: &dyn EventSink,
    summary: &mut RunSummary,
    stage: &str,
    error: String,
    log: Option<PathBuf>,
) {
    sink.emit(Event::StageFailed {
        stage: stage.to_string(),
        error: error.clone(),
        log: log.clone().unwrap_or_default(),
    });
    summary.failed.push((stage.to_string(), error, log));
}

/// Passes events on, noting how each stage ends, for [`crate::store::Store::last_runs`].
struct Outcomes<'a> {
    sink: &'a dyn EventSink,
    /// The key of each stage started (a failure event does not carry it).
    started: std::sync::Mutex<BTreeMap<String, StageKey>>,
    outcomes: std::sync::Mutex<BTreeMap<String, LastRun>>,
}

impl EventSink for Outcomes<'_> {
    fn emit(&self, event: Event) {
        let last = |outcome, key, error, log| LastRun { outcome, key, error, log };
        let noted = match &event {
            Event::StageStarted { stage, key, .. } => {
                self.started.lock().unwrap().insert(stage.clone(), *key);
                None
            }
            Event::StageCached { stage, key, .. } => {
                Some((stage, last(LastOutcome::Cached, Some(*key), None, None)))
            }
            Event::StageFinished { stage, key, .. } => {
                Some((stage, last(LastOutcome::Ran, Some(*key), None, None)))
            }
            Event::StageFailed { stage, error, log } => {
                let key = self.started.lock().unwrap().get(stage).copied();
                let log = (!log.as_os_str().is_empty()).then(|| log.clone());
                Some((stage, last(LastOutcome::Failed, key, Some(error.clone()), log)))
            }
            Event::StageSkipped { stage, because } => {
                Some((stage, last(LastOutcome::Skipped, None, Some(because.clone()), None)))
            }
            Event::StageAwaiting { stage, message } => {
                let key = self.started.lock().unwrap().get(stage).copied();
                Some((stage, last(LastOutcome::Awaiting, key, Some(message.clone()), None)))
            }
            _ => None,
        };
        if let Some((stage, l)) = noted {
            self.outcomes.lock().unwrap().insert(stage.clone(), l);
        }
        self.sink.emit(event)
    }
}
