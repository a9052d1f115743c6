//! Fused layer norm over the last dimension, `(x - mean) / sqrt(var + eps) * weight`, with
//! the biased variance (PyTorch's). One pass per row forward; the backward recomputes each
//! row's mean and 1/std (cheaper than keeping them) and gives
//! `dx = rstd * (g - mean(g) - x̂ * mean(g * x̂))` with `g = dy * weight`, and
//! `dweight = Σ_rows dy * x̂`. A bias, if any, is added outside (candle's broadcast add).

use candle_core::{Result, Tensor};
use multiversion::multiversion;

use super::Real;
use super::row_norm::{self, RowNorm};
use super::simd;

pub struct LayerNorm {
    pub eps: f64,
}

/// Mean and 1/std of one row.
#[inline(always)]
fn stats<T: Real>(x: &[T], eps: f64) -> (T, T) {
    let n = T::from(x.len()).unwrap();
    let mean = simd::sum(x) / n;
    let var = simd::sum_sq_dev(x, mean) / n;
    (mean, (var + T::from(eps).unwrap()).sqrt().recip())
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn forward_row<T: Real>(row: &[T], w: &[T], eps: f64, out: &mut [T]) {
    let (mean, rstd) = stats(row, eps);
    for ((o, &v), &wi) in out.iter_mut().zip(row).zip(w) {
        *o = (v - mean) * rstd * wi;
    }
}

/// One row of dx: `rstd * (g·w - mean(g·w) - x̂ * mean(g·w * x̂))`.
#[multiversion(targets("x86_64+avx2+fma"))]
fn backward_row<T: Real>(row: &[T], g: &[T], w: &[T], eps: f64, out: &mut [T]) {
    let n = T::from(row.len()).unwrap();
    let (mean, rstd) = stats(row, eps);
    // out holds g·w, then x̂ · g·w, while the two row sums are taken.
    for ((o, &gi), &wi) in out.iter_mut().zip(g).zip(w) {
        *o = gi * wi;
    }
    let mg = simd::sum(out) / n;
    for (o, &v) in out.iter_mut().zip(row) {
        *o = *o * ((v - mean) * rstd);
    }
    let mgx = simd::sum(out) / n;
    for (((o, &v), &gi), &wi) in out.iter_mut().zip(row).zip(g).zip(w) {
        let xhat = (v - mean) * rstd;
        *o = rstd * (gi * wi - mg - xhat * mgx);
    }
}

/// Adds one row's `dy * x̂` to the weight gradient's partial sum.
#[multiversion(targets("x86_64+avx2+fma"))]
fn dw_row<T: Real>(row: &[T], g: &[T], eps: f64, acc: &mut [T]) {
    let (mean, rstd) = stats(row, eps);
    for ((a, &v), &gi) in acc.iter_mut().zip(row).zip(g) {
        *a = *a + gi * ((v - mean) * rstd);
    }
}

/// The rows of [`row_norm::NormOp`].
impl RowNorm for LayerNorm {
    const NAME: &'static str = "hone-layer-norm";
    const SHOWN: &'static str = "layer norm";
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

/// Layer norm of `x` (…, C) with gain `weight` (C), fused (no bias).
pub fn layer_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    row_norm::apply(x, weight, LayerNorm { eps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use crate::model::ops::plain;

    #[test]
    fn fused_layer_norm_matches_the_plain_one_and_its_gradient_is_right() {
        let (x, w) = (randn(&[2, 3, 8], 1.5, 1), randn(&[8], 1.0, 2));
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let reference = plain::layer_norm(x.as_tensor(), w.as_tensor(), None, 1e-5).unwrap();
        let diff = (fused - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-12, "{diff}");
        check(&[x, w], |v| layer_norm(v[0].as_tensor(), v[1].as_tensor(), 1e-5));
    }

    /// Enough rows for the parallel path and several weight-gradient chunks.
    #[test]
    fn large_inputs_take_the_parallel_path_with_right_gradients() {
        let (x, w) = (randn(&[300, 128], 1.0, 3), randn(&[128], 1.0, 4));
        crate::model::gradcheck::check_tol(
            &[x, w],
            |v| layer_norm(v[0].as_tensor(), v[1].as_tensor(), 1e-5),
            1e-6,
        );
    }
}
