//! What lets the kernels' loops run on wide vectors without changing a single result bit:
//!
//! - The kernels' row loops carry `#[multiversion(targets("x86_64+avx2+fma"))]`: a copy
//!   compiled for AVX2 + FMA runs where the CPU has them (checked at run time), so the
//!   elementwise loops use 8 lanes instead of the baseline's 4. Rust never contracts
//!   `a * b + c` into an FMA on its own, so both copies compute the same bits.
//! - [`Real::exp`] for f32 is a branch-free polynomial (Cephes' `expf`: Cody–Waite range
//!   reduction, degree-6 minimax, within 2 ulp) that the compiler vectorises; libm's `expf`
//!   is a call per element. f64 (the gradient checks) keeps libm's.
//! - [`sum`], [`dot`] and [`max`] reduce in 8 fixed lanes, then across the lanes in a fixed
//!   order: vectorised, and the same order on every machine and thread count (a plain
//!   left-to-right float sum cannot be vectorised without changing its result).

use super::Real;

/// `e^x` in f32, vectorisable: NaN stays NaN, below −87.3 gives ~1e-38 (not 0), above 88.4
/// saturates near `f32::MAX` (the callers exponentiate `x - max(x) ≤ 0`).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `k · C1` is exact.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const SHIFT: f32 = 12_582_912.0;
    let x = if x < -87.33 { -87.33 } else { x };
    let x = if x > 88.37 { 88.37 } else { x };
    let t = x * LOG2E + SHIFT;
    let k = t - SHIFT;
    let r = x - k * C1 - k * C2;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // k is in the low mantissa bits of t; 2^k by building the exponent field.
    let ki = (t.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    y * f32::from_bits((ki.wrapping_add(127) as u32) << 23)
}

const L: usize = 8;

/// Σ xᵢ in 8 lanes.
#[inline(always)]
pub fn sum<T: Real>(x: &[T]) -> T {
    let mut acc = [T::zero(); L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            acc[i] = acc[i] + c[i];
        }
    }
    fold(acc, rest.iter().copied())
}

/// Σ aᵢ bᵢ in 8 lanes.
#[inline(always)]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] = acc[i] + x[i] * y[i];
        }
    }
    fold(acc, ra.iter().zip(rb).map(|(&x, &y)| x * y))
}

/// Σ (xᵢ − m)² in 8 lanes.
#[inline(always)]
pub fn sum_sq_dev<T: Real>(x: &[T], m: T) -> T {
    let mut acc = [T::zero(); L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            let d = c[i] - m;
            acc[i] = acc[i] + d * d;
        }
    }
    fold(acc, rest.iter().map(|&v| (v - m) * (v - m)))
}

/// The largest element (−∞ for none; a NaN anywhere may or may not win, as with `f32::max`).
#[inline(always)]
pub fn max<T: Real>(x: &[T]) -> T {
    let mut acc = [T::neg_infinity(); L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = T::neg_infinity();
    for v in acc.into_iter().chain(rest.iter().copied()) {
        m = if v > m { v } else { m };
    }
    m
}

/// Adds the lanes pairwise in a fixed order, then the remainder.
#[inline(always)]
fn fold<T: Real>(acc: [T; L], rest: impl Iterator<Item = T>) -> T {
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    rest.fold(s, |s, v| s + v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm_and_keeps_nan() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.000_73;
        }
        assert!(worst < 2.5 * f32::EPSILON as f64, "relative error {worst:e}");
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_f32(-200.0) < 1e-37 && exp_f32(-200.0) >= 0.0);
        assert!(exp_f32(1000.0).is_finite());
    }

    #[test]
    fn lane_reductions_agree_with_the_plain_ones() {
        let x: Vec<f64> = (0..37).map(|i| ((i * 7919) % 101) as f64 / 13.0 - 3.0).collect();
        let y: Vec<f64> = (0..37).map(|i| ((i * 104_729) % 97) as f64 / 11.0 - 4.0).collect();
        for n in [0, 1, 7, 8, 9, 16, 37] {
            let (a, b) = (&x[..n], &y[..n]);
            assert!((sum(a) - a.iter().sum::<f64>()).abs() < 1e-12);
            assert!((dot(a, b) - a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>()).abs() < 1e-12);
            assert!(
                (sum_sq_dev(a, 0.5) - a.iter().map(|v| (v - 0.5) * (v - 0.5)).sum::<f64>()).abs()
                    < 1e-12
            );
            assert_eq!(max(a), a.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }
}
