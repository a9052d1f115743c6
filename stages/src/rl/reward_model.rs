//! A reward model as its users see it: the backbone and scalar head that `reward` trains
//! ([`RewardModel`], with the answer's likelihood term [`Likelihood`]), how a response is
//! turned into the conversation it is scored as ([`conversation`], [`encode`]), and a loaded
//! reward model that scores answers ([`Scorer`]: `hone score`, `evaluate`'s reward column).
//! `ppo` scores its rollouts and trains its critic with the same [`RewardModel`].

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::data::formats::{Message, PromptText, Role};
use crate::model::chat_template::ChatTokenizer;
use crate::model::export;
use crate::model::heads::ScalarHead;
use crate::model::ops::Dropout;
use crate::model::{Gpt, ModelError};

/// The file of a `reward` artifact with its scores' statistics on the rankings' responses
/// (`reference_mean`, `reference_std`: PPO normalises rewards with them).
pub const REWARD_JSON: &str = "reward.json";

/// The conversation a response is scored as (what `sft` trains on): the prompt's turns, then
/// the response as the assistant's.
pub fn conversation(prompt: impl Into<PromptText>, response: &str) -> Vec<Message> {
    let mut m = prompt.into().messages();
    m.push(Message { role: Role::Assistant, content: response.to_string() });
    m
}

/// The tokens of `prompt` + `response` as scored, and where the answer starts in them (the
/// first assistant token of the last message: after the prompt's turns and the assistant
/// header).
fn tokens(
    tok: &ChatTokenizer,
    prompt: &PromptText,
    response: &str,
) -> Result<(Vec<u32>, usize), ModelError> {
    let e = tok.encode(&conversation(prompt, response), false)?;
    let last = e.ends.len().checked_sub(2).map_or(0, |i| e.ends[i]);
    let start = e.assistant[last..].iter().position(|&a| a).map_or(e.ids.len(), |p| last + p);
    Ok((e.ids, start))
}

/// [`tokens`], or `None` when longer than `max_len`.
pub fn encode(
    tok: &ChatTokenizer,
    prompt: &PromptText,
    response: &str,
    max_len: usize,
) -> Result<Option<(Vec<u32>, usize)>, ModelError> {
    let (ids, start) = tokens(tok, prompt, response)?;
    Ok((ids.len() <= max_len).then_some((ids, start)))
}

/// The model being trained: backbone and head (PPO's critic and scorer too).
pub struct RewardModel {
    pub gpt: Gpt,
    pub head: ScalarHead,
    /// The answer's likelihood term of the score, if any.
    pub likelihood: Option<Likelihood>,
}

/// `weight · mean log p(answer)`, the answer being a row's tokens from its start (given)
/// up to and including its closing `<|im_end|>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Likelihood {
    pub weight: f64,
    im_end: u32,
}

impl Likelihood {
    /// The term with `weight` (the answers closed by `im_end`), or `None` for weight 0.
    pub fn new(weight: f64, im_end: u32) -> Option<Likelihood> {
        (weight != 0.0).then_some(Likelihood { weight, im_end })
    }

    fn span(&self, row: &[u32], start: usize) -> Result<(usize, usize), ModelError> {
        answer_span(row, start, self.im_end)
    }
}

/// The answer's tokens in `row`, which starts at `start`: `start..=end`, `end` the last
/// `im_end` (the one that closes the answer; an answer may hold special tokens).
pub fn answer_span(row: &[u32], start: usize, im_end: u32) -> Result<(usize, usize), ModelError> {
    match row.iter().rposition(|&t| t == im_end) {
        Some(end) if start >= 1 && end >= start => Ok((start, end)),
        _ => Err(ModelError::Invalid(
            "a scored row has no assistant answer closed by `<|im_end|>`".into(),
        )),
    }
}

impl RewardModel {
    /// The scores (N) of `rows`, right-padded with `pad` into one batch; row `i`'s answer
    /// starts at `starts[i]` (as [`encode`] gives it; read by the likelihood term only).
    pub fn scores(
        &self,
        rows: &[&Vec<u32>],
        starts: &[usize],
        pad: u32,
        drop: &mut Dropout,
    ) -> Result<Tensor, ModelError> {
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(1);
        let mut x = Vec::with_capacity(rows.len() * t);
        for r in rows {
            x.extend_from_slice(r);
            x.extend(std::iter::repeat_n(pad, t - r.len()));
        }
        let n = rows.len();
        let x = Tensor::from_vec(x, (n, t), &Device::Cpu)?;
        let last: Vec<usize> = rows.iter().map(|r| r.len() - 1).collect();
        let hidden = self.gpt.hidden(&x, drop)?;
        let head = self.head.at(&hidden, &last)?;
        let Some(l) = &self.likelihood else { return Ok(head) };
        if starts.len() != n {
            return Err(ModelError::Invalid(format!(
                "{} answer starts for {n} rows",
                starts.len()
            )));
        }
        // Position i predicts token i + 1: the answer's tokens start..=end are predicted at
        // start - 1..end, each weighted 1/(its count) so that a row's weights sum to 1.
        let mut targets = vec![pad; n * t];
        let mut weights = vec![0f32; n * t];
        for (b, r) in rows.iter().enumerate() {
            let (start, end) = l.span(r, starts[b])?;
            let w = 1.0 / (end + 1 - start) as f32;
            for i in start - 1..end {
                targets[b * t + i] = r[i + 1];
                weights[b * t + i] = w;
            }
        }
        let logits = self.gpt.lm_head(&hidden.reshape((n * t, ()))?)?;
        let lp = crate::model::ops::token_log_probs(
            &logits,
            &Tensor::from_vec(targets, n * t, &Device::Cpu)?,
        )?;
        let mean =
            (lp * Tensor::from_vec(weights, n * t, &Device::Cpu)?)?.reshape((n, t))?.sum(1)?;
        Ok((head + (mean * l.weight)?)?)
    }
}

/// A reward model loaded for scoring (`hone score`, and PPO).
pub struct Scorer {
    model: RewardModel,
    tok: ChatTokenizer,
    pad: u32,
    block_size: usize,
}

/// Why a text could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "the answer is empty: a reward model scores an answer to the prompt\n   = help: give the answer to score"
    )]
    EmptyAnswer,
    #[error(
        "the prompt and answer take {tokens} tokens, more than the reward model's {block_size}\n   = help: score a shorter answer"
    )]
    TooLong { tokens: usize, block_size: usize },
}

impl Scorer {
    /// Loads a reward model directory (a `reward` stage's output).
    pub fn load(dir: &Path) -> Result<Scorer, ModelError> {
        let r = export::load_reward(dir, DType::F32)?;
        let tok_path = dir.join(export::TOKENIZER);
        if !tok_path.exists() {
            return Err(ModelError::format(
                dir,
                format!("no `{}` beside the reward model", export::TOKENIZER),
            ));
        }
        let tok = ChatTokenizer::from_file(&tok_path, r.backbone.config.vocab_size)?;
        let block_size = r.backbone.config.block_size;
        let likelihood = Likelihood::new(r.likelihood, tok.im_end);
        Ok(Scorer {
            model: RewardModel { gpt: r.backbone.model, head: r.head, likelihood },
            tok,
            pad: r.pad_token_id,
            block_size,
        })
    }

    /// The raw reward of `answer` to `prompt` (a string, or a conversation).
    pub fn score(&self, prompt: impl Into<PromptText>, answer: &str) -> Result<f64, ScoreError> {
        if answer.trim().is_empty() {
            return Err(ScoreError::EmptyAnswer);
        }
        let (ids, start) = tokens(&self.tok, &prompt.into(), answer)?;
        if ids.len() > self.block_size {
            return Err(ScoreError::TooLong { tokens: ids.len(), block_size: self.block_size });
        }
        let s = self.model.scores(&[&ids], &[start], self.pad, &mut Dropout::off())?;
        Ok(f64::from(s.to_vec1::<f32>().map_err(ModelError::from)?[0]))
    }
}

/// σ(r): the probability-like score in (0, 1).
pub fn sigmoid(r: f64) -> f64 {
    1.0 / (1.0 + (-r).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat_template::test_tokenizer;

    /// With earlier turns in the prompt, the answer starts at the last assistant message,
    /// not at the first assistant turn of the conversation.
    #[test]
    fn the_answer_of_a_conversation_starts_after_its_last_header() {
        let (json, vocab) = test_tokenizer("abcdefghijklmnopqrstuvwxyz?. \n");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
        let tok = ChatTokenizer::from_file(&dir.path().join("tokenizer.json"), vocab).unwrap();
        let turns = PromptText::Turns(vec![
            Message::user("hi"),
            Message { role: Role::Assistant, content: "hello.".into() },
            Message::user("sky?"),
        ]);
        let (ids, start) = tokens(&tok, &turns, "blue.").unwrap();
        let header = tok.encode(&turns.messages(), true).unwrap().ids.len();
        assert_eq!(start, header, "after the prompt's turns and the assistant header");
        assert!(ids.len() > start);
        let (_, single) = tokens(&tok, &PromptText::from("sky?"), "blue.").unwrap();
        assert!(single < start);
    }
}
