#!/usr/bin/env bash
# Training speed, hone vs PyTorch, side by side in one run: one training step (forward,
# backward, clip, AdamW) of nanoGPT's CPU configuration (4 layers, 4 heads, 128 wide, batch
# 12, char vocabulary), at 1 and 2 threads, block 64 and 256. For each thread count it runs
# PyTorch's step timing ($BENCH/torch_gpt_char.py --scaling_only, with its matmul softmax
# attention `--attn manual` and its fused `--attn sdpa`), then hone's `pretrain` stage with
# the fused kernels (the default) and with the plain candle ops (HONE_PLAIN_OPS=1, the
# starting point), and prints ms per step (medians after two warm-up steps) and the ratios.
#
#   bench/train_speed.sh            # THREADS="1 2" BLOCKS="64 256" STEPS=12 by default
#   BEFORE=/tmp/old/hone bench/train_speed.sh   # adds another hone binary's fused step, run
#                                               # alternately with this one, and the ratio
#
# Threads: hone's `threads:` param and RAYON_NUM_THREADS (candle's matmul reads it), and
# CANDLE_NUM_THREADS=1: candle 0.11 runs large elementwise ops on its own "barrier pool"
# whose CANDLE_NUM_THREADS - 1 workers spin after every op; on 2 cores they fight the rayon
# pool (2 threads measured 3-4x slower than 1). hone's heavy elementwise work is in its own
# kernels on the rayon pool, so that pool gets no workers. PyTorch: torch.set_num_threads
# with OMP_WAIT_POLICY=PASSIVE (its spinning OpenMP threads have the same problem).
set -euo pipefail
source "$(dirname "$0")/common.sh"
THREADS=${THREADS:-"1 2"}
BLOCKS=${BLOCKS:-"64 256"}
STEPS=${STEPS:-12}
WS=$(mktemp -d /tmp/hone-train-speed.XXXXXX)
make_workspace "$WS"
echo "workspace: $WS; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" -c "import torch" 2>/dev/null || { echo "PyTorch not found at $PY (python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy)" >&2; exit 2; }

torch_ms() { # torch_ms JSON BLOCK
  python3 -c "import json; print(next(s['fwd_bwd_clip_step_ms_median'] for s in json.load(open('$1'))['scaling'] if s['block_size'] == $2))"
}
hone_ms() { # hone_ms THREADS BLOCK [ENV...]: median ms per step from the stage log
  local t=$1 T=$2; shift 2
  local set_args=(-s "stages.base.with.threads=$t" -s "stages.base.with.block_size=$T" -s "stages.base.with.steps=$STEPS" -s stages.base.with.eval_every=0 -s stages.base.with.eval_iters=1 -s stages.base.with.checkpoint_every=0)
  env RAYON_NUM_THREADS="$t" CANDLE_NUM_THREADS=1 "$@" "$HONE" run "$WS/pipeline.yaml" --force base "${set_args[@]}" > "$WS/hone_${t}_$T.log" 2>&1
  local log
  log=$(stage_field "$WS" log "${set_args[@]}" | tr -d '"')
  sed -n 's/.*ms_per_step_median=\([0-9.]*\).*/\1/p' "$log" | tail -1
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

printf "\n%-7s %-5s %12s %12s %12s %12s %10s %10s %10s\n" threads block "hone fused" "hone plain" "torch manual" "torch sdpa" "fused/man" "fused/sdpa" "plain/man"
for t in $THREADS; do
  for attn in manual sdpa; do
    OMP_WAIT_POLICY=PASSIVE "$PY" "$BENCH/torch_gpt_char.py" --threads "$t" --attn "$attn" --scaling_only --out "$WS/torch_${attn}_$t.json" > "$WS/torch_${attn}_$t.log"
  done
  for T in $BLOCKS; do
    fused=$(hone_ms "$t" "$T")
    if [ -n "${BEFORE:-}" ]; then
      before=$(HONE=$BEFORE hone_ms "$t" "$T")
      after=$(hone_ms "$t" "$T")
      echo "threads $t block $T: before $before ms, after $fused and $after ms: $(ratio "$fused" "$before") and $(ratio "$after" "$before") x"
    fi
    plain=$(hone_ms "$t" "$T" HONE_PLAIN_OPS=1)
    man=$(torch_ms "$WS/torch_manual_$t.json" "$T")
    sdpa=$(torch_ms "$WS/torch_sdpa_$t.json" "$T")
    printf "%-7s %-5s %12s %12s %12s %12s %10s %10s %10s\n" "$t" "$T" "$fused" "$plain" "$man" "$sdpa" "$(ratio "$fused" "$man")" "$(ratio "$fused" "$sdpa")" "$(ratio "$plain" "$man")"
  done
done
echo "(ms per step; torch $("$PY" -c 'import torch; print(torch.__version__)'); ratio = hone / PyTorch, below 1 means hone is faster)"
