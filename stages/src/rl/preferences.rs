//! Rankings as the preference kinds (`reward`, `dpo`) train on them: each ranked prompt's
//! responses as token rows and every pair its ranking implies ([`Example`], [`example`]), and
//! the seeded split of prompts held out to measure pair accuracy ([`held_out`]).

use std::collections::BTreeSet;

use crate::data::rankings::Ranking;
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
pub fn held_out(rankings: &[Ranking], fraction: f64, seed: u64) -> BTreeSet<&str> {
    let mut prompts: Vec<&str> =
        rankings.iter().map(|r| r.prompt.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
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
