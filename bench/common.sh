# Shared by the pretraining benchmarks: builds hone, finds the reference data, and makes a
# workspace whose pipeline turns tinyshakespeare.txt into char-level shards (90/10 split, as
# nanoGPT's prepare.py) and pretrains on them with nanoGPT's CPU configuration.
# Source it; it sets ROOT, BENCH, HONE, PY and defines make_workspace.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${BENCH:-}" ]; then
  for d in "$ROOT/../shared/bench" "$ROOT/../../shared/bench" /work/shared/bench; do
    if [ -f "$d/data/tinyshakespeare.txt" ]; then BENCH=$(cd "$d" && pwd); break; fi
  done
fi
[ -n "${BENCH:-}" ] || { echo "set BENCH to the directory holding data/tinyshakespeare.txt and torch_gpt_char.py" >&2; exit 2; }
PY=${PY:-/tmp/torch/bin/python}

(cd "$ROOT" && cargo build --quiet --release --workspace --bin hone --example char_shards)
HONE="$ROOT/target/release/hone"
CHAR_SHARDS="$ROOT/target/release/examples/char_shards"

# make_workspace DIR: the data and a pipeline.yaml with stages `chars` and `base`.
make_workspace() {
  local ws=$1
  mkdir -p "$ws/data"
  cp "$BENCH/data/tinyshakespeare.txt" "$ws/data/"
  cat > "$ws/pipeline.yaml" <<YAML
name: shakespeare-char
seed: 1337
stages:
  chars:
    uses: command
    with:
      cmd: '"$CHAR_SHARDS" data/tinyshakespeare.txt "\$HONE_OUT"'
      deps: [data]
  base:
    uses: pretrain
    inputs: { tokenizer: chars }
    with:
      # nanoGPT's README CPU command (train_shakespeare_char.py with overrides).
      n_layer: 4
      n_head: 4
      n_embd: 128
      block_size: 64
      batch_size: 12
      dropout: 0.0
      bias: false
      lr: 1.0e-3
      min_lr: 1.0e-4
      warmup_steps: 100
      steps: 2000
      beta1: 0.9
      beta2: 0.99
      weight_decay: 0.1
      grad_clip: 1.0
      eval_every: 500
      eval_iters: 200
      checkpoint_every: 250
      threads: 1
YAML
}

# stage_field WS FIELD [-s overrides...]: a field of `hone show base --json`.
stage_field() {
  local ws=$1 field=$2; shift 2
  "$HONE" show base "$ws/pipeline.yaml" --json "$@" | python3 -c "import json,sys; print(json.dumps(json.load(sys.stdin)['$field']))"
}
