#!/usr/bin/env bash
# The HuggingFace export, checked against real transformers: a small random hone model (with
# biases) is loaded with GPT2LMHeadModel.from_pretrained and must give hone's logits within
# 1e-4 (tests/python/check_hf.py). Fails when torch or transformers is missing.
#
#   bench/hf_export.sh [MODEL_DIR]        # PY: the Python with torch + transformers (default /work/venv/bin/python)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PY:-/work/venv/bin/python}
[ -x "$PY" ] || { echo "FAIL: no Python at $PY: set PY to one with torch and transformers" >&2; exit 1; }
# --workspace: the same dependency features as the test build, so nothing heavy recompiles.
(cd "$ROOT" && cargo build --quiet --release --workspace --examples)
exec "$PY" "$ROOT/tests/python/check_hf.py" "$@"
