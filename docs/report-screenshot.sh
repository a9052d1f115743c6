#!/usr/bin/env bash
# Re-takes docs/report.png: the report of the default pipeline, as headless Chromium draws it.
# Run the default pipeline first (`cargo run --release -- run`); this does not run anything.
set -euo pipefail
cd "$(dirname "$0")/.."
page=$(target/release/hone report)
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1280,"${HEIGHT:-3000}" \
  --screenshot="$PWD/docs/report.png" "file://$page" 2>/dev/null
echo "docs/report.png from $page"
