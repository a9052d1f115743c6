#!/usr/bin/env bash
# hone vs PyTorch, one training step (forward, backward, clip, AdamW) of nanoGPT's CPU
# configuration (4 layers, 4 heads, 128 wide, batch 12), side by side on this machine:
# milliseconds per step (median) and the hone/PyTorch ratio, at 1 and 2 threads, block 64
# and 256. PyTorch: $BENCH/torch_gpt_char.py --attn manual --scaling_only (softmax attention
# from matmuls, as hone does it).
#
#   bench/pretrain_speed.sh            # THREADS="1 2" BLOCKS="64 256" STEPS=12 by default
#
# hone's time per step comes from the `step timing` line pretrain writes to its stage log
# (median over the steps after the first two, as the PyTorch script does).
set -euo pipefail
source "$(dirname "$0")/common.sh"
THREADS=${THREADS:-"1 2"}
BLOCKS=${BLOCKS:-"64 256"}
STEPS=${STEPS:-12}
WS=$(mktemp -d /tmp/hone-speed.XXXXXX)
make_workspace "$WS"
echo "workspace: $WS; $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"

declare -A TORCH
if "$PY" -c "import torch" 2>/dev/null; then
  for t in $THREADS; do
    OMP_WAIT_POLICY=PASSIVE "$PY" "$BENCH/torch_gpt_char.py" --threads "$t" --attn manual --scaling_only --out "$WS/torch_$t.json" > "$WS/torch_$t.log"
    for T in $BLOCKS; do
      TORCH[$t,$T]=$(python3 -c "import json; print(next(s['fwd_bwd_clip_step_ms_median'] for s in json.load(open('$WS/torch_$t.json'))['scaling'] if s['block_size'] == $T))" 2>/dev/null || echo "")
    done
  done
  TORCH_VERSION=$("$PY" -c "import torch; print(torch.__version__)")
else
  echo "PyTorch not found at $PY (set PY, or: python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy); hone only"
  TORCH_VERSION=none
fi

printf "\n%-8s %-6s %14s %14s %8s\n" threads block "hone ms/step" "torch ms/step" ratio
for t in $THREADS; do
  for T in $BLOCKS; do
    set_args=(-s "stages.base.with.threads=$t" -s "stages.base.with.block_size=$T" -s "stages.base.with.steps=$STEPS" -s stages.base.with.eval_every=0 -s stages.base.with.eval_iters=1 -s stages.base.with.checkpoint_every=0)
    RAYON_NUM_THREADS=$t "$HONE" run "$WS/pipeline.yaml" --force base "${set_args[@]}" > "$WS/hone_${t}_$T.log" 2>&1
    log=$(stage_field "$WS" log "${set_args[@]}" | tr -d '"')
    hone_ms=$(sed -n 's/.*ms_per_step_median=\([0-9.]*\).*/\1/p' "$log" | tail -1)
    torch_ms=${TORCH[$t,$T]:-}
    ratio=$([ -n "$torch_ms" ] && python3 -c "print(f'{$hone_ms / $torch_ms:.2f}')" || echo "-")
    printf "%-8s %-6s %14s %14s %8s\n" "$t" "$T" "$hone_ms" "${torch_ms:--}" "$ratio"
  done
done
echo "(torch $TORCH_VERSION; ratio = hone / PyTorch, below 1 means hone is faster)"
