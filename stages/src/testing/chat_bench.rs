//! A workspace for the policy-gradient kinds' tests (`ppo`, `grpo`): a tiny untrained
//! character-level chat model, prompt records, and pipelines that wire them to the kind.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Tensor};
use hone_engine::events::Event;
use hone_engine::exec::RunSummary;
use hone_engine::spec;

use crate::model::chat_template::{ChatTokenizer, test_tokenizer};
use crate::model::export::{self};
use crate::testing::support;

/// A workspace with a tiny untrained chat model in `sft/` and prompt records in `prompts/`,
/// copied in by `command` stages.
pub struct Bench {
    pub dir: tempfile::TempDir,
    /// The kind under test: the stage `kind` of the pipelines.
    kind: &'static str,
}

const ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz .?";

impl Bench {
    pub fn new(kind: &'static str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let (json, vocab) = test_tokenizer(ALPHABET);
        let sft = dir.path().join("sft");
        std::fs::write(dir.path().join("tokenizer.json"), &json).unwrap();
        let tok = ChatTokenizer::from_file(&dir.path().join("tokenizer.json"), vocab).unwrap();
        let cfg = support::save_tiny_gpt(&sft, vocab, 32, Some(tok.im_end));
        crate::model::chat_template::write_tokenizer(
            &sft,
            &dir.path().join("tokenizer.json"),
            cfg.block_size,
        )
        .unwrap();
        let prompts = dir.path().join("prompts");
        std::fs::create_dir_all(&prompts).unwrap();
        let lines = |qs: &[&str]| {
            qs.iter()
                .map(|q| format!("{}\n", serde_json::json!({ "prompt": q })))
                .collect::<String>()
        };
        std::fs::write(
            prompts.join("train.jsonl"),
            lines(&["hi", "who?", "why?", "sky", "sea", "cat", "dog", "ok"]),
        )
        .unwrap();
        std::fs::write(prompts.join("val.jsonl"), lines(&["yes", "no"])).unwrap();
        std::fs::write(prompts.join("meta.json"), r#"{"format": "prompt"}"#).unwrap();
        Bench { dir, kind }
    }

    pub fn pipeline(&self, with: &str) -> spec::Pipeline {
        let src = format!(
            "name: t\nseed: 7\nstages:\n  sft: {{ uses: command, with: {{ cmd: 'cp sft/* \"$HONE_OUT\"/', deps: [sft] }} }}\n  prompts: {{ uses: command, with: {{ cmd: 'cp prompts/* \"$HONE_OUT\"/', deps: [prompts] }} }}\n  {k}:\n    uses: {k}\n    inputs: {{ model: sft, prompts: prompts }}\n    with: {{ threads: 1, {with} }}\n",
            k = self.kind
        );
        spec::load_str(&self.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A reward model in `rm/`: the SFT model's backbone, the score head `score(n_embd)`,
    /// the likelihood term at `likelihood`.
    pub fn reward_model(&self, score: impl Fn(usize) -> Tensor, likelihood: f64) {
        let sft = export::load(&self.dir.path().join("sft"), DType::F32).unwrap();
        let mut params = sft.params.snapshot();
        params.push((format!("{}.weight", export::SCORE), score(sft.config.n_embd)));
        let rm = self.dir.path().join("rm");
        std::fs::create_dir_all(&rm).unwrap();
        let tok = ChatTokenizer::from_file(
            &self.dir.path().join("tokenizer.json"),
            sft.config.vocab_size,
        )
        .unwrap();
        export::save_reward(
            &rm,
            &sft.config,
            &params,
            tok.end_of_text,
            Some(tok.im_end),
            likelihood,
        )
        .unwrap();
    }

    /// A pipeline whose stage of the kind under test scores with the reward model in `rm/`; `with` is its params.
    pub fn pipeline_with_rm(&self, with: &str) -> spec::Pipeline {
        let src = format!(
            "name: t\nseed: 7\nstages:\n  sft: {{ uses: command, with: {{ cmd: 'cp sft/* \"$HONE_OUT\"/', deps: [sft] }} }}\n  rm: {{ uses: command, with: {{ cmd: 'cp rm/* \"$HONE_OUT\"/', deps: [rm] }} }}\n  prompts: {{ uses: command, with: {{ cmd: 'cp prompts/* \"$HONE_OUT\"/', deps: [prompts] }} }}\n  {k}:\n    uses: {k}\n    inputs: {{ model: sft, reward: rm, prompts: prompts }}\n    with: {{ {with} }}\n",
            k = self.kind
        );
        spec::load_str(&self.dir.path().join("pipeline.yaml"), src, &crate::registry(), &[])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn run(
        &self,
        p: &spec::Pipeline,
        on_event: impl Fn(&Event, &AtomicBool) + Send + Sync,
    ) -> (RunSummary, Vec<Event>) {
        support::run(self.dir.path(), p, on_event)
    }

    pub fn output(&self, p: &spec::Pipeline) -> PathBuf {
        support::output(self.dir.path(), p, self.kind)
    }
}

/// The lines of `metrics.jsonl` in the output `dir`.
pub fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
