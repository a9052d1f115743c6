//! The whole MLP of a block as one node, `gelu(x W_fcᵀ) W_projᵀ` for `x` (…, C), `W_fc`
//! (H, C) and `W_proj` (C, H), with its backward:
//! `dW_proj = dyᵀ g`, `dg = dy W_proj`, `dh = dg ∘ gelu'(h)`, `dW_fc = dhᵀ x`, `dx = dh W_fc`.
//!
//! As three nodes (linear, GELU, linear), candle's backward zero-fills and adds a gradient
//! the size of the hidden activations twice per block (8·C per position); as one node only
//! `dx` (C per position) goes back into candle's graph. The forward pass keeps
//! `g = gelu(h)` and `gelu'(h)` (computed together, sharing Φ and φ) for the backward, as
//! much memory as candle keeping `h` and `g` for the two inner nodes, and the backward's
//! GELU step is one multiplication; a second backward over the same graph recomputes them. Biases are not supported: layers with biases use the separate kernels.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::gelu::{self, NormalCdf};
use super::{Saved, float_op, grad, linear, slice, storage, with_float_data};

#[derive(Default)]
pub struct Mlp {
    saved: Saved,
}

/// (rows, C, H) of `x` (…, C), `w_fc` (H, C), `w_proj` (C, H).
fn dims(x: &Shape, w_fc: &Shape, w_proj: &Shape) -> Result<(usize, usize, usize)> {
    let (rows, c, h) = linear::dims(x, w_fc)?;
    if w_proj.dims2()? != (c, h) {
        candle_core::bail!(
            "mlp: projection {w_proj:?} is not ({c}, {h}) for the input {x:?} and the expansion {w_fc:?}"
        )
    }
    Ok((rows, c, h))
}

/// (gelu'(h), g, y).
fn forward<T: NormalCdf>(
    x: &[T],
    w_fc: &[T],
    w_proj: &[T],
    (rows, c, h): (usize, usize, usize),
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let hid = linear::forward(x, w_fc, (rows, c, h));
    let (g, dgelu) = gelu::forward_with_grad(&hid);
    drop(hid);
    let y = linear::forward(&g, w_proj, (rows, h, c));
    (dgelu, g, y)
}

/// (dx, dW_fc, dW_proj).
#[allow(clippy::too_many_arguments)]
fn backward<T: NormalCdf>(
    x: &[T],
    w_fc: &[T],
    w_proj: &[T],
    dgelu: &[T],
    g: &[T],
    dy: &[T],
    (rows, c, h): (usize, usize, usize),
) -> [Vec<T>; 3] {
    let (mut dh, dw_proj) = linear::backward(g, w_proj, dy, (rows, h, c));
    gelu::backward_from_grad(&mut dh, dgelu);
    let (dx, dw_fc) = linear::backward(x, w_fc, &dh, (rows, c, h));
    [dx, dw_fc, dw_proj]
}

impl CustomOp3 for Mlp {
    fn name(&self) -> &'static str {
        "hone-mlp"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(l1.shape(), l2.shape(), l3.shape())?;
        let y = float_op!(s1, l1, "mlp", |x| {
            let (hid, g, y) =
                forward(x, slice(s2, l2, "mlp weight")?, slice(s3, l3, "mlp weight")?, d);
            self.saved.put(vec![storage(hid), storage(g)]);
            storage(y)
        });
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w_fc: &Tensor,
        w_proj: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = dims(x.shape(), w_fc.shape(), w_proj.shape())?;
        let saved = self.saved.take();
        with_float_data!("mlp", x.dtype(), [x, w_fc, w_proj, dy] => |[xs, wf, wp, g]| {
            let [dx, dwf, dwp] = match &saved {
                Some(s) => backward(xs, wf, wp, s[0].as_slice::<T>()?, s[1].as_slice::<T>()?, g, d),
                None => {
                    let (dgelu, act, _) = forward(xs, wf, wp, d);
                    backward(xs, wf, wp, &dgelu, &act, g, d)
                }
            };
            Ok((grad(dx, x)?, grad(dwf, w_fc)?, grad(dwp, w_proj)?))
        })
    }
}

/// `gelu(x W_fcᵀ) W_projᵀ` as one fused node (no biases).
pub fn mlp(x: &Tensor, w_fc: &Tensor, w_proj: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w_fc.contiguous()?, &w_proj.contiguous()?, Mlp::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use crate::model::ops::plain;

    fn reference(x: &Tensor, w_fc: &Tensor, w_proj: &Tensor) -> Tensor {
        let h = plain::gelu(&plain::linear(x, w_fc, None).unwrap()).unwrap();
        plain::linear(&h, w_proj, None).unwrap()
    }

    #[test]
    fn fused_mlp_equals_the_three_ops_and_its_gradient_is_right() {
        let (x, wf, wp) =
            (randn(&[2, 3, 4], 1.0, 1), randn(&[16, 4], 0.5, 2), randn(&[4, 16], 0.5, 3));
        let diff = (mlp(x.as_tensor(), wf.as_tensor(), wp.as_tensor()).unwrap()
            - reference(x.as_tensor(), wf.as_tensor(), wp.as_tensor()))
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
        assert!(diff < 1e-12, "{diff}");
        check(&[x, wf, wp], |v| mlp(v[0].as_tensor(), v[1].as_tensor(), v[2].as_tensor()));
    }

    /// The kept activations are taken by the first backward; a second one recomputes them.
    #[test]
    fn a_second_backward_over_the_same_graph_gives_the_same_gradients() {
        let (x, wf, wp) = (randn(&[3, 4], 1.0, 4), randn(&[8, 4], 0.5, 5), randn(&[4, 8], 0.5, 6));
        let loss = mlp(x.as_tensor(), wf.as_tensor(), wp.as_tensor())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let (g1, g2) = (loss.backward().unwrap(), loss.backward().unwrap());
        for v in [&x, &wf, &wp] {
            let (a, b) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f64>().unwrap()
            );
        }
    }

    #[test]
    fn mismatched_weights_are_an_error() {
        let (x, wf, wp) = (randn(&[3, 4], 1.0, 4), randn(&[8, 4], 0.5, 5), randn(&[4, 7], 0.5, 6));
        assert!(mlp(x.as_tensor(), wf.as_tensor(), wp.as_tensor()).is_err());
    }
}
