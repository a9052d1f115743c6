//! Fused causal self-attention from the packed `qkv` projection (B, T, 3C) straight to the
//! merged-heads output (B, T, C): per batch row and head, `S = q kᵀ / √hd`, the causal
//! softmax `P`, `y = P v`, read and written in place in the packed layouts (no head split,
//! transposes or copies, and no mask tensor). The backward recomputes `P` (as flash
//! attention does: cheaper than keeping B·H·T² probabilities) and gives
//! `dv = Pᵀ dy`, `dS = P ∘ (dP − rowsum(P ∘ dP)) / √hd` with `dP = dy vᵀ`, `dq = dS k`,
//! `dk = dSᵀ q`, into the packed `dqkv`, where `rowsum(P ∘ dP) = dy · y` per row.
//!
//! Queries go in tiles of [`TILE`] rows; tile `i` multiplies with keys `0..(i + 1)·TILE`
//! only, so the blocks above the diagonal are never computed (56% of the T×T work at
//! T = 256, 75% at T = 64). `dk` and `dv` are made per key tile, from the queries at and
//! after it.
//!
//! The small matrix products follow [`super::product`]'s rules, on one thread each; the
//! (batch, head) pairs run in parallel on the rayon pool. Every output element is computed
//! by one task in a fixed order, so results depend neither on the thread count nor on the
//! CPU.
//! Training without attention dropout only: [`super::super::ops`] falls back to the unfused
//! path when dropout is on.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use multiversion::multiversion;
use rayon::prelude::*;

use super::product::{Operand, product};
use super::simd;
use super::{Real, float_op, grad, storage, with_float_data};

pub struct CausalAttention {
    pub n_head: usize,
    /// Key/value heads (`n_head`: one per query head).
    pub n_kv: usize,
}

/// A raw pointer that may cross threads: tasks write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct Ptr<T>(*mut T);
unsafe impl<T> Send for Ptr<T> {}
unsafe impl<T> Sync for Ptr<T> {}

impl<T> Ptr<T> {
    /// The element `off` past the start (a method, so closures capture the whole `Ptr`).
    unsafe fn at(self, off: usize) -> *mut T {
        unsafe { self.0.add(off) }
    }
}

pub(super) struct Dims {
    pub(super) b: usize,
    pub(super) t: usize,
    /// Output width: query heads · head size.
    pub(super) c: usize,
    h: usize,
    /// Key/value heads (grouped-query attention: `h / kv` query heads share each).
    kv: usize,
    hd: usize,
    /// Packed row width: `(h + 2·kv) · hd`.
    w: usize,
}

impl Dims {
    pub(super) fn of(shape: &Shape, n_head: usize) -> Result<Dims> {
        Dims::grouped(shape, n_head, n_head)
    }
    pub(super) fn grouped(shape: &Shape, n_head: usize, n_kv: usize) -> Result<Dims> {
        let (b, t, w) = shape.dims3()?;
        let units = n_head + 2 * n_kv;
        if n_kv == 0 || !n_head.is_multiple_of(n_kv) || w % units != 0 {
            candle_core::bail!(
                "attention: qkv {:?} is not (B, T, ({n_head} + 2·{n_kv}) heads · head size)",
                shape
            )
        }
        let hd = w / units;
        Ok(Dims { b, t, c: n_head * hd, h: n_head, kv: n_kv, hd, w })
    }
    fn scale<T: Real>(&self) -> T {
        T::from(1.0 / (self.hd as f64).sqrt()).unwrap()
    }
    /// Offsets within a packed row of query head `h`'s query, key and value.
    fn offsets(&self, h: usize) -> (usize, usize, usize) {
        let j = h / (self.h / self.kv);
        (h * self.hd, self.c + j * self.hd, self.c + (self.kv + j) * self.hd)
    }
}

/// Query rows per tile. Tile `i` needs keys `0..(i + 1)·TILE` only, so the products skip
/// the blocks above the diagonal: at T = 256 they do 56% of the full T×T work.
const TILE: usize = 32;

/// `dst (m×n) = beta · lhs (m×k) · rhs (k×n)` on this thread, strides in elements as
/// (row stride, column stride), by [`super::product`]'s rules. Writes every element of
/// `dst` without reading it.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn mm<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    d_rs: usize,
    lhs: *const T,
    l: (isize, isize),
    rhs: *const T,
    r: (isize, isize),
    beta: T,
) {
    unsafe {
        product(
            m,
            n,
            k,
            dst,
            d_rs,
            Operand::new(lhs, l),
            Operand::new(rhs, r),
            beta,
            Parallelism::None,
        );
    }
}

/// The query tiles of `t` rows: (first row, rows, keys it sees).
fn tiles(t: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..t).step_by(TILE).map(move |r0| {
        let m = TILE.min(t - r0);
        (r0, m, r0 + m)
    })
}

/// The causal softmax probabilities of query rows `r0..r0+m` of one (batch, head), keys
/// `0..r0+m`, into `p` at row stride `t` (zeros right of the diagonal; later columns are
/// not touched), from the packed qkv: `q` and `k` point at the head's query and key in the
/// batch row's first position.
#[inline(always)]
unsafe fn probs<T: Real>(
    d: &Dims,
    q: *const T,
    k: *const T,
    p: &mut [T],
    (r0, m, nk): (usize, usize, usize),
) {
    let (t, w) = (d.t, d.w as isize);
    // S = scale · q kᵀ: q rows at stride W; kᵀ (hd×nk) reads k with row stride 1, col stride W.
    unsafe {
        mm(
            m,
            nk,
            d.hd,
            p.as_mut_ptr().add(r0 * t),
            t,
            q.add(r0 * d.w),
            (w, 1),
            k,
            (1, w),
            d.scale(),
        )
    };
    softmax_rows(p, t, r0, m, nk);
}

/// The causal softmax of rows `r0..r0+m` of `p` (row stride `t`), columns `0..nk`.
#[multiversion(targets("x86_64+avx2+fma"))]
fn softmax_rows<T: Real>(p: &mut [T], t: usize, r0: usize, m: usize, nk: usize) {
    for i in r0..r0 + m {
        let row = &mut p[i * t..i * t + nk];
        let (live, masked) = row.split_at_mut(i + 1);
        let max = simd::max(live);
        for v in live.iter_mut() {
            *v = (*v - max).vexp();
        }
        let inv = simd::sum(live).recip();
        for v in live.iter_mut() {
            *v = *v * inv;
        }
        masked.fill(T::zero());
    }
}

/// `dS = scale · P ∘ (dP − D)` in place of `dP` for rows `r0..r0+m` (row stride `t`,
/// columns `0..nk`), with `D = rowsum(P ∘ dP) = dy · y` per row (`dy`, `y` at row stride `c`).
#[multiversion(targets("x86_64+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn score_grads<T: Real>(
    p: &[T],
    ds: &mut [T],
    dy: &[T],
    y: &[T],
    (t, c, hd): (usize, usize, usize),
    r0: usize,
    m: usize,
    nk: usize,
    scale: T,
) {
    for i in r0..r0 + m {
        let dot = simd::dot(&dy[i * c..i * c + hd], &y[i * c..i * c + hd]);
        let (pr, dr) = (&p[i * t..i * t + i + 1], &mut ds[i * t..i * t + nk]);
        let (live, masked) = dr.split_at_mut(i + 1);
        for (g, &pv) in live.iter_mut().zip(pr) {
            *g = scale * pv * (*g - dot);
        }
        masked.fill(T::zero());
    }
}

pub(super) fn forward<T: Real>(qkv: &[T], d: &Dims) -> Vec<T> {
    let (t, c) = (d.t, d.c);
    // Every element is written by one P v product below; not zero-filled first.
    let mut y: Vec<T> = Vec::with_capacity(d.b * t * c);
    let yp = Ptr(y.as_mut_ptr());
    (0..d.b * d.h).into_par_iter().with_min_len(per_task(d, d.h)).for_each_init(
        || vec![T::zero(); t * t],
        |p, bh| {
            let (b, h) = (bh / d.h, bh % d.h);
            let (oq, ok, ov) = d.offsets(h);
            let row = unsafe { qkv.as_ptr().add(b * t * d.w) };
            for tile @ (r0, m, nk) in tiles(t) {
                unsafe {
                    probs(d, row.add(oq), row.add(ok), p, tile);
                    // y[b, r0.., h·hd..] (m×hd, row stride C) = P v.
                    mm(
                        m,
                        d.hd,
                        nk,
                        yp.at((b * t + r0) * c + h * d.hd),
                        c,
                        p.as_ptr().add(r0 * t),
                        (t as isize, 1),
                        row.add(ov),
                        (d.w as isize, 1),
                        T::one(),
                    );
                }
            }
        },
    );
    // SAFETY: the tiles cover rows 0..t of every (batch, head): all B·T·C elements written.
    unsafe { y.set_len(d.b * t * c) };
    y
}

/// The gradient of the packed qkv. Tasks are (batch, key/value head) pairs: each handles the
/// query heads of its group one after another, in order, so the key and value gradients
/// they share are summed in a fixed order (the group's first head writes them, the next
/// ones add theirs): the same bits on any thread count.
pub(super) fn backward<T: Real>(qkv: &[T], y: &[T], dy: &[T], d: &Dims) -> Vec<T> {
    let (t, c, w) = (d.t, d.c, d.w);
    let (wi, ti) = (w as isize, t as isize);
    let group = d.h / d.kv;
    // Every element is written by one of the dq, dk, dv products below; not zero-filled first.
    let mut dqkv: Vec<T> = Vec::with_capacity(qkv.len());
    let dp_out = Ptr(dqkv.as_mut_ptr());
    (0..d.b * d.kv).into_par_iter().with_min_len(per_task(d, d.kv)).for_each_init(
        || {
            let scratch = if group > 1 { TILE * d.hd } else { 0 };
            (vec![T::zero(); t * t], vec![T::zero(); t * t], vec![T::zero(); 2 * scratch])
        },
        |(p, ds, tmp), bj| {
            let (b, j) = (bj / d.kv, bj % d.kv);
            let row = unsafe { qkv.as_ptr().add(b * t * w) };
            let out = unsafe { dp_out.at(b * t * w) };
            for h in j * group..(j + 1) * group {
                let (oq, ok, ov) = d.offsets(h);
                let first = h == j * group;
                let (yb, dyb) = (&y[b * t * c + h * d.hd..], &dy[b * t * c + h * d.hd..]);
                let scale = d.scale::<T>();
                for tile @ (r0, m, nk) in tiles(t) {
                    unsafe {
                        probs(d, row.add(oq), row.add(ok), p, tile);
                        // dP = dy vᵀ (m×nk).
                        mm(
                            m,
                            nk,
                            d.hd,
                            ds.as_mut_ptr().add(r0 * t),
                            t,
                            dyb.as_ptr().add(r0 * c),
                            (c as isize, 1),
                            row.add(ov),
                            (1, wi),
                            T::one(),
                        );
                    }
                    // dS = P ∘ (dP − D) / √hd with D = rowsum(P ∘ dP) = dy · y.
                    score_grads(p, ds, dyb, yb, (t, c, d.hd), r0, m, nk, scale);
                    // dq = dS k (m×hd at row stride W).
                    unsafe {
                        mm(
                            m,
                            d.hd,
                            nk,
                            out.add(r0 * w + oq),
                            w,
                            ds.as_ptr().add(r0 * t),
                            (ti, 1),
                            row.add(ok),
                            (wi, 1),
                            T::one(),
                        )
                    };
                }
                // dk = dSᵀ q and dv = Pᵀ dy per key tile: keys k0.. are seen by queries k0..
                // only. The group's first head writes them; the others add theirs.
                for (k0, m, _) in tiles(t) {
                    let rows = t - k0;
                    let (dsk, pk) =
                        unsafe { (ds.as_ptr().add(k0 * t + k0), p.as_ptr().add(k0 * t + k0)) };
                    let (dk_at, dk_rs, dv_at, dv_rs) = if first {
                        unsafe { (out.add(k0 * w + ok), w, out.add(k0 * w + ov), w) }
                    } else {
                        let (a, b) = tmp.split_at_mut(TILE * d.hd);
                        (a.as_mut_ptr(), d.hd, b.as_mut_ptr(), d.hd)
                    };
                    unsafe {
                        mm(
                            m,
                            d.hd,
                            rows,
                            dk_at,
                            dk_rs,
                            dsk,
                            (1, ti),
                            row.add(k0 * w + oq),
                            (wi, 1),
                            T::one(),
                        );
                        mm(
                            m,
                            d.hd,
                            rows,
                            dv_at,
                            dv_rs,
                            pk,
                            (1, ti),
                            dyb.as_ptr().add(k0 * c),
                            (c as isize, 1),
                            T::one(),
                        );
                    }
                    if !first {
                        let (a, b) = tmp.split_at(TILE * d.hd);
                        for i in 0..m {
                            for (dst, src) in [(ok, a), (ov, b)] {
                                let o = unsafe {
                                    std::slice::from_raw_parts_mut(
                                        out.add((k0 + i) * w + dst),
                                        d.hd,
                                    )
                                };
                                for (x, &v) in o.iter_mut().zip(&src[i * d.hd..(i + 1) * d.hd]) {
                                    *x = *x + v;
                                }
                            }
                        }
                    }
                }
            }
        },
    );
    // SAFETY: query tiles (dq) and key tiles (dk, dv) cover rows 0..t of every (batch, head).
    unsafe { dqkv.set_len(qkv.len()) };
    dqkv
}

/// (batch, head) pairs per parallel task: a few tasks per thread, so the T×T scratch
/// buffers are made a few times per call rather than once per pair.
fn per_task(d: &Dims, heads: usize) -> usize {
    (d.b * heads / (4 * rayon::current_num_threads())).max(1)
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "hone-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let d = Dims::grouped(l.shape(), self.n_head, self.n_kv)?;
        let out = float_op!(s, l, "attention", |x| storage(forward(x, &d)));
        Ok((out, Shape::from((d.b, d.t, d.c))))
    }

    fn bwd(&self, qkv: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let d = Dims::grouped(qkv.shape(), self.n_head, self.n_kv)?;
        with_float_data!("attention", qkv.dtype(), [qkv, y, dy] => |[q, o, g]| grad(backward(q, o, g, &d), qkv))
    }
}

/// Causal self-attention of packed `qkv` (B, T, 3C) with `n_head` heads: (B, T, C).
pub fn causal_self_attention(qkv: &Tensor, n_head: usize) -> Result<Tensor> {
    grouped_self_attention(qkv, n_head, n_head)
}

/// Causal self-attention of packed `qkv` (B, T, (H + 2·KV)·hd) with `n_head` query heads
/// sharing `n_kv` key/value heads in groups: (B, T, H·hd).
pub fn grouped_self_attention(qkv: &Tensor, n_head: usize, n_kv: usize) -> Result<Tensor> {
    qkv.contiguous()?.apply_op1(CausalAttention { n_head, n_kv })
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
        let y =
            plain::causal_attention(&heads(0), &heads(1), &heads(2), &mut Dropout::off()).unwrap();
        y.transpose(1, 2).unwrap().reshape((b, t, c)).unwrap()
    }

    #[test]
    fn fused_attention_equals_the_unfused_one_and_its_gradient_is_right() {
        // The last size spans three query tiles, the last one partial.
        for (b, t, c, h) in [(2, 5, 6, 2), (1, 7, 12, 3), (1, 2 * TILE + 5, 4, 2)] {
            let qkv = randn(&[b, t, 3 * c], 1.0, 1 + t as u64);
            let diff = (causal_self_attention(qkv.as_tensor(), h).unwrap()
                - reference(qkv.as_tensor(), h))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "{diff}");
            check(&[qkv], |v| causal_self_attention(v[0].as_tensor(), h));
        }
    }

    #[test]
    fn f32_matches_too_and_shapes_are_checked() {
        let qkv =
            randn(&[3, 16, 3 * 32], 1.0, 3).as_tensor().to_dtype(candle_core::DType::F32).unwrap();
        let diff = (causal_self_attention(&qkv, 4).unwrap() - reference(&qkv, 4))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        assert!(causal_self_attention(&qkv.narrow(2, 0, 95).unwrap(), 4).is_err());
    }

    /// Grouped-query attention equals multi-head attention on keys and values repeated for
    /// each query head of their group (transformers' `repeat_kv`), with right gradients.
    #[test]
    fn grouped_heads_equal_repeated_keys_and_values() {
        for (b, t, h, kv, hd) in [(2, 5, 4, 2, 3), (1, TILE + 3, 6, 1, 2), (1, 4, 4, 4, 2)] {
            let qkv = randn(&[b, t, (h + 2 * kv) * hd], 1.0, 7 + t as u64);
            let x = qkv.as_tensor();
            let g = h / kv;
            let part = |from: usize, heads: usize| x.narrow(2, from * hd, heads * hd).unwrap();
            let repeat = |from: usize| {
                let heads: Vec<Tensor> =
                    (0..h).map(|i| x.narrow(2, (from + i / g) * hd, hd).unwrap()).collect();
                Tensor::cat(&heads, 2).unwrap()
            };
            let full = Tensor::cat(&[part(0, h), repeat(h), repeat(h + kv)], 2).unwrap();
            let want = causal_self_attention(&full, h).unwrap();
            let got = grouped_self_attention(x, h, kv).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f64>().unwrap() < 1e-12, "{diff}");
            check(&[qkv], |v| grouped_self_attention(v[0].as_tensor(), h, kv));
        }
        let qkv = randn(&[1, 3, 5 * 2], 1.0, 1);
        assert!(grouped_self_attention(qkv.as_tensor(), 3, 2).is_err(), "2 does not divide 3");
    }
}
