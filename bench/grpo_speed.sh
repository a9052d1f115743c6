#!/usr/bin/env bash
# GRPO iteration speed, hone vs TRL, side by side in one run, on the same exported chat model
# (the default pipeline's `sft`), the same prompts (its `rl_prompts`, train split), the same
# settings and threads.
#
#   bench/grpo_speed.sh                        # THREADS=1, the main job's store
#   THREADS=2 bench/grpo_speed.sh
#
# An iteration: 8 prompts × 8 answers (at most 24 new tokens, temperature 0.7), the reward
# "+1 when the answer contains `is`" (cheap on both sides), the reference's log-probs (β 0.04),
# then 4 optimizer steps of 16 answers. hone's iteration time is the difference of two runs of
# ITERS_A and ITERS_B iterations over the difference (setup cancels out); TRL's is the median
# iteration after the first (bench/grpo_trl.py, a TrainerCallback). The answers differ (each
# side samples its own), so their lengths do too: both are printed.
set -euo pipefail
THREADS=${THREADS:-1}
ITERS_A=${ITERS_A:-2}
ITERS_B=${ITERS_B:-8}
TRL_ITERS=${TRL_ITERS:-5}
. "$(dirname "$0")/rl_common.sh" grpo-speed
machine "threads $THREADS"

"$HONE" run "$PIPELINE" --workspace "$WS" --until sft > "$TMP/upstream.log" 2>&1
"$HONE" run "$PIPELINE" --workspace "$WS" --until rl_prompts >> "$TMP/upstream.log" 2>&1
mkdir -p "$TMP/sft" "$TMP/prompts"
cp "$(out sft)"/* "$TMP/sft/"
cp "$(out rl_prompts)"/* "$TMP/prompts/"
python3 - "$TMP/prompts/train.jsonl" "$TMP/trl_prompts.jsonl" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        p = json.loads(line)["prompt"]
        out.write(json.dumps({"prompt": f"<|im_start|>user\n {p}<|im_end|>\n<|im_start|>assistant\n"}) + "\n")
PY

hone_run() { # hone_run ITERS: wall seconds of a fresh grpo run, then its mean answer length
  local ws="$TMP/ws-$1"
  mkdir -p "$ws"
  cat > "$TMP/pipeline-$1.yaml" <<YAML
name: grpo-speed
stages:
  sft: { uses: command, with: { cmd: 'cp sft/* "\$HONE_OUT"/', deps: [sft] } }
  prompts: { uses: command, with: { cmd: 'cp prompts/* "\$HONE_OUT"/', deps: [prompts] } }
  grpo:
    uses: grpo
    inputs: { model: sft, prompts: prompts }
    with: { reward_contains: "is", num_generations: 8, rollouts: 64, batch_size: 16, steps: $(( $1 * 4 )), max_new_tokens: 24, temperature: 0.7, beta: 0.04, eval_every: 0, eval_prompts: 0, checkpoint_every: 0, grad_clip: 0, threads: $THREADS }
YAML
  "$HONE" run "$TMP/pipeline-$1.yaml" --workspace "$ws" --until prompts > "$ws/upstream.log" 2>&1
  local t0=$(date +%s.%N)
  "$HONE" run "$TMP/pipeline-$1.yaml" --workspace "$ws" > "$ws/run.log" 2>&1 || { cat "$ws/run.log" >&2; exit 1; }
  echo "$(date +%s.%N) - $t0" | bc
}
A=$(hone_run "$ITERS_A") || exit 1
B=$(hone_run "$ITERS_B") || exit 1
HONE_ITER=$(echo "($B - $A) / ($ITERS_B - $ITERS_A)" | bc -l)
HONE_LEN=$(python3 - "$(cd "$TMP" && "$HONE" show grpo "$TMP/pipeline-$ITERS_B.yaml" --workspace "$TMP/ws-$ITERS_B" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['output'])")/metrics.jsonl" <<'PY'
import json, sys
ls = [json.loads(l)["completions/mean_length"] for l in open(sys.argv[1]) if "completions/mean_length" in l]
print(f"{sum(ls) / len(ls):.2f}")
PY
)
TRL=$("$PY" "$ROOT/bench/grpo_trl.py" "$TMP/sft" "$TMP/trl_prompts.jsonl" --iterations "$TRL_ITERS" --threads "$THREADS" 2>/dev/null | tail -1)
TRL_ITER=$(echo "$TRL" | python3 -c "import json,sys; print(json.load(sys.stdin)['median_iteration_s'])")
printf 'hone: %.3f s per iteration (%d iterations %.2f s, %d iterations %.2f s; mean answer length %s tokens)\nTRL:  %.3f s per iteration (median of %d)\nhone / TRL: %.2fx\n' \
  "$HONE_ITER" "$ITERS_A" "$A" "$ITERS_B" "$B" "$HONE_LEN" "$TRL_ITER" "$((TRL_ITERS - 1))" "$(echo "$HONE_ITER / $TRL_ITER" | bc -l)"
echo "TRL: $TRL"
echo "(answer lengths count the closing <|im_end|>; TRL's are in its JSON: mean_answer_length)"
