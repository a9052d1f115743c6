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
//! the same code in the same order whatever else is in the step: a linear output is its bias
//! and one fused multiply-add per input in input order ([`super::kernels::packed`]: the register-blocked
//! kernel keeps rows and features in separate registers and lanes, never parts of one sum),
//! an attention score is one fused multiply-add per head dimension in order (the keys are
//! cached in tiles of [`KT`] positions so that a vector holds [`KT`] positions' scores),
//! layer norm and softmax are per entry, and threads split the work by output features or
//! entries, never inside a sum. So a sequence sampled in a batch of 64 gets exactly the
//! logits it gets alone, and batched sampling equals one-at-a-time sampling token for token.
//! (Against candle's full forward pass the logits agree to float rounding: tested.)

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use super::config::Activation;
use super::kernels::packed::{Packed, Then};
use super::kernels::simd;
use super::rope::{RopeTable, rotate};
use super::{GptConfig, ModelError, ParamStore, Result};

/// Positions per tile of the key cache: one 8-lane vector of scores.
pub const KT: usize = 8;

/// A norm's gain (and bias); RMSNorm when `rms`.
struct Norm {
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    rms: bool,
    eps: f32,
}

enum Mlp {
    /// GPT-2: `c_fc`, GELU (erf, fused into the product; or the tanh form after it), `c_proj`.
    Gelu { c_fc: Packed, proj: Packed, tanh: bool },
    /// The Llama family: the packed `[gate | up]`, SwiGLU, `down_proj`.
    SwiGlu { gate_up: Packed, down: Packed },
}

struct Layer {
    ln_1: Norm,
    c_attn: Packed,
    attn_proj: Packed,
    ln_2: Norm,
    mlp: Mlp,
}

/// A model's weights as flat `f32` vectors, ready to generate (see the module doc).
pub struct Decoder {
    cfg: GptConfig,
    /// The token embedding, also the output head when tied: (vocab, C), packed for the head
    /// (an embedding lookup reads a row of it).
    wte: Packed,
    /// Learned positions (GPT-2).
    wpe: Option<Vec<f32>>,
    /// An untied output head.
    lm_head: Option<Packed>,
    /// Rotary positions (the Llama family).
    rope: Option<Arc<RopeTable>>,
    layers: Vec<Layer>,
    ln_f: Norm,
}

/// One sequence's keys and values, one vector per layer and key/value head (`layer ·
/// kv_heads + head`), so that attention reads each head's cache front to back. Keys in tiles
/// of [`KT`] positions, feature-major within a tile (position `t`'s feature `d` at `(t / KT ·
/// hd + d) · KT + t % KT`, a partly filled last tile padded with zeros), so that a vector
/// load gives [`KT`] positions of one feature; values position by position, `hd` each.
#[derive(Clone, Debug, Default)]
pub struct RowCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    len: usize,
}

/// Caches the key of position `pos` (the next one) in `k`'s tiles.
fn push_key(k: &mut Vec<f32>, pos: usize, key: &[f32]) {
    let hd = key.len();
    let tile = pos / KT;
    if k.len() < (tile + 1) * hd * KT {
        k.resize((tile + 1) * hd * KT, 0.0);
    }
    for (slot, &v) in k[tile * hd * KT + pos % KT..].iter_mut().step_by(KT).zip(key) {
        *slot = v;
    }
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
    /// From parameters named as [`super::Gpt`] names them (`transformer.wte.weight`, …, or
    /// `model.embed_tokens.weight`, …), as [`ParamStore::vars`] lists them. A snapshot: later
    /// changes to the tensors are not seen.
    pub fn new(cfg: &GptConfig, params: &[(String, Tensor)]) -> Result<Decoder> {
        if let Some((_, msg)) = cfg.problems().first() {
            return Err(ModelError::Invalid(format!("invalid model config: {msg}")));
        }
        // A step allocates and frees buffers of up to megabytes: keep them in the process.
        super::kernels::tune_allocator();
        let by_name: HashMap<&str, &Tensor> = params.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let get = |name: &str, dims: &[usize]| -> Result<Vec<f32>> {
            let t = by_name.get(name).ok_or_else(|| {
                ModelError::Invalid(format!("the model has no parameter `{name}`"))
            })?;
            if t.dims() != dims {
                return Err(ModelError::Invalid(format!(
                    "parameter `{name}` has shape {:?}, expected {dims:?}",
                    t.dims()
                )));
            }
            Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
        };
        let opt = |name: &str, n: usize, has: bool| {
            if has { get(name, &[n]).map(Some) } else { Ok(None) }
        };
        let dense = |p: &str, inp: usize, out: usize, bias: bool| -> Result<Packed> {
            Ok(Packed::new(
                &get(&format!("{p}.weight"), &[out, inp])?,
                opt(&format!("{p}.bias"), out, bias)?.as_deref(),
                inp,
                out,
            ))
        };
        let (c, f, llama) = (cfg.n_embd, cfg.inner(), cfg.is_llama());
        let norm = |p: &str| -> Result<Norm> {
            Ok(Norm {
                w: get(&format!("{p}.weight"), &[c])?,
                b: opt(&format!("{p}.bias"), c, cfg.bias && !llama)?,
                rms: llama,
                eps: cfg.eps() as f32,
            })
        };
        let layers = (0..cfg.n_layer)
            .map(|i| {
                if llama {
                    let p = format!("model.layers.{i}");
                    return Ok(Layer {
                        ln_1: norm(&format!("{p}.input_layernorm"))?,
                        c_attn: dense(
                            &format!("{p}.self_attn.qkv_proj"),
                            c,
                            cfg.qkv_width(),
                            cfg.qkv_bias,
                        )?,
                        attn_proj: dense(&format!("{p}.self_attn.o_proj"), c, c, false)?,
                        ln_2: norm(&format!("{p}.post_attention_layernorm"))?,
                        mlp: Mlp::SwiGlu {
                            gate_up: dense(&format!("{p}.mlp.gate_up_proj"), c, 2 * f, false)?,
                            down: dense(&format!("{p}.mlp.down_proj"), f, c, false)?,
                        },
                    });
                }
                let p = format!("transformer.h.{i}");
                Ok(Layer {
                    ln_1: norm(&format!("{p}.ln_1"))?,
                    c_attn: dense(&format!("{p}.attn.c_attn"), c, 3 * c, cfg.bias)?,
                    attn_proj: dense(&format!("{p}.attn.c_proj"), c, c, cfg.bias)?,
                    ln_2: norm(&format!("{p}.ln_2"))?,
                    mlp: Mlp::Gelu {
                        c_fc: dense(&format!("{p}.mlp.c_fc"), c, f, cfg.bias)?,
                        proj: dense(&format!("{p}.mlp.c_proj"), f, c, cfg.bias)?,
                        tanh: cfg.activation == Activation::GeluNew,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (wte, wpe, ln_f) = if llama {
            ("model.embed_tokens.weight", None, norm("model.norm")?)
        } else {
            (
                "transformer.wte.weight",
                Some(get("transformer.wpe.weight", &[cfg.block_size, c])?),
                norm("transformer.ln_f")?,
            )
        };
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(Packed::new(
                &get("lm_head.weight", &[cfg.vocab_size, c])?,
                None,
                c,
                cfg.vocab_size,
            ))
        };
        Ok(Decoder {
            cfg: cfg.clone(),
            wte: Packed::new(&get(wte, &[cfg.vocab_size, c])?, None, c, cfg.vocab_size),
            wpe,
            lm_head,
            rope: llama.then(|| RopeTable::new(&cfg.rope, cfg.head_dim(), cfg.block_size)),
            layers,
            ln_f,
        })
    }

    /// From the current values of a model's parameters.
    pub fn from_store(cfg: &GptConfig, params: &ParamStore) -> Result<Decoder> {
        let tensors: Vec<(String, Tensor)> =
            params.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        Decoder::new(cfg, &tensors)
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> RowCache {
        let n = self.cfg.n_layer * self.cfg.kv_heads();
        RowCache { k: vec![Vec::new(); n], v: vec![Vec::new(); n], len: 0 }
    }

    /// Feeds each row its tokens (at least one, at the positions after its cache), extends
    /// the caches, and returns each row's logits for the token after its last one.
    pub fn forward(&self, rows: &mut [Row<'_>]) -> Result<Vec<Vec<f32>>> {
        let (c, block, vocab) = (self.cfg.n_embd, self.cfg.block_size, self.cfg.vocab_size);
        let (heads, kvh, hd) = (self.cfg.n_head, self.cfg.kv_heads(), self.cfg.head_dim());
        let w = self.cfg.qkv_width();
        // One entry per fed token: (row, position).
        let mut entries = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            if row.tokens.is_empty() {
                return Err(ModelError::Invalid(format!(
                    "row {r} has no token: feed each sequence at least one token"
                )));
            }
            if row.cache.len + row.tokens.len() > block {
                return Err(ModelError::Invalid(format!(
                    "{} positions given but the model's block_size is {block}",
                    row.cache.len + row.tokens.len()
                )));
            }
            if let Some(&bad) = row.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::Invalid(format!(
                    "token id {bad} is outside the model's vocabulary of {vocab}"
                )));
            }
            entries.extend((0..row.tokens.len()).map(|i| (r, row.cache.len + i)));
        }
        let n = entries.len();
        let mut x = vec![0f32; n * c];
        let mut e = 0;
        for row in rows.iter() {
            for (i, &t) in row.tokens.iter().enumerate() {
                let out = &mut x[e * c..][..c];
                match &self.wpe {
                    Some(wpe) => {
                        let p = &wpe[(row.cache.len + i) * c..][..c];
                        for ((o, a), b) in out.iter_mut().zip(self.wte.row(t as usize)).zip(p) {
                            *o = a + b;
                        }
                    }
                    None => out.iter_mut().zip(self.wte.row(t as usize)).for_each(|(o, a)| *o = a),
                }
                e += 1;
            }
        }
        // Rows or entries split over the threads when the step is large enough.
        let parallel = n * c * block >= PAR_WORK && rayon::current_num_threads() > 1;
        let f = self.cfg.inner();
        let swiglu = self.cfg.is_llama();
        // The step's buffers, reused by every layer.
        let (mut normed, mut qkv, mut y) =
            (vec![0f32; n * c], vec![0f32; n * w], vec![0f32; n * c]);
        let mut h = vec![0f32; n * if swiglu { 2 * f } else { f }];
        let mut act = if swiglu { vec![0f32; n * f] } else { Vec::new() };
        for (l, layer) in self.layers.iter().enumerate() {
            norm(&x, &layer.ln_1, &mut normed, parallel);
            layer.c_attn.forward_into(&normed, &mut qkv, Then::Store);
            if let Some(table) = &self.rope {
                let turn = |(e, q): (usize, &mut [f32])| {
                    let (cos, sin) = table.at(entries[e].1);
                    for head in q[..(heads + kvh) * hd].chunks_exact_mut(hd) {
                        rotate(head, cos, sin);
                    }
                };
                if parallel {
                    qkv.par_chunks_exact_mut(w).enumerate().for_each(turn);
                } else {
                    qkv.chunks_exact_mut(w).enumerate().for_each(turn);
                }
            }
            // Each row's keys and values into its cache (rows in parallel: their entries are
            // contiguous, in row order).
            let mut parts = Vec::with_capacity(rows.len());
            let mut rest = qkv.as_slice();
            for row in rows.iter_mut() {
                let (mine, others) = rest.split_at(row.tokens.len() * w);
                parts.push((&mut *row.cache, mine));
                rest = others;
            }
            let push = |(cache, q): (&mut RowCache, &[f32])| {
                for (i, e_qkv) in q.chunks_exact(w).enumerate() {
                    let kv = &e_qkv[c..];
                    let (keys, values) =
                        (kv[..kvh * hd].chunks_exact(hd), kv[kvh * hd..].chunks_exact(hd));
                    for ((k, v), (key, value)) in cache.k[l * kvh..]
                        .iter_mut()
                        .zip(&mut cache.v[l * kvh..])
                        .zip(keys.zip(values))
                    {
                        push_key(k, cache.len + i, key);
                        v.extend_from_slice(value);
                    }
                }
            };
            if parallel {
                parts.into_par_iter().for_each(push);
            } else {
                parts.into_iter().for_each(push);
            }
            let caches: Vec<&RowCache> = rows.iter().map(|row| &*row.cache).collect();
            let attend = |scores: &mut Vec<f32>, (e, out): (usize, &mut [f32])| {
                let (r, pos) = entries[e];
                let layer = l * kvh..(l + 1) * kvh;
                attention(
                    &qkv[e * w..][..c],
                    heads,
                    &caches[r].k[layer.clone()],
                    &caches[r].v[layer],
                    pos + 1,
                    scores,
                    out,
                )
            };
            if parallel {
                y.par_chunks_mut(c).enumerate().for_each_init(Vec::new, attend);
            } else {
                let mut scores = Vec::new();
                y.chunks_mut(c).enumerate().for_each(|item| attend(&mut scores, item));
            }
            layer.attn_proj.forward_into(&y, &mut x, Then::Add);
            norm(&x, &layer.ln_2, &mut normed, parallel);
            match &layer.mlp {
                Mlp::Gelu { c_fc, proj, tanh: false } => {
                    c_fc.forward_into(&normed, &mut h, Then::Gelu);
                    proj.forward_into(&h, &mut x, Then::Add);
                }
                Mlp::Gelu { c_fc, proj, tanh: true } => {
                    c_fc.forward_into(&normed, &mut h, Then::Store);
                    h.iter_mut().for_each(|v| *v = gelu_tanh(*v));
                    proj.forward_into(&h, &mut x, Then::Add);
                }
                Mlp::SwiGlu { gate_up, down } => {
                    gate_up.forward_into(&normed, &mut h, Then::Store);
                    let one =
                        |(gu, o): (&[f32], &mut [f32])| super::kernels::swiglu::forward_row(gu, o);
                    if parallel {
                        h.par_chunks_exact(2 * f).zip(act.par_chunks_exact_mut(f)).for_each(one);
                    } else {
                        h.chunks_exact(2 * f).zip(act.chunks_exact_mut(f)).for_each(one);
                    }
                    down.forward_into(&act, &mut x, Then::Add);
                }
            }
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
        let mut normed = vec![0f32; last.len()];
        norm(&last, &self.ln_f, &mut normed, parallel);
        let logits = self.lm_head.as_ref().unwrap_or(&self.wte).forward(&normed);
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}

/// GELU's tanh form as candle computes it (`gelu_new`).
fn gelu_tanh(v: f32) -> f32 {
    0.5 * v * (1.0 + f32::tanh(0.797_884_6 * v * (1.0 + 0.044715 * v * v)))
}

/// Multiply-adds below which a step's attention (and the rest of the step but the linear
/// layers, which decide for themselves) stays on the calling thread.
const PAR_WORK: usize = 1 << 16;

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Layer norm of each `n_embd`-wide row of `x` into `y`, as the training kernel computes it,
/// rows in parallel or not.
fn norm(x: &[f32], n: &Norm, y: &mut [f32], parallel: bool) {
    let c = n.w.len();
    let one = |(row, out): (&[f32], &mut [f32])| norm_row(row, n, out);
    if parallel {
        x.par_chunks_exact(c).zip(y.par_chunks_exact_mut(c)).for_each(one);
    } else {
        x.chunks_exact(c).zip(y.chunks_exact_mut(c)).for_each(one);
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn norm_row(row: &[f32], n: &Norm, out: &mut [f32]) {
    if n.rms {
        return super::kernels::rms_norm::forward_row(row, &n.w, f64::from(n.eps), out);
    }
    let c = row.len() as f32;
    let mean = simd::sum(row) / c;
    let rstd = 1.0 / (simd::sum_sq_dev(row, mean) / c + n.eps).sqrt();
    for ((o, &v), &wi) in out.iter_mut().zip(row).zip(&n.w) {
        *o = (v - mean) * rstd * wi;
    }
    if let Some(b) = &n.b {
        add(out, b);
    }
}

/// Causal attention of one entry (its query `q`, at position `len - 1`) over the first `len`
/// cached keys (`k`, one vector of tiles per head: see [`RowCache`]) and values (`v`, one per
/// head) of its sequence, head by head, into `out`; `scores` is scratch space. A score is `scale · Σ_d q_d k_d` summed by fused multiply-adds
/// in `d` order, [`KT`] positions per vector; the output `Σ_t p_t v_t` by fused multiply-adds
/// in `t` order, then divided by `Σ_t p_t` (in [`simd::sum`]'s lanes).
#[multiversion(targets("x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn attention(
    q: &[f32],
    heads: usize,
    k: &[Vec<f32>],
    v: &[Vec<f32>],
    len: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len() / heads;
    // Query heads per key/value head (grouped-query attention).
    let group = heads / k.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let tiles = len.div_ceil(KT);
    scores.clear();
    scores.resize(tiles * KT, 0.0);
    for h in 0..heads {
        let (k, v) = (&k[h / group], &v[h / group]);
        let qh = &q[h * hd..][..hd];
        let tile = |t: usize| &k[t * hd * KT..][..hd * KT];
        // Four tiles per pass (independent FMA chains), then the rest.
        let mut groups = scores.chunks_exact_mut(4 * KT);
        let mut t = 0;
        for s in &mut groups {
            tile_scores(qh, [tile(t), tile(t + 1), tile(t + 2), tile(t + 3)], scale, s);
            t += 4;
        }
        for s in groups.into_remainder().chunks_exact_mut(KT) {
            tile_scores(qh, [tile(t)], scale, s);
            t += 1;
        }
        let p = &mut scores[..len];
        let m = simd::max(p);
        for s in p.iter_mut() {
            *s = simd::exp_f32(*s - m);
        }
        let inv = 1.0 / simd::sum(p);
        // The head's output in blocks of 32, 8, then 1 features, each block's sums in registers.
        let mut d = 0;
        while d < hd {
            let o = &mut out[h * hd + d..];
            d += match hd - d {
                32.. => weighted_sum::<32>(p, &v[d..], hd, inv, o),
                8.. => weighted_sum::<8>(p, &v[d..], hd, inv, o),
                _ => weighted_sum::<1>(p, &v[d..], hd, inv, o),
            };
        }
    }
}

/// `out[j] = inv · Σ_t p_t v[t · c + j]` for `j < W` (fused multiply-adds in `t` order);
/// returns `W`.
#[inline(always)]
fn weighted_sum<const W: usize>(
    p: &[f32],
    v: &[f32],
    c: usize,
    inv: f32,
    out: &mut [f32],
) -> usize {
    let mut acc = [0f32; W];
    for (t, &s) in p.iter().enumerate() {
        for (a, &vv) in acc.iter_mut().zip(&v[t * c..][..W]) {
            *a = s.mul_add(vv, *a);
        }
    }
    for (o, a) in out[..W].iter_mut().zip(acc) {
        *o = a * inv;
    }
    W
}

/// The scaled scores of `N` tiles of [`KT`] positions: `out[n · KT + j] = scale · Σ_d q_d
/// tiles[n][d · KT + j]`, fused multiply-adds in `d` order.
#[inline(always)]
fn tile_scores<const N: usize>(q: &[f32], tiles: [&[f32]; N], scale: f32, out: &mut [f32]) {
    let mut acc = [[0f32; KT]; N];
    for (d, &qd) in q.iter().enumerate() {
        for (a, tile) in acc.iter_mut().zip(&tiles) {
            for (s, &kv) in a.iter_mut().zip(&tile[d * KT..][..KT]) {
                *s = qd.mul_add(kv, *s);
            }
        }
    }
    for (o, a) in out.chunks_exact_mut(KT).zip(&acc) {
        for (o, &s) in o.iter_mut().zip(a) {
            *o = s * scale;
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
        model(
            GptConfig {
                vocab_size: 17,
                block_size: 12,
                n_layer: 2,
                n_head: 2,
                n_embd: 20,
                bias,
                dropout: 0.0,
                ..Default::default()
            },
            seed,
        )
    }

    /// A 48-position model: attention takes its four-tile path (more than 32 positions), heads
    /// of 12 its 8-wide and 1-wide output blocks, and the head's 37 tokens three panels.
    fn long(seed: u64) -> (Gpt, Decoder) {
        model(
            GptConfig {
                vocab_size: 37,
                block_size: 48,
                n_layer: 2,
                n_head: 3,
                n_embd: 36,
                bias: true,
                dropout: 0.0,
                ..Default::default()
            },
            seed,
        )
    }

    fn model(cfg: GptConfig, seed: u64) -> (Gpt, Decoder) {
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
            // A prompt of 4 in one step, then one token at a time.
            let (got, mut cache) = token_by_token(&d, &seq, 4);
            assert_eq!(cache.len(), 12);
            for (i, g) in got.iter().enumerate() {
                let worst = rel_diff(g, &full[i + 3]);
                assert!(worst < 1e-4, "bias {bias}, position {}: {worst}", i + 3);
            }
            // Past the window, and outside the vocabulary: errors, not wrong numbers.
            let err =
                d.forward(&mut [Row { cache: &mut cache, tokens: &[1] }]).unwrap_err().to_string();
            assert!(err.contains("block_size is 12"), "{err}");
            let err = d
                .forward(&mut [Row { cache: &mut d.new_cache(), tokens: &[17] }])
                .unwrap_err()
                .to_string();
            assert!(err.contains("outside the model's vocabulary of 17"), "{err}");
        }
    }

    /// A parameter missing or of the wrong shape, or a bad config, is an error naming it; so is
    /// a row fed no token.
    #[test]
    fn bad_parameters_configs_and_rows_are_errors() {
        let cfg = GptConfig {
            vocab_size: 17,
            block_size: 12,
            n_layer: 2,
            n_head: 2,
            n_embd: 20,
            bias: true,
            dropout: 0.0,
            ..Default::default()
        };
        let ps = ParamStore::seeded(1);
        Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let params: Vec<(String, Tensor)> =
            ps.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
        let err = |params: &[(String, Tensor)], cfg: &GptConfig| {
            Decoder::new(cfg, params).err().expect("an error").to_string()
        };
        let without: Vec<_> =
            params.iter().filter(|(n, _)| n != "transformer.h.1.mlp.c_fc.bias").cloned().collect();
        assert_eq!(
            err(&without, &cfg),
            "the model has no parameter `transformer.h.1.mlp.c_fc.bias`"
        );
        let reshaped: Vec<_> = params
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    if n == "transformer.wpe.weight" {
                        t.narrow(0, 0, 6).unwrap()
                    } else {
                        t.clone()
                    },
                )
            })
            .collect();
        assert_eq!(
            err(&reshaped, &cfg),
            "parameter `transformer.wpe.weight` has shape [6, 20], expected [12, 20]"
        );
        let e = err(&params, &GptConfig { n_head: 3, ..cfg.clone() });
        assert!(
            e.starts_with("invalid model config: ") && e.contains("multiple of `n_head`"),
            "{e}"
        );
        let d = Decoder::new(&cfg, &params).unwrap();
        let (mut a, mut b) = (d.new_cache(), d.new_cache());
        let e = d
            .forward(&mut [Row { cache: &mut a, tokens: &[1] }, Row { cache: &mut b, tokens: &[] }])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "row 1 has no token: feed each sequence at least one token");
        assert!(a.is_empty(), "a failed step caches nothing");
    }

    /// Feeds `seq[..prompt]` in one step, then the rest one token per step: the logits after
    /// each step, and the cache.
    fn token_by_token(d: &Decoder, seq: &[u32], prompt: usize) -> (Vec<Vec<f32>>, RowCache) {
        let mut cache = d.new_cache();
        let mut got = vec![
            d.forward(&mut [Row { cache: &mut cache, tokens: &seq[..prompt] }]).unwrap().remove(0),
        ];
        for t in prompt..seq.len() {
            got.push(
                d.forward(&mut [Row { cache: &mut cache, tokens: &seq[t..t + 1] }])
                    .unwrap()
                    .remove(0),
            );
        }
        (got, cache)
    }

    /// Feeds each prompt as one step, all together on `threads` threads.
    fn together(d: &Decoder, prompts: &[Vec<u32>], threads: usize) -> Vec<Vec<f32>> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut caches: Vec<RowCache> = prompts.iter().map(|_| d.new_cache()).collect();
            let mut rows: Vec<Row> =
                caches.iter_mut().zip(prompts).map(|(cache, p)| Row { cache, tokens: p }).collect();
            d.forward(&mut rows).unwrap()
        })
    }

    /// Past 32 positions (attention's four-tile path) the logits are still candle's, and a
    /// sequence's bits are the same alone, in a batch, fed in one step or token by token, on
    /// any thread count.
    #[test]
    fn long_sequences_keep_their_bits_and_candles_logits() {
        let (m, d) = long(8);
        let seq: Vec<u32> = (0..48).map(|i| (i * 11 % 37) as u32).collect();
        let full = full_logits(&m, &seq);
        let (stepwise, _) = token_by_token(&d, &seq, 30);
        for (i, g) in stepwise.iter().enumerate() {
            let worst = rel_diff(g, &full[i + 29]);
            assert!(worst < 1e-4, "position {}: {worst}", i + 29);
        }
        assert_eq!(
            stepwise.last(),
            d.forward(&mut [Row { cache: &mut d.new_cache(), tokens: &seq }]).unwrap().first(),
            "one step or token by token"
        );
        // Lengths 1..=48 around the tile and group boundaries, 9 rows (two blocks of 4 and one
        // alone in the linear layers).
        let prompts: Vec<Vec<u32>> =
            [1, 7, 8, 9, 31, 32, 33, 40, 48].iter().map(|&n| seq[48 - n..].to_vec()).collect();
        let alone: Vec<Vec<f32>> =
            prompts.iter().map(|p| together(&d, std::slice::from_ref(p), 1).remove(0)).collect();
        for threads in [1, 2, 3] {
            assert_eq!(together(&d, &prompts, threads), alone, "{threads} threads");
        }
    }

    /// The bits of a sequence's logits do not depend on what else is in the step, nor on the
    /// thread count.
    #[test]
    fn a_row_gets_the_same_bits_alone_in_a_batch_and_on_any_thread_count() {
        let (_, d) = tiny(4, true);
        let prompts: Vec<Vec<u32>> = (0..7)
            .map(|i| (0..(1 + i % 5)).map(|j| ((i * 5 + j * 3) % 17) as u32).collect())
            .collect();
        let alone: Vec<Vec<f32>> = prompts
            .iter()
            .map(|p| {
                d.forward(&mut [Row { cache: &mut d.new_cache(), tokens: p }]).unwrap().remove(0)
            })
            .collect();
        for threads in [1, 3] {
            assert_eq!(together(&d, &prompts, threads), alone, "{threads} threads");
        }
        // A large batch takes the parallel paths.
        let big: Vec<Vec<u32>> = (0..96).map(|i| vec![(i % 17) as u32, 3, 5, 7, 11, 13]).collect();
        let one = together(&d, &big, 1);
        assert_eq!(one, together(&d, &big, 4));
        assert_eq!(
            one[5],
            d.forward(&mut [Row { cache: &mut d.new_cache(), tokens: &big[5] }]).unwrap()[0]
        );
    }

    /// The Llama family (RMSNorm, rotary positions, grouped key/value heads, q/k/v biases,
    /// SwiGLU, an untied head) and GPT-2's tanh GELU: the decoder's incremental logits are
    /// candle's full forward pass's, and a row's bits do not depend on the batch.
    #[test]
    fn llama_and_gelu_new_models_decode_as_candle_computes_them() {
        use crate::model::config::{Activation, tiny_llama};
        let llama = GptConfig { block_size: 12, ..tiny_llama(17, true) };
        let gelu_new = GptConfig {
            activation: Activation::GeluNew,
            norm_eps: Some(1e-6),
            ..tiny(1, true).0.config().clone()
        };
        for cfg in [llama, gelu_new] {
            let (m, d) = model(cfg.clone(), 5);
            let seq = [3u32, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8];
            let full = full_logits(&m, &seq);
            let (got, _) = token_by_token(&d, &seq, 4);
            for (i, g) in got.iter().enumerate() {
                let worst = rel_diff(g, &full[i + 3]);
                assert!(worst < 1e-4, "{:?}, position {}: {worst}", cfg.arch, i + 3);
            }
            let prompts: Vec<Vec<u32>> = (1..6).map(|n| seq[..n].to_vec()).collect();
            let alone: Vec<Vec<f32>> = prompts
                .iter()
                .map(|p| together(&d, std::slice::from_ref(p), 1).remove(0))
                .collect();
            assert_eq!(together(&d, &prompts, 3), alone);
        }
    }
}
