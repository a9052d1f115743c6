//! The report of a pipeline run through the engine: stage states (ran, cached, failed,
//! skipped, out of date, never ran) and every section, from `command` stages that write the
//! files real stages write. (tests/cli/smoke.rs renders the smoke pipeline's real outputs, and
//! loads the page in Chromium.)

use std::path::Path;

use hone_engine::spec;
use hone_engine::workspace::Workspace;

use super::*;
use crate::testing::support::{quiet, run};

const PIPELINE: &str = r#"
name: report-test
seed: 3
stages:
  data:
    uses: command
    with: { cmd: "cp files/meta.json $HONE_OUT/", deps: [files/meta.json] }
  train:
    uses: command
    inputs: { data: data }
    with: { cmd: "cp files/metrics.jsonl $HONE_OUT/", deps: [files/metrics.jsonl] }
  eval:
    uses: command
    inputs: { model: train }
    with: { cmd: "cp files/report.json files/answers.jsonl $HONE_OUT/", deps: [files/report.json, files/answers.jsonl] }
  broken:
    uses: command
    inputs: { data: data }
    with: { cmd: "echo 'no <such> & thing' >&2; exit 3" }
  after:
    uses: command
    inputs: { x: broken }
    with: { cmd: "true" }
"#;

const META: &str = r#"{"format": "text", "train": 90, "val": 8, "val_fraction": 0.1, "records": 120, "empty": 2, "skipped": 0,
  "skipped_examples": [], "sources": [{"source": "builtin:tinyworld/pretrain", "records": 120}],
  "filters": [{"filter": "wasm:min-words", "kept": 100, "rewritten": 0, "dropped": 20, "reasons": {"too-few-words": 20}},
              {"filter": "dedup-exact", "kept": 98, "rewritten": 0, "dropped": 2, "reasons": {"duplicate": 2}}]}"#;

const METRICS: &str = "{\"step\":1,\"loss\":4.0,\"lr\":0.001,\"grad_norm\":2.0}\n{\"step\":2,\"loss\":3.0,\"lr\":0.002,\"grad_norm\":1.0}\n{\"step\":2,\"val_loss\":3.5}\n{\"step\":3,\"loss\":2.0,\"lr\":0.001,\"grad_norm\":0.5}\n";

const REPORT: &str = r#"{"prompts": 3, "max_new_tokens": 16, "temperature": 0.0, "models": [
  {"name": "base", "format": "plain", "shots": 1, "fewer_shots": 0, "prompts": 3, "graded": 2, "correct": 0, "accuracy": 0.0, "mean_length": 5.5},
  {"name": "sft", "format": "chat", "shots": 0, "fewer_shots": 0, "prompts": 3, "graded": 2, "correct": 1, "accuracy": 0.5, "mean_length": 4.0}],
  "few_shot_examples": [{"question": "What is 1 plus 1?", "answer": "2."}]}"#;

const ANSWERS: &str = r#"{"model":"base","prompt":"What is 2 plus 2?","answer":"4","response":"2 plus <b>","correct":false}
{"model":"base","prompt":"Hello!","answer":null,"response":"Hello & bye","correct":null}
{"model":"base","prompt":"What colour is the sky?","answer":"blue","response":"red","correct":false}
{"model":"sft","prompt":"What is 2 plus 2?","answer":"4","response":"2 plus 2 is 4.","correct":true}
{"model":"sft","prompt":"Hello!","answer":null,"response":"Hello! How can I help?","correct":null}
{"model":"sft","prompt":"What colour is the sky?","answer":"blue","response":"The sky is green.","correct":false}
"#;

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    for (name, text) in [
        ("meta.json", META),
        ("metrics.jsonl", METRICS),
        ("report.json", REPORT),
        ("answers.jsonl", ANSWERS),
    ] {
        std::fs::write(files.join(name), text).unwrap();
    }
    dir
}

fn load(dir: &Path, yaml: &str, overrides: &[String]) -> spec::Pipeline {
    spec::load_str(&dir.join("pipeline.yaml"), yaml.to_string(), &crate::registry(), overrides)
        .unwrap()
}

fn states(r: &Report) -> Vec<(&str, State)> {
    r.stages.iter().map(|s| (s.id.as_str(), s.state)).collect()
}

/// Tags open and close in order, attributes are quoted, `&` starts an entity: what an XML
/// parser (Chromium's, in tests/cli/smoke.rs) needs.
fn assert_well_formed(page: &str) {
    let body = page.strip_prefix("<!DOCTYPE html>\n").expect("doctype first");
    let mut open: Vec<&str> = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(['<', '&']) {
        let at = &rest[i..];
        if let Some(after) = at.strip_prefix('&') {
            let end = at.find(';').expect("entity ends with ;");
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&&at[..=end]),
                "bad entity {}",
                &at[..end.min(12)]
            );
            rest = after;
            continue;
        }
        let end = at.find('>').expect("tag ends");
        let tag = &at[1..end];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop(), Some(name), "closing </{name}> out of order");
        } else if !tag.ends_with('/') {
            open.push(tag.split([' ', '\n']).next().unwrap());
        }
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
        rest = &at[end + 1..];
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
}

#[test]
fn states_follow_the_last_run_and_the_current_params() {
    let dir = workspace();
    let ws = Workspace::open(dir.path()).unwrap();
    let p = load(dir.path(), PIPELINE, &[]);
    let before = gather(&ws, &p).unwrap();
    assert!(
        before.stages.iter().all(|s| s.state == State::NeverRan && s.output.is_none()),
        "{:?}",
        states(&before)
    );
    assert!(before.curves.is_empty() && before.data.is_empty() && before.evals.is_empty());

    run(dir.path(), &p, quiet);
    let r = gather(&ws, &p).unwrap();
    use State::*;
    assert_eq!(
        states(&r),
        [("data", Ran), ("train", Ran), ("eval", Ran), ("broken", Failed), ("after", Skipped)]
    );
    let broken = &r.stages[3];
    assert!(broken.error.as_deref().unwrap().contains("no <such> & thing"), "{:?}", broken.error);
    assert!(broken.log.as_ref().is_some_and(|l| l.exists()));
    assert!(r.stages[4].error.as_deref().unwrap().contains("`broken`"), "{:?}", r.stages[4].error);
    assert_eq!(r.stages[2].inputs, ["train"]);
    assert!(
        r.stages[..3]
            .iter()
            .all(|s| s.key.is_some() && s.artifact.is_some() && s.seconds.is_some())
    );

    run(dir.path(), &p, quiet);
    assert_eq!(
        states(&gather(&ws, &p).unwrap())[..3],
        [("data", Cached), ("train", Cached), ("eval", Cached)]
    );

    // A changed param: the stage and what reads it are out of date; a new stage never ran.
    let changed = load(
        dir.path(),
        &format!("{PIPELINE}  extra:\n    uses: command\n    with: {{ cmd: \"true\" }}\n"),
        &["stages.train.with.cmd=cp files/metrics.jsonl $HONE_OUT/ && true".to_string()],
    );
    let r = gather(&ws, &changed).unwrap();
    assert_eq!(
        states(&r),
        [
            ("data", Cached),
            ("train", OutOfDate),
            ("eval", OutOfDate),
            ("broken", Failed),
            ("after", Skipped),
            ("extra", NeverRan)
        ]
    );
    assert!(
        r.stages[1].reasons.iter().any(|x| x.contains("param `cmd` changed")),
        "{:?}",
        r.stages[1].reasons
    );
    assert_eq!(r.curves.len(), 0, "no curves from an out-of-date stage");
    assert_eq!(r.data.len(), 1);
}

#[test]
fn the_page_shows_every_section_escaped_and_well_formed() {
    let dir = workspace();
    let ws = Workspace::open(dir.path()).unwrap();
    let p = load(dir.path(), PIPELINE, &[]);
    run(dir.path(), &p, quiet);
    let r = gather(&ws, &p).unwrap();

    // Curves: loss with val_loss, lr, grad_norm.
    assert_eq!(r.curves.len(), 1);
    let titles: Vec<&str> = r.curves[0].charts.iter().map(|c| c.title.as_str()).collect();
    assert_eq!(titles, ["loss", "lr", "grad_norm"]);
    // Data: the counts and filters of meta.json.
    let d = &r.data[0];
    assert_eq!((d.records, d.train, d.val, d.empty), (120, 90, 8, 2));
    assert_eq!(d.filters[0].reasons, [("too-few-words".to_string(), 20)]);
    // Evaluation: one row per model; every prompt with both models' answers.
    let e = &r.evals[0];
    assert_eq!(
        e.columns,
        [
            "name",
            "format",
            "accuracy",
            "correct",
            "graded",
            "prompts",
            "mean_length",
            "fewer_shots",
            "shots"
        ]
    );
    assert_eq!(
        e.settings.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["prompts", "max_new_tokens", "temperature"]
    );
    assert_eq!(e.rows.len(), 2);
    assert_eq!(e.samples.len(), 3);
    assert_eq!(e.samples[0].responses.len(), 2);
    assert_eq!(
        e.samples.last().unwrap().prompt,
        "Hello!".into(),
        "the ungraded prompt comes after the graded ones"
    );

    let page = render(&r);
    assert_well_formed(&page);
    for needle in [
        "<h1>report-test</h1>",
        "<section id=\"stages\">",
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"dag\"",
        "<tr id=\"stage-broken\">",
        "no &lt;such&gt; &amp; thing",
        "<td>plain</td>",
        "50.0%",
        "<th>answer accuracy</th>",
        "<code>wasm:min-words</code>",
        "too-few-words 20",
        "2 plus &lt;b&gt;",
        "Hello &amp; bye",
        "expected answer: 4",
    ] {
        assert!(page.contains(needle), "page lacks {needle:?}");
    }
    assert_eq!(
        page.matches("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\"").count(),
        3
    );
    assert_eq!(page.matches("class=\"node ").count(), 5);
    for stage in ["data", "train", "eval"] {
        assert!(page.contains(&format!("<title>{stage} (command): ran</title>")), "{stage}");
    }
    assert!(
        page.contains("<title>broken (command): failed</title>")
            && page.contains("<title>after (command): skipped</title>")
    );
    // Self-contained: no scripts, nothing fetched.
    for banned in ["<script", "src=", "http://", "https://", "@import", "url(http"] {
        let allowed = page.matches("xmlns=\"http://www.w3.org/").count();
        let n = page.matches(banned).count();
        assert!(n == 0 || (banned == "http://" && n == allowed), "page has {banned:?}");
    }

    // Written where default_path says, atomically, and the same again for the same store.
    let path = write(&ws, &p, None).unwrap();
    assert_eq!(path, default_path(&ws, "report-test"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), page);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
}

#[test]
fn the_well_formedness_check_catches_broken_markup() {
    for bad in [
        "<!DOCTYPE html>\n<p><b>x</p></b>",
        "<!DOCTYPE html>\n<p>a & b</p>",
        "<!DOCTYPE html>\n<p class=\"x>y</p>",
        "<!DOCTYPE html>\n<div>",
    ] {
        assert!(std::panic::catch_unwind(|| assert_well_formed(bad)).is_err(), "{bad}");
    }
}
