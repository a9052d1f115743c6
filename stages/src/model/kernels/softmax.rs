//! Fused causal, scaled softmax of attention scores: `softmax(scale * s + mask)` over the
//! last dimension, where the `t_q` queries are the last of the `t_k` positions and each may
//! look at keys up to its own position (the mask is implicit, never materialised).
//! Backward: `ds = scale * p * (dp - Σ p * dp)`, zero in the masked future.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::{Real, float_op, grad, par_rows, storage, with_float_data};

pub struct CausalSoftmax {
    pub scale: f64,
}

/// Keys visible to row `r` of a (…, t_q, t_k) score tensor.
fn visible(r: usize, t_q: usize, t_k: usize) -> usize {
    t_k - t_q + r % t_q + 1
}

fn forward<T: Real>(s: &[T], t_q: usize, t_k: usize, scale: f64) -> Vec<T> {
    let scale = T::from(scale).unwrap();
    let mut p = vec![T::zero(); s.len()];
    par_rows(&mut p, t_k, |r, out| {
        let n = visible(r, t_q, t_k);
        let row = &s[r * t_k..r * t_k + n];
        let max = row.iter().fold(T::neg_infinity(), |m, &v| num_traits::Float::max(m, v));
        let mut sum = T::zero();
        for (o, &v) in out[..n].iter_mut().zip(row) {
            *o = ((v - max) * scale).exp();
            sum = sum + *o;
        }
        let inv = sum.recip();
        out[..n].iter_mut().for_each(|o| *o = *o * inv);
    });
    p
}

fn backward<T: Real>(p: &[T], dp: &[T], t_q: usize, t_k: usize, scale: f64) -> Vec<T> {
    let scale = T::from(scale).unwrap();
    let mut ds = vec![T::zero(); p.len()];
    par_rows(&mut ds, t_k, |r, out| {
        let n = visible(r, t_q, t_k);
        let (pr, dpr) = (&p[r * t_k..r * t_k + n], &dp[r * t_k..r * t_k + n]);
        let dot = pr.iter().zip(dpr).map(|(&a, &b)| a * b).sum::<T>();
        for ((o, &a), &b) in out[..n].iter_mut().zip(pr).zip(dpr) {
            *o = scale * a * (b - dot);
        }
    });
    ds
}

fn dims(shape: &Shape) -> Result<(usize, usize)> {
    match shape.dims() {
        [.., t_q, t_k] if t_k >= t_q => Ok((*t_q, *t_k)),
        d => candle_core::bail!("causal softmax: scores {d:?} need (…, t_q, t_k) with t_k >= t_q"),
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "hone-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (t_q, t_k) = dims(l.shape())?;
        let out = float_op!(s, l, "causal softmax", |x| storage(forward(x, t_q, t_k, self.scale)));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _s: &Tensor, p: &Tensor, dp: &Tensor) -> Result<Option<Tensor>> {
        let (t_q, t_k) = dims(p.shape())?;
        with_float_data!("causal softmax", p.dtype(), [p, dp] => |[ps, dps]| grad(backward(ps, dps, t_q, t_k, self.scale), p))
    }
}

/// `softmax(scale * scores + causal mask)` over the last dimension of (…, t_q, t_k).
pub fn causal_softmax(scores: &Tensor, scale: f64) -> Result<Tensor> {
    scores.contiguous()?.apply_op1(CausalSoftmax { scale })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use crate::model::ops::{causal_mask, plain};

    fn reference(s: &Tensor, scale: f64) -> Tensor {
        let (t_q, t_k) = (s.dim(2).unwrap(), s.dim(3).unwrap());
        let masked = (s * scale)
            .unwrap()
            .broadcast_add(&causal_mask(t_q, t_k - t_q, s.dtype(), s.device()).unwrap())
            .unwrap();
        plain::softmax_last_dim(&masked).unwrap()
    }

    #[test]
    fn fused_causal_softmax_matches_mask_then_softmax_and_its_gradient_is_right() {
        // Square (training) and with earlier keys cached (t_k > t_q).
        for (t_q, t_k) in [(5, 5), (3, 7)] {
            let s = randn(&[2, 3, t_q, t_k], 2.0, 1);
            let diff = (causal_softmax(s.as_tensor(), 0.7).unwrap()
                - reference(s.as_tensor(), 0.7))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-14);
            check(&[s], |v| causal_softmax(v[0].as_tensor(), 0.7));
        }
    }

    #[test]
    fn large_inputs_take_the_parallel_path_with_right_gradients() {
        let s = randn(&[4, 4, 48, 48], 1.0, 2);
        let diff = (causal_softmax(s.as_tensor(), 0.3).unwrap() - reference(s.as_tensor(), 0.3))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-14);
        check(&[s], |v| causal_softmax(v[0].as_tensor(), 0.3));
    }
}
