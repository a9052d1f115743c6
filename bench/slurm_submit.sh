#!/usr/bin/env bash
# Submission overhead of the Slurm executor: `hone run --executor slurm --detach` on a pipeline
# of N `command` stages (a chain: each job depends on the previous one), i.e. N sbatch calls
# plus hone's own work; then the same pipeline run locally, for scale. Needs a running Slurm
# (tests/slurm/start.sh). usage: bench/slurm_submit.sh [N=100]
set -euo pipefail
n=${1:-100}
hone=$(cd "$(dirname "$0")/.." && pwd)/target/release/hone
work=$(mktemp -d /tmp/hone-slurm-bench.XXXXXX)
{
  echo "name: submit$n"
  echo "stages:"
  echo "  s0: { uses: command, with: { cmd: 'echo 0 > \$HONE_OUT/x' } }"
  for i in $(seq 1 $((n - 1))); do
    echo "  s$i: { uses: command, inputs: { x: s$((i - 1)) }, with: { cmd: 'cat \$HONE_IN_x/x > \$HONE_OUT/x; echo $i >> \$HONE_OUT/x' } }"
  done
} > "$work/pipeline.yaml"
uptime
t0=$(date +%s.%N)
"$hone" run "$work/pipeline.yaml" --executor slurm --detach --json > "$work/events.jsonl"
t1=$(date +%s.%N)
echo "submitted $(grep -c stage_submitted "$work/events.jsonl") jobs in $(echo "$t1 - $t0" | bc) s"
jobs=$(grep -o '"job":"[0-9]*"' "$work/events.jsonl" | cut -d'"' -f4 | paste -sd,)
scancel ${jobs//,/ } 2>/dev/null || true
cp "$work/pipeline.yaml" "$work/local.yaml"
t0=$(date +%s.%N)
"$hone" run "$work/local.yaml" --workspace "$work/local" > /dev/null 2>&1
t1=$(date +%s.%N)
echo "the same pipeline run locally: $(echo "$t1 - $t0" | bc) s"
rm -rf "$work"
