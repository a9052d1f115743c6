//! A block's whole self-attention as one node: `attention(x W_attnᵀ) W_projᵀ` for `x`
//! (B, T, C), `W_attn` (3C, C) and `W_proj` (C, C), with the causal attention of
//! [`super::attention`] in between. Backward: `dW_proj = dyᵀ a`, `da = dy W_proj`, the
//! attention backward gives `dqkv`, then `dW_attn = dqkvᵀ x`, `dx = dqkv W_attn`.
//!
//! As three nodes, candle's backward zero-fills and adds gradients the size of `qkv` and
//! of the attention output (4·C per position); as one node only `dx` goes back into its
//! graph. `qkv` and the attention output `a` are kept from the forward pass for the
//! backward (a second backward over the same graph recomputes them). No biases, no
//! attention dropout: those layers use the separate kernels.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::attention::{self, Dims};
use super::{Real, Saved, float_op, grad, linear, slice, storage, with_float_data};

pub struct SelfAttention {
    n_head: usize,
    saved: Saved,
}

/// The attention's dimensions, after checking the weights against `x` (B, T, C).
fn dims(x: &Shape, w_attn: &Shape, w_proj: &Shape, n_head: usize) -> Result<Dims> {
    let (b, t, c) = x.dims3()?;
    if w_attn.dims2()? != (3 * c, c) || w_proj.dims2()? != (c, c) {
        candle_core::bail!(
            "self-attention: weights {w_attn:?} and {w_proj:?} are not ({}, {c}) and ({c}, {c}) for the input {x:?}",
            3 * c
        )
    }
    Dims::of(&Shape::from((b, t, 3 * c)), n_head)
}

/// (qkv, a, y).
fn forward<T: Real>(x: &[T], w_attn: &[T], w_proj: &[T], d: &Dims) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (rows, c) = (d.b * d.t, d.c);
    let qkv = linear::forward(x, w_attn, (rows, c, 3 * c));
    let a = attention::forward(&qkv, d);
    let y = linear::forward(&a, w_proj, (rows, c, c));
    (qkv, a, y)
}

/// (dx, dW_attn, dW_proj).
#[allow(clippy::too_many_arguments)]
fn backward<T: Real>(
    x: &[T],
    w_attn: &[T],
    w_proj: &[T],
    qkv: &[T],
    a: &[T],
    dy: &[T],
    d: &Dims,
) -> [Vec<T>; 3] {
    let (rows, c) = (d.b * d.t, d.c);
    let (da, dw_proj) = linear::backward(a, w_proj, dy, (rows, c, c));
    let dqkv = attention::backward(qkv, a, &da, d);
    drop(da);
    let (dx, dw_attn) = linear::backward(x, w_attn, &dqkv, (rows, c, 3 * c));
    [dx, dw_attn, dw_proj]
}

impl CustomOp3 for SelfAttention {
    fn name(&self) -> &'static str {
        "hone-self-attention"
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
        let d = dims(l1.shape(), l2.shape(), l3.shape(), self.n_head)?;
        let y = float_op!(s1, l1, "self-attention", |x| {
            let (qkv, a, y) = forward(
                x,
                slice(s2, l2, "attention weight")?,
                slice(s3, l3, "attention weight")?,
                &d,
            );
            self.saved.put(vec![storage(qkv), storage(a)]);
            storage(y)
        });
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w_attn: &Tensor,
        w_proj: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = dims(x.shape(), w_attn.shape(), w_proj.shape(), self.n_head)?;
        let saved = self.saved.take();
        with_float_data!("self-attention", x.dtype(), [x, w_attn, w_proj, dy] => |[xs, wa, wp, g]| {
            let [dx, dwa, dwp] = match &saved {
                Some(s) => backward(xs, wa, wp, s[0].as_slice::<T>()?, s[1].as_slice::<T>()?, g, &d),
                None => {
                    let (qkv, a, _) = forward(xs, wa, wp, &d);
                    backward(xs, wa, wp, &qkv, &a, g, &d)
                }
            };
            Ok((grad(dx, x)?, grad(dwa, w_attn)?, grad(dwp, w_proj)?))
        })
    }
}

/// Causal self-attention with its input and output projections as one fused node (no
/// biases, no attention dropout): `x` (B, T, C) to (B, T, C).
pub fn self_attention(
    x: &Tensor,
    w_attn: &Tensor,
    w_proj: &Tensor,
    n_head: usize,
) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w_attn.contiguous()?,
        &w_proj.contiguous()?,
        SelfAttention { n_head, saved: Saved::default() },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use crate::model::ops::{Dropout, plain};

    fn reference(x: &Tensor, w_attn: &Tensor, w_proj: &Tensor, h: usize) -> Tensor {
        let (b, t, c) = x.dims3().unwrap();
        let qkv = plain::linear(x, w_attn, None).unwrap();
        let heads = |i: usize| {
            qkv.narrow(2, i * c, c)
                .unwrap()
                .reshape((b, t, h, c / h))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let a =
            plain::causal_attention(&heads(0), &heads(1), &heads(2), &mut Dropout::off()).unwrap();
        plain::linear(&a.transpose(1, 2).unwrap().reshape((b, t, c)).unwrap(), w_proj, None)
            .unwrap()
    }

    #[test]
    fn fused_self_attention_equals_the_unfused_ops_and_its_gradient_is_right() {
        for (b, t, c, h) in [(2, 5, 4, 2), (1, 37, 6, 3)] {
            let (x, wa, wp) =
                (randn(&[b, t, c], 1.0, 1), randn(&[3 * c, c], 0.5, 2), randn(&[c, c], 0.5, 3));
            let fused = self_attention(x.as_tensor(), wa.as_tensor(), wp.as_tensor(), h).unwrap();
            let diff = (fused - reference(x.as_tensor(), wa.as_tensor(), wp.as_tensor(), h))
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(diff < 1e-12, "{diff}");
            check(&[x, wa, wp], |v| {
                self_attention(v[0].as_tensor(), v[1].as_tensor(), v[2].as_tensor(), h)
            });
        }
    }

    #[test]
    fn a_second_backward_recomputes_and_bad_weights_are_an_error() {
        let (x, wa, wp) =
            (randn(&[1, 4, 4], 1.0, 4), randn(&[12, 4], 0.5, 5), randn(&[4, 4], 0.5, 6));
        let loss = self_attention(x.as_tensor(), wa.as_tensor(), wp.as_tensor(), 2)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let (g1, g2) = (loss.backward().unwrap(), loss.backward().unwrap());
        for v in [&x, &wa, &wp] {
            let (a, b) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
            assert_eq!(
                a.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
                b.flatten_all().unwrap().to_vec1::<f64>().unwrap()
            );
        }
        assert!(self_attention(x.as_tensor(), wp.as_tensor(), wp.as_tensor(), 2).is_err());
        assert!(self_attention(x.as_tensor(), wa.as_tensor(), wp.as_tensor(), 3).is_err());
    }
}
