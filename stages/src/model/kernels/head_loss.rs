//! The LM head and the cross-entropy together, a block of rows at a time, so that the
//! (N, V) logits never exist whole: per-row `nll = logsumexp(h Wᵀ) − (h Wᵀ)[target]` for
//! hidden states `h` (N, C) and the head `W` (V, C). The backward recomputes each block's
//! logits and gives `dh = dz W` and `dW = Σ_blocks dzᵀ h` with `dz = dnll · (softmax − onehot)`,
//! the blocks' weight gradients added in block order. At SmolLM2's 49,152 tokens and 4,096
//! rows, 1.6 GB of logits and their gradient become two blocks of 100 MB.
//!
//! Products follow [`super::product`]'s rules and the row functions are the cross-entropy
//! kernel's ([`super::cross_entropy`]): the same bits on any thread count and CPU.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::cross_entropy::{lse, softmax_row};
use super::product::product_into;
use super::{Real, float_op, grad, par_rows, storage, with_float_data};

/// Rows per block (a multiple of the products' 512-term chunks).
const ROWS: usize = 512;

pub struct HeadLoss {
    pub targets: Vec<u32>,
}

impl HeadLoss {
    fn dims(&self, h: &Shape, w: &Shape) -> Result<(usize, usize, usize)> {
        let (n, c) = h.dims2()?;
        let (v, c2) = w.dims2()?;
        if c != c2 || n != self.targets.len() {
            candle_core::bail!(
                "head loss: hidden {h:?}, head {w:?}, {} targets",
                self.targets.len()
            )
        }
        if let Some(t) = self.targets.iter().find(|&&t| t as usize >= v) {
            candle_core::bail!("head loss: target {t} is outside the vocabulary of {v}")
        }
        Ok((n, c, v))
    }

    /// Block `r0..r0 + m`'s logits (m × V).
    fn logits<T: Real>(h: &[T], w: &[T], (r0, m): (usize, usize), c: usize, v: usize) -> Vec<T> {
        let mut z = vec![T::zero(); m * v];
        product_into(
            m,
            v,
            c,
            &mut z,
            &h[r0 * c..(r0 + m) * c],
            (c as isize, 1),
            w,
            (1, c as isize),
        );
        z
    }

    fn forward<T: Real>(&self, h: &[T], w: &[T], (n, c, v): (usize, usize, usize)) -> Vec<T> {
        let mut nll = vec![T::zero(); n];
        for r0 in (0..n).step_by(ROWS) {
            let m = ROWS.min(n - r0);
            let z = Self::logits(h, w, (r0, m), c, v);
            let t = &self.targets[r0..r0 + m];
            par_rows(&mut nll[r0..r0 + m], 1, |r, out| {
                let row = &z[r * v..(r + 1) * v];
                out[0] = lse(row) - row[t[r] as usize];
            });
        }
        nll
    }

    fn backward<T: Real>(
        &self,
        h: &[T],
        w: &[T],
        dnll: &[T],
        (n, c, v): (usize, usize, usize),
    ) -> (Vec<T>, Vec<T>) {
        let (mut dh, mut dw) = (vec![T::zero(); n * c], vec![T::zero(); v * c]);
        let mut part = vec![T::zero(); v * c];
        for (b, r0) in (0..n).step_by(ROWS).enumerate() {
            let m = ROWS.min(n - r0);
            let z = Self::logits(h, w, (r0, m), c, v);
            let t = &self.targets[r0..r0 + m];
            let mut dz = vec![T::zero(); m * v];
            par_rows(&mut dz, v, |r, out| {
                softmax_row(&z[r * v..(r + 1) * v], dnll[r0 + r], out);
                let k = t[r] as usize;
                out[k] = out[k] - dnll[r0 + r];
            });
            drop(z);
            product_into(
                m,
                c,
                v,
                &mut dh[r0 * c..(r0 + m) * c],
                &dz,
                (v as isize, 1),
                w,
                (c as isize, 1),
            );
            let dst = if b == 0 { &mut dw } else { &mut part };
            product_into(
                v,
                c,
                m,
                dst,
                &dz,
                (1, v as isize),
                &h[r0 * c..(r0 + m) * c],
                (c as isize, 1),
            );
            if b > 0 {
                for (a, &p) in dw.iter_mut().zip(&part) {
                    *a = *a + p;
                }
            }
        }
        (dh, dw)
    }
}

impl CustomOp2 for HeadLoss {
    fn name(&self) -> &'static str {
        "hone-head-loss"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = self.dims(l1.shape(), l2.shape())?;
        let out = float_op!(s1, l1, "head loss", |h| {
            let w = super::slice(s2, l2, "head loss weight")?;
            storage(self.forward(h, w, d))
        });
        Ok((out, Shape::from(d.0)))
    }

    fn bwd(
        &self,
        h: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dnll: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let d = self.dims(h.shape(), w.shape())?;
        with_float_data!("head loss", h.dtype(), [h, w, dnll] => |[hs, ws, g]| {
            let (dh, dw) = self.backward(hs, ws, g, d);
            Ok((grad(dh, h)?, grad(dw, w)?))
        })
    }
}

/// Per-row `−log softmax(h Wᵀ)[target]` (N) for hidden states `h` (N, C) and the head `W`
/// (V, C), without the (N, V) logits.
pub fn head_nll(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let targets = targets.flatten_all()?.to_vec1::<u32>()?;
    h.contiguous()?.apply_op2(&w.contiguous()?, HeadLoss { targets })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};

    #[test]
    fn equals_the_head_then_cross_entropy_and_its_gradients_are_right() {
        // More rows than a block: two blocks, the second partial.
        let (h, w) = (randn(&[ROWS + 3, 6], 1.0, 1), randn(&[7, 6], 0.5, 2));
        let targets: Vec<u32> = (0..ROWS as u32 + 3).map(|i| i * 5 % 7).collect();
        let t = Tensor::new(targets.as_slice(), &candle_core::Device::Cpu).unwrap();
        let fused = head_nll(h.as_tensor(), w.as_tensor(), &t).unwrap();
        let logits = h.as_tensor().matmul(&w.as_tensor().t().unwrap()).unwrap();
        let reference = crate::model::kernels::cross_entropy::nll(&logits, &t).unwrap();
        let diff = (fused - reference).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "{diff}");
        let (h, w) = (randn(&[9, 4], 1.0, 3), randn(&[5, 4], 0.5, 4));
        let t = Tensor::new(&[0u32, 4, 2, 1, 3, 3, 0, 1, 2], &candle_core::Device::Cpu).unwrap();
        check(&[h, w], |v| head_nll(v[0].as_tensor(), v[1].as_tensor(), &t));
        let bad = Tensor::new(&[7u32; 9], &candle_core::Device::Cpu).unwrap();
        assert!(
            head_nll(
                &randn(&[9, 4], 1.0, 5).as_tensor().clone(),
                &randn(&[5, 4], 1.0, 6).as_tensor().clone(),
                &bad
            )
            .is_err()
        );
    }
}
