//! Fused softmax cross-entropy over the vocabulary: per-row `nll = logsumexp(z) - z[target]`
//! for logits (N, V), and the backward `dz = dnll * (softmax(z) - onehot(target))` in one
//! pass per row (the softmax is recomputed, cheaper than storing it). Averaging, or
//! weighting with a loss mask, is left to the caller on the (N,) result.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use multiversion::multiversion;

use super::simd;
use super::{Real, float_op, grad, par_rows, storage, with_float_data};

pub struct CrossEntropy {
    pub targets: Vec<u32>,
}

#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn lse<T: Real>(row: &[T]) -> T {
    const L: usize = 64;
    let max = simd::max(row);
    // Exponentials a block at a time into a buffer, so they vectorise, then a lane sum.
    let mut buf = [T::zero(); L];
    let mut total = T::zero();
    for chunk in row.chunks(L) {
        let b = &mut buf[..chunk.len()];
        b.iter_mut().zip(chunk).for_each(|(o, &v)| *o = (v - max).vexp());
        total = total + simd::sum(b);
    }
    total.ln() + max
}

/// `out = scale · softmax(row)`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub(super) fn softmax_row<T: Real>(row: &[T], scale: T, out: &mut [T]) {
    let l = lse(row);
    for (o, &x) in out.iter_mut().zip(row) {
        *o = (x - l).vexp() * scale;
    }
}

fn forward<T: Real>(z: &[T], targets: &[u32], v: usize) -> Vec<T> {
    let mut nll = vec![T::zero(); targets.len()];
    par_rows(&mut nll, 1, |r, out| {
        let row = &z[r * v..(r + 1) * v];
        out[0] = lse(row) - row[targets[r] as usize];
    });
    nll
}

fn backward<T: Real>(z: &[T], targets: &[u32], dnll: &[T], v: usize) -> Vec<T> {
    let mut dz = vec![T::zero(); z.len()];
    par_rows(&mut dz, v, |r, out| {
        let row = &z[r * v..(r + 1) * v];
        softmax_row(row, dnll[r], out);
        out[targets[r] as usize] = out[targets[r] as usize] - dnll[r];
    });
    dz
}

impl CrossEntropy {
    fn check(&self, shape: &Shape) -> Result<usize> {
        let (n, v) = shape.dims2()?;
        if n != self.targets.len() {
            candle_core::bail!(
                "cross-entropy: {n} rows of logits but {} targets",
                self.targets.len()
            )
        }
        if let Some(t) = self.targets.iter().find(|&&t| t as usize >= v) {
            candle_core::bail!("cross-entropy: target {t} is outside the vocabulary of {v}")
        }
        Ok(v)
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "hone-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = self.check(l.shape())?;
        let out = float_op!(s, l, "cross-entropy", |z| storage(forward(z, &self.targets, v)));
        Ok((out, Shape::from(self.targets.len())))
    }

    fn bwd(&self, z: &Tensor, _nll: &Tensor, dnll: &Tensor) -> Result<Option<Tensor>> {
        let v = self.check(z.shape())?;
        with_float_data!("cross-entropy", z.dtype(), [z, dnll] => |[zs, ds]| grad(backward(zs, &self.targets, ds, v), z))
    }
}

/// Per-row negative log-likelihood (N) of `logits` (N, V) at `targets` (N, u32).
pub fn nll(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.to_dtype(candle_core::DType::U32)?.to_vec1::<u32>()?;
    logits.contiguous()?.apply_op1(CrossEntropy { targets })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};

    #[test]
    fn fused_nll_matches_the_formula_and_its_gradient_is_right() {
        let logits = randn(&[6, 5], 2.0, 9);
        let targets = Tensor::new(&[0u32, 4, 2, 2, 1, 3], &candle_core::Device::Cpu).unwrap();
        let got = nll(logits.as_tensor(), &targets).unwrap().to_vec1::<f64>().unwrap();
        let rows = logits.as_tensor().to_vec2::<f64>().unwrap();
        for (i, &t) in [0usize, 4, 2, 2, 1, 3].iter().enumerate() {
            let want = rows[i].iter().map(|x| x.exp()).sum::<f64>().ln() - rows[i][t];
            assert!((got[i] - want).abs() < 1e-12);
        }
        check(&[logits], |v| nll(v[0].as_tensor(), &targets));
        let bad = Tensor::new(&[0u32, 9, 2, 2, 1, 3], &candle_core::Device::Cpu).unwrap();
        assert!(
            nll(
                &Tensor::zeros((6, 5), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap(),
                &bad
            )
            .unwrap_err()
            .to_string()
            .contains("outside the vocabulary")
        );
    }
}
