//! Sampling text from a model: [`pick`] (temperature, top-k, top-p with a seeded [`Rng`]),
//! [`sample_batch`] (many sequences at once on a [`Decoder`], each with its own KV cache and
//! random stream, returning tokens, their log-probabilities and whether each sequence
//! stopped), and [`generate`] / [`generate_text`], one sequence streamed, what `hone
//! generate` and `hone chat` run.
//!
//! **Batches.** [`sample_batch`] keeps up to `max_rows` sequences in a step; a sequence that
//! samples a stop token or reaches `max_new_tokens` leaves, and the next request takes its
//! place. Each request carries its own seed, and the decoder computes a sequence's logits
//! with the same bits whatever else is in the step (see [`super::decoder`]), so a request
//! gets the same tokens in any batch, in any order, on any thread count, as alone.
//! [`row_seed`] derives distinct seeds for many requests from one.
//!
//! **Log-probabilities** are under the temperature-scaled softmax over the whole vocabulary,
//! `log softmax(logits / T)` (T = 1 for greedy decoding): what a trainer recomputes for the
//! same tokens (PPO must use the same temperature in both places). With top-k or top-p the
//! sampling distribution is that one truncated, so PPO samples with `top_k: 0, top_p: 1`, as
//! TRL does.
//!
//! **Top-k and top-p** pick the most likely tokens by partial selection
//! (`select_nth_unstable`), not a sort of the vocabulary per token; ties go to the lower id.
//!
//! When the context reaches the model's `block_size`, a sequence keeps the last half of it
//! and rebuilds its cache from there, so each overflow costs `block_size / 2` positions once
//! per `block_size / 2` new tokens: still linear. (nanoGPT instead recomputes the full window
//! for every token, which is quadratic.)

use std::path::Path;

use candle_core::DType;
use rayon::prelude::*;

use super::decoder::{Decoder, Row, RowCache};
use super::export::{self, GenerationConfig};
use super::rng::{Rng, Stream};
use super::{ModelError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SampleOptions {
    /// 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Keep only the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p; 1 keeps all.
    pub top_p: f64,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Stop when this token is sampled (it is not returned).
    pub stop_at: Option<u32>,
}

impl SampleOptions {
    pub fn from_config(g: &GenerationConfig, seed: u64) -> SampleOptions {
        SampleOptions {
            temperature: if g.do_sample { g.temperature } else { 0.0 },
            top_k: g.top_k,
            top_p: g.top_p,
            max_new_tokens: g.max_new_tokens,
            seed,
            stop_at: g.eos_token_id,
        }
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            p.push(format!("temperature must be 0 or more, not {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            p.push(format!("top_p must be in (0, 1], not {}", self.top_p));
        }
        p
    }
}

/// The most likely `m` token ids, best first (ties: lower id first), by partial selection.
fn top(logits: &[f32], m: usize) -> Vec<usize> {
    let better = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if m < idx.len() {
        idx.select_nth_unstable_by(m, better);
        idx.truncate(m);
    }
    idx.sort_unstable_by(better);
    idx
}

fn argmax(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &l)| if l > best.1 { (i, l) } else { best })
        .0
}

/// Draws `u · total` from `weights` (token id, weight) in order.
fn draw(weights: impl Iterator<Item = (usize, f64)>, total: f64, rng: &mut Rng) -> u32 {
    let mut u = f64::from(rng.uniform()) * total;
    let mut last = 0;
    for (i, w) in weights {
        if u < w {
            return i as u32;
        }
        u -= w;
        last = i;
    }
    last as u32
}

/// Draws the next token from `logits` (one row, the vocabulary).
pub fn pick(logits: &[f32], o: &SampleOptions, rng: &mut Rng) -> u32 {
    pick_scored(logits, o, rng).0
}

/// [`pick`] and the [`logprob`] of the token drawn, with one `exp` per logit for both.
pub fn pick_scored(logits: &[f32], o: &SampleOptions, rng: &mut Rng) -> (u32, f32) {
    let v = logits.len();
    let best = argmax(logits);
    let t = if o.temperature > 0.0 { o.temperature } else { 1.0 };
    let max = f64::from(logits[best]);
    // exp((l - max) / T) of every token: the sampling weights and the log-softmax's sum.
    let weights: Vec<f64> = logits.iter().map(|&l| ((f64::from(l) - max) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    let lse = total.ln();
    let scored = |i: usize| (i as u32, ((f64::from(logits[i]) - max) / t - lse) as f32);
    if o.temperature == 0.0 {
        return scored(best);
    }
    let weight = |i: usize| weights[i];
    // The candidates, best first, with their probabilities among the candidates.
    let (kept, probs): (Vec<usize>, Vec<f64>) = if o.top_k > 0 && o.top_k < v {
        let kept = top(logits, o.top_k);
        let w: Vec<f64> = kept.iter().map(|&i| weight(i)).collect();
        let total: f64 = w.iter().sum();
        let probs = w.iter().map(|x| x / total).collect();
        (kept, probs)
    } else {
        if o.top_p >= 1.0 {
            // The whole vocabulary: no order needed.
            return scored(draw(weights.iter().copied().enumerate(), total, rng) as usize);
        }
        // Enough of the most likely tokens to reach top_p: usually a few dozen.
        let mut m = 64.min(v);
        loop {
            let kept = top(logits, m);
            let probs: Vec<f64> = kept.iter().map(|&i| weight(i) / total).collect();
            if m == v || probs.iter().sum::<f64>() >= o.top_p {
                break (kept, probs);
            }
            m = (m * 4).min(v);
        }
    };
    let mut n = probs.len();
    if o.top_p < 1.0 {
        let mut cum = 0.0;
        if let Some(k) = probs.iter().position(|&p| {
            cum += p;
            cum >= o.top_p
        }) {
            n = k + 1;
        }
    }
    let total: f64 = probs[..n].iter().sum();
    scored(draw(kept[..n].iter().copied().zip(probs[..n].iter().copied()), total, rng) as usize)
}

/// `log softmax(logits / T)[token]` over the whole vocabulary (T = 1 when `temperature` is 0,
/// greedy decoding): see the module doc.
pub fn logprob(logits: &[f32], token: u32, temperature: f64) -> f32 {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = f64::from(logits[argmax(logits)]);
    let lse: f64 = logits.iter().map(|&l| ((f64::from(l) - max) / t).exp()).sum::<f64>().ln();
    ((f64::from(logits[token as usize]) - max) / t - lse) as f32
}

/// A distinct seed for request `index` of a batch sampled with `seed` (splitmix64).
pub fn row_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One sequence to sample: its prompt (token ids, at least one) and its seed.
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub seed: u64,
}

/// What was sampled for one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampled {
    /// The new tokens; the last is the stop token when `finished`.
    pub tokens: Vec<u32>,
    /// The log-probability of each token of `tokens` (see the module doc).
    pub logprobs: Vec<f32>,
    /// Ended by a stop token (else by `max_new_tokens` or the observer).
    pub finished: bool,
}

impl Sampled {
    /// The tokens without the stop token.
    pub fn text_tokens(&self) -> &[u32] {
        &self.tokens[..self.tokens.len() - usize::from(self.finished)]
    }
    /// Σ log-probabilities of `tokens`.
    pub fn logprob_sum(&self) -> f64 {
        self.logprobs.iter().map(|&l| f64::from(l)).sum()
    }
}

/// What [`sample_batch`] tells its caller while it runs; every method has a default.
pub trait Observer {
    /// A new token (not a stop token) of request `row`; `false` ends that sequence there.
    fn token(&mut self, _row: usize, _token: u32) -> bool {
        true
    }
    /// Request `row` is done.
    fn done(&mut self, _row: usize, _sampled: &Sampled) {}
    /// Checked before every step: `true` stops sampling.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Observes nothing.
impl Observer for () {}

/// One sequence being sampled.
struct Seq {
    row: usize,
    cache: RowCache,
    /// Every token: the prompt, then the sampled ones.
    context: Vec<u32>,
    /// `context[fed..]` is not in the cache yet.
    fed: usize,
    rng: Rng,
    out: Sampled,
    done: bool,
}

impl Seq {
    fn new(dec: &Decoder, row: usize, r: &Request) -> Seq {
        // A prompt longer than the window keeps its end.
        let fed = r.prompt.len().saturating_sub(dec.config().block_size);
        Seq {
            row,
            cache: dec.new_cache(),
            context: r.prompt.clone(),
            fed,
            rng: Rng::new(r.seed, Stream::Sample),
            out: Sampled::default(),
            done: false,
        }
    }

    /// Makes room for the unfed tokens: past the window, keep its last half and start over.
    fn fit_window(&mut self, dec: &Decoder) {
        let block = dec.config().block_size;
        if self.cache.len() + self.context.len() - self.fed > block {
            self.fed = self.context.len() - (block / 2).max(1);
            self.cache = dec.new_cache();
        }
    }
}

/// Rows from which a step's draws are split over the threads.
const PAR_ROWS: usize = 8;

/// Samples every request (see the module doc): at most `max_rows` sequences per step, each
/// stopping at a token of `stops` or `o.stop_at`, or after `o.max_new_tokens`. `None` when
/// the observer cancelled.
pub fn sample_batch(
    dec: &Decoder,
    requests: &[Request],
    o: &SampleOptions,
    stops: &[u32],
    max_rows: usize,
    obs: &mut impl Observer,
) -> Result<Option<Vec<Sampled>>> {
    if let Some(p) = o.problems().first() {
        return Err(ModelError::Invalid(p.clone()));
    }
    if let Some(i) = requests.iter().position(|r| r.prompt.is_empty()) {
        return Err(ModelError::Invalid(format!("prompt {i} is empty: give at least one token")));
    }
    let is_stop = |t: u32| o.stop_at == Some(t) || stops.contains(&t);
    let mut results: Vec<Option<Sampled>> = vec![None; requests.len()];
    let mut waiting = requests.iter().enumerate();
    let mut active: Vec<Seq> = Vec::new();
    loop {
        if obs.cancelled() {
            return Ok(None);
        }
        while active.len() < max_rows.max(1) {
            let Some((row, r)) = waiting.next() else { break };
            if o.max_new_tokens == 0 {
                results[row] = Some(Sampled::default());
                obs.done(row, &Sampled::default());
            } else {
                active.push(Seq::new(dec, row, r));
            }
        }
        if active.is_empty() {
            break;
        }
        for s in &mut active {
            s.fit_window(dec);
        }
        let logits = {
            let mut rows: Vec<Row> = active
                .iter_mut()
                .map(|s| Row { cache: &mut s.cache, tokens: &s.context[s.fed..] })
                .collect();
            dec.forward(&mut rows)?
        };
        // Each row draws from its own stream: in parallel when there are several.
        let draw = |(s, logits): (&mut Seq, &Vec<f32>)| pick_scored(logits, o, &mut s.rng);
        let picks: Vec<(u32, f32)> = if active.len() >= PAR_ROWS && rayon::current_num_threads() > 1
        {
            active.par_iter_mut().zip(&logits).map(draw).collect()
        } else {
            active.iter_mut().zip(&logits).map(draw).collect()
        };
        for (s, (next, lp)) in active.iter_mut().zip(picks) {
            s.fed = s.context.len();
            s.out.tokens.push(next);
            s.out.logprobs.push(lp);
            if is_stop(next) {
                s.out.finished = true;
                s.done = true;
                continue;
            }
            s.context.push(next);
            if !obs.token(s.row, next) || s.out.tokens.len() >= o.max_new_tokens {
                s.done = true;
            }
        }
        active.retain_mut(|s| {
            if s.done {
                obs.done(s.row, &s.out);
                results[s.row] = Some(std::mem::take(&mut s.out));
            }
            !s.done
        });
    }
    Ok(Some(results.into_iter().map(|r| r.expect("every request ran")).collect()))
}

/// Streams one sequence's tokens to a closure.
struct Stream1<F>(F);

impl<F: FnMut(u32) -> bool> Observer for Stream1<F> {
    fn token(&mut self, _row: usize, token: u32) -> bool {
        (self.0)(token)
    }
}

/// Samples up to `max_new_tokens` after `prompt` with seed `o.seed`, calling `on_token` with
/// each new token (return `false` to stop). Returns the new tokens (without a stop token).
pub fn generate(
    dec: &Decoder,
    prompt: &[u32],
    o: &SampleOptions,
    on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    generate_until(dec, prompt, o, &[], on_token)
}

/// [`generate`], also stopping at the tokens of `stops`.
fn generate_until(
    dec: &Decoder,
    prompt: &[u32],
    o: &SampleOptions,
    stops: &[u32],
    on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ModelError::Invalid("the prompt is empty: give at least one token".into()));
    }
    let req = [Request { prompt: prompt.to_vec(), seed: o.seed }];
    let mut out =
        sample_batch(dec, &req, o, stops, 1, &mut Stream1(on_token))?.expect("never cancelled");
    Ok(out.remove(0).text_tokens().to_vec())
}

/// What [`generate_text`] did.
pub struct Generated {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

/// Overrides of the model's `generation_config.json`.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub temperature: Option<f64>,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    pub max_new_tokens: Option<usize>,
}

impl Overrides {
    /// `o` with these overrides, checked (`hone generate` and `hone chat` take the same flags).
    pub fn apply(&self, mut o: SampleOptions) -> Result<SampleOptions> {
        o.temperature = self.temperature.unwrap_or(o.temperature);
        o.top_k = self.top_k.unwrap_or(o.top_k);
        o.top_p = self.top_p.unwrap_or(o.top_p);
        o.max_new_tokens = self.max_new_tokens.unwrap_or(o.max_new_tokens);
        match o.problems().first() {
            Some(p) => Err(ModelError::Invalid(p.clone())),
            None => Ok(o),
        }
    }
}

/// Loads the model in `dir` with its `tokenizer.json`, and streams the text sampled after
/// `prompt` to `on_text` piece by piece. An empty prompt starts from `<|endoftext|>`.
pub fn generate_text(
    dir: &Path,
    prompt: &str,
    over: &Overrides,
    seed: u64,
    on_text: impl FnMut(&str),
) -> Result<Generated> {
    let loaded = export::load(dir, DType::F32)?;
    let tok_path = dir.join(export::TOKENIZER);
    if !tok_path.exists() {
        return Err(ModelError::format(
            dir,
            format!(
                "no `{}` beside the model: hone needs it to turn text into tokens",
                export::TOKENIZER
            ),
        ));
    }
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| ModelError::format(&tok_path, e.to_string()))?;
    let o = over.apply(SampleOptions::from_config(&loaded.generation, seed))?;
    let mut ids = if prompt.is_empty() {
        Vec::new()
    } else {
        tokenizer
            .encode(prompt, false)
            .map_err(|e| ModelError::Invalid(format!("cannot tokenize the prompt: {e}")))?
            .get_ids()
            .to_vec()
    };
    if ids.is_empty() && !prompt.is_empty() {
        // A tokenizer without an unknown token drops what it does not know.
        return Err(ModelError::Invalid(format!(
            "the prompt {prompt:?} has no token the model's tokenizer knows"
        )));
    }
    if ids.is_empty() {
        let start = loaded.generation.bos_token_id.or(loaded.generation.eos_token_id);
        ids.push(start.ok_or_else(|| {
            ModelError::Invalid("give a prompt: the model has no start token to begin from".into())
        })?);
    }
    let vocab = loaded.config.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ModelError::Invalid(format!(
            "the tokenizer gave id {bad}, outside the model's vocabulary of {vocab}: is `{}` the model's own tokenizer?",
            tok_path.display()
        )));
    }
    let mut stream = tokenizer.decode_stream(true);
    let dec = Decoder::from_store(&loaded.config, &loaded.params)?;
    let new = generate_streamed(&dec, &ids, &o, &[], |t| stream.step(t), on_text)?;
    Ok(Generated { prompt_tokens: ids.len(), new_tokens: new.len() })
}

/// [`generate`], streaming text: `decode` turns each new token into its text (none while a
/// character is incomplete), which goes to `on_text`; the tokens of `stops` (and
/// `o.stop_at`) end the generation. A token that cannot be decoded is an error.
pub fn generate_streamed(
    dec: &Decoder,
    prompt: &[u32],
    o: &SampleOptions,
    stops: &[u32],
    mut decode: impl FnMut(u32) -> tokenizers::Result<Option<String>>,
    mut on_text: impl FnMut(&str),
) -> Result<Vec<u32>> {
    let mut failed = None;
    let new = generate_until(dec, prompt, o, stops, |t| match decode(t) {
        Ok(Some(text)) => {
            on_text(&text);
            true
        }
        Ok(None) => true,
        Err(e) => {
            failed = Some(e.to_string());
            false
        }
    })?;
    match failed {
        Some(e) => Err(ModelError::Invalid(format!("cannot decode a sampled token: {e}"))),
        None => Ok(new),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Gpt;
    use crate::model::ops::Dropout;
    use candle_core::{Device, Tensor};

    fn opts(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> SampleOptions {
        SampleOptions { temperature, top_k, top_p, max_new_tokens: 40, seed, stop_at: None }
    }

    fn tiny_model(seed: u64) -> (Gpt, Decoder) {
        crate::model::decoder::tests::tiny(seed, true)
    }

    #[test]
    fn greedy_top_k_and_top_p_keep_the_right_tokens() {
        let logits = [0.0f32, 3.0, 1.0, 2.9, -9.0];
        let mut rng = Rng::new(1, Stream::Sample);
        assert_eq!(pick(&logits, &opts(0.0, 0, 1.0, 0), &mut rng), 1);
        let draws = |o: SampleOptions| {
            let mut rng = Rng::new(3, Stream::Sample);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..400 {
                seen.insert(pick(&logits, &o, &mut rng));
            }
            seen.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(draws(opts(1.0, 2, 1.0, 0)), vec![1, 3]);
        assert_eq!(draws(opts(1.0, 0, 1.0, 0)), vec![0, 1, 2, 3]); // p(4) ≈ 3e-6: not in 400 draws
        // p(1) ≈ 0.48, p(3) ≈ 0.43: 0.5 needs both, 0.4 the first alone.
        assert_eq!(draws(opts(1.0, 0, 0.5, 0)), vec![1, 3]);
        assert_eq!(draws(opts(1.0, 0, 0.4, 0)), vec![1]);
        // A very low temperature is (almost) greedy.
        assert_eq!(draws(opts(0.005, 0, 1.0, 0)), vec![1]);
    }

    /// The partial selection draws exactly what sorting the whole vocabulary draws (ties to
    /// the lower id), also when top-p needs more than the first 64 tokens.
    #[test]
    fn partial_selection_equals_a_full_sort() {
        fn by_sorting(logits: &[f32], o: &SampleOptions, rng: &mut Rng) -> u32 {
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            if o.top_k > 0 {
                order.truncate(o.top_k);
            }
            let max = f64::from(logits[order[0]]);
            let w: Vec<f64> = order
                .iter()
                .map(|&i| ((f64::from(logits[i]) - max) / o.temperature).exp())
                .collect();
            let total: f64 = if o.top_k > 0 {
                w.iter().sum()
            } else {
                logits.iter().map(|&l| ((f64::from(l) - max) / o.temperature).exp()).sum()
            };
            let mut probs: Vec<f64> = w.iter().map(|x| x / total).collect();
            let mut cum = 0.0;
            if let Some(k) = probs.iter().position(|&p| {
                cum += p;
                cum >= o.top_p
            }) {
                probs.truncate(k + 1);
            }
            let kept: f64 = probs.iter().sum();
            let mut u = f64::from(rng.uniform()) * kept;
            for (k, p) in probs.iter().enumerate() {
                if u < *p {
                    return order[k] as u32;
                }
                u -= p;
            }
            order[probs.len() - 1] as u32
        }
        let mut r = Rng::new(5, Stream::Init);
        // 500 logits in 40 distinct values: many ties.
        let logits: Vec<f32> = (0..500).map(|_| (r.below(40) as f32) / 8.0).collect();
        for (k, p, t) in [
            (5, 1.0, 1.0),
            (50, 0.9, 0.7),
            (0, 0.3, 1.0),
            (0, 0.95, 2.0),
            (0, 0.999, 5.0),
            (499, 0.5, 1.0),
        ] {
            let o = opts(t, k, p, 0);
            let (mut a, mut b) = (Rng::new(9, Stream::Sample), Rng::new(9, Stream::Sample));
            for _ in 0..300 {
                assert_eq!(
                    pick(&logits, &o, &mut a),
                    by_sorting(&logits, &o, &mut b),
                    "top_k {k} top_p {p} T {t}"
                );
            }
        }
    }

    #[test]
    fn logprobs_are_the_temperature_scaled_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((f64::from(logprob(&logits, 1, 1.0)) - (2.0 - z)).abs() < 1e-6);
        // T = 0.5 doubles the logits; greedy (T = 0) scores at T = 1.
        let z2 = (2f64.exp() + 4f64.exp() + 6f64.exp()).ln();
        assert!((f64::from(logprob(&logits, 0, 0.5)) - (2.0 - z2)).abs() < 1e-6);
        assert_eq!(logprob(&logits, 2, 0.0), logprob(&logits, 2, 1.0));
        let total: f64 = (0..3).map(|t| f64::from(logprob(&logits, t, 0.7)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        // pick_scored's log-prob is logprob's, bit for bit, whatever the options.
        let logits: Vec<f32> = (0..300).map(|i| ((i * 7919) % 613) as f32 / 41.0 - 6.0).collect();
        for o in [
            opts(0.0, 0, 1.0, 0),
            opts(0.7, 0, 1.0, 0),
            opts(1.3, 20, 1.0, 0),
            opts(1.0, 0, 0.8, 0),
        ] {
            let mut rng = Rng::new(2, Stream::Sample);
            for _ in 0..50 {
                let (token, lp) = pick_scored(&logits, &o, &mut rng);
                assert_eq!(lp.to_bits(), logprob(&logits, token, o.temperature).to_bits(), "{o:?}");
            }
        }
    }

    #[test]
    fn generation_with_a_seed_is_reproducible() {
        let (_, d) = tiny_model(5);
        let run = |seed| generate(&d, &[1, 2, 3], &opts(3.0, 0, 1.0, seed), |_| true).unwrap();
        let a = run(11);
        assert_eq!(a.len(), 40);
        assert_eq!(a, run(11));
        assert_ne!(a, run(12));
        // Stopping at a token ends the sample before it.
        let stop = a[5];
        let first = a.iter().position(|&t| t == stop).unwrap();
        let stopped = generate(
            &d,
            &[1, 2, 3],
            &SampleOptions { stop_at: Some(stop), ..opts(3.0, 0, 1.0, 11) },
            |_| true,
        )
        .unwrap();
        assert_eq!(stopped, a[..first].to_vec());
    }

    /// The test: a batch gives every request the tokens (and log-probs, and stops) it
    /// gets alone, whatever the batch size, the order and the thread count; sequences stop at
    /// different times and roll over the 12-position window.
    #[test]
    fn batched_sampling_equals_one_at_a_time() {
        let (_, d) = tiny_model(7);
        let requests: Vec<Request> = (0..11u64)
            .map(|i| Request {
                prompt: (0..1 + i % 6).map(|j| ((i * 7 + j * 3) % 17) as u32).collect(),
                seed: row_seed(42, i),
            })
            .collect();
        let o = SampleOptions { stop_at: Some(4), max_new_tokens: 30, ..opts(1.0, 8, 0.9, 0) };
        let alone: Vec<Sampled> = requests
            .iter()
            .map(|r| {
                sample_batch(&d, std::slice::from_ref(r), &o, &[3], 1, &mut ())
                    .unwrap()
                    .unwrap()
                    .remove(0)
            })
            .collect();
        assert!(
            alone.iter().any(|s| s.finished) && alone.iter().any(|s| !s.finished),
            "some stop, some run to the limit: {:?}",
            alone.iter().map(|s| (s.finished, s.tokens.clone())).collect::<Vec<_>>()
        );
        assert!(alone.iter().any(|s| s.tokens.len() + 6 > 12), "some roll over the window");
        assert!(alone.iter().all(|s| s.tokens.len() == s.logprobs.len() && s.logprobs.iter().all(|l| *l <= 0.0)));
        for (threads, rows) in [(1, 4), (1, 64), (3, 3), (2, 11)] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let batched = pool
                .install(|| sample_batch(&d, &requests, &o, &[3], rows, &mut ()).unwrap().unwrap());
            assert_eq!(batched, alone, "{threads} threads, {rows} rows per step");
        }
        // The streamed single-sequence API gives the same tokens as its request alone.
        let one = generate(
            &d,
            &requests[3].prompt,
            &SampleOptions { seed: requests[3].seed, stop_at: None, ..o.clone() },
            |_| true,
        )
        .unwrap();
        let alone3 = sample_batch(
            &d,
            &requests[3..4],
            &SampleOptions { stop_at: None, ..o.clone() },
            &[],
            1,
            &mut (),
        )
        .unwrap()
        .unwrap()
        .remove(0);
        assert_eq!(one, alone3.tokens);
    }

    /// Greedy decoding past the window: each token is the argmax of candle's full forward pass
    /// over the same window (the last half kept at each overflow).
    #[test]
    fn the_window_rolls_over_as_a_full_recomputation_would() {
        let (m, d) = tiny_model(6);
        let prompt = [4u32, 8, 15, 16, 2, 3, 1, 0, 9, 9, 9, 9, 9, 1, 2]; // longer than the block
        let o = SampleOptions { max_new_tokens: 40, ..opts(0.0, 0, 1.0, 0) };
        let got =
            sample_batch(&d, &[Request { prompt: prompt.to_vec(), seed: 0 }], &o, &[], 1, &mut ())
                .unwrap()
                .unwrap()
                .remove(0);
        let mut ctx = prompt.to_vec();
        let mut start = ctx.len() - 12;
        for (i, &tok) in got.tokens.iter().enumerate() {
            let window = &ctx[start..];
            let ids = Tensor::from_slice(window, (1, window.len()), &Device::Cpu).unwrap();
            let logits = m
                .forward(&ids, &mut Dropout::off())
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .pop()
                .unwrap();
            assert_eq!(tok, argmax(&logits) as u32, "token {i}");
            assert!((got.logprobs[i] - logprob(&logits, tok, 1.0)).abs() < 1e-3, "token {i}");
            ctx.push(tok);
            if ctx.len() - start > 12 {
                start = ctx.len() - 6;
            }
        }
        assert!(start > prompt.len(), "the window rolled over after the prompt");
    }

    #[test]
    fn bad_requests_are_errors() {
        let (_, d) = tiny_model(1);
        let err = sample_batch(
            &d,
            &[Request { prompt: vec![1], seed: 0 }, Request { prompt: vec![], seed: 0 }],
            &opts(1.0, 0, 1.0, 0),
            &[],
            4,
            &mut (),
        )
        .unwrap_err();
        assert!(err.to_string().contains("prompt 1 is empty"), "{err}");
        let err = sample_batch(
            &d,
            &[Request { prompt: vec![1], seed: 0 }],
            &opts(1.0, 0, 1.5, 0),
            &[],
            4,
            &mut (),
        )
        .unwrap_err();
        assert!(err.to_string().contains("top_p must be in (0, 1]"), "{err}");
        let err = sample_batch(
            &d,
            &[Request { prompt: vec![99], seed: 0 }],
            &opts(1.0, 0, 1.0, 0),
            &[],
            4,
            &mut (),
        )
        .unwrap_err();
        assert!(err.to_string().contains("outside the model's vocabulary"), "{err}");
        let err = generate(&d, &[], &opts(1.0, 0, 1.0, 0), |_| true).unwrap_err();
        assert_eq!(err.to_string(), "the prompt is empty: give at least one token");
        // A token the tokenizer cannot decode ends the stream with an error, after the text
        // decoded so far.
        let mut text = String::new();
        let mut n = 0;
        let decode = |t: u32| {
            n += 1;
            if n < 3 { Ok(Some(format!("<{t}>"))) } else { Err("no such token".into()) }
        };
        let err = generate_streamed(&d, &[1, 2], &opts(1.0, 0, 1.0, 0), &[], decode, |piece| {
            text.push_str(piece)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "cannot decode a sampled token: no such token");
        assert_eq!(text.matches('<').count(), 2, "{text}");
    }
}
