//! Fused exact GELU, `x Φ(x)` with `Φ(x) = (1 + erf(x / √2)) / 2`, and its exact derivative
//! `Φ(x) + x φ(x)` in one pass (candle's recorded backward builds it from seven tensor ops,
//! with 1/√(2π) rounded to six digits). Computed in f64 per element for both float types.

use candle_core::cpu::erf::erf_f64;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};

use super::{Real, float_op, par_rows, storage, with_data};

pub struct Gelu;

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

fn forward<T: Real>(x: &[T]) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, 1024, |r, out| {
        for (o, &v) in out.iter_mut().zip(&x[r * 1024..]) {
            let v = WithDType::to_f64(v);
            *o = <T as WithDType>::from_f64(0.5 * v * (1.0 + erf_f64(v * std::f64::consts::FRAC_1_SQRT_2)));
        }
    });
    y
}

fn backward<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
    let mut dx = vec![T::zero(); x.len()];
    par_rows(&mut dx, 1024, |r, out| {
        for ((o, &v), &g) in out.iter_mut().zip(&x[r * 1024..]).zip(&dy[r * 1024..]) {
            let v = WithDType::to_f64(v);
            let cdf = 0.5 * (1.0 + erf_f64(v * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = FRAC_1_SQRT_2PI * (-0.5 * v * v).exp();
            *o = <T as WithDType>::from_f64(WithDType::to_f64(g) * (cdf + v * pdf));
        }
    });
    dx
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
        macro_rules! go {
            ($t:ty) => {
                with_data::<$t, _>(x, |xs| with_data::<$t, _>(dy, |dys| Tensor::from_vec(backward(xs, dys), x.shape(), x.device())))
            };
        }
        Ok(Some(match x.dtype() {
            candle_core::DType::F32 => go!(f32)?,
            candle_core::DType::F64 => go!(f64)?,
            d => candle_core::bail!("gelu: unsupported dtype {d:?}"),
        }))
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
        let diff = (gelu(x.as_tensor()).unwrap() - x.as_tensor().gelu_erf().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-14);
        // The exact derivative: the tight tolerance that candle's own backward cannot meet.
        check(&[x], |v| gelu(v[0].as_tensor()));
    }
}
