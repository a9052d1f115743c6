//! `import`: a model you already have, from a local HuggingFace folder, as a stage output
//! that every kind taking `pretrain`'s model takes (sft, sample, reward, ppo, dpo, grpo,
//! evaluate; `hone chat`, `hone generate`, `hone score`).
//!
//! ```yaml
//! base:
//!   uses: import
//!   with:
//!     path: ${vars.model}          # a folder: config.json, model.safetensors (or shards + index),
//!                                  # tokenizer.json, tokenizer_config.json
//! ```
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `path` | (required) | the folder, relative to the pipeline file: GPT-2 (`GPT2LMHeadModel`), Llama (Llama 3, SmolLM2) or Qwen2 (`Qwen2ForCausalLM`), as `save_pretrained` writes it |
//!
//! **Key.** The folder's files are hashed into the stage key (`config.json`, the weights or
//! every shard its index names, the tokenizer files, `chat_template.jinja`), so a changed
//! checkpoint is a new import and the stages after it run again; the same files are a cache
//! hit wherever the folder is.
//!
//! **Output.** The model in hone's export ([`export::save_from`]: f32 safetensors, one
//! file, `config.json` over the folder's own so its other keys survive: an f32 checkpoint
//! comes out byte-identical), with its tokenizer:
//! - a folder whose tokenizer config has a `chat_template` keeps it (and its `eos_token` ends
//!   a turn, see [`chat_template`]);
//! - one without (GPT-2, base models) gets hone's ChatML: `<|endoftext|>`, `<|im_start|>` and
//!   `<|im_end|>` are added to the tokenizer as special tokens where missing, and the
//!   embedding (and an untied head) grows to cover them, each new row the mean of the
//!   existing ones (transformers' `resize_token_embeddings` default).
//!
//! Metrics: `params`, `vocab_size`, `added_tokens`, `own_template` (1 or 0).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use hone_engine::digest::Digest;
use hone_engine::stage::{DepCx, Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};

use crate::data::formats::{Message, Role};
use crate::model::chat_template::{self, ChatTokenizer, END_OF_TEXT, IM_END, IM_START};
use crate::model::export::{self, GenerationConfig};
use crate::model::{GptConfig, ModelError, hf};
use crate::ports;

pub struct Import;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The model folder, relative to the pipeline file.
    pub path: PathBuf,
}

/// The files of a model folder that make the model, present ones only, in a fixed order.
fn model_files(dir: &Path) -> Result<Vec<PathBuf>, StageError> {
    let mut files = Vec::new();
    for name in [export::CONFIG, export::TOKENIZER, export::TOKENIZER_CONFIG] {
        if !dir.join(name).is_file() {
            return Err(StageError::msg(format!(
                "`{}`: no `{name}` in the model folder\n   = help: a model folder as `save_pretrained` writes it holds config.json, model.safetensors, tokenizer.json and tokenizer_config.json (save the tokenizer too: `tokenizer.save_pretrained(dir)`)",
                dir.display()
            )));
        }
        files.push(dir.join(name));
    }
    for name in [
        export::GENERATION_CONFIG,
        chat_template::JINJA_FILE,
        chat_template::SPECIAL_TOKENS_MAP,
        export::WEIGHTS,
        hf::INDEX,
    ] {
        if dir.join(name).is_file() {
            files.push(dir.join(name));
        }
    }
    // The shards an index names (their presence is checked when the weights are read).
    if !dir.join(export::WEIGHTS).is_file() && dir.join(hf::INDEX).is_file() {
        let text = std::fs::read_to_string(dir.join(hf::INDEX))
            .map_err(StageError::io(format!("cannot read `{}`", hf::INDEX)))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| StageError::msg(format!("`{}`: {e}", dir.join(hf::INDEX).display())))?;
        let mut shards: Vec<&str> = v["weight_map"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, f)| f.as_str())
            .collect();
        shards.sort_unstable();
        shards.dedup();
        files.extend(shards.into_iter().map(|f| dir.join(f)).filter(|p| p.is_file()));
    }
    Ok(files)
}

impl Stage for Import {
    type Params = Params;
    const KIND: &'static str = "import";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "a model you have: a HuggingFace folder (GPT-2, Llama, SmolLM2, Qwen2) as a model output";
    const INPUTS: Inputs = Inputs::Fixed(&[]);
    const OUTPUTS: &'static [Port] = &[Port::required("model", ports::MODEL)];

    fn validate(p: &Params) -> Vec<ParamProblem> {
        if p.path.as_os_str().is_empty() {
            return vec![
                ParamProblem::at(&["path"], "`path` is empty")
                    .help("give the folder `save_pretrained` wrote, relative to the pipeline file"),
            ];
        }
        Vec::new()
    }

    fn settings() -> Vec<(&'static str, String)> {
        crate::model::settings()
    }

    fn external_deps(p: &Params, cx: &DepCx) -> Result<Vec<(String, Digest)>, StageError> {
        let dir = cx.workspace.join(&p.path);
        if !dir.is_dir() {
            return Err(StageError::msg(format!(
                "`path`: `{}` is not a folder\n   = help: give the folder `save_pretrained` wrote, relative to the pipeline file",
                p.path.display()
            )));
        }
        model_files(&dir)?
            .into_iter()
            .map(|f| {
                let name =
                    f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Ok((format!("model {name}"), cx.hash_path(&f)?))
            })
            .collect()
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        let dir = cx.workspace.join(&p.path);
        model_files(&dir)?;
        let in_folder =
            |e: ModelError| StageError::msg(format!("importing `{}`: {e}", p.path.display()));
        let loaded = export::load(&dir, DType::F32).map_err(in_folder)?;
        let mut cfg = loaded.config.clone();
        let tok_path = dir.join(export::TOKENIZER);
        let mut tok = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| StageError::msg(format!("`{}`: {e}", tok_path.display())))?;
        let own = chat_template::folder_template(&dir).map_err(in_folder)?.0.is_some();
        let out = cx.out_dir;
        let mut params = loaded.params.snapshot();
        let mut added = 0;
        if !own {
            // hone's ChatML: its tokens where missing, the embedding grown to cover them.
            let missing: Vec<tokenizers::AddedToken> = [END_OF_TEXT, IM_START, IM_END]
                .into_iter()
                .filter(|t| tok.token_to_id(t).is_none())
                .map(|t| tokenizers::AddedToken::from(t, true))
                .collect();
            added = tok
                .add_special_tokens(missing)
                .map_err(|e| StageError::msg(format!("cannot add the chat tokens: {e}")))?;
            let vocab = tok.get_vocab_size(true).max(cfg.vocab_size);
            if vocab > cfg.vocab_size {
                params = grow(&cfg, params, vocab).map_err(in_folder)?;
                cfg.vocab_size = vocab;
            }
            tok.save(out.join(export::TOKENIZER), true)
                .map_err(|e| StageError::msg(format!("cannot write `tokenizer.json`: {e}")))?;
            chat_template::write_chatml_config(out, cfg.block_size)?;
        } else {
            if tok.get_vocab_size(true) > cfg.vocab_size {
                return Err(StageError::msg(format!(
                    "`{}`: the tokenizer has {} tokens but the model's `vocab_size` is {}: they do not belong together",
                    tok_path.display(),
                    tok.get_vocab_size(true),
                    cfg.vocab_size
                )));
            }
            chat_template::write_tokenizer(out, &tok_path, cfg.block_size)?;
        }
        let chat = ChatTokenizer::from_file(&out.join(export::TOKENIZER), cfg.vocab_size)
            .map_err(in_folder)?;
        // Check the template renders a conversation before anything downstream needs it.
        let hello = |role, content: &str| Message { role, content: content.into() };
        chat.encode(&[hello(Role::User, "Hi"), hello(Role::Assistant, "Hello")], false)
            .map_err(in_folder)?;
        let generation = GenerationConfig {
            bos_token_id: Some(chat.end_of_text),
            ..GenerationConfig::defaults(Some(chat.im_end))
        };
        export::save_from(out, &cfg, &params, &generation, Some(&dir))?;
        cx.metric("params", cfg.n_params() as u64);
        cx.metric("vocab_size", cfg.vocab_size as u64);
        cx.metric("added_tokens", added as u64);
        cx.metric("own_template", u64::from(own));
        tracing::info!(
            params = cfg.n_params(),
            arch = ?cfg.arch,
            own_template = own,
            added_tokens = added,
            "imported"
        );
        Ok(())
    }

    fn summary(_p: &Params, out: &Path) -> Option<String> {
        let (cfg, _) = export::read_config(out).ok()?;
        Some(format!(
            "{:?}, {} layers, {} wide, {} tokens",
            cfg.arch, cfg.n_layer, cfg.n_embd, cfg.vocab_size
        ))
    }
}

/// The token embedding (and an untied head) grown to `vocab` rows, each new row the mean of
/// the existing ones.
fn grow(
    cfg: &GptConfig,
    params: Vec<(String, Tensor)>,
    vocab: usize,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    let extra = vocab - cfg.vocab_size;
    params
        .into_iter()
        .map(|(name, t)| {
            let is_table = matches!(
                name.as_str(),
                "transformer.wte.weight" | "model.embed_tokens.weight" | "lm_head.weight"
            );
            if !is_table {
                return Ok((name, t));
            }
            let mean = t.mean_keepdim(0)?;
            let rows = mean.broadcast_as((extra, cfg.n_embd))?.contiguous()?;
            Ok((name, Tensor::cat(&[&t, &rows], 0)?))
        })
        .collect()
}
