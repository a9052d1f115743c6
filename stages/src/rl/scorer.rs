//! Where a policy-gradient kind's (`ppo`, `grpo`) scores come from: a reward model, a program
//! that checks the answer (tinyworld's grader: a verifiable reward), or a toy rule.

use std::path::Path;

use candle_core::DType;
use hone_engine::stage::StageError;
use serde_json::json;

use crate::model::chat_template::ChatTokenizer;
use crate::model::export::{self, LoadedReward};
use crate::model::ops::Dropout;
use crate::model::{GptConfig, ModelError};
use crate::rl::reward_model::{self, RewardModel};
use crate::rl::rollout::{Prompt, err, to_f64};

/// Where scores come from.
pub enum Scorer {
    /// A reward model, and the token it pads rows with.
    Model { model: Box<RewardModel>, pad: u32 },
    /// +1 when the answer's text contains this, else 0.
    Contains(String),
    /// +1 when the answer gives the prompt's checkable answer (tinyworld's grader,
    /// [`crate::tinyworld::grade`]), else 0: wrong, no claim, or a prompt with no answer.
    Answers,
}

/// The reward model wired to input `reward` (in `dir`), checked to read what a policy of
/// `cfg` writes.
pub fn load_reward(dir: &Path, cfg: &GptConfig) -> Result<LoadedReward, StageError> {
    let r = export::load_reward(dir, DType::F32)
        .map_err(|e| StageError::msg(format!("input `reward`: {e}")))?;
    let rc = &r.backbone.config;
    if rc.vocab_size != cfg.vocab_size || rc.block_size < cfg.block_size {
        return Err(StageError::msg(format!(
            "input `reward`: the reward model reads {} tokens of a {}-token vocabulary, the policy writes {} of {}\n   = help: train the reward model from this policy's SFT model",
            rc.block_size, rc.vocab_size, cfg.block_size, cfg.vocab_size
        )));
    }
    Ok(r)
}

impl Scorer {
    /// Scores from the reward model `r` (its answers closed by `im_end`).
    pub fn reward_model(r: LoadedReward, im_end: u32) -> Scorer {
        let likelihood = reward_model::Likelihood::new(r.likelihood, im_end);
        Scorer::Model {
            model: Box::new(RewardModel { gpt: r.backbone.model, head: r.head, likelihood }),
            pad: r.pad_token_id,
        }
    }

    /// The raw scores of `answers` (sampled tokens, the stop token last when `finished`) to
    /// `prompts`, scored `batch` rows at a time by a model with `block` positions.
    pub fn scores(
        &self,
        tok: &ChatTokenizer,
        block: usize,
        batch: usize,
        prompts: &[&Prompt],
        answers: &[&[u32]],
        finished: &[bool],
    ) -> Result<Vec<f64>, StageError> {
        let texts: Vec<String> = answers
            .iter()
            .zip(finished)
            .map(|(a, &f)| tok.decode_reply(&a[..a.len() - usize::from(f)]))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let model = match self {
            Scorer::Contains(s) => {
                return Ok(texts
                    .iter()
                    .map(|t| if t.contains(s.as_str()) { 1.0 } else { 0.0 })
                    .collect());
            }
            Scorer::Answers => {
                return Ok(prompts
                    .iter()
                    .zip(&texts)
                    .map(|(p, t)| {
                        let record = json!({ "prompt": p.text, "answer": p.answer });
                        f64::from(u8::from(crate::tinyworld::grade(&record, t) == Some(true)))
                    })
                    .collect());
            }
            Scorer::Model { model, pad } => (model, *pad),
        };
        let (model, pad) = model;
        let newline = tok.text_ids("\n").map_err(err)?;
        let rows: Vec<Vec<u32>> = prompts
            .iter()
            .zip(&texts)
            .zip(answers.iter().zip(finished))
            .map(|((p, t), (a, &f))| {
                let ids = tok.encode(&reward_model::conversation(&p.text, t), false)?.ids;
                if ids.len() <= block {
                    return Ok(ids);
                }
                // The text re-encodes longer than it was sampled (a lone byte-fallback token
                // decodes to U+FFFD, three bytes): score the sampled tokens, which fit, as the
                // prompts were chosen to leave room for them.
                let mut ids = p.ids.clone();
                ids.extend_from_slice(&a[..a.len() - usize::from(f)]);
                ids.push(tok.im_end);
                ids.extend_from_slice(&newline);
                Ok(ids)
            })
            .collect::<Result<_, ModelError>>()
            .map_err(err)?;
        // Both ways the row starts with the prompt's tokens and the assistant header.
        let starts: Vec<usize> = prompts.iter().map(|p| p.ids.len()).collect();
        let mut out = Vec::with_capacity(rows.len());
        let size = batch.max(1);
        for (chunk, starts) in rows.chunks(size).zip(starts.chunks(size)) {
            if let Some(r) = chunk.iter().find(|r| r.len() > block) {
                return Err(StageError::msg(format!(
                    "an answer to score is {} tokens, more than the reward model's {block}\n   = help: lower `max_new_tokens`",
                    r.len()
                )));
            }
            let chunk: Vec<&Vec<u32>> = chunk.iter().collect();
            out.extend(to_f64(&model.scores(&chunk, starts, pad, &mut Dropout::off())?)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::chat_template::test_tokenizer;

    /// tinyworld's grader as a reward: 1 for the right answer, 0 for a wrong one, for an
    /// answer that claims nothing, and for a prompt with no answer; the stop token is not
    /// part of the text graded.
    #[test]
    fn the_answer_check_rewards_only_the_right_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (json, vocab) = test_tokenizer("abcdefghijklmnopqrstuvwxyz0123456789 .?");
        std::fs::write(dir.path().join("t.json"), json).unwrap();
        let tok = ChatTokenizer::from_file(&dir.path().join("t.json"), vocab).unwrap();
        let q = |answer: Option<&str>| Prompt {
            text: "what is 3 plus 4?".into(),
            ids: Vec::new(),
            answer: answer.map(str::to_string),
        };
        let (seven, none) = (q(Some("7")), q(None));
        let prompts = [&seven, &seven, &seven, &none];
        let ids = |t: &str| {
            let mut v = tok.text_ids(t).unwrap();
            v.push(tok.im_end);
            v
        };
        let answers =
            [ids("3 plus 4 is 7."), ids("3 plus 4 is 8."), ids("i do not know."), ids("7.")];
        let answers: Vec<&[u32]> = answers.iter().map(Vec::as_slice).collect();
        let got = Scorer::Answers.scores(&tok, 64, 4, &prompts, &answers, &[true; 4]).unwrap();
        assert_eq!(got, [1.0, 0.0, 0.0, 0.0]);
        let got = Scorer::Contains("know".into())
            .scores(&tok, 64, 4, &prompts, &answers, &[true; 4])
            .unwrap();
        assert_eq!(got, [0.0, 0.0, 1.0, 0.0]);
    }
}
