//! `rank`: order each prompt's candidate responses best to worst, by a person, a program or
//! a file; the second step of RLHF.
//!
//! ```yaml
//! rank:
//!   uses: rank
//!   inputs: { candidates: sample }           # a `sample` stage (not with `labeler: file`)
//!   with: { labeler: program }               # or: human, with { labels: labels.jsonl }
//!                                            # or: file, with { path: prefs.parquet }
//!                                            #   or inputs: { preferences: an ingest stage }
//! ```
//!
//! Labelers:
//! - `program`: tinyworld's rule labeler ([`crate::tinyworld::rank_groups`]): correct first,
//!   then complete, polite, on topic, concise, without repetition; equal scores tie.
//! - `human`: a person ranks with `hone label STAGE` ([`crate::labels`]). The answers are kept
//!   in the `labels` file (relative to the pipeline's directory), whose digest is part of the
//!   stage key. Until every prompt has an answer the stage does not run: `hone run` stops
//!   before it ("12 of 40 prompts await ranking: run `hone label rank`", exit code 5), with
//!   everything upstream cached, and goes on once the labels exist. A skipped prompt gets no
//!   ranking.
//! - `file`: rankings or preference pairs from `path` (a file, glob or HF `datasets` folder,
//!   read as `ingest` reads them: JSONL with `.gz`/`.zst`, Parquet, Arrow; `split` chooses a
//!   folder's splits), or from an `ingest` stage's preference corpus wired as the input
//!   `preferences` (both, if both are given). Every form the one reader knows
//!   ([`crate::data::preferences`]): hone's rankings, TRL's explicit or implicit prompt as
//!   strings or message lists, Anthropic HH transcripts. Records it cannot use are skipped
//!   and counted, never fatal, unless none is usable.
//!
//! **Outputs** (port `rankings`): `rankings.jsonl` ([`crate::data::rankings`]) and
//! `meta.json`: the labeler, the counts (prompts, ranked, preference pairs, skipped by
//! reason) and up to three examples of each skip reason. Metrics: `ranked`, `pairs`,
//! `skipped`.

use std::collections::BTreeMap;
use std::path::Path;

use hone_engine::digest::Digest;
use hone_engine::stage::{DepCx, Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::data::candidates::{self, Candidates};
use crate::data::columnar::Columns;
use crate::data::formats::TxtSplit;
use crate::data::preferences;
use crate::data::rankings::{self, Ranking};
use crate::data::sources::{self, Input};
use crate::labels::{self, Labels};
use crate::ports;

pub struct Rank;

/// Who ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Labeler {
    Human,
    Program,
    File,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub labeler: Labeler,
    /// `file`: the file, glob or HF `datasets` folder, relative to the pipeline's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `file`: the splits of a `datasets` folder (default `train`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<String>,
    /// `human`: the labels file, relative to the pipeline's directory (default `labels.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<String>,
}

/// The default labels file of the `human` labeler.
pub const DEFAULT_LABELS: &str = "labels.jsonl";

impl Params {
    fn labels_path(&self) -> &str {
        self.labels.as_deref().unwrap_or(DEFAULT_LABELS)
    }
}

/// Where `hone label` keeps the answers for a stage: its labels file (relative to the
/// pipeline's directory), when the stage is a `rank` stage with `labeler: human`.
pub fn human_labels(kind: &str, canonical: &Value) -> Result<String, String> {
    if kind != Rank::KIND {
        return Err(format!(
            "it is a `{kind}` stage; `hone label` ranks the candidates of a `rank` stage with `labeler: human`"
        ));
    }
    let p: Params = serde_json::from_value(canonical.clone()).map_err(|e| e.to_string())?;
    if p.labeler != Labeler::Human {
        return Err(format!(
            "its labeler is `{}`; `hone label` is for `labeler: human`",
            serde_json::to_value(p.labeler).expect("plain enum").as_str().unwrap_or("?")
        ));
    }
    Ok(p.labels_path().to_string())
}

impl Stage for Rank {
    type Params = Params;
    const KIND: &'static str = "rank";
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "rank each prompt's candidate responses: by a person (hone label), tinyworld's rules, or preference data";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::optional("candidates", ports::CANDIDATES),
        Port::optional("preferences", ports::PREFERENCES),
    ]);
    const OUTPUTS: &'static [Port] = &[Port::required("rankings", ports::RANKINGS)];

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        if p.labeler == Labeler::File && p.path.as_deref().is_some_and(|s| s.trim().is_empty()) {
            out.push(
                ParamProblem::at(&["path"], "`path` is empty")
                    .help("name the preference file, e.g. `path: data/preferences.jsonl`"),
            );
        }
        if p.labeler != Labeler::File {
            if p.path.is_some() {
                out.push(ParamProblem::at(&["path"], "`path` is for `labeler: file`"));
            }
            if !p.split.is_empty() {
                out.push(ParamProblem::at(&["split"], "`split` is for `labeler: file`"));
            }
        }
        if p.labeler != Labeler::Human && p.labels.is_some() {
            out.push(ParamProblem::at(&["labels"], "`labels` is for `labeler: human`"));
        }
        out
    }

    fn external_deps(p: &Params, cx: &DepCx) -> Result<Vec<(String, Digest)>, StageError> {
        Ok(match p.labeler {
            Labeler::Program => Vec::new(),
            Labeler::File => {
                let mut deps = Vec::new();
                for input in file_inputs(p, cx.workspace)? {
                    if let Input::File { shown, path, .. } = input {
                        deps.push((format!("file `{shown}`"), cx.hash_path(&path)?));
                    }
                }
                deps
            }
            Labeler::Human => {
                let path = p.labels_path();
                if cx.workspace.join(path).exists() {
                    vec![(format!("labels `{path}`"), cx.hash_path(Path::new(path))?)]
                } else {
                    vec![(format!("labels `{path}` (none yet)"), Digest::of(b""))]
                }
            }
        })
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        if p.labeler != Labeler::File && cx.input("preferences").is_some() {
            return Err(StageError::msg(
                "input `preferences` is for `labeler: file`: remove it, or set `labeler: file`",
            ));
        }
        let cands = match (p.labeler, cx.input("candidates")) {
            (Labeler::File, Some(_)) => {
                return Err(StageError::msg(
                    "`labeler: file` reads `path` or the input `preferences`, not candidates: remove `inputs: { candidates: ... }` or choose another labeler",
                ));
            }
            (Labeler::File, None) => None,
            (_, None) => {
                return Err(StageError::msg(
                    "input `candidates` is not wired: give the `sample` stage whose responses to rank, e.g. `inputs: { candidates: sample }`",
                ));
            }
            (_, Some(dir)) => Some(
                candidates::read_dir(dir)
                    .map_err(|e| StageError::msg(format!("input `candidates`: {e}")))?,
            ),
        };
        let out = match p.labeler {
            Labeler::Program => by_program(cands.as_deref().expect("wired")),
            Labeler::Human => by_person(p, cx, cands.as_deref().expect("wired"))?,
            Labeler::File => from_file(p, cx)?,
        };
        write(p, cx, out)
    }
}

/// What a labeler produced.
struct Outcome {
    prompts: usize,
    rankings: Vec<Ranking>,
    /// (reason, example) of every prompt or line left out.
    skipped: Vec<(String, String)>,
    extra: serde_json::Map<String, Value>,
}

fn by_program(cands: &[Candidates]) -> Outcome {
    let mut all_tied = 0;
    let rankings = cands
        .iter()
        .map(|c| {
            let groups = crate::tinyworld::rank_groups(
                &c.prompt.display(),
                c.answer.as_deref(),
                &c.responses,
            );
            all_tied += usize::from(groups.len() < 2);
            Ranking { prompt: c.prompt.clone(), responses: c.responses.clone(), ranking: groups }
        })
        .collect();
    let mut extra = serde_json::Map::new();
    extra.insert("all_tied".into(), all_tied.into());
    Outcome { prompts: cands.len(), rankings, skipped: Vec::new(), extra }
}

fn by_person(p: &Params, cx: &RunCx, cands: &[Candidates]) -> Result<Outcome, StageError> {
    let rel = p.labels_path();
    let labels =
        Labels::load(&cx.workspace.join(rel)).map_err(|e| StageError::msg(e.to_string()))?;
    let waiting = cands.iter().filter(|c| labels.get(&labels::key(c)).is_none()).count();
    if waiting > 0 {
        return Err(StageError::AwaitingInput(format!(
            "{waiting} of {} prompts await ranking: run `hone label {}`",
            cands.len(),
            cx.stage_id
        )));
    }
    let mut rankings = Vec::new();
    let mut skipped = Vec::new();
    for c in cands {
        let l = labels.get(&labels::key(c)).expect("all answered");
        match &l.ranking {
            None => skipped
                .push(("skipped by the labeler".to_string(), c.prompt.display().into_owned())),
            Some(groups) => {
                let r = Ranking {
                    prompt: c.prompt.clone(),
                    responses: c.responses.clone(),
                    ranking: groups.clone(),
                };
                r.check().map_err(|e| StageError::msg(format!("labels `{rel}`: the answer for {:?} does not fit its {} responses: {e}\n   = help: delete that line and run `hone label {}` again", c.prompt, c.responses.len(), cx.stage_id)))?;
                rankings.push(r);
            }
        }
    }
    let mut extra = serde_json::Map::new();
    extra.insert("labels".into(), rel.into());
    Ok(Outcome { prompts: cands.len(), rankings, skipped, extra })
}

/// The files `path` names (none without `path`).
fn file_inputs(p: &Params, workspace: &Path) -> Result<Vec<Input>, StageError> {
    match p.path.as_deref() {
        Some(path) => sources::resolve(&[path.to_string()], &p.split, workspace)
            .map_err(|e| StageError::Failed(format!("`path`: {e}"))),
        None => Ok(Vec::new()),
    }
}

fn from_file(p: &Params, cx: &RunCx) -> Result<Outcome, StageError> {
    let wired = cx.input("preferences");
    if p.path.is_none() && wired.is_none() {
        return Err(StageError::msg(
            "`labeler: file` needs preference data: set `path` (a file, glob or HF datasets folder), or wire an `ingest` stage as `inputs: { preferences: STAGE }`",
        ));
    }
    let inputs = file_inputs(p, cx.workspace)?;
    let columns = Columns::default();
    let opts =
        sources::ReadOptions { txt_split: TxtSplit::BlankLine, columns: &columns, seed: cx.seed };
    let mut read = preferences::read(&inputs, opts)?;
    let mut named: Vec<String> = inputs.iter().map(|i| format!("`{}`", i.shown())).collect();
    if let Some(dir) = wired {
        read.add_corpus(dir, "preferences")?;
        named.push("input `preferences`".to_string());
    }
    let named = named.join(", ");
    let records = read.rankings.len() + read.skipped.len();
    if read.rankings.is_empty() {
        let mut why: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &read.skipped {
            *why.entry(s.reason).or_default() += 1;
        }
        let first = read
            .skipped
            .first()
            .map(|s| format!("; {}: {}: {}", s.at, s.reason, s.detail))
            .unwrap_or_default();
        return Err(StageError::msg(format!(
            "{named}: no usable ranking or preference pair ({records} records: {why:?}{first})\n   = help: records are {{\"prompt\", \"chosen\", \"rejected\"}} (strings or message lists), {{\"chosen\", \"rejected\"}} (implicit prompt or Anthropic HH transcripts) or {{\"prompt\", \"responses\", \"ranking\"}}"
        )));
    }
    for s in &read.skipped {
        tracing::info!("{}: skipped ({}): {}", s.at, s.reason, s.detail);
    }
    let skipped = read
        .skipped
        .iter()
        .map(|s| (s.reason.to_string(), format!("{}: {}", s.at, s.detail)))
        .collect();
    let mut extra = serde_json::Map::new();
    if let Some(path) = &p.path {
        extra.insert("path".into(), path.as_str().into());
    }
    extra.insert("forms".into(), json!(read.forms));
    Ok(Outcome { prompts: records, rankings: read.rankings, skipped, extra })
}

fn write(p: &Params, cx: &RunCx, o: Outcome) -> Result<(), StageError> {
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let mut examples: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (reason, example) in &o.skipped {
        *reasons.entry(reason).or_default() += 1;
        let ex = examples.entry(reason).or_default();
        if ex.len() < 3 {
            ex.push(example);
        }
    }
    let pairs: usize = o.rankings.iter().map(|r| r.pairs().len()).sum();
    let mut meta = json!({
        "labeler": p.labeler,
        "prompts": o.prompts,
        "ranked": o.rankings.len(),
        "pairs": pairs,
        "skipped": o.skipped.len(),
        "skipped_reasons": reasons,
        "skipped_examples": examples,
    });
    meta.as_object_mut().expect("an object").extend(o.extra);
    let mut buf = Vec::new();
    rankings::write(&mut buf, &o.rankings).map_err(StageError::io("cannot encode the rankings"))?;
    std::fs::write(cx.out_dir.join(rankings::FILE), buf)
        .map_err(StageError::io(format!("cannot write `{}`", rankings::FILE)))?;
    std::fs::write(
        cx.out_dir.join("meta.json"),
        serde_json::to_string_pretty(&meta).expect("plain data") + "\n",
    )
    .map_err(StageError::io("cannot write `meta.json`"))?;
    cx.metric("ranked", o.rankings.len() as u64);
    cx.metric("pairs", pairs as u64);
    cx.metric("skipped", o.skipped.len() as u64);
    if !o.skipped.is_empty() {
        tracing::warn!(
            "{} of {} left out: {reasons:?} (see meta.json)",
            o.skipped.len(),
            o.prompts
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::support::{self, quiet};
    use hone_engine::spec;

    /// A workspace whose `cands` stage copies `cands.jsonl` in as a candidates artifact.
    struct Ws {
        dir: tempfile::TempDir,
    }

    impl Ws {
        fn new(cands: &[Candidates]) -> Ws {
            let dir = tempfile::tempdir().unwrap();
            let text: String = cands.iter().map(candidates::to_line).collect();
            std::fs::write(dir.path().join("cands.jsonl"), text).unwrap();
            Ws { dir }
        }
        fn path(&self) -> &Path {
            self.dir.path()
        }
        fn pipeline(&self, with: &str) -> Result<spec::Pipeline, String> {
            let yaml = format!(
                "name: t\nstages:\n  cands: {{ uses: command, with: {{ cmd: \"cp cands.jsonl $HONE_OUT/candidates.jsonl\", deps: [cands.jsonl] }} }}\n  rank: {{ uses: rank, inputs: {{ candidates: cands }}, with: {with} }}\n"
            );
            spec::load_str(&self.path().join("pipeline.yaml"), yaml, &crate::registry(), &[])
                .map_err(|e| e.to_string())
        }
        fn run(&self, with: &str) -> hone_engine::exec::RunSummary {
            support::run(self.path(), &self.pipeline(with).unwrap(), quiet).0
        }
        fn output(&self, with: &str) -> (Vec<Ranking>, Value) {
            let out = support::output(self.path(), &self.pipeline(with).unwrap(), "rank");
            let meta =
                serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap())
                    .unwrap();
            (rankings::read_dir(&out).unwrap(), meta)
        }
    }

    fn cand(prompt: &str, answer: Option<&str>, responses: &[&str]) -> Candidates {
        let k = responses.len();
        Candidates {
            prompt: prompt.into(),
            answer: answer.map(String::from),
            responses: responses.iter().map(|s| s.to_string()).collect(),
            tokens: vec![4; k],
            logprobs: vec![-2.0; k],
            finished: vec![true; k],
        }
    }

    fn two() -> Vec<Candidates> {
        vec![
            cand(
                "What is 2 plus 2?",
                Some("4"),
                &["2 plus 2 is 5.", "2 plus 2 is 4.", "2 plus 2 is 4.", "4"],
            ),
            cand("Hello!", None, &["Hello! How can I help you today?", "Whatever."]),
        ]
    }

    #[test]
    fn the_program_labeler_ranks_with_tinyworlds_rules_and_ties_equal_answers() {
        let ws = Ws::new(&two());
        let s = ws.run("{ labeler: program }");
        assert!(s.ok(), "{s:?}");
        let (r, meta) = ws.output("{ labeler: program }");
        assert_eq!(r[0].ranking, vec![vec![1, 2], vec![3], vec![0]]);
        assert_eq!(r[1].ranking, vec![vec![0], vec![1]]);
        assert_eq!(r[0].responses, two()[0].responses);
        // 2 + 2 + 1 pairs from the first prompt (the tie gives none), 1 from the second.
        assert_eq!(meta["pairs"], 6);
        assert_eq!(
            (meta["labeler"].as_str(), meta["ranked"].as_u64(), meta["skipped"].as_u64()),
            (Some("program"), Some(2), Some(0))
        );
    }

    /// `hone run` stops before a human `rank` (upstream cached), goes on once every prompt has
    /// an answer, never asks again, and a changed label reruns `rank` alone.
    #[test]
    fn the_human_labeler_waits_for_labels_then_uses_them() {
        let c = two();
        let ws = Ws::new(&c);
        let with = "{ labeler: human, labels: my/labels.jsonl }";
        let s = ws.run(with);
        assert_eq!(s.ran, ["cands"]);
        assert_eq!(
            s.awaiting,
            [(
                "rank".to_string(),
                "2 of 2 prompts await ranking: run `hone label rank`".to_string()
            )]
        );
        assert!(!s.ok() && s.failed.is_empty());
        let path = ws.path().join("my/labels.jsonl");
        let mut labels = Labels::load(&path).unwrap();
        let label = |c: &Candidates, ranking: Option<Vec<Vec<usize>>>| labels::Label {
            key: labels::key(c),
            prompt: c.prompt.display().into_owned(),
            skip: ranking.is_none(),
            ranking,
        };
        labels.push(label(&c[0], Some(vec![vec![1, 2], vec![3], vec![0]]))).unwrap();
        let s = ws.run(with);
        assert_eq!(
            (s.cached.as_slice(), s.awaiting[0].1.as_str()),
            (&["cands".to_string()][..], "1 of 2 prompts await ranking: run `hone label rank`")
        );
        labels.push(label(&c[1], None)).unwrap();
        let s = ws.run(with);
        assert_eq!(
            (s.ran.as_slice(), s.cached.as_slice()),
            (&["rank".to_string()][..], &["cands".to_string()][..]),
            "{s:?}"
        );
        let (r, meta) = ws.output(with);
        assert_eq!(r.len(), 1, "the skipped prompt has no line");
        assert_eq!(r[0].ranking, vec![vec![1, 2], vec![3], vec![0]]);
        assert_eq!(meta["skipped_reasons"]["skipped by the labeler"], 1);
        assert_eq!(ws.run(with).cached.len(), 2, "a rerun asks nothing and runs nothing");
        // One label changed: `rank` reruns, `cands` stays cached.
        labels.push(label(&c[0], Some(vec![vec![3], vec![1, 2], vec![0]]))).unwrap();
        let s = ws.run(with);
        assert_eq!(
            (s.ran.as_slice(), s.cached.as_slice()),
            (&["rank".to_string()][..], &["cands".to_string()][..])
        );
        assert_eq!(ws.output(with).0[0].ranking, vec![vec![3], vec![1, 2], vec![0]]);
        // A label that does not fit its candidates (edited by hand) is an error naming it.
        let mut lines: Vec<String> =
            std::fs::read_to_string(&path).unwrap().lines().map(String::from).collect();
        lines[1] = lines[1].replace("[[3],[1,2],[0]]", "[[3],[1,2]]");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let s = ws.run(with);
        assert!(
            s.failed[0].1.contains("does not fit its 4 responses")
                && s.failed[0].1.contains("leaves out response 0"),
            "{s:?}"
        );
    }

    #[test]
    fn the_file_labeler_reads_pairs_and_counts_what_it_skips() {
        let ws = Ws::new(&[]);
        let prefs = [
            r#"{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}"#,
            r#"{"prompt": "Hi", "chosen": "Hello!", "rejected": "Hello!"}"#,
            r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}"#,
            "not json",
        ];
        std::fs::write(ws.path().join("prefs.jsonl"), prefs.join("\n")).unwrap();
        let yaml = "name: t\nstages:\n  rank: { uses: rank, with: { labeler: file, path: prefs.jsonl } }\n";
        let p =
            spec::load_str(&ws.path().join("pipeline.yaml"), yaml.into(), &crate::registry(), &[])
                .unwrap();
        let (s, _) = support::run(ws.path(), &p, quiet);
        assert!(s.ok(), "{s:?}");
        let out = support::output(ws.path(), &p, "rank");
        let r = rankings::read_dir(&out).unwrap();
        assert_eq!(r, vec![Ranking::preference("Hi", "Hello!", "Go away."); 2]);
        let meta: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["skipped_reasons"], json!({ "identical responses": 1, "not JSON": 1 }));
        assert!(
            meta["skipped_examples"]["not JSON"][0]
                .as_str()
                .unwrap()
                .starts_with("prefs.jsonl:4: "),
            "{meta}"
        );
        assert_eq!(meta["forms"], json!({ "pairs": 2 }));
        // Nothing usable: a failure that says why.
        std::fs::write(ws.path().join("prefs.jsonl"), "{\"text\": \"x\"}\n").unwrap();
        let (s, _) = support::run(ws.path(), &p, quiet);
        assert!(
            s.failed[0].1.contains("no usable ranking or preference pair")
                && s.failed[0].1.contains("prefs.jsonl:1: not a ranking"),
            "{s:?}"
        );
    }

    /// Wiring that leaves the labeler nothing to read, or preference data it does not read,
    /// fails the stage saying how to wire it.
    #[test]
    fn the_file_labeler_without_data_and_preferences_for_another_labeler_are_errors() {
        let ws = Ws::new(&two());
        let run = |yaml: &str| {
            let p = spec::load_str(
                &ws.path().join("pipeline.yaml"),
                yaml.into(),
                &crate::registry(),
                &[],
            )
            .unwrap();
            support::run(ws.path(), &p, quiet).0
        };
        let s = run("name: t\nstages:\n  rank: { uses: rank, with: { labeler: file } }\n");
        assert!(
            s.failed[0].1.contains("`labeler: file` needs preference data: set `path`"),
            "{s:?}"
        );
        std::fs::write(
            ws.path().join("prefs.jsonl"),
            r#"{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}"#,
        )
        .unwrap();
        let s = run(
            "name: t\nstages:\n  prefs: { uses: ingest, with: { source: prefs.jsonl, format: preference, val_fraction: 0 } }\n  cands: { uses: command, with: { cmd: \"cp cands.jsonl $HONE_OUT/candidates.jsonl\", deps: [cands.jsonl] } }\n  rank: { uses: rank, inputs: { candidates: cands, preferences: prefs }, with: { labeler: program } }\n",
        );
        assert!(s.failed[0].1.contains("input `preferences` is for `labeler: file`"), "{s:?}");
    }

    #[test]
    fn params_that_do_not_fit_the_labeler_are_load_errors() {
        let ws = Ws::new(&[]);
        for (with, want) in [
            ("{ labeler: file, path: '' }", "`path` is empty"),
            ("{ labeler: program, labels: l.jsonl }", "`labels` is for `labeler: human`"),
            ("{ labeler: human, path: x.jsonl }", "`path` is for `labeler: file`"),
            ("{ labeler: robot }", "unknown variant `robot`"),
        ] {
            let err = ws.pipeline(with).map(|_| ()).unwrap_err();
            assert!(err.contains(want), "{with}: {err}");
        }
        assert_eq!(human_labels("rank", &json!({ "labeler": "human" })).unwrap(), DEFAULT_LABELS);
        assert!(
            human_labels("rank", &json!({ "labeler": "program" }))
                .unwrap_err()
                .contains("`labeler: human`")
        );
        assert!(human_labels("sample", &json!({})).unwrap_err().contains("a `sample` stage"));
    }
}
