//! The model's primitive operations. Each has two implementations:
//!
//! - the fused CPU kernels of [`super::kernels`] (candle `CustomOp`s with hand-written
//!   backward passes): the default, several times faster;
//! - [`plain`]: the same maths from basic candle ops that all record a backward pass, kept
//!   as the reference the kernels are tested against. `HONE_PLAIN_OPS=1` (read once) or
//!   [`with_plain_ops`] selects them.
//!
//! candle 0.11's own `candle_nn::LayerNorm::forward` and `candle_nn::ops::softmax_last_dim`
//! run fused kernels that record *no* gradient (they use `apply_op*_no_bwd`), so training
//! through them silently stops at the first layer norm: neither is used here, and the tests
//! check every gradient against finite differences.

use std::cell::Cell;
use std::sync::OnceLock;

use candle_core::{D, DType, Device, Result, Tensor};

use super::kernels;
use super::rng::Rng;

thread_local! {
    static PLAIN_OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether the plain candle ops run instead of the fused kernels on this thread.
pub fn plain_ops() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    PLAIN_OVERRIDE.with(Cell::get).unwrap_or_else(|| {
        *ENV.get_or_init(|| {
            std::env::var("HONE_PLAIN_OPS").is_ok_and(|v| !v.is_empty() && v != "0")
        })
    })
}

/// Runs `f` with the plain ops (`true`) or the fused kernels (`false`) on this thread,
/// whatever `HONE_PLAIN_OPS` says (for comparing the two in tests and benchmarks).
pub fn with_plain_ops<R>(plain: bool, f: impl FnOnce() -> R) -> R {
    let before = PLAIN_OVERRIDE.with(|c| c.replace(Some(plain)));
    let out = f();
    PLAIN_OVERRIDE.with(|c| c.set(before));
    out
}

/// Layer norm over the last dimension: `(x - mean) / sqrt(var + eps) * weight (+ bias)`,
/// with the biased variance, as PyTorch computes it.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
    if plain_ops() {
        return plain::layer_norm(x, weight, bias, eps);
    }
    let y = kernels::layer_norm::layer_norm(x, weight, eps)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x Wᵀ (+ bias)` for `x` (…, in) and `weight` (out, in), as `nn.Linear`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if plain_ops() {
        return plain::linear(x, weight, bias);
    }
    let y = kernels::linear::linear(x, weight)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// A block's MLP, `gelu(x W_fcᵀ + b_fc) W_projᵀ + b_proj`: one fused node when there are
/// no biases, else linear, GELU, linear.
pub fn mlp(
    x: &Tensor,
    fc: (&Tensor, Option<&Tensor>),
    proj: (&Tensor, Option<&Tensor>),
) -> Result<Tensor> {
    if !plain_ops() && fc.1.is_none() && proj.1.is_none() {
        return kernels::mlp::mlp(x, fc.0, proj.0);
    }
    linear(&gelu(&linear(x, fc.0, fc.1)?)?, proj.0, proj.1)
}

/// A block's causal self-attention over all positions of `x` (B, T, C) with its input
/// projection `W_attn` (3C, C) and output projection `W_proj` (C, C): one fused node when
/// there are no biases and no attention dropout, else linear, [`causal_self_attention`],
/// linear.
pub fn self_attention(
    x: &Tensor,
    attn: (&Tensor, Option<&Tensor>),
    proj: (&Tensor, Option<&Tensor>),
    n_head: usize,
    dropout: &mut Dropout,
) -> Result<Tensor> {
    if !plain_ops() && !dropout.active() && attn.1.is_none() && proj.1.is_none() {
        return kernels::self_attention::self_attention(x, attn.0, proj.0, n_head);
    }
    let qkv = linear(x, attn.0, attn.1)?;
    linear(&causal_self_attention(&qkv, n_head, dropout)?, proj.0, proj.1)
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x²) + eps) * weight` (the Llama family).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if plain_ops() {
        return plain::rms_norm(x, weight, eps);
    }
    kernels::rms_norm::rms_norm(x, weight, eps)
}

/// `silu(gate) * up` from the packed `[gate | up]` projection (…, 2F): (…, F).
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    if plain_ops() {
        return plain::swiglu(gate_up);
    }
    kernels::swiglu::swiglu(gate_up)
}

/// Rotary positions 0..T on the first `heads` heads (queries, then keys) of the packed
/// projection (B, T, (H + 2·KV)·hd); the values pass unchanged.
pub fn rope_qk(
    qkv: &Tensor,
    table: &std::sync::Arc<super::rope::RopeTable>,
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    if plain_ops() {
        return plain::rope_qk(qkv, table, heads, head_dim);
    }
    kernels::rope::rope_qk(qkv, table, heads, head_dim)
}

/// Causal self-attention with `n_head` query heads sharing `n_kv` key/value heads, from the
/// packed projection (B, T, (H + 2·KV)·hd): (B, T, H·hd). One fused kernel unless the plain
/// ops are selected or attention dropout is on (then: split heads, repeat each key/value head
/// for its group, [`causal_attention`], merge heads).
pub fn grouped_self_attention(
    qkv: &Tensor,
    n_head: usize,
    n_kv: usize,
    dropout: &mut Dropout,
) -> Result<Tensor> {
    if !plain_ops() && !dropout.active() {
        return kernels::attention::grouped_self_attention(qkv, n_head, n_kv);
    }
    let (b, t, w) = qkv.dims3()?;
    let hd = w / (n_head + 2 * n_kv);
    let heads = |from: usize, n: usize| {
        qkv.narrow(2, from * hd, n * hd)?.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
    };
    let repeat = |x: Tensor| -> Result<Tensor> {
        let g = n_head / n_kv;
        if g == 1 {
            return Ok(x);
        }
        // (B, KV, T, hd) → (B, KV, g, T, hd) → (B, H, T, hd): transformers' `repeat_kv`.
        x.unsqueeze(2)?.broadcast_as((b, n_kv, g, t, hd))?.contiguous()?.reshape((b, n_head, t, hd))
    };
    let y = causal_attention(
        &heads(0, n_head)?,
        &repeat(heads(n_head, n_kv)?)?,
        &repeat(heads(n_head + n_kv, n_kv)?)?,
        dropout,
    )?;
    y.transpose(1, 2)?.reshape((b, t, n_head * hd))
}

/// GELU's tanh approximation (`gelu_new`, GPT-2's own), candle's op with its recorded backward.
pub fn gelu_new(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    plain::softmax_last_dim(x)
}

/// GELU, the exact (erf) form: nanoGPT's `nn.GELU()`, HF's `activation_function: "gelu"`.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if plain_ops() { plain::gelu(x) } else { kernels::gelu::gelu(x) }
}

/// The plain implementations: basic candle ops only, every gradient recorded by candle.
pub mod plain {
    use super::*;

    /// candle-nn's `Linear`: `W` broadcast over the batch, batched products.
    pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        candle_core::Module::forward(&candle_nn::Linear::new(weight.clone(), bias.cloned()), x)
    }

    /// Layer norm over the last dimension: `(x - mean) / sqrt(var + eps) * weight (+ bias)`,
    /// with the biased variance, as PyTorch computes it.
    pub fn layer_norm(
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        eps: f64,
    ) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
        let y = xn.broadcast_mul(weight)?;
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// RMSNorm: `weight * (x * rsqrt(mean(x²) + eps))`, as transformers' `LlamaRMSNorm`.
    pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&r)?.broadcast_mul(weight)
    }

    /// `silu(gate) * up` with `silu(g) = g / (1 + e^-g)`.
    pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
        let f = gate_up.dim(D::Minus1)? / 2;
        let (g, u) = (gate_up.narrow(D::Minus1, 0, f)?, gate_up.narrow(D::Minus1, f, f)?);
        let s = (g.neg()?.exp()? + 1.0)?.recip()?;
        (g * s)? * u
    }

    /// Rotary positions from basic ops: `q·cos + rotate_half(q)·sin` per head.
    pub fn rope_qk(
        qkv: &Tensor,
        table: &std::sync::Arc<crate::model::rope::RopeTable>,
        heads: usize,
        head_dim: usize,
    ) -> Result<Tensor> {
        let (b, t, w) = qkv.dims3()?;
        let half = head_dim / 2;
        let dev = qkv.device();
        let cos =
            Tensor::from_slice(&table.cos[..t * half], (t, 1, half), dev)?.to_dtype(qkv.dtype())?;
        let sin =
            Tensor::from_slice(&table.sin[..t * half], (t, 1, half), dev)?.to_dtype(qkv.dtype())?;
        let x = qkv.narrow(2, 0, heads * head_dim)?.reshape((b, t, heads, head_dim))?;
        let (x1, x2) = (x.narrow(3, 0, half)?, x.narrow(3, half, half)?);
        let y1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let y2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
        let rotated = Tensor::cat(&[y1, y2], 3)?.reshape((b, t, heads * head_dim))?;
        let rest = w - heads * head_dim;
        Tensor::cat(&[rotated, qkv.narrow(2, heads * head_dim, rest)?], 2)
    }

    /// Softmax over the last dimension. The row maximum is subtracted for stability and
    /// detached: softmax does not depend on it, so no gradient needs to flow through it.
    pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        let sum = e.sum_keepdim(D::Minus1)?;
        e.broadcast_div(&sum)
    }

    /// `log(sum(exp(x)))` over the last dimension, keeping it (stable: max detached as above).
    pub fn logsumexp_last_dim(x: &Tensor) -> Result<Tensor> {
        let max = x.max_keepdim(D::Minus1)?.detach();
        x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()?.broadcast_add(&max)
    }

    /// GELU, the exact (erf) form: nanoGPT's `nn.GELU()`, HF's `activation_function: "gelu"`.
    pub fn gelu(x: &Tensor) -> Result<Tensor> {
        x.gelu_erf()
    }

    /// Causal scaled dot-product attention from matmuls, mask, softmax (see [`super::causal_attention`]).
    pub fn causal_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        dropout: &mut Dropout,
    ) -> Result<Tensor> {
        let (_, _, t_q, hd) = q.dims4()?;
        let t_k = k.dim(2)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?;
        // A single new query (generation with a cache) may see every key: no mask needed.
        let att = if t_q > 1 {
            att.broadcast_add(&causal_mask(t_q, t_k - t_q, q.dtype(), q.device())?)?
        } else {
            att
        };
        let att = dropout.apply(&softmax_last_dim(&att)?)?;
        att.matmul(v)
    }

    /// Cross-entropy from logsumexp and gather (see [`super::cross_entropy`]).
    pub fn cross_entropy(
        logits: &Tensor,
        targets: &Tensor,
        weights: Option<&Tensor>,
    ) -> Result<Tensor> {
        let lse = logsumexp_last_dim(logits)?;
        let picked = logits.gather(&targets.unsqueeze(1)?, 1)?;
        let nll = (lse - picked)?.squeeze(1)?;
        super::reduce_nll(nll, weights)
    }
}

/// The additive causal mask for `t_q` queries at positions `offset..offset + t_q` over
/// `offset + t_q` keys: 0 where a query may look, -inf in its future.
pub fn causal_mask(t_q: usize, offset: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let t_k = offset + t_q;
    let mask: Vec<f32> = (0..t_q)
        .flat_map(|i| (0..t_k).map(move |j| if j <= offset + i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (t_q, t_k), device)?.to_dtype(dtype)
}

/// Causal scaled dot-product attention. `q`: (B, H, Tq, hd); `k`, `v`: (B, H, Tk, hd) where
/// the queries are the last `Tq` of the `Tk` positions. Returns (B, H, Tq, hd).
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    dropout: &mut Dropout,
) -> Result<Tensor> {
    if plain_ops() {
        return plain::causal_attention(q, k, v, dropout);
    }
    let hd = q.dim(3)?;
    let kt = k.t()?;
    let att = kernels::softmax::causal_softmax(
        &kernels::matmul::matmul(q, &kt)?,
        1.0 / (hd as f64).sqrt(),
    )?;
    kernels::matmul::matmul(&dropout.apply(&att)?, v)
}

/// Causal self-attention over all positions from the packed projection `qkv` (B, T, 3C)
/// (queries, keys, values side by side, as GPT-2's `c_attn` makes them), with `n_head`
/// heads: (B, T, C), heads merged. One fused kernel unless the plain ops are selected or
/// attention dropout is on (then: split heads, [`causal_attention`], merge heads).
pub fn causal_self_attention(qkv: &Tensor, n_head: usize, dropout: &mut Dropout) -> Result<Tensor> {
    if !plain_ops() && !dropout.active() {
        return kernels::attention::causal_self_attention(qkv, n_head);
    }
    let (b, t, c3) = qkv.dims3()?;
    let c = c3 / 3;
    let heads = |i: usize| {
        qkv.narrow(2, i * c, c)?.reshape((b, t, n_head, c / n_head))?.transpose(1, 2)?.contiguous()
    };
    let y = causal_attention(&heads(0)?, &heads(1)?, &heads(2)?, dropout)?;
    y.transpose(1, 2)?.reshape((b, t, c))
}

/// Mean cross-entropy of `logits` (N, V) against `targets` (N, u32). With `weights` (N), the
/// weighted mean `sum(w * nll) / sum(w)`: weight 0 leaves a position out (prompt tokens in
/// fine-tuning), which `candle_nn::loss::cross_entropy` cannot do.
pub fn cross_entropy(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    if plain_ops() {
        return plain::cross_entropy(logits, targets, weights);
    }
    reduce_nll(kernels::cross_entropy::nll(logits, targets)?, weights)
}

/// `log softmax(logits)[target]` per row: (N) for `logits` (N, V) and `targets` (N, u32),
/// with gradients (the fused cross-entropy's per-row loss, negated).
pub fn token_log_probs(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if plain_ops() {
        let lse = plain::logsumexp_last_dim(logits)?;
        return (logits.gather(&targets.unsqueeze(1)?, 1)? - lse)?.squeeze(1);
    }
    kernels::cross_entropy::nll(logits, targets)?.neg()
}

/// The mean, or the `weights`-weighted mean, of per-position losses.
fn reduce_nll(nll: Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    match weights {
        None => nll.mean_all(),
        Some(w) => (nll * w)?.sum_all()?.broadcast_div(&w.sum_all()?),
    }
}

/// Inverted dropout driven by a seeded [`Rng`], so a run is reproducible (candle's own
/// dropout draws from an unseedable RNG). Off when there is no RNG (evaluation) or p = 0.
pub struct Dropout<'a> {
    p: f64,
    rng: Option<&'a mut Rng>,
}

impl<'a> Dropout<'a> {
    pub fn off() -> Dropout<'static> {
        Dropout { p: 0.0, rng: None }
    }

    pub fn train(p: f64, rng: &'a mut Rng) -> Dropout<'a> {
        Dropout { p, rng: Some(rng) }
    }

    /// Whether [`Dropout::apply`] drops anything.
    pub fn active(&self) -> bool {
        self.rng.is_some() && self.p > 0.0
    }

    pub fn apply(&mut self, x: &Tensor) -> Result<Tensor> {
        let Some(rng) = self.rng.as_deref_mut().filter(|_| self.p > 0.0) else {
            return Ok(x.clone());
        };
        let (p, keep) = (self.p as f32, (1.0 / (1.0 - self.p)) as f32);
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.uniform() < p { 0.0 } else { keep }).collect();
        x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use crate::model::rng::Stream;
    use candle_core::Var;

    fn dev() -> Device {
        Device::Cpu
    }

    #[test]
    fn layer_norm_matches_the_formula_and_its_gradient_is_right() {
        let x = randn(&[3, 5], 1.0, 1);
        let w = randn(&[5], 1.0, 2);
        let b = randn(&[5], 1.0, 3);
        // Forward: one row by hand.
        let y = layer_norm(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), 1e-5).unwrap();
        let xs = x.as_tensor().to_vec2::<f64>().unwrap();
        let (ws, bs) =
            (w.as_tensor().to_vec1::<f64>().unwrap(), b.as_tensor().to_vec1::<f64>().unwrap());
        let mean = xs[1].iter().sum::<f64>() / 5.0;
        let var = xs[1].iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
        let want: Vec<f64> =
            (0..5).map(|i| (xs[1][i] - mean) / (var + 1e-5).sqrt() * ws[i] + bs[i]).collect();
        let got = y.to_vec2::<f64>().unwrap()[1].clone();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        check(&[x, w, b], |v| {
            layer_norm(v[0].as_tensor(), v[1].as_tensor(), Some(v[2].as_tensor()), 1e-5)
        });
    }

    #[test]
    fn softmax_rows_sum_to_one_and_its_gradient_is_right() {
        let x = randn(&[4, 7], 3.0, 4);
        let s = softmax_last_dim(x.as_tensor()).unwrap();
        for row in s.to_vec2::<f64>().unwrap() {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        check(&[x], |v| softmax_last_dim(v[0].as_tensor()));
    }

    #[test]
    fn gelu_gradient_is_right() {
        let x = randn(&[16], 2.0, 5);
        // Fused here (exact derivative); candle's own GELU-erf backward (the plain path) uses
        // 1/sqrt(2π) to 6 digits: a tolerance both meet.
        crate::model::gradcheck::check_tol(&[x], |v| gelu(v[0].as_tensor()), 1e-5);
    }

    #[test]
    fn attention_is_causal_and_its_gradient_is_right() {
        let (q, k, v) = (
            randn(&[2, 2, 5, 3], 1.0, 6),
            randn(&[2, 2, 5, 3], 1.0, 7),
            randn(&[2, 2, 5, 3], 1.0, 8),
        );
        check(&[q.clone(), k.clone(), v.clone()], |t| {
            causal_attention(
                t[0].as_tensor(),
                t[1].as_tensor(),
                t[2].as_tensor(),
                &mut Dropout::off(),
            )
        });
        // Changing the last key/value must not change any earlier output.
        let y0 = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), &mut Dropout::off())
            .unwrap();
        let v2 = v.as_tensor().narrow(2, 0, 4).unwrap();
        let v2 = Tensor::cat(&[&v2, &(v.as_tensor().narrow(2, 4, 1).unwrap() + 100.0).unwrap()], 2)
            .unwrap();
        let y1 = causal_attention(q.as_tensor(), k.as_tensor(), &v2, &mut Dropout::off()).unwrap();
        let diff = (y0.narrow(2, 0, 4).unwrap() - y1.narrow(2, 0, 4).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f64>().unwrap(), 0.0);
        let last = (y0.narrow(2, 4, 1).unwrap() - y1.narrow(2, 4, 1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(last.to_scalar::<f64>().unwrap() > 1.0);
    }

    #[test]
    fn cross_entropy_matches_the_formula_and_its_gradient_is_right() {
        let logits = randn(&[6, 5], 2.0, 9);
        let targets = Tensor::new(&[0u32, 4, 2, 2, 1, 3], &dev()).unwrap();
        let l =
            cross_entropy(logits.as_tensor(), &targets, None).unwrap().to_scalar::<f64>().unwrap();
        let rows = logits.as_tensor().to_vec2::<f64>().unwrap();
        let want = [0usize, 4, 2, 2, 1, 3]
            .iter()
            .zip(&rows)
            .map(|(&t, r)| r.iter().map(|x| x.exp()).sum::<f64>().ln() - r[t])
            .sum::<f64>()
            / 6.0;
        assert!((l - want).abs() < 1e-12, "{l} vs {want}");
        check(std::slice::from_ref(&logits), |v| cross_entropy(v[0].as_tensor(), &targets, None));
        // Weighted: zero weight drops a row.
        let w = Tensor::new(&[1.0f64, 0.0, 1.0, 0.0, 1.0, 1.0], &dev()).unwrap();
        let lw = cross_entropy(logits.as_tensor(), &targets, Some(&w))
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let want_w = [0usize, 2, 4, 5]
            .iter()
            .map(|&i| {
                let t = [0usize, 4, 2, 2, 1, 3][i];
                rows[i].iter().map(|x| x.exp()).sum::<f64>().ln() - rows[i][t]
            })
            .sum::<f64>()
            / 4.0;
        assert!((lw - want_w).abs() < 1e-12);
        check(&[logits], |v| cross_entropy(v[0].as_tensor(), &targets, Some(&w)));
    }

    /// The tests above run the default (fused) path; the plain reference must stay right too.
    #[test]
    fn the_plain_ops_gradients_are_right_too() {
        with_plain_ops(true, || {
            assert!(plain_ops());
            let (x, w, b) = (randn(&[3, 5], 1.0, 1), randn(&[5], 1.0, 2), randn(&[5], 1.0, 3));
            check(&[x, w, b], |v| {
                layer_norm(v[0].as_tensor(), v[1].as_tensor(), Some(v[2].as_tensor()), 1e-5)
            });
            let (q, k, v) = (
                randn(&[2, 2, 5, 3], 1.0, 6),
                randn(&[2, 2, 5, 3], 1.0, 7),
                randn(&[2, 2, 5, 3], 1.0, 8),
            );
            check(&[q, k, v], |t| {
                causal_attention(
                    t[0].as_tensor(),
                    t[1].as_tensor(),
                    t[2].as_tensor(),
                    &mut Dropout::off(),
                )
            });
            let logits = randn(&[6, 5], 2.0, 9);
            let targets = Tensor::new(&[0u32, 4, 2, 2, 1, 3], &dev()).unwrap();
            check(&[logits], |v| cross_entropy(v[0].as_tensor(), &targets, None));
            crate::model::gradcheck::check_tol(
                &[randn(&[16], 2.0, 5)],
                |v| gelu(v[0].as_tensor()),
                1e-5,
            );
        });
        assert!(with_plain_ops(false, || !plain_ops()));
    }

    #[test]
    fn dropout_is_seeded_scaled_and_differentiable() {
        let x = Var::from_tensor(&Tensor::ones((1000,), DType::F64, &dev()).unwrap()).unwrap();
        let run = |seed| {
            let mut rng = Rng::new(seed, Stream::Train);
            Dropout::train(0.25, &mut rng).apply(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap()
        };
        let (a, b) = (run(1), run(1));
        assert_eq!(a, b);
        assert_ne!(a, run(2));
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!((180..320).contains(&zeros), "{zeros} dropped of 1000 at p = 0.25");
        // The mask is drawn in f32: 1/0.75 to f32 precision.
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        assert_eq!(
            Dropout::off().apply(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap(),
            vec![1.0; 1000]
        );
        // The gradient is the mask itself.
        let mut rng = Rng::new(1, Stream::Train);
        let y = Dropout::train(0.25, &mut rng).apply(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap(), a);
    }
}
