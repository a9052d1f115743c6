//! Ranking by a person: `hone run` stops before a `rank` stage with `labeler: human` (exit 5),
//! `hone label` asks in a terminal (driven here through a pseudo-terminal made by `script`),
//! every answer survives a quit or a kill, and the run goes on once all are answered.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Out, Ws, hone_bin, ids};

fn candidates(prompt: &str, responses: &[&str]) -> String {
    let k = responses.len();
    let v = serde_json::json!({ "prompt": prompt, "responses": responses, "tokens": vec![3; k], "logprobs": vec![-1.5; k], "finished": vec![true; k] });
    format!("{v}\n")
}

fn workspace() -> Ws {
    let ws = Ws::new();
    let cands = [
        candidates("What is 2 plus 2?", &["2 plus 2 is 4.", "5", "I do not know."]),
        candidates("Hello!", &["Hello! How can I help?", "Go away."]),
        candidates("What colour is the sky?", &["Green.", "The sky is blue.", "Blue."]),
    ]
    .concat();
    ws.write("cands.jsonl", &cands).write(
        "pipeline.yaml",
        "name: l\nstages:\n  cands: { uses: command, with: { cmd: \"cp cands.jsonl $HONE_OUT/candidates.jsonl\", deps: [cands.jsonl] } }\n  rank: { uses: rank, inputs: { candidates: cands }, with: { labeler: human } }\n  after: { uses: command, inputs: { r: rank }, with: { cmd: \"wc -l < $HONE_IN_r/rankings.jsonl > $HONE_OUT/n\" } }\n",
    );
    ws
}

/// `hone label rank` in a pseudo-terminal (`script`), with `typed` as the person's keys.
fn label_in_a_terminal(ws: &Ws, typed: &str) -> Out {
    let mut child = Command::new("script")
        .args(["-qfec", &format!("{} label rank", hone_bin()), "/dev/null"])
        .current_dir(ws.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs a command in a pseudo-terminal");
    child.stdin.take().unwrap().write_all(typed.as_bytes()).unwrap();
    Out::from(child.wait_with_output().unwrap())
}

fn labels(ws: &Ws) -> Vec<serde_json::Value> {
    std::fs::read_to_string(ws.path().join("labels.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn run_waits_for_labels_that_survive_quit_and_kill() {
    let ws = workspace();
    // The run stops before `rank` with its own exit code; `cands` is kept.
    let out =
        ws.hone(&["run"]).code(5).stderr_has("3 of 3 prompts await ranking: run `hone label rank`");
    assert_eq!(out.ran(), ids(&["cands"]));
    assert!(
        out.stderr.contains("skipped after: input stage `rank` awaits input"),
        "{}",
        out.stderr
    );

    // A terminal session: help, a mistake, one answer, then quit.
    let out = label_in_a_terminal(&ws, "h\n1 4\n1 3 2\nq\n").code(0);
    for shown in [
        "[1/3] What is 2 plus 2?",
        "2. 5",
        "Tie equally good ones",
        "there is no response 4",
        "[2/3] Hello!",
        "Saved 1/3 answers",
    ] {
        assert!(out.stdout.contains(shown), "the terminal lacks {shown:?}:\n{}", out.stdout);
    }
    assert_eq!(labels(&ws).len(), 1);
    assert_eq!(labels(&ws)[0]["ranking"], serde_json::json!([[0], [2], [1]]));

    // Killed half-way: the answer given before the kill is on disk.
    let mut child = Command::new(hone_bin())
        .args(["label", "rank"])
        .current_dir(ws.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"1 2\n").unwrap();
    stdin.flush().unwrap();
    let start = Instant::now();
    while labels(&ws).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "the second answer was never saved");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(labels(&ws).len(), 2);

    // Still one prompt left: the run still waits, and says so.
    ws.hone(&["run"]).code(5).stderr_has("1 of 3 prompts await ranking");

    // Resumed at the third prompt; ties; the session ends when all are answered.
    let out = label_in_a_terminal(&ws, "2=3 1\n").code(0);
    assert!(
        out.stdout.contains("[3/3] What colour is the sky?") && !out.stdout.contains("[1/3]"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("All 3 prompts are answered"), "{}", out.stdout);
    assert_eq!(labels(&ws)[2]["ranking"], serde_json::json!([[1, 2], [0]]));

    // The run goes on; a rerun asks nothing and runs nothing.
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.ran(), ids(&["after", "rank"]));
    assert_eq!(ws.hone(&["run"]).ok().cached(), ids(&["after", "cands", "rank"]));
    // Changing one label reruns `rank` and what follows it, not `cands`.
    let out = label_in_a_terminal(&ws, "").code(0);
    assert!(out.stdout.contains("All 3 prompts are answered"), "{}", out.stdout);
    let text = std::fs::read_to_string(ws.path().join("labels.jsonl"))
        .unwrap()
        .replace("[[1,2],[0]]", "[[0],[1,2]]");
    std::fs::write(ws.path().join("labels.jsonl"), text).unwrap();
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.ran(), ids(&["after", "rank"]), "{}", out.stderr);
    assert_eq!(out.cached(), ids(&["cands"]));
}

#[test]
fn label_refuses_stages_it_cannot_label() {
    let ws = workspace();
    ws.hone(&["label", "cands"])
        .code(4)
        .stderr_has("cannot label stage `cands`: it is a `command` stage");
    ws.hone(&["label", "rnak"]).code(4).stderr_has("did you mean `rank`?");
    // The candidates must exist first.
    ws.hone(&["label", "rank"])
        .code(4)
        .stderr_has("stage `cands` has no up-to-date output")
        .stderr_has("hone run --until cands");
}
