//! What an executor is: an [`Executor`] takes stage jobs and says how each ended; an
//! [`ExecutorKind`] describes one kind of executor to the rest of hone (its name, its settings
//! in the pipeline's `executor:` block, and how to make one for a run).

use std::sync::atomic::AtomicBool;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::job::{JobId, Outcome, StageJob};
use crate::digest::StageKey;
use crate::events::EventSink;
use crate::stage::{CheckError, DynStage, ParamProblem, Params};
use crate::store::KeyManifest;
use crate::workspace::Workspace;
use crate::yaml::Node;

/// A stage handed to an executor.
pub struct Launch<'p> {
    /// The stage's index in the pipeline.
    pub index: usize,
    /// The stage's kind and checked params, as loaded in this process (for executors that run
    /// it in process).
    pub kind: &'static dyn DynStage,
    pub params: &'p Params,
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

/// A kind of executor: what `executor: { kind: NAME }` and `hone run --executor NAME` pick.
/// Each is declared by its own file of this folder and listed in [`super::KINDS`].
pub struct ExecutorKind {
    /// Its name in `kind:` and `--executor`.
    pub name: &'static str,
    /// Where it runs the stages, for `--help`.
    pub about: &'static str,
    /// Its own keys in the `executor:` block, beside `kind` and the stages' default resources.
    pub keys: fn() -> Vec<&'static str>,
    /// Its settings, read from the `executor:` block (every key of it, other executors'
    /// too) and checked, as JSON ([`check_settings`] for a [`Settings`] type).
    pub settings: fn(&Node) -> Result<Map<String, Value>, CheckError>,
    /// Whether it can return while its jobs run on (`hone run --detach`).
    pub detaches: bool,
    /// Make one for a run and lend it to the run (then say what it left behind, if anything).
    pub open: for<'p> fn(&Cx<'p>, Run<'_, 'p>) -> Result<(), String>,
    /// For an executor whose jobs outlive the run that started them.
    pub still_running: Option<StillRunning>,
}

/// A run lent an executor: it says whether it went to its end (no error).
pub type Run<'r, 'p> = &'r mut dyn FnMut(&mut dyn Executor<'p>) -> bool;

/// What to warn a run with another executor (the third argument names it) of, when jobs this
/// one started earlier still compute stages of the pipeline (the second) that the run will
/// compute again. Asked as that run starts its first stage.
pub type StillRunning = fn(&Workspace, &str, &str) -> Option<String>;

impl PartialEq for ExecutorKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl std::fmt::Debug for ExecutorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecutorKind({})", self.name)
    }
}

/// What an executor is made with, for one run.
pub struct Cx<'p> {
    pub ws: &'p Workspace,
    /// The pipeline's name.
    pub pipeline: &'p str,
    /// The executors' settings from the pipeline's `executor:` block ([`Settings::of`]).
    pub settings: &'p Map<String, Value>,
    /// Stages at once, for an executor that runs them here (`hone run --jobs`).
    pub jobs: usize,
    /// Return once every job is handed out, leaving them running (`hone run --detach`; only
    /// asked of an executor that [`detaches`](ExecutorKind::detaches)).
    pub detach: bool,
    pub sink: &'p dyn EventSink,
    pub cancel: &'p AtomicBool,
    pub person: &'p dyn Person,
    /// The run's remote cache (`--remote`, `HONE_REMOTE`, the settings), if any: how a
    /// cluster's jobs exchange inputs and results when its nodes share no filesystem.
    pub remote: Option<std::sync::Arc<crate::remote::Remote>>,
}

/// The person running hone, whom an executor may ask or tell something.
pub trait Person {
    /// Ask a question that is answered yes unless they say no; `None` when nobody can answer
    /// (hone's input is not a terminal).
    fn confirm(&self, question: &str) -> Option<bool>;
    /// Tell them something, on a line of its own.
    fn tell(&self, line: &str);
}

/// An executor's settings: its keys of the `executor:` block, as a struct. Other executors'
/// keys sit beside them, so it must not deny unknown fields (the block's keys are checked
/// against every executor's).
pub trait Settings: Serialize + DeserializeOwned {
    /// What is wrong with them beyond their types, at paths under the block.
    fn problems(&self) -> Vec<ParamProblem> {
        Vec::new()
    }

    /// This executor's settings among the pipeline's (checked when it was loaded).
    fn of(settings: &Map<String, Value>) -> Result<Self, String> {
        serde_json::from_value(Value::Object(settings.clone()))
            .map_err(|e| format!("the `executor:` block: {e}"))
    }
}

/// [`ExecutorKind::settings`] for an executor whose settings are a `T`.
pub fn check_settings<T: Settings>(block: &Node) -> Result<Map<String, Value>, CheckError> {
    let typed: T = crate::yaml::from_node(block).map_err(CheckError::Invalid)?;
    let problems = typed.problems();
    if !problems.is_empty() {
        return Err(CheckError::Problems(problems));
    }
    match serde_json::to_value(&typed) {
        Ok(Value::Object(settings)) => Ok(settings),
        other => panic!("executor settings serialise as a mapping, not {other:?}"),
    }
}

/// [`ExecutorKind::settings`] for an executor without settings.
pub fn no_settings(_: &Node) -> Result<Map<String, Value>, CheckError> {
    Ok(Map::new())
}
