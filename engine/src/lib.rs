//! hone-engine: pipelines as a typed DAG of stages over a content-addressed store.
//!
//! The engine knows nothing about machine learning. It owns:
//! - [`spec`]: YAML pipeline files → a validated [`spec::Pipeline`] (all problems at once,
//!   with file:line:col, see [`diag::Diagnostics`]);
//! - [`stage`]: the [`stage::Stage`] trait and the [`stage::Registry`] of kinds;
//! - [`digest`] and [`store`]: stage keys, artifact digests and the `.hone/` store, on
//!   [`lease`] (who holds what, across hosts) and [`files`] (atomic writes, read-only trees);
//! - [`plan`] and [`exec`]: what will run and why, and running it in parallel on one of the
//!   [`executors`] (threads here, a Slurm cluster);
//! - [`events`]: what a run reports, for the CLI's reporters; [`logging`]: per-stage log files.
//! - [`watch`]: waiting for the files a pipeline reads to change.
//!
//! A stage kind, a pipeline, a run, and a rerun that is all cache hits:
//!
//! ```
//! use hone_engine::stage::{Inputs, Port, PortType, Registry, RunCx, Stage, StageError};
//! use hone_engine::{exec, spec, workspace::Workspace};
//!
//! struct Greet;
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Params { name: String }
//!
//! impl Stage for Greet {
//!     type Params = Params;
//!     const KIND: &'static str = "greet";
//!     const VERSION: u32 = 1;
//!     const ABOUT: &'static str = "writes a greeting";
//!     const INPUTS: Inputs = Inputs::Fixed(&[]);
//!     const OUTPUTS: &'static [Port] = &[Port::required("text", PortType::new("text"))];
//!     fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
//!         std::fs::write(cx.out_dir.join("hello.txt"), format!("hello {}", p.name))
//!             .map_err(StageError::io("writing the greeting"))
//!     }
//! }
//!
//! let registry = Registry::new(vec![&Greet]);
//! let yaml = "stages:\n  hi: { uses: greet, with: { name: world } }\n";
//! let pipeline = spec::load_str("p.yaml".as_ref(), yaml.into(), &registry, &[]).unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let ws = Workspace::open(dir.path()).unwrap();
//! let cancel = std::sync::atomic::AtomicBool::new(false);
//! let quiet = |_e: hone_engine::events::Event| {};
//! let first = exec::run(&ws, &pipeline, &Default::default(), &quiet, &cancel).unwrap();
//! assert_eq!(first.ran, ["hi"]);
//! let again = exec::run(&ws, &pipeline, &Default::default(), &quiet, &cancel).unwrap();
//! assert_eq!(again.cached, ["hi"]);
//! ```

pub mod diag;
pub mod digest;
pub mod events;
pub mod exec;
pub mod executors;
pub mod files;
pub mod history;
pub mod introspect;
pub mod lease;
pub mod logging;
pub mod plan;
pub mod remote;
pub mod resources;
pub mod spec;
pub mod stage;
pub mod store;
pub mod suggest;
pub mod time;
pub mod watch;
pub mod workspace;
pub mod yaml;

/// Errors of engine operations other than invalid pipelines and failed stages (which are
/// reported as diagnostics and events).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] files::StoreError),
    #[error(transparent)]
    Select(#[from] plan::SelectError),
    #[error(transparent)]
    Lock(#[from] workspace::LockError),
    #[error("stage `{stage}`: {message}")]
    Deps { stage: String, message: String },
}
