//! [`Decoder`]: the GPT's forward pass for generation, many sequences at once, each with its
//! own KV cache ([`RowCache`]).
//!
//! Training runs whole (B, T) blocks through candle; generation feeds each sequence one new
//! token per step, at a different position in each, and sequences end at different times.
//! The decoder therefore works on plain `f32` vectors, one *entry* per fed token: the linear
//! layers multiply every entry of every sequence in one pass (the weights are read once per
//! step, not once per sequence), and attention runs per entry against its own sequence's
//! cache, so sequences of any lengths share a step and a finished one simply stops being fed.
//! A prompt is fed the same way, several entries of one sequence in one step (each attends to
//! the positions up to its own).
//!
//! **Same bits in any batch and on any thread count.** Every entry's numbers are computed by
//! the same code in the same order whatever else is in the step: a linear output is one
//! 8-lane dot product ([`simd::dot`]'s order, also when four entries share a pass), layer
//! norm and attention are per entry, and threads split the work by output features or
//! entries, never inside a sum. So a sequence sampled in a batch of 64 gets exactly the
//! logits it gets alone, and batched sampling equals one-at-a-time sampling token for token.
//! (Against candle's full forward pass the logits agree to float rounding: tested.)

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use super::config::LN_EPS;
use super::kernels::gelu::NormalCdf;
use super::kernels::simd;
use super::{GptConfig, ModelError, ParamStore, Result};

/// A linear layer `y = x Wᵀ + b`, `W` (out, in) row-major as `nn.Linear` keeps it.
struct Dense {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    inp: usize,
    out: usize,
}

struct Norm {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
}

struct Layer {
    ln_1: Norm,
    c_attn: Dense,
    attn_proj: Dense,
    ln_2: Norm,
    c_fc: Dense,
    mlp_proj: Dense,
}

/// A GPT's weights as flat `f32` vectors, ready to generate (see the module doc).
pub struct Decoder {
    cfg: GptConfig,
    /// The token embedding, also the (tied) output head: (vocab, C).
    wte: Dense,
    wpe: Vec<f32>,
    layers: Vec<Layer>,
    ln_f: Norm,
}

/// One sequence's keys and values, per layer, position by position (each `n_embd` wide,
/// heads side by side as the qkv projection leaves them).
#[derive(Clone, Debug, Default)]
pub struct RowCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

impl RowCache {
    /// Positions cached.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One sequence's part of a step: its cache and the tokens that follow what it holds.
pub struct Row<'a> {
    pub cache: &'a mut RowCache,
    pub tokens: &'a [u32],
}

impl Decoder {
    /// From parameters named as nanoGPT names them (`transformer.wte.weight`, …), as
    /// [`ParamStore::vars`] lists them. A snapshot: later changes to the tensors are not seen.
    pub fn new(cfg: &GptConfig, params: &[(String, Tensor)]) -> Result<Decoder> {
        if let Some((_, msg)) = cfg.problems().first() {
            return Err(ModelError::Invalid(format!("invalid model config: {msg}")));
        }
        let by_name: HashMap<&str, &Tensor> = params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let get = |name: &str, dims: &[usize]| -> Result<Vec<f32>> {
            let t = by_name.get(name).ok_or_else(|| ModelError::Invalid(format!("the model has no parameter `{name}`")))?;
            if t.dims() != dims {
                return Err(ModelError::Invalid(format!("parameter `{name}` has shape {:?}, expected {dims:?}", t.dims())));
            }
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let opt = |name: &str, n: usize| if cfg.bias { get(name, &[n]).map(Some) } else { Ok(None) };
        let dense = |p: &str, inp: usize, out: usize| -> Result<Dense> {
            Ok(Dense { w: get(&format!("{p}.weight"), &[out, inp])?, b: opt(&format!("{p}.bias"), out)?, inp, out })
        };
        let norm = |p: &str| -> Result<Norm> { Ok(Norm { w: get(&format!("{p}.weight"), &[cfg.n_embd])?, b: opt(&format!("{p}.bias"), cfg.n_embd)? }) };
        let c = cfg.n_embd;
        let layers = (0..cfg.n_layer)
            .map(|i| {
                let p = format!("transformer.h.{i}");
                Ok(Layer {
                    ln_1: norm(&format!("{p}.ln_1"))?,
                    c_attn: dense(&format!("{p}.attn.c_attn"), c, 3 * c)?,
                    attn_proj: dense(&format!("{p}.attn.c_proj"), c, c)?,
                    ln_2: norm(&format!("{p}.ln_2"))?,
                    c_fc: dense(&format!("{p}.mlp.c_fc"), c, 4 * c)?,
                    mlp_proj: dense(&format!("{p}.mlp.c_proj"), 4 * c, c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoder {
            cfg: cfg.clone(),
            wte: Dense { w: get("transformer.wte.weight", &[cfg.vocab_size, c])?, b: None, inp: c, out: cfg.vocab_size },
            wpe: get("transformer.wpe.weight", &[cfg.block_size, c])?,
            layers,
            ln_f: norm("transformer.ln_f")?,
        })
    }

    /// From the current values of a model's parameters.
    pub fn from_store(cfg: &GptConfig, params: &ParamStore) -> Result<Decoder> {
        let tensors: Vec<(String, Tensor)> = params.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        Decoder::new(cfg, &tensors)
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> RowCache {
        RowCache { k: vec![Vec::new(); self.cfg.n_layer], v: vec![Vec::new(); self.cfg.n_layer], len: 0 }
    }

    /// Feeds each row its tokens (at least one, at the positions after its cache), extends
    /// the caches, and returns each row's logits for the token after its last one.
    pub fn forward(&self, rows: &mut [Row<'_>]) -> Result<Vec<Vec<f32>>> {
        let (c, block, vocab) = (self.cfg.n_embd, self.cfg.block_size, self.cfg.vocab_size);
        // One entry per fed token: (row, position).
        let mut entries = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            if row.tokens.is_empty() {
                return Err(ModelError::Invalid("feed each sequence at least one token".into()));
            }
            if row.cache.len + row.tokens.len() > block {
                return Err(ModelError::Invalid(format!("{} positions given but the model's block_size is {block}", row.cache.len + row.tokens.len())));
            }
            if let Some(&bad) = row.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::Invalid(format!("token id {bad} is outside the model's vocabulary of {vocab}")));
            }
            entries.extend((0..row.tokens.len()).map(|i| (r, row.cache.len + i)));
        }
        let n = entries.len();
        let mut x = vec![0f32; n * c];
        let mut e = 0;
        for row in rows.iter() {
            for (i, &t) in row.tokens.iter().enumerate() {
                let pos = row.cache.len + i;
                let (tok, p) = (&self.wte.w[t as usize * c..][..c], &self.wpe[pos * c..][..c]);
                for ((o, a), b) in x[e * c..][..c].iter_mut().zip(tok).zip(p) {
                    *o = a + b;
                }
                e += 1;
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let qkv = dense(&norm(&x, &layer.ln_1), &layer.c_attn);
            for (&(r, _), e_qkv) in entries.iter().zip(qkv.chunks_exact(3 * c)) {
                let cache = &mut *rows[r].cache;
                cache.k[l].extend_from_slice(&e_qkv[c..2 * c]);
                cache.v[l].extend_from_slice(&e_qkv[2 * c..]);
            }
            let caches: Vec<(&[f32], &[f32])> = rows.iter().map(|row| (row.cache.k[l].as_slice(), row.cache.v[l].as_slice())).collect();
            let mut y = vec![0f32; n * c];
            let attend = |(e, out): (usize, &mut [f32])| {
                let (r, pos) = entries[e];
                attention(&qkv[e * 3 * c..][..c], caches[r].0, caches[r].1, pos + 1, self.cfg.n_head, out)
            };
            if n * c * block >= PAR_WORK {
                y.par_chunks_mut(c).enumerate().for_each(attend);
            } else {
                y.chunks_mut(c).enumerate().for_each(attend);
            }
            add(&mut x, &dense(&y, &layer.attn_proj));
            let mut h = dense(&norm(&x, &layer.ln_2), &layer.c_fc);
            gelu(&mut h);
            add(&mut x, &dense(&h, &layer.mlp_proj));
        }
        for row in rows.iter_mut() {
            row.cache.len += row.tokens.len();
        }
        // The head only for each row's last entry.
        let mut last = Vec::with_capacity(rows.len() * c);
        let mut e = 0;
        for row in rows.iter() {
            e += row.tokens.len();
            last.extend_from_slice(&x[(e - 1) * c..e * c]);
        }
        let logits = dense(&norm(&last, &self.ln_f), &self.wte);
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}

/// Multiply-adds below which a step stays on the calling thread.
const PAR_WORK: usize = 1 << 16;
/// Output features per parallel task of a linear layer.
const FEATURES: usize = 16;

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Layer norm of each `n_embd`-wide row, as the training kernel computes it.
fn norm(x: &[f32], n: &Norm) -> Vec<f32> {
    let c = n.w.len();
    let mut y = vec![0f32; x.len()];
    for (row, out) in x.chunks_exact(c).zip(y.chunks_exact_mut(c)) {
        norm_row(row, &n.w, n.b.as_deref(), out);
    }
    y
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn norm_row(row: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    let n = row.len() as f32;
    let mean = simd::sum(row) / n;
    let rstd = 1.0 / (simd::sum_sq_dev(row, mean) / n + LN_EPS as f32).sqrt();
    for ((o, &v), &wi) in out.iter_mut().zip(row).zip(w) {
        *o = (v - mean) * rstd * wi;
    }
    if let Some(b) = b {
        add(out, b);
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn gelu(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v *= f32::cdf_pdf(*v).0;
    }
}

/// `x Wᵀ + b` for the rows of `x`.
fn dense(x: &[f32], d: &Dense) -> Vec<f32> {
    let rows = x.len() / d.inp;
    // Transposed first (feature-major), so that each task owns a contiguous block.
    let mut yt = vec![0f32; d.out * rows];
    let task = |(f, out): (usize, &mut [f32])| dense_block(x, rows, &d.w[f * FEATURES * d.inp..], d.inp, out);
    if rows * d.inp * d.out >= PAR_WORK && rayon::current_num_threads() > 1 {
        yt.par_chunks_mut(FEATURES * rows).enumerate().for_each(task);
    } else {
        yt.chunks_mut(FEATURES * rows).enumerate().for_each(task);
    }
    let mut y = vec![0f32; rows * d.out];
    for (r, out) in y.chunks_exact_mut(d.out).enumerate() {
        for (f, o) in out.iter_mut().enumerate() {
            *o = yt[f * rows + r];
        }
        if let Some(b) = &d.b {
            add(out, b);
        }
    }
    y
}

/// `out[f * rows + r] = x_r · w_f` for the features `f` of this block: four rows share a
/// pass over each weight row, with each dot product summed exactly as [`simd::dot`] does.
#[multiversion(targets("x86_64+avx2+fma"))]
fn dense_block(x: &[f32], rows: usize, w: &[f32], inp: usize, out: &mut [f32]) {
    for (f, out) in out.chunks_exact_mut(rows).enumerate() {
        let wf = &w[f * inp..(f + 1) * inp];
        let mut r = 0;
        while r + 4 <= rows {
            let xs = [&x[r * inp..][..inp], &x[(r + 1) * inp..][..inp], &x[(r + 2) * inp..][..inp], &x[(r + 3) * inp..][..inp]];
            out[r..r + 4].copy_from_slice(&dot4(xs, wf));
            r += 4;
        }
        for (o, xr) in out[r..].iter_mut().zip(x[r * inp..].chunks_exact(inp)) {
            *o = simd::dot(xr, wf);
        }
    }
}

/// Four dot products with one vector, each in [`simd::dot`]'s lanes and order.
#[inline(always)]
fn dot4(xs: [&[f32]; 4], w: &[f32]) -> [f32; 4] {
    const L: usize = 8;
    let mut acc = [[0f32; L]; 4];
    let n = w.len() / L * L;
    let mut i = 0;
    while i < n {
        let wc = &w[i..i + L];
        for (a, x) in acc.iter_mut().zip(&xs) {
            let xc = &x[i..i + L];
            for j in 0..L {
                a[j] += xc[j] * wc[j];
            }
        }
        i += L;
    }
    let mut out = [0f32; 4];
    for ((o, a), x) in out.iter_mut().zip(acc).zip(&xs) {
        *o = simd::fold(a, x[n..].iter().zip(&w[n..]).map(|(&p, &q)| p * q));
    }
    out
}

/// Causal attention of one entry (its query `q`, at position `len - 1`) over the first `len`
/// cached keys and values of its sequence, head by head, into `out`.
#[multiversion(targets("x86_64+avx2+fma"))]
fn attention(q: &[f32], k: &[f32], v: &[f32], len: usize, n_head: usize, out: &mut [f32]) {
    let c = q.len();
    let hd = c / n_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut p = vec![0f32; len];
    for h in 0..n_head {
        let qh = &q[h * hd..][..hd];
        for (t, s) in p.iter_mut().enumerate() {
            *s = simd::dot(qh, &k[t * c + h * hd..][..hd]) * scale;
        }
        let m = simd::max(&p);
        for s in p.iter_mut() {
            *s = simd::exp_f32(*s - m);
        }
        let inv = 1.0 / simd::sum(&p);
        let oh = &mut out[h * hd..][..hd];
        oh.fill(0.0);
        for (t, &s) in p.iter().enumerate() {
            let w = s * inv;
            for (o, &vv) in oh.iter_mut().zip(&v[t * c + h * hd..][..hd]) {
                *o += w * vv;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Gpt;
    use crate::model::ops::Dropout;
    use candle_core::Device;

    /// A 12-position model (candle's and the decoder's) with weights 20× the init.
    pub(crate) fn tiny(seed: u64, bias: bool) -> (Gpt, Decoder) {
        let cfg = GptConfig { vocab_size: 17, block_size: 12, n_layer: 2, n_head: 2, n_embd: 20, bias, dropout: 0.0 };
        let ps = ParamStore::seeded(seed);
        let m = Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        // Larger weights than the init so that the logits are far from uniform.
        for (_, v) in ps.vars() {
            v.set(&(v.as_tensor() * 20.0).unwrap()).unwrap();
        }
        let d = Decoder::from_store(&cfg, &ps).unwrap();
        (m, d)
    }

    fn full_logits(m: &Gpt, seq: &[u32]) -> Vec<Vec<f32>> {
        let ids = Tensor::from_slice(seq, (1, seq.len()), &Device::Cpu).unwrap();
        let l = m.forward(&ids, &mut Dropout::off()).unwrap();
        l.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
    }

    /// Relative to the logits' scale: the 20× weights amplify rounding differences of the
    /// summation order; a wrong cache or position differs by order 1.
    fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        a.iter().zip(b).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f32::max)
    }

    #[test]
    fn incremental_logits_equal_candles_full_forward_pass() {
        for bias in [true, false] {
            let (m, d) = tiny(3, bias);
            let seq = [3u32, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8];
            let full = full_logits(&m, &seq);
            let mut cache = d.new_cache();
            // A prompt of 4 in one step, then one token at a time.
            let mut got = vec![d.forward(&mut [Row { cache: &mut cache, tokens: &seq[..4] }]).unwrap().remove(0)];
            for t in 4..seq.len() {
                got.push(d.forward(&mut [Row { cache: &mut cache, tokens: &seq[t..t + 1] }]).unwrap().remove(0));
            }
            assert_eq!(cache.len(), 12);
            for (i, g) in got.iter().enumerate() {
                let worst = rel_diff(g, &full[i + 3]);
                assert!(worst < 1e-4, "bias {bias}, position {}: {worst}", i + 3);
            }
            // Past the window, and outside the vocabulary: errors, not wrong numbers.
            let err = d.forward(&mut [Row { cache: &mut cache, tokens: &[1] }]).unwrap_err().to_string();
            assert!(err.contains("block_size is 12"), "{err}");
            let err = d.forward(&mut [Row { cache: &mut d.new_cache(), tokens: &[17] }]).unwrap_err().to_string();
            assert!(err.contains("outside the model's vocabulary of 17"), "{err}");
        }
    }

    /// The bits of a sequence's logits do not depend on what else is in the step, nor on the
    /// thread count.
    #[test]
    fn a_row_gets_the_same_bits_alone_in_a_batch_and_on_any_thread_count() {
        let (_, d) = tiny(4, true);
        let prompts: Vec<Vec<u32>> = (0..7).map(|i| (0..(1 + i % 5)).map(|j| ((i * 5 + j * 3) % 17) as u32).collect()).collect();
        let alone: Vec<Vec<f32>> = prompts.iter().map(|p| d.forward(&mut [Row { cache: &mut d.new_cache(), tokens: p }]).unwrap().remove(0)).collect();
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let together = pool.install(|| {
                let mut caches: Vec<RowCache> = prompts.iter().map(|_| d.new_cache()).collect();
                let mut rows: Vec<Row> = caches.iter_mut().zip(&prompts).map(|(cache, p)| Row { cache, tokens: p }).collect();
                d.forward(&mut rows).unwrap()
            });
            assert_eq!(together, alone, "{threads} threads");
        }
        // A large batch takes the parallel paths.
        let big: Vec<Vec<u32>> = (0..96).map(|i| vec![(i % 17) as u32, 3, 5, 7, 11, 13]).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let mut caches: Vec<RowCache> = big.iter().map(|_| d.new_cache()).collect();
                let mut rows: Vec<Row> = caches.iter_mut().zip(&big).map(|(cache, p)| Row { cache, tokens: p }).collect();
                d.forward(&mut rows).unwrap()
            })
        };
        let one = run(1);
        assert_eq!(one, run(4));
        assert_eq!(one[5], d.forward(&mut [Row { cache: &mut d.new_cache(), tokens: &big[5] }]).unwrap()[0]);
    }

    #[test]
    fn dot4_sums_as_simd_dot_does() {
        let v = |s: u32, n: usize| (0..n).map(|i| (((i as u32 * 2654435761u32) ^ s) % 1000) as f32 / 37.0 - 13.0).collect::<Vec<f32>>();
        for n in [0, 5, 8, 21, 128] {
            let w = v(1, n);
            let xs = [v(2, n), v(3, n), v(4, n), v(5, n)];
            let got = dot4([&xs[0], &xs[1], &xs[2], &xs[3]], &w);
            for (g, x) in got.iter().zip(&xs) {
                assert_eq!(g.to_bits(), simd::dot(x, &w).to_bits(), "n = {n}");
            }
        }
    }
}
