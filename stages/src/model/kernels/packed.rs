//! Generation's matrix products: `x Wᵀ + b` for a few rows at a time (the decoder's batched
//! matrix–vector products, one row per sequence fed in a step) on weights packed in panels
//! ([`Packed`]). Not a candle op: the decoder ([`crate::model::decoder`]) calls it directly.
//!
//! **The kernel.** `W` is stored as panels of [`NR`] output features, input by input (the
//! [`NR`] weights of one input side by side), so a register block of [`MR`] rows × [`NR`]
//! features keeps its `MR · NR` running sums in vector registers for the whole pass over the
//! panel: per input, one load of the panel's [`NR`] weights, one broadcast of each row's
//! input, and `MR · NR` fused multiply-adds. No sum is split across lanes, so there is no
//! horizontal reduction either.
//!
//! **Same bits whatever the blocking.** Each output is its bias followed by one fused
//! multiply-add per input, in input order: `s = b_f; s = fma(x_i, w_fi, s)` for `i = 0..inp`
//! ([`reference`]). Vector lanes hold different features and the register block different
//! rows, never parts of one sum, so an output's bits do not depend on how many rows share the
//! pass, where a row sits in the block, which panel holds its feature, the vector width or the
//! thread count. `mul_add` is correctly rounded wherever it runs (an FMA instruction on CPUs
//! that have one, libm's `fmaf` otherwise), so the bits do not depend on the machine either.

use multiversion::multiversion;
use rayon::prelude::*;

use super::gelu::NormalCdf;

/// Output features per panel: two AVX2 vectors, one AVX-512 vector.
pub const NR: usize = 16;
/// Rows per register block: `MR · NR` running sums in 8 AVX2 vectors (8 independent FMA
/// chains, enough to cover the instruction's latency) or 4 AVX-512 ones (with the broadcast
/// folded into each FMA; 8 rows of AVX-512 sums ran slower, out of general registers).
pub const MR: usize = 4;
/// Multiply-adds below which a product stays on the calling thread (about 8 µs of work: one
/// sequence's products, even the largest of the default model, do not wake the pool).
const PAR_WORK: usize = 1 << 18;

/// A linear layer's weights `W` (out, in) and bias, packed in panels (see the module doc).
#[derive(Clone, Debug)]
pub struct Packed {
    /// Panel `p`, input `i`, lane `j` at `(p · inp + i) · NR + j` holds `W[p · NR + j][i]`;
    /// features past `out` are zeros.
    w: Vec<f32>,
    /// The bias, zeros when there is none, padded to whole panels.
    b: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Packed {
    /// From `W` (out, inp) row-major, as `nn.Linear` keeps it, and an optional bias (out).
    pub fn new(w: &[f32], b: Option<&[f32]>, inp: usize, out: usize) -> Packed {
        assert_eq!(w.len(), inp * out, "weights of {out} × {inp}");
        let panels = out.div_ceil(NR);
        let mut packed = vec![0f32; panels * inp * NR];
        for (f, row) in w.chunks_exact(inp.max(1)).enumerate().take(out) {
            let panel = &mut packed[f / NR * inp * NR..][..inp * NR];
            for (i, &v) in row.iter().enumerate() {
                panel[i * NR + f % NR] = v;
            }
        }
        let mut bias = vec![0f32; panels * NR];
        if let Some(b) = b {
            bias[..out].copy_from_slice(&b[..out]);
        }
        Packed { w: packed, b: bias, inp, out }
    }

    pub fn inp(&self) -> usize {
        self.inp
    }

    pub fn out(&self) -> usize {
        self.out
    }

    /// Row `f` of `W` (the `inp` weights of output feature `f`): an embedding lookup when `W`
    /// is a tied embedding.
    pub fn row(&self, f: usize) -> impl Iterator<Item = f32> + '_ {
        let panel = &self.w[f / NR * self.inp * NR..][..self.inp * NR];
        panel.iter().skip(f % NR).step_by(NR).copied()
    }

    /// `x Wᵀ + b` for the rows of `x` (each `inp` wide), row-major (rows, out).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; x.len() / self.inp.max(1) * self.out];
        self.forward_into(x, &mut y, Then::Store);
        y
    }

    /// `x Wᵀ + b` for the rows of `x` into `y` (rows, out), stored, added to what `y` holds,
    /// or through GELU ([`Then`]): the same bits as the product followed by that step. Panels
    /// are split over the current rayon pool when the product is large.
    pub fn forward_into(&self, x: &[f32], y: &mut [f32], then: Then) {
        let rows = x.len() / self.inp.max(1);
        assert_eq!(y.len(), rows * self.out, "{rows} rows of {} outputs", self.out);
        let panels = self.out.div_ceil(NR);
        let dest = Dest {
            ptr: y.as_mut_ptr(),
            len: y.len(),
            ld: self.out,
            then,
            _y: std::marker::PhantomData,
        };
        let task = |p: usize| {
            let (w, b) = (&self.w[p * self.inp * NR..][..self.inp * NR], &self.b[p * NR..][..NR]);
            panel(x, rows, self.inp, w, b, &dest.panel(p * NR, NR.min(self.out - p * NR)));
        };
        if rows * self.inp * self.out >= PAR_WORK && rayon::current_num_threads() > 1 {
            (0..panels).into_par_iter().for_each(task);
        } else {
            (0..panels).for_each(task);
        }
    }
}

/// What becomes of a product's outputs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Then {
    /// `y = x Wᵀ + b`.
    Store,
    /// `y += x Wᵀ + b` (a residual connection).
    Add,
    /// `y = gelu(x Wᵀ + b)`, exact (erf) GELU as [`super::gelu`] computes it in f32.
    Gelu,
}

/// The output matrix of [`Packed::forward_into`], written by its panels in parallel: each
/// panel writes only its own columns (`col..col + width`) of every row, so no two tasks touch
/// the same element.
struct Dest<'y> {
    ptr: *mut f32,
    len: usize,
    ld: usize,
    then: Then,
    _y: std::marker::PhantomData<&'y mut [f32]>,
}

// SAFETY: the tasks sharing a `Dest` write disjoint columns (see `Dest::put`), and the borrow
// of `y` it stands for outlives them.
unsafe impl Send for Dest<'_> {}
unsafe impl Sync for Dest<'_> {}

/// One panel's columns of a [`Dest`].
struct PanelDest<'d, 'y> {
    dest: &'d Dest<'y>,
    col: usize,
    width: usize,
}

impl<'y> Dest<'y> {
    fn panel(&self, col: usize, width: usize) -> PanelDest<'_, 'y> {
        PanelDest { dest: self, col, width }
    }
}

impl PanelDest<'_, '_> {
    /// Writes row `r`'s outputs of this panel (the first `width` of `acc`).
    #[inline(always)]
    fn put(&self, r: usize, acc: [f32; NR]) {
        let d = self.dest;
        let at = r * d.ld + self.col;
        assert!(self.width <= NR && self.col + self.width <= d.ld && at + self.width <= d.len);
        // SAFETY: in bounds (checked above); only this panel writes columns `col..col +
        // width`, and `forward_into` holds `y` mutably borrowed while the panels run.
        let out = unsafe { std::slice::from_raw_parts_mut(d.ptr.add(at), self.width) };
        match d.then {
            Then::Store => match <&mut [f32; NR]>::try_from(&mut *out) {
                // A whole panel: a fixed-size copy, two vector stores.
                Ok(whole) => *whole = acc,
                Err(_) => out.copy_from_slice(&acc[..self.width]),
            },
            Then::Add => {
                for (o, a) in out.iter_mut().zip(acc) {
                    *o += a;
                }
            }
            Then::Gelu => {
                for (o, a) in out.iter_mut().zip(acc) {
                    *o = a * f32::cdf_pdf(a).0;
                }
            }
        }
    }
}

/// One panel for every row of `x`, [`MR`] rows per pass over the panel, the rest one by one
/// (the same chain), each row's outputs to `out`.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn panel(x: &[f32], rows: usize, inp: usize, w: &[f32], b: &[f32], out: &PanelDest) {
    let (w, b) = (&w[..inp * NR], &b[..NR]);
    let mut r = 0;
    while r + MR <= rows {
        let xs: [&[f32]; MR] = std::array::from_fn(|k| &x[(r + k) * inp..][..inp]);
        let mut acc = [[0f32; NR]; MR];
        for a in &mut acc {
            a.copy_from_slice(b);
        }
        for (i, wi) in w.chunks_exact(NR).enumerate() {
            for (a, xr) in acc.iter_mut().zip(&xs) {
                let xi = xr[i];
                for (s, &wj) in a.iter_mut().zip(wi) {
                    *s = xi.mul_add(wj, *s);
                }
            }
        }
        for (k, a) in acc.into_iter().enumerate() {
            out.put(r + k, a);
        }
        r += MR;
    }
    for r in r..rows {
        let xr = &x[r * inp..][..inp];
        let mut acc = [0f32; NR];
        acc.copy_from_slice(b);
        for (&xi, wi) in xr.iter().zip(w.chunks_exact(NR)) {
            for (s, &wj) in acc.iter_mut().zip(wi) {
                *s = xi.mul_add(wj, *s);
            }
        }
        out.put(r, acc);
    }
}

/// What [`Packed::forward`] computes, one output at a time: the definition its bits are
/// tested against.
pub fn reference(x: &[f32], w: &[f32], b: Option<&[f32]>, inp: usize, out: usize) -> Vec<f32> {
    let rows = x.len() / inp.max(1);
    let mut y = Vec::with_capacity(rows * out);
    for xr in x.chunks_exact(inp.max(1)).take(rows) {
        for (f, wf) in w.chunks_exact(inp.max(1)).enumerate().take(out) {
            let bias = b.map_or(0.0, |b| b[f]);
            y.push(xr.iter().zip(wf).fold(bias, |s, (&xi, &wi)| xi.mul_add(wi, s)));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(seed: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001)
            .map(|v| v as f32 / 97.0 - 10.3)
            .collect()
    }

    /// Every size of block and remainder (rows 1..=9 around MR, features around NR, inputs
    /// not a multiple of 8), on one and several threads: the reference's bits.
    #[test]
    fn the_kernel_gives_the_references_bits_for_every_shape_and_thread_count() {
        for (inp, out) in [(1, 1), (7, 5), (20, 17), (33, 48), (128, 40)] {
            let w = values(1, inp * out);
            let b = values(2, out);
            for bias in [true, false] {
                let bias = bias.then_some(b.as_slice());
                let p = Packed::new(&w, bias, inp, out);
                for rows in 1..=9 {
                    let x = values(rows as u32 + 3, rows * inp);
                    let want = reference(&x, &w, bias, inp, out);
                    let got = p.forward(&x);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{rows} × {inp} → {out}"
                    );
                }
                // Large enough for the parallel path.
                let rows = PAR_WORK.div_ceil(inp * out) + 5;
                let x = values(99, rows * inp);
                let one = rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .build()
                    .unwrap()
                    .install(|| p.forward(&x));
                let three = rayon::ThreadPoolBuilder::new()
                    .num_threads(3)
                    .build()
                    .unwrap()
                    .install(|| p.forward(&x));
                assert_eq!(one, three);
                assert_eq!(one, reference(&x, &w, bias, inp, out));
            }
        }
    }

    /// The comparison above can fail: the same sums without fusing (or in 8 lanes, as
    /// `simd::dot` adds) differ from the reference in some bits on these inputs.
    #[test]
    fn another_summation_order_gives_other_bits() {
        let (inp, out, rows) = (128, 40, 9);
        let (w, x) = (values(1, inp * out), values(5, rows * inp));
        let want = reference(&x, &w, None, inp, out);
        let unfused: Vec<f32> = x
            .chunks_exact(inp)
            .flat_map(|xr| {
                w.chunks_exact(inp)
                    .map(move |wf| xr.iter().zip(wf).fold(0f32, |s, (a, b)| s + a * b))
            })
            .collect();
        let lanes: Vec<f32> = x
            .chunks_exact(inp)
            .flat_map(|xr| w.chunks_exact(inp).map(move |wf| super::super::simd::dot(xr, wf)))
            .collect();
        assert_ne!(unfused, want);
        assert_ne!(lanes, want);
    }

    /// Adding into `y` or applying GELU in the kernel gives the bits of the product followed
    /// by that step, on one and several threads.
    #[test]
    fn the_epilogues_equal_the_steps_after_the_product() {
        let (inp, out, rows) = (64, 37, 120); // more than PAR_WORK: the parallel path
        let (w, b, x) = (values(1, inp * out), values(2, out), values(3, rows * inp));
        let p = Packed::new(&w, Some(&b), inp, out);
        let product = p.forward(&x);
        let before = values(4, rows * out);
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let mut added = before.clone();
            pool.install(|| p.forward_into(&x, &mut added, Then::Add));
            assert_eq!(
                added,
                before.iter().zip(&product).map(|(a, b)| a + b).collect::<Vec<_>>(),
                "{threads} threads"
            );
            let mut g = vec![f32::NAN; rows * out];
            pool.install(|| p.forward_into(&x, &mut g, Then::Gelu));
            assert_eq!(
                g,
                product.iter().map(|&v| v * f32::cdf_pdf(v).0).collect::<Vec<_>>(),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn rows_of_the_packed_weights_are_the_original_rows() {
        let (inp, out) = (9, 37);
        let w = values(4, inp * out);
        let p = Packed::new(&w, None, inp, out);
        for f in 0..out {
            assert_eq!(p.row(f).collect::<Vec<_>>(), w[f * inp..][..inp], "row {f}");
        }
    }
}
