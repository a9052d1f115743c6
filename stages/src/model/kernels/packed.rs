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

/// Output features per panel: two AVX2 vectors.
pub const NR: usize = 16;
/// Rows per register block: `MR · NR / 8` = 8 running sums of 8 lanes, enough independent
/// FMA chains to cover the instruction's latency.
pub const MR: usize = 4;
/// Multiply-adds below which a product stays on the calling thread.
const PAR_WORK: usize = 1 << 16;

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

    /// `x Wᵀ + b` for the rows of `x` (each `inp` wide), row-major (rows, out). Panels are
    /// split over the current rayon pool when the product is large.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let rows = x.len() / self.inp.max(1);
        let panels = self.out.div_ceil(NR);
        // Panel-major first (each panel's rows × NR block contiguous), so that each task
        // owns one block.
        let mut yp = vec![0f32; panels * rows * NR];
        let task = |(p, out): (usize, &mut [f32])| panel(x, self.inp, &self.w[p * self.inp * NR..][..self.inp * NR], &self.b[p * NR..][..NR], out);
        if rows * self.inp * self.out >= PAR_WORK && rayon::current_num_threads() > 1 {
            yp.par_chunks_mut(rows * NR).enumerate().for_each(task);
        } else {
            yp.chunks_mut(rows * NR).enumerate().for_each(task);
        }
        let mut y = vec![0f32; rows * self.out];
        for (r, yr) in y.chunks_exact_mut(self.out).enumerate() {
            for (p, yf) in yr.chunks_mut(NR).enumerate() {
                yf.copy_from_slice(&yp[(p * rows + r) * NR..][..yf.len()]);
            }
        }
        y
    }
}

/// One panel for every row of `x`: `out[r · NR + j]` = output feature `j` of the panel for
/// row `r`, [`MR`] rows per pass over the panel, the rest one by one (the same chain).
#[multiversion(targets("x86_64+avx2+fma"))]
fn panel(x: &[f32], inp: usize, w: &[f32], b: &[f32], out: &mut [f32]) {
    let (w, b) = (&w[..inp * NR], &b[..NR]);
    let mut blocks = out.chunks_exact_mut(MR * NR);
    let mut r = 0;
    for block in &mut blocks {
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
        for (o, a) in block.chunks_exact_mut(NR).zip(&acc) {
            o.copy_from_slice(a);
        }
        r += MR;
    }
    for o in blocks.into_remainder().chunks_exact_mut(NR) {
        let xr = &x[r * inp..][..inp];
        let mut acc = [0f32; NR];
        acc.copy_from_slice(b);
        for (&xi, wi) in xr.iter().zip(w.chunks_exact(NR)) {
            for (s, &wj) in acc.iter_mut().zip(wi) {
                *s = xi.mul_add(wj, *s);
            }
        }
        o.copy_from_slice(&acc);
        r += 1;
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
        (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001).map(|v| v as f32 / 97.0 - 10.3).collect()
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
                    assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "{rows} × {inp} → {out}");
                }
                // Large enough for the parallel path.
                let rows = 70;
                let x = values(99, rows * inp);
                let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| p.forward(&x));
                let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(|| p.forward(&x));
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
        let unfused: Vec<f32> = x.chunks_exact(inp).flat_map(|xr| w.chunks_exact(inp).map(move |wf| xr.iter().zip(wf).fold(0f32, |s, (a, b)| s + a * b))).collect();
        let lanes: Vec<f32> = x.chunks_exact(inp).flat_map(|xr| w.chunks_exact(inp).map(move |wf| super::super::simd::dot(xr, wf))).collect();
        assert_ne!(unfused, want);
        assert_ne!(lanes, want);
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
