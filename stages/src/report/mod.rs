//! `hone report`: one self-contained HTML page about a pipeline's last results.
//!
//! [`gather`] reads what the store knows about each stage of a [`Pipeline`] (its plan, its
//! record, how it ended in the last run) and the outputs of the up-to-date ones, into a
//! [`Report`]; [`html::render`] turns that into a page; [`write`] does both and saves it.
//!
//! What the page shows comes from the outputs themselves, not from a list of stage kinds, so
//! a new kind shows up by writing the files the others write:
//! - `metrics.jsonl` (any stage): one chart per group of numeric fields ([`curves`]);
//! - `meta.json` with `filters` (`ingest`): record counts and what each filter kept/dropped;
//! - `report.json` with `models` (`evaluate`): the comparison table, and from its
//!   `answers.jsonl` a few prompts with every model's response.
//!
//! The page needs no JavaScript and loads nothing: styles and charts (SVG) are inline, and it
//! is well-formed XML (XHTML), so a browser's strict parser can check it.

mod curves;
mod html;
mod runs;
mod svg;
#[cfg(test)]
mod tests;
mod text;

use std::path::{Path, PathBuf};

use hone_engine::digest::{ArtifactDigest, StageKey};
use hone_engine::files::write_atomic;
use hone_engine::plan::{self, Action, Selection};
use hone_engine::spec::Pipeline;
use hone_engine::store::Outcome;
use hone_engine::workspace::Workspace;
use serde_json::Value;

use crate::data::corpus::IngestMeta;
use crate::data::evaluation::{self, Answer, EvalReport};
use crate::data::formats::PromptText;

pub use curves::{Chart, Series};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Engine(#[from] hone_engine::EngineError),
    #[error(transparent)]
    Store(#[from] hone_engine::files::StoreError),
    #[error(
        "cannot write the report to `{path}`: {source}\n   = help: pass a writable file with -o FILE"
    )]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where a stage stands, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Up to date, computed by the last run.
    Ran,
    /// Up to date, found in the store by the last run (or computed by an earlier one).
    Cached,
    /// The last run tried it with the current key and it failed.
    Failed,
    /// The last run did not run it: an input failed, or the run was stopped.
    Skipped,
    /// It has run, but its params, inputs or files have changed since.
    OutOfDate,
    NeverRan,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Ran => "ran",
            State::Cached => "cached",
            State::Failed => "failed",
            State::Skipped => "skipped",
            State::OutOfDate => "out of date",
            State::NeverRan => "never ran",
        }
    }

    /// The CSS class (and SVG colour) of the state.
    fn class(self) -> &'static str {
        match self {
            State::Ran => "ran",
            State::Cached => "cached",
            State::Failed => "failed",
            State::Skipped => "skipped",
            State::OutOfDate => "stale",
            State::NeverRan => "never",
        }
    }
}

/// One stage of the pipeline.
#[derive(Debug, Clone)]
pub struct StageView {
    pub id: String,
    pub kind: String,
    /// Ids of the stages it reads.
    pub inputs: Vec<String>,
    pub state: State,
    /// Why it would run now (empty when up to date).
    pub reasons: Vec<String>,
    /// Its current key, when its inputs are all known.
    pub key: Option<StageKey>,
    pub artifact: Option<ArtifactDigest>,
    /// How long it took when it ran.
    pub seconds: Option<f64>,
    /// The up-to-date output directory.
    pub output: Option<PathBuf>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    pub log: Option<PathBuf>,
}

/// An `ingest` stage's counts (its `meta.json`).
#[derive(Debug, Clone)]
pub struct DataView {
    pub stage: String,
    pub format: String,
    pub records: u64,
    pub train: u64,
    pub val: u64,
    pub empty: u64,
    pub skipped: u64,
    /// (source, records)
    pub sources: Vec<(String, u64)>,
    pub filters: Vec<FilterView>,
}

#[derive(Debug, Clone)]
pub struct FilterView {
    pub name: String,
    pub kept: u64,
    pub rewritten: u64,
    pub dropped: u64,
    /// (reason, count), most frequent first.
    pub reasons: Vec<(String, u64)>,
}

/// An `evaluate` stage's table (`report.json`) and sample answers (`answers.jsonl`).
#[derive(Debug, Clone)]
pub struct EvalView {
    pub stage: String,
    /// The report's settings (prompts, max_new_tokens, temperature).
    pub settings: Vec<(String, Value)>,
    /// Column names (the union of the models' fields, in order of appearance).
    pub columns: Vec<String>,
    /// One row per model: the value of each column (Null when a model lacks it).
    pub rows: Vec<Vec<Value>>,
    pub samples: Vec<Sample>,
}

/// One prompt and each model's response to it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub prompt: PromptText,
    pub answer: Option<String>,
    /// (model, response, correct)
    pub responses: Vec<(String, String, Option<bool>)>,
}

/// A stage's curves from its `metrics.jsonl`.
#[derive(Debug, Clone)]
pub struct CurvesView {
    pub stage: String,
    pub kind: String,
    pub charts: Vec<Chart>,
    /// Lines of metrics.jsonl that were not JSON objects.
    pub unreadable: usize,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct Report {
    pub pipeline: String,
    pub file: PathBuf,
    pub workspace: PathBuf,
    pub stages: Vec<StageView>,
    pub curves: Vec<CurvesView>,
    pub data: Vec<DataView>,
    pub evals: Vec<EvalView>,
    /// The pipeline's recorded runs.
    pub runs: runs::RunsView,
}

/// How many prompts the samples show.
const SAMPLE_PROMPTS: usize = 5;

/// Reads the pipeline's state and outputs from the workspace's store. Reads only: nothing
/// runs and nothing is written. A stage whose output is missing or unreadable is shown with
/// what there is, never an error.
pub fn gather(ws: &Workspace, p: &Pipeline) -> Result<Report, ReportError> {
    let plans = plan::plan(ws, p, &Selection::All, &[])?;
    let last = ws.store.last_runs(&p.name);
    let mut report = Report {
        pipeline: p.name.clone(),
        file: p.file.clone(),
        workspace: ws.root().to_path_buf(),
        stages: Vec::new(),
        curves: Vec::new(),
        data: Vec::new(),
        evals: Vec::new(),
        runs: runs::gather(ws, p),
    };
    for (i, (s, sp)) in p.stages.iter().zip(&plans).enumerate() {
        let record = match (sp.action, sp.key) {
            (Action::Cached, Some(k)) => ws.store.lookup(&k)?,
            _ => None,
        };
        let last =
            last.get(&s.id).filter(|l| l.key.is_none() || l.key == sp.key || sp.key.is_none());
        let state = match (&record, last.map(|l| l.outcome)) {
            (Some(_), Some(Outcome::Ran)) => State::Ran,
            (Some(_), _) => State::Cached,
            (None, Some(Outcome::Failed)) => State::Failed,
            (None, Some(Outcome::Skipped)) => State::Skipped,
            (None, _) if ws.store.state(&p.name, &s.id).is_some() => State::OutOfDate,
            (None, _) => State::NeverRan,
        };
        let mut inputs: Vec<String> = p.deps_of(i).map(|d| p.stages[d].id.clone()).collect();
        inputs.dedup();
        let failed = matches!(state, State::Failed | State::Skipped);
        let view = StageView {
            id: s.id.clone(),
            kind: sp.kind.clone(),
            inputs,
            state,
            reasons: if record.is_some() { Vec::new() } else { sp.reasons.clone() },
            key: sp.key,
            artifact: record.as_ref().map(|r| r.artifact),
            seconds: record.as_ref().map(|r| r.seconds),
            output: record.as_ref().map(|r| ws.store.object_path(&r.artifact)),
            error: last.filter(|_| failed).and_then(|l| l.error.clone()),
            log: last
                .and_then(|l| l.log.clone())
                .or_else(|| ws.store.state(&p.name, &s.id).and_then(|st| st.log)),
        };
        if let Some(dir) = &view.output {
            read_outputs(&view, dir, &mut report);
        }
        report.stages.push(view);
    }
    Ok(report)
}

/// The sections a stage's output directory contributes.
fn read_outputs(s: &StageView, dir: &Path, report: &mut Report) {
    if let Ok(text) = std::fs::read_to_string(dir.join("metrics.jsonl")) {
        let (charts, unreadable) = curves::charts(&text);
        if !charts.is_empty() || unreadable > 0 {
            report.curves.push(CurvesView {
                stage: s.id.clone(),
                kind: s.kind.clone(),
                charts,
                unreadable,
            });
        }
    }
    if let Some(meta) = IngestMeta::read(dir) {
        report.data.push(data_view(&s.id, meta));
    }
    if let Some(r) = EvalReport::read(dir) {
        report.evals.push(eval_view(&s.id, &r, evaluation::read_answers(dir)));
    }
}

fn data_view(stage: &str, meta: IngestMeta) -> DataView {
    let filters = meta
        .filters
        .into_iter()
        .map(|f| {
            let mut reasons: Vec<(String, u64)> = f.reasons.into_iter().collect();
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            FilterView {
                name: f.filter,
                kept: f.kept,
                rewritten: f.rewritten,
                dropped: f.dropped,
                reasons,
            }
        })
        .collect();
    DataView {
        stage: stage.to_string(),
        format: meta.corpus.format.name().to_string(),
        records: meta.records,
        train: meta.corpus.train.unwrap_or(0),
        val: meta.corpus.val.unwrap_or(0),
        empty: meta.empty,
        skipped: meta.skipped,
        sources: meta.sources.into_iter().map(|s| (s.source, s.records)).collect(),
        filters,
    }
}

fn eval_view(stage: &str, report: &EvalReport, answers: Vec<Answer>) -> EvalView {
    let settings = vec![
        ("prompts".to_string(), report.prompts.into()),
        ("max_new_tokens".to_string(), report.max_new_tokens.into()),
        ("temperature".to_string(), report.temperature.into()),
    ];
    // The rows as written: a field a row leaves out (no reward model) is no column.
    let models: Vec<serde_json::Map<String, Value>> = report
        .models
        .iter()
        .filter_map(|m| match serde_json::to_value(m) {
            Ok(Value::Object(fields)) => Some(fields),
            _ => None,
        })
        .collect();
    // The known columns in reading order, then any others by name.
    const ORDER: [&str; 7] =
        ["name", "format", "accuracy", "correct", "graded", "prompts", "mean_length"];
    let mut columns: Vec<String> = models.iter().flat_map(|m| m.keys().cloned()).collect();
    columns.sort_by_key(|c| (ORDER.iter().position(|o| o == c).unwrap_or(ORDER.len()), c.clone()));
    columns.dedup();
    let rows = models
        .iter()
        .map(|m| columns.iter().map(|c| m.get(c).cloned().unwrap_or(Value::Null)).collect())
        .collect();
    EvalView { stage: stage.to_string(), settings, columns, rows, samples: samples(answers) }
}

/// The first few prompts of `answers.jsonl` (those with a checkable answer first), each with
/// every model's response.
fn samples(answers: Vec<Answer>) -> Vec<Sample> {
    let mut by_prompt: Vec<Sample> = Vec::new();
    for a in answers {
        let i = match by_prompt.iter().position(|s| s.prompt == a.prompt) {
            Some(i) => i,
            None => {
                by_prompt.push(Sample {
                    prompt: a.prompt,
                    answer: a.answer,
                    responses: Vec::new(),
                });
                by_prompt.len() - 1
            }
        };
        by_prompt[i].responses.push((a.model, a.response, a.correct));
    }
    // Mostly graded prompts, and one without an answer (a greeting, a story) when there is one.
    let (mut shown, ungraded): (Vec<Sample>, Vec<Sample>) =
        by_prompt.into_iter().partition(|s| s.answer.is_some());
    shown.truncate(SAMPLE_PROMPTS - ungraded.len().min(1));
    shown.extend(ungraded.into_iter().take(SAMPLE_PROMPTS - shown.len()));
    shown
}

/// The page for `report`.
pub fn render(report: &Report) -> String {
    html::render(report)
}

/// Where `write` puts the page of pipeline `name` when no path is given.
pub fn default_path(ws: &Workspace, name: &str) -> PathBuf {
    let file: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    ws.store.root().join("reports").join(format!("{file}.html"))
}

/// Gathers, renders and writes the page (atomically) to `to`, or to [`default_path`]; returns
/// where it went.
pub fn write(ws: &Workspace, p: &Pipeline, to: Option<&Path>) -> Result<PathBuf, ReportError> {
    let page = render(&gather(ws, p)?);
    let path = to.map(Path::to_path_buf).unwrap_or_else(|| default_path(ws, &p.name));
    let failed = |source| ReportError::Write { path: path.clone(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    write_atomic(&path, page.as_bytes()).map_err(|e| match e {
        hone_engine::files::StoreError::Io { source, .. } => failed(source),
        other => failed(std::io::Error::other(other.to_string())),
    })?;
    // Readable by others, like any page one may share (the temp file it was renamed from is 0600).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(failed)?;
    Ok(path)
}
