//! The pieces of a GPT-2 block: [`LayerNorm`], [`CausalSelfAttention`], [`Mlp`], [`Block`].
//!
//! Parameter names and shapes follow nanoGPT (linear weights are `(out, in)` as in
//! `nn.Linear`); [`super::export`] converts to HuggingFace's Conv1D layout.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::{GptConfig, INIT_STD, LN_EPS};
use super::ops::{self, Dropout};

pub struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl LayerNorm {
    pub fn new(n: usize, bias: bool, vb: VarBuilder) -> Result<LayerNorm> {
        let weight = vb.get_with_hints(n, "weight", Init::Const(1.0))?;
        let bias = if bias { Some(vb.get_with_hints(n, "bias", Init::Const(0.0))?) } else { None };
        Ok(LayerNorm { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, self.bias.as_ref(), LN_EPS)
    }
}

/// `nn.Linear`: weight (out, in), optional bias.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// (weight, bias).
    pub fn parts(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.weight, self.bias.as_ref())
    }
}

/// A linear layer with nanoGPT's init: weights N(0, std²), biases zero.
fn linear(d_in: usize, d_out: usize, bias: bool, std: f64, vb: VarBuilder) -> Result<Linear> {
    let weight =
        vb.get_with_hints((d_out, d_in), "weight", Init::Randn { mean: 0.0, stdev: std })?;
    let bias = if bias { Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?) } else { None };
    Ok(Linear { weight, bias })
}

/// Residual projections start smaller, by 1/√(2·n_layer) (GPT-2): each block adds two.
fn proj_std(cfg: &GptConfig) -> f64 {
    INIT_STD / (2.0 * cfg.n_layer as f64).sqrt()
}

pub struct CausalSelfAttention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
}

impl CausalSelfAttention {
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.n_embd;
        Ok(CausalSelfAttention {
            c_attn: linear(c, 3 * c, cfg.bias, INIT_STD, vb.pp("c_attn"))?,
            c_proj: linear(c, c, cfg.bias, proj_std(cfg), vb.pp("c_proj"))?,
            n_head: cfg.n_head,
        })
    }

    /// `x`: (B, T, C), all positions at once, fused.
    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let y =
            ops::self_attention(x, self.c_attn.parts(), self.c_proj.parts(), self.n_head, drop)?;
        drop.apply(&y)
    }
}

pub struct Mlp {
    c_fc: Linear,
    c_proj: Linear,
}

impl Mlp {
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let c = cfg.n_embd;
        Ok(Mlp {
            c_fc: linear(c, 4 * c, cfg.bias, INIT_STD, vb.pp("c_fc"))?,
            c_proj: linear(4 * c, c, cfg.bias, proj_std(cfg), vb.pp("c_proj"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        drop.apply(&ops::mlp(x, self.c_fc.parts(), self.c_proj.parts())?)
    }
}

/// A pre-LayerNorm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
pub struct Block {
    ln_1: LayerNorm,
    attn: CausalSelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            ln_1: LayerNorm::new(cfg.n_embd, cfg.bias, vb.pp("ln_1"))?,
            attn: CausalSelfAttention::new(cfg, vb.pp("attn"))?,
            ln_2: LayerNorm::new(cfg.n_embd, cfg.bias, vb.pp("ln_2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
        })
    }

    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, drop)?)?;
        &x + self.mlp.forward(&self.ln_2.forward(&x)?, drop)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamStore;
    use crate::model::config::tiny;
    use crate::model::gradcheck::{check, randn};
    use candle_core::{DType, Device, Var};

    /// Builds a layer in f64 and returns it with its parameters (as `Var`s, in order).
    fn build<L>(make: impl FnOnce(VarBuilder) -> Result<L>) -> (L, Vec<Var>) {
        let ps = ParamStore::seeded(3);
        let layer = make(ps.var_builder(DType::F64, &Device::Cpu)).unwrap();
        // Random (not the init's 1 and 0) so that every gradient term is exercised.
        let vars: Vec<Var> = ps.vars().into_iter().map(|(_, v)| v).collect();
        for (i, v) in vars.iter().enumerate() {
            v.set(randn(v.dims(), 0.5, 100 + i as u64).as_tensor()).unwrap();
        }
        (layer, vars)
    }

    #[test]
    fn layer_norm_gradients() {
        for bias in [false, true] {
            let (ln, params) = build(|vb| LayerNorm::new(8, bias, vb));
            assert_eq!(params.len(), 1 + usize::from(bias));
            let x = randn(&[2, 3, 8], 1.0, 1);
            let all: Vec<Var> = std::iter::once(x).chain(params).collect();
            check(&all, |v| ln.forward(v[0].as_tensor()));
        }
    }

    #[test]
    fn attention_gradients() {
        for bias in [false, true] {
            let cfg = tiny(11, bias);
            let (attn, params) = build(|vb| CausalSelfAttention::new(&cfg, vb));
            let x = randn(&[2, 5, 8], 1.0, 2);
            let all: Vec<Var> = std::iter::once(x).chain(params).collect();
            check(&all, |v| attn.forward(v[0].as_tensor(), &mut Dropout::off()));
        }
    }

    #[test]
    fn mlp_gradients() {
        let cfg = tiny(11, true);
        let (mlp, params) = build(|vb| Mlp::new(&cfg, vb));
        let x = randn(&[2, 3, 8], 1.0, 3);
        let all: Vec<Var> = std::iter::once(x).chain(params).collect();
        // GELU-erf's backward in candle is accurate to ~1e-6 (see ops::tests).
        crate::model::gradcheck::check_tol(
            &all,
            |v| mlp.forward(v[0].as_tensor(), &mut Dropout::off()),
            1e-5,
        );
    }

    #[test]
    fn block_gradients() {
        let cfg = tiny(11, true);
        let (block, params) = build(|vb| Block::new(&cfg, vb));
        assert_eq!(params.len(), 12);
        let x = randn(&[2, 4, 8], 1.0, 4);
        let all: Vec<Var> = std::iter::once(x).chain(params).collect();
        crate::model::gradcheck::check_tol(
            &all,
            |v| block.forward(v[0].as_tensor(), &mut Dropout::off()),
            1e-5,
        );
    }
}
