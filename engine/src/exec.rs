//! Running a pipeline: ready stages in parallel (bounded), cache hits without a thread,
//! every finished stage committed as it ends so a failure elsewhere keeps it cached.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Instant;

use crate::EngineError;
use crate::digest::{ArtifactDigest, StageKey};
use crate::events::{Event, EventSink};
use crate::plan::{Selection, manifest, why_changed};
use crate::spec::Pipeline;
use crate::stage::{RunCx, StageError};
use crate::store::{KeyManifest, LastRun, Outcome, Record, StageState};
use crate::workspace::Workspace;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages running at once.
    pub jobs: usize,
    pub selection: Selection,
    /// Run these even if cached.
    pub force: Vec<String>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { jobs: std::thread::available_parallelism().map_or(2, |n| n.get()), selection: Selection::All, force: Vec::new() }
    }
}

#[derive(Debug, Default, Clone)]
pub struct RunSummary {
    pub ran: Vec<String>,
    pub cached: Vec<String>,
    /// (stage, error, log file)
    pub failed: Vec<(String, String, Option<PathBuf>)>,
    pub skipped: Vec<String>,
}

impl RunSummary {
    /// Every selected stage ran or was cached.
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.skipped.is_empty()
    }
}

enum Done {
    Ran(Record, f64),
    Failed(String),
}

/// Run the pipeline in a workspace whose lock the caller holds.
pub fn run(
    ws: &Workspace,
    p: &Pipeline,
    opts: &RunOptions,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    let selected = opts.selection.resolve(p, &opts.force)?;
    let outcomes = Outcomes { sink, started: Default::default(), outcomes: Default::default() };
    let sink: &dyn EventSink = &outcomes;
    let force: HashSet<&str> = opts.force.iter().map(String::as_str).collect();
    let n = p.stages.len();
    sink.emit(Event::RunStarted { pipeline: p.name.clone(), stages: selected.iter().filter(|&&s| s).count() });

    let mut dependents = vec![Vec::new(); n];
    let mut waiting = vec![0usize; n];
    for i in 0..n {
        let ups: BTreeSet<usize> = p.deps_of(i).collect();
        waiting[i] = ups.len();
        for u in ups {
            dependents[u].push(i);
        }
    }
    let mut artifacts: Vec<Option<ArtifactDigest>> = vec![None; n];
    let mut blocked: Vec<Option<String>> = vec![None; n];
    let mut summary = RunSummary::default();
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut runnable: VecDeque<(usize, KeyManifest, StageKey, Vec<String>)> = VecDeque::new();
    let (tx, rx) = mpsc::channel::<(usize, StageKey, PathBuf, Done)>();
    let mut running = 0usize;

    std::thread::scope(|scope| -> Result<(), EngineError> {
        loop {
            // Resolve every ready stage: blocked, cached, or queued to run.
            while let Some(i) = ready.pop_first() {
                let s = &p.stages[i];
                if let Some(why) = blocked[i].clone() {
                    if selected[i] {
                        sink.emit(Event::StageSkipped { stage: s.id.clone(), because: why.clone() });
                        summary.skipped.push(s.id.clone());
                    }
                    for &d in &dependents[i] {
                        blocked[d].get_or_insert_with(|| format!("input stage `{}` did not produce an output", s.id));
                    }
                    release(i, &dependents, &mut waiting, &mut ready);
                    continue;
                }
                let m = match manifest(ws, p, i, &artifacts) {
                    Ok(m) => m,
                    Err(e) => {
                        let msg = format!("cannot compute its key: {e}");
                        fail(sink, &mut summary, &s.id, msg.clone(), None);
                        for &d in &dependents[i] {
                            blocked[d].get_or_insert_with(|| format!("input stage `{}` failed", s.id));
                        }
                        release(i, &dependents, &mut waiting, &mut ready);
                        continue;
                    }
                };
                let key = m.key();
                let forced = force.contains(s.id.as_str()) && selected[i];
                if !forced {
                    if let Some(rec) = ws.store.lookup(&key)? {
                        artifacts[i] = Some(rec.artifact);
                        if selected[i] {
                            let before = ws.store.state(&p.name, &s.id);
                            let log = before.as_ref().filter(|st| st.key == key).and_then(|st| st.log.clone());
                            ws.store.set_state(&p.name, &s.id, &StageState { key, artifact: rec.artifact, log }, before.as_ref())?;
                            sink.emit(Event::StageCached { stage: s.id.clone(), key, artifact: rec.artifact });
                            summary.cached.push(s.id.clone());
                        }
                        release(i, &dependents, &mut waiting, &mut ready);
                        continue;
                    }
                }
                if !selected[i] {
                    for &d in &dependents[i] {
                        blocked[d].get_or_insert_with(|| {
                            format!("input stage `{}` is not selected and has no cached output; include it or run without --only", s.id)
                        });
                    }
                    release(i, &dependents, &mut waiting, &mut ready);
                    continue;
                }
                let reasons = if forced { vec!["forced (--force)".to_string()] } else { why_changed(ws, &p.name, &s.id, &m) };
                runnable.push_back((i, m, key, reasons));
            }

            // Start as many as allowed.
            while running < opts.jobs.max(1) && !cancel.load(std::sync::atomic::Ordering::Relaxed) {
                let Some((i, m, key, reasons)) = runnable.pop_front() else { break };
                let s = &p.stages[i];
                let log = ws.store.log_path(&s.id);
                sink.emit(Event::StageStarted { stage: s.id.clone(), key, log: log.clone(), reasons });
                let inputs: BTreeMap<String, Vec<PathBuf>> = s
                    .inputs
                    .iter()
                    .map(|(port, refs)| {
                        (port.clone(), refs.iter().map(|r| ws.store.object_path(&artifacts[r.stage].expect("resolved"))).collect())
                    })
                    .collect();
                let tx = tx.clone();
                running += 1;
                scope.spawn(move || {
                    let done = run_one(ws, p, i, m, key, &inputs, &log, sink, cancel);
                    let _ = tx.send((i, key, log, done));
                });
            }

            if running == 0 {
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    for (i, ..) in runnable.drain(..) {
                        sink.emit(Event::StageSkipped { stage: p.stages[i].id.clone(), because: "the run was stopped".into() });
                        summary.skipped.push(p.stages[i].id.clone());
                    }
                }
                if ready.is_empty() && runnable.is_empty() {
                    break;
                }
                continue;
            }

            let (i, key, log, done) = rx.recv().expect("a running stage always reports");
            running -= 1;
            let s = &p.stages[i];
            match done {
                Done::Ran(rec, seconds) => {
                    let before = ws.store.state(&p.name, &s.id);
                    ws.store.set_state(&p.name, &s.id, &StageState { key, artifact: rec.artifact, log: Some(log) }, before.as_ref())?;
                    let before = before.map(|st| st.artifact);
                    artifacts[i] = Some(rec.artifact);
                    sink.emit(Event::StageFinished {
                        stage: s.id.clone(),
                        key,
                        artifact: rec.artifact,
                        seconds,
                        unchanged: before == Some(rec.artifact),
                        metrics: rec.metrics.clone(),
                    });
                    summary.ran.push(s.id.clone());
                }
                Done::Failed(msg) => {
                    fail(sink, &mut summary, &s.id, msg, Some(log));
                    for &d in &dependents[i] {
                        blocked[d].get_or_insert_with(|| format!("input stage `{}` failed", s.id));
                    }
                }
            }
            release(i, &dependents, &mut waiting, &mut ready);
        }
        Ok(())
    })?;
    ws.save_stat_cache();
    ws.store.record_runs(&p.name, std::mem::take(&mut *outcomes.outcomes.lock().unwrap()))?;
    sink.emit(Event::RunFinished {
        ran: summary.ran.len(),
        cached: summary.cached.len(),
        failed: summary.failed.len(),
        skipped: summary.skipped.len(),
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(summary)
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
            Event::StageCached { stage, key, .. } => Some((stage, last(Outcome::Cached, Some(*key), None, None))),
            Event::StageFinished { stage, key, .. } => Some((stage, last(Outcome::Ran, Some(*key), None, None))),
            Event::StageFailed { stage, error, log } => {
                let key = self.started.lock().unwrap().get(stage).copied();
                let log = (!log.as_os_str().is_empty()).then(|| log.clone());
                Some((stage, last(Outcome::Failed, key, Some(error.clone()), log)))
            }
            Event::StageSkipped { stage, because } => Some((stage, last(Outcome::Skipped, None, Some(because.clone()), None))),
            _ => None,
        };
        if let Some((stage, l)) = noted {
            self.outcomes.lock().unwrap().insert(stage.clone(), l);
        }
        self.sink.emit(event)
    }
}

/// Stage `i` is resolved: its dependents wait for one stage fewer.
fn release(i: usize, dependents: &[Vec<usize>], waiting: &mut [usize], ready: &mut BTreeSet<usize>) {
    for &d in &dependents[i] {
        waiting[d] -= 1;
        if waiting[d] == 0 {
            ready.insert(d);
        }
    }
}

fn fail(sink: &dyn EventSink, summary: &mut RunSummary, stage: &str, error: String, log: Option<PathBuf>) {
    sink.emit(Event::StageFailed { stage: stage.to_string(), error: error.clone(), log: log.clone().unwrap_or_default() });
    summary.failed.push((stage.to_string(), error, log));
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    ws: &Workspace,
    p: &Pipeline,
    i: usize,
    m: KeyManifest,
    key: StageKey,
    inputs: &BTreeMap<String, Vec<PathBuf>>,
    log: &std::path::Path,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Done {
    let s = &p.stages[i];
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(log, format!("hone: stage `{}` ({} v{}) key {}\n", s.id, s.kind.kind(), s.kind.version(), key));
    let span = tracing::info_span!("stage", stage = %s.id, log = %log.display());
    let _entered = span.enter();
    let staging = match ws.store.stage(key) {
        Ok(st) => st,
        Err(e) => return Done::Failed(e.to_string()),
    };
    let checkpoint = ws.store.checkpoint_dir(&key);
    if let Err(e) = std::fs::create_dir_all(&checkpoint) {
        return Done::Failed(format!("cannot create checkpoint directory `{}`: {e}", checkpoint.display()));
    }
    let cx = RunCx {
        stage_id: &s.id,
        workspace: ws.base(),
        seed: p.seed,
        inputs,
        out_dir: staging.out_dir(),
        checkpoint_dir: &checkpoint,
        log_path: log,
        events: sink,
        cancel,
        metrics: Default::default(),
    };
    let t0 = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| s.kind.run(&s.params, &cx)));
    let seconds = t0.elapsed().as_secs_f64();
    let outcome = match result {
        Ok(Ok(())) => {
            let metrics = cx.metrics.into_inner().unwrap_or_default().into_iter().collect();
            match staging.commit(m, &s.id, seconds, metrics) {
                Ok(rec) => {
                    let _ = crate::store::remove_all(&checkpoint);
                    Done::Ran(rec, seconds)
                }
                Err(e) => Done::Failed(format!("cannot store its outputs: {e}")),
            }
        }
        Ok(Err(StageError::Cancelled)) => Done::Failed("stopped before it finished; it resumes from its last checkpoint on the next run".into()),
        Ok(Err(e)) => Done::Failed(e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Done::Failed(format!("internal error (panic) in stage kind `{}`: {what}; please report it", s.kind.kind()))
        }
    };
    match &outcome {
        Done::Ran(rec, _) => tracing::info!(artifact = %rec.artifact, seconds, "finished"),
        // The reporter shows failures; this line is for the stage log.
        Done::Failed(msg) => tracing::info!("failed: {msg}"),
    }
    outcome
}
