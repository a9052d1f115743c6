#!/usr/bin/env bash
# Datasets as they ship, side by side with the Python tools on one generated Parquet corpus;
# results go in docs/benchmarks.md ("Parquet ingest and tokenizer").
#
#   PY=/path/to/venv/bin/python bench/ingest_parquet.sh [MB]     # MB: the file's size, default 1024
#   SLICE_MB=30: datatrove's quality chain runs on a corpus of this size (the same generator's
#   first documents) instead: it goes at ~0.08 MB per CPU-s (spaCy word splitting), ~3.5 hours
#   for 1 GB. hone's quality chain runs on both, so its rate is compared on the same file.
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
SLICE_MB=${SLICE_MB:-30}
mkdir -p "$DIR"

exe=$(cargo build --release --workspace --bench ingest --message-format=json 2>/dev/null \
  | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
[ -x "$exe" ] || { echo "could not build the ingest bench" >&2; exit 1; }
cargo build --release --quiet
hone=$PWD/target/release/hone

corpus="$DIR/corpus-${MB}mb.parquet"
[ -s "$corpus" ] || "$exe" gen-parquet "$corpus" "$MB" >/dev/null
slice="$DIR/corpus-${SLICE_MB}mb.parquet"
[ -s "$slice" ] || "$exe" gen-parquet "$slice" "$SLICE_MB" >/dev/null
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f", b / 1048576 }'; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
echo "corpus: $corpus ($(mib "$corpus") MiB); slice: $slice ($(mib "$slice") MiB)"
echo
echo "| tool | chain | input MiB | wall s | CPU s | MB per CPU-s | kept | load |"
echo "|---|---|---|---|---|---|---|---|"
declare -A rate
row() { # tool chain file wall user sys kept load
  local cpu; cpu=$(echo "$5 + $6" | bc)
  rate[$1-$2-$3]=$(awk -v mb="$(mib "$3")" -v c="$cpu" 'BEGIN { printf "%.2f", mb / c }')
  printf '| %s | %s | %s | %.1f | %.1f | %s | %d | %s |\n' "$1" "$2" "$(mib "$3")" "$4" "$cpu" "${rate[$1-$2-$3]}" "$7" "$8"
}
hone_ingest() { # chain file
  local c=$1; [ "$c" = quality ] && c=gopher-quality,gopher-repetition,c4
  local load out json wall user sys
  load=$(cut -d' ' -f1 /proc/loadavg)
  out=$(/usr/bin/time -f 'TIME %e %U %S' "$exe" run "$2" "$c" 2>&1)
  json=$(grep '^{' <<<"$out")
  read -r _ wall user sys < <(grep '^TIME' <<<"$out")
  row hone "$1" "$2" "$wall" "$user" "$sys" \
    $(( $(grep -o '"train":[0-9]*' <<<"$json" | cut -d: -f2) + $(grep -o '"val":[0-9]*' <<<"$json" | cut -d: -f2) )) "$load"
}
datatrove_ingest() { # chain file
  local out_dir load out json wall user sys
  out_dir=$(mktemp -d "$DIR/datatrove.XXXX")
  load=$(cut -d' ' -f1 /proc/loadavg)
  out=$(/usr/bin/time -f 'TIME %e %U %S' "$PY" bench/ingest_datatrove.py "$2" "$1" "$out_dir" 2>&1)
  json=$(grep '^{' <<<"$out" | tail -1)
  read -r _ wall user sys < <(grep '^TIME' <<<"$out")
  row datatrove "$1" "$2" "$wall" "$user" "$sys" "$(grep -o '"kept": [0-9]*' <<<"$json" | cut -d' ' -f2)" "$load"
  rm -rf "$out_dir"
}
hone_ingest none "$corpus"
datatrove_ingest none "$corpus"
hone_ingest quality "$corpus"
hone_ingest quality "$slice"
datatrove_ingest quality "$slice"
echo
awk -v a="${rate[hone-none-$corpus]}" -v b="${rate[datatrove-none-$corpus]}" 'BEGIN { printf "hone / datatrove, no filters (%s MiB): %.1fx MB per CPU-s\n", "'"$(mib "$corpus")"'", a / b }'
awk -v a="${rate[hone-quality-$slice]}" -v b="${rate[datatrove-quality-$slice]}" 'BEGIN { printf "hone / datatrove, quality (%s MiB): %.1fx MB per CPU-s\n", "'"$(mib "$slice")"'", a / b }'

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
