#!/usr/bin/env bash
# The WASM filter benchmark (docs/benchmarks.md, "WASM filters"): documents/s and MB/s of the
# same filter logic native and as a sandboxed plugin at batch sizes 1, 64 and 1024 with the
# default limits (fuel) on, then first load (compile) vs cached load of each shipped plugin.
# Takes a few seconds. Usage: bench/wasm-filters.sh [DOCS] [ROUNDS]   (default 4096 15)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --example plugin_bench
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rustc: $(rustc -V)"
exec target/release/examples/plugin_bench "$@"
