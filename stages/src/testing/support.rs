//! For the stage kinds' tests: a workspace with files, loading a pipeline, running it
//! through the engine one job at a time, and what the run left.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use hone_engine::events::Event;
use hone_engine::exec::{self, RunOptions, RunSummary};
use hone_engine::spec;
use hone_engine::workspace::Workspace;

/// Saves a tiny untrained GPT (2 layers, 2 heads, 32 wide, seeded) for a `vocab`-token
/// tokenizer to `dir` in HF layout, generation stopping at `eos`; its config.
pub(crate) fn save_tiny_gpt(
    dir: &Path,
    vocab: usize,
    block_size: usize,
    eos: Option<u32>,
) -> crate::model::GptConfig {
    use crate::model::export::{self, GenerationConfig};
    use crate::model::{Gpt, GptConfig, ParamStore};
    let cfg = GptConfig {
        vocab_size: vocab,
        block_size,
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        bias: true,
        dropout: 0.0,
        ..Default::default()
    };
    let ps = ParamStore::seeded(3);
    Gpt::new(&cfg, ps.var_builder(candle_core::DType::F32, &candle_core::Device::Cpu)).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    export::save(dir, &cfg, &ps.snapshot(), &GenerationConfig::defaults(eos)).unwrap();
    cfg
}

/// A workspace in a temp dir holding `files` (a path inside it, and the bytes).
pub(crate) fn workspace(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

/// Loads `yaml` as the pipeline file `pipeline.yaml` of the workspace at `dir` (the file is
/// not written); the problems as `hone` prints them.
pub(crate) fn load(dir: &Path, yaml: &str) -> Result<spec::Pipeline, String> {
    spec::load_str(&dir.join("pipeline.yaml"), yaml.to_string(), &crate::registry(), &[])
        .map_err(|e| e.to_string())
}

/// Runs `p` in the workspace at `dir`; `on_event` sees every event and may set the cancel
/// flag. The summary and all events.
pub(crate) fn run(
    dir: &Path,
    p: &spec::Pipeline,
    on_event: impl Fn(&Event, &AtomicBool) + Send + Sync,
) -> (RunSummary, Vec<Event>) {
    let ws = Workspace::open(dir).unwrap();
    let cancel = AtomicBool::new(false);
    let events = Mutex::new(Vec::new());
    let sink = |e: Event| {
        on_event(&e, &cancel);
        events.lock().unwrap().push(e);
    };
    let summary =
        exec::run(&ws, p, &RunOptions { jobs: 1, ..RunOptions::default() }, &sink, &cancel)
            .unwrap();
    (summary, events.into_inner().unwrap())
}

/// The artifact directory of `stage`'s last run.
pub(crate) fn output(dir: &Path, p: &spec::Pipeline, stage: &str) -> PathBuf {
    let ws = Workspace::open(dir).unwrap();
    let state = ws.store.state(&p.name, stage).expect("the stage ran");
    ws.store.object_path(&state.artifact)
}

/// The metrics `stage` finished with, from a run's events.
pub(crate) fn finished_metrics(
    events: &[Event],
    stage: &str,
) -> serde_json::Map<String, serde_json::Value> {
    events
        .iter()
        .find_map(|e| match e {
            Event::StageFinished { stage: s, metrics, .. } if s == stage => Some(metrics.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("`{stage}` did not finish"))
}

/// An event handler that does nothing.
pub(crate) fn quiet(_: &Event, _: &AtomicBool) {}

/// The digest (hex) of `stage`'s output after its last run.
pub(crate) fn output_digest(dir: &Path, p: &spec::Pipeline, stage: &str) -> String {
    let ws = Workspace::open(dir).unwrap();
    ws.store.state(&p.name, stage).expect("the stage ran").artifact.to_hex()
}
