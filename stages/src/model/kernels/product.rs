//! Every matrix product of training and scoring: `dst = β · lhs · rhs`, with each output's
//! bits fixed by the rules below, on any x86-64 CPU with AVX2 and FMA (or AVX-512), whatever
//! its cache sizes, and on any thread count.
//!
//! **The rules.** For an output `o = Σ_{i<k} a_i b_i`:
//! 1. The inner dimension is cut into `q = ⌈k / KC⌉` chunks of `⌈k / q⌉` inputs (the last
//!    one shorter), [`KC`] = 512.
//! 2. Within a chunk the sum starts at +0 and takes one fused multiply-add per input, in input
//!    order: `s = fma(a_i, b_i, s)`.
//! 3. The chunks' sums are added in chunk order, one rounding each: `((s_0 + s_1) + s_2) …`.
//! 4. The scale multiplies the total once, last (β = 1 multiplies nothing).
//!
//! [`reference`] is these rules written as loops; the tests hold the fast path to it bit for bit.
//!
//! **Why the chunks.** The fast path is the `gemm` crate's microkernel (the one candle uses;
//! its AVX-512 kernels are on, the `x86-v4` feature: 1.34x faster training steps of
//! SmolLM2-135M's shape than its AVX2 ones, and the same bits, as vector lanes hold different
//! outputs: `tests/cli/portable.rs` compares with an emulated AVX2-only CPU).
//! It follows rules 2–4 within the blocks of `kc` inputs it cuts `k` into, but it derives `kc`
//! from the L1 data cache's size and associativity, read from `/sys` at run time: 1,024 on a
//! CPU reporting 48 KiB 12-way, 512 on one reporting 32 KiB 8-way, so the same product of
//! 2,048 inputs summed in 2 or 4 blocks, and the same pipeline gave other model bytes on
//! another machine. `gemm` never picks a block under 512 inputs nor over `k`, so a product
//! handed chunks of at most 512 inputs is one block whatever the machine, and adding the
//! chunks into the output (`gemm`'s `dst = 1 · dst + 1 · chunk`, exact in its FMA or
//! unfused form) is rule 3. Blocking of the output (`mc`, `nc`, threads) still follows the
//! caches: it decides where a value is computed, never in what order.
//!
//! **Shapes that go elsewhere.** For a vector (`m` or `n` ≤ 1), a tiny inner dimension
//! (`k` ≤ 2) or at most 256 outputs with both operands contiguous along `k`, `gemm` takes
//! matrix–vector or dot-product kernels that sum in vector lanes (their order follows the
//! vector width). Those shapes are small (a reward or value head, a test model's heads) and
//! run [`reference`] itself, compiled with AVX2 + FMA where the CPU has them: `mul_add` is
//! correctly rounded either way (an FMA instruction or libm's `fma`), so the bits agree.
//!
//! Not covered: a CPU without FMA (`gemm` then multiplies and adds separately), and aarch64,
//! whose `gemm` kernels are other code: the same rules are not verified there (README).

use gemm::{Parallelism, gemm};
use multiversion::multiversion;

use super::Real;

/// The most inputs a chunk of one output's sum holds (rule 1): `gemm`'s smallest block.
pub const KC: usize = 512;

/// Outputs at most this many with both operands contiguous along `k` make `gemm` take its
/// dot-product kernel (`m · n ≤ 16 · 16`).
const GEMM_DOT_OUTPUTS: usize = 256;

/// One operand: its first element and (row stride, column stride) in elements.
#[derive(Clone, Copy)]
pub struct Operand<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Operand<T> {
    pub fn new(ptr: *const T, (rs, cs): (isize, isize)) -> Operand<T> {
        Operand { ptr, rs, cs }
    }
}

/// The chunks of rule 1: (first input, inputs) for each.
fn chunks(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let q = k.div_ceil(KC).max(1);
    let size = k.div_ceil(q).max(1);
    (0..k).step_by(size).map(move |k0| (k0, size.min(k - k0)))
}

/// Whether `gemm` would take a lane-summing kernel for this shape (see the module doc).
fn lanes_path<T>(m: usize, n: usize, k: usize, lhs: &Operand<T>, rhs: &Operand<T>) -> bool {
    k <= 2 || m <= 1 || n <= 1 || (m * n <= GEMM_DOT_OUTPUTS && lhs.cs == 1 && rhs.rs == 1)
}

/// `dst (m×n, row stride dst_rs, column stride 1) = beta · lhs (m×k) · rhs (k×n)`, every
/// element written (never read), by the rules of the module doc. `par` splits the output
/// over the current rayon pool (never a sum).
///
/// # Safety
/// `lhs` and `rhs` must address m×k and k×n readable elements at their strides, and `dst`
/// m×n writable ones at `dst_rs`, not overlapping the operands.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    lhs: Operand<T>,
    rhs: Operand<T>,
    beta: T,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if lanes_path(m, n, k, &lhs, &rhs) {
        // SAFETY: as the caller promised.
        unsafe { reference(m, n, k, dst, dst_rs, lhs, rhs, beta) };
        return;
    }
    let whole = k.div_ceil(KC) == 1;
    for (c, (k0, kc)) in chunks(k).enumerate() {
        // SAFETY: chunk `c` reads inputs k0..k0+kc of both operands, within what the caller
        // promised; the first chunk writes every element of `dst`, the later ones add to it.
        unsafe {
            gemm(
                m,
                n,
                kc,
                dst,
                1,
                dst_rs as isize,
                c > 0,
                lhs.ptr.offset(k0 as isize * lhs.cs),
                lhs.cs,
                lhs.rs,
                rhs.ptr.offset(k0 as isize * rhs.rs),
                rhs.cs,
                rhs.rs,
                if c > 0 { T::one() } else { T::zero() },
                if whole { beta } else { T::one() },
                false,
                false,
                false,
                par,
            );
        }
    }
    if !whole && beta != T::one() {
        for i in 0..m {
            // SAFETY: row i of dst, as the caller promised.
            let row = unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n) };
            for v in row {
                *v = beta * *v;
            }
        }
    }
}

/// The rules of the module doc as plain loops: the definition [`product`] is held to.
///
/// # Safety
/// As [`product`].
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx2+fma"))]
pub unsafe fn reference<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    lhs: Operand<T>,
    rhs: Operand<T>,
    beta: T,
) {
    for i in 0..m {
        for j in 0..n {
            let mut total = T::zero();
            for (c, (k0, kc)) in chunks(k).enumerate() {
                let mut s = T::zero();
                for p in k0..k0 + kc {
                    // SAFETY: element (i, p) of lhs and (p, j) of rhs, as the caller promised.
                    let (a, b) = unsafe {
                        (
                            *lhs.ptr.offset(i as isize * lhs.rs + p as isize * lhs.cs),
                            *rhs.ptr.offset(p as isize * rhs.rs + j as isize * rhs.cs),
                        )
                    };
                    s = a.mul_add(b, s);
                }
                total = if c == 0 { s } else { total + s };
            }
            let out = if beta == T::one() { total } else { beta * total };
            // SAFETY: element (i, j) of dst, as the caller promised.
            unsafe { *dst.add(i * dst_rs + j) = out };
        }
    }
}

/// The pool split for a product of `m · n · k` multiply-adds: the current pool when large.
fn parallelism(work: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && work >= 1 << 18 { Parallelism::Rayon(threads) } else { Parallelism::None }
}

/// Checks that `v` holds a `rows × cols` operand at strides `(rs, cs)` (non-negative), so
/// that the safe wrappers below never read out of bounds.
fn check_reach<T>(v: &[T], rows: usize, cols: usize, (rs, cs): (isize, isize)) {
    assert!(rs >= 0 && cs >= 0, "negative strides");
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs as usize + (cols - 1) * cs as usize;
        assert!(
            last < v.len(),
            "a {rows}×{cols} operand at {rs}, {cs} needs {} elements, has {}",
            last + 1,
            v.len()
        );
    }
}

/// `lhs (m×k) · rhs (k×n)`, strides (row, column) in elements, into the row-major m×n
/// `dst`, on the current pool when it is large.
#[allow(clippy::too_many_arguments)]
pub fn product_into<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    lhs: &[T],
    l: (isize, isize),
    rhs: &[T],
    r: (isize, isize),
) {
    assert_eq!(dst.len(), m * n, "a {m}×{n} product");
    // SAFETY: `dst` holds the m×n elements.
    unsafe { checked_product(m, n, k, dst.as_mut_ptr(), lhs, l, rhs, r) }
}

/// [`product_into`] as a new vector, not zero-filled first (the product writes every
/// element without reading it).
pub fn product_vec<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    lhs: &[T],
    l: (isize, isize),
    rhs: &[T],
    r: (isize, isize),
) -> Vec<T> {
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds m×n elements, all written by the product before `set_len`.
    unsafe {
        checked_product(m, n, k, dst.as_mut_ptr(), lhs, l, rhs, r);
        dst.set_len(m * n);
    }
    dst
}

/// [`product`] into row-major `dst` after checking that the operand slices hold their
/// elements.
///
/// # Safety
/// `dst` must address m×n writable elements.
#[allow(clippy::too_many_arguments)]
unsafe fn checked_product<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    lhs: &[T],
    l: (isize, isize),
    rhs: &[T],
    r: (isize, isize),
) {
    check_reach(lhs, m, k, l);
    check_reach(rhs, k, n, r);
    let (lo, ro) = (Operand::new(lhs.as_ptr(), l), Operand::new(rhs.as_ptr(), r));
    // SAFETY: the operands hold their elements (checked), `dst` as the caller promised.
    unsafe { product(m, n, k, dst, n, lo, ro, T::one(), parallelism(m * n * k)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values with exact zeros of both signs and mixed magnitudes, so rounding order shows.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match i % 17 {
                    0 => 0.0,
                    5 => -0.0,
                    _ => ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * (1 + (s % 5)) as f32,
                }
            })
            .collect()
    }

    /// `product` against `reference` for one shape and layout pair: the same bits.
    fn agree(m: usize, n: usize, k: usize, lhs_t: bool, rhs_t: bool, beta: f32, threads: usize) {
        let (a, b) = (values(m * k, (m * 31 + k) as u64), values(k * n, (n * 17 + k) as u64));
        // Row-major m×k, or stored transposed (k×m) and read with swapped strides.
        let l = if lhs_t { (1, m as isize) } else { (k as isize, 1) };
        let r = if rhs_t { (1, k as isize) } else { (n as isize, 1) };
        let (mut fast, mut slow) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
        let par = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| unsafe {
            let (lo, ro) = (Operand::new(a.as_ptr(), l), Operand::new(b.as_ptr(), r));
            product(m, n, k, fast.as_mut_ptr(), n, lo, ro, beta, par);
            reference(m, n, k, slow.as_mut_ptr(), n, lo, ro, beta);
        });
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&fast) == bits(&slow),
            "m {m} n {n} k {k} lhs_t {lhs_t} rhs_t {rhs_t} beta {beta} threads {threads}: the \
             product differs from the rules in {} of {} outputs",
            fast.iter().zip(&slow).filter(|(x, y)| x.to_bits() != y.to_bits()).count(),
            m * n
        );
    }

    /// Inner dimensions above 512 are where `gemm`'s own blocking follows the L1 cache (on
    /// this project's machines it sums 2,048 inputs in 2 blocks of 1,024, against this rule's
    /// 4 of 512): the test fails for them when the chunks are left to `gemm`.
    #[test]
    fn the_fast_path_gives_the_bits_of_the_rules() {
        for &(m, n, k) in &[
            (64, 96, 2048),
            (96, 64, 768),
            (70, 33, 1300),
            (40, 40, 513),
            (128, 96, 512),
            (65, 130, 100),
            (3, 200, 700),
        ] {
            for (lt, rt) in [(false, false), (false, true), (true, false), (true, true)] {
                agree(m, n, k, lt, rt, 1.0, 1);
            }
            agree(m, n, k, false, true, 0.125, 1);
            agree(m, n, k, true, false, 0.3, 2);
        }
    }

    #[test]
    fn vectors_tiny_sums_and_few_outputs_follow_the_rules_too() {
        for &(m, n, k) in
            &[(1, 50, 700), (50, 1, 700), (1, 1, 9), (30, 20, 1), (30, 20, 2), (8, 8, 300)]
        {
            for (lt, rt) in [(false, false), (false, true), (true, false)] {
                agree(m, n, k, lt, rt, 1.0, 1);
                agree(m, n, k, lt, rt, 0.7, 2);
            }
        }
    }

    #[test]
    fn the_chunks_cover_the_sum_once_in_at_most_512_inputs() {
        for k in [1usize, 2, 511, 512, 513, 1024, 1025, 2048, 5000] {
            let c: Vec<_> = chunks(k).collect();
            assert_eq!(c.len(), k.div_ceil(KC), "k {k}");
            assert_eq!(c.iter().map(|x| x.1).sum::<usize>(), k);
            assert!(c.iter().all(|&(_, n)| (1..=KC).contains(&n)));
            assert!(c.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
            // No chunk is so short that `gemm` would take its tiny-k kernel for it.
            assert!(k <= KC || c.iter().all(|&(_, n)| n > 2), "k {k}: {c:?}");
        }
    }
}
