# Shared by the RL speed benchmarks (dpo_speed.sh, grpo_speed.sh), which read the main job's
# store. Source it as `. bench/rl_common.sh NAME`: it builds hone and sets ROOT, PY (the
# Python with torch, transformers and trl: .ci/venv by default), PIPELINE and WS (the main
# job's), HONE and TMP (a new /tmp/hone-NAME.* directory), and defines `machine` (prints the
# CPUs and load with its arguments) and `out STAGE` (a stage's output directory).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-$ROOT/.ci/venv/bin/python}
PIPELINE=${PIPELINE:-$ROOT/pipelines/tiny-chatgpt.yaml}
WS=${WS:-$ROOT/pipelines}
(cd "$ROOT" && cargo build --quiet --release)
HONE="$ROOT/target/release/hone"
TMP=$(mktemp -d "/tmp/hone-$1.XXXXXX")
machine() {
  echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); load: $(cut -d' ' -f1-3 /proc/loadavg); $*"
}
out() {
  "$HONE" show "$1" "$PIPELINE" --workspace "$WS" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['output'])"
}
