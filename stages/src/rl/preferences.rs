//! Rankings as the preference kinds (`reward`, `dpo`) train on them: each ranked prompt's
//! responses as token rows and every pair its ranking implies ([`Example`], [`example`]), and
//! the seeded split of prompts held out to measure pair accuracy ([`held_out`]); both read from
//! a `rankings` input at once by [`Preferences::read`].

use std::collections::BTreeSet;
use std::path::Path;

use hone_engine::stage::{RunCx, StageError};
use serde::Serialize;

use crate::data::formats::PromptText;
use crate::data::rankings::{self, Ranking};
use crate::model::ModelError;
use crate::model::chat_template::ChatTokenizer;
use crate::model::rng::{Rng, Stream};
use crate::rl::reward_model::encode;

/// One ranked prompt, ready to score: a token row per kept response and the pairs between
/// them (indices into `rows`, better first).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub rows: Vec<Vec<u32>>,
    pub pairs: Vec<(usize, usize)>,
    /// Per row: the index of its response in the ranking.
    pub responses: Vec<usize>,
    /// Where every row's answer starts (after the prompt and the assistant header; see
    /// [`encode`]).
    pub start: usize,
}

/// A ranking as an [`Example`] (responses that do not fit `max_len` left out, counted in
/// `too_long`), or `None` when no pair is left.
pub fn example(
    tok: &ChatTokenizer,
    r: &Ranking,
    max_len: usize,
    too_long: &mut usize,
) -> Result<Option<Example>, ModelError> {
    let (mut rows, mut responses, mut start) = (Vec::new(), Vec::new(), 0);
    let mut row_of = vec![None; r.responses.len()];
    for (i, response) in r.responses.iter().enumerate() {
        match encode(tok, &r.prompt, response, max_len)? {
            Some((ids, s)) => {
                row_of[i] = Some(rows.len());
                rows.push(ids);
                responses.push(i);
                // The same prompt: the same start in every row.
                start = s;
            }
            None => *too_long += 1,
        }
    }
    let pairs: Vec<(usize, usize)> = r
        .pairs()
        .into_iter()
        .filter_map(|p| Some((row_of[p.chosen]?, row_of[p.rejected]?)))
        .collect();
    Ok((!pairs.is_empty()).then_some(Example { rows, pairs, responses, start }))
}

/// The prompts held out: a seeded shuffle of the distinct prompts, the first
/// `round(n · fraction)` of them (at least one when `fraction > 0`, never all).
pub fn held_out(rankings: &[Ranking], fraction: f64, seed: u64) -> BTreeSet<&PromptText> {
    // Text prompts sort before conversations and among themselves as strings, so a set of
    // single-turn prompts is held out as it always was.
    let mut prompts: Vec<&PromptText> =
        rankings.iter().map(|r| &r.prompt).collect::<BTreeSet<_>>().into_iter().collect();
    let mut rng = Rng::new(seed, Stream::Eval);
    for i in (1..prompts.len()).rev() {
        prompts.swap(i, rng.below(i + 1));
    }
    let n = prompts.len();
    let k = if fraction > 0.0 && n > 1 {
        ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
    } else {
        0
    };
    prompts.into_iter().take(k).collect()
}

/// What became of the rankings (a preference kind's `data.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DataCounts {
    pub rankings: usize,
    pub prompts: usize,
    pub train_prompts: usize,
    pub val_prompts: usize,
    pub train_pairs: usize,
    pub val_pairs: usize,
    /// Responses left out: prompt and response longer than the model's context.
    pub too_long: usize,
    /// Rankings with no pair left (all tied, or their responses too long).
    pub no_pairs: usize,
}

/// The rankings of a `rankings` input as training and held-out examples.
pub struct Preferences {
    pub rankings: Vec<Ranking>,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    /// Per held-out example: its ranking's index in `rankings`.
    pub val_rankings: Vec<usize>,
    pub counts: DataCounts,
}

impl Preferences {
    /// Reads the rankings in `dir` (input `rankings`), tokenises them with `tok` for a model of
    /// `block_size` tokens, holds out a seeded `val_fraction` of the prompts, and records the
    /// counts as metrics of `cx`. An error when no training pair is left.
    pub fn read(
        dir: &Path,
        tok: &ChatTokenizer,
        block_size: usize,
        val_fraction: f64,
        cx: &RunCx,
    ) -> Result<Preferences, StageError> {
        let all = rankings::read_dir(dir)
            .map_err(|e| StageError::msg(format!("input `rankings`: {e}")))?;
        if all.is_empty() {
            return Err(StageError::msg(
                "input `rankings` has no ranked prompt: there is nothing to learn\n   = help: rank some answers first (the `rank` stage)",
            ));
        }
        let val_prompts = held_out(&all, val_fraction, cx.seed);
        let mut counts = DataCounts {
            rankings: all.len(),
            prompts: all.iter().map(|r| &r.prompt).collect::<BTreeSet<_>>().len(),
            val_prompts: val_prompts.len(),
            ..DataCounts::default()
        };
        counts.train_prompts = counts.prompts - counts.val_prompts;
        let (mut train, mut val, mut val_rankings) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in all.iter().enumerate() {
            match example(tok, r, block_size, &mut counts.too_long)? {
                Some(e) if val_prompts.contains(&r.prompt) => {
                    val.push(e);
                    val_rankings.push(i);
                }
                Some(e) => train.push(e),
                None => counts.no_pairs += 1,
            }
        }
        counts.train_pairs = train.iter().map(|e| e.pairs.len()).sum();
        counts.val_pairs = val.iter().map(|e| e.pairs.len()).sum();
        if train.is_empty() {
            return Err(StageError::msg(format!(
                "no ranking of input `rankings` gives a training pair: {} rankings without a pair ({} responses too long for the model's {} tokens, the rest all tied), {} held out",
                counts.no_pairs,
                counts.too_long,
                block_size,
                val.len()
            )));
        }
        if counts.too_long > 0 {
            tracing::warn!(
                too_long = counts.too_long,
                "responses longer than the model's {block_size} tokens left out"
            );
        }
        for (k, v) in [
            ("train_pairs", counts.train_pairs),
            ("val_pairs", counts.val_pairs),
            ("too_long", counts.too_long),
            ("no_pairs", counts.no_pairs),
        ] {
            cx.metric(k, v as u64);
        }
        Ok(Preferences { rankings: all, train, val, val_rankings, counts })
    }
}
