//! `pipelines/from-a-model.yaml` ("start from a model you have") end to end through the
//! `hone` binary, on the tiny random models transformers wrote into `pipelines/models/`: a
//! Llama with its own chat template goes through SFT, sampling, ranking, the reward model,
//! PPO and evaluation, keeping its template and its bytes; a GPT-2 folder without a template
//! gets hone's ChatML; a changed folder is a new import; broken folders are explained.

use std::path::{Path, PathBuf};

use crate::support::Ws;

/// Tiny sizes, as `-s` overrides.
const TINY: &[&str] = &[
    "vars.threads=1",
    "stages.sft.with.steps=4",
    "stages.sft.with.eval_every=2",
    "stages.sft.with.eval_records=8",
    "stages.sample.with.limit=16",
    "stages.reward.with.steps=4",
    "stages.ppo.with.rollouts=8",
    "stages.ppo.with.steps=8",
    "stages.eval.with.limit=8",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn models() -> PathBuf {
    repo().join("pipelines/models")
}

const PIPELINE: &str = "pipelines/from-a-model.yaml";

fn hone(ws: &Ws, cmd: &[&str], extra: &[&str]) -> crate::support::Out {
    ws.pipeline(cmd, PIPELINE, &[TINY, extra])
}

/// A stage's output directory and metrics.
fn show(ws: &Ws, stage: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let v = ws.show(PIPELINE, stage, &[TINY, extra]);
    (PathBuf::from(v["output"].as_str().expect("an output path")), v["metrics"].clone())
}

fn template(dir: &Path) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    v["chat_template"].as_str().unwrap().to_string()
}

/// Copies a model folder into the workspace.
fn copy_model(ws: &Ws, name: &str) -> PathBuf {
    let to = ws.path().join(name);
    std::fs::create_dir_all(&to).unwrap();
    for f in std::fs::read_dir(models().join(name)).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
    to
}

#[test]
fn a_llama_folder_goes_through_the_recipe_keeping_its_template_and_bytes() {
    let ws = Ws::new();
    let out = hone(&ws, &["run"], &[]).ok();
    let mut ran = out.ran();
    ran.sort();
    assert_eq!(
        ran,
        ["base", "chat", "eval", "ppo", "prompts", "rank", "reward", "rl_prompts", "sample", "sft"]
    );
    let src = models().join("tiny-llama");
    let (base, m) = show(&ws, "base", &[]);
    assert_eq!(m["own_template"], 1);
    assert_eq!(m["added_tokens"], 0);
    // An f32 checkpoint is imported byte for byte, its config kept.
    for f in ["model.safetensors", "config.json"] {
        assert_eq!(
            std::fs::read(base.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    // SFT, PPO and the reward model keep the model's own template (SmolLM2's, no space
    // before the content, a default system message), not hone's ChatML.
    for stage in ["sft", "ppo", "reward"] {
        let (dir, _) = show(&ws, stage, &[]);
        assert_eq!(template(&dir), template(&src), "{stage}");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["model_type"], "llama", "{stage}");
    }
    let (_, sft) = show(&ws, "sft", &[]);
    assert!(sft["train_rows"].as_u64().unwrap() > 100, "{sft}");
    let (_, eval) = show(&ws, "eval", &[]);
    for model in ["base", "sft", "ppo"] {
        assert!(eval[format!("{model}.accuracy")].is_number(), "{eval}");
    }
    // Unchanged: everything from the cache.
    let again = hone(&ws, &["run"], &[]).ok();
    assert!(again.ran().is_empty(), "{:?}", again.ran());
    // Gradient checkpointing: a new key, the same training up to the last bits of the LM
    // head's row-blocked sums.
    let gc = "stages.sft.with.gradient_checkpointing=true";
    hone(&ws, &["run", "--until", "sft"], &[gc]).ok();
    let (with, m_with) = show(&ws, "sft", &[gc]);
    let (without, m_without) = show(&ws, "sft", &[]);
    assert_ne!(with, without);
    for key in ["loss", "val_loss"] {
        let (a, b) = (m_with[key].as_f64().unwrap(), m_without[key].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * b.abs(), "{key}: {a} with, {b} without");
    }
}

#[test]
fn a_gpt2_folder_gets_chatml_and_a_changed_folder_is_a_new_import() {
    let ws = Ws::new();
    let dir = copy_model(&ws, "tiny-gpt2");
    let var = format!("vars.model={}", dir.display());
    hone(&ws, &["run", "--until", "sft"], &[&var]).ok();
    let (base, m) = show(&ws, "base", &[&var]);
    assert_eq!((m["own_template"].clone(), m["added_tokens"].clone()), (0.into(), 2.into()));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    let src: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["vocab_size"],
        src["vocab_size"].as_u64().unwrap() + 2,
        "grown for the two chat tokens"
    );
    assert_eq!(cfg["activation_function"], src["activation_function"]);
    assert!(template(&base).contains("<|im_start|>"));
    // A changed file of the folder changes the key: the import runs again.
    let g = dir.join("generation_config.json");
    let text = std::fs::read_to_string(&g).unwrap();
    std::fs::write(&g, text.replace("\n}", ",\n  \"max_length\": 100\n}")).unwrap();
    let plan = hone(&ws, &["plan", "--until", "sft", "--json"], &[&var]).ok();
    let base_line =
        plan.plan().into_iter().find(|(id, _, _)| id == "base").expect("base in the plan");
    assert_eq!(base_line.1, "run", "{:?}", plan.stdout);
    assert!(base_line.2.iter().any(|r| r.contains("generation_config.json")), "{base_line:?}");
}

#[test]
fn broken_folders_are_explained() {
    let ws = Ws::new();
    let dir = copy_model(&ws, "tiny-llama");
    let var = format!("vars.model={}", dir.display());
    let run = |what: &str| hone(&ws, &["run", "--until", "base"], &[&var]).code(1).stderr_has(what);
    // No tokenizer config.
    std::fs::rename(dir.join("tokenizer_config.json"), dir.join("x")).unwrap();
    run("no `tokenizer_config.json`").stderr_has("save_pretrained");
    std::fs::rename(dir.join("x"), dir.join("tokenizer_config.json")).unwrap();
    // An architecture hone does not run.
    let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), cfg_text.replace("\"llama\"", "\"mamba\"")).unwrap();
    run("`model_type`").stderr_has("mamba").stderr_has("config.json");
    std::fs::write(dir.join("config.json"), cfg_text.replace("\"silu\"", "\"gelu\"")).unwrap();
    run("`hidden_act`");
    std::fs::write(dir.join("config.json"), &cfg_text).unwrap();
    // Sharded, with a shard missing.
    std::fs::rename(dir.join("model.safetensors"), dir.join("model-00001-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({
        "metadata": {},
        "weight_map": {
            "model.norm.weight": "model-00001-of-00002.safetensors",
            "model.embed_tokens.weight": "model-00002-of-00002.safetensors"
        }
    });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    run("model-00002-of-00002.safetensors").stderr_has("incomplete");
    std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
    std::fs::rename(dir.join("model-00001-of-00002.safetensors"), dir.join("model.safetensors"))
        .unwrap();
    // A tokenizer with more tokens than the model has rows.
    let tok_path = dir.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
    let vocab: serde_json::Value = serde_json::from_str(&cfg_text).unwrap();
    tok["added_tokens"].as_array_mut().unwrap().push(serde_json::json!({
        "id": vocab["vocab_size"], "content": "<|extra|>", "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true
    }));
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    run("tokenizer.json").stderr_has("do not belong together");
    // An empty path, and not a folder at all.
    hone(&ws, &["run", "--until", "base"], &["vars.model=\"\""])
        .code(3)
        .stderr_has("`path` is empty");
    hone(&ws, &["run", "--until", "base"], &["vars.model=nowhere"])
        .code(1)
        .stderr_has("is not a folder");
}

/// `pretrain` with `arch: llama` trains a Llama from scratch (grouped heads, an untied head),
/// and every kind after it runs on it with hone's ChatML: sft, sample, rank, reward, ppo,
/// dpo, grpo, evaluate.
#[test]
fn a_llama_trained_from_scratch_runs_every_kind() {
    let ws = Ws::new();
    ws.write(
        "pipeline.yaml",
        r#"name: llama-from-scratch
seed: 7
stages:
  corpus: { uses: ingest, with: { source: builtin:tinyworld/pretrain } }
  tokenizer: { uses: tokenizer, inputs: { corpus: corpus }, with: { vocab_size: 300 } }
  base:
    uses: pretrain
    inputs: { tokenizer: tokenizer }
    with: { arch: llama, n_layer: 2, n_head: 4, n_kv_head: 2, n_embd: 32, tie_embeddings: false, rope_theta: 500000, block_size: 64, batch_size: 4, steps: 6, eval_every: 3, eval_iters: 2, threads: 1 }
  chat: { uses: ingest, with: { source: builtin:tinyworld/chat } }
  sft: { uses: sft, inputs: { model: base, data: chat }, with: { steps: 4, batch_size: 4, eval_every: 2, eval_records: 8, threads: 1 } }
  prompts: { uses: ingest, with: { source: builtin:tinyworld/prompts } }
  rl_prompts: { uses: ingest, with: { source: builtin:tinyworld/rl-prompts } }
  sample: { uses: sample, inputs: { model: sft, prompts: rl_prompts }, with: { k: 4, max_new_tokens: 8, limit: 16 } }
  rank: { uses: rank, inputs: { candidates: sample }, with: { labeler: program } }
  reward: { uses: reward, inputs: { model: sft, rankings: rank }, with: { steps: 4, batch_size: 4, likelihood: 5, threads: 1 } }
  ppo: { uses: ppo, inputs: { model: sft, reward: reward, prompts: rl_prompts }, with: { rollouts: 8, batch_size: 4, steps: 8, max_new_tokens: 8, threads: 1 } }
  dpo: { uses: dpo, inputs: { model: sft, rankings: rank }, with: { steps: 4, batch_size: 4, threads: 1 } }
  grpo: { uses: grpo, inputs: { model: sft, prompts: rl_prompts }, with: { reward_program: check_answer, num_generations: 4, rollouts: 8, batch_size: 4, steps: 8, max_new_tokens: 8, threads: 1 } }
  eval:
    uses: evaluate
    inputs: { models: [base, sft, ppo, dpo, grpo], prompts: prompts, shots: chat, reward: reward, reference: sft }
    with: { names: [base, sft, ppo, dpo, grpo], max_new_tokens: 8, limit: 8, threads: 1 }
"#,
    );
    let out = ws.hone(&["run", "pipeline.yaml"]).ok();
    assert_eq!(out.ran().len(), 14, "{:?}", out.ran());
    let show = |stage: &str| -> PathBuf {
        let o = ws.hone(&["show", stage, "pipeline.yaml", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        PathBuf::from(v["output"].as_str().unwrap())
    };
    for (stage, arch) in [
        ("base", "LlamaForCausalLM"),
        ("sft", "LlamaForCausalLM"),
        ("ppo", "LlamaForCausalLM"),
        ("reward", "LlamaForSequenceClassification"),
    ] {
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(show(stage).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["architectures"][0], arch, "{stage}");
        assert_eq!(cfg["num_key_value_heads"], 2, "{stage}");
        assert_eq!(cfg["tie_word_embeddings"], false, "{stage}");
        assert_eq!(cfg["rope_parameters"]["rope_theta"], 500000.0, "{stage}");
    }
    // hone chat answers with it.
    ws.hone(&["chat", "--pipeline", "pipeline.yaml", "--stage", "sft", "-p", "Hi", "-n", "4"]).ok();
}
