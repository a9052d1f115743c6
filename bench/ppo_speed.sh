#!/usr/bin/env bash
# PPO speed, hone vs TRL, side by side in one run: one PPO iteration (rollout, scoring,
# update) of hone's `ppo` stage and of TRL's PPOTrainer (bench/ppo_trl.py) on the same
# exported models (the pipeline's `sft` chat model and `reward` reward model), the same
# prompts, rollout batch, minibatches, epochs, answer length, temperature and threads.
#
#   bench/ppo_speed.sh                      # ITERS=4 THREADS=1, the default pipeline
#   PIPELINE=pipelines/smoke.yaml bench/ppo_speed.sh
#   WS=pipelines bench/ppo_speed.sh         # reuse the main job's store (upstream cached)
#
# Both sides: no gradient clipping (TRL has none), the value function a separate critic
# initialised from the reward model (TRL's layout), answers sampled at the stage's
# `temperature` with no top-k/top-p, stop at <|im_end|>. Times are medians over the
# iterations after the first (warm-up). hone's come from the stage log's "ppo iteration
# timing" lines, TRL's from wrapping its own generation, scoring and update code.
# Needs a TRL that still ships PPO (see bench/ppo_trl.py): TRL_PATH (default /tmp/trl-ppo).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-/work/venv/bin/python}
TRL_PATH=${TRL_PATH:-/tmp/trl-ppo}
PIPELINE=${PIPELINE:-$ROOT/pipelines/tiny-chatgpt.yaml}
ITERS=${ITERS:-4}
THREADS=${THREADS:-1}

(cd "$ROOT" && cargo build --quiet --release --workspace)
HONE="$ROOT/target/release/hone"
# WS=DIR reuses a workspace whose upstream stages are cached (e.g. the main job's).
WS=${WS:-$(mktemp -d /tmp/hone-ppo-speed.XXXXXX)}
PIPELINE=$(cd "$(dirname "$PIPELINE")" && pwd)/$(basename "$PIPELINE")
echo "workspace: $WS; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load: $(cut -d' ' -f1-3 /proc/loadavg)"

field() { # field STAGE KEY [-s ...]: a field of `hone show STAGE --json`
  local stage=$1 key=$2; shift 2
  "$HONE" show "$stage" "$PIPELINE" --workspace "$WS" --json "$@" | python3 -c "import json,sys; print(json.load(sys.stdin)['$key'])"
}
param() { # param KEY: the ppo stage's param as the pipeline gives it (empty: the default)
  "$PY" - "$PIPELINE" "$1" <<'PY'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
print(p["stages"]["ppo"].get("with", {}).get(sys.argv[2], ""))
PY
}
prompts_stage() { # the stage wired to the ppo stage's `prompts` input (`rl_prompts` in smoke)
  "$PY" - "$PIPELINE" <<'PY'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
print(p["stages"]["ppo"]["inputs"]["prompts"].split(".")[0])
PY
}

# The upstream stages (cached after the first run), then the timed ppo run.
"$HONE" run "$PIPELINE" --workspace "$WS" --until reward > "$WS/upstream.log" 2>&1
"$HONE" run "$PIPELINE" --workspace "$WS" --until "$(prompts_stage)" >> "$WS/upstream.log" 2>&1
ROLLOUTS=$(param rollouts); ROLLOUTS=${ROLLOUTS:-64}
BATCH=$(param batch_size); BATCH=${BATCH:-16}
EPOCHS=$(param epochs); EPOCHS=${EPOCHS:-4}
NEW=$(param max_new_tokens); NEW=${NEW:-24}
TEMP=$(param temperature); TEMP=${TEMP:-0.7}
STEPS=$((ITERS * EPOCHS * ROLLOUTS / BATCH))
SET=(-s "stages.ppo.with.steps=$STEPS" -s "stages.ppo.with.threads=$THREADS" -s stages.ppo.with.grad_clip=0 -s stages.ppo.with.eval_every=0 -s stages.ppo.with.eval_prompts=0 -s stages.ppo.with.checkpoint_every=0)
RAYON_NUM_THREADS=$THREADS CANDLE_NUM_THREADS=1 "$HONE" run "$PIPELINE" --workspace "$WS" --only ppo --force ppo "${SET[@]}" > "$WS/hone.log" 2>&1
LOG=$(field ppo log "${SET[@]}")
python3 - "$LOG" > "$WS/hone.json" <<'PY'
import json, re, statistics, sys
rows = []
for line in open(sys.argv[1]):
    if "ppo iteration timing" not in line:
        continue
    f = dict(re.findall(r"(\w+)=\"?([0-9.]+)", line))
    rows.append({k: float(f[k]) / 1e3 for k in ("rollout_ms", "scoring_ms", "update_ms", "total_ms")})
timed = rows[1:] or rows
print(json.dumps({"iterations": rows, "median": {k.replace("_ms", "_s"): statistics.median(r[k] for r in timed) for k in rows[0]}}))
PY

SFT=$(field sft output); REWARD=$(field reward output); PROMPTS=$(field "$(prompts_stage)" output)
OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$TRL_PATH" "$PY" "$ROOT/bench/ppo_trl.py" --policy "$SFT" --reward "$REWARD" --prompts "$PROMPTS/train.jsonl" \
  --batch "$ROLLOUTS" --mini-batches $((ROLLOUTS / BATCH)) --epochs "$EPOCHS" --response-length "$NEW" --temperature "$TEMP" \
  --iterations "$ITERS" --threads "$THREADS" --out "$WS/trl.json" > "$WS/trl.log" 2>&1

python3 - "$WS/hone.json" "$WS/trl.json" <<PY
import json, sys
h = json.load(open(sys.argv[1]))["median"]
t = json.load(open(sys.argv[2]))["median"]
print(f"\nPPO iteration: {$ROLLOUTS} answers of at most {$NEW} tokens, {$EPOCHS} epochs of {$ROLLOUTS // $BATCH} minibatches, {$THREADS} thread(s); medians of {$ITERS - 1} iterations (s)")
print(f"{'phase':<10} {'hone':>9} {'TRL':>9} {'hone/TRL':>9}")
for k in ("rollout_s", "scoring_s", "update_s", "total_s"):
    print(f"{k[:-2]:<10} {h[k]:9.3f} {t[k]:9.3f} {h[k] / t[k]:9.2f}")
PY
echo "(logs and JSON in $WS; load after: $(cut -d' ' -f1-3 /proc/loadavg))"
