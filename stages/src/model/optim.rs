//! Training arithmetic outside the model: [`AdamW`] (weight decay on ≥2-D weights only, as
//! nanoGPT configures it), the [`LrSchedule`] (linear warmup, cosine decay), and
//! [`Grads`] with global-norm clipping (candle has none built in).
//!
//! Gradients and optimizer moments are plain `Vec<f32>`s in parameter order: sums over
//! them run in one fixed order (deterministic), they accumulate over micro-batches
//! without building graphs, and a checkpoint stores them exactly. The update itself follows
//! `torch.optim.AdamW` step for step.

use candle_core::backprop::GradStore;
use std::cell::RefCell;

use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor, Var};

use super::Result;

/// nanoGPT's `get_lr`: linear warmup over `warmup_steps`, cosine from `lr` to `min_lr` at
/// `decay_steps`, then `min_lr`.
#[derive(Clone, Debug)]
pub struct LrSchedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub decay_steps: u64,
}

impl LrSchedule {
    /// The rate for step `it` (0-based).
    pub fn at(&self, it: u64) -> f64 {
        if it < self.warmup_steps {
            return self.lr * (it + 1) as f64 / (self.warmup_steps + 1) as f64;
        }
        if it > self.decay_steps || self.decay_steps <= self.warmup_steps {
            return self.min_lr;
        }
        let r = (it - self.warmup_steps) as f64 / (self.decay_steps - self.warmup_steps) as f64;
        self.min_lr + 0.5 * (1.0 + (std::f64::consts::PI * r).cos()) * (self.lr - self.min_lr)
    }
}

/// One gradient per parameter, flat, in the parameters' order.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads(pub Vec<Vec<f32>>);

/// A gradient as a flat f32 vector, zeros for a variable that has none. A weight of a
/// recomputed block has its gradient in [`super::recompute`]'s stash, not in the store: the
/// callers look there second.
fn flat(g: Option<&Tensor>, v: &Var) -> Result<Vec<f32>> {
    match g {
        Some(g) => Ok(g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
        None => Ok(vec![0.0; v.elem_count()]),
    }
}

impl Grads {
    /// The gradients of `vars` in `store` (zeros for a parameter the loss did not reach).
    pub fn collect(store: &GradStore, vars: &[(String, Var)]) -> Result<Grads> {
        Self::collect_from(&[store], vars)
    }

    /// The gradients of `vars`, each from the first of `stores` that has it (zeros if none):
    /// the backward passes of losses that share no parameter, together.
    pub fn collect_from(stores: &[&GradStore], vars: &[(String, Var)]) -> Result<Grads> {
        vars.iter()
            .map(|(_, v)| match stores.iter().find_map(|s| s.get(v.as_tensor())) {
                Some(g) => flat(Some(g), v),
                None => flat(super::recompute::take(v.as_tensor()).as_ref(), v),
            })
            .collect::<Result<_>>()
            .map(Grads)
    }

    /// [`Grads::collect`] from one store it consumes, each gradient freed as soon as it is
    /// copied out (the peak holds one gradient twice, not all of them).
    pub fn take(mut store: GradStore, vars: &[(String, Var)]) -> Result<Grads> {
        vars.iter()
            .map(|(_, v)| {
                let g =
                    store.remove(v.as_tensor()).or_else(|| super::recompute::take(v.as_tensor()));
                flat(g.as_ref(), v)
            })
            .collect::<Result<_>>()
            .map(Grads)
    }

    pub fn add(&mut self, other: &Grads) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
    }

    /// The L2 norm of all gradients together.
    pub fn norm(&self) -> f64 {
        self.0.iter().flatten().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>().sqrt()
    }

    /// Scales the gradients down so that their global norm is at most `max_norm` (as
    /// `torch.nn.utils.clip_grad_norm_` does); returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> f64 {
        let norm = self.norm();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let c = coef as f32;
            self.0.iter_mut().flatten().for_each(|g| *g *= c);
        }
        norm
    }
}

#[derive(Clone, Debug)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamWConfig {
    /// These betas and weight decay with PyTorch's default `eps`, 1e-8.
    pub fn new(beta1: f64, beta2: f64, weight_decay: f64) -> AdamWConfig {
        AdamWConfig { beta1, beta2, eps: 1e-8, weight_decay }
    }
}

struct Slot {
    var: Var,
    /// The index of the slot's parameter group.
    group: usize,
    decay: bool,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// One parameter's AdamW update, applied in place to its storage (candle `InplaceOp1`).
struct Update<'a> {
    g: &'a [f32],
    m: RefCell<&'a mut Vec<f32>>,
    v: RefCell<&'a mut Vec<f32>>,
    decay: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

impl Update<'_> {
    /// torch.optim.AdamW's arithmetic in f32, one pass over the parameter, its gradient and
    /// both moments (zipped slices, so the loop vectorises).
    fn apply<P: Copy>(&self, p: &mut [P], to: impl Fn(P) -> f32, from: impl Fn(f32) -> P) {
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        let (b1, b2) = (self.b1, self.b2);
        for (((p, &g), m), v) in p.iter_mut().zip(self.g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m += (g - *m) * (1.0 - b1);
            *v = *v * b2 + (1.0 - b2) * g * g;
            let denom = v.sqrt() / self.bc2_sqrt + self.eps;
            *p = from(to(*p) * self.decay - self.step_size * *m / denom);
        }
    }
}

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "hone-adamw"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("AdamW: a parameter is not contiguous")
        };
        if end - start != self.g.len() {
            candle_core::bail!(
                "AdamW: parameter of {} values, gradient of {}",
                end - start,
                self.g.len()
            )
        }
        match storage {
            CpuStorage::F32(p) => self.apply(&mut p[start..end], |x| x, |x| x),
            CpuStorage::F64(p) => self.apply(&mut p[start..end], |x| x as f32, f64::from),
            _ => candle_core::bail!("AdamW: parameters must be f32 or f64"),
        }
        Ok(())
    }
}

/// AdamW over groups of parameters, each with its own settings and learning rate (PPO's
/// value head, say, trains at another rate than the policy).
pub struct AdamW {
    names: Vec<String>,
    slots: Vec<Slot>,
    /// Steps taken (for bias correction).
    t: u64,
    groups: Vec<AdamWConfig>,
}

/// The optimizer's state, for checkpoints: steps taken and both moments by parameter name.
pub struct AdamState {
    pub t: u64,
    pub m: Vec<(String, Tensor)>,
    pub v: Vec<(String, Tensor)>,
}

impl AdamW {
    /// One group. Decays the parameters with two or more dimensions (weights, embeddings),
    /// not the biases and layer-norm gains.
    pub fn new(vars: &[(String, Var)], cfg: AdamWConfig) -> AdamW {
        AdamW::with_groups(vec![(vars, cfg)])
    }

    /// Groups of parameters with their settings; [`AdamW::step_groups`] takes a rate per group.
    pub fn with_groups(groups: Vec<(&[(String, Var)], AdamWConfig)>) -> AdamW {
        let mut names = Vec::new();
        let mut slots = Vec::new();
        let mut cfgs = Vec::new();
        for (group, (vars, cfg)) in groups.into_iter().enumerate() {
            for (name, var) in vars {
                names.push(name.clone());
                slots.push(Slot {
                    var: var.clone(),
                    group,
                    decay: var.rank() >= 2,
                    m: vec![0.0; var.elem_count()],
                    v: vec![0.0; var.elem_count()],
                });
            }
            cfgs.push(cfg);
        }
        AdamW { names, slots, t: 0, groups: cfgs }
    }

    /// Names of the parameters that get weight decay.
    pub fn decayed(&self) -> Vec<&str> {
        self.names
            .iter()
            .zip(&self.slots)
            .filter(|(_, s)| s.decay)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// One step of a single-group optimizer at rate `lr`.
    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.step_groups(grads, &[lr])
    }

    /// One step, group `i` at rate `lrs[i]`; `grads` in the parameters' order.
    pub fn step_groups(&mut self, grads: &Grads, lrs: &[f64]) -> Result<()> {
        if lrs.len() != self.groups.len() {
            return Err(super::ModelError::Invalid(format!(
                "{} learning rates for {} parameter groups",
                lrs.len(),
                self.groups.len()
            )));
        }
        if grads.0.len() != self.slots.len() {
            return Err(super::ModelError::Invalid(format!(
                "{} gradients for {} parameters",
                grads.0.len(),
                self.slots.len()
            )));
        }
        self.t += 1;
        for (slot, g) in self.slots.iter_mut().zip(&grads.0) {
            let (cfg, lr) = (&self.groups[slot.group], lrs[slot.group]);
            let (b1, b2) = (cfg.beta1, cfg.beta2);
            let bc1 = 1.0 - b1.powi(self.t as i32);
            let bc2_sqrt = (1.0 - b2.powi(self.t as i32)).sqrt() as f32;
            let step_size = (lr / bc1) as f32;
            let (b1f, b2f, eps) = (b1 as f32, b2 as f32, cfg.eps as f32);
            if g.len() != slot.m.len() {
                return Err(super::ModelError::Invalid(format!(
                    "a gradient of {} values for a parameter of {}",
                    g.len(),
                    slot.m.len()
                )));
            }
            // In place, one pass over each parameter and its moments (no copies of the weights).
            let decay = if slot.decay { (1.0 - lr * cfg.weight_decay) as f32 } else { 1.0 };
            let update = Update {
                g,
                m: RefCell::new(&mut slot.m),
                v: RefCell::new(&mut slot.v),
                decay,
                b1: b1f,
                b2: b2f,
                eps,
                step_size,
                bc2_sqrt,
            };
            slot.var.as_tensor().inplace_op1(&update)?;
        }
        Ok(())
    }

    pub fn state(&self) -> Result<AdamState> {
        let mut m = Vec::new();
        let mut v = Vec::new();
        for (name, s) in self.names.iter().zip(&self.slots) {
            m.push((name.clone(), Tensor::from_slice(&s.m, s.var.shape(), s.var.device())?));
            v.push((name.clone(), Tensor::from_slice(&s.v, s.var.shape(), s.var.device())?));
        }
        Ok(AdamState { t: self.t, m, v })
    }

    /// Restores [`AdamW::state`]; every parameter's moments must be there with its shape.
    pub fn load_state(&mut self, state: &AdamState) -> std::result::Result<(), String> {
        let find = |list: &[(String, Tensor)],
                    name: &str,
                    shape: &candle_core::Shape|
         -> std::result::Result<Vec<f32>, String> {
            let (_, t) = list
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("no optimizer state for `{name}`"))?;
            if t.shape() != shape {
                return Err(format!(
                    "optimizer state for `{name}` has shape {:?}, expected {shape:?}",
                    t.shape()
                ));
            }
            t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())
        };
        for (name, slot) in self.names.iter().zip(self.slots.iter_mut()) {
            slot.m = find(&state.m, name, slot.var.shape())?;
            slot.v = find(&state.v, name, slot.var.shape())?;
        }
        self.t = state.t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_follows_a_cosine_to_min_lr() {
        let s = LrSchedule { lr: 1e-3, min_lr: 1e-4, warmup_steps: 100, decay_steps: 2000 };
        assert!((s.at(0) - 1e-3 / 101.0).abs() < 1e-15);
        assert!((s.at(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-15);
        assert!((s.at(100) - 1e-3).abs() < 1e-15);
        assert!((s.at(1050) - 5.5e-4).abs() < 1e-12);
        assert!((s.at(2000) - 1e-4).abs() < 1e-15);
        assert_eq!(s.at(5000), 1e-4);
        assert!((100..2000).all(|i| s.at(i + 1) <= s.at(i)));
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_leaves_small_gradients_alone() {
        let mut g = Grads(vec![vec![3.0, 0.0], vec![4.0]]);
        assert_eq!(g.norm(), 5.0);
        assert_eq!(g.clip(1.0), 5.0);
        assert!((g.norm() - 1.0).abs() < 1e-6);
        let mut small = Grads(vec![vec![0.3], vec![0.4]]);
        small.clip(1.0);
        assert_eq!(small.0, vec![vec![0.3], vec![0.4]]);
    }

    /// Two steps of AdamW by hand (torch's formulas), for a decayed and an undecayed parameter.
    #[test]
    fn adamw_matches_the_reference_update_and_decays_only_matrices() {
        let w = Var::from_slice(&[1.0f32, -2.0], (1, 2), &Device::Cpu).unwrap();
        let b = Var::from_slice(&[0.5f32], 1, &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), w.clone()), ("b".to_string(), b.clone())];
        let cfg = AdamWConfig::new(0.9, 0.99, 0.1);
        let mut opt = AdamW::new(&vars, cfg);
        assert_eq!(opt.decayed(), vec!["w"]);
        let grads =
            [Grads(vec![vec![0.1, -0.2], vec![0.3]]), Grads(vec![vec![-0.05, 0.4], vec![0.1]])];
        let lr = 0.01;
        // Reference in f64.
        let reference = |p0: f64, gs: [f64; 2], decay: bool| {
            let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
            for (t, g) in gs.iter().enumerate() {
                let t = t as i32 + 1;
                if decay {
                    p *= 1.0 - lr * 0.1;
                }
                m = 0.9 * m + 0.1 * g;
                v = 0.99 * v + 0.01 * g * g;
                let denom = v.sqrt() / (1.0 - 0.99f64.powi(t)).sqrt() + 1e-8;
                p -= lr / (1.0 - 0.9f64.powi(t)) * m / denom;
            }
            p
        };
        for g in &grads {
            opt.step(g, lr).unwrap();
        }
        let wv = w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let bv = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!((f64::from(wv[0]) - reference(1.0, [0.1, -0.05], true)).abs() < 1e-6);
        assert!((f64::from(wv[1]) - reference(-2.0, [-0.2, 0.4], true)).abs() < 1e-6);
        assert!((f64::from(bv[0]) - reference(0.5, [0.3, 0.1], false)).abs() < 1e-6);
        // A restored state continues identically.
        let state = opt.state().unwrap();
        let mut other = AdamW::new(&vars, AdamWConfig::new(0.9, 0.99, 0.1));
        other.load_state(&state).unwrap();
        let before = w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        opt.step(&grads[0], lr).unwrap();
        let after_a = w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        w.set(&Tensor::from_slice(&before, (1, 2), &Device::Cpu).unwrap()).unwrap();
        other.step(&grads[0], lr).unwrap();
        assert_eq!(w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(), after_a);
    }

    /// Two groups step as two separate optimizers would, each at its own rate and settings.
    #[test]
    fn parameter_groups_step_like_separate_optimizers() {
        let make = || {
            let a = Var::from_slice(&[1.0f32, -2.0, 0.5, 3.0], (2, 2), &Device::Cpu).unwrap();
            let b = Var::from_slice(&[0.25f32, -0.75], (1, 2), &Device::Cpu).unwrap();
            (vec![("a".to_string(), a)], vec![("b".to_string(), b)])
        };
        let (cfg_a, cfg_b) = (AdamWConfig::new(0.9, 0.99, 0.1), AdamWConfig::new(0.8, 0.95, 0.0));
        let grads = [
            Grads(vec![vec![0.1, -0.2, 0.3, 0.05], vec![0.5, -0.1]]),
            Grads(vec![vec![-0.3, 0.1, 0.2, 0.4], vec![-0.2, 0.3]]),
        ];
        let (ga, gb) = make();
        let mut both = AdamW::with_groups(vec![(&ga, cfg_a.clone()), (&gb, cfg_b.clone())]);
        let (sa, sb) = make();
        let (mut one, mut two) = (AdamW::new(&sa, cfg_a), AdamW::new(&sb, cfg_b));
        for g in &grads {
            both.step_groups(g, &[1e-2, 3e-3]).unwrap();
            one.step(&Grads(vec![g.0[0].clone()]), 1e-2).unwrap();
            two.step(&Grads(vec![g.0[1].clone()]), 3e-3).unwrap();
        }
        let values = |v: &[(String, Var)]| {
            v[0].1.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(values(&ga), values(&sa));
        assert_eq!(values(&gb), values(&sb));
        assert_ne!(values(&ga), vec![1.0, -2.0, 0.5, 3.0]);
        assert!(both.step_groups(&grads[0], &[1e-2]).is_err(), "one rate for two groups");
    }
}
