#!/usr/bin/env bash
# DPO step speed, hone vs TRL, side by side in one run, on the same exported chat model (the
# default pipeline's `sft`), the same pairs and batch, and the same threads.
#
#   bench/dpo_speed.sh                         # BATCH=8 THREADS=1, the main job's store
#   THREADS=2 bench/dpo_speed.sh
#
# The pairs: for each ranked prompt of the pipeline's `rank` stage, its best answer against
# its worst (one pair per prompt, so both sides compute two sequences per pair; hone's `dpo`
# otherwise takes every pair a ranking implies and computes each answer once). Both sides
# compute the reference's log-probs once before training. hone's step time is the difference
# of two runs of STEPS_A and STEPS_B steps over the difference of steps (setup cancels out);
# TRL's is the median step after the first (bench/dpo_trl.py, a TrainerCallback).
set -euo pipefail
BATCH=${BATCH:-8}
THREADS=${THREADS:-1}
STEPS_A=${STEPS_A:-5}
STEPS_B=${STEPS_B:-25}
. "$(dirname "$0")/rl_common.sh" dpo-speed
machine "threads $THREADS, batch $BATCH"

"$HONE" run "$PIPELINE" --workspace "$WS" --until rank > "$TMP/upstream.log" 2>&1
SFT=$(out sft)
mkdir -p "$TMP/sft" "$TMP/rank"
cp "$SFT"/* "$TMP/sft/"
python3 - "$(out rank)/rankings.jsonl" "$TMP/rank/rankings.jsonl" "$TMP/pairs.jsonl" <<'PY'
import json, sys
src, rank_out, pairs_out = sys.argv[1:]
with open(rank_out, "w") as r, open(pairs_out, "w") as p:
    for line in open(src):
        x = json.loads(line)
        if len(x["ranking"]) < 2:
            continue
        best, worst = x["responses"][x["ranking"][0][0]], x["responses"][x["ranking"][-1][0]]
        r.write(json.dumps({"prompt": x["prompt"], "responses": [best, worst], "ranking": [[0], [1]]}) + "\n")
        prompt = f"<|im_start|>user\n {x['prompt']}<|im_end|>\n<|im_start|>assistant\n"
        p.write(json.dumps({"prompt": prompt, "chosen": " " + best, "rejected": " " + worst}) + "\n")
PY
echo "pairs: $(wc -l < "$TMP/pairs.jsonl")"

hone_run() { # hone_run STEPS: wall seconds of a fresh dpo run
  local ws="$TMP/ws-$1"
  mkdir -p "$ws"
  cat > "$TMP/pipeline-$1.yaml" <<YAML
name: dpo-speed
stages:
  sft: { uses: command, with: { cmd: 'cp sft/* "\$HONE_OUT"/', deps: [sft] } }
  rank: { uses: command, with: { cmd: 'cp rank/* "\$HONE_OUT"/', deps: [rank] } }
  dpo:
    uses: dpo
    inputs: { model: sft, rankings: rank }
    with: { steps: $1, batch_size: $BATCH, val_fraction: 0, eval_every: 0, checkpoint_every: 0, grad_clip: 0, threads: $THREADS }
YAML
  "$HONE" run "$TMP/pipeline-$1.yaml" --workspace "$ws" --until rank > "$ws/upstream.log" 2>&1
  local t0=$(date +%s.%N)
  "$HONE" run "$TMP/pipeline-$1.yaml" --workspace "$ws" > "$ws/run.log" 2>&1 || { cat "$ws/run.log" >&2; exit 1; }
  echo "$(date +%s.%N) - $t0" | bc
}
A=$(hone_run "$STEPS_A") || exit 1
B=$(hone_run "$STEPS_B") || exit 1
HONE_STEP=$(echo "($B - $A) / ($STEPS_B - $STEPS_A)" | bc -l)
TRL=$("$PY" "$ROOT/bench/dpo_trl.py" "$TMP/sft" "$TMP/pairs.jsonl" --batch "$BATCH" --steps 20 --threads "$THREADS" 2>/dev/null | tail -1)
TRL_STEP=$(echo "$TRL" | python3 -c "import json,sys; print(json.load(sys.stdin)['median_step_s'])")
printf 'hone: %.4f s per step (%d steps %.2f s, %d steps %.2f s)\nTRL:  %.4f s per step (median of 19)\nhone / TRL: %.2fx\n' \
  "$HONE_STEP" "$STEPS_A" "$A" "$STEPS_B" "$B" "$TRL_STEP" "$(echo "$HONE_STEP / $TRL_STEP" | bc -l)"
