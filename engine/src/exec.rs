//! Running a pipeline: [`run_with`] hands its stages to an executor ([`crate::executors`]) in
//! dependency order, through a `Scheduler`; [`run`] does so on threads of this process.
//!
//! `run_with` loops over the scheduler's three steps until no stage is left:
//! - `Scheduler::resolve`: a stage whose input stages are resolved (with an executor that
//!   [defers inputs](Executor::defers_inputs): handed out) is settled on the spot when it
//!   need not run: skipped when an input stage gave no output, failed when its key cannot be
//!   computed, a cache hit (never handed to an executor), or not selected (blocking the
//!   stages that read it). Any other stage is queued to run, with the reasons why.
//! - `Scheduler::start`: queued stages go to the executor as [`StageJob`]s, as many as it
//!   takes at once.
//! - `Scheduler::finish`: every finished stage is committed and reported as it ends (so a
//!   failure elsewhere keeps it cached), and the stages reading it are released, or blocked
//!   when it gave no output.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::EngineError;
use crate::digest::{ArtifactDigest, StageKey};
use crate::events::{Event, EventSink};
use crate::executors::job::{JobInput, StageJob};
use crate::executors::local::Local;
use crate::executors::{Executor, JobId, Launch, Outcome};
use crate::plan::{Selection, manifest, why_changed};
use crate::remote::{Fetched, Quiet, Remote};
use crate::spec::Pipeline;
use crate::store::{self, KeyManifest, LastRun, StageState};
use crate::workspace::Workspace;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages running at once (local executor).
    pub jobs: usize,
    pub selection: Selection,
    /// Run these even if cached.
    pub force: Vec<String>,
    /// A remote cache to fetch missing keys from (read-through).
    pub remote: Option<Arc<Remote>>,
    /// Upload every stage's result to [`Self::remote`] as it finishes.
    pub push: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            selection: Selection::All,
            force: Vec::new(),
            remote: None,
            push: false,
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
    /// (stage, message): stages waiting for input from a person
    /// ([`crate::stage::StageError::AwaitingInput`]).
    pub awaiting: Vec<(String, String)>,
    /// How each selected stage ended, with its key (as recorded for `Store::last_runs`).
    pub outcomes: BTreeMap<String, crate::store::LastRun>,
    /// The final metrics of each stage that ran or came from the cache.
    pub metrics: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
}

impl RunSummary {
    /// Every selected stage ran or was cached.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty() && self.awaiting.is_empty()
    }
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
        let mut ex = Local::new(scope, ws, sink, cancel, opts.jobs);
        run_with(ws, p, opts, sink, cancel, &mut ex)
    })
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
    sink.emit(Event::RunStarted {
        pipeline: p.name.clone(),
        stages: selected.iter().filter(|&&s| s).count(),
    });
    let mut s = Scheduler::new(ws, p, &selected, &opts.force, sink, cancel, ex);
    s.remote = opts.remote.clone();
    s.push = opts.push;
    loop {
        s.resolve_ready()?;
        s.start();
        if s.running == 0 {
            s.skip_queued_if_stopped();
            if s.ready.is_empty() && s.queue.is_empty() {
                break;
            }
        } else if !s.more_to_hand_out() {
            // Nothing to do until a job ends.
            let (i, outcome) = s.ex.next().expect("a job in flight always reports");
            s.finish(i, outcome)?;
        }
    }
    s.close(started)
}

/// Decides, for one run, when each stage is resolved on the spot, handed to the executor, or
/// blocked, and commits how each ended (see the module docs).
struct Scheduler<'p, 'r> {
    ws: &'p Workspace,
    p: &'p Pipeline,
    ex: &'r mut dyn Executor<'p>,
    /// The caller's sink, noting how each stage ends for the store's last runs.
    events: LastRuns<'r>,
    cancel: &'r AtomicBool,
    /// The executor takes stages before their inputs exist ([`Executor::defers_inputs`]).
    defers: bool,
    /// Each stage of the pipeline, by index.
    stages: Vec<StageRun>,
    /// Stages whose input stages are all resolved (or handed out, when the executor defers
    /// inputs), resolved in pipeline order.
    ready: BTreeSet<usize>,
    /// Stages to run, handed to the executor first come first.
    queue: VecDeque<Queued>,
    /// Jobs in flight.
    running: usize,
    summary: RunSummary,
    /// The remote cache to fetch missed keys from, and whether to push results to it.
    remote: Option<Arc<Remote>>,
    push: bool,
    /// The remote refused the credentials: not asked again in this run.
    remote_denied: std::sync::atomic::AtomicBool,
}

/// One stage of the run, as the scheduler sees it.
struct StageRun {
    /// Selected (`--only`, `--until`, or everything).
    selected: bool,
    /// Named by `--force`.
    forced: bool,
    /// The stages it reads, each once, in pipeline order.
    inputs: Vec<usize>,
    /// The stages that read it.
    dependents: Vec<usize>,
    /// Input stages not yet resolved (or handed out, when the executor defers inputs).
    waiting: usize,
    status: Status,
    /// Its output, once it is known.
    artifact: Option<ArtifactDigest>,
    /// Why it cannot run: the first input stage that gave no output.
    blocked: Option<String>,
    /// Its recorded state when it was handed out, to tell whether its output changed.
    before: Option<StageState>,
    /// Its job's log, once handed out.
    log: Option<PathBuf>,
}

/// Where a stage is: waiting for its inputs, handed to the executor, or resolved.
#[derive(Clone, PartialEq)]
enum Status {
    Waiting,
    InFlight(JobId),
    Resolved,
}

/// A stage to run, waiting for room in the executor.
struct Queued {
    index: usize,
    /// Its manifest and key, when every input exists (`None`: submitted ahead of its inputs).
    manifest: Option<(KeyManifest, StageKey)>,
    /// Why it runs, for the reporter.
    reasons: Vec<String>,
}

/// How a stage that is not selected blocks the stages reading it.
const NOT_SELECTED: &str =
    "is not selected and has no cached output; include it or run without --only";

impl<'p, 'r> Scheduler<'p, 'r> {
    fn new(
        ws: &'p Workspace,
        p: &'p Pipeline,
        selected: &[bool],
        force: &[String],
        sink: &'r dyn EventSink,
        cancel: &'r AtomicBool,
        ex: &'r mut dyn Executor<'p>,
    ) -> Self {
        let mut stages: Vec<StageRun> = p
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let inputs: Vec<usize> =
                    p.deps_of(i).collect::<BTreeSet<_>>().into_iter().collect();
                StageRun {
                    selected: selected[i],
                    forced: force.contains(&s.id),
                    waiting: inputs.len(),
                    inputs,
                    dependents: Vec::new(),
                    status: Status::Waiting,
                    artifact: None,
                    blocked: None,
                    before: None,
                    log: None,
                }
            })
            .collect();
        for i in 0..stages.len() {
            for k in 0..stages[i].inputs.len() {
                let u = stages[i].inputs[k];
                stages[u].dependents.push(i);
            }
        }
        let ready = (0..stages.len()).filter(|&i| stages[i].waiting == 0).collect();
        Scheduler {
            ws,
            p,
            defers: ex.defers_inputs(),
            ex,
            events: LastRuns { sink, started: Default::default(), outcomes: Default::default() },
            cancel,
            stages,
            ready,
            queue: VecDeque::new(),
            running: 0,
            summary: RunSummary::default(),
            remote: None,
            push: false,
            remote_denied: Default::default(),
        }
    }

    /// Resolve every ready stage, in pipeline order.
    fn resolve_ready(&mut self) -> Result<(), EngineError> {
        while let Some(i) = self.ready.pop_first() {
            self.resolve(i)?;
        }
        Ok(())
    }

    /// Stage `i` is ready: settle it on the spot, or queue it to run.
    fn resolve(&mut self, i: usize) -> Result<(), EngineError> {
        match self.settle(i)? {
            Some(q) => self.queue.push_back(q),
            None => self.resolved(i),
        }
        Ok(())
    }

    /// Settle stage `i` if it need not run: skipped (blocked by an input stage), failed (no
    /// key), cached, or not selected (blocking its dependents) give `None`. Otherwise the
    /// stage as it is to run.
    fn settle(&mut self, i: usize) -> Result<Option<Queued>, EngineError> {
        let (ws, p) = (self.ws, self.p);
        let s = &p.stages[i];
        let selected = self.stages[i].selected;
        if let Some(why) = self.stages[i].blocked.clone() {
            if selected {
                self.skip(i, why);
            }
            self.block_dependents(i, "did not produce an output");
            return Ok(None);
        }
        // Inputs still being made by jobs in flight (only with an executor that defers).
        if self.stages[i].inputs.iter().any(|&u| self.stages[u].artifact.is_none()) {
            if !selected {
                self.block_dependents(i, NOT_SELECTED);
                return Ok(None);
            }
            let mut reasons = Vec::new();
            for (port, refs) in &s.inputs {
                for r in refs.iter().filter(|r| self.stages[r.stage].artifact.is_none()) {
                    let up = &p.stages[r.stage].id;
                    reasons.push(format!("input `{port}` will be rebuilt by `{up}` (stays cached if `{up}` reproduces its output)"));
                }
            }
            return Ok(Some(Queued { index: i, manifest: None, reasons }));
        }
        let m = match manifest(ws, p, i, |u| self.stages[u].artifact) {
            Ok(m) => m,
            Err(e) => {
                self.fail(i, format!("cannot compute its key: {e}"), None);
                self.block_dependents(i, "failed");
                return Ok(None);
            }
        };
        let key = m.key();
        let forced = self.stages[i].forced && selected;
        let local = if forced { None } else { ws.store.lookup(&key)? };
        let (hit, from) = match local {
            Some(rec) => (Some(rec), None),
            None if !forced => self.fetch(&s.id, &key),
            None => (None, None),
        };
        if let Some(rec) = hit {
            self.stages[i].artifact = Some(rec.artifact);
            if selected {
                let before = ws.store.state(&p.name, &s.id);
                let log = before.as_ref().filter(|st| st.key == key).and_then(|st| st.log.clone());
                let state = StageState { key, artifact: rec.artifact, log };
                ws.store.set_state(&p.name, &s.id, &state, before.as_ref())?;
                self.events.emit(Event::StageCached {
                    stage: s.id.clone(),
                    key,
                    artifact: rec.artifact,
                    from,
                });
                self.summary.cached.push(s.id.clone());
                self.summary.metrics.insert(s.id.clone(), rec.metrics);
            }
            return Ok(None);
        }
        if !selected {
            self.block_dependents(i, NOT_SELECTED);
            return Ok(None);
        }
        let reasons = if forced {
            vec!["forced (--force)".to_string()]
        } else {
            why_changed(ws, &p.name, &s.id, &m)
        };
        Ok(Some(Queued { index: i, manifest: Some((m, key)), reasons }))
    }

    /// The remote cache, unless there is none or it refused this run's credentials.
    fn live_remote(&self) -> Option<&Arc<Remote>> {
        self.remote
            .as_ref()
            .filter(|_| !self.remote_denied.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The record of `key` fetched from the remote cache, if one is configured and has a
    /// usable copy, and the remote's name. Anything wrong with the remote is a warning: the
    /// stage runs.
    fn fetch(&self, id: &str, key: &StageKey) -> (Option<store::Record>, Option<String>) {
        let Some(remote) = self.live_remote() else { return (None, None) };
        match remote.fetch(&self.ws.store, key, &Quiet) {
            Ok(Fetched::Hit(rec)) => (Some(*rec), Some(remote.label().to_string())),
            Ok(Fetched::Absent) => (None, None),
            Ok(Fetched::Unusable(why)) => {
                tracing::warn!(
                    "stage `{id}`: the remote cache's copy is unusable, so it runs: {why}"
                );
                (None, None)
            }
            Err(e) if e.is_denied() => {
                // Every later request would be refused too: one warning, then no remote.
                if !self.remote_denied.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "{e}: this run goes on without the remote cache (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE for S3, GOOGLE_* for GCS, AZURE_* for Azure)"
                    );
                }
                (None, None)
            }
            Err(e) => {
                tracing::warn!("stage `{id}`: cannot fetch from the remote cache, so it runs: {e}");
                (None, None)
            }
        }
    }

    /// Uploads a stage's new result to the remote cache (`--push`); a failure is a warning.
    fn push(&self, id: &str, rec: &store::Record) {
        let Some(remote) = self.live_remote().filter(|_| self.push) else { return };
        if let Err(e) = remote.push(&self.ws.store, rec, &Quiet) {
            tracing::warn!("stage `{id}`: cannot push its result to the remote cache: {e}");
        }
    }

    /// Whether the executor has room for another job, and the run goes on.
    fn has_room(&self) -> bool {
        self.running < self.ex.capacity().max(1) && !self.cancel.load(Ordering::Relaxed)
    }

    /// Whether there is more to resolve or hand out before waiting for a job to end.
    fn more_to_hand_out(&self) -> bool {
        !self.ready.is_empty() || (!self.queue.is_empty() && self.has_room())
    }

    /// Hand queued stages to the executor while it has room. With an executor that defers
    /// inputs, a stage handed out releases its dependents: they are resolved and handed out
    /// before the rest of the queue.
    fn start(&mut self) {
        while self.has_room() {
            let Some(q) = self.queue.pop_front() else { break };
            self.launch(q);
            if self.defers && !self.ready.is_empty() {
                break;
            }
        }
    }

    /// Hand one stage to the executor; a stage it refuses fails.
    fn launch(&mut self, Queued { index: i, manifest, reasons }: Queued) {
        let (ws, p) = (self.ws, self.p);
        let s = &p.stages[i];
        let job = self.job(i);
        // The jobs in flight that make its inputs.
        let after: Vec<JobId> = (self.stages[i].inputs.iter())
            .filter_map(|&u| match &self.stages[u].status {
                Status::InFlight(id) if self.stages[u].artifact.is_none() => Some(id.clone()),
                _ => None,
            })
            .collect();
        let log = job.log.clone();
        self.stages[i].before = ws.store.state(&p.name, &s.id);
        self.stages[i].log = Some(log.clone());
        // A stage that starts with its inputs in place starts now; a deferred one says so itself.
        let starts = (!self.defers)
            .then(|| {
                manifest.as_ref().map(|(_, key)| Event::StageStarted {
                    stage: s.id.clone(),
                    key: *key,
                    log: log.clone(),
                    reasons: reasons.clone(),
                })
            })
            .flatten();
        let launch =
            Launch { index: i, kind: s.kind, params: &s.params, job, manifest, reasons, after };
        match self.ex.start(launch) {
            Ok(id) => {
                if let Some(e) = starts {
                    self.events.emit(e);
                }
                self.summary.jobs.push((s.id.clone(), id.clone()));
                self.stages[i].status = Status::InFlight(id);
                self.running += 1;
                if self.defers {
                    self.release(i);
                }
            }
            Err(e) => {
                self.fail(i, e, Some(log));
                self.block_dependents(i, "failed");
                self.resolved(i);
            }
        }
    }

    /// The job of stage `i`: its finished inputs as artifacts, the others as the stages of
    /// this run that make them.
    fn job(&self, i: usize) -> StageJob {
        let (ws, p) = (self.ws, self.p);
        let s = &p.stages[i];
        let inputs = s
            .inputs
            .iter()
            .map(|(port, refs)| {
                let ins = refs
                    .iter()
                    .map(|r| match self.stages[r.stage].artifact {
                        Some(a) => JobInput::Artifact(a),
                        None => JobInput::Upstream(p.stages[r.stage].id.clone()),
                    })
                    .collect();
                (port.clone(), ins)
            })
            .collect();
        StageJob {
            pipeline: p.name.clone(),
            stage: s.id.clone(),
            kind: s.kind.kind().to_string(),
            version: s.kind.version(),
            params: s.params.canonical.clone(),
            seed: p.seed,
            inputs,
            force: self.stages[i].forced,
            workspace: ws.root().to_path_buf(),
            base: ws.base().to_path_buf(),
            log: ws.store.log_path(&s.id),
            resources: p.resources_of(i),
            results: None,
            remote: None,
        }
    }

    /// A job ended: commit the stage's state, report it, and release its dependents or block
    /// them (with an executor that defers inputs, they were released when it was handed out).
    fn finish(&mut self, i: usize, outcome: Outcome) -> Result<(), EngineError> {
        let (ws, p) = (self.ws, self.p);
        let id = &p.stages[i].id;
        self.running -= 1;
        self.stages[i].status = Status::Resolved;
        match outcome {
            Outcome::Ran { record, seconds } => {
                let st = &mut self.stages[i];
                let state =
                    StageState { key: record.key, artifact: record.artifact, log: st.log.take() };
                ws.store.set_state(&p.name, id, &state, st.before.as_ref())?;
                st.artifact = Some(record.artifact);
                let unchanged = st.before.as_ref().map(|b| b.artifact) == Some(record.artifact);
                self.events.emit(Event::StageFinished {
                    stage: id.clone(),
                    key: record.key,
                    artifact: record.artifact,
                    seconds,
                    unchanged,
                    metrics: record.metrics.clone(),
                });
                self.push(id, &record);
                self.summary.ran.push(id.clone());
                self.summary.metrics.insert(id.clone(), record.metrics);
            }
            Outcome::Cached { record } => {
                let state = StageState { key: record.key, artifact: record.artifact, log: None };
                ws.store.set_state(&p.name, id, &state, ws.store.state(&p.name, id).as_ref())?;
                self.stages[i].artifact = Some(record.artifact);
                self.events.emit(Event::StageCached {
                    stage: id.clone(),
                    key: record.key,
                    artifact: record.artifact,
                    from: None,
                });
                self.summary.cached.push(id.clone());
                self.summary.metrics.insert(id.clone(), record.metrics);
            }
            Outcome::Failed { error, log } => {
                self.fail(i, error, log);
                self.block_dependents(i, "failed");
            }
            Outcome::Skipped { because } => {
                self.skip(i, because);
                self.block_dependents(i, "did not produce an output");
            }
            Outcome::Submitted { job, because } => {
                tracing::debug!(stage = %id, "{because}");
                self.summary.detached.push((id.clone(), job));
            }
            Outcome::Awaiting { message } => {
                self.events
                    .emit(Event::StageAwaiting { stage: id.clone(), message: message.clone() });
                self.summary.awaiting.push((id.clone(), message));
                self.block_dependents(i, "awaits input");
            }
        }
        if !self.defers {
            self.release(i);
        }
        Ok(())
    }

    /// The run was stopped (Ctrl-C) and nothing is in flight: the queued stages are skipped.
    fn skip_queued_if_stopped(&mut self) {
        if self.cancel.load(Ordering::Relaxed) {
            while let Some(q) = self.queue.pop_front() {
                self.skip(q.index, "the run was stopped".into());
            }
        }
    }

    /// Record how the stages ended, and report the run's end.
    fn close(mut self, started: Instant) -> Result<RunSummary, EngineError> {
        self.ws.save_stat_cache();
        let last = std::mem::take(&mut *self.events.outcomes.lock().unwrap());
        self.ws.store.record_runs(&self.p.name, last.clone())?;
        self.summary.outcomes = last;
        let s = &self.summary;
        self.events.emit(Event::RunFinished {
            ran: s.ran.len(),
            cached: s.cached.len(),
            failed: s.failed.len(),
            skipped: s.skipped.len(),
            awaiting: s.awaiting.len(),
            seconds: started.elapsed().as_secs_f64(),
        });
        Ok(self.summary)
    }

    /// Stage `i` is resolved: its dependents wait for one stage fewer.
    fn resolved(&mut self, i: usize) {
        self.stages[i].status = Status::Resolved;
        self.release(i);
    }

    fn release(&mut self, i: usize) {
        for k in 0..self.stages[i].dependents.len() {
            let d = self.stages[i].dependents[k];
            self.stages[d].waiting -= 1;
            if self.stages[d].waiting == 0 {
                self.ready.insert(d);
            }
        }
    }

    /// Stage `i` gives no output: its dependents cannot run (the first reason wins).
    fn block_dependents(&mut self, i: usize, what: &str) {
        let id = &self.p.stages[i].id;
        for k in 0..self.stages[i].dependents.len() {
            let d = self.stages[i].dependents[k];
            self.stages[d].blocked.get_or_insert_with(|| format!("input stage `{id}` {what}"));
        }
    }

    fn skip(&mut self, i: usize, because: String) {
        let stage = self.p.stages[i].id.clone();
        self.events.emit(Event::StageSkipped { stage: stage.clone(), because });
        self.summary.skipped.push(stage);
    }

    fn fail(&mut self, i: usize, error: String, log: Option<PathBuf>) {
        let stage = self.p.stages[i].id.clone();
        self.events.emit(Event::StageFailed {
            stage: stage.clone(),
            error: error.clone(),
            log: log.clone().unwrap_or_default(),
        });
        self.summary.failed.push((stage, error, log));
    }
}

/// Passes events on, noting how each stage ends, for [`crate::store::Store::last_runs`].
struct LastRuns<'a> {
    sink: &'a dyn EventSink,
    /// The key of each stage started (a failure event does not carry it).
    started: std::sync::Mutex<BTreeMap<String, StageKey>>,
    outcomes: std::sync::Mutex<BTreeMap<String, LastRun>>,
}

impl EventSink for LastRuns<'_> {
    fn emit(&self, event: Event) {
        let last = |outcome, key, error, log| LastRun { outcome, key, error, log };
        let noted = match &event {
            Event::StageStarted { stage, key, .. } => {
                self.started.lock().unwrap().insert(stage.clone(), *key);
                None
            }
            Event::StageCached { stage, key, .. } => {
                Some((stage, last(store::Outcome::Cached, Some(*key), None, None)))
            }
            Event::StageFinished { stage, key, .. } => {
                Some((stage, last(store::Outcome::Ran, Some(*key), None, None)))
            }
            Event::StageFailed { stage, error, log } => {
                let key = self.started.lock().unwrap().get(stage).copied();
                let log = (!log.as_os_str().is_empty()).then(|| log.clone());
                Some((stage, last(store::Outcome::Failed, key, Some(error.clone()), log)))
            }
            Event::StageSkipped { stage, because } => {
                Some((stage, last(store::Outcome::Skipped, None, Some(because.clone()), None)))
            }
            Event::StageAwaiting { stage, message } => {
                let key = self.started.lock().unwrap().get(stage).copied();
                Some((stage, last(store::Outcome::Awaiting, key, Some(message.clone()), None)))
            }
            _ => None,
        };
        if let Some((stage, l)) = noted {
            self.outcomes.lock().unwrap().insert(stage.clone(), l);
        }
        self.sink.emit(event)
    }
}
