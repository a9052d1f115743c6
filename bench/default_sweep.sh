#!/usr/bin/env bash
# The measured sweep behind the sizes of the default pipeline (pipelines/tiny-chatgpt.yaml);
# results in docs/benchmarks.md, "Default pipeline".
#
#   bench/default_sweep.sh time [CONFIG...]   # ms per training step of each config's base model (2 threads)
#   bench/default_sweep.sh run  [CONFIG...]   # the pipeline with each config: val loss, accuracy, time
#
# Every config is the default pipeline with the `-s` overrides listed in CONFIGS below, run in
# one workspace ($WS, default /tmp/hone-default-sweep), so the ingests and the tokenizer run
# once and a config that changes only `sft` reuses its cached `base`. `run` prints one line
# per config: pretrain val loss, SFT val loss, base (few-shot) and SFT answer accuracy on the
# held-out prompts, median ms per step of pretrain and sft, and the stages' wall seconds.
# Accuracy is deterministic for a seed; times depend on the machine's load, printed with them.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WS=${WS:-/tmp/hone-default-sweep}
PIPE="$ROOT/pipelines/tiny-chatgpt.yaml"
(cd "$ROOT" && cargo build --quiet --release --workspace --bin hone)
HONE="$ROOT/target/release/hone"

b() { echo "-s stages.base.with.$1"; }
s() { echo "-s stages.sft.with.$1"; }
# Model shapes (2 threads, block 128, batch 32: 4,096 tokens per step).
shape() { echo "$(b threads=2) $(b block_size=128) $(b batch_size=32) $(b n_layer=$1) $(b n_embd=$2) $(b n_head=$3) $(s threads=2)"; }
declare -A CONFIGS=(
  # The pipeline as it stands.
  [default]=""
  [L4E128]="$(shape 4 128 4)"
  [L4E192]="$(shape 4 192 6)"
  [L6E192]="$(shape 6 192 6)"
  [L4E256]="$(shape 4 256 8)"
  [L6E256]="$(shape 6 256 8)"
  # Proxies: about a quarter of the budget each.
  [P1]="$(shape 4 128 4) $(b steps=800) $(b lr=2e-3) $(b min_lr=2e-4) $(b warmup_steps=50)"
  [P2]="$(shape 4 192 6) $(b steps=400) $(b lr=2e-3) $(b min_lr=2e-4) $(b warmup_steps=40)"
  # A 1,024-token vocabulary: tinyworld's every word is one token (the BPE stops at 1,016).
  [P3]="-s vars.vocab_size=1024 $(shape 4 192 6) $(b steps=700) $(b lr=2e-3) $(b min_lr=2e-4) $(b warmup_steps=50) $(b eval_every=100) $(s steps=400)"
)
# Session 4 (tinyworld v4; the pipeline's default was 1,800 x 16 steps then): the variants measured
# on it (docs/benchmarks.md, "Session 4"); the rows on v2 data there need tinyworld v2.
CONFIGS[S4_sft800]="$(s steps=800)"
CONFIGS[S4_sft_lr2e-3]="$(s lr=2e-3) $(s min_lr=2e-4)"
CONFIGS[S4_b32x700]="$(b batch_size=32) $(b steps=700) $(b eval_every=100)"
CONFIGS[S4_beta0.05]="-s stages.ppo.with.kl_coef=0.05"
# Session 13: the default pretrains 2,400 steps; 1,800 was the default before.
CONFIGS[S13_b1800]="$(b steps=1800)"
ORDER=(default)

mode=${1:-run}
shift || true
[ $# -gt 0 ] && ORDER=("$@")

# field STAGE PATH OVERRIDES...: a field of `hone show STAGE --json` (PATH like metrics/val_loss).
field() {
  local stage=$1 path=$2; shift 2
  "$HONE" show "$stage" "$PIPE" --workspace "$WS" --json "$@" | python3 -c "
import json, sys
v = json.load(sys.stdin)
for k in '$path'.split('/'):
    v = v.get(k) if isinstance(v, dict) else None
print('-' if v is None else (f'{v:.4f}' if isinstance(v, float) else v))"
}

# ms_per_step STAGE OVERRIDES...: the median step time from the stage's log.
ms_per_step() {
  local stage=$1; shift
  local log
  log=$(field "$stage" log "$@")
  [ -f "$log" ] && sed -n 's/.*ms_per_step_median=\([0-9.]*\).*/\1/p' "$log" | tail -1 || echo -
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); workspace $WS"
case $mode in
  time)
    printf "%-14s %10s %12s %s\n" config params ms/step load
    for c in "${ORDER[@]}"; do
      # shellcheck disable=SC2206
      over=(${CONFIGS[$c]} -s stages.base.with.steps=12 -s stages.base.with.eval_every=0 -s stages.base.with.eval_iters=1 -s stages.base.with.checkpoint_every=0 -s stages.base.with.warmup_steps=2)
      "$HONE" run "$PIPE" --workspace "$WS" --until base "${over[@]}" > "$WS.$c.time.log" 2>&1
      printf "%-14s %10s %12s %s\n" "$c" "$(field base metrics/params "${over[@]}")" "$(ms_per_step base "${over[@]}")" "$(cut -d' ' -f1-3 /proc/loadavg)"
    done
    ;;
  run)
    printf "%-14s %9s %9s %8s %8s %9s %9s %7s %7s %s\n" config base_val sft_val base_acc sft_acc base_ms sft_ms base_s sft_s load
    for c in "${ORDER[@]}"; do
      # shellcheck disable=SC2206
      over=(${CONFIGS[$c]})
      "$HONE" run "$PIPE" --workspace "$WS" "${over[@]}" > "$WS.$c.run.log" 2>&1 || { echo "$c: failed, see $WS.$c.run.log"; continue; }
      printf "%-14s %9s %9s %8s %8s %9s %9s %7s %7s %s\n" "$c" \
        "$(field base metrics/val_loss "${over[@]}")" "$(field sft metrics/val_loss "${over[@]}")" \
        "$(field eval metrics/base.accuracy "${over[@]}")" "$(field eval metrics/sft.accuracy "${over[@]}")" \
        "$(ms_per_step base "${over[@]}")" "$(ms_per_step sft "${over[@]}")" \
        "$(field base seconds "${over[@]}")" "$(field sft seconds "${over[@]}")" "$(cut -d' ' -f1-3 /proc/loadavg)"
    done
    ;;
  *) echo "usage: $0 time|run [CONFIG...]" >&2; exit 2 ;;
esac
