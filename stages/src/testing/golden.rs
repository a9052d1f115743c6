//! Golden digests: every stage kind runs once on a tiny input, and its output's digest is
//! pinned together with the kind's `VERSION`. A change that alters a kind's output without
//! bumping its `VERSION` (which would serve stale cache entries) fails here; so does a
//! registered kind without a line. The policy: `docs/kind-versions.md`.
//!
//! Adding a kind is one line in [`GOLDEN`]: its stage (inputs from the stages above it), its
//! `VERSION`, and the digest (run the test: the failure prints it).

use crate::testing::support::{self, quiet};
use hone_engine::spec;

/// `(stage YAML, kind VERSION when pinned, output digest)`, in dependency order. The inputs
/// are the files [`workspace`] writes.
const GOLDEN: &[(&str, u32, &str)] = &[
    (
        "words: { uses: command, with: { cmd: 'printf \"%s\\n\" one two > $HONE_OUT/w.txt' } }",
        1,
        "48a8abc707a8f8b6ad77b49ebe782915f8805199512054c0fcc30edfe3ecadaa",
    ),
    (
        "corpus: { uses: ingest, with: { source: notes.txt, val_fraction: 0.2 }, filters: [{ builtin: dedup-exact }] }",
        2,
        "60e065225f7bff4249bf00b92748f3542856c1a4612a07efe5bbdb2aaec5f0bb",
    ),
    (
        "tok: { uses: tokenizer, inputs: { corpus: corpus }, with: { kind: char } }",
        1,
        "b23cb9c99301e66845120ab42dfa05acfe1d2dee98a3b0b340e7bb3bd12633e4",
    ),
    (
        "base: { uses: pretrain, inputs: { tokenizer: tok }, with: { n_layer: 1, n_head: 2, n_embd: 16, block_size: 32, batch_size: 2, steps: 4, eval_every: 0, eval_iters: 1, threads: 1 } }",
        2,
        "c91adb97d8082d30a3977622cd3b082307b011e649f60c1decd05f88755b1cb6",
    ),
    (
        "chat: { uses: ingest, with: { source: chat.jsonl, format: chat, val_fraction: 0.0 } }",
        2,
        "b5e84ef8a6fd9e5eda209809974d147846f2468ddc080de3625cc250da7602ac",
    ),
    (
        "sft: { uses: sft, inputs: { model: base, data: chat }, with: { batch_size: 2, steps: 4, eval_every: 0, threads: 1 } }",
        3,
        "339b6a25b8d96cfbee8dd1cf4776e6767144936b6fad05b16a520ffbaaa31e72",
    ),
    (
        "prompts: { uses: ingest, with: { source: prompts.jsonl, format: prompt, val_fraction: 0.0 } }",
        2,
        "b1cdeb285843f2b928a54586d6e7289face013d1d8a5e9e442f4bb3337ddfbdb",
    ),
    (
        "ranked: { uses: command, with: { cmd: 'cp rankings.jsonl $HONE_OUT/', deps: [rankings.jsonl] } }",
        1,
        "18bbbd93608b4692111216a7c308d9fd904eb043926b9f02ce56af4e8db75b4e",
    ),
    (
        "reward: { uses: reward, inputs: { model: sft, rankings: ranked }, with: { batch_size: 2, steps: 2, eval_every: 0, likelihood: 1, threads: 1 } }",
        4,
        "304b1c49d549d2a19505bbbca7f58a0663a7e1e0e528a6a02ec62d99141a4bb7",
    ),
    (
        "dpo: { uses: dpo, inputs: { model: sft, rankings: ranked }, with: { batch_size: 2, steps: 2, eval_every: 0, threads: 1 } }",
        4,
        "c2dfcdf17e66e796514a3b2a0db9ba109ee98fccf4d7add86b8a8f54c3f21059",
    ),
    (
        "grpo: { uses: grpo, inputs: { model: sft, prompts: prompts }, with: { reward_contains: o, num_generations: 2, rollouts: 2, batch_size: 2, steps: 2, max_new_tokens: 4, beta: 0.1, eval_every: 0, threads: 1 } }",
        2,
        "e91b406351ed5e52b5e61cce8f8de9be07899417f957f8344b9f7827eb82977a",
    ),
    (
        "cands: { uses: sample, inputs: { model: sft, prompts: prompts }, with: { k: 2, max_new_tokens: 4, split: all, threads: 1 } }",
        3,
        "3e3fa10c13307a08c9dcd7835d78ee185f932a568494b16f53a87e53d30a2467",
    ),
    (
        "ranks: { uses: rank, inputs: { candidates: cands }, with: { labeler: program } }",
        2,
        "b2a8be637d0103a08f59ef8df4b1130dc1ac4d6f454925e93c44ea37e2c533ef",
    ),
    (
        "eval: { uses: evaluate, inputs: { models: [base, sft], prompts: prompts, shots: chat }, with: { few_shot: 0, max_new_tokens: 4, threads: 1 } }",
        5,
        "380908d5995e2d68b5cb4fe438516a697b1218ec61b727f469dcc6d3cddf560a",
    ),
    (
        "ppo: { uses: ppo, inputs: { model: sft, reward: reward, prompts: prompts }, with: { rollouts: 2, batch_size: 2, epochs: 1, steps: 2, max_new_tokens: 4, eval_prompts: 0, eval_every: 0, threads: 1 } }",
        5,
        "fa65583b160a122b2bf4bdec1ac73c58d9af181b157a20c563332d02112a3325",
    ),
    (
        "imported: { uses: import, with: { path: tiny-llama } }",
        1,
        "2039c5e4c1cdff85d36153b803845c75fc223e92af11e518ce1b8cb6b2fd1d3b",
    ),
    (
        "eval_rm: { uses: evaluate, inputs: { models: [sft, ppo], prompts: prompts, reward: reward }, with: { max_new_tokens: 4, threads: 1 } }",
        5,
        "285e3965b7f9365593cba801670ac81a413812ab94751e45eb3574a3176fdf6d",
    ),
];

/// The tiny inputs.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let notes: String =
        (0..20).map(|i| format!("note {i}: hi hello! name? i am bob.\n\n")).collect();
    let chat = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello!\"}]}\n";
    let rankings: String = ["hi", "name?", "sky?"].iter().map(|p| format!("{{\"prompt\": \"{p}\", \"responses\": [\"hello!\", \"no\", \"i am bob.\"], \"ranking\": [[0], [2], [1]]}}\n")).collect();
    for (name, text) in [
        ("notes.txt", notes.as_str()),
        ("chat.jsonl", chat),
        ("prompts.jsonl", "{\"prompt\": \"hi\", \"answer\": \"hello!\"}\n"),
        ("rankings.jsonl", rankings.as_str()),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    // A HuggingFace folder transformers wrote (pipelines/models/make.py).
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/models/tiny-llama");
    std::fs::create_dir(dir.path().join("tiny-llama")).unwrap();
    for f in std::fs::read_dir(model).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("tiny-llama").join(f.file_name().unwrap())).unwrap();
    }
    dir
}

#[test]
fn every_kind_has_a_golden_digest_that_changes_only_with_its_version() {
    let yaml: String = GOLDEN.iter().map(|(stage, _, _)| format!("  {stage}\n")).collect();
    let dir = workspace();
    let p = spec::load_str(
        &dir.path().join("golden.yaml"),
        format!("name: golden\nseed: 3\nstages:\n{yaml}"),
        &crate::registry(),
        &[],
    )
    .unwrap();
    let (summary, _) = support::run(dir.path(), &p, quiet);
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);

    let mut problems = Vec::new();
    for (stage, version, digest) in GOLDEN {
        let id = stage.split(':').next().expect("a stage line starts with its id");
        let s = &p.stages[p.index_of(id).expect("the stage is in the pipeline")];
        let got = support::output_digest(dir.path(), &p, &s.id);
        let kind = s.kind.kind();
        if s.kind.version() != *version {
            problems.push(format!(
                "`{kind}` is at VERSION {} now: pin its new digest: ({}, \"{got}\")",
                s.kind.version(),
                s.kind.version()
            ));
        } else if got != *digest {
            problems.push(format!(
                "`{kind}` (stage `{}`) now gives {got}, but VERSION {version} gave {digest:?}: if the change is meant to change outputs, bump `{kind}`'s VERSION (it invalidates cached results) and pin the new digest; if not, it is a bug",
                s.id
            ));
        }
    }
    for k in crate::registry().kinds() {
        if !p.stages.iter().any(|s| s.kind.kind() == k.kind()) {
            problems
                .push(format!("stage kind `{}` has no line in golden::GOLDEN: add one", k.kind()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
