//! One stage job: a serialisable description ([`StageJob`]), and running it ([`execute`] in
//! any process that has the stage, [`run_job`] for a worker given only the job).
//!
//! A job names its stage's kind, canonical params, seed and inputs (artifacts, or the stages
//! of the same submission that make them), the workspace and its log. Outputs go to a staging
//! directory in the store and are committed atomically; a killed job leaves its checkpoint.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::digest::{ArtifactDigest, StageKey};
use crate::events::{Event, EventSink};
use crate::files::write_atomic;
use crate::resources::Resources;
use crate::stage::{CheckError, DepCx, DynStage, Params, Registry, RunCx, StageError};
use crate::store::{KeyManifest, Record, StageState, Store};
use crate::workspace::Workspace;

/// Everything a worker needs to run one stage, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageJob {
    pub pipeline: String,
    pub stage: String,
    pub kind: String,
    pub version: u32,
    /// The canonical params (what the key is computed from).
    pub params: serde_json::Value,
    pub seed: u64,
    /// Input port → its inputs, in order.
    pub inputs: BTreeMap<String, Vec<JobInput>>,
    /// Run even if the key is stored (`--force`).
    #[serde(default)]
    pub force: bool,
    /// The directory holding `.hone/`.
    pub workspace: PathBuf,
    /// The pipeline file's directory: relative paths resolve here and commands run here.
    pub base: PathBuf,
    /// This run's log file.
    pub log: PathBuf,
    #[serde(default)]
    pub resources: Resources,
    /// Where the jobs of one submission leave their results (`<stage>.result.json`), which
    /// the jobs reading their outputs resolve [`JobInput::Upstream`] from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<PathBuf>,
    /// Set when the job's host does not see the workspace: see [`ViaRemote`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<ViaRemote>,
}

/// A job on a host that does not see the workspace (a cluster without a shared filesystem:
/// `shared_fs: false`). It works in a store of its host's own ([`node_dir`]), fetches its
/// inputs' records and objects from this remote cache (each object verified), pushes its
/// result to it, and leaves its result, events and log in the submission's exchange area
/// there ([`crate::remote::Remote::put_run_file`]), where the submitting host and the jobs reading its output
/// find them. Paths in the job (`workspace`, `results`, `log`) are the submitting host's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViaRemote {
    /// The remote cache's URL (credentials come from the host's environment).
    pub url: String,
    /// The submission's name in the exchange area.
    pub submission: String,
    /// The keys of records holding the job's [`JobInput::Artifact`] inputs, which the
    /// submitting host pushed before submitting it.
    #[serde(default)]
    pub fetch: Vec<StageKey>,
}

impl ViaRemote {
    /// What the job of `stage` leaves in the exchange area.
    pub fn result_name(stage: &str) -> String {
        format!("{stage}.result.json")
    }
    pub fn events_name(stage: &str) -> String {
        format!("{stage}.events.jsonl")
    }
    pub fn log_name(stage: &str) -> String {
        format!("{stage}.log")
    }
}

/// Where a job that does not see the workspace keeps its store: `HONE_NODE_DIR`, else
/// `$TMPDIR/hone-node`, else `/tmp/hone-node` (kept between jobs: a later job on the same
/// host finds its inputs there).
pub fn node_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HONE_NODE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    std::env::temp_dir().join("hone-node")
}

/// One input of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobInput {
    /// An artifact in the store.
    Artifact(ArtifactDigest),
    /// The output of this stage of the same submission (it finishes before the job starts).
    Upstream(String),
}

/// What a finished job leaves for the jobs reading its output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub key: StageKey,
    pub artifact: ArtifactDigest,
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
    /// It waits for input from a person ([`crate::stage::StageError::AwaitingInput`]); nothing
    /// was stored.
    Awaiting {
        message: String,
    },
}

/// Why a worker could not run a job at all (not a stage failure).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot read the job file `{path}`: {message}")]
    Read { path: PathBuf, message: String },
    #[error("this hone has no stage kind `{0}`; run the jobs with the hone that submitted them")]
    UnknownKind(String),
    #[error(
        "this hone has `{kind}` v{have}, the job was planned with v{want}; run the jobs with the hone that submitted them"
    )]
    Version { kind: String, have: u32, want: u32 },
    #[error("the job's params for `{kind}` are invalid here: {message}")]
    Params { kind: String, message: String },
    #[error("input stage `{stage}` left no result at `{path}`: {message}")]
    Upstream { stage: String, path: PathBuf, message: String },
    #[error("the job names input stage `{0}` but has no results directory")]
    NoResults(String),
    #[error(transparent)]
    Store(#[from] crate::files::StoreError),
    #[error("cannot compute the key: {0}")]
    Deps(String),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error("input `{what}` is not usable on the remote cache {remote}: {why}")]
    RemoteInput { what: String, remote: String, why: String },
}

impl StageJob {
    pub fn read(path: &Path) -> Result<StageJob, JobError> {
        let bytes = std::fs::read(path)
            .map_err(|e| JobError::Read { path: path.to_path_buf(), message: e.to_string() })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| JobError::Read { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Where this job's result goes, if it is part of a submission.
    pub fn result_path(&self) -> Option<PathBuf> {
        self.results.as_ref().map(|d| result_path(d, &self.stage))
    }
}

pub fn result_path(results: &Path, stage: &str) -> PathBuf {
    results.join(format!("{stage}.result.json"))
}

/// Run a job in this process, given its kind and checked params: stage the outputs, run,
/// commit. Never panics (a stage's panic becomes a failure).
#[allow(clippy::too_many_arguments)]
pub fn execute(
    ws: &Workspace,
    kind: &dyn DynStage,
    params: &Params,
    job: &StageJob,
    m: KeyManifest,
    key: StageKey,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Outcome {
    let log = job.log.as_path();
    let failed = |error: String| Outcome::Failed { error, log: Some(log.to_path_buf()) };
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(
        log,
        format!("hone: stage `{}` ({} v{}) key {}\n", job.stage, kind.kind(), kind.version(), key),
    );
    let span = tracing::info_span!("stage", stage = %job.stage, log = %log.display());
    let _entered = span.enter();
    let staging = match ws.store.stage(key) {
        Ok(st) => st,
        Err(e) => return failed(e.to_string()),
    };
    let checkpoint = ws.store.checkpoint_dir(&key);
    if let Err(e) = std::fs::create_dir_all(&checkpoint) {
        return failed(format!(
            "cannot create checkpoint directory `{}`: {e}",
            checkpoint.display()
        ));
    }
    let inputs: BTreeMap<String, Vec<PathBuf>> = m
        .inputs
        .iter()
        .map(|(port, arts)| (port.clone(), arts.iter().map(|a| ws.store.object_path(a)).collect()))
        .collect();
    let cx = RunCx {
        stage_id: &job.stage,
        workspace: ws.base(),
        seed: m.seed,
        inputs: &inputs,
        out_dir: staging.out_dir(),
        checkpoint_dir: &checkpoint,
        log_path: log,
        events: sink,
        cancel,
        metrics: Default::default(),
    };
    let t0 = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| kind.run(params, &cx)));
    let seconds = t0.elapsed().as_secs_f64();
    let outcome = match result {
        Ok(Ok(())) => {
            let metrics = cx.metrics.into_inner().unwrap_or_default().into_iter().collect();
            match staging.commit(m, &job.stage, seconds, metrics) {
                Ok(record) => {
                    let _ = crate::files::remove_all(&checkpoint);
                    Outcome::Ran { record, seconds }
                }
                Err(e) => failed(format!("cannot store its outputs: {e}")),
            }
        }
        Ok(Err(StageError::Cancelled)) => failed(
            "stopped before it finished; it resumes from its last checkpoint on the next run"
                .into(),
        ),
        Ok(Err(StageError::AwaitingInput(message))) => Outcome::Awaiting { message },
        Ok(Err(e)) => failed(e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            failed(format!(
                "internal error (panic) in stage kind `{}`: {what}; please report it",
                kind.kind()
            ))
        }
    };
    match &outcome {
        Outcome::Ran { record, .. } => {
            tracing::info!(artifact = %record.artifact, seconds, "finished")
        }
        // The reporter shows failures; this line is for the stage log.
        Outcome::Failed { error, .. } => tracing::info!("failed: {error}"),
        Outcome::Awaiting { message } => tracing::info!("awaiting input: {message}"),
        _ => {}
    }
    outcome
}

/// Run a job given only its description (what `hone exec-stage` does, on any host that sees
/// the workspace): resolve its inputs, compute its key, and run it unless the key is stored.
/// A finished job records its result for dependent jobs and the stage's state for `hone
/// status`, and reports [`Event`]s as it goes.
pub fn run_job(
    job: &StageJob,
    registry: &Registry,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<Outcome, JobError> {
    match &job.remote {
        None => run_here(job, registry, sink, cancel),
        Some(via) => run_via_remote(job, via, registry, sink, cancel),
    }
}

/// [`run_job`] for a job that does not see the workspace ([`ViaRemote`]): the job is moved
/// to the node's store, its inputs fetched, run, and its result pushed; then its result (last,
/// after its record and object), events and log go to the exchange area. Whatever the
/// outcome, the events and log are left there for the submitting host.
fn run_via_remote(
    job: &StageJob,
    via: &ViaRemote,
    registry: &Registry,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<Outcome, JobError> {
    let remote = crate::remote::Remote::open(&via.url)?;
    let node = node_dir();
    let here = node.join(".hone").join("slurm").join(&via.submission);
    std::fs::create_dir_all(&here).map_err(crate::files::io_at(&here))?;
    let local = StageJob {
        workspace: node,
        results: Some(here.clone()),
        log: here.join(ViaRemote::log_name(&job.stage)),
        remote: None,
        ..job.clone()
    };
    let tee = Tee { inner: sink, lines: Default::default() };
    let outcome = Store::open(&local.workspace).map_err(JobError::from).and_then(|store| {
        fetch_inputs(&local, via, &remote, &store)?;
        let outcome = run_here(&local, registry, &tee, cancel)?;
        if let Outcome::Ran { record, .. } | Outcome::Cached { record } = &outcome {
            remote.push(&store, record, &crate::remote::Quiet)?;
            let r = JobResult { key: record.key, artifact: record.artifact };
            let body = serde_json::to_vec(&r).expect("result serialises");
            remote.put_run_file(&via.submission, &ViaRemote::result_name(&job.stage), body)?;
        }
        Ok(outcome)
    });
    if let Err(e) = &outcome {
        tee.emit(Event::StageFailed {
            stage: job.stage.clone(),
            error: e.to_string(),
            log: job.log.clone(),
        });
    }
    let lines = std::mem::take(&mut *tee.lines.lock().unwrap_or_else(|e| e.into_inner()));
    let log = std::fs::read(&local.log).unwrap_or_default();
    for (name, body) in [
        (ViaRemote::events_name(&job.stage), lines.into_bytes()),
        (ViaRemote::log_name(&job.stage), log),
    ] {
        if let Err(e) = remote.put_run_file(&via.submission, &name, body) {
            tracing::warn!("cannot leave `{name}` on the remote cache: {e}");
        }
    }
    outcome
}

/// The job's inputs into the node's store: the results of its input stages (read from the
/// exchange area into the local results directory, where [`run_here`] reads them) and the
/// records they and [`ViaRemote::fetch`] name, each object verified as it is fetched.
fn fetch_inputs(
    job: &StageJob,
    via: &ViaRemote,
    remote: &crate::remote::Remote,
    store: &Store,
) -> Result<(), JobError> {
    let results = job.results.as_deref().expect("set by run_via_remote");
    let mut keys = via.fetch.clone();
    for stage in job.inputs.values().flatten().filter_map(|i| match i {
        JobInput::Upstream(s) => Some(s),
        JobInput::Artifact(_) => None,
    }) {
        let name = ViaRemote::result_name(stage);
        let upstream = |message: String| JobError::Upstream {
            stage: stage.clone(),
            path: PathBuf::from(format!(
                "{}/hone-v1/runs/{}/{name}",
                remote.label(),
                via.submission
            )),
            message,
        };
        let body = remote
            .get_run_file(&via.submission, &name)?
            .ok_or_else(|| upstream("not on the remote cache".into()))?;
        let r: JobResult = serde_json::from_slice(&body).map_err(|e| upstream(e.to_string()))?;
        write_atomic(&result_path(results, stage), &body)?;
        keys.push(r.key);
    }
    for key in keys {
        if store.lookup(&key)?.is_some() {
            continue;
        }
        let bad = |why: String| JobError::RemoteInput {
            what: format!("key {}", key.short()),
            remote: remote.label().to_string(),
            why,
        };
        match remote.fetch(store, &key, &crate::remote::Quiet)? {
            crate::remote::Fetched::Hit(_) => {}
            crate::remote::Fetched::Absent => return Err(bad("no record of it".into())),
            crate::remote::Fetched::Unusable(why) => return Err(bad(why)),
        }
    }
    Ok(())
}

/// Passes events on and keeps all but progress as JSON lines.
struct Tee<'a> {
    inner: &'a dyn EventSink,
    lines: std::sync::Mutex<String>,
}

impl EventSink for Tee<'_> {
    fn emit(&self, event: Event) {
        if !matches!(event, Event::Progress { .. })
            && let Ok(line) = serde_json::to_string(&event)
        {
            let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
            lines.push_str(&line);
            lines.push('\n');
        }
        self.inner.emit(event);
    }
}

/// [`run_job`] against the workspace the job names.
fn run_here(
    job: &StageJob,
    registry: &Registry,
    sink: &dyn EventSink,
    cancel: &AtomicBool,
) -> Result<Outcome, JobError> {
    let kind = registry.get(&job.kind).ok_or_else(|| JobError::UnknownKind(job.kind.clone()))?;
    if kind.version() != job.version {
        return Err(JobError::Version {
            kind: job.kind.clone(),
            have: kind.version(),
            want: job.version,
        });
    }
    let bad = |message: String| JobError::Params { kind: job.kind.clone(), message };
    let value = serde_yaml::to_value(&job.params).map_err(|e| bad(e.to_string()))?;
    let node = crate::yaml::Node::from_value(
        &value,
        &crate::yaml::Origin::Flag(format!("the job's params for `{}`", job.stage)),
    );
    let params = kind.check(&node).map_err(|e| match e {
        CheckError::Invalid(e) => bad(e.message),
        CheckError::Problems(ps) => {
            bad(ps.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; "))
        }
    })?;
    if params.canonical != job.params {
        return Err(bad(format!(
            "they read back as {} instead of {}",
            params.canonical, job.params
        )));
    }
    let ws = Workspace::open(&job.workspace)?.with_base(&job.base);

    let mut inputs = BTreeMap::new();
    for (port, ins) in &job.inputs {
        let mut arts = Vec::new();
        for input in ins {
            arts.push(match input {
                JobInput::Artifact(a) => *a,
                JobInput::Upstream(stage) => {
                    let dir =
                        job.results.as_ref().ok_or_else(|| JobError::NoResults(stage.clone()))?;
                    let path = result_path(dir, stage);
                    let upstream = |message: String| JobError::Upstream {
                        stage: stage.clone(),
                        path: path.clone(),
                        message,
                    };
                    let bytes = std::fs::read(&path).map_err(|e| upstream(e.to_string()))?;
                    let r: JobResult =
                        serde_json::from_slice(&bytes).map_err(|e| upstream(e.to_string()))?;
                    r.artifact
                }
            });
        }
        inputs.insert(port.clone(), arts);
    }
    let hasher = |path: &Path| ws.hash_path(path);
    let deps = kind
        .external_deps(&params, &DepCx { workspace: ws.base(), hasher: &hasher })
        .map_err(|e| JobError::Deps(e.to_string()))?;
    let m = KeyManifest {
        kind: job.kind.clone(),
        version: job.version,
        params: job.params.clone(),
        seed: job.seed,
        inputs,
        deps: deps.into_iter().collect(),
    };
    let key = m.key();
    let before = ws.store.state(&job.pipeline, &job.stage);

    if !job.force
        && let Some(record) = ws.store.lookup(&key)?
    {
        finish(&ws, job, &record.key, record.artifact, None, before.as_ref())?;
        sink.emit(Event::StageCached {
            stage: job.stage.clone(),
            key,
            artifact: record.artifact,
            from: None,
        });
        return Ok(Outcome::Cached { record });
    }
    sink.emit(Event::StageStarted {
        stage: job.stage.clone(),
        key,
        log: job.log.clone(),
        reasons: Vec::new(),
    });
    let outcome = execute(&ws, kind, &params, job, m, key, sink, cancel);
    match &outcome {
        Outcome::Ran { record, seconds } => {
            finish(&ws, job, &record.key, record.artifact, Some(job.log.clone()), before.as_ref())?;
            sink.emit(Event::StageFinished {
                stage: job.stage.clone(),
                key,
                artifact: record.artifact,
                seconds: *seconds,
                unchanged: before.map(|b| b.artifact) == Some(record.artifact),
                metrics: record.metrics.clone(),
            });
        }
        Outcome::Failed { error, log } => sink.emit(Event::StageFailed {
            stage: job.stage.clone(),
            error: error.clone(),
            log: log.clone().unwrap_or_default(),
        }),
        _ => {}
    }
    Ok(outcome)
}

/// Record a finished job: its result for dependent jobs, then the stage's state.
fn finish(
    ws: &Workspace,
    job: &StageJob,
    key: &StageKey,
    artifact: ArtifactDigest,
    log: Option<PathBuf>,
    before: Option<&StageState>,
) -> Result<(), JobError> {
    if let Some(path) = job.result_path() {
        let r = JobResult { key: *key, artifact };
        write_atomic(&path, &serde_json::to_vec(&r).expect("result serialises"))?;
    }
    let log = log.or_else(|| before.filter(|b| b.key == *key).and_then(|b| b.log.clone()));
    ws.store.set_state(
        &job.pipeline,
        &job.stage,
        &StageState { key: *key, artifact, log },
        before,
    )?;
    Ok(())
}
