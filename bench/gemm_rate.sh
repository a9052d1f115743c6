#!/usr/bin/env bash
# Matrix-product rate on one thread, hone's `gemm` crate vs PyTorch's `a @ b`, on the shapes
# of nanoGPT's CPU configuration (see docs/benchmarks.md, "Training speed").
#
#   bench/gemm_rate.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-/tmp/torch/bin/python}
(cd "$ROOT" && cargo build --quiet --release --workspace --example gemm_rate)
echo "== hone (gemm crate), 1 thread"
"$ROOT/target/release/examples/gemm_rate"
echo "== PyTorch, 1 thread"
"$PY" - <<'PY'
import time, torch
torch.set_num_threads(1)
for m, k, n in [(3072, 128, 384), (3072, 128, 512), (3072, 512, 128), (128, 3072, 512), (256, 32, 256)]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3): a @ b
    t = time.perf_counter(); reps = 50
    for _ in range(reps): a @ b
    s = (time.perf_counter() - t) / reps
    print(f"{m}x{k} * {k}x{n}: {2 * m * k * n / s / 1e9:.1f} GFLOP/s")
PY
