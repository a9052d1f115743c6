//! `ingest`: read text, JSONL, Parquet or Arrow sources (files, globs, HF `datasets` folders)
//! into a normalised corpus, filter it, and split it into train and validation sets.
//!
//! ```yaml
//! corpus:
//!   uses: ingest
//!   with:
//!     source: ["data/*.jsonl.zst", notes.txt]   # paths, globs, HF datasets folders, builtin:NAME
//!     split: train          # a datasets folder's split(s) (default train)
//!     text_column: content  # or columns: { prompt: question, chosen: good, rejected: bad }
//!     meta_columns: [id]    # Parquet/Arrow columns kept under `meta`
//!     format: auto          # or text | chat | prompt | preference
//!     txt_split: blank-line # or file: one document per .txt file
//!     on_error: fail        # or skip: count malformed records and go on
//!     val_fraction: 0.1
//!   filters:                # applied in order
//!     - builtin: gopher-quality
//!     - builtin: dedup-exact
//! ```
//!
//! Output (port `corpus`): `train.jsonl` and `val.jsonl`, one normalised record a line (see
//! [`crate::data::formats`]), and `meta.json` with the format, the counts and what each
//! filter did. Records go to validation by a hash of their normalised line, so the split is
//! stable and independent of order, seed and the other records.
//!
//! Sources are read by [`crate::data::sources`] and streamed in batches: memory stays flat
//! whatever their size, apart from the hashes deduplication filters keep. The content of
//! every source file is part of the key. A fixed `format` reads only that format's fields
//! (`format: prompt` on preference data gives its prompts, whatever form holds them).
//! Preference pairs with an empty or repeated response are left out and counted
//! (`unusable` in `meta.json`), never an error.
//!
//! Filters judge the text of a record: the text, the prompt, or, for chat and preference
//! records, every field's content joined by blank lines. A drop removes the record. A
//! rewrite applies to text and prompt records; a chat or preference record that a filter
//! rewrites is dropped (counted as "rewrite of a multi-field record"), since the rewritten
//! text cannot be mapped back onto its fields: use rewriting filters on text corpora.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hone_engine::digest::Digest;
use hone_engine::stage::{DepCx, Inputs, ParamProblem, Port, PortType, RunCx, Stage, StageError};
use hone_engine::yaml::PathSeg;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::data::builtin;
use crate::data::columnar::Columns;
use crate::data::corpus::{CorpusMeta, IngestMeta, SourceCount};
use crate::data::filters::{Chain, FilterSpec, Outcome};
use crate::data::formats::{Bad, FileKind, Format, Record, TxtSplit};
use crate::data::sources::{self, At, Input, Kind, ReadOptions};
use crate::ports::{CHAT_DATA, CORPUS, PREFERENCES, PROMPTS};

pub struct Ingest;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Files, globs (relative to the workspace) or `builtin:NAME`; one or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub source: Vec<String>,
    /// The splits read from an HF `datasets` folder with several (default `train`).
    #[serde(default, deserialize_with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<String>,
    /// The column (or JSONL field) that holds `text`: short for `columns: {text: NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_column: Option<String>,
    /// Record field → column: where `text`, `messages`, `prompt`, `completion`, `chosen`,
    /// `rejected` and `answer` come from, when not from columns of those names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, String>,
    /// Parquet and Arrow columns kept under each record's `meta`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meta_columns: Vec<String>,
    #[serde(default)]
    pub format: FormatChoice,
    #[serde(default)]
    pub txt_split: TxtSplit,
    #[serde(default)]
    pub on_error: OnError,
    /// Fraction of records that go to `val.jsonl`.
    #[serde(default = "defaults::val_fraction")]
    pub val_fraction: f64,
    /// Written beside `with:` in the pipeline (see `STAGE_KEYS`).
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatChoice {
    /// Whatever the first record is; every other record must match it.
    #[default]
    Auto,
    Text,
    #[serde(alias = "messages")]
    Chat,
    Prompt,
    Preference,
}

impl FormatChoice {
    fn fixed(self) -> Option<Format> {
        match self {
            FormatChoice::Auto => None,
            FormatChoice::Text => Some(Format::Text),
            FormatChoice::Chat => Some(Format::Chat),
            FormatChoice::Prompt => Some(Format::Prompt),
            FormatChoice::Preference => Some(Format::Preference),
        }
    }
}

/// What a malformed record does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop the stage with `file:line: what is wrong`.
    #[default]
    Fail,
    /// Skip it; skipped records are counted in the metrics and `meta.json`.
    Skip,
}

impl Params {
    /// The column mapping: `columns`, with `text_column` as its `text`; a fixed `format`
    /// reads its own fields only.
    pub fn columns_spec(&self) -> Columns {
        let mut map = self.columns.clone();
        if let Some(c) = &self.text_column {
            map.insert("text".into(), c.clone());
        }
        let only = self.format.fixed().map(crate::data::columnar::fields_of);
        Columns { map, meta: self.meta_columns.clone(), only }
    }
}

/// A string or a list of strings, kept as a list (so both spellings give the same key).
fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a path, glob or builtin:NAME, or a list of them")
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// Records per batch handed to the filters, and the text size that also ends a batch.
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 8 << 20;
/// Malformed records quoted in `meta.json` and the log when `on_error: skip`.
const SKIPPED_EXAMPLES: usize = 10;

impl Stage for Ingest {
    type Params = Params;
    const KIND: &'static str = "ingest";
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "read .txt/.jsonl (.gz, .zst), Parquet and Arrow files, HF datasets folders or builtin data into a filtered corpus with a train/val split";
    const INPUTS: Inputs = Inputs::Fixed(&[]);
    const OUTPUTS: &'static [Port] = &[Port::required("corpus", CORPUS)];
    /// The filter chain is a stage-level key, read as the `filters` param.
    const STAGE_KEYS: &'static [&'static str] = &["filters"];

    /// A corpus whose record format the params fix is typed by it, so a wrong wiring (plain
    /// text into `sft`) fails at load time; one of unknown format is a `corpus`.
    fn output_type(p: &Params, port: &Port) -> PortType {
        match known_format(p) {
            Some(Format::Chat) => CHAT_DATA,
            Some(Format::Prompt) => PROMPTS,
            Some(Format::Preference) => PREFERENCES,
            Some(Format::Text) | None => port.ty,
        }
    }

    fn narrowing_help(p: &Params, _port: &Port, want: PortType) -> Option<String> {
        let format = [
            (CHAT_DATA, Format::Chat),
            (PROMPTS, Format::Prompt),
            (PREFERENCES, Format::Preference),
        ]
        .into_iter()
        .find(|(t, _)| *t == want)?
        .1;
        (p.format == FormatChoice::Auto).then(|| {
            format!(
                "a .jsonl source's record format is known only once it is read: add `format: {}` to this ingest stage's `with:`",
                format.name()
            )
        })
    }

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.source.is_empty() {
            problems.push(
                ParamProblem::at(&["source"], "`source` is an empty list")
                    .help("name files, globs or builtin:NAME"),
            );
        }
        for (i, s) in p.source.iter().enumerate() {
            let at = |message: String| ParamProblem {
                path: vec![PathSeg::Key("source".into()), PathSeg::Index(i)],
                message,
                help: None,
            };
            if s.trim().is_empty() {
                problems.push(
                    at("a source is empty".into()).help("name a file, a glob or builtin:NAME"),
                );
            } else if let Some(name) = s.strip_prefix("builtin:") {
                if builtin::builtin_version(name).is_none() {
                    problems.push(at(builtin::unknown_message(name)));
                }
            } else if sources::is_glob(s)
                && let Err(e) = glob::Pattern::new(s)
            {
                problems.push(at(format!("invalid glob `{s}`: {e}")));
            }
        }
        if p.text_column.is_some() && p.columns.contains_key("text") {
            problems.push(
                ParamProblem::at(&["text_column"], "both `text_column` and `columns.text` are set")
                    .help("keep one of them"),
            );
        }
        let spec = p.columns_spec();
        if let (Some(only), Some(format)) = (spec.only, p.format.fixed()) {
            for field in p.columns.keys().filter(|f| !only.contains(&f.as_str())) {
                problems.push(ParamProblem::at(
                    &["columns"],
                    format!(
                        "`{field}` is not a field of the `{}` format, which reads {}",
                        format.name(),
                        only.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        for (field, message) in spec.problems() {
            let key = if p.meta_columns.contains(&field) { "meta_columns" } else { "columns" };
            problems.push(ParamProblem::at(&[key], message));
        }
        for (i, s) in p.split.iter().enumerate() {
            if s.trim().is_empty() {
                problems.push(ParamProblem {
                    path: vec![PathSeg::Key("split".into()), PathSeg::Index(i)],
                    message: "a split is empty".into(),
                    help: Some("name a split of the dataset folder, e.g. `train`".into()),
                });
            }
        }
        if !(0.0..1.0).contains(&p.val_fraction) {
            problems.push(
                ParamProblem::at(
                    &["val_fraction"],
                    format!("`val_fraction` must be in [0, 1), found {}", p.val_fraction),
                )
                .help("0.1 puts about one record in ten in val.jsonl"),
            );
        }
        for (i, f) in p.filters.iter().enumerate() {
            for (path, message) in f.problems() {
                let mut full = vec![PathSeg::Key("filters".into()), PathSeg::Index(i)];
                full.extend(path.into_iter().map(|k| PathSeg::Key(k.into())));
                problems.push(ParamProblem {
                    path: full,
                    message: format!("filter `{}`: {message}", f.name()),
                    help: None,
                });
            }
        }
        problems
    }

    fn external_deps(p: &Params, cx: &DepCx) -> Result<Vec<(String, Digest)>, StageError> {
        let mut deps = Vec::new();
        for input in
            sources::resolve(&p.source, &p.split, cx.workspace).map_err(StageError::Failed)?
        {
            match input {
                Input::File { shown, path, .. } => {
                    deps.push((format!("source {shown}"), cx.hash_path(&path)?))
                }
                Input::Builtin { name, version } => deps.push((
                    format!("source builtin:{name}"),
                    Digest::of(format!("builtin:{name} v{version}").as_bytes()),
                )),
            }
        }
        for f in &p.filters {
            deps.extend(f.external_deps(cx)?);
        }
        Ok(deps)
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        let inputs =
            sources::resolve(&p.source, &p.split, cx.workspace).map_err(StageError::Failed)?;
        let chain = Chain::new(&p.filters, cx.workspace).map_err(StageError::Failed)?;
        let columns = p.columns_spec();
        let mut job = Job::new(p, cx, chain, &inputs)?;
        let opts = ReadOptions { txt_split: p.txt_split, columns: &columns, seed: cx.seed };
        for (i, input) in inputs.iter().enumerate() {
            let progress = job.bytes_read.clone();
            sources::each_record(input, opts, progress, &mut |at, item| {
                job.take(Loc { source: i, at }, item)
            })?;
        }
        job.finish()
    }
}

/// The record format known before anything is read: the `format` param, or the one every
/// source is known to hold (a builtin's declared format; text for `.txt` files).
fn known_format(p: &Params) -> Option<Format> {
    if let Some(f) = p.format.fixed() {
        return Some(f);
    }
    let mut formats = p.source.iter().map(|s| match s.strip_prefix("builtin:") {
        Some(name) => builtin::builtin_format(name),
        None => matches!(sources::classify(Path::new(s)), Ok(Kind::Lines(FileKind::Text, _)))
            .then_some(Format::Text),
    });
    let first = formats.next()??;
    formats.all(|f| f == Some(first)).then_some(first)
}

/// Where a record came from: a source, and where in it.
#[derive(Clone, Copy)]
struct Loc {
    source: usize,
    at: At,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    /// Records read and handed to the filters.
    records: u64,
    /// Text records holding only whitespace, left out.
    empty: u64,
    /// Malformed records skipped (`on_error: skip`).
    skipped: u64,
    /// Well-formed preference pairs with nothing to learn from (an empty response, or the
    /// same response twice), always left out.
    unusable: u64,
    train: u64,
    val: u64,
}

/// One run of the stage: the state carried across sources and batches.
struct Job<'a> {
    p: &'a Params,
    cx: &'a RunCx<'a>,
    chain: Chain,
    /// The corpus format, and what decided it (for mismatch messages).
    format: Option<(Format, String)>,
    batch: Vec<(Loc, Record)>,
    batch_bytes: usize,
    train: BufWriter<File>,
    val: BufWriter<File>,
    /// Records whose line hash is below this go to validation.
    val_below: u64,
    counts: Counts,
    skipped_examples: Vec<String>,
    sources: Vec<SourceCount>,
    bytes_read: Arc<AtomicU64>,
    bytes_total: u64,
}

impl<'a> Job<'a> {
    fn new(
        p: &'a Params,
        cx: &'a RunCx<'a>,
        chain: Chain,
        inputs: &[Input],
    ) -> Result<Job<'a>, StageError> {
        let create = |name: &str| {
            let path = cx.out_dir.join(name);
            File::create(&path)
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .map_err(StageError::io(format!("cannot create `{}`", path.display())))
        };
        let bytes_total = inputs
            .iter()
            .map(|i| match i {
                Input::File { path, .. } => std::fs::metadata(path).map_or(0, |m| m.len()),
                Input::Builtin { .. } => 0,
            })
            .sum();
        Ok(Job {
            p,
            cx,
            chain,
            format: p.format.fixed().map(|f| (f, format!("`format: {}`", f.name()))),
            batch: Vec::new(),
            batch_bytes: 0,
            train: create("train.jsonl")?,
            val: create("val.jsonl")?,
            // The fraction of the 64-bit hash space below the threshold is `val_fraction`.
            val_below: (p.val_fraction * 2f64.powi(64)) as u64,
            counts: Counts::default(),
            skipped_examples: Vec::new(),
            sources: inputs.iter().map(|i| SourceCount { source: i.shown(), records: 0 }).collect(),
            bytes_read: Arc::new(AtomicU64::new(0)),
            bytes_total,
        })
    }

    fn loc(&self, l: Loc) -> String {
        l.at.show(&self.sources[l.source].source)
    }

    /// One record read (or what is wrong with it).
    fn take(&mut self, loc: Loc, item: Result<Record, Bad>) -> Result<(), StageError> {
        let record = match item {
            Ok(r) => r,
            Err(bad) if bad.unusable() => {
                self.counts.unusable += 1;
                if self.counts.unusable <= SKIPPED_EXAMPLES as u64 {
                    tracing::info!("left out {}: {}: {}", self.loc(loc), bad.reason, bad.detail);
                }
                return Ok(());
            }
            Err(bad) => return self.malformed(loc, bad.detail),
        };
        // `format: prompt` on preference data reads its prompts, whatever form gives them
        // (an implicit prompt, HH transcripts, the turns before a conversation's answer).
        let record = match (self.p.format, record) {
            (FormatChoice::Prompt, Record::Preference { prompt, meta, .. }) => {
                Record::Prompt { prompt, answer: None, meta }
            }
            (_, r) => r,
        };
        if record.is_blank() {
            self.counts.empty += 1;
            return Ok(());
        }
        match &self.format {
            Some((f, by)) if *f != record.format() => {
                let what = format!(
                    "a {} record in a {} corpus (set by {by})",
                    record.format().name(),
                    f.name()
                );
                return self.malformed(loc, what);
            }
            Some(_) => {}
            None => {
                self.format =
                    Some((record.format(), format!("the first record, at {}", self.loc(loc))))
            }
        }
        self.counts.records += 1;
        self.sources[loc.source].records += 1;
        self.batch_bytes += record.text_len();
        self.batch.push((loc, record));
        if self.batch.len() >= BATCH_RECORDS || self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn malformed(&mut self, loc: Loc, what: String) -> Result<(), StageError> {
        let at = self.loc(loc);
        match self.p.on_error {
            OnError::Fail => Err(StageError::Failed(format!(
                "{at}: {what}\n(fix the record, or set `on_error: skip` to skip malformed records and count them)"
            ))),
            OnError::Skip => {
                self.counts.skipped += 1;
                // The first few are quoted; the rest only counted, so a broken file cannot
                // flood the log.
                if self.skipped_examples.len() < SKIPPED_EXAMPLES {
                    tracing::info!("skipped {at}: {what}");
                    self.skipped_examples.push(format!("{at}: {what}"));
                } else {
                    tracing::debug!("skipped {at}: {what}");
                }
                Ok(())
            }
        }
    }

    /// Filters the batch and writes what survives.
    fn flush(&mut self) -> Result<(), StageError> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let outcomes = if self.chain.is_empty() {
            vec![Outcome::Keep; batch.len()]
        } else {
            let texts: Vec<Cow<str>> = batch.iter().map(|(_, r)| r.filter_text()).collect();
            let docs: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
            let rewritable: Vec<bool> = batch.iter().map(|(_, r)| r.rewritable()).collect();
            self.chain.apply(&docs, &rewritable).map_err(|e| {
                let on = e.doc.map(|d| format!(" on {}", self.loc(batch[d].0))).unwrap_or_default();
                StageError::Failed(format!("filter `{}` failed{on}: {}", e.filter, e.message))
            })?
        };
        for ((_, mut record), outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Drop => continue,
                Outcome::Keep => {}
                Outcome::Rewrite(text) => record.rewrite(text),
            }
            let mut line = serde_json::to_string(&record)
                .map_err(|e| StageError::msg(format!("cannot encode a record: {e}")))?;
            let h = blake3::hash(line.as_bytes());
            let to_val =
                u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")) < self.val_below;
            line.push('\n');
            let (out, count) = if to_val {
                (&mut self.val, &mut self.counts.val)
            } else {
                (&mut self.train, &mut self.counts.train)
            };
            out.write_all(line.as_bytes()).map_err(StageError::io("cannot write the corpus"))?;
            *count += 1;
        }
        self.cx.check_cancelled()?;
        let message = format!("{} records", self.counts.records);
        if self.bytes_total > 0 {
            self.cx.progress(
                self.bytes_read.load(Ordering::Relaxed).min(self.bytes_total),
                Some(self.bytes_total),
                message,
            );
        } else {
            self.cx.progress(self.counts.records, None, message);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(), StageError> {
        self.flush()?;
        for w in [&mut self.train, &mut self.val] {
            w.flush().map_err(StageError::io("cannot write the corpus"))?;
        }
        let c = &self.counts;
        let sources =
            self.sources.iter().map(|s| format!("`{}`", s.source)).collect::<Vec<_>>().join(", ");
        let Some((format, _)) = self.format.clone() else {
            return Err(StageError::Failed(format!(
                "no records in {sources} ({} empty, {} skipped as malformed)",
                c.empty, c.skipped
            )));
        };
        if c.train + c.val == 0 {
            let what: Vec<String> = self
                .chain
                .stats()
                .iter()
                .map(|s| format!("{} dropped {}", s.filter, s.dropped))
                .collect();
            return Err(StageError::Failed(format!(
                "the filters dropped all {} records ({}): loosen their thresholds or remove filters that do not suit this data",
                c.records,
                what.join(", ")
            )));
        }
        let meta = IngestMeta {
            corpus: CorpusMeta { format, train: Some(c.train), val: Some(c.val) },
            val_fraction: self.p.val_fraction,
            records: c.records,
            empty: c.empty,
            skipped: c.skipped,
            skipped_examples: self.skipped_examples.clone(),
            unusable: c.unusable,
            sources: self.sources.clone(),
            filters: self.chain.stats().to_vec(),
        };
        let mut json = serde_json::to_string_pretty(&meta)
            .map_err(|e| StageError::msg(format!("cannot encode meta.json: {e}")))?;
        json.push('\n');
        let path = self.cx.out_dir.join("meta.json");
        std::fs::write(&path, json)
            .map_err(StageError::io(format!("cannot write `{}`", path.display())))?;

        let cx = self.cx;
        cx.metric("records", c.records);
        cx.metric("train", c.train);
        cx.metric("val", c.val);
        if c.empty > 0 {
            cx.metric("empty", c.empty);
        }
        if c.unusable > 0 {
            cx.metric("unusable", c.unusable);
        }
        if c.skipped > 0 || self.p.on_error == OnError::Skip {
            cx.metric("skipped", c.skipped);
        }
        for s in self.chain.stats() {
            cx.metric(
                &format!("filter.{}", s.filter),
                serde_json::json!({ "kept": s.kept, "rewritten": s.rewritten, "dropped": s.dropped, "reasons": s.reasons }),
            );
        }
        Ok(())
    }
}

/// The params' defaults (`#[serde(default = "defaults::…")]`).
mod defaults {
    pub fn val_fraction() -> f64 {
        0.1
    }
}

#[cfg(test)]
mod columnar_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use hone_engine::events::Event;
    use hone_engine::exec::RunSummary;

    use crate::testing::support::{self, quiet, workspace};

    struct Ran {
        pipeline: hone_engine::spec::Pipeline,
        summary: RunSummary,
        events: Vec<Event>,
    }

    /// Loads and runs `yaml` in `dir`; a load error as `hone` prints it.
    fn run_pipeline(dir: &Path, yaml: &str) -> Result<Ran, String> {
        let pipeline = support::load(dir, yaml)?;
        let (summary, events) = support::run(dir, &pipeline, quiet);
        Ok(Ran { pipeline, summary, events })
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn failure(r: &Ran) -> String {
        r.summary.failed.first().map(|f| f.1.clone()).unwrap_or_default()
    }

    fn pipeline(with: &str, filters: &str) -> String {
        format!(
            "name: t\nseed: 3\nstages:\n  corpus:\n    uses: ingest\n    with: {with}\n{filters}"
        )
    }

    #[test]
    fn end_to_end_through_the_engine_and_cached_on_rerun() {
        let mut jsonl = String::new();
        for i in 0..40 {
            jsonl.push_str(&format!(
                "{{\"text\": \"Document number {i} is here.\", \"id\": {i}}}\n"
            ));
        }
        jsonl.push_str("{\"text\": \"Document number 7 is here.\"}\n"); // a duplicate
        jsonl.push_str("{\"text\": \"Too short\"}\n");
        let dir = workspace(&[
            ("data/a.jsonl", jsonl.as_bytes()),
            ("data/b.txt", b"A text block of several words.\n\nAnother block of words here.\n"),
        ]);
        let yaml = pipeline(
            "{ source: \"data/*\", val_fraction: 0.25 }",
            "    filters:\n      - builtin: dedup-exact\n      - builtin: length\n        with: { min_words: 3 }\n",
        );
        let r = run_pipeline(dir.path(), &yaml).unwrap();
        assert_eq!(r.summary.ran, vec!["corpus"], "{}", failure(&r));
        let out = support::output(dir.path(), &r.pipeline, "corpus");
        let train = lines(&out.join("train.jsonl"));
        let val = lines(&out.join("val.jsonl"));
        assert_eq!(
            train.len() + val.len(),
            42,
            "40 + 2 blocks; the duplicate and the short one dropped"
        );
        assert!(!val.is_empty() && val.len() < 21, "{}", val.len());
        assert!(
            train.iter().chain(&val).any(|r| r
                == &serde_json::json!({"text": "Document number 3 is here.", "meta": {"id": 3}}))
        );
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["format"], "text");
        assert_eq!(
            (meta["train"].as_u64(), meta["val"].as_u64()),
            (Some(train.len() as u64), Some(val.len() as u64))
        );
        assert_eq!(meta["records"], 44);
        assert_eq!(meta["filters"][0]["reasons"]["duplicate"], 1);
        assert_eq!(meta["filters"][1]["reasons"]["too-few-words"], 1);
        assert_eq!(meta["sources"][0]["source"], "data/a.jsonl");
        // The per-filter counts are metrics, which `hone run` prints.
        let metrics = support::finished_metrics(&r.events, "corpus");
        assert_eq!(metrics["filter.dedup-exact"]["dropped"], 1);
        assert_eq!(metrics["train"], train.len() as u64);

        let again = run_pipeline(dir.path(), &yaml).unwrap();
        assert_eq!(again.summary.cached, vec!["corpus"]);
        // A changed source file changes the key.
        std::fs::write(dir.path().join("data/b.txt"), "A different block of words.\n").unwrap();
        let changed = run_pipeline(dir.path(), &yaml).unwrap();
        assert_eq!(changed.summary.ran, vec!["corpus"]);
        // So does a filter's param.
        let looser = yaml.replace("min_words: 3", "min_words: 2");
        assert_eq!(run_pipeline(dir.path(), &looser).unwrap().summary.ran, vec!["corpus"]);
    }

    #[test]
    fn val_split_is_deterministic_and_order_free() {
        let docs: Vec<String> =
            (0..300).map(|i| format!("{{\"text\": \"Line {i} of the corpus.\"}}")).collect();
        let forward = docs.join("\n");
        let backward = docs.iter().rev().cloned().collect::<Vec<_>>().join("\n");
        let dir = workspace(&[("f.jsonl", forward.as_bytes()), ("b.jsonl", backward.as_bytes())]);
        let split = |file: &str, seed: u64| {
            let yaml = pipeline(&format!("{{ source: {file} }}"), "")
                .replace("seed: 3", &format!("seed: {seed}"));
            let r = run_pipeline(dir.path(), &yaml).unwrap();
            assert!(r.summary.ok(), "{}", failure(&r));
            let out = support::output(dir.path(), &r.pipeline, "corpus");
            let mut val: Vec<String> = lines(&out.join("val.jsonl"))
                .iter()
                .map(|v| v["text"].as_str().unwrap().to_string())
                .collect();
            val.sort();
            (val, std::fs::read(out.join("val.jsonl")).unwrap())
        };
        let (a, bytes_a) = split("f.jsonl", 3);
        let (b, _) = split("b.jsonl", 3);
        let (_, bytes_c) = split("f.jsonl", 4);
        assert_eq!(a, b, "the split does not depend on order");
        assert_eq!(bytes_a, bytes_c, "nor on the seed");
        assert!((15..=45).contains(&a.len()), "about 10% of 300: {}", a.len());
    }

    #[test]
    fn same_inputs_give_the_same_artifact_anywhere() {
        let files: &[(&str, &[u8])] = &[
            ("in/a.txt", b"First block here.\n\nSecond block here.\n\nFirst block here.\n"),
            ("in/b.jsonl", b"{\"text\": \"Third one, with meta.\", \"k\": [1, 2]}\n"),
        ];
        let yaml = pipeline(
            "{ source: \"in/*\", val_fraction: 0.5 }",
            "    filters:\n      - builtin: dedup-exact\n",
        );
        let artifact = |dir: &Path| {
            let r = run_pipeline(dir, &yaml).unwrap();
            assert!(r.summary.ok(), "{}", failure(&r));
            support::output_digest(dir, &r.pipeline, "corpus")
        };
        let (a, b) = (workspace(files), workspace(files));
        assert_eq!(artifact(a.path()), artifact(b.path()));
    }

    #[test]
    fn malformed_lines_fail_with_file_and_line_or_are_skipped() {
        let body = b"{\"text\": \"fine\"}\n{\"text\": 3}\nnot json\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n{\"text\": \"also fine\"}\n";
        let dir = workspace(&[("d.jsonl", body)]);
        let r = run_pipeline(dir.path(), &pipeline("{ source: d.jsonl }", "")).unwrap();
        let e = failure(&r);
        assert!(e.starts_with("d.jsonl:2: `text` must be a string, found a number"), "{e}");
        assert!(e.contains("on_error: skip"), "{e}");

        let r = run_pipeline(
            dir.path(),
            &pipeline("{ source: d.jsonl, on_error: skip, val_fraction: 0 }", ""),
        )
        .unwrap();
        assert!(r.summary.ok(), "{}", failure(&r));
        let out = support::output(dir.path(), &r.pipeline, "corpus");
        assert_eq!(lines(&out.join("train.jsonl")).len(), 2);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["skipped"], 3);
        let examples = meta["skipped_examples"].as_array().unwrap();
        assert!(
            examples[1].as_str().unwrap().starts_with("d.jsonl:3: invalid JSON"),
            "{examples:?}"
        );
        assert!(
            examples[2].as_str().unwrap().starts_with(
                "d.jsonl:4: a chat record in a text corpus (set by the first record, at d.jsonl:1)"
            ),
            "{examples:?}"
        );
    }

    #[test]
    fn explicit_format_and_compressed_sources() {
        let chat = b"{\"prompt\": \"Hi\", \"completion\": \"Hello.\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"Bye\"}, {\"role\": \"assistant\", \"content\": \"Bye!\"}]}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(chat).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&b"{\"text\": \"plain\"}\n"[..], 3).unwrap();
        let dir = workspace(&[("c.jsonl.gz", &gz), ("t.jsonl.zst", &zst)]);
        let r = run_pipeline(
            dir.path(),
            &pipeline("{ source: c.jsonl.gz, format: chat, val_fraction: 0 }", ""),
        )
        .unwrap();
        assert!(r.summary.ok(), "{}", failure(&r));
        let out = support::output(dir.path(), &r.pipeline, "corpus");
        let train = lines(&out.join("train.jsonl"));
        assert_eq!(
            train[0]["messages"][1],
            serde_json::json!({"role": "assistant", "content": "Hello."})
        );
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["format"], "chat");

        let r = run_pipeline(dir.path(), &pipeline("{ source: t.jsonl.zst, format: chat }", ""))
            .unwrap();
        assert!(
            failure(&r).starts_with(
                "t.jsonl.zst:1: a text record in a chat corpus (set by `format: chat`)"
            ),
            "{}",
            failure(&r)
        );
    }

    #[test]
    fn chat_records_are_filtered_whole_and_never_half_rewritten() {
        let body = b"{\"messages\": [{\"role\": \"user\", \"content\": \"my mail is a@b.com\"}, {\"role\": \"assistant\", \"content\": \"noted\"}]}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}, {\"role\": \"assistant\", \"content\": \"hi\"}]}\n";
        let dir = workspace(&[("c.jsonl", body)]);
        let redact = "    filters:\n      - builtin: regex\n        with: { pattern: '\\S+@\\S+', mode: redact }\n";
        let r = run_pipeline(dir.path(), &pipeline("{ source: c.jsonl, val_fraction: 0 }", redact))
            .unwrap();
        assert!(r.summary.ok(), "{}", failure(&r));
        let out = support::output(dir.path(), &r.pipeline, "corpus");
        let train = lines(&out.join("train.jsonl"));
        assert_eq!(train.len(), 1);
        assert_eq!(train[0]["messages"][0]["content"], "hello");
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["filters"][0]["reasons"][crate::data::filters::CANNOT_REWRITE], 1);
    }

    #[test]
    fn builtin_sources_use_the_pipeline_seed() {
        let dir = workspace(&[]);
        let r = run_pipeline(
            dir.path(),
            &pipeline("{ source: \"builtin:test/numbers\", val_fraction: 0 }", ""),
        )
        .unwrap();
        assert!(r.summary.ok(), "{}", failure(&r));
        let train = lines(&support::output(dir.path(), &r.pipeline, "corpus").join("train.jsonl"));
        assert_eq!(train.len(), 20);
        assert_eq!(train[2]["text"], "Number 2 of seed 3.");
    }

    #[test]
    fn load_errors_point_at_the_param() {
        let dir = workspace(&[]);
        let bad = [
            ("{ source: \"builtin:nope\" }", "", "unknown built-in data set `builtin:nope`"),
            ("{ source: a.txt, val_fraction: 1.5 }", "", "`val_fraction` must be in [0, 1)"),
            ("{ source: a.txt, formt: text }", "", "unknown field `formt`"),
            (
                "{ source: a.txt }",
                "    filters:\n      - builtin: length\n        with: { min_words: 5, max_words: 2 }\n",
                "pipeline.yaml:9",
            ),
            (
                "{ source: a.txt }",
                "    filters:\n      - builtin: gopher-qualty\n",
                "did you mean `gopher-quality`",
            ),
        ];
        for (with, filters, want) in bad {
            let e = run_pipeline(dir.path(), &pipeline(with, filters)).err().unwrap_or_default();
            assert!(e.contains(want), "{with} {filters}: want `{want}` in:\n{e}");
        }
    }

    #[test]
    fn the_output_is_typed_by_the_record_format_when_the_params_fix_it() {
        let ty = |with: &str| {
            let p: Params = serde_yaml::from_str(with).unwrap();
            Ingest::output_type(&p, &Ingest::OUTPUTS[0])
        };
        assert_eq!(ty("{ source: builtin:tinyworld/chat }"), CHAT_DATA);
        assert_eq!(ty("{ source: builtin:tinyworld/prompts }"), PROMPTS);
        assert_eq!(ty("{ source: [builtin:tinyworld/pretrain, notes.txt.gz] }"), CORPUS);
        assert_eq!(ty("{ source: data.jsonl, format: messages }"), CHAT_DATA);
        assert_eq!(ty("{ source: data.jsonl, format: preference }"), PREFERENCES);
        // Unknown until read, or mixed: a corpus, which only corpus inputs take.
        assert_eq!(ty("{ source: data.jsonl }"), CORPUS);
        assert_eq!(ty("{ source: [builtin:tinyworld/chat, builtin:tinyworld/prompts] }"), CORPUS);
        assert!(
            CORPUS.accepts(CHAT_DATA) && !CHAT_DATA.accepts(CORPUS) && !PROMPTS.accepts(CHAT_DATA)
        );
    }

    #[test]
    fn missing_sources_are_clear_errors() {
        let dir = workspace(&[("notes.csv", b"a,b")]);
        for (source, want) in [
            ("\"data/*.txt\"", "source `data/*.txt` matches no files"),
            ("missing.txt", "source `missing.txt` does not exist"),
            ("notes.csv", "unsupported file type"),
        ] {
            let r = run_pipeline(dir.path(), &pipeline(&format!("{{ source: {source} }}"), ""))
                .unwrap();
            assert!(failure(&r).contains(want), "{source}: {}", failure(&r));
        }
        let r = run_pipeline(
            dir.path(),
            &pipeline("{ source: notes.csv }", "").replace("notes.csv", "\".\""),
        )
        .unwrap();
        assert!(failure(&r).contains("is a directory"), "{}", failure(&r));
    }

    #[test]
    fn all_records_filtered_is_an_error() {
        let dir = workspace(&[("a.txt", b"one two\n\nthree four\n")]);
        let r = run_pipeline(
            dir.path(),
            &pipeline("{ source: a.txt }", "    filters:\n      - builtin: gopher-quality\n"),
        )
        .unwrap();
        assert!(
            failure(&r).contains("the filters dropped all 2 records (gopher-quality dropped 2)"),
            "{}",
            failure(&r)
        );
    }
}
