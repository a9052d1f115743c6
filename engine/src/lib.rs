//! hone-engine: pipelines as a typed DAG of stages over a content-addressed store.
//!
//! The engine knows nothing about machine learning. It owns:
//! - [`spec`]: YAML pipeline files → a validated [`spec::Pipeline`] (all problems at once,
//!   with file:line:col, see [`diag::Diagnostics`]);
//! - [`stage`]: the [`stage::Stage`] trait and the [`stage::Registry`] of kinds;
//! - [`digest`] and [`store`]: stage keys, artifact digests and the `.hone/` store;
//! - [`plan`] and [`exec`]: what will run and why, and running it in parallel;
//! - [`events`]: what a run reports, for the CLI's reporters; [`logging`]: per-stage log files.
//! - [`watch`]: waiting for the files a pipeline reads to change.

pub mod diag;
pub mod digest;
pub mod events;
pub mod exec;
pub mod introspect;
pub mod logging;
pub mod plan;
pub mod spec;
pub mod stage;
pub mod store;
pub mod suggest;
pub mod watch;
pub mod workspace;
pub mod yaml;

/// Errors of engine operations other than invalid pipelines and failed stages (which are
/// reported as diagnostics and events).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Select(#[from] plan::SelectError),
    #[error(transparent)]
    Lock(#[from] workspace::LockError),
    #[error("stage `{stage}`: {message}")]
    Deps { stage: String, message: String },
}
