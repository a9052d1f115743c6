//! Fused linear map `y = x Wᵀ` for `x` (…, in) and `W` (out, in) as `nn.Linear` keeps it,
//! with its backward `dx = dy W` and `dW = dyᵀ x` as one matrix product each over all rows.
//!
//! candle's `Linear` on a 3-D input broadcasts `W` to every batch row and multiplies batch by
//! batch, so its backward makes a (B, out, in) stack of per-batch weight gradients with an
//! inner dimension of T, sums it over B, and records transpose and broadcast nodes whose
//! gradients are zero-filled and added. Here the rows are flattened (free: the input is
//! contiguous), `dW` is one product with inner dimension B·T, and the node is one node.
//! A bias, if any, is added outside (candle's broadcast add).
//!
//! The products follow [`super::product`]'s rules (the `gemm` crate, candle's, in fixed
//! chunks of the summed dimension) over the current rayon pool, split by output blocks,
//! never along a sum: the results depend neither on the thread count nor on the CPU's caches.

use super::product::product_vec as product;
use super::{Real, float_op, grad, slice, storage, with_float_data};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

pub struct Linear;

/// (rows, in, out) of `x` (…, in) and `w` (out, in).
pub(super) fn dims(x: &Shape, w: &Shape) -> Result<(usize, usize, usize)> {
    let (out, inp) = w.dims2()?;
    match x.dims().last() {
        Some(&n) if n == inp => Ok((x.elem_count() / inp.max(1), inp, out)),
        _ => candle_core::bail!(
            "linear: input {x:?} does not end in the weight's input size {inp} (weight {w:?})"
        ),
    }
}

pub(super) fn forward<T: Real>(
    x: &[T],
    w: &[T],
    (rows, inp, out): (usize, usize, usize),
) -> Vec<T> {
    // y (rows×out) = x (rows×in) · Wᵀ (in×out): Wᵀ reads W with row stride 1, column stride in.
    product(rows, out, inp, x, (inp as isize, 1), w, (1, inp as isize))
}

/// (dx, dW).
pub(super) fn backward<T: Real>(
    x: &[T],
    w: &[T],
    dy: &[T],
    (rows, inp, out): (usize, usize, usize),
) -> (Vec<T>, Vec<T>) {
    let dx = product(rows, inp, out, dy, (out as isize, 1), w, (inp as isize, 1));
    // dW (out×in) = dyᵀ (out×rows) · x (rows×in).
    let dw = product(out, inp, rows, dy, (1, out as isize), x, (inp as isize, 1));
    (dx, dw)
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "hone-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(l1.shape(), l2.shape())?;
        let y = float_op!(s1, l1, "linear", |x| storage(forward(
            x,
            slice(s2, l2, "linear weight")?,
            d
        )));
        let mut shape = l1.dims().to_vec();
        *shape.last_mut().expect("dims checked") = d.2;
        Ok((y, Shape::from(shape)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = dims(x.shape(), w.shape())?;
        with_float_data!("linear", x.dtype(), [x, w, dy] => |[xs, ws, dys]| {
            let (dx, dw) = backward(xs, ws, dys, d);
            Ok((grad(dx, x)?, grad(dw, w)?))
        })
    }
}

/// `x Wᵀ` for `x` (…, in) and `weight` (out, in): (…, out), fused (no bias).
pub fn linear(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&weight.contiguous()?, Linear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use candle_core::Module;

    #[test]
    fn fused_linear_equals_candles_and_its_gradient_is_right() {
        for shape in [&[2usize, 3, 5][..], &[4, 5], &[1, 1, 5]] {
            let (x, w) = (randn(shape, 1.0, 5), randn(&[7, 5], 0.5, 6));
            let fused = linear(x.as_tensor(), w.as_tensor()).unwrap();
            let reference =
                candle_nn::Linear::new(w.as_tensor().clone(), None).forward(x.as_tensor()).unwrap();
            assert_eq!(fused.dims(), reference.dims());
            let diff = (fused - reference)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(diff < 1e-12, "{diff}");
            check(&[x, w], |v| linear(v[0].as_tensor(), v[1].as_tensor()));
        }
    }

    /// Large enough for the products to split over the pool; the same bytes on 1 and 3 threads.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let x = randn(&[6, 50, 64], 1.0, 7).as_tensor().to_dtype(candle_core::DType::F32).unwrap();
        let w = candle_core::Var::from_tensor(
            &randn(&[96, 64], 0.5, 8).as_tensor().to_dtype(candle_core::DType::F32).unwrap(),
        )
        .unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = linear(&x, w.as_tensor()).unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                (
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    g.get(w.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                )
            })
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn mismatched_sizes_and_integer_inputs_are_errors() {
        let (x, w) = (randn(&[2, 4], 1.0, 1), randn(&[3, 5], 1.0, 2));
        let err = linear(x.as_tensor(), w.as_tensor()).unwrap_err().to_string();
        assert!(err.contains("does not end in the weight's input size 5"), "{err}");
        let ids =
            candle_core::Tensor::new(&[[1u32, 2, 3, 4, 5]], &candle_core::Device::Cpu).unwrap();
        let err = linear(&ids, w.as_tensor()).unwrap_err().to_string();
        assert!(err.contains("linear: only f32 and f64"), "{err}");
    }
}
