//! The GPT model every training stage shares: a decoder-only transformer in the GPT-2
//! layout ([`Gpt`]), built in candle from differentiable primitives ([`ops`]).
//!
//! - [`config`]: [`GptConfig`], the architecture (nanoGPT's names).
//! - [`params`]: [`ParamStore`], named variables created in a fixed order from a seeded RNG
//!   (candle's CPU RNG cannot be seeded) or loaded from tensors.
//! - [`ops`]: layer norm, softmax, attention, GELU, cross-entropy and dropout, written so that
//!   every gradient is recorded (candle's fused `LayerNorm`/`softmax_last_dim` have no
//!   backward). The one place where fused kernels plug in.
//! - [`kernels`]: the fused CPU kernels (with hand-written backward passes) that [`ops`] uses
//!   unless `HONE_PLAIN_OPS=1`.
//! - [`layers`] and [`gpt`]: the blocks and the model, for training and scoring: logits, the
//!   final hidden states and per-token log-probabilities; [`heads`]: a scalar head on the
//!   hidden states (a reward model's score, PPO's value).
//! - [`optim`]: AdamW (decay on ≥2-D weights only), warmup + cosine schedule, global-norm
//!   clipping; [`checkpoint`]: atomic training state for resumable runs.
//! - [`export`]: the HuggingFace GPT-2 layout (`model.safetensors` + `config.json`), both ways.
//! - [`decoder`]: [`decoder::Decoder`], the forward pass for generation, many sequences at once
//!   with a KV cache each; [`sample`]: temperature / top-k / top-p sampling on it, batched, with
//!   a seeded RNG per sequence and the sampled tokens' log-probabilities (`hone generate`,
//!   `hone chat`, `evaluate`, the `sample` stage).
//! - [`shards`]: memory-mapped token shards and the tokenizer artifact they come in.
//! - [`chat_template`]: ChatML, the chat format every stage and tool shares, rendered and
//!   tokenised with the assistant mask; [`chat`]: a chat model loaded for answering.

pub mod chat;
pub mod chat_template;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod export;
pub mod gpt;
pub mod heads;
pub mod hf;
pub mod kernels;
pub mod layers;
pub mod ops;
pub mod optim;
pub mod params;
pub mod recompute;
pub mod rng;
pub mod rope;
pub mod sample;
pub mod shards;

#[cfg(test)]
pub(crate) mod gradcheck;

use std::path::PathBuf;

pub use config::GptConfig;
pub use gpt::Gpt;
pub use params::ParamStore;
pub use rng::Rng;

/// The settings outside a pipeline that change what the model code computes, for the key
/// of every stage kind that runs it ([`hone_engine::stage::Stage::settings`]):
/// `HONE_PLAIN_OPS` (the plain ops round differently from the fused kernels).
pub fn settings() -> Vec<(&'static str, String)> {
    if ops::plain_ops() { vec![("HONE_PLAIN_OPS", "1".to_string())] } else { Vec::new() }
}

/// Everything that can go wrong in the model code.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("`{}`: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// A file exists but its content is not what hone expects.
    #[error("`{}`: {message}", path.display())]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
        let path = path.into();
        move |source| ModelError::Io { path, source }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> ModelError {
        ModelError::Format { path: path.into(), message: message.into() }
    }
}

impl From<ModelError> for hone_engine::stage::StageError {
    fn from(e: ModelError) -> Self {
        hone_engine::stage::StageError::Failed(e.to_string())
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
