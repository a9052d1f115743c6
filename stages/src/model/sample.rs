//! Sampling text from a model: [`pick`] (temperature, top-k, top-p with a seeded [`Rng`]),
//! [`Generator`] (token by token with a KV cache, so generation is linear in length), and
//! [`generate_text`], what `hone generate` runs.
//!
//! When the context reaches the model's `block_size`, the generator keeps the last half of
//! it and rebuilds the cache from there, so each overflow costs `block_size / 2` positions
//! once per `block_size / 2` new tokens: still linear. (nanoGPT instead recomputes the full
//! window for every token, which is quadratic.)

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::export::{self, GenerationConfig};
use super::ops::Dropout;
use super::rng::{Rng, Stream};
use super::{Gpt, KvCache, ModelError, Result};

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

/// Draws the next token from `logits` (one row, the vocabulary).
pub fn pick(logits: &[f32], o: &SampleOptions, rng: &mut Rng) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &l)| if l > best.1 { (i, l) } else { best }).0 as u32;
    if o.temperature == 0.0 {
        return argmax();
    }
    // Most likely first; ties keep the lower id first, so the order is deterministic.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if o.top_k > 0 {
        order.truncate(o.top_k);
    }
    let max = f64::from(logits[order[0]]);
    let mut probs: Vec<f64> = order.iter().map(|&i| ((f64::from(logits[i]) - max) / o.temperature).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if o.top_p < 1.0 {
        let mut cum = 0.0;
        let keep = probs.iter().position(|&p| {
            cum += p;
            cum >= o.top_p
        });
        probs.truncate(keep.map_or(probs.len(), |k| k + 1));
    }
    let total: f64 = probs.iter().sum();
    let mut u = f64::from(rng.uniform()) * total;
    for (k, p) in probs.iter().enumerate() {
        if u < *p {
            return order[k] as u32;
        }
        u -= p;
    }
    order[probs.len() - 1] as u32
}

/// Feeds tokens to a model and returns next-token logits, with a KV cache (or, for checking
/// it, without one: a full forward pass over the same context each time).
pub struct Generator<'m> {
    model: &'m Gpt,
    cache: Option<KvCache>,
    /// Every token fed so far.
    tokens: Vec<u32>,
    /// Where the context the model sees starts in `tokens`.
    start: usize,
}

impl<'m> Generator<'m> {
    pub fn new(model: &'m Gpt, use_cache: bool) -> Generator<'m> {
        Generator { model, cache: use_cache.then(|| KvCache::new(model.config())), tokens: Vec::new(), start: 0 }
    }

    /// Appends `new` (non-empty) and returns the logits for the token after them.
    pub fn feed(&mut self, new: &[u32]) -> Result<Vec<f32>> {
        assert!(!new.is_empty(), "feed at least one token");
        let block = self.model.config().block_size;
        let seen = self.tokens.len() - self.start;
        self.tokens.extend_from_slice(new);
        let mut fresh = new.len();
        if seen + new.len() > block {
            // Past the window: keep the last half of it (all of it for a long prompt) and
            // rebuild the cache from there.
            let keep = if seen == 0 { block } else { (block / 2).max(1) };
            self.start = self.tokens.len() - keep.min(self.tokens.len());
            fresh = self.tokens.len() - self.start;
            if let Some(c) = &mut self.cache {
                *c = KvCache::new(self.model.config());
            }
        }
        let dev = Device::Cpu;
        let logits = match &mut self.cache {
            Some(cache) => {
                let ids = &self.tokens[self.tokens.len() - fresh..];
                self.model.forward_cached(&Tensor::from_slice(ids, (1, ids.len()), &dev)?, cache)?
            }
            None => {
                let ids = &self.tokens[self.start..];
                self.model.forward(&Tensor::from_slice(ids, (1, ids.len()), &dev)?, &mut Dropout::off())?
            }
        };
        let t = logits.dim(1)?;
        Ok(logits.narrow(1, t - 1, 1)?.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    }
}

/// Samples up to `max_new_tokens` after `prompt`, calling `on_token` with each new token
/// (return `false` to stop). Returns the new tokens.
pub fn generate(model: &Gpt, prompt: &[u32], o: &SampleOptions, mut on_token: impl FnMut(u32) -> bool) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(ModelError::Invalid("the prompt is empty: give at least one token".into()));
    }
    let mut rng = Rng::new(o.seed, Stream::Sample);
    let mut g = Generator::new(model, true);
    let mut logits = g.feed(prompt)?;
    let mut out = Vec::new();
    while out.len() < o.max_new_tokens {
        let next = pick(&logits, o, &mut rng);
        if Some(next) == o.stop_at {
            break;
        }
        out.push(next);
        if !on_token(next) || out.len() == o.max_new_tokens {
            break;
        }
        logits = g.feed(&[next])?;
    }
    Ok(out)
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

/// Loads the model in `dir` with its `tokenizer.json`, and streams the text sampled after
/// `prompt` to `on_text` piece by piece. An empty prompt starts from `<|endoftext|>`.
pub fn generate_text(dir: &Path, prompt: &str, over: &Overrides, seed: u64, on_text: impl FnMut(&str)) -> Result<Generated> {
    let loaded = export::load(dir, DType::F32)?;
    let tok_path = dir.join(export::TOKENIZER);
    if !tok_path.exists() {
        return Err(ModelError::format(dir, format!("no `{}` beside the model: hone needs it to turn text into tokens", export::TOKENIZER)));
    }
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| ModelError::format(&tok_path, e.to_string()))?;
    let mut o = SampleOptions::from_config(&loaded.generation, seed);
    o.temperature = over.temperature.unwrap_or(o.temperature);
    o.top_k = over.top_k.unwrap_or(o.top_k);
    o.top_p = over.top_p.unwrap_or(o.top_p);
    o.max_new_tokens = over.max_new_tokens.unwrap_or(o.max_new_tokens);
    if let Some(p) = o.problems().first() {
        return Err(ModelError::Invalid(p.clone()));
    }
    let mut ids = if prompt.is_empty() {
        Vec::new()
    } else {
        tokenizer.encode(prompt, false).map_err(|e| ModelError::Invalid(format!("cannot tokenize the prompt: {e}")))?.get_ids().to_vec()
    };
    if ids.is_empty() && !prompt.is_empty() {
        // A tokenizer without an unknown token drops what it does not know.
        return Err(ModelError::Invalid(format!("the prompt {prompt:?} has no token the model's tokenizer knows")));
    }
    if ids.is_empty() {
        let start = loaded.generation.bos_token_id.or(loaded.generation.eos_token_id);
        ids.push(start.ok_or_else(|| ModelError::Invalid("give a prompt: the model has no start token to begin from".into()))?);
    }
    let vocab = loaded.config.vocab_size;
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ModelError::Invalid(format!("the tokenizer gave id {bad}, outside the model's vocabulary of {vocab}: is `{}` the model's own tokenizer?", tok_path.display())));
    }
    let mut stream = tokenizer.decode_stream(true);
    let new = generate_streamed(&loaded.model, &ids, &o, |_| false, |t| stream.step(t), on_text)?;
    Ok(Generated { prompt_tokens: ids.len(), new_tokens: new.len() })
}

/// [`generate`], streaming text: `decode` turns each new token into its text (none while a
/// character is incomplete), which goes to `on_text`; `stop(token)` ends the generation
/// before that token. A token that cannot be decoded is an error.
pub fn generate_streamed(
    model: &Gpt,
    prompt: &[u32],
    o: &SampleOptions,
    stop: impl Fn(u32) -> bool,
    mut decode: impl FnMut(u32) -> tokenizers::Result<Option<String>>,
    mut on_text: impl FnMut(&str),
) -> Result<Vec<u32>> {
    let mut failed = None;
    let new = generate(model, prompt, o, |t| {
        if stop(t) {
            return false;
        }
        match decode(t) {
            Ok(Some(text)) => {
                on_text(&text);
                true
            }
            Ok(None) => true,
            Err(e) => {
                failed = Some(e.to_string());
                false
            }
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
    use crate::model::ParamStore;
    use crate::model::config::GptConfig;

    fn opts(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> SampleOptions {
        SampleOptions { temperature, top_k, top_p, max_new_tokens: 40, seed, stop_at: None }
    }

    fn tiny_model(seed: u64) -> Gpt {
        let cfg = GptConfig { vocab_size: 17, block_size: 12, n_layer: 2, n_head: 2, n_embd: 16, bias: true, dropout: 0.0 };
        let ps = ParamStore::seeded(seed);
        let m = Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        // Larger weights than the init so the logits are far from uniform.
        for (_, v) in ps.vars() {
            v.set(&(v.as_tensor() * 20.0).unwrap()).unwrap();
        }
        m
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

    #[test]
    fn generation_with_a_seed_is_reproducible() {
        let m = tiny_model(5);
        let run = |seed| generate(&m, &[1, 2, 3], &opts(1.0, 0, 0.95, seed), |_| true).unwrap();
        let a = run(11);
        assert_eq!(a.len(), 40);
        assert_eq!(a, run(11));
        assert_ne!(a, run(12));
        // Stopping at a token ends the sample before it.
        let stop = a[5];
        let first = a.iter().position(|&t| t == stop).unwrap();
        let stopped = generate(&m, &[1, 2, 3], &SampleOptions { stop_at: Some(stop), ..opts(1.0, 0, 0.95, 11) }, |_| true).unwrap();
        assert_eq!(stopped, a[..first].to_vec());
    }

    /// 40 new tokens on a 12-position model: the window rolls over several times; the
    /// cached logits must equal a full forward pass over the same context at every step.
    #[test]
    fn kv_cache_equals_full_recomputation() {
        let m = tiny_model(6);
        let mut cached = Generator::new(&m, true);
        let mut full = Generator::new(&m, false);
        let mut rng = Rng::new(9, Stream::Sample);
        let prompt = [4u32, 8, 15, 16, 2, 3, 1, 0, 9, 9, 9, 9, 9, 1, 2]; // longer than the block
        // Relative to the logits' scale: the two sum in different orders in f32, and the
        // 20× weights amplify rounding (measured 3.5e-6 to 2.7e-5 from nothing but the order
        // of layer norm's row sums); a wrong cache gives differences of order 1.
        let diff = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
            a.iter().zip(b).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f32::max)
        };
        let (mut a, b) = (cached.feed(&prompt).unwrap(), full.feed(&prompt).unwrap());
        let mut worst = diff(&a, &b);
        for _ in 0..40 {
            let next = pick(&a, &opts(1.0, 0, 1.0, 0), &mut rng);
            a = cached.feed(&[next]).unwrap();
            let b = full.feed(&[next]).unwrap();
            worst = worst.max(diff(&a, &b));
        }
        assert!(worst < 1e-4, "cached and full logits differ by {worst} (relative)");
        assert_eq!(cached.tokens, full.tokens);
        assert!(cached.start > 0, "the window never rolled over");
    }
}
