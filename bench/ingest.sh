#!/usr/bin/env bash
# Ingest + filter throughput and peak memory on generated corpora; results go in
# docs/benchmarks.md ("Data ingest").
#
#   bench/ingest.sh [SIZE_MB ...]        default: 200 1000
#   CHAINS="none quality all" DIR=/tmp/hone-bench bench/ingest.sh 50
#
# Corpora are generated once into $DIR (deterministic, not committed) and reused. Each run
# ingests one corpus with one filter chain (none | quality | all | a,comma,list of built-ins)
# in a fresh workspace, under /usr/bin/time for CPU time and peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${DIR:-/tmp/hone-bench}
CHAINS=${CHAINS:-none quality all}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(200 1000)
mkdir -p "$DIR"

exe=$(cargo build --release --workspace --bench ingest --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
[ -x "$exe" ] || { echo "could not build the ingest bench" >&2; exit 1; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
echo
echo "| input | chain | wall s | MB/s | CPU s | MB per CPU-s | peak heap MiB | peak RSS MiB | records | kept | load |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for mb in "${SIZES[@]}"; do
  corpus="$DIR/corpus-${mb}mb.jsonl"
  [ -s "$corpus" ] || "$exe" gen "$corpus" "$mb" >/dev/null
  for chain in $CHAINS; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    out=$(/usr/bin/time -f 'TIME %e %U %S %M' "$exe" run "$corpus" "$chain" 2>&1)
    json=$(grep '^{' <<<"$out")
    read -r _ wall user sys rss_kb < <(grep '^TIME' <<<"$out")
    field() { grep -o "\"$1\":[^,}]*" <<<"$json" | cut -d: -f2; }
    awk -v mb="$(field input_mb)" -v chain="$chain" -v wall="$wall" -v user="$user" -v sys="$sys" \
        -v heap="$(field peak_anon_mib)" -v rss="$rss_kb" -v records="$(field records)" \
        -v kept="$(( $(field train) + $(field val) ))" -v load="$load" 'BEGIN {
      cpu = user + sys
      printf "| %.0f MB | %s | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f | %d | %d | %s |\n",
        mb, chain, wall, mb / wall, cpu, mb / cpu, heap, rss / 1024, records, kept, load }'
  done
done
