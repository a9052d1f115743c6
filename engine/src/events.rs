//! Typed events the engine emits while it runs; reporters (human, JSON) consume them.
//!
//! The engine never prints: the `hone` binary renders [`Event`]s with indicatif or as JSON
//! lines, and tests collect them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::{ArtifactDigest, StageKey};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        pipeline: String,
        stages: usize,
    },
    /// The stage's key was found in the store: nothing to do.
    StageCached {
        stage: String,
        key: StageKey,
        artifact: ArtifactDigest,
        /// The remote cache it was fetched from (`hone run --remote`), when not local.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    StageStarted {
        stage: String,
        key: StageKey,
        log: PathBuf,
        reasons: Vec<String>,
    },
    Progress {
        stage: String,
        done: u64,
        total: Option<u64>,
        message: String,
    },
    Metric {
        stage: String,
        name: String,
        value: serde_json::Value,
    },
    StageFinished {
        stage: String,
        key: StageKey,
        artifact: ArtifactDigest,
        seconds: f64,
        /// The output is byte-identical to the previous run's: dependents stay cached.
        unchanged: bool,
        metrics: serde_json::Map<String, serde_json::Value>,
    },
    StageFailed {
        stage: String,
        error: String,
        log: PathBuf,
    },
    /// Not run because an input stage failed or the run was stopped.
    StageSkipped {
        stage: String,
        because: String,
    },
    /// Handed to a cluster as job `job`, to start after the jobs `after` succeed.
    StageSubmitted {
        stage: String,
        job: String,
        log: PathBuf,
        reasons: Vec<String>,
        after: Vec<String>,
    },
    /// Already being computed by job `job` of an earlier submission (`hone run --detach`),
    /// identical to what would be submitted: followed, not submitted again.
    StageFollowed {
        stage: String,
        job: String,
        submission: PathBuf,
        log: PathBuf,
    },
    /// A submitted job changed state (Slurm's `PENDING`, `RUNNING`, `COMPLETED`, ...).
    JobState {
        stage: String,
        job: String,
        state: String,
        reason: String,
    },
    /// The stage waits for input from a person; `message` says what and how to give it.
    StageAwaiting {
        stage: String,
        message: String,
    },
    RunFinished {
        ran: usize,
        cached: usize,
        failed: usize,
        skipped: usize,
        awaiting: usize,
        seconds: f64,
    },
}

/// Where events go. Called from several threads.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

impl<F: Fn(Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: Event) {
        self(event)
    }
}
