//! `hone chat` and the `sft` → `evaluate` chain on a tiny character-level pipeline.

use crate::support::Ws;

const QA: [(&str, &str); 4] =
    [("hi", "hello!"), ("name?", "i am bob."), ("2+2?", "4."), ("sky?", "blue.")];

/// Text to pretrain on (numbered so that the split puts some in validation), the
/// conversations to fine-tune on, and prompts to evaluate with.
fn workspace() -> Ws {
    let ws = Ws::new();
    let mut notes = String::new();
    for i in 0..30 {
        notes.push_str(&format!("note {i}: hi hello! name? i am bob. 2+2? 4. sky? blue.\n\n"));
    }
    let chat: String = QA.iter().map(|(q, a)| format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"{q}\"}}, {{\"role\": \"assistant\", \"content\": \"{a}\"}}]}}\n")).collect();
    ws.write("notes.txt", &notes).write("chat.jsonl", &chat).write(
        "prompts.jsonl",
        "{\"prompt\": \"2+2?\", \"answer\": \"4\"}\n{\"prompt\": \"hi\"}\n",
    );
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
    with: { n_layer: 2, n_head: 2, n_embd: 32, block_size: 48, batch_size: 4, steps: 20, eval_every: 0, eval_iters: 1, threads: 1 }
  chat: { uses: ingest, with: { source: chat.jsonl, format: chat, val_fraction: 0.0 } }
  sft:
    uses: sft
    inputs: { model: base, data: chat }
    with: { batch_size: 4, steps: 150, lr: 1e-2, min_lr: 1e-3, warmup_steps: 5, eval_every: 0, threads: 1 }
  prompts: { uses: ingest, with: { source: prompts.jsonl, format: prompt, val_fraction: 0.0 } }
  eval:
    uses: evaluate
    inputs: { models: [base, sft], prompts: prompts, shots: chat }
    with: { names: [base, sft], max_new_tokens: 12, few_shot: 2, threads: 1 }
"#,
    );
    ws
}

#[test]
fn chat_prompt_answers_with_the_fine_tuned_reply_and_evaluate_compares_models() {
    let ws = workspace();
    ws.hone(&["run"]).ok();
    for (q, a) in QA {
        let out = ws.hone(&["chat", "--stage", "sft", "--prompt", q, "--temperature", "0"]).ok();
        assert_eq!(out.stdout, format!("{a}\n"), "reply to {q:?}");
    }
    // The comparison table has both models; the SFT model gets the one graded prompt right.
    let eval = ws.hone(&["show", "eval", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&eval.stdout).unwrap();
    let report = std::fs::read_to_string(
        std::path::Path::new(v["output"].as_str().unwrap()).join("report.md"),
    )
    .unwrap();
    assert!(report.contains("| sft | chat | 100.0% | 1 / 1 |"), "{report}");
    // The base model is graded 2-shot on the two training conversations that are not graded prompts.
    assert!(report.contains("| base | plain, 2-shot |"), "{report}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(v["output"].as_str().unwrap()).join("report.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut questions: Vec<&str> = json["few_shot_examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["question"].as_str().unwrap())
        .collect();
    questions.sort();
    assert_eq!(questions, ["name?", "sky?"], "{json}");
    // Interactive: commands and replies streamed to stdout.
    let mut child = ws
        .cmd(&["chat", "--stage", "sft", "-t", "0"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"hi\n/reset\nsky?\n/nope\n/system be brief\n/quit\n",
    )
    .unwrap();
    let out = crate::support::Out::from(child.wait_with_output().unwrap()).ok();
    let replies: Vec<&str> = out.stdout.lines().filter_map(|l| l.strip_prefix("> ")).collect();
    assert_eq!(
        replies,
        [
            "hello!",
            "(conversation reset)",
            "blue.",
            "(unknown command /nope: use /system TEXT, /reset or /quit)",
            "(system message set; conversation reset)",
            ""
        ],
        "{}",
        out.stdout
    );
    // Sampling flags go through the same overrides as `hone generate`, checked the same way.
    let short = ws
        .hone(&["chat", "--stage", "sft", "--prompt", "name?", "-t", "0", "--max-tokens", "2"])
        .ok();
    // Two tokens: the template's space before the reply (not printed), then "i".
    assert_eq!(short.stdout, "i\n");
    for cmd in ["chat", "generate"] {
        ws.hone(&[cmd, "--stage", "sft", "--prompt", "hi", "--top-p", "0"])
            .code(2)
            .stderr_has("top_p must be in (0, 1], not 0");
    }
    // A base model is not a chat model.
    ws.hone(&["chat", "--stage", "base", "--prompt", "hi"]).code(1).stderr_has("not a chat model");
}
