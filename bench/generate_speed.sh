#!/usr/bin/env bash
# Batched generation speed, hone vs HuggingFace transformers, side by side in one run: the
# same exported model (a random GPT-2 with the default pipeline's sizes: 4 layers, 4 heads,
# 128 wide, 64 positions, 512 tokens, written by hone in HuggingFace's layout), the same
# batch, prompt length, number of new tokens (no stop token: every sequence runs to the
# end), sampling at temperature 1 with no top-k/top-p, and the same threads.
#
#   bench/generate_speed.sh        # BATCHES="1 8 64" THREADS="1 2" PROMPT=16 NEW=48 REPEATS=5
#   BEFORE_BIN=/tmp/old/generate_speed bench/generate_speed.sh   # also another build's lines
#
# hone: stages/examples/generate_speed.rs (the `sample` stage's sampler: one KV cache per
# sequence, all sequences in one pass per step). transformers: `model.generate` with the KV
# cache (`use_cache`), `min_new_tokens` = `max_new_tokens`, under `torch.no_grad()`,
# torch.set_num_threads and OMP_WAIT_POLICY=PASSIVE. Both: the median of REPEATS timed runs
# after one warm-up; new tokens per second (prompt processing included in the time), of wall
# time and of the process's CPU time (all threads): on a loaded shared machine the wall time
# mostly measures the scheduler, the CPU time the work.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-/work/venv/bin/python}
BATCHES=${BATCHES:-"1 8 64"}
THREADS=${THREADS:-"1 2"}
PROMPT=${PROMPT:-16}
NEW=${NEW:-48}
REPEATS=${REPEATS:-5}
"$PY" -c "import torch, transformers" 2>/dev/null || { echo "torch and transformers not found at $PY (set PY)" >&2; exit 2; }
[ -n "${BIN:-}" ] || (cd "$ROOT" && cargo build --quiet --release --workspace --example generate_speed)
BIN=${BIN:-"$ROOT/target/release/examples/generate_speed"}
WS=$(mktemp -d /tmp/hone-generate-speed.XXXXXX)
"$BIN" --random "$WS/model" 2>/dev/null
cat > "$WS/hf.py" <<'PYEOF'
import json, statistics, sys, time
import torch
from transformers import GPT2LMHeadModel
model_dir, batch, prompt, new, threads, repeats = sys.argv[1], *map(int, sys.argv[2:])
torch.set_num_threads(threads)
model = GPT2LMHeadModel.from_pretrained(model_dir).eval()
g = torch.Generator().manual_seed(7)
ids = torch.randint(0, model.config.vocab_size, (batch, prompt), generator=g)
mask = torch.ones_like(ids)
runs, cpu_runs = [], []
with torch.no_grad():
    for i in range(repeats + 1):
        torch.manual_seed(i)
        t0, c0 = time.perf_counter(), time.process_time()
        out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                             max_new_tokens=new, min_new_tokens=new, use_cache=True, pad_token_id=0)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert out.shape == (batch, prompt + new), out.shape
        if i > 0:
            runs.append(batch * new / secs)
            cpu_runs.append(batch * new / cpu)
print(json.dumps({"tokens_per_second": statistics.median(runs), "tokens_per_cpu_second": statistics.median(cpu_runs), "runs": runs}))
PYEOF
echo "model: $WS/model; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "prompt $PROMPT tokens, $NEW new tokens per sequence; torch $("$PY" -c 'import torch; print(torch.__version__)'), transformers $("$PY" -c 'import transformers; print(transformers.__version__)')"
field() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(round(d['$2']))" "$1"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
printf "\n%-7s %-6s %12s %12s %8s %14s %14s %8s\n" threads batch "hone tok/s" "HF tok/s" "hone/HF" "hone tok/cpu-s" "HF tok/cpu-s" "hone/HF"
for t in $THREADS; do
  for b in $BATCHES; do
    h=$(RAYON_NUM_THREADS="$t" CANDLE_NUM_THREADS=1 "$BIN" "$WS/model" "$b" "$PROMPT" "$NEW" "$t" "$REPEATS")
    if [ -n "${BEFORE_BIN:-}" ]; then
      echo "threads $t batch $b: before: $(RAYON_NUM_THREADS="$t" CANDLE_NUM_THREADS=1 "$BEFORE_BIN" "$WS/model" "$b" "$PROMPT" "$NEW" "$t" "$REPEATS")"
      echo "threads $t batch $b: after:  $h"
    fi
    f=$(OMP_WAIT_POLICY=PASSIVE "$PY" "$WS/hf.py" "$WS/model" "$b" "$PROMPT" "$NEW" "$t" "$REPEATS" 2>/dev/null)
    hw=$(field "$h" tokens_per_second); fw=$(field "$f" tokens_per_second)
    hc=$(field "$h" tokens_per_cpu_second); fc=$(field "$f" tokens_per_cpu_second)
    printf "%-7s %-6s %12s %12s %8s %14s %14s %8s\n" "$t" "$b" "$hw" "$fw" "$(ratio "$hw" "$fw")" "$hc" "$fc" "$(ratio "$hc" "$fc")"
  done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"
