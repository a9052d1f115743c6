#!/usr/bin/env bash
# A hone reward model in HuggingFace transformers: trains a small reward model (tinyworld
# corpus, byte-level BPE, pretrain -> sft -> reward on rankings written here), exports it and
# checks with tests/python/check_reward_hf.py that GPT2ForSequenceClassification.from_pretrained
# gives hone's scores (one at a time and in a right-padded batch). Fails when they differ or
# when torch/transformers is missing.
#
#   bench/reward_hf.sh [WORKSPACE]        # PY=/path/to/python with torch + transformers
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WS=${1:-/tmp/hone-reward-hf}
PY=${PY:-/work/venv/bin/python}
(cd "$ROOT" && cargo build --quiet --release --workspace --bin hone)
HONE="$ROOT/target/release/hone"
mkdir -p "$WS"
python3 - "$WS/rankings.jsonl" <<'PY'
import json, sys
names, things = ["Tom", "Anna", "Sam", "Lily"], ["ball", "cat", "kite"]
with open(sys.argv[1], "w") as f:
    for i, (n, t) in enumerate((n, t) for n in names for t in things):
        good = [f"{n}'s {t} is red.", f"The {t} of {n} is blue."]
        bad = [f"I do not know.", f"{t} {t} {t}"]
        responses = [good[0], bad[0], good[1], bad[1]]
        f.write(json.dumps({"prompt": f"What colour is {n}'s {t}?", "responses": responses, "ranking": [[0], [2], [1, 3]]}) + "\n")
PY
cat > "$WS/pipeline.yaml" <<'YAML'
name: reward-hf
seed: 1234
stages:
  corpus: { uses: ingest, with: { source: builtin:tinyworld/pretrain } }
  tokenizer: { uses: tokenizer, inputs: { corpus: corpus }, with: { kind: bpe, vocab_size: 384 } }
  base:
    uses: pretrain
    inputs: { tokenizer: tokenizer }
    with: { n_layer: 2, n_head: 2, n_embd: 32, bias: true, block_size: 64, batch_size: 8, steps: 30, eval_every: 0, eval_iters: 1, threads: 1 }
  chat: { uses: ingest, with: { source: builtin:tinyworld/chat } }
  sft:
    uses: sft
    inputs: { model: base, data: chat }
    with: { batch_size: 8, steps: 10, eval_every: 0, eval_records: 8, threads: 1 }
  rank: { uses: command, with: { cmd: 'cp rankings.jsonl "$HONE_OUT"/', deps: [rankings.jsonl] } }
  reward:
    uses: reward
    inputs: { model: sft, rankings: rank }
    with: { batch_size: 4, steps: 30, lr: 1e-3, eval_every: 0, val_fraction: 0.25, threads: 1 }
YAML
echo "workspace: $WS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# The head alone, then with the answer's likelihood in the score (`likelihood: 2`).
for w in 0 2; do
  "$HONE" run "$WS/pipeline.yaml" -s stages.reward.with.likelihood=$w
  rm -rf "$WS/reward-model"
  "$HONE" export reward "$WS/reward-model" "$WS/pipeline.yaml" -s stages.reward.with.likelihood=$w
  "$PY" "$ROOT/tests/python/check_reward_hf.py" "$WS/reward-model" --hone "$HONE" --rankings "$WS/rankings.jsonl"
done
