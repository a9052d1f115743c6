//! `hone score` on a tiny reward model: pretrain → reward (on rankings from a file), then the
//! reward and σ(r) of an answer, as text and JSON, from a stage or a directory; and its errors.

use crate::support::Ws;

fn workspace() -> Ws {
    let ws = Ws::new();
    let mut notes = String::new();
    for i in 0..30 {
        notes.push_str(&format!("note {i}: hi hello! name? i am bob. sky? blue.\n\n"));
    }
    // Answers with "!" are better.
    let rankings: String = (0..12)
        .map(|i| format!("{{\"prompt\": \"q{i}?\", \"responses\": [\"no\", \"yes!\", \"hm\"], \"ranking\": [[1], [0, 2]]}}\n"))
        .collect();
    ws.write("notes.txt", &notes).write("rankings.jsonl", &rankings);
    ws.write(
        "pipeline.yaml",
        r#"
name: tiny
seed: 5
stages:
  corpus: { uses: ingest, with: { source: notes.txt, val_fraction: 0.2 } }
  tokenizer: { uses: tokenizer, inputs: { corpus: corpus }, with: { kind: char } }
  base:
    uses: pretrain
    inputs: { tokenizer: tokenizer }
    with: { n_layer: 1, n_head: 2, n_embd: 16, block_size: 48, batch_size: 4, steps: 5, eval_every: 0, eval_iters: 1, threads: 1 }
  rank: { uses: command, with: { cmd: 'cp rankings.jsonl "$HONE_OUT"/', deps: [rankings.jsonl] } }
  reward:
    uses: reward
    inputs: { model: base, rankings: rank }
    with: { batch_size: 4, steps: 10, lr: 3e-3, eval_every: 0, val_fraction: 0.25, threads: 1 }
"#,
    );
    ws
}

#[test]
fn score_prints_the_reward_and_its_sigmoid_and_explains_bad_uses() {
    let ws = workspace();
    ws.hone(&["score", "--stage", "reward", "-p", "hi", "-a", "yes!"])
        .code(4)
        .stderr_has("run `hone run --until reward` first");
    ws.hone(&["run"]).ok();
    let json =
        ws.hone(&["score", "--stage", "reward", "-p", "hi", "-a", "yes!", "--json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let (r, s) = (v["reward"].as_f64().unwrap(), v["score"].as_f64().unwrap());
    assert!((s - 1.0 / (1.0 + (-r).exp())).abs() < 1e-12 && s > 0.0 && s < 1.0, "{json}");
    let text = ws.hone(&["score", "--stage", "reward", "-p", "hi", "-a", "yes!"]).ok().stdout;
    assert_eq!(text, format!("reward {r:.4}  σ(r) {s:.4}\n"));
    // Another answer, another score; a model directory scores as the stage does.
    let other =
        ws.hone(&["score", "--stage", "reward", "-p", "hi", "-a", "no", "--json"]).ok().stdout;
    assert_ne!(other, json);
    ws.hone(&["export", "reward", "rm"]).ok();
    assert_eq!(ws.hone(&["score", "rm", "-p", "hi", "-a", "yes!", "--json"]).ok().stdout, json);
    // Errors: a language model, an empty answer, an unknown stage, a missing directory.
    ws.hone(&["score", "--stage", "base", "-p", "hi", "-a", "yes!"])
        .code(1)
        .stderr_has("not a reward model")
        .stderr_has("GPT2LMHeadModel");
    ws.hone(&["score", "--stage", "reward", "-p", "hi", "-a", "  "])
        .code(2)
        .stderr_has("the answer is empty");
    ws.hone(&["score", "--stage", "reward", "-p", "hi", "-a", &"x".repeat(60)])
        .code(2)
        .stderr_has("more than the reward model's 48");
    ws.hone(&["score", "--stage", "nope", "-p", "hi", "-a", "yes!"])
        .code(4)
        .stderr_has("no stage `nope`");
    ws.hone(&["score", "nowhere", "-p", "hi", "-a", "yes!"])
        .code(1)
        .stderr_has("not a model directory");
    ws.hone(&["score", "--stage", "reward", "-p", "hi"]).code(2).stderr_has("--answer");
}
