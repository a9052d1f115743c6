//! What [`super::layer_norm`] and [`super::rms_norm`] share: a norm over the last dimension
//! with a gain, as one candle op ([`NormOp`]) whose rows are independent. A norm gives its
//! three row functions ([`RowNorm`]); the rows run in parallel ([`par_rows`]) and the gain's
//! gradient sums rows in fixed chunks ([`col_sums`]): the same bits on any thread count.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::{Real, col_sums, float_op, grad, par_rows, storage, with_float_data};

/// A norm's rows: `out = norm(row) * w`, its input gradient, and its gain gradient's terms.
pub(super) trait RowNorm: Send + Sync + 'static {
    /// The op's name, and how errors call the norm.
    const NAME: &'static str;
    const SHOWN: &'static str;
    fn eps(&self) -> f64;
    fn forward_row<T: Real>(row: &[T], w: &[T], eps: f64, out: &mut [T]);
    /// One row of `dx` for the output gradient `g`.
    fn backward_row<T: Real>(row: &[T], g: &[T], w: &[T], eps: f64, out: &mut [T]);
    /// Adds one row's terms of the gain's gradient to `acc`.
    fn dw_row<T: Real>(row: &[T], g: &[T], eps: f64, acc: &mut [T]);
}

/// A [`RowNorm`] as a candle op on `(x (…, C), weight (C))`.
pub(super) struct NormOp<N>(pub N);

fn forward<N: RowNorm, T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let c = w.len();
    let mut y = vec![T::zero(); x.len()];
    par_rows(&mut y, c, |r, out| N::forward_row(&x[r * c..(r + 1) * c], w, eps, out));
    y
}

/// (dx, dweight).
fn backward<N: RowNorm, T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> (Vec<T>, Vec<T>) {
    let c = w.len();
    let rows = x.len() / c;
    let mut dx = vec![T::zero(); x.len()];
    par_rows(&mut dx, c, |r, out| {
        N::backward_row(&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c], w, eps, out)
    });
    let dw = col_sums(rows, c, |r, acc| {
        N::dw_row(&x[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c], eps, acc)
    });
    (dx, dw)
}

impl<N: RowNorm> CustomOp2 for NormOp<N> {
    fn name(&self) -> &'static str {
        N::NAME
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
                "{}: input {:?} does not end in the weight's size {c}",
                N::SHOWN,
                l1.shape()
            )
        }
        let out = float_op!(s1, l1, N::SHOWN, |x| {
            let w = super::slice(s2, l2, N::SHOWN)?;
            storage(forward::<N, _>(x, w, self.0.eps()))
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
        with_float_data!(N::SHOWN, x.dtype(), [x, w, dy] => |[xs, ws, dys]| {
            let (dx, dw) = backward::<N, _>(xs, ws, dys, self.0.eps());
            Ok((grad(dx, x)?, grad(dw, w)?))
        })
    }
}

/// `norm` of `x` (…, C) with gain `weight` (C), fused.
pub(super) fn apply<N: RowNorm>(x: &Tensor, weight: &Tensor, norm: N) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&weight.contiguous()?, NormOp(norm))
}
