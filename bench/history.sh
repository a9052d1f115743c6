#!/usr/bin/env bash
# `hone runs` and `hone diff` over 1,000 recorded runs (issue #26's goal: under 100 ms each).
#
#   bench/history.sh            # N=1000 REPEATS=21
#
# The records are copies of one real record: a run of the smoke pipeline (every stage of the
# recipe, its params and metrics), each with its own id, in a scratch workspace. Each command
# runs REPEATS times; the median wall time is printed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-1000}
REPEATS=${REPEATS:-21}
(cd "$ROOT" && cargo build --quiet --release)
HONE="$ROOT/target/release/hone"
TMP=$(mktemp -d /tmp/hone-history.XXXXXX)
sed "s|\.\./plugins/|$ROOT/plugins/|" "$ROOT/pipelines/smoke.yaml" > "$TMP/pipeline.yaml"
(cd "$TMP" && "$HONE" run > "$TMP/run.log" 2>&1)
python3 - "$TMP/.hone/history" "$N" <<'PY'
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
[src] = [f for f in os.listdir(d) if f.endswith(".json")]
rec = json.load(open(os.path.join(d, src)))
[line] = open(os.path.join(d, "index.jsonl")).read().splitlines()
summary = json.loads(line)
with open(os.path.join(d, "index.jsonl"), "a") as index:
    for i in range(n - 1):
        rec["id"] = summary["id"] = f"20261204T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}.000-{i}"
        rec["overrides"] = summary["overrides"] = [f"stages.ppo.with.lr={i}e-6"]
        json.dump(rec, open(os.path.join(d, rec["id"] + ".json"), "w"), separators=(",", ":"))
        index.write(json.dumps(summary, separators=(",", ":")) + "\n")
PY
echo "$(ls "$TMP/.hone/history" | grep -c json$) records, $(du -sh "$TMP/.hone/history" | cut -f1); $(nproc) CPUs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
median_ms() { # median_ms CMD...: the median wall time of REPEATS runs, in ms
  local ts=()
  for _ in $(seq "$REPEATS"); do
    local t0=$(date +%s%N)
    "$@" > /dev/null
    ts+=($(( ($(date +%s%N) - t0) / 1000 )))
  done
  printf '%s\n' "${ts[@]}" | sort -n | awk -v n="$REPEATS" 'NR == int((n + 1) / 2) { printf "%.1f", $1 / 1000 }'
}
cd "$TMP"
echo "hone runs:         $(median_ms "$HONE" runs) ms"
echo "hone runs --json:  $(median_ms "$HONE" runs --json) ms"
echo "hone runs --json --full: $(median_ms "$HONE" runs --json --full) ms (every record whole)"
echo "hone diff:         $(median_ms "$HONE" diff) ms"
echo "hone diff --json:  $(median_ms "$HONE" diff --json) ms"
echo "hone --version:    $(median_ms "$HONE" --version) ms (the process alone)"
