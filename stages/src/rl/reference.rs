//! The frozen reference a preference or policy-gradient kind (`dpo`, `grpo`) measures its
//! policy against: input `reference`, else the input model itself.

use candle_core::DType;
use hone_engine::stage::{RunCx, StageError};

use crate::model::{Gpt, GptConfig, export};

/// The reference: input `reference`, else the model itself, checked to share the model's
/// vocabulary and context.
pub fn load_reference(cx: &RunCx, model: &export::Loaded) -> Result<Gpt, StageError> {
    let Some(dir) = cx.input("reference") else {
        return Ok(export::load(cx.required_input("model")?, DType::F32)
            .map_err(|e| StageError::msg(format!("input `model`: {e}")))?
            .model);
    };
    let r = export::load(dir, DType::F32)
        .map_err(|e| StageError::msg(format!("input `reference`: {e}")))?;
    let same =
        |a: &GptConfig, b: &GptConfig| a.vocab_size == b.vocab_size && a.block_size == b.block_size;
    if !same(&r.config, &model.config) {
        return Err(StageError::msg(format!(
            "input `reference` has {} tokens and a {}-token context, input `model` {} and {}: the reference must share the model's tokenizer\n   = help: wire `reference` to the stage `model` was fine-tuned from, or leave it out to use `model` itself",
            r.config.vocab_size,
            r.config.block_size,
            model.config.vocab_size,
            model.config.block_size
        )));
    }
    Ok(r.model)
}
