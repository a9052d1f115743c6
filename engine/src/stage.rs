//! The [`Stage`] trait every stage kind implements, and what a stage sees when it runs.
//!
//! A kind is a unit struct with typed params (`deny_unknown_fields`), typed ports and a
//! `run`. The engine only ever holds kinds as [`DynStage`] trait objects, listed once in a
//! [`Registry`]; it never knows what a port type *means*: "corpus" or "model" are just names
//! that must match.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::digest::Digest;
use crate::events::{Event, EventSink};
use crate::resources::Resources;
use crate::yaml::{DeError, Node, PathSeg};

/// The type of data a port carries. Inputs only accept outputs of the same type or of a
/// narrower one (a type made with [`PortType::narrows`]: a chat corpus is a corpus); [`ANY`]
/// accepts, and is accepted by, everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortType {
    name: &'static str,
    parent: Option<&'static PortType>,
}

/// Accepts (as an input) or gives (as an output) any type.
pub const ANY: PortType = PortType::new("any");

impl PortType {
    pub const fn new(name: &'static str) -> PortType {
        PortType { name, parent: None }
    }

    /// A narrower type than `parent`: accepted wherever `parent` is, but not the other way.
    pub const fn narrows(name: &'static str, parent: &'static PortType) -> PortType {
        PortType { name, parent: Some(parent) }
    }

    pub fn name(self) -> &'static str {
        self.name
    }

    /// Whether `self` is `other` or narrows it (directly or through its parents).
    pub fn is_a(self, other: PortType) -> bool {
        let mut t = Some(&self);
        while let Some(cur) = t {
            if *cur == other {
                return true;
            }
            t = cur.parent;
        }
        false
    }

    /// Whether an input of this type takes an output of type `given`.
    pub fn accepts(self, given: PortType) -> bool {
        self == ANY || given == ANY || given.is_a(self)
    }
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Port {
    pub name: &'static str,
    pub ty: PortType,
    /// The stage cannot run without it.
    pub required: bool,
    /// Takes a list of stages (`models: [base, sft]`).
    pub many: bool,
}

impl Port {
    pub const fn required(name: &'static str, ty: PortType) -> Port {
        Port { name, ty, required: true, many: false }
    }
    pub const fn optional(name: &'static str, ty: PortType) -> Port {
        Port { name, ty, required: false, many: false }
    }
    pub const fn many(name: &'static str, ty: PortType) -> Port {
        Port { name, ty, required: true, many: true }
    }
}

/// A kind's input ports: a fixed list, or any names (the `command` kind).
#[derive(Clone, Copy, Debug)]
pub enum Inputs {
    Fixed(&'static [Port]),
    /// Any port name (an identifier), any type, one stage or a list.
    Open,
}

/// A problem with a stage's params, at a path inside its `with:` mapping.
#[derive(Debug, Clone)]
pub struct ParamProblem {
    pub path: Vec<PathSeg>,
    pub message: String,
    pub help: Option<String>,
}

impl ParamProblem {
    pub fn at(path: &[&str], message: impl Into<String>) -> Self {
        ParamProblem {
            path: path.iter().map(|s| PathSeg::Key(s.to_string())).collect(),
            message: message.into(),
            help: None,
        }
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Why a stage's params were rejected.
#[derive(Debug)]
pub enum CheckError {
    /// They do not deserialise into the kind's params type.
    Invalid(DeError),
    /// They do, but [`Stage::validate`] found problems.
    Problems(Vec<ParamProblem>),
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Failed(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("stopped (cancelled)")]
    Cancelled,
    /// The stage needs input from a person first (labels, say). Not a failure: the run stops
    /// before it with this message (what is missing and the command that provides it), keeps
    /// every finished stage, and the stage runs once the input exists.
    #[error("{0}")]
    AwaitingInput(String),
}

impl StageError {
    pub fn msg(m: impl Into<String>) -> Self {
        StageError::Failed(m.into())
    }
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StageError {
        let context = context.into();
        move |source| StageError::Io { context, source }
    }
}

/// A kind of stage. Implement this for a unit struct and list it in the registry.
pub trait Stage: Send + Sync + 'static {
    /// The typed params (`with:`); derive `Deserialize` with `deny_unknown_fields`.
    type Params: DeserializeOwned + Serialize + Send + Sync + 'static;
    /// The name used in `uses:`.
    const KIND: &'static str;
    /// Bump when a change to the code changes what the stage produces: it invalidates the cache.
    const VERSION: u32;
    /// One line for `hone kinds` and "did you mean".
    const ABOUT: &'static str;
    const INPUTS: Inputs;
    /// The kind's outputs: all name the stage's one output directory, with different types.
    const OUTPUTS: &'static [Port];
    /// Keys the kind owns beside `with:` in a stage (`ingest`'s `filters:`). Each is
    /// deserialised as a field of [`Stage::Params`], as if it were written in `with:`.
    const STAGE_KEYS: &'static [&'static str] = &[];

    /// The type of output `port` for these params. A kind whose outputs depend on its params
    /// narrows the declared type here (`ingest` of chat records gives `chat-data`, a narrower
    /// `corpus`), so that wiring is checked at load time. Defaults to the declared type.
    fn output_type(_params: &Self::Params, port: &Port) -> PortType {
        port.ty
    }

    /// The help shown when output `port` is wired to an input that wants `want`, a type the
    /// params do not narrow it to: how to set the params so that it is (`format: chat`).
    fn narrowing_help(_params: &Self::Params, _port: &Port, _want: PortType) -> Option<String> {
        None
    }

    /// Settings from outside the pipeline file that change what the kind produces (an
    /// environment variable such as `HONE_PLAIN_OPS`), as `(name, value)`: they enter the
    /// stage key, so a run with another setting is not served the other's cache entry. List
    /// a setting only when it is not at its default, so that keys stay as they are when
    /// nothing is set.
    fn settings() -> Vec<(&'static str, String)> {
        Vec::new()
    }

    /// Checks beyond what deserialisation checks (ranges, combinations).
    fn validate(_params: &Self::Params) -> Vec<ParamProblem> {
        Vec::new()
    }

    /// Digests of what the stage reads from outside the store (workspace files, plugins):
    /// they become part of the stage key. `(label, digest)`; labels appear in `hone plan`.
    fn external_deps(
        _params: &Self::Params,
        _cx: &DepCx,
    ) -> Result<Vec<(String, Digest)>, StageError> {
        Ok(Vec::new())
    }

    /// What a job of this kind asks a cluster for by default (a stage's `resources:` and the
    /// pipeline's `executor:` block override it field by field).
    fn resources(_params: &Self::Params) -> Resources {
        Resources::default()
    }

    fn run(params: &Self::Params, cx: &RunCx) -> Result<(), StageError>;

    /// A few lines for a person at the end of `hone run` (an evaluation's table), read from
    /// the stage's finished output directory `out`. None (the default): nothing to show.
    fn summary(_params: &Self::Params, _out: &Path) -> Option<String> {
        None
    }
}

/// Validated params: the typed value for `run`, and the canonical JSON that enters the key.
#[derive(Clone)]
pub struct Params {
    pub canonical: serde_json::Value,
    typed: Arc<dyn Any + Send + Sync>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Params({})", self.canonical)
    }
}

/// The object-safe face of a [`Stage`]; implemented for every `Stage`.
pub trait DynStage: Send + Sync {
    fn kind(&self) -> &'static str;
    fn version(&self) -> u32;
    fn about(&self) -> &'static str;
    fn inputs(&self) -> Inputs;
    fn outputs(&self) -> &'static [Port];
    /// See [`Stage::output_type`].
    fn output_type(&self, params: &Params, port: &Port) -> PortType;
    /// See [`Stage::narrowing_help`].
    fn narrowing_help(&self, params: &Params, port: &Port, want: PortType) -> Option<String>;
    /// See [`Stage::settings`].
    fn settings(&self) -> Vec<(&'static str, String)>;
    /// Deserialises and validates the params (`with:` and the kind's [`Stage::STAGE_KEYS`],
    /// as one mapping).
    fn check(&self, params: &Node) -> Result<Params, CheckError>;
    /// See [`Stage::STAGE_KEYS`].
    fn stage_keys(&self) -> &'static [&'static str];
    /// The names of the kind's params (its `with:` keys), for help texts.
    fn param_names(&self) -> Vec<&'static str>;
    fn external_deps(
        &self,
        params: &Params,
        cx: &DepCx,
    ) -> Result<Vec<(String, Digest)>, StageError>;
    fn resources(&self, params: &Params) -> Resources;
    fn run(&self, params: &Params, cx: &RunCx) -> Result<(), StageError>;
    /// See [`Stage::summary`].
    fn summary(&self, params: &Params, out: &Path) -> Option<String>;
}

impl<S: Stage> DynStage for S {
    fn kind(&self) -> &'static str {
        S::KIND
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn about(&self) -> &'static str {
        S::ABOUT
    }
    fn inputs(&self) -> Inputs {
        S::INPUTS
    }
    fn outputs(&self) -> &'static [Port] {
        S::OUTPUTS
    }
    fn output_type(&self, params: &Params, port: &Port) -> PortType {
        S::output_type(typed::<S>(params), port)
    }
    fn narrowing_help(&self, params: &Params, port: &Port, want: PortType) -> Option<String> {
        S::narrowing_help(typed::<S>(params), port, want)
    }
    fn settings(&self) -> Vec<(&'static str, String)> {
        S::settings()
    }
    fn check(&self, params: &Node) -> Result<Params, CheckError> {
        let typed: S::Params = crate::yaml::from_node(params).map_err(CheckError::Invalid)?;
        let problems = S::validate(&typed);
        if !problems.is_empty() {
            return Err(CheckError::Problems(problems));
        }
        let canonical = serde_json::to_value(&typed)
            .map_err(|e| CheckError::Problems(vec![ParamProblem::at(&[], e.to_string())]))?;
        Ok(Params { canonical, typed: Arc::new(typed) })
    }
    fn stage_keys(&self) -> &'static [&'static str] {
        S::STAGE_KEYS
    }
    fn param_names(&self) -> Vec<&'static str> {
        crate::introspect::field_names::<S::Params>()
    }
    fn external_deps(
        &self,
        params: &Params,
        cx: &DepCx,
    ) -> Result<Vec<(String, Digest)>, StageError> {
        S::external_deps(typed::<S>(params), cx)
    }
    fn resources(&self, params: &Params) -> Resources {
        S::resources(typed::<S>(params))
    }
    fn run(&self, params: &Params, cx: &RunCx) -> Result<(), StageError> {
        S::run(typed::<S>(params), cx)
    }
    fn summary(&self, params: &Params, out: &Path) -> Option<String> {
        S::summary(typed::<S>(params), out)
    }
}

fn typed<S: Stage>(p: &Params) -> &S::Params {
    p.typed.downcast_ref().expect("params were checked by the same kind")
}

/// What a stage may use to digest external dependencies (stat-cached file hashing).
pub struct DepCx<'a> {
    /// The pipeline file's directory: relative paths resolve here.
    pub workspace: &'a Path,
    pub(crate) hasher: &'a (dyn Fn(&Path) -> std::io::Result<Digest> + Sync),
}

impl DepCx<'_> {
    /// The Merkle digest of a workspace path (file or directory), relative to the workspace.
    pub fn hash_path(&self, rel: &Path) -> Result<Digest, StageError> {
        let p = self.workspace.join(rel);
        (self.hasher)(&p)
            .map_err(|e| StageError::msg(format!("cannot read `{}`: {e}", rel.display())))
    }
}

/// What a running stage sees: its inputs, where to write, and how to report.
pub struct RunCx<'a> {
    pub stage_id: &'a str,
    /// The pipeline file's directory: relative paths resolve here and commands run here.
    pub workspace: &'a Path,
    pub seed: u64,
    /// Input port → artifact directories (one, or several for a `many` port).
    pub inputs: &'a BTreeMap<String, Vec<PathBuf>>,
    /// Write every output here; it becomes the stage's artifact when `run` returns Ok.
    pub out_dir: &'a Path,
    /// Survives a killed run (keyed by the stage key): save checkpoints here to resume.
    pub checkpoint_dir: &'a Path,
    /// This run's log file (tracing events inside the stage's span also land here).
    pub log_path: &'a Path,
    pub(crate) events: &'a dyn EventSink,
    pub(crate) cancel: &'a AtomicBool,
    pub(crate) metrics: std::sync::Mutex<BTreeMap<String, serde_json::Value>>,
}

impl RunCx<'_> {
    /// The artifact directory wired to a single-stage input port.
    pub fn input(&self, port: &str) -> Option<&Path> {
        self.inputs.get(port).and_then(|v| v.first()).map(PathBuf::as_path)
    }

    /// Like [`RunCx::input`] for a required port; the engine has checked the wiring.
    pub fn required_input(&self, port: &str) -> Result<&Path, StageError> {
        self.input(port).ok_or_else(|| StageError::msg(format!("input `{port}` is not wired")))
    }

    /// Progress of a long stage; `total` enables a bar with an ETA.
    pub fn progress(&self, done: u64, total: Option<u64>, message: impl Into<String>) {
        self.events.emit(Event::Progress {
            stage: self.stage_id.to_string(),
            done,
            total,
            message: message.into(),
        });
    }

    /// A metric: shown live, and its last value kept in the stage's summary.
    pub fn metric(&self, name: &str, value: impl Into<serde_json::Value>) {
        let value = value.into();
        self.metrics.lock().unwrap().insert(name.to_string(), value.clone());
        self.events.emit(Event::Metric {
            stage: self.stage_id.to_string(),
            name: name.to_string(),
            value,
        });
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once the run is being stopped; call it in long loops.
    pub fn check_cancelled(&self) -> Result<(), StageError> {
        if self.is_cancelled() { Err(StageError::Cancelled) } else { Ok(()) }
    }
}

/// Every stage kind hone knows, listed in one place (see `hone_stages::registry`).
pub struct Registry {
    kinds: Vec<&'static dyn DynStage>,
}

impl Registry {
    pub fn new(kinds: Vec<&'static dyn DynStage>) -> Self {
        Registry { kinds }
    }
    pub fn get(&self, kind: &str) -> Option<&'static dyn DynStage> {
        self.kinds.iter().copied().find(|k| k.kind() == kind)
    }
    pub fn kinds(&self) -> impl Iterator<Item = &'static dyn DynStage> + '_ {
        self.kinds.iter().copied()
    }
}
