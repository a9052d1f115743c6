//! Batched matrix product `c = a · b` for `a` (…, m, k) and `b` (…, k, n) with the same
//! leading dimensions, and its backward `da = dc bᵀ`, `db = aᵀ dc`, every product by
//! [`super::product`]'s rules: candle's own `matmul` leaves the summation order to `gemm`'s
//! cache-derived blocking. Used where attention is not the fused kernel (attention dropout).
//! The batch entries run in parallel on the rayon pool; no sum is split across threads.

use super::product::product_into;
use super::{Real, float_op, grad, par_rows, slice, storage, with_float_data};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

pub struct Matmul;

/// (batch, m, k, n) of `a` (…, m, k) and `b` (…, k, n).
fn dims(a: &Shape, b: &Shape) -> Result<(usize, usize, usize, usize)> {
    let (ad, bd) = (a.dims(), b.dims());
    let r = ad.len();
    if r < 2 || bd.len() != r || ad[..r - 2] != bd[..r - 2] || ad[r - 1] != bd[r - 2] {
        candle_core::bail!("matmul: cannot multiply {a:?} by {b:?}")
    }
    Ok((ad[..r - 2].iter().product(), ad[r - 2], ad[r - 1], bd[r - 1]))
}

fn forward<T: Real>(a: &[T], b: &[T], (batch, m, k, n): (usize, usize, usize, usize)) -> Vec<T> {
    let mut c = vec![T::zero(); batch * m * n];
    par_rows(&mut c, m * n, |e, ce| {
        let (ae, be) = (&a[e * m * k..][..m * k], &b[e * k * n..][..k * n]);
        product_into(m, n, k, ce, ae, (k as isize, 1), be, (n as isize, 1));
    });
    c
}

fn backward<T: Real>(
    a: &[T],
    b: &[T],
    dc: &[T],
    (batch, m, k, n): (usize, usize, usize, usize),
) -> (Vec<T>, Vec<T>) {
    // da (m×k) = dc (m×n) · bᵀ (n×k); db (k×n) = aᵀ (k×m) · dc (m×n).
    let (mut da, mut db) = (vec![T::zero(); batch * m * k], vec![T::zero(); batch * k * n]);
    par_rows(&mut da, m * k, |e, out| {
        let (de, be) = (&dc[e * m * n..][..m * n], &b[e * k * n..][..k * n]);
        product_into(m, k, n, out, de, (n as isize, 1), be, (1, n as isize));
    });
    par_rows(&mut db, k * n, |e, out| {
        let (ae, de) = (&a[e * m * k..][..m * k], &dc[e * m * n..][..m * n]);
        product_into(k, n, m, out, ae, (1, k as isize), de, (n as isize, 1));
    });
    (da, db)
}

impl CustomOp2 for Matmul {
    fn name(&self) -> &'static str {
        "hone-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = dims(l1.shape(), l2.shape())?;
        let c = float_op!(s1, l1, "matmul", |a| {
            let b = slice(s2, l2, "matmul rhs")?;
            storage(forward(a, b, d))
        });
        let mut shape = l1.dims().to_vec();
        *shape.last_mut().expect("dims checked") = d.3;
        Ok((c, Shape::from(shape)))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _c: &Tensor,
        dc: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = dims(a.shape(), b.shape())?;
        with_float_data!("matmul", a.dtype(), [a, b, dc] => |[av, bv, dcv]| {
            let (da, db) = backward(av, bv, dcv, d);
            Ok((grad(da, a)?, grad(db, b)?))
        })
    }
}

/// `a · b` over the last two dimensions, the leading ones equal (no broadcasting).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.contiguous()?.apply_op2(&b.contiguous()?, Matmul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};

    #[test]
    fn equals_candles_product_and_its_gradient_is_right() {
        for (sa, sb) in [(&[2usize, 3, 4, 5][..], &[2usize, 3, 5, 6][..]), (&[4, 3], &[3, 2])] {
            let (a, b) = (randn(sa, 1.0, 3), randn(sb, 1.0, 4));
            let ours = matmul(a.as_tensor(), b.as_tensor()).unwrap();
            let candle = a.as_tensor().matmul(b.as_tensor()).unwrap();
            assert_eq!(ours.dims(), candle.dims());
            let diff =
                (ours - candle).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>();
            assert!(diff.unwrap() < 1e-12);
            check(&[a, b], |v| matmul(v[0].as_tensor(), v[1].as_tensor()));
        }
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let (a, b) = (randn(&[2, 3, 4], 1.0, 1), randn(&[2, 5, 6], 1.0, 2));
        let err = matmul(a.as_tensor(), b.as_tensor()).unwrap_err().to_string();
        assert!(err.contains("matmul: cannot multiply"), "{err}");
    }
}
