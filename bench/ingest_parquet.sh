#!/usr/bin/env bash
# Datasets as they ship, side by side with the Python tools on one generated Parquet corpus;
# results go in docs/benchmarks.md ("Parquet ingest and tokenizer").
#
#   PY=/path/to/venv/bin/python bench/ingest_parquet.sh [MB]     # MB: the file's size, default 1024
#
# PY needs `datatrove[processing]`, `pyarrow` and `tokenizers`. Rows:
# - ingest: hone's `ingest` stage (in-process, as `hone run` runs it: stage-key hashing and the
#   store included) against datatrove's ParquetReader → filters → JsonlWriter in one task, with
#   no filters and with gopher-quality, gopher-repetition and c4 (datatrove's defaults, which
#   hone's built-ins copy). CPU seconds (user + sys) from /usr/bin/time; MB = MiB of Parquet.
# - tokenizer: hone's `tokenizer` stage (BPE, VOCAB tokens, on every document: val_fraction 0)
#   against Python `tokenizers` trained and encoding with the same settings: wall seconds of
#   training and of encoding, and the bytes per token each gets.
set -euo pipefail
cd "$(dirname "$0")/.."

MB=${1:-1024}
DIR=${DIR:-/tmp/hone-bench}
PY=${PY:-python3}
VOCAB=${VOCAB:-8192}
mkdir -p "$DIR"

exe=$(cargo build --release --workspace --bench ingest --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
[ -x "$exe" ] || { echo "could not build the ingest bench" >&2; exit 1; }
cargo build --release --quiet
hone=$PWD/target/release/hone

corpus="$DIR/corpus-${MB}mb.parquet"
[ -s "$corpus" ] || "$exe" gen-parquet "$corpus" "$MB" >/dev/null
size_mb=$(awk -v b="$(stat -c %s "$corpus")" 'BEGIN { printf "%.0f", b / 1048576 }')

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
echo "corpus: $corpus ($size_mb MiB)"
echo
echo "| ingest | chain | wall s | CPU s | MB per CPU-s | kept | load |"
echo "|---|---|---|---|---|---|---|"
declare -A rate
for chain in none quality; do
  hone_chain=$chain
  [ "$chain" = quality ] && hone_chain=gopher-quality,gopher-repetition,c4
  load=$(cut -d' ' -f1 /proc/loadavg)
  out=$(/usr/bin/time -f 'TIME %e %U %S' "$exe" run "$corpus" "$hone_chain" 2>&1)
  json=$(grep '^{' <<<"$out")
  read -r _ wall user sys < <(grep '^TIME' <<<"$out")
  kept=$(( $(grep -o '"train":[0-9]*' <<<"$json" | cut -d: -f2) + $(grep -o '"val":[0-9]*' <<<"$json" | cut -d: -f2) ))
  rate[hone-$chain]=$(awk -v mb="$size_mb" -v c="$(echo "$user + $sys" | bc)" 'BEGIN { printf "%.2f", mb / c }')
  printf '| hone | %s | %.1f | %.1f | %s | %d | %s |\n' "$chain" "$wall" "$(echo "$user + $sys" | bc)" "${rate[hone-$chain]}" "$kept" "$load"

  out_dir=$(mktemp -d "$DIR/datatrove.XXXX")
  load=$(cut -d' ' -f1 /proc/loadavg)
  out=$(/usr/bin/time -f 'TIME %e %U %S' "$PY" bench/ingest_datatrove.py "$corpus" "$chain" "$out_dir" 2>&1)
  json=$(grep '^{' <<<"$out" | tail -1)
  read -r _ wall user sys < <(grep '^TIME' <<<"$out")
  kept=$(grep -o '"kept": [0-9]*' <<<"$json" | cut -d' ' -f2)
  rate[dt-$chain]=$(awk -v mb="$size_mb" -v c="$(echo "$user + $sys" | bc)" 'BEGIN { printf "%.2f", mb / c }')
  printf '| datatrove | %s | %.1f | %.1f | %s | %d | %s |\n' "$chain" "$wall" "$(echo "$user + $sys" | bc)" "${rate[dt-$chain]}" "$kept" "$load"
  rm -rf "$out_dir"
done
echo
for chain in none quality; do
  awk -v a="${rate[hone-$chain]}" -v b="${rate[dt-$chain]}" -v c="$chain" 'BEGIN { printf "hone / datatrove, %s: %.2fx MB per CPU-s\n", c, a / b }'
done

# Tokenizer: hone's stage in a fresh workspace, then HF tokenizers.
ws=$(mktemp -d "$DIR/tok.XXXX")
cat > "$ws/pipeline.yaml" <<YAML
name: tok-bench
seed: 1
stages:
  corpus: { uses: ingest, with: { source: "$corpus", val_fraction: 0 } }
  tokenizer: { uses: tokenizer, inputs: { corpus: corpus }, with: { kind: bpe, vocab_size: $VOCAB } }
YAML
"$hone" run "$ws/pipeline.yaml" >/dev/null 2>&1
show=$("$hone" show tokenizer "$ws/pipeline.yaml" --json)
metric() { grep -o "\"$1\": [0-9.]*" <<<"$show" | head -1 | cut -d' ' -f2; }
h_train=$(metric train_seconds); h_encode=$(metric encode_seconds); h_bpt=$(metric bytes_per_token)
rm -rf "$ws"
load=$(cut -d' ' -f1 /proc/loadavg)
json=$("$PY" bench/tokenizer_hf.py "$corpus" "$VOCAB")
p_train=$(grep -o '"train_seconds": [0-9.]*' <<<"$json" | cut -d' ' -f2)
p_encode=$(grep -o '"encode_seconds": [0-9.]*' <<<"$json" | cut -d' ' -f2)
p_bpt=$(grep -o '"bytes_per_token": [0-9.]*' <<<"$json" | cut -d' ' -f2)
echo
echo "| tokenizer (BPE, $VOCAB) | train s | encode s | bytes per token |"
echo "|---|---|---|---|"
printf '| hone | %.1f | %.1f | %.3f |\n' "$h_train" "$h_encode" "$h_bpt"
printf '| HF tokenizers (Python) | %.1f | %.1f | %.3f |\n' "$p_train" "$p_encode" "$p_bpt"
awk -v a="$h_train" -v b="$p_train" -v c="$h_encode" -v d="$p_encode" -v e="$h_bpt" -v f="$p_bpt" -v l="$load" \
  'BEGIN { printf "hone / HF time: train %.2fx, encode %.2fx; compression %+.2f%% (load %s)\n", a / b, c / d, (e / f - 1) * 100, l }'
