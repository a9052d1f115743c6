//! Fused layer norm over the last dimension, `(x - mean) / sqrt(var + eps) * weight`, with
//! the biased variance (PyTorch's). One pass per row forward; the backward recomputes each
//! row's mean and 1/std (cheaper than keeping them) and gives
//! `dx = rstd * (g - mean(g) - x̂ * mean(g * x̂))` with `g = dy * weight`, and
//! `dweight = Σ_rows dy * x̂`. A bias, if any, is added outside (candle's broadcast add).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use multiversion::multiversion;

use super::simd;
use super::{Real, col_sums, float_op, grad, par_rows, storage, with_float_data};

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

fn forward<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let c = w.len();
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, c, |r, out| forward_row(&x[r * c..(r + 1) * c], w, eps, out));
    y
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

/// (dx, dweight).
fn backward<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let c = w.len();
    let rows = x.len() / c;
    let mut dx = vec![T::zero(); x.len()];
    par_rows(&mut dx, c, |r, out| {
        backward_row(&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c], w, eps, out)
    });
    let dw = col_sums(rows, c, |r, acc| {
        dw_row(&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c], eps, acc)
    });
    (dx, dw)
}

impl CustomOp2 for LayerNorm {
    fn name(&self) -> &'static str {
        "hone-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = l2.shape().elem_count();
        if l1.dims().last() != Some(&c) {
            candle_core::bail!(
                "layer norm: input {:?} does not end in the weight's size {c}",
                l1.shape()
            )
        }
        let out = float_op!(s1, l1, "layer norm", |x| {
            let w = super::slice(s2, l2, "layer norm weight")?;
            storage(forward(x, w, self.eps))
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        with_float_data!("layer norm", x.dtype(), [x, w, dy] => |[xs, ws, dys]| {
            let (dx, dw) = backward(xs, ws, dys, self.eps);
            Ok((grad(dx, x)?, grad(dw, w)?))
        })
    }
}

/// Layer norm of `x` (…, C) with gain `weight` (C), fused (no bias).
pub fn layer_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&weight.contiguous()?, LayerNorm { eps })
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
