//! What the policy-gradient kinds (`ppo`, `grpo`) share about a rollout: the prompts as ChatML
//! token rows ([`encode_prompts`]), sampling answers with the policy as it is now
//! ([`sample_answers`]), laying prompt + answer rows out for a batched forward pass
//! ([`layout`], [`length_groups`], [`answer_logits`]), putting per-token results back in
//! order ([`split`], [`unpermute`], [`minibatch_order`]), and the held-out score
//! ([`held_out`]).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use hone_engine::stage::StageError;

use crate::data::corpus::Split;
use crate::data::formats::PromptText;
use crate::data::prompts::{Splits, read_prompts};
use crate::model::chat_template::ChatTokenizer;
use crate::model::decoder::Decoder;
use crate::model::ops::Dropout;
use crate::model::rng::{Rng, Stream};
use crate::model::sample::{self, Request, SampleOptions};
use crate::model::{Gpt, GptConfig, ModelError, ParamStore};

/// One prompt: its text, its ChatML tokens up to the assistant's header, and its checkable
/// answer, if the record has one.
pub struct Prompt {
    pub text: PromptText,
    pub ids: Vec<u32>,
    pub answer: Option<String>,
}

pub fn err(e: impl Into<ModelError>) -> StageError {
    StageError::from(e.into())
}

/// The prompts of `split` (input `prompts` of a `kind` stage, in `dir`) as ChatML up to the
/// assistant's header, those of at most `room` tokens (leaving room for the answer); how many
/// were longer.
pub fn encode_prompts(
    tok: &ChatTokenizer,
    dir: &Path,
    split: Split,
    room: usize,
    kind: &str,
) -> Result<(Vec<Prompt>, usize), StageError> {
    let splits = match split {
        Split::Train => Splits::Train,
        Split::Val => Splits::Val,
    };
    let mut out = Vec::new();
    let mut too_long = 0;
    for p in read_prompts(dir, splits, kind)? {
        let ids = tok.encode(&p.prompt.messages(), true).map_err(err)?.ids;
        if ids.len() > room {
            too_long += 1;
        } else {
            out.push(Prompt { text: p.prompt, ids, answer: p.answer });
        }
    }
    Ok((out, too_long))
}

/// Answers `prompts` with the model `params` as it is now, stopping at `<|im_end|>`: tokens,
/// their log-probs at `temperature` (0: greedy), whether each finished. `seeds(i)` seeds
/// prompt `i`'s draws; `cancelled` stops early (then [`StageError::Cancelled`]).
#[allow(clippy::too_many_arguments)]
pub fn sample_answers(
    cfg: &GptConfig,
    params: &ParamStore,
    tok: &ChatTokenizer,
    prompts: &[&Prompt],
    seeds: impl Fn(usize) -> u64,
    temperature: f64,
    max_new_tokens: usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<sample::Sampled>, StageError> {
    let dec = Decoder::from_store(cfg, params).map_err(err)?;
    let requests: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request { prompt: p.ids.clone(), seed: seeds(i) })
        .collect();
    struct Cancel<'c>(&'c dyn Fn() -> bool);
    impl sample::Observer for Cancel<'_> {
        fn cancelled(&self) -> bool {
            (self.0)()
        }
    }
    let options = SampleOptions {
        temperature,
        top_k: 0,
        top_p: 1.0,
        max_new_tokens,
        seed: 0,
        stop_at: Some(tok.im_end),
    };
    sample::sample_batch(&dec, &requests, &options, &[], requests.len(), &mut Cancel(cancelled))
        .map_err(err)?
        .ok_or(StageError::Cancelled)
}

/// The model's greedy answers to `prompts`: their mean score (`score` gives each answer's) and
/// mean length in tokens; `None` when there are no prompts.
#[allow(clippy::too_many_arguments)]
pub fn held_out(
    cfg: &GptConfig,
    params: &ParamStore,
    tok: &ChatTokenizer,
    prompts: &[&Prompt],
    max_new_tokens: usize,
    score: impl Fn(&[&Prompt], &[&[u32]], &[bool]) -> Result<Vec<f64>, StageError>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<(f64, f64)>, StageError> {
    if prompts.is_empty() {
        return Ok(None);
    }
    let sampled = sample_answers(cfg, params, tok, prompts, |_| 0, 0.0, max_new_tokens, cancelled)?;
    let answers: Vec<&[u32]> = sampled.iter().map(|s| s.tokens.as_slice()).collect();
    let finished: Vec<bool> = sampled.iter().map(|s| s.finished).collect();
    let scores = score(prompts, &answers, &finished)?;
    let n = prompts.len() as f64;
    Ok(Some((
        scores.iter().sum::<f64>() / n,
        answers.iter().map(|a| a.len() as f64).sum::<f64>() / n,
    )))
}

pub fn to_f64(t: &Tensor) -> Result<Vec<f64>, StageError> {
    t.to_dtype(DType::F64).and_then(|t| t.to_vec1::<f64>()).map_err(err)
}

/// Rows `prompt + answer` right-padded with `pad` into (B, T) inputs (the last token left
/// off: its logits are not needed), and the flat index into (B·T) of the position that
/// predicts each answer token, with those tokens.
pub fn layout(
    rows: &[(&[u32], &[u32])],
    pad: u32,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let t = rows.iter().map(|(p, a)| p.len() + a.len() - 1).max().unwrap_or(1);
    let (mut x, mut at, mut targets) = (Vec::with_capacity(rows.len() * t), Vec::new(), Vec::new());
    for (b, (p, a)) in rows.iter().enumerate() {
        let n = p.len() + a.len() - 1;
        x.extend(p.iter().chain(a.iter()).take(n));
        x.extend(std::iter::repeat_n(pad, t - n));
        for (j, &tok) in a.iter().enumerate() {
            at.push((b * t + p.len() - 1 + j) as u32);
            targets.push(tok);
        }
    }
    let dev = Device::Cpu;
    Ok((
        Tensor::from_vec(x, (rows.len(), t), &dev)?,
        Tensor::new(at, &dev)?,
        Tensor::new(targets, &dev)?,
    ))
}

/// Cuts rows of these lengths, shortest first, into at most `max_groups` runs that are each
/// padded only to their own longest row, with the fewest padded positions in all: the order
/// (a permutation of the rows, stably sorted by length) and each run's end in it. A minibatch
/// pads to its longest row, and the rows' lengths vary by half (prompts of 15–33 tokens,
/// answers of 1–24): two runs compute 16% fewer positions than one.
pub fn length_groups(lens: &[usize], max_groups: usize) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let n = lens.len();
    let sorted: Vec<usize> = order.iter().map(|&i| lens[i]).collect();
    // best[g][j]: the fewest positions for the first j rows in g + 1 runs; from[g][j] where
    // the last of those runs starts.
    let cost = |i: usize, j: usize| (j - i) * sorted[j - 1];
    let groups = max_groups.clamp(1, n.max(1));
    let mut best = vec![vec![usize::MAX; n + 1]; groups];
    let mut from = vec![vec![0; n + 1]; groups];
    for (j, b) in best[0].iter_mut().enumerate().skip(1) {
        *b = cost(0, j);
    }
    for g in 1..groups {
        for j in 1..=n {
            for i in 1..j {
                if best[g - 1][i] != usize::MAX && best[g - 1][i] + cost(i, j) < best[g][j] {
                    best[g][j] = best[g - 1][i] + cost(i, j);
                    from[g][j] = i;
                }
            }
        }
    }
    // The fewest runs that reach the least cost (fewer, larger products run faster).
    let g = (0..groups).min_by_key(|&g| best[g][n]).unwrap_or(0);
    let (mut ends, mut j) = (vec![n], n);
    for g in (1..=g).rev() {
        j = from[g][j];
        ends.push(j);
    }
    ends.reverse();
    (order, ends)
}

/// Per answer token: the logits (N, V) at `temperature` of the position that predicts it.
pub fn answer_logits(
    gpt: &Gpt,
    x: &Tensor,
    at: &Tensor,
    temperature: f64,
) -> candle_core::Result<Tensor> {
    let h = gpt.hidden(x, &mut Dropout::off())?;
    let (b, t, c) = h.dims3()?;
    let logits = gpt.lm_head(&h.reshape((b * t, c))?.index_select(at, 0)?)?;
    if temperature == 1.0 { Ok(logits) } else { logits / temperature }
}

/// Splits a flat per-token vector into one vector per answer.
pub fn split(flat: &[f64], answers: &[&[u32]]) -> Vec<Vec<f64>> {
    let mut at = 0;
    answers
        .iter()
        .map(|a| {
            let v = flat[at..at + a.len()].to_vec();
            at += a.len();
            v
        })
        .collect()
}

/// Items taken in `order` (item `k` is the one at `order[k]`) put back in their places.
pub fn unpermute<T: Default>(order: &[usize], taken: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = std::iter::repeat_with(T::default).take(taken.len()).collect();
    for (&i, v) in order.iter().zip(taken) {
        out[i] = v;
    }
    out
}

/// A seeded order of `n` items for an iteration's epoch (a function of both: nothing to
/// checkpoint); `salt` tells the kinds' orders apart.
pub fn minibatch_order(seed: u64, salt: u64, iteration: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut rng = Rng::new(
        sample::row_seed(seed ^ salt, iteration * 1_000_003 + epoch as u64),
        Stream::Train,
    );
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows sorted by length, cut where the padded positions are fewest, never into more runs
    /// than asked or than help.
    #[test]
    fn length_groups_by_hand() {
        // Sorted 5, 6, 7, 20, 21: one run pads to 21 (105 positions); cut after 7: 3·7 + 2·21 = 63.
        assert_eq!(length_groups(&[5, 20, 6, 21, 7], 2), (vec![0, 2, 4, 1, 3], vec![3, 5]));
        assert_eq!(length_groups(&[5, 20, 6, 21, 7], 1), (vec![0, 2, 4, 1, 3], vec![5]));
        // Three runs: 2·6 + 1·7 + 2·21 = 61 (or 5 + 2·7 + 2·21 = 61: the first found).
        assert_eq!(length_groups(&[5, 20, 6, 21, 7], 3).1.len(), 3);
        // Equal lengths: a cut saves nothing, so one run.
        assert_eq!(length_groups(&[4, 4, 4], 2), (vec![0, 1, 2], vec![3]));
        // Stable: equal lengths keep their order; one row is one run.
        assert_eq!(length_groups(&[9, 3, 9, 3], 2), (vec![1, 3, 0, 2], vec![2, 4]));
        assert_eq!(length_groups(&[7], 2), (vec![0], vec![1]));
    }

    /// What the rollout's scoring takes shortest first goes back to rollout order.
    #[test]
    fn unpermute_puts_items_back() {
        let order = [2, 0, 3, 1];
        let taken: Vec<char> = order.iter().map(|&i| "abcd".as_bytes()[i] as char).collect();
        assert_eq!(unpermute(&order, taken), vec!['a', 'b', 'c', 'd']);
    }
}
