//! For the stage kinds' tests: running a pipeline through the engine, one job at a time.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use hone_engine::events::Event;
use hone_engine::exec::{self, RunOptions, RunSummary};
use hone_engine::spec;
use hone_engine::workspace::Workspace;

/// Runs `p` in the workspace at `dir`; `on_event` sees every event and may set the cancel
/// flag. The summary and all events.
pub(crate) fn run(dir: &Path, p: &spec::Pipeline, on_event: impl Fn(&Event, &AtomicBool) + Send + Sync) -> (RunSummary, Vec<Event>) {
    let ws = Workspace::open(dir).unwrap();
    let cancel = AtomicBool::new(false);
    let events = Mutex::new(Vec::new());
    let sink = |e: Event| {
        on_event(&e, &cancel);
        events.lock().unwrap().push(e);
    };
    let summary = exec::run(&ws, p, &RunOptions { jobs: 1, ..RunOptions::default() }, &sink, &cancel).unwrap();
    (summary, events.into_inner().unwrap())
}

/// The artifact directory of `stage`'s last run.
pub(crate) fn output(dir: &Path, p: &spec::Pipeline, stage: &str) -> PathBuf {
    let ws = Workspace::open(dir).unwrap();
    let state = ws.store.state(&p.name, stage).expect("the stage ran");
    ws.store.object_path(&state.artifact)
}

/// An event handler that does nothing.
pub(crate) fn quiet(_: &Event, _: &AtomicBool) {}

/// The digest (hex) of `stage`'s output after its last run.
pub(crate) fn output_digest(dir: &Path, p: &spec::Pipeline, stage: &str) -> String {
    let ws = Workspace::open(dir).unwrap();
    ws.store.state(&p.name, stage).expect("the stage ran").artifact.to_hex()
}
