#!/usr/bin/env bash
# The Llama family, hone vs PyTorch/transformers on the same weights and cores, side by side:
# two random LlamaForCausalLM shapes written once by bench/llama_torch.py (`small`: 4 layers,
# 256 wide, 4.9M parameters; `smol`: SmolLM2-135M's 30 layers, 576 wide, 9 heads, 3 KV heads,
# 49,152 tokens, 135M parameters), then
#   1. a training step (forward, loss, backward, clip, AdamW) at BATCH x SEQ tokens: PyTorch with
#      `attn_implementation="sdpa"`, hone's fused kernels (stages/examples/train_step.rs --from);
#   2. batched sampling at batch 64 (PROMPT prompt tokens, NEW new ones, no stop token):
#      transformers' `generate` with its KV cache, hone's decoder (stages/examples/generate_speed.rs);
#   3. hone's SFT step (the loss masked to half of each row) of the smol shape at 8 x 512 tokens,
#      its peak resident memory (getrusage's ru_maxrss, model and AdamW state included), with
#      the activations kept and with gradient checkpointing (`gradient_checkpointing: true`).
# Prints each figure and the ratios. Run it on a quiet machine: both sides use THREADS threads.
#
#   bench/llama_speed.sh            # THREADS=2 SHAPES="small smol" BATCH=4 SEQ=256 STEPS=4
#   PY=/path/to/python bench/llama_speed.sh   # a Python with torch + transformers
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.ci/venv/bin/python}
THREADS=${THREADS:-2}
SHAPES=${SHAPES:-"small smol"}
BATCH=${BATCH:-4}
SEQ=${SEQ:-256}
STEPS=${STEPS:-4}
PROMPT=${PROMPT:-16}
NEW=${NEW:-64}
DIR=${DIR:-/tmp/hone-llama-speed}
(cd "$ROOT" && cargo build --quiet --release -p hone-stages --example train_step --example generate_speed)
TRAIN="$ROOT/target/release/examples/train_step"
GEN="$ROOT/target/release/examples/generate_speed"
echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load: $(cut -d' ' -f1-3 /proc/loadavg); threads $THREADS"
field() { python3 -c "import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'], 1))"; }
export OMP_WAIT_POLICY=PASSIVE CANDLE_NUM_THREADS=1
for shape in $SHAPES; do
  [ -f "$DIR/$shape/model.safetensors" ] || "$PY" "$ROOT/bench/llama_torch.py" --save "$shape" "$DIR/$shape" >/dev/null
  torch_ms=$("$PY" "$ROOT/bench/llama_torch.py" --train "$shape" --from "$DIR/$shape" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" --threads "$THREADS" 2>/dev/null | field ms_median)
  hone_ms=$("$TRAIN" --from "$DIR/$shape" "$BATCH" "$SEQ" "$STEPS" "$THREADS" | field ms_median)
  echo "$shape train step ${BATCH}x$SEQ: PyTorch sdpa $torch_ms ms, hone $hone_ms ms: hone/PyTorch $(python3 -c "print(round($hone_ms/$torch_ms, 2))")x"
  torch_tps=$("$PY" "$ROOT/bench/llama_torch.py" --generate "$shape" --from "$DIR/$shape" --batch 64 --prompt "$PROMPT" --new "$NEW" --threads "$THREADS" 2>/dev/null | field tokens_per_second)
  hone_tps=$("$GEN" "$DIR/$shape" 64 "$PROMPT" "$NEW" "$THREADS" 3 | field tokens_per_second)
  echo "$shape generate batch 64 ($PROMPT+$NEW tokens): transformers $torch_tps tok/s, hone $hone_tps tok/s: hone/transformers $(python3 -c "print(round($hone_tps/$torch_tps, 2))")x"
done
if [[ " $SHAPES " == *" smol "* ]]; then
  for mode in "" recompute; do
    out=$("$TRAIN" --from "$DIR/smol" 8 512 3 "$THREADS" sft $mode)
    echo "smol SFT step 8x512 ${mode:-(activations kept)}: $(echo "$out" | field ms_median) ms, peak RSS $(echo "$out" | field peak_rss_mb) MB"
  done
fi
