//! Fused exact GELU, `x Φ(x)` with `Φ(x) = (1 + erf(x / √2)) / 2`, and its exact derivative
//! `Φ(x) + x φ(x)` in one pass (candle's recorded backward builds it from seven tensor ops,
//! with 1/√(2π) rounded to six digits).

use candle_core::cpu::erf::erf_f64;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use multiversion::multiversion;
use rayon::prelude::*;

use super::{PAR_MIN, Real, float_op, grad, par_rows, storage, with_float_data};

pub struct Gelu;

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// `(Φ(x), φ(x))`, the standard normal CDF and density at `x`, in the element's precision:
/// f64 (gradient checks) through libm's erf; f32 (training) through Abramowitz & Stegun's
/// 7.1.26 (|error| < 1.5e-7 exactly, < 5e-7 in f32 arithmetic: a few f32 ulps of Φ), which
/// shares its `exp(-x²/2)` with the density: one `exp` per element instead of an `erf` and
/// an `exp` in f64.
pub trait NormalCdf: Real {
    fn cdf_pdf(x: Self) -> (Self, Self);
}

impl NormalCdf for f64 {
    #[inline]
    fn cdf_pdf(x: f64) -> (f64, f64) {
        (
            0.5 * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2)),
            FRAC_1_SQRT_2PI * (-0.5 * x * x).exp(),
        )
    }
}

impl NormalCdf for f32 {
    #[inline(always)]
    fn cdf_pdf(x: f32) -> (f32, f32) {
        const P: f32 = 0.327_591_1;
        const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152, 1.061_405_4];
        let u = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let e = super::simd::exp_f32(-u * u);
        let t = 1.0 / (1.0 + P * u);
        let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
        let erf = 1.0 - poly * e;
        let cdf = 0.5 * (1.0 + erf.copysign(x));
        (cdf, FRAC_1_SQRT_2PI as f32 * e)
    }
}

/// Elements per parallel task.
const CHUNK: usize = 4096;

fn forward<T: NormalCdf>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, CHUNK, |r, out| forward_chunk(&x[r * CHUNK..], out));
    y
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn forward_chunk<T: NormalCdf>(x: &[T], out: &mut [T]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v * T::cdf_pdf(v).0;
    }
}

fn backward<T: NormalCdf>(x: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    par_rows(&mut dx, CHUNK, |r, out| backward_chunk(&x[r * CHUNK..], &dy[r * CHUNK..], out));
    dx
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn backward_chunk<T: NormalCdf>(x: &[T], dy: &[T], out: &mut [T]) {
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(dy) {
        let (cdf, pdf) = T::cdf_pdf(v);
        *o = g * (cdf + v * pdf);
    }
}

/// `(gelu(x), gelu'(x))` in one pass (they share Φ and φ): for callers that keep the
/// derivative for their backward instead of the input.
pub(super) fn forward_with_grad<T: NormalCdf>(x: &[T]) -> (Vec<T>, Vec<T>) {
    let mut y = vec![T::zero(); x.len()];
    let mut dy = vec![T::zero(); x.len()];
    // Two outputs, so `par_rows` (one output) does not fit; the same threshold as there.
    if x.len() < PAR_MIN {
        forward_with_grad_chunk(x, &mut y, &mut dy);
    } else {
        y.par_chunks_mut(CHUNK)
            .zip(dy.par_chunks_mut(CHUNK))
            .zip(x.par_chunks(CHUNK))
            .for_each(|((o, d), xs)| forward_with_grad_chunk(xs, o, d));
    }
    (y, dy)
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn forward_with_grad_chunk<T: NormalCdf>(x: &[T], out: &mut [T], grad: &mut [T]) {
    for ((o, g), &v) in out.iter_mut().zip(grad.iter_mut()).zip(x) {
        let (cdf, pdf) = T::cdf_pdf(v);
        *o = v * cdf;
        *g = cdf + v * pdf;
    }
}

/// `dy ∘ gelu'(x)` in place of `dy`, from the derivative kept by [`forward_with_grad`].
pub(super) fn backward_from_grad<T: Real>(dy: &mut [T], grad: &[T]) {
    par_rows(dy, CHUNK, |r, d| mul_chunk(d, &grad[r * CHUNK..]));
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn mul_chunk<T: Real>(dy: &mut [T], grad: &[T]) {
    for (d, &g) in dy.iter_mut().zip(grad) {
        *d = *d * g;
    }
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "hone-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = float_op!(s, l, "gelu", |x| storage(forward(x)));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        with_float_data!("gelu", x.dtype(), [x, dy] => |[xs, dys]| grad(backward(xs, dys), x))
    }
}

pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Gelu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};

    #[test]
    fn fused_gelu_matches_candles_and_its_gradient_is_right() {
        // Not a multiple of the 1024-element rows, and large enough for the parallel path.
        let x = randn(&[37, 1000], 2.0, 1);
        let diff = (gelu(x.as_tensor()).unwrap() - x.as_tensor().gelu_erf().unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-14);
        // The exact derivative: the tight tolerance that candle's own backward cannot meet.
        check(&[x], |v| gelu(v[0].as_tensor()));
    }

    /// The f32 path (a polynomial erf) agrees with candle's f32 GELU and with the f64
    /// derivative to f32 precision.
    #[test]
    fn the_f32_path_is_accurate_to_f32_precision() {
        let x64: Vec<f64> = (-800..=800).map(|i| f64::from(i) / 100.0).collect();
        let x = Tensor::new(x64.as_slice(), &candle_core::Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let diff = (gelu(&x).unwrap() - x.gelu_erf().unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{diff}");
        for &v in &x64 {
            let (c32, p32) = <f32 as NormalCdf>::cdf_pdf(v as f32);
            let (c64, p64) = <f64 as NormalCdf>::cdf_pdf(f64::from(v as f32));
            assert!(
                (f64::from(c32) - c64).abs() < 5e-7 && (f64::from(p32) - p64).abs() < 1e-7,
                "at {v}: {c32} {p32} vs {c64} {p64}"
            );
        }
    }

    /// The kept-derivative path (the MLP node's) gives the same bits as the op's own, on
    /// both sides of the parallel threshold.
    #[test]
    fn forward_with_grad_and_backward_from_grad_equal_forward_and_backward() {
        for n in [1000, 3 * PAR_MIN + 17] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 125.0 - 4.0).collect();
            let dy: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0).collect();
            let (y, d) = forward_with_grad(&x);
            assert_eq!(y, forward(&x));
            let mut dx = dy.clone();
            backward_from_grad(&mut dx, &d);
            assert_eq!(dx, backward(&x, &dy));
        }
    }
}
