//! The recipe's first stage through the CLI: ingest → tokenizer → pretrain, then `hone
//! generate` and `hone export` on the model.

use crate::support::{Ws, ids};

fn tiny_lm(ws: &Ws) {
    let text: String = (0..200)
        .map(|i| format!("{{\"text\": \"the cat sat on the mat number {i}.\"}}\n"))
        .collect();
    ws.write("docs.jsonl", &text);
    ws.write(
        "pipeline.yaml",
        "seed: 7\nstages:\n  corpus: { uses: ingest, with: { source: docs.jsonl } }\n  tok: { uses: tokenizer, inputs: { corpus: corpus }, with: { kind: char } }\n  base:\n    uses: pretrain\n    inputs: { tokenizer: tok }\n    with: { n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, batch_size: 4, steps: 30, eval_every: 15, eval_iters: 2, warmup_steps: 5, lr: 0.01, threads: 1 }\n",
    );
}

#[test]
fn pretrain_then_generate_reproducibly_and_export() {
    let ws = Ws::new();
    tiny_lm(&ws);
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.ran(), ids(&["base", "corpus", "tok"]));
    let sample = |seed: &str| {
        ws.hone(&[
            "generate", "--stage", "base", "-p", "the cat", "-n", "20", "--seed", seed, "-t", "1.0",
        ])
        .ok()
        .stdout
    };
    let a = sample("1");
    assert!(a.starts_with("the cat") && a.len() > "the cat".len(), "{a}");
    assert_eq!(a, sample("1"), "same seed, same text");
    ws.hone(&["export", "base", "model"]).ok();
    for f in ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json"] {
        assert!(ws.path().join("model").join(f).exists(), "missing {f}");
    }
    // A model directory works as well as a stage id.
    assert_eq!(
        ws.hone(&["generate", "model", "-p", "the cat", "-n", "20", "--seed", "1", "-t", "1.0"])
            .ok()
            .stdout,
        a
    );
    assert_eq!(ws.hone(&["run"]).ok().cached(), ids(&["base", "corpus", "tok"]));
}

#[test]
fn generate_needs_an_up_to_date_model() {
    let ws = Ws::new();
    tiny_lm(&ws);
    ws.hone(&["generate", "--stage", "base", "-p", "x"])
        .code(4)
        .stderr_has("run `hone run --until base` first");
    ws.hone(&["generate", "nowhere", "-p", "x"]).code(1);
}
