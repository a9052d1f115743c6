//! Fused RMSNorm over the last dimension, `x / sqrt(mean(x²) + eps) * weight` (the Llama
//! family's norm, as transformers' `LlamaRMSNorm` computes it in f32). One pass per row
//! forward; the backward recomputes each row's 1/rms and gives
//! `dx = rstd * (g - x̂ * mean(g * x̂))` with `g = dy * weight`, `x̂ = x * rstd`, and
//! `dweight = Σ_rows dy * x̂`.

use candle_core::{Result, Tensor};
use multiversion::multiversion;

use super::Real;
use super::row_norm::{self, RowNorm};
use super::simd;

pub struct RmsNorm {
    pub eps: f64,
}

/// 1 / sqrt(mean(x²) + eps) of one row.
#[inline(always)]
pub(crate) fn rstd<T: Real>(x: &[T], eps: f64) -> T {
    let n = T::from(x.len()).unwrap();
    (simd::sum_sq_dev(x, T::zero()) / n + T::from(eps).unwrap()).sqrt().recip()
}

#[multiversion(targets("x86_64+avx2+fma"))]
pub(crate) fn forward_row<T: Real>(row: &[T], w: &[T], eps: f64, out: &mut [T]) {
    let r = rstd(row, eps);
    for ((o, &v), &wi) in out.iter_mut().zip(row).zip(w) {
        *o = wi * (v * r);
    }
}

/// One row of dx: `rstd * (g·w - x̂ * mean(g·w * x̂))`.
#[multiversion(targets("x86_64+avx2+fma"))]
fn backward_row<T: Real>(row: &[T], g: &[T], w: &[T], eps: f64, out: &mut [T]) {
    let n = T::from(row.len()).unwrap();
    let r = rstd(row, eps);
    for (((o, &gi), &wi), &v) in out.iter_mut().zip(g).zip(w).zip(row) {
        *o = gi * wi * (v * r);
    }
    let mgx = simd::sum(out) / n;
    for (((o, &v), &gi), &wi) in out.iter_mut().zip(row).zip(g).zip(w) {
        *o = r * (gi * wi - v * r * mgx);
    }
}

/// Adds one row's `dy * x̂` to the weight gradient's partial sum.
#[multiversion(targets("x86_64+avx2+fma"))]
fn dw_row<T: Real>(row: &[T], g: &[T], eps: f64, acc: &mut [T]) {
    let r = rstd(row, eps);
    for ((a, &v), &gi) in acc.iter_mut().zip(row).zip(g) {
        *a = *a + gi * (v * r);
    }
}

/// The rows of [`row_norm::NormOp`].
impl RowNorm for RmsNorm {
    const NAME: &'static str = "hone-rms-norm";
    const SHOWN: &'static str = "rms norm";
    fn eps(&self) -> f64 {
        self.eps
    }
    fn forward_row<T: Real>(row: &[T], w: &[T], eps: f64, out: &mut [T]) {
        forward_row(row, w, eps, out)
    }
    fn backward_row<T: Real>(row: &[T], g: &[T], w: &[T], eps: f64, out: &mut [T]) {
        backward_row(row, g, w, eps, out)
    }
    fn dw_row<T: Real>(row: &[T], g: &[T], eps: f64, acc: &mut [T]) {
        dw_row(row, g, eps, acc)
    }
}

/// RMSNorm of `x` (…, C) with gain `weight` (C), fused.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    row_norm::apply(x, weight, RmsNorm { eps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, check_tol, randn};
    use crate::model::ops::plain;

    #[test]
    fn fused_rms_norm_matches_the_plain_one_and_its_gradient_is_right() {
        let (x, w) = (randn(&[2, 3, 8], 1.5, 1), randn(&[8], 1.0, 2));
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-6).unwrap();
        let reference = plain::rms_norm(x.as_tensor(), w.as_tensor(), 1e-6).unwrap();
        let diff = (fused - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-12, "{diff}");
        check(&[x, w], |v| rms_norm(v[0].as_tensor(), v[1].as_tensor(), 1e-6));
    }

    #[test]
    fn large_inputs_take_the_parallel_path_with_right_gradients() {
        let (x, w) = (randn(&[300, 128], 1.0, 3), randn(&[128], 1.0, 4));
        check_tol(&[x, w], |v| rms_norm(v[0].as_tensor(), v[1].as_tensor(), 1e-5), 1e-6);
    }
}
