//! Fused causal self-attention from the packed `qkv` projection (B, T, 3C) straight to the
//! merged-heads output (B, T, C): per batch row and head, `S = q kᵀ / √hd`, the causal
//! softmax `P`, `y = P v`, read and written in place in the packed layouts (no head split,
//! transposes or copies, and no mask tensor). The backward recomputes `P` (as flash
//! attention does: cheaper than keeping B·H·T² probabilities) and gives
//! `dv = Pᵀ dy`, `dS = P ∘ (dP − rowsum(P ∘ dP)) / √hd` with `dP = dy vᵀ`, `dq = dS k`,
//! `dk = dSᵀ q`, into the packed `dqkv`.
//!
//! The small matrix products go to the `gemm` crate (the one candle uses) on one thread
//! each; the (batch, head) pairs run in parallel on the rayon pool. Every output element is
//! computed by one task in a fixed order, so results do not depend on the thread count.
//! Training without attention dropout only: [`super::super::ops`] falls back to the unfused
//! path when dropout is on or a KV cache is used.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use super::{Real, float_op, storage, with_data};

pub struct CausalAttention {
    pub n_head: usize,
}

/// A raw pointer that may cross threads: tasks write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

struct Dims {
    b: usize,
    t: usize,
    c: usize,
    h: usize,
    hd: usize,
}

impl Dims {
    fn of(shape: &Shape, n_head: usize) -> Result<Dims> {
        let (b, t, c3) = shape.dims3()?;
        if c3 % 3 != 0 || (c3 / 3) % n_head != 0 {
            candle_core::bail!("attention: qkv {:?} is not (B, T, 3·C) with C a multiple of {n_head} heads", shape)
        }
        Ok(Dims { b, t, c: c3 / 3, h: n_head, hd: c3 / 3 / n_head })
    }
    fn scale<T: Real>(&self) -> T {
        T::from(1.0 / (self.hd as f64).sqrt()).unwrap()
    }
}

/// `dst (m×n) = [dst +] alpha·0 + beta · lhs (m×k) · rhs (k×n)`, strides in elements
/// (row stride, column stride), on this thread.
#[allow(clippy::too_many_arguments)]
unsafe fn mm<T: Real>(m: usize, n: usize, k: usize, dst: *mut T, d_rs: usize, lhs: *const T, l: (isize, isize), rhs: *const T, r: (isize, isize), beta: T) {
    unsafe {
        gemm(m, n, k, dst, 1, d_rs as isize, false, lhs, l.1, l.0, rhs, r.1, r.0, T::zero(), beta, false, false, false, Parallelism::None);
    }
}

/// The causal softmax probabilities of one (batch, head) into `p` (t×t, zeros above the
/// diagonal), from the packed qkv.
unsafe fn probs<T: Real>(d: &Dims, qkv: *const T, p: &mut [T]) {
    let (t, c3) = (d.t, 3 * d.c as isize);
    // S = scale · q kᵀ: q rows at stride 3C; kᵀ (hd×t) reads k with row stride 1, col stride 3C.
    unsafe { mm(t, t, d.hd, p.as_mut_ptr(), t, qkv, (c3, 1), qkv.add(d.c), (1, c3), d.scale()) };
    for i in 0..t {
        let row = &mut p[i * t..(i + 1) * t];
        let max = row[..=i].iter().fold(T::neg_infinity(), |m, &v| num_traits::Float::max(m, v));
        let mut sum = T::zero();
        for v in &mut row[..=i] {
            *v = (*v - max).exp();
            sum = sum + *v;
        }
        let inv = sum.recip();
        row[..=i].iter_mut().for_each(|v| *v = *v * inv);
        row[i + 1..].iter_mut().for_each(|v| *v = T::zero());
    }
}

fn forward<T: Real>(qkv: &[T], d: &Dims) -> Vec<T> {
    let (t, c) = (d.t, d.c);
    let mut y = vec![T::zero(); d.b * t * c];
    let yp = Ptr(y.as_mut_ptr());
    (0..d.b * d.h).into_par_iter().for_each_init(
        || vec![T::zero(); t * t],
        |p, bh| {
            let (b, h) = (bh / d.h, bh % d.h);
            let base = unsafe { qkv.as_ptr().add(b * t * 3 * c + h * d.hd) };
            unsafe {
                probs(d, base, p);
                // y[b, :, h·hd..] (t×hd, row stride C) = P v.
                let _ = &yp;
                mm(t, d.hd, t, yp.0.add(b * t * c + h * d.hd), c, p.as_ptr(), (t as isize, 1), base.add(2 * c), (3 * c as isize, 1), T::one());
            }
        },
    );
    y
}

fn backward<T: Real>(qkv: &[T], dy: &[T], d: &Dims) -> Vec<T> {
    let (t, c) = (d.t, d.c);
    let (c3, ti) = (3 * c as isize, t as isize);
    let mut dqkv = vec![T::zero(); qkv.len()];
    let dp_out = Ptr(dqkv.as_mut_ptr());
    (0..d.b * d.h).into_par_iter().for_each_init(
        || (vec![T::zero(); t * t], vec![T::zero(); t * t]),
        |(p, ds), bh| {
            let (b, h) = (bh / d.h, bh % d.h);
            let off = b * t * 3 * c + h * d.hd;
            let dyb = unsafe { dy.as_ptr().add(b * t * c + h * d.hd) };
            let base = unsafe { qkv.as_ptr().add(off) };
            let out = dp_out;
            unsafe {
                probs(d, base, p);
                // dP = dy vᵀ (t×t).
                mm(t, t, d.hd, ds.as_mut_ptr(), t, dyb, (c as isize, 1), base.add(2 * c), (1, c3), T::one());
            }
            let scale = d.scale::<T>();
            for i in 0..t {
                let (pr, dr) = (&p[i * t..(i + 1) * t], &mut ds[i * t..(i + 1) * t]);
                let dot = pr[..=i].iter().zip(&dr[..=i]).map(|(&a, &b)| a * b).sum::<T>();
                for j in 0..=i {
                    dr[j] = scale * pr[j] * (dr[j] - dot);
                }
                dr[i + 1..].iter_mut().for_each(|v| *v = T::zero());
            }
            unsafe {
                let dst = out.0.add(off);
                // dq = dS k; dk = dSᵀ q; dv = Pᵀ dy (each t×hd at row stride 3C).
                mm(t, d.hd, t, dst, 3 * c, ds.as_ptr(), (ti, 1), base.add(c), (c3, 1), T::one());
                mm(t, d.hd, t, dst.add(c), 3 * c, ds.as_ptr(), (1, ti), base, (c3, 1), T::one());
                mm(t, d.hd, t, dst.add(2 * c), 3 * c, p.as_ptr(), (1, ti), dyb, (c as isize, 1), T::one());
            }
        },
    );
    dqkv
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "hone-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::of(l.shape(), self.n_head)?;
        let out = float_op!(s, l, "attention", |x| storage(forward(x, &d)));
        Ok((out, Shape::from((d.b, d.t, d.c))))
    }

    fn bwd(&self, qkv: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let d = Dims::of(qkv.shape(), self.n_head)?;
        macro_rules! go {
            ($t:ty) => {
                with_data::<$t, _>(qkv, |q| with_data::<$t, _>(dy, |g| Tensor::from_vec(backward(q, g, &d), qkv.shape(), qkv.device())))
            };
        }
        Ok(Some(match qkv.dtype() {
            candle_core::DType::F32 => go!(f32)?,
            candle_core::DType::F64 => go!(f64)?,
            dt => candle_core::bail!("attention: unsupported dtype {dt:?}"),
        }))
    }
}

/// Causal self-attention of packed `qkv` (B, T, 3C) with `n_head` heads: (B, T, C).
pub fn causal_self_attention(qkv: &Tensor, n_head: usize) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(CausalAttention { n_head })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gradcheck::{check, randn};
    use crate::model::ops::{Dropout, plain};

    /// The unfused computation: split heads, matmuls, mask, softmax, merge heads.
    fn reference(qkv: &Tensor, h: usize) -> Tensor {
        let (b, t, c3) = qkv.dims3().unwrap();
        let c = c3 / 3;
        let heads = |i: usize| qkv.narrow(2, i * c, c).unwrap().reshape((b, t, h, c / h)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
        let y = plain::causal_attention(&heads(0), &heads(1), &heads(2), &mut Dropout::off()).unwrap();
        y.transpose(1, 2).unwrap().reshape((b, t, c)).unwrap()
    }

    #[test]
    fn fused_attention_equals_the_unfused_one_and_its_gradient_is_right() {
        for (b, t, c, h) in [(2, 5, 6, 2), (1, 7, 12, 3)] {
            let qkv = randn(&[b, t, 3 * c], 1.0, 1 + t as u64);
            let diff = (causal_self_attention(qkv.as_tensor(), h).unwrap() - reference(qkv.as_tensor(), h)).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "{diff}");
            check(&[qkv], |v| causal_self_attention(v[0].as_tensor(), h));
        }
    }

    #[test]
    fn f32_matches_too_and_shapes_are_checked() {
        let qkv = randn(&[3, 16, 3 * 32], 1.0, 3).as_tensor().to_dtype(candle_core::DType::F32).unwrap();
        let diff = (causal_self_attention(&qkv, 4).unwrap() - reference(&qkv, 4)).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(causal_self_attention(&qkv.narrow(2, 0, 95).unwrap(), 4).is_err());
    }
}
