//! Fused CPU kernels for the model's hot operations, each a candle `CustomOp` with a
//! hand-written backward pass, one file per kernel (forward, backward, finite-difference test):
//!
//! - [`attention`]: causal self-attention from the packed qkv projection, whole;
//! - [`linear`]: `x Wᵀ` over all rows at once, both gradients as one product each;
//! - [`matmul`]: batched `a · b` (the unfused attention's products);
//! - [`self_attention`]: a block's attention with its two projections as one node;
//! - [`mlp`]: a block's whole MLP (linear, GELU, linear) as one node;
//! - [`layer_norm`]: layer norm over the last dimension (one pass per row, both ways);
//! - [`softmax`]: the causal, scaled softmax of attention scores (mask, scale, softmax in one);
//! - [`gelu`]: exact (erf) GELU with its exact derivative;
//! - [`cross_entropy`]: per-row softmax cross-entropy over the vocabulary; [`head_loss`]: the
//!   LM head and the cross-entropy a block of rows at a time (no whole logits);
//! - the Llama family's: [`rms_norm`], [`rope`] (rotary positions on the packed queries and
//!   keys) and [`swiglu`] (the gated MLP's activation); [`attention`] takes grouped key/value
//!   heads.
//!
//! Beside them, `row_norm` is the op both norms run as (their rows theirs, the rest shared),
//! [`product`] holds every training product to one summation order, and
//! [`packed`] is not a candle op: generation's linear layers (the decoder's
//! batched matrix–vector products) on weights packed in panels, with fused multiply-adds.
//!
//! **Same bits on every machine.** Everything these kernels put into an artifact is fixed by
//! the inputs, whatever the CPU's cache sizes, its vector extensions (AVX2 + FMA or AVX-512)
//! and the thread count. The rules, each written once:
//! - matrix products: [`product`] (the inner dimension in fixed chunks of 512, each summed by
//!   fused multiply-adds in input order, the chunks added in order, the scale last); the
//!   training kernels ([`linear`], [`mlp`], [`self_attention`], [`attention`]) and the
//!   unfused attention's [`matmul`] all go through it;
//! - generation's products: [`packed`] (the bias, then one fused multiply-add per input in
//!   input order, lanes holding different outputs);
//! - row reductions (sums, dot products, maxima of softmax, layer norm, cross-entropy):
//!   [`simd`] (8 fixed lanes, folded in a fixed order), and `exp` a polynomial, not libm's;
//! - no contraction: Rust never fuses `a * b + c` on its own, so the AVX2 + FMA copies of the
//!   row loops (`multiversion`) give the baseline's bits; fused multiply-adds are written as
//!   `mul_add`, correctly rounded wherever it runs;
//! - sums across rows (parameter gradients, [`col_sums`]) and across threads: fixed chunks
//!   added in chunk order (below).
//!
//! Outside these kernels, candle's elementwise `exp` and `log` (the RL kinds' log-softmax over
//! a batch's logits) call glibc's `expf`/`logf`, which pick the same FMA variant on every CPU
//! in scope. Not covered: CPUs without FMA, and aarch64 (other `gemm` kernels; unverified).
//!
//! Rows are independent, so they are split over the current rayon pool in fixed-size chunks;
//! sums across rows (parameter gradients) add fixed chunks' partial sums in chunk order.
//! Results are therefore the same bytes for any thread count. Inputs are made contiguous
//! by the callers in [`super::ops`]; a kernel given anything else refuses with an error.

// Generic float code writes `a = a + b`: `num_traits::Float` has no `AddAssign`.
#![allow(clippy::assign_op_pattern)]

pub mod attention;
pub mod cross_entropy;
pub mod gelu;
pub mod head_loss;
pub mod layer_norm;
pub mod linear;
pub mod matmul;
pub mod mlp;
pub mod packed;
pub mod product;
pub mod rms_norm;
pub mod rope;
mod row_norm;
pub mod self_attention;
pub mod simd;
pub mod softmax;
pub mod swiglu;

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor, WithDType};
use rayon::prelude::*;

/// The float types the kernels run in (f32 for training, f64 for gradient checks).
pub trait Real: num_traits::Float + WithDType + Send + Sync + std::iter::Sum {
    /// `e^self`: vectorisable in f32 ([`simd::exp_f32`]), libm's in f64.
    fn vexp(self) -> Self;
}
impl Real for f32 {
    #[inline(always)]
    fn vexp(self) -> f32 {
        simd::exp_f32(self)
    }
}
impl Real for f64 {
    #[inline(always)]
    fn vexp(self) -> f64 {
        self.exp()
    }
}

/// Elements below which a kernel runs on the calling thread: splitting costs more.
const PAR_MIN: usize = 32 * 1024;

/// The contiguous data of a CPU storage with this layout.
pub(crate) fn slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("{what}: the fused kernel needs a contiguous input"),
    }
}

/// Runs `f` on the contiguous data of `N` CPU tensors of one element type (each copied
/// first only if it is strided).
pub(crate) fn with_all<T: WithDType, R, const N: usize>(
    ts: [&Tensor; N],
    f: impl FnOnce([&[T]; N]) -> Result<R>,
) -> Result<R> {
    let owned: Vec<Tensor> = ts.iter().map(|t| t.contiguous()).collect::<Result<_>>()?;
    let guards: Vec<_> = owned.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices: [&[T]; N] = [&[]; N];
    for (out, (s, l)) in slices.iter_mut().zip(&guards) {
        *out = match &**s {
            Storage::Cpu(cs) => slice(cs, l, "kernel")?,
            _ => candle_core::bail!("the fused kernels run on the CPU only"),
        };
    }
    f(slices)
}

/// A gradient shaped as `like`, on its device.
pub(crate) fn grad<T: WithDType>(v: Vec<T>, like: &Tensor) -> Result<Option<Tensor>> {
    Tensor::from_vec(v, like.shape(), like.device()).map(Some)
}

/// The body of a kernel's backward pass: dispatches on `dtype` (f32 or f64, as the type
/// `T` inside the body) and runs the body on the contiguous data of the listed tensors:
/// `with_float_data!("name", dtype, [a, b] => |[da, db]| body)`.
macro_rules! with_float_data {
    ($name:expr, $dtype:expr, [$($t:expr),+] => |$data:pat_param| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                #[allow(dead_code)]
                type T = f32;
                $crate::model::kernels::with_all::<f32, _, _>([$($t),+], |$data| $body)
            }
            candle_core::DType::F64 => {
                #[allow(dead_code)]
                type T = f64;
                $crate::model::kernels::with_all::<f64, _, _>([$($t),+], |$data| $body)
            }
            dt => candle_core::bail!("{}: unsupported dtype {dt:?}", $name),
        }
    };
}
pub(crate) use with_float_data;

/// `out[r*n..(r+1)*n] = f(r, ...)` for every row `r`, in parallel over rows when large.
pub(crate) fn par_rows<T: Send>(
    out: &mut [T],
    n: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) {
    if n == 0 {
        return;
    }
    if out.len() < PAR_MIN {
        out.chunks_mut(n).enumerate().for_each(|(r, o)| f(r, o));
    } else {
        out.par_chunks_mut(n).enumerate().with_min_len(chunk_rows(n)).for_each(|(r, o)| f(r, o));
    }
}

/// Rows per task: about 4096 elements of work each.
fn chunk_rows(n: usize) -> usize {
    (4096 / n.max(1)).max(1)
}

/// Per-column sums over rows of `f(row) -> [T; n]`-style contributions, deterministic:
/// rows are grouped in fixed chunks (independent of the thread count), each chunk sums its
/// rows in order into a partial, and the partials are added in chunk order.
pub(crate) fn col_sums<T: Real>(
    rows: usize,
    n: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    const CHUNK: usize = 64;
    let chunks = rows.div_ceil(CHUNK);
    let partial = |c: usize| {
        let mut acc = vec![T::zero(); n];
        for r in c * CHUNK..rows.min((c + 1) * CHUNK) {
            f(r, &mut acc);
        }
        acc
    };
    let partials: Vec<Vec<T>> = if rows * n < PAR_MIN {
        (0..chunks).map(partial).collect()
    } else {
        (0..chunks).into_par_iter().map(partial).collect()
    };
    let mut out = vec![T::zero(); n];
    for p in partials {
        for (o, v) in out.iter_mut().zip(p) {
            *o = *o + v;
        }
    }
    out
}

/// Activations a fused op keeps from its forward pass for its backward (candle's graph
/// holds the op until the graph is dropped). The first backward takes them; a later one
/// over the same graph finds none and recomputes.
#[derive(Default)]
pub(crate) struct Saved(std::sync::Mutex<Option<Vec<CpuStorage>>>);

impl Saved {
    pub(crate) fn put(&self, v: Vec<CpuStorage>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
    }
    pub(crate) fn take(&self) -> Option<Vec<CpuStorage>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Dispatches on a CPU storage's float type: `float_op!(storage, |data: &[T]| body)`.
macro_rules! float_op {
    ($s:expr, $l:expr, $name:expr, |$v:ident| $body:expr) => {
        match $s {
            candle_core::CpuStorage::F32(_) => {
                let $v = $crate::model::kernels::slice::<f32>($s, $l, $name)?;
                $body
            }
            candle_core::CpuStorage::F64(_) => {
                let $v = $crate::model::kernels::slice::<f64>($s, $l, $name)?;
                $body
            }
            _ => candle_core::bail!("{}: only f32 and f64 are supported", $name),
        }
    };
}
pub(crate) use float_op;

/// A CPU storage of this element type.
pub(crate) fn storage<T: WithDType>(v: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(v)
}

/// For gradient checkpointing's memory-lean runs: one malloc arena for every thread (glibc
/// gives each thread its own, and each keeps the memory freed in it: 400 MB of an SFT step of
/// SmolLM2-135M's shape, measured; no slower). Process-wide; arenas made before stay.
pub fn lean_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| unsafe {
            // SAFETY: mallopt only changes glibc's allocator parameters and is thread-safe.
            libc::mallopt(libc::M_ARENA_MAX, 1);
        });
    }
}

/// Keeps freed memory in the process instead of returning it to the kernel after every
/// tensor (glibc `mallopt`): a training step allocates and frees hundreds of tensors of
/// 0.1–10 MB, and above glibc's default thresholds each one is a fresh `mmap` whose pages
/// fault in and are zeroed again (about 12% of a step of nanoGPT's CPU configuration).
/// Process-wide and idempotent; training stages call it before their first step.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| unsafe {
            // SAFETY: mallopt only changes glibc's allocator parameters and is thread-safe.
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        });
    }
}
