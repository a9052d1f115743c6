//! The pieces of a block, for both families: [`Norm`] (LayerNorm or RMSNorm),
//! [`CausalSelfAttention`] (GPT-2's, or the Llama family's with rotary positions and grouped
//! key/value heads), [`Mlp`] (GELU or SwiGLU), [`Block`].
//!
//! Parameter names and shapes follow nanoGPT for GPT-2 (linear weights are `(out, in)` as in
//! `nn.Linear`; [`super::export`] converts to HuggingFace's Conv1D layout) and transformers for
//! the Llama family, with the query/key/value projections packed into one `qkv_proj` and the
//! gate/up projections into one `gate_up_proj` (one product each; [`super::export`] splits
//! them).

use std::sync::Arc;

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::{Activation, GptConfig, INIT_STD};
use super::ops::{self, Dropout};
use super::rope::RopeTable;

#[derive(Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    pub fn new(n: usize, bias: bool, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
        let weight = vb.get_with_hints(n, "weight", Init::Const(1.0))?;
        let bias = if bias { Some(vb.get_with_hints(n, "bias", Init::Const(0.0))?) } else { None };
        Ok(LayerNorm { weight, bias, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, self.bias.as_ref(), self.eps)
    }
}

/// A block's norm: GPT-2's LayerNorm or the Llama family's RMSNorm.
#[derive(Clone)]
pub enum Norm {
    Layer(LayerNorm),
    Rms { weight: Tensor, eps: f64 },
}

impl Norm {
    /// The family's norm over `cfg.n_embd` features.
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Norm> {
        if cfg.is_llama() {
            let weight = vb.get_with_hints(cfg.n_embd, "weight", Init::Const(1.0))?;
            return Ok(Norm::Rms { weight, eps: cfg.eps() });
        }
        Ok(Norm::Layer(LayerNorm::new(cfg.n_embd, cfg.bias, cfg.eps(), vb)?))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Layer(ln) => ln.forward(x),
            Norm::Rms { weight, eps } => ops::rms_norm(x, weight, *eps),
        }
    }
}

/// `nn.Linear`: weight (out, in), optional bias.
#[derive(Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// (weight, bias).
    pub fn parts(&self) -> (&Tensor, Option<&Tensor>) {
        (&self.weight, self.bias.as_ref())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
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

#[derive(Clone)]
pub struct CausalSelfAttention {
    c_attn: Linear,
    c_proj: Linear,
    n_head: usize,
    n_kv: usize,
    head_dim: usize,
    /// Rotary positions (the Llama family).
    rope: Option<Arc<RopeTable>>,
}

impl CausalSelfAttention {
    /// GPT-2's `attn.c_attn`/`attn.c_proj`, or the Llama family's `self_attn.qkv_proj`/
    /// `self_attn.o_proj` (`vb` is the attention's own prefix either way).
    pub fn new(cfg: &GptConfig, rope: Option<Arc<RopeTable>>, vb: VarBuilder) -> Result<Self> {
        let c = cfg.n_embd;
        let (qkv, proj, qkv_bias) = if cfg.is_llama() {
            ("qkv_proj", "o_proj", cfg.qkv_bias)
        } else {
            ("c_attn", "c_proj", cfg.bias)
        };
        Ok(CausalSelfAttention {
            c_attn: linear(c, cfg.qkv_width(), qkv_bias, INIT_STD, vb.pp(qkv))?,
            c_proj: linear(c, c, cfg.bias, proj_std(cfg), vb.pp(proj))?,
            n_head: cfg.n_head,
            n_kv: cfg.kv_heads(),
            head_dim: cfg.head_dim(),
            rope,
        })
    }

    /// `x`: (B, T, C), all positions at once, fused.
    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let y = match &self.rope {
            None if self.n_kv == self.n_head => {
                ops::self_attention(x, self.c_attn.parts(), self.c_proj.parts(), self.n_head, drop)?
            }
            rope => {
                let mut qkv = self.c_attn.forward(x)?;
                if let Some(table) = rope {
                    qkv = ops::rope_qk(&qkv, table, self.n_head + self.n_kv, self.head_dim)?;
                }
                let a = ops::grouped_self_attention(&qkv, self.n_head, self.n_kv, drop)?;
                self.c_proj.forward(&a)?
            }
        };
        drop.apply(&y)
    }
}

#[derive(Clone)]
pub enum Mlp {
    /// GPT-2: `c_proj(gelu(c_fc(x)))`.
    Gelu { c_fc: Linear, c_proj: Linear, activation: Activation },
    /// The Llama family: `down_proj(silu(gate) * up)` with `[gate | up] = gate_up_proj(x)`.
    SwiGlu { gate_up: Linear, down: Linear },
}

impl Mlp {
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        let (c, f) = (cfg.n_embd, cfg.inner());
        if cfg.is_llama() {
            return Ok(Mlp::SwiGlu {
                gate_up: linear(c, 2 * f, false, INIT_STD, vb.pp("gate_up_proj"))?,
                down: linear(f, c, false, proj_std(cfg), vb.pp("down_proj"))?,
            });
        }
        Ok(Mlp::Gelu {
            c_fc: linear(c, f, cfg.bias, INIT_STD, vb.pp("c_fc"))?,
            c_proj: linear(f, c, cfg.bias, proj_std(cfg), vb.pp("c_proj"))?,
            activation: cfg.activation,
        })
    }

    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let y = match self {
            Mlp::Gelu { c_fc, c_proj, activation: Activation::Gelu } => {
                ops::mlp(x, c_fc.parts(), c_proj.parts())?
            }
            Mlp::Gelu { c_fc, c_proj, activation: Activation::GeluNew } => {
                c_proj.forward(&ops::gelu_new(&c_fc.forward(x)?)?)?
            }
            Mlp::SwiGlu { gate_up, down } => down.forward(&ops::swiglu(&gate_up.forward(x)?)?)?,
        };
        drop.apply(&y)
    }
}

/// A pre-norm transformer block: `x + attn(norm_1(x))`, then `x + mlp(norm_2(x))`.
#[derive(Clone)]
pub struct Block {
    ln_1: Norm,
    attn: CausalSelfAttention,
    ln_2: Norm,
    mlp: Mlp,
}

impl Block {
    pub fn new(cfg: &GptConfig, rope: Option<Arc<RopeTable>>, vb: VarBuilder) -> Result<Self> {
        let names = if cfg.is_llama() {
            ["input_layernorm", "self_attn", "post_attention_layernorm", "mlp"]
        } else {
            ["ln_1", "attn", "ln_2", "mlp"]
        };
        Ok(Block {
            ln_1: Norm::new(cfg, vb.pp(names[0]))?,
            attn: CausalSelfAttention::new(cfg, rope, vb.pp(names[1]))?,
            ln_2: Norm::new(cfg, vb.pp(names[2]))?,
            mlp: Mlp::new(cfg, vb.pp(names[3]))?,
        })
    }

    pub fn forward(&self, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, drop)?)?;
        &x + self.mlp.forward(&self.ln_2.forward(&x)?, drop)?
    }

    /// The block with every weight passed through `f` (a detached copy, for recomputation).
    fn map(&self, f: &impl Fn(&Tensor) -> Tensor) -> Block {
        let norm = |n: &Norm| match n {
            Norm::Layer(l) => Norm::Layer(LayerNorm {
                weight: f(&l.weight),
                bias: l.bias.as_ref().map(f),
                eps: l.eps,
            }),
            Norm::Rms { weight, eps } => Norm::Rms { weight: f(weight), eps: *eps },
        };
        let lin = |l: &Linear| Linear { weight: f(&l.weight), bias: l.bias.as_ref().map(f) };
        Block {
            ln_1: norm(&self.ln_1),
            attn: CausalSelfAttention {
                c_attn: lin(&self.attn.c_attn),
                c_proj: lin(&self.attn.c_proj),
                ..self.attn.clone()
            },
            ln_2: norm(&self.ln_2),
            mlp: match &self.mlp {
                Mlp::Gelu { c_fc, c_proj, activation } => {
                    Mlp::Gelu { c_fc: lin(c_fc), c_proj: lin(c_proj), activation: *activation }
                }
                Mlp::SwiGlu { gate_up, down } => {
                    Mlp::SwiGlu { gate_up: lin(gate_up), down: lin(down) }
                }
            },
        }
    }

    /// The same block on detached weights: running it records no graph.
    pub fn detached(&self) -> Block {
        self.map(&|t: &Tensor| t.detach())
    }

    /// The block's weights, in a fixed order.
    pub fn weights(&self) -> Vec<Tensor> {
        let seen = std::cell::RefCell::new(Vec::new());
        self.map(&|t: &Tensor| {
            seen.borrow_mut().push(t.clone());
            t.clone()
        });
        seen.into_inner()
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
            let (ln, params) = build(|vb| LayerNorm::new(8, bias, 1e-5, vb));
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
            let (attn, params) = build(|vb| CausalSelfAttention::new(&cfg, None, vb));
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
        let (block, params) = build(|vb| Block::new(&cfg, None, vb));
        assert_eq!(params.len(), 12);
        let x = randn(&[2, 4, 8], 1.0, 4);
        let all: Vec<Var> = std::iter::once(x).chain(params).collect();
        crate::model::gradcheck::check_tol(
            &all,
            |v| block.forward(v[0].as_tensor(), &mut Dropout::off()),
            1e-5,
        );
    }

    /// The Llama family's block (RMSNorm, rotary positions, grouped heads, q/k/v biases,
    /// SwiGLU): gradients through every parameter and the input, fused and plain alike.
    #[test]
    fn llama_block_gradients() {
        use crate::model::config::tiny_llama;
        use crate::model::ops::with_plain_ops;
        for plain in [false, true] {
            let cfg = tiny_llama(11, true);
            let rope = RopeTable::new(&cfg.rope, cfg.head_dim(), cfg.block_size);
            let (block, params) = build(|vb| Block::new(&cfg, Some(rope.clone()), vb));
            // 2 norms, qkv weight + bias, o_proj, gate_up, down.
            assert_eq!(params.len(), 7);
            let x = randn(&[2, 5, 16], 1.0, 4);
            let all: Vec<Var> = std::iter::once(x).chain(params).collect();
            with_plain_ops(plain, || {
                crate::model::gradcheck::check_tol(
                    &all,
                    |v| block.forward(v[0].as_tensor(), &mut Dropout::off()),
                    1e-5,
                )
            });
        }
    }
}
