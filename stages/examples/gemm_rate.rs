//! GFLOP/s of the `gemm` crate (the matrix products of candle and of hone's kernels) on one
//! thread, on the shapes of nanoGPT's CPU configuration (B·T = 3072 rows, C = 128). Used by
//! `bench/gemm_rate.sh`, which runs PyTorch's `a @ b` on the same shapes.

use std::time::Instant;

use gemm::{Parallelism, gemm};

const SHAPES: [(usize, usize, usize); 5] =
    [(3072, 128, 384), (3072, 128, 512), (3072, 512, 128), (128, 3072, 512), (256, 32, 256)];

fn main() {
    for (m, k, n) in SHAPES {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let mut run = || unsafe {
            // SAFETY: a, b, c hold m×k, k×n and m×n elements, row-major.
            gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        };
        for _ in 0..3 {
            run();
        }
        let reps = 50;
        let t = Instant::now();
        for _ in 0..reps {
            run();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!("{m}x{k} * {k}x{n}: {:.1} GFLOP/s", 2.0 * (m * k * n) as f64 / s / 1e9);
    }
}
