//! [`Gpt`]: the token embedding (plus learned positions for GPT-2), `n_layer` blocks, a final
//! norm and the LM head, tied to the token embedding (GPT-2; Llama models either way).
//! (Generation runs on [`super::decoder`], not on this.)
//!
//! Besides the logits it gives the final hidden states ([`Gpt::hidden`], before the LM head:
//! what a reward or value head reads, see [`super::heads`]) and the log-probabilities of given
//! tokens ([`Gpt::token_log_probs`], with gradients: what PPO's ratio and KL are made of).

use candle_core::{DType, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::config::{GptConfig, INIT_STD};
use super::layers::{Block, Norm};
use super::ops::{self, Dropout};
use super::rope::RopeTable;

pub struct Gpt {
    cfg: GptConfig,
    wte: Tensor,
    /// Learned positions (GPT-2).
    wpe: Option<Tensor>,
    h: Vec<Block>,
    ln_f: Norm,
    /// An LM head of its own (untied Llama models).
    lm_head: Option<Tensor>,
    /// Recompute each block's activations in the backward pass (gradient checkpointing).
    recompute: bool,
}

impl Gpt {
    /// GPT-2's parameters are named as in nanoGPT: `transformer.wte.weight`,
    /// `transformer.h.0.attn.c_attn.weight`, …, `transformer.ln_f.weight`; the Llama
    /// family's as in transformers: `model.embed_tokens.weight`,
    /// `model.layers.0.self_attn.qkv_proj.weight`, …, `model.norm.weight`, `lm_head.weight`.
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Gpt> {
        let problems = cfg.problems();
        if let Some((_, msg)) = problems.first() {
            candle_core::bail!("invalid model config: {msg}")
        }
        let embedding = |vb: VarBuilder, rows: usize| {
            vb.get_with_hints(
                (rows, cfg.n_embd),
                "weight",
                Init::Randn { mean: 0.0, stdev: INIT_STD },
            )
        };
        if cfg.is_llama() {
            let rope = RopeTable::new(&cfg.rope, cfg.head_dim(), cfg.block_size);
            let root = vb.pp("model");
            let wte = embedding(root.pp("embed_tokens"), cfg.vocab_size)?;
            let h = (0..cfg.n_layer)
                .map(|i| Block::new(cfg, Some(rope.clone()), root.pp("layers").pp(i)))
                .collect::<Result<Vec<_>>>()?;
            let ln_f = Norm::new(cfg, root.pp("norm"))?;
            let lm_head = if cfg.tie_embeddings {
                None
            } else {
                Some(embedding(vb.pp("lm_head"), cfg.vocab_size)?)
            };
            return Ok(Gpt {
                cfg: cfg.clone(),
                wte,
                wpe: None,
                h,
                ln_f,
                lm_head,
                recompute: false,
            });
        }
        let vb = vb.pp("transformer");
        let wte = embedding(vb.pp("wte"), cfg.vocab_size)?;
        let wpe = embedding(vb.pp("wpe"), cfg.block_size)?;
        let h = (0..cfg.n_layer)
            .map(|i| Block::new(cfg, None, vb.pp("h").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = Norm::new(cfg, vb.pp("ln_f"))?;
        Ok(Gpt { cfg: cfg.clone(), wte, wpe: Some(wpe), h, ln_f, lm_head: None, recompute: false })
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Gradient checkpointing on or off: with it, training keeps each block's input only and
    /// recomputes the block in the backward pass ([`super::recompute`]): the same gradients,
    /// one more forward pass, far less memory; [`Gpt::masked_loss`] then runs the LM head a
    /// block of rows at a time. Ignored while dropout is on.
    pub fn with_recompute(mut self, on: bool) -> Gpt {
        if on {
            super::kernels::lean_allocator();
        }
        self.recompute = on;
        self
    }

    /// Logits (B, T, V) for token ids `idx` (B, T, u32) at positions `0..T`.
    pub fn forward(&self, idx: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        self.lm_head(&self.hidden(idx, drop)?)
    }

    /// The final hidden states (B, T, C) for `idx` (B, T): after the last norm, before the
    /// LM head.
    pub fn hidden(&self, idx: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let (b, t) = idx.dims2()?;
        if t > self.cfg.block_size {
            candle_core::bail!(
                "{t} positions given but the model's block_size is {}",
                self.cfg.block_size
            )
        }
        let c = self.cfg.n_embd;
        let tok = self.wte.index_select(&idx.flatten_all()?, 0)?.reshape((b, t, c))?;
        let x = match &self.wpe {
            Some(wpe) => {
                let pos = wpe.index_select(&Tensor::arange(0u32, t as u32, idx.device())?, 0)?;
                tok.broadcast_add(&pos)?
            }
            None => tok,
        };
        let mut x = drop.apply(&x)?;
        for block in &self.h {
            x = if self.recompute && !drop.active() {
                super::recompute::block(block, &x)?
            } else {
                block.forward(&x, drop)?
            };
        }
        self.ln_f.forward(&x)
    }

    /// The LM head on hidden states (…, C): logits (…, V). Tied: the token embedding.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        ops::linear(hidden, self.lm_head.as_ref().unwrap_or(&self.wte), None)
    }

    /// `log p(targets[b, t] | idx[b, ..=t])` (B, T) for `idx` and `targets` (both (B, T)),
    /// from the logits divided by `temperature` (1: the model's own distribution; sampling at
    /// another temperature must score at that one too), with gradients.
    pub fn token_log_probs(
        &self,
        idx: &Tensor,
        targets: &Tensor,
        temperature: f64,
        drop: &mut Dropout,
    ) -> Result<Tensor> {
        let logits = self.forward(idx, drop)?;
        let logits = if temperature == 1.0 { logits } else { (logits / temperature)? };
        let (b, t, v) = logits.dims3()?;
        ops::token_log_probs(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)?
            .reshape((b, t))
    }

    /// The mean (or, with `weights` (B·T), the weighted mean) next-token cross-entropy of
    /// `idx` against `targets` (both (B, T)). With gradient checkpointing on, the LM head and
    /// the loss run a block of rows at a time ([`super::kernels::head_loss`]): no (B·T, V)
    /// logits are kept.
    pub fn masked_loss(
        &self,
        idx: &Tensor,
        targets: &Tensor,
        weights: Option<&Tensor>,
        drop: &mut Dropout,
    ) -> Result<Tensor> {
        if self.recompute && !ops::plain_ops() {
            let h = self.hidden(idx, drop)?;
            let (b, t, c) = h.dims3()?;
            let head = self.lm_head.as_ref().unwrap_or(&self.wte);
            let nll = super::kernels::head_loss::head_nll(&h.reshape((b * t, c))?, head, targets)?;
            return match weights {
                None => nll.mean_all(),
                Some(w) => (nll * w)?.sum_all()?.broadcast_div(&w.sum_all()?),
            };
        }
        let logits = self.forward(idx, drop)?;
        let (b, t, v) = logits.dims3()?;
        ops::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?, weights)
    }

    /// Mean next-token cross-entropy of `idx` against `targets` (both (B, T)).
    pub fn loss(&self, idx: &Tensor, targets: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let logits = self.forward(idx, drop)?;
        let (b, t, v) = logits.dims3()?;
        ops::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?, None)
    }

    /// The dtype of the parameters.
    pub fn dtype(&self) -> DType {
        self.wte.dtype()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ParamStore;
    use crate::model::config::tiny;
    use crate::model::gradcheck::{check_tol, randn};
    use candle_core::{Device, Var};

    fn ids(v: &[u32], b: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (b, v.len() / b), &Device::Cpu).unwrap()
    }

    #[test]
    fn parameter_names_shapes_and_count_follow_nanogpt() {
        let cfg = tiny(13, true);
        let ps = ParamStore::seeded(1);
        Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        let vars = ps.vars();
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..4],
            &[
                "transformer.wte.weight",
                "transformer.wpe.weight",
                "transformer.h.0.ln_1.weight",
                "transformer.h.0.ln_1.bias"
            ]
        );
        assert!(names.contains(&"transformer.h.1.attn.c_attn.weight"));
        assert!(names.contains(&"transformer.h.1.mlp.c_proj.bias"));
        assert_eq!(names.last(), Some(&"transformer.ln_f.bias"));
        let find = |n: &str| vars.iter().find(|(m, _)| m == n).unwrap().1.dims().to_vec();
        assert_eq!(find("transformer.h.0.attn.c_attn.weight"), vec![24, 8]);
        assert_eq!(find("transformer.h.0.mlp.c_fc.weight"), vec![32, 8]);
        let total: usize = vars.iter().map(|(_, v)| v.elem_count()).sum();
        assert_eq!(total, cfg.n_params());
        // nanoGPT's scaled init for residual projections.
        let std = |n: &str| {
            let v = vars
                .iter()
                .find(|(m, _)| m == n)
                .unwrap()
                .1
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
        };
        assert!(
            std("transformer.h.0.mlp.c_proj.weight") < 0.8 * std("transformer.h.0.mlp.c_fc.weight")
        );
    }

    #[test]
    fn whole_model_gradients_including_the_tied_head() {
        for bias in [false, true] {
            let cfg = tiny(7, bias);
            let ps = ParamStore::seeded(2);
            let gpt = Gpt::new(&cfg, ps.var_builder(DType::F64, &Device::Cpu)).unwrap();
            let vars: Vec<Var> = ps.vars().into_iter().map(|(_, v)| v).collect();
            for (i, v) in vars.iter().enumerate() {
                v.set(randn(v.dims(), 0.3, 50 + i as u64).as_tensor()).unwrap();
            }
            let x = ids(&[1, 2, 3, 4, 0, 6, 5, 5, 2, 1], 2);
            let y = ids(&[2, 3, 4, 0, 6, 5, 5, 2, 1, 3], 2);
            check_tol(&vars, |_| gpt.forward(&x, &mut Dropout::off()), 1e-5);
            check_tol(&vars, |_| gpt.loss(&x, &y, &mut Dropout::off()), 1e-5);
        }
    }

    /// The fused kernels and the plain candle ops give the same logits, loss and gradients
    /// for every parameter (f32, the training dtype; float tolerance), with and without
    /// biases, and a loss mask (SFT's weights) gives the same loss and gradients too.
    #[test]
    fn fused_kernels_equal_the_plain_ops_in_logits_loss_and_gradients() {
        use crate::model::ops::{cross_entropy, with_plain_ops};
        for bias in [false, true] {
            let cfg = tiny(11, bias);
            let ps = ParamStore::seeded(5);
            let gpt = Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
            let vars = ps.vars();
            let x = ids(&[1, 2, 3, 4, 0, 6, 5, 5, 2, 1, 10, 9, 8, 7], 2);
            let y = ids(&[2, 3, 4, 0, 6, 5, 5, 2, 1, 3, 9, 8, 7, 6], 2);
            let mask = Tensor::new(
                &[0f32, 0., 1., 1., 1., 1., 1., 0., 1., 1., 1., 1., 0., 1.],
                &Device::Cpu,
            )
            .unwrap();
            let run = |plain: bool| {
                with_plain_ops(plain, || {
                    let logits = gpt.forward(&x, &mut Dropout::off()).unwrap();
                    let loss = gpt.loss(&x, &y, &mut Dropout::off()).unwrap();
                    let masked = cross_entropy(
                        &logits.reshape((14, 11)).unwrap(),
                        &y.flatten_all().unwrap(),
                        Some(&mask),
                    )
                    .unwrap();
                    let grads = |l: &Tensor| {
                        crate::model::optim::Grads::collect(&l.backward().unwrap(), &vars).unwrap()
                    };
                    (
                        logits.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                        loss.to_scalar::<f32>().unwrap(),
                        grads(&loss),
                        masked.to_scalar::<f32>().unwrap(),
                        grads(&masked),
                    )
                })
            };
            let (fused, plain) = (run(false), run(true));
            let close = |a: &[f32], b: &[f32], what: &str| {
                let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
                for (i, (u, v)) in a.iter().zip(b).enumerate() {
                    assert!((u - v).abs() <= 1e-4 * scale, "{what}[{i}]: fused {u} vs plain {v}");
                }
            };
            close(&fused.0, &plain.0, "logits");
            close(&[fused.1, fused.3], &[plain.1, plain.3], "loss");
            for (g, name) in [(&fused.2, &plain.2), (&fused.4, &plain.4)]
                .into_iter()
                .zip(["loss", "masked loss"])
            {
                assert_eq!(g.0.0.len(), vars.len());
                for ((a, b), (n, _)) in g.0.0.iter().zip(&g.1.0).zip(&vars) {
                    close(a, b, &format!("{name} gradient of {n}"));
                }
            }
            assert_ne!(fused.1, fused.3, "the mask changes the loss");
        }
    }

    /// Per-token log-probabilities equal log_softmax + gather of the plain ops, and their
    /// gradients (through the whole model) match finite differences; a temperature divides
    /// the logits first.
    #[test]
    fn token_log_probs_are_log_softmax_gathered_with_gradients() {
        use crate::model::ops::plain;
        let cfg = tiny(7, true);
        let ps = ParamStore::seeded(6);
        let gpt = Gpt::new(&cfg, ps.var_builder(DType::F64, &Device::Cpu)).unwrap();
        let x = ids(&[1, 2, 3, 4, 0, 6, 5, 5, 2, 1], 2);
        let y = ids(&[2, 3, 4, 0, 6, 5, 5, 2, 1, 3], 2);
        for temperature in [1.0, 0.7] {
            let lp = gpt.token_log_probs(&x, &y, temperature, &mut Dropout::off()).unwrap();
            assert_eq!(lp.dims(), &[2, 5]);
            let logits = (gpt.forward(&x, &mut Dropout::off()).unwrap() / temperature).unwrap();
            let lse = plain::logsumexp_last_dim(&logits).unwrap();
            let want = logits
                .broadcast_sub(&lse)
                .unwrap()
                .gather(&y.unsqueeze(2).unwrap(), 2)
                .unwrap()
                .squeeze(2)
                .unwrap();
            let (a, b) = (
                lp.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                want.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            );
            for (u, v) in a.iter().zip(&b) {
                assert!((u - v).abs() < 1e-10 && *u < 0.0, "{u} vs {v}");
            }
        }
        let vars: Vec<Var> = ps.vars().into_iter().map(|(_, v)| v).collect();
        for (i, v) in vars.iter().enumerate() {
            v.set(randn(v.dims(), 0.3, 70 + i as u64).as_tensor()).unwrap();
        }
        check_tol(&vars, |_| gpt.token_log_probs(&x, &y, 0.8, &mut Dropout::off()), 1e-5);
    }

    #[test]
    fn more_positions_than_the_block_size_are_an_error_not_a_silent_wrap() {
        let cfg = tiny(9, true);
        let ps = ParamStore::seeded(4);
        let gpt = Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
        assert!(gpt.forward(&ids(&[3, 1, 4, 1, 5, 8, 2, 6], 1), &mut Dropout::off()).is_ok());
        let err = gpt
            .forward(&ids(&[3, 1, 4, 1, 5, 8, 2, 6, 0], 1), &mut Dropout::off())
            .unwrap_err()
            .to_string();
        assert!(err.contains("9 positions given but the model's block_size is 8"), "{err}");
    }

    /// Gradient checkpointing changes no bit: the loss and every gradient (GPT-2 with
    /// biases, a Llama with grouped heads and an untied head) are the same with and without.
    #[test]
    fn recomputed_blocks_give_the_same_gradients_bit_for_bit() {
        use crate::model::config::tiny_llama;
        for cfg in [tiny(11, true), tiny_llama(11, true)] {
            let ps = ParamStore::seeded(9);
            let gpt = Gpt::new(&cfg, ps.var_builder(DType::F32, &Device::Cpu)).unwrap();
            let vars = ps.vars();
            let x = ids(&[1, 2, 3, 4, 0, 6, 5, 5, 2, 1, 10, 9, 8, 7], 2);
            let y = ids(&[2, 3, 4, 0, 6, 5, 5, 2, 1, 3, 9, 8, 7, 6], 2);
            let run = |m: &Gpt| {
                let loss = m.loss(&x, &y, &mut Dropout::off()).unwrap();
                let g =
                    crate::model::optim::Grads::collect(&loss.backward().unwrap(), &vars).unwrap();
                (loss.to_scalar::<f32>().unwrap(), g.0)
            };
            let plain = run(&gpt);
            let gpt = gpt.with_recompute(true);
            let recomputed = run(&gpt);
            assert_eq!(plain.0, recomputed.0, "{:?}", cfg.arch);
            for ((a, b), (n, _)) in plain.1.iter().zip(&recomputed.1).zip(&vars) {
                assert_eq!(a, b, "{:?}: gradient of {n}", cfg.arch);
            }
            assert!(
                recomputed.1.iter().all(|g| g.iter().any(|v| *v != 0.0)),
                "every weight has a gradient"
            );
        }
    }
}
