//! Fused SwiGLU, the Llama family's MLP activation: from the packed `[gate | up]` projection
//! (…, 2F) to `silu(gate) * up` (…, F), with `silu(g) = g σ(g)`, `σ(g) = 1 / (1 + e^-g)`
//! (`exp` as [`super::Real::vexp`]). Backward: `dgate = dy · up · σ(g) (1 + g (1 − σ(g)))`,
//! `dup = dy · silu(g)`. Elementwise: every value is computed alone, in any thread layout.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use multiversion::multiversion;

use super::{Real, float_op, grad, par_rows, storage, with_float_data};

pub struct SwiGlu;

#[inline(always)]
fn sigmoid<T: Real>(g: T) -> T {
    (T::one() + (-g).vexp()).recip()
}

#[multiversion(targets("x86_64+avx2+fma"))]
pub(crate) fn forward_row<T: Real>(gu: &[T], out: &mut [T]) {
    let (g, u) = gu.split_at(out.len());
    for ((o, &gi), &ui) in out.iter_mut().zip(g).zip(u) {
        *o = gi * sigmoid(gi) * ui;
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn backward_row<T: Real>(gu: &[T], dy: &[T], out: &mut [T]) {
    let f = dy.len();
    let (g, u) = gu.split_at(f);
    let (dg, du) = out.split_at_mut(f);
    for ((((dgi, dui), &gi), &ui), &d) in dg.iter_mut().zip(du).zip(g).zip(u).zip(dy) {
        let s = sigmoid(gi);
        *dgi = d * ui * (s * (T::one() + gi * (T::one() - s)));
        *dui = d * (gi * s);
    }
}

fn width(shape: &Shape) -> Result<(usize, usize)> {
    let dims = shape.dims();
    match dims.last() {
        Some(&w) if w % 2 == 0 && w > 0 => Ok((shape.elem_count() / w, w / 2)),
        _ => candle_core::bail!("swiglu: {shape:?} does not end in an even [gate | up] width"),
    }
}

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "hone-swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, f) = width(l.shape())?;
        let out = float_op!(s, l, "swiglu", |x| {
            let mut y = vec![Default::default(); rows * f];
            par_rows(&mut y, f, |r, o| forward_row(&x[r * 2 * f..(r + 1) * 2 * f], o));
            storage(y)
        });
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("checked") = f;
        Ok((out, Shape::from(dims)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (_, f) = width(x.shape())?;
        with_float_data!("swiglu", x.dtype(), [x, dy] => |[xs, dys]| {
            let mut dx = vec![<T as num_traits::Zero>::zero(); xs.len()];
            par_rows(&mut dx, 2 * f, |r, o| backward_row(&xs[r * 2 * f..], &dys[r * f..(r + 1) * f], o));
            grad(dx, x)
        })
    }
}

/// `silu(gate) * up` for the packed `[gate | up]` (…, 2F): (…, F).
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    gate_up.contiguous()?.apply_op1(SwiGlu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use crate::model::ops::plain;

    #[test]
    fn fused_swiglu_matches_the_plain_one_and_its_gradient_is_right() {
        let x = randn(&[2, 3, 10], 2.0, 1);
        let fused = swiglu(x.as_tensor()).unwrap();
        let reference = plain::swiglu(x.as_tensor()).unwrap();
        assert_eq!(fused.dims(), &[2, 3, 5]);
        let diff = (fused - reference).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "{diff}");
        check(&[x], |v| swiglu(v[0].as_tensor()));
        assert!(swiglu(&randn(&[2, 3], 1.0, 2).as_tensor().clone()).is_err());
    }
}
