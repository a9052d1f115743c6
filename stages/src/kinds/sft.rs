//! `sft`: supervised fine-tuning of a model on conversations, in ChatML.
//!
//! ```yaml
//! sft:
//!   uses: sft
//!   inputs: { model: base, data: chat }    # a pretrain stage, an ingest stage of chat records
//!   with: { steps: 300, batch_size: 16, lr: 5e-4 }
//! ```
//!
//! Every conversation of the corpus (`messages`, or `prompt`/`completion`, as `ingest`
//! normalises them) is rendered with the shared template ([`crate::model::chat_template`]) and
//! tokenized with the model's own tokenizer. The loss is the next-token cross-entropy on the
//! assistant tokens only (each assistant message and its closing `<|im_end|>`), or on every
//! token with `loss: all`.
//!
//! **Rows.** Without `packing`, each conversation is one row, padded with `<|endoftext|>` to
//! the longest row of its batch; padding has weight 0 and sits after the real tokens, so the
//! causal attention of real tokens never sees it. With `packing`, whole conversations are
//! laid end to end into rows of up to `block_size + 1` tokens (never split across rows);
//! tokens then attend to the earlier conversations of their row, as in GPT-style packing.
//!
//! **Truncation.** A conversation longer than `block_size + 1` tokens is cut after its last
//! assistant message that fits whole; one whose first assistant message does not fit is
//! left out. Both are counted (`truncated`, `dropped` in the metrics and `data.json`) and
//! the first few are named in the log: a response is never cut silently. A conversation
//! with no assistant message teaches nothing with `loss: assistant` and is counted as
//! `no_assistant`.
//!
//! **Order.** Step `s` takes rows `s * batch_size ..` of an endless sequence of epochs, each
//! a seeded shuffle of the rows: the batch is a function of the step alone, so resuming from
//! a checkpoint needs only the step, the optimizer, the weights and the dropout RNG.
//!
//! **Evaluation** every `eval_every` steps and at the end: the validation loss (same mask)
//! and the mean token accuracy (the share of scored tokens whose most likely prediction is
//! right) over the first `eval_records` validation conversations.
//!
//! **Outputs** (port `model`, and `metrics`): the model in pretrain's layout
//! (`model.safetensors`, `config.json`, `generation_config.json` stopping at `<|im_end|>`,
//! `tokenizer.json`), `tokenizer_config.json` with the ChatML `chat_template`,
//! `metrics.jsonl`, `loss.svg` and `data.json` (the counts above). Checkpoints and
//! reproducibility work as in `pretrain`.

use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use hone_engine::stage::{Inputs, ParamProblem, Port, RunCx, Stage, StageError};
use serde::{Deserialize, Serialize};

use crate::data::corpus::{Corpus, Split};
use crate::data::formats::{Message, Role};
use crate::model::chat_template::{ChatTokenizer, Encoded};
use crate::model::export;
use crate::model::ops::{self, Dropout};
use crate::model::rng::Rng;
use crate::model::{Gpt, ModelError};
use crate::ports;
use crate::training::{
    self, EpochOrder, StepOut, Trainer, gradients_of, save_chat_model, training_params, write,
};

pub struct Sft;

/// Which tokens the loss is taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// Assistant messages and their closing `<|im_end|>`.
    Assistant,
    /// Every token.
    All,
}

training_params! {
    /// What is trained on, then the params every training kind has.
    pub struct Params {
        #[serde(default = "defaults::loss")]
        pub loss: LossOn,
        /// Lay several conversations into each row instead of one padded conversation per row.
        #[serde(default)]
        pub packing: bool,
        /// Tokens per row (less one); 0: the model's context window.
        #[serde(default)]
        pub block_size: usize,
        /// Validation conversations per evaluation (the first ones).
        #[serde(default = "defaults::eval_records")]
        pub eval_records: usize,
    }
}

mod defaults {
    use super::LossOn;

    pub fn loss() -> LossOn {
        LossOn::Assistant
    }
    pub fn batch_size() -> usize {
        16
    }
    pub fn steps() -> u64 {
        300
    }
    pub fn lr() -> f64 {
        5e-4
    }
    pub fn min_lr() -> f64 {
        5e-5
    }
    pub fn warmup_steps() -> u64 {
        20
    }
    pub fn weight_decay() -> f64 {
        0.0
    }
    pub fn eval_every() -> u64 {
        100
    }
    pub fn eval_records() -> usize {
        200
    }
    pub fn checkpoint_every() -> u64 {
        100
    }
}

/// Truncated or dropped conversations named in the log.
const EXAMPLES: usize = 5;

impl Stage for Sft {
    type Params = Params;
    const KIND: &'static str = "sft";
    /// Why each bump: docs/kind-versions.md.
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "fine-tune a model on conversations (ChatML), with the loss on the assistant's tokens";
    const INPUTS: Inputs = Inputs::Fixed(&[
        Port::required("model", ports::MODEL),
        Port::required("data", ports::CHAT_DATA),
    ]);
    const OUTPUTS: &'static [Port] =
        &[Port::required("model", ports::MODEL), Port::required("metrics", ports::METRICS)];

    fn settings() -> Vec<(&'static str, String)> {
        crate::model::settings()
    }

    fn validate(p: &Params) -> Vec<ParamProblem> {
        let mut out = p.common_problems();
        if p.block_size == 1 {
            out.push(
                ParamProblem::at(
                    &["block_size"],
                    "`block_size` must be at least 2 (or 0: the model's)",
                )
                .help("0 uses the model's context window".to_string()),
            );
        }
        if p.eval_records == 0 {
            out.push(
                ParamProblem::at(&["eval_records"], "`eval_records` must be at least 1")
                    .help("the validation loss averages over this many conversations".to_string()),
            );
        }
        out
    }

    fn resources(p: &Params) -> hone_engine::resources::Resources {
        crate::training::resources(p.threads)
    }

    fn run(p: &Params, cx: &RunCx) -> Result<(), StageError> {
        training::on_threads(p.threads, || train(p, cx))
    }
}

/// One training row: `ids` (up to `block_size + 1` tokens) and, per target position
/// `1..len`, the loss weight.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Row {
    pub ids: Vec<u32>,
    pub weights: Vec<f32>,
}

/// What became of the corpus's conversations.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct DataCounts {
    pub conversations: usize,
    /// Cut after their last assistant message that fits.
    pub truncated: usize,
    /// Left out: not even the first assistant message fits.
    pub dropped: usize,
    /// Left out: no assistant message to learn from.
    pub no_assistant: usize,
    pub rows: usize,
    pub scored_tokens: usize,
}

/// Conversation `index` as a row of at most `max_len` tokens (see the module doc), or why not.
pub(crate) enum Fit {
    Whole(Encoded),
    Truncated(Encoded),
    TooLong,
    NoAssistant,
}

pub(crate) fn fit(
    tok: &ChatTokenizer,
    messages: &[Message],
    max_len: usize,
    loss: LossOn,
) -> Result<Fit, ModelError> {
    let mut e = tok.encode(messages, false)?;
    let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
    if loss == LossOn::Assistant && last_assistant.is_none() {
        return Ok(Fit::NoAssistant);
    }
    if e.ids.len() <= max_len {
        return Ok(Fit::Whole(e));
    }
    // The end of the last assistant message that fits whole (any message with `loss: all`
    // and no assistant message at all).
    let cut = (0..messages.len()).rev().find(|&i| {
        (messages[i].role == Role::Assistant || last_assistant.is_none()) && e.ends[i] <= max_len
    });
    let Some(i) = cut else { return Ok(Fit::TooLong) };
    let end = e.ends[i];
    e.ids.truncate(end);
    e.assistant.truncate(end);
    e.ends.truncate(i + 1);
    Ok(Fit::Truncated(e))
}

fn row_of(e: &Encoded, loss: LossOn) -> Row {
    let weights = e.assistant[1..]
        .iter()
        .map(|&a| if a || loss == LossOn::All { 1.0 } else { 0.0 })
        .collect();
    Row { ids: e.ids.clone(), weights }
}

/// Rows from a split's conversations, with the counts; `packing` lays them end to end.
pub(crate) fn build_rows(
    tok: &ChatTokenizer,
    convs: &[(String, Vec<Message>)],
    max_len: usize,
    loss: LossOn,
    packing: bool,
) -> Result<(Vec<Row>, DataCounts), StageError> {
    let mut counts = DataCounts { conversations: convs.len(), ..DataCounts::default() };
    let mut fitted = Vec::new();
    for (at, messages) in convs {
        let e = match fit(tok, messages, max_len, loss)
            .map_err(|e| StageError::msg(format!("{at}: {e}")))?
        {
            Fit::Whole(e) => e,
            Fit::Truncated(e) => {
                counts.truncated += 1;
                if counts.truncated <= EXAMPLES {
                    tracing::info!(
                        "{at}: longer than {max_len} tokens; kept its first {} messages (up to an assistant message's end)",
                        e.ends.len()
                    );
                }
                e
            }
            Fit::TooLong => {
                counts.dropped += 1;
                if counts.dropped <= EXAMPLES {
                    tracing::info!(
                        "{at}: left out: its first assistant message ends past {max_len} tokens"
                    );
                }
                continue;
            }
            Fit::NoAssistant => {
                counts.no_assistant += 1;
                continue;
            }
        };
        fitted.push(e);
    }
    let mut rows: Vec<Row> = Vec::new();
    for e in &fitted {
        let r = row_of(e, loss);
        match rows.last_mut() {
            Some(last) if packing && last.ids.len() + r.ids.len() <= max_len => {
                // The token across the seam (the last `\n` predicting the next
                // `<|im_start|>`) is never scored: it is not an assistant token.
                last.weights.push(if loss == LossOn::All { 1.0 } else { 0.0 });
                last.ids.extend_from_slice(&r.ids);
                last.weights.extend_from_slice(&r.weights);
            }
            _ => rows.push(r),
        }
    }
    rows.retain(|r| r.weights.iter().any(|&w| w > 0.0));
    counts.rows = rows.len();
    counts.scored_tokens =
        rows.iter().map(|r| r.weights.iter().filter(|&&w| w > 0.0).count()).sum();
    Ok((rows, counts))
}

/// A batch of rows, right-padded with `pad`: inputs, targets (B, T) and weights (B * T).
fn batch(rows: &[&Row], pad: u32) -> Result<(Tensor, Tensor, Tensor), ModelError> {
    let t = rows.iter().map(|r| r.ids.len() - 1).max().unwrap_or(1);
    let b = rows.len();
    let (mut x, mut y, mut w) =
        (Vec::with_capacity(b * t), Vec::with_capacity(b * t), Vec::with_capacity(b * t));
    for r in rows {
        let n = r.ids.len() - 1;
        x.extend_from_slice(&r.ids[..n]);
        y.extend_from_slice(&r.ids[1..]);
        w.extend_from_slice(&r.weights);
        x.extend(std::iter::repeat_n(pad, t - n));
        y.extend(std::iter::repeat_n(pad, t - n));
        w.extend(std::iter::repeat_n(0.0f32, t - n));
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(x, (b, t), &dev)?,
        Tensor::from_vec(y, (b, t), &dev)?,
        Tensor::from_vec(w, b * t, &dev)?,
    ))
}

/// Weighted mean loss of a batch.
fn masked_loss(
    model: &Gpt,
    x: &Tensor,
    y: &Tensor,
    w: &Tensor,
    drop: &mut Dropout,
) -> Result<(Tensor, Tensor), ModelError> {
    let logits = model.forward(x, drop)?;
    let (b, t, v) = logits.dims3()?;
    let flat = logits.reshape((b * t, v))?;
    let loss = ops::cross_entropy(&flat, &y.reshape(b * t)?, Some(w))?;
    Ok((loss, flat))
}

/// A conversation and where it came from, for messages.
type Conversation = (String, Vec<Message>);

/// The conversations of the chat corpus wired to `data`, train and validation.
fn read_corpus(dir: &Path) -> Result<[Vec<Conversation>; 2], StageError> {
    let corpus = Corpus::open(dir, "data")?;
    let read = |split| -> Result<Vec<Conversation>, StageError> {
        Ok(corpus.chats(split, "sft")?.into_iter().map(|c| (c.at, c.messages)).collect())
    };
    Ok([read(Split::Train)?, read(Split::Val)?])
}

#[derive(Serialize)]
struct EvalLine {
    step: u64,
    val_loss: f64,
    val_accuracy: f64,
}

/// Masked next-token loss on the conversation rows, in shuffled epochs.
struct AssistantLoss<'a> {
    p: &'a Params,
    model: Gpt,
    train: Vec<Row>,
    val: Vec<Row>,
    pad: u32,
    order: EpochOrder,
}

fn train(p: &Params, cx: &RunCx) -> Result<(), StageError> {
    let model_dir = cx.required_input("model")?;
    let loaded = export::load(model_dir, DType::F32)?;
    let cfg = loaded.config.clone();
    let tok_path = model_dir.join(export::TOKENIZER);
    if !tok_path.exists() {
        return Err(StageError::msg(format!(
            "input `model`: no `{}` in `{}`: sft needs the model's tokenizer",
            export::TOKENIZER,
            model_dir.display()
        )));
    }
    let tok = ChatTokenizer::from_file(&tok_path, cfg.vocab_size)
        .map_err(|e| StageError::msg(format!("input `model`: {e}")))?;
    let block = if p.block_size == 0 { cfg.block_size } else { p.block_size };
    if block > cfg.block_size {
        return Err(StageError::msg(format!(
            "`block_size` {block} is longer than the model's context window ({})\n   = help: leave `block_size` out to use the model's",
            cfg.block_size
        )));
    }
    let [train_convs, val_convs] = read_corpus(cx.required_input("data")?)?;
    let (train_rows, counts) = build_rows(&tok, &train_convs, block + 1, p.loss, p.packing)?;
    let val_take = val_convs.len().min(p.eval_records);
    let (val_rows, val_counts) =
        build_rows(&tok, &val_convs[..val_take], block + 1, p.loss, false)?;
    if train_rows.is_empty() {
        return Err(StageError::msg(format!(
            "no conversation of input `data` can be trained on: {} too long for {block} tokens, {} without an assistant message",
            counts.dropped, counts.no_assistant
        )));
    }
    if counts.truncated + counts.dropped > 0 {
        tracing::warn!(
            truncated = counts.truncated,
            dropped = counts.dropped,
            "conversations longer than {} tokens",
            block + 1
        );
    }
    for (k, v) in [
        ("truncated", counts.truncated),
        ("dropped", counts.dropped),
        ("no_assistant", counts.no_assistant),
        ("train_rows", counts.rows),
    ] {
        cx.metric(k, v as u64);
    }
    let data_json = serde_json::json!({ "block_size": block, "train": counts, "val": val_counts });

    let common = p.common();
    let params = loaded.params;
    let mut trainer = Trainer::new(
        cx,
        vec![common.group("model", params.vars())],
        training::fingerprint::<Sft>(p, cx, &cfg),
    )?;
    let mut objective = AssistantLoss {
        p,
        model: loaded.model.with_recompute(p.gradient_checkpointing),
        order: EpochOrder::new(cx.seed, train_rows.len()),
        train: train_rows,
        val: val_rows,
        pad: tok.end_of_text,
    };
    tracing::info!(
        rows = objective.train.len(),
        from_step = trainer.step,
        steps = p.steps,
        "fine-tuning"
    );

    let done = trainer.run(&common.settings(), &mut objective)?;
    let (val_loss, val_acc) = done.eval;
    cx.metric("loss", done.loss);
    cx.metric("val_loss", val_loss);
    cx.metric("val_accuracy", val_acc);

    let out = cx.out_dir;
    // Sampling stops at the end of the assistant's message.
    save_chat_model(out, &cfg, &params, &tok, model_dir, trainer.history())?;
    write(out, "data.json", &(serde_json::to_string_pretty(&data_json).expect("plain data") + "\n"))
}

impl training::Objective for AssistantLoss<'_> {
    /// Validation loss and token accuracy.
    type Eval = (f64, f64);

    /// One batch of `batch_size` rows, the next in the epoch order.
    fn step(
        &mut self,
        vars: &[(String, Var)],
        step: u64,
        rng: &mut Rng,
    ) -> Result<StepOut, StageError> {
        let b = self.p.batch_size as u64;
        let idx: Vec<usize> = (0..b).map(|i| self.order.at(step * b + i)).collect();
        let rows: Vec<&Row> = idx.iter().map(|&i| &self.train[i]).collect();
        let n_tokens = rows.iter().map(|r| r.ids.len() - 1).sum();
        let (x, y, w) = batch(&rows, self.pad)?;
        let loss = self
            .model
            .masked_loss(&x, &y, Some(&w), &mut Dropout::train(self.p.dropout, rng))
            .map_err(ModelError::from)?;
        let (loss, grads) = gradients_of(&loss, vars)?;
        Ok(StepOut { loss, grads, tokens: n_tokens, stats: Vec::new() })
    }

    /// Validation loss and mean token accuracy over the scored tokens of the validation rows.
    fn evaluate(
        &mut self,
        step: u64,
        cx: &RunCx,
    ) -> Result<(Option<String>, (f64, f64)), StageError> {
        let model = &self.model;
        if self.val.is_empty() {
            return Ok((None, (f64::NAN, f64::NAN)));
        }
        let (mut nll, mut right, mut count) = (0.0, 0.0, 0.0);
        for chunk in self.val.chunks(self.p.batch_size) {
            cx.check_cancelled()?;
            let rows: Vec<&Row> = chunk.iter().collect();
            let (x, y, w) = batch(&rows, self.pad)?;
            let (loss, logits) = masked_loss(model, &x, &y, &w, &mut Dropout::off())?;
            let total = f64::from(
                w.sum_all().and_then(|s| s.to_scalar::<f32>()).map_err(ModelError::from)?,
            );
            nll += f64::from(loss.to_scalar::<f32>().map_err(ModelError::from)?) * total;
            count += total;
            let pred = logits
                .argmax(D::Minus1)
                .and_then(|a| a.to_vec1::<u32>())
                .map_err(ModelError::from)?;
            let (y, w) = (
                y.flatten_all().and_then(|t| t.to_vec1::<u32>()).map_err(ModelError::from)?,
                w.to_vec1::<f32>().map_err(ModelError::from)?,
            );
            right += pred
                .iter()
                .zip(&y)
                .zip(&w)
                .filter(|((p, t), _)| p == t)
                .map(|(_, &w)| f64::from(w))
                .sum::<f64>();
        }
        let (val_loss, val_accuracy) = (nll / count, right / count);
        if !val_loss.is_finite() {
            return Ok((None, (val_loss, val_accuracy)));
        }
        cx.metric("val_loss", val_loss);
        cx.metric("val_accuracy", val_accuracy);
        let line = serde_json::to_string(&EvalLine { step, val_loss, val_accuracy })
            .expect("finite numbers serialise");
        Ok((Some(line), (val_loss, val_accuracy)))
    }
}

#[cfg(test)]
mod tests;
