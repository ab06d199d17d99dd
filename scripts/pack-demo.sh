#!/usr/bin/env bash
# The file codec demo (README): installs what it needs (ONNX Runtime, sample
# files from Debian packages; all cached), builds llmpack, then, with the
# default model (models/default, in the repository)
#   1. packs a mix of real text and random bytes with the language model,
#      unpacks it and compares it byte for byte with the original;
#   2. measures bits per byte against zstd -19, xz -9e and brotli -11 on a
#      slice of each sample, with byte-exact round trips.
# Takes about a minute on 2 cores after the build: the model decodes 1-2 KB/s.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup.sh
. scripts/env.sh
echo "== building llmpack (release)"
cargo build --release -p llmpack --quiet
LLMPACK="${CARGO_TARGET_DIR:-$REPO/target}/release/llmpack"
S="$REPO/.cache/samples"
D="$REPO/.cache/demo"
mkdir -p "$D"

echo "== 1. pack -> unpack -> compare"
: > "$D/mix.bin"
for f in prose.txt code.py page.html data.json; do
  head -c 2048 "$S/$f" >> "$D/mix.bin"
done
dd if="$S/mixed-1MiB.bin" bs=65536 skip=1 count=1 status=none | head -c 2048 >> "$D/mix.bin"  # random bytes
"$LLMPACK" pack --min-lane 1KiB "$D/mix.bin" -o "$D/mix.lmp"
"$LLMPACK" unpack "$D/mix.lmp" -o "$D/mix.out"
if cmp -s "$D/mix.bin" "$D/mix.out"; then
  echo "byte-exact: $(sha256sum < "$D/mix.bin" | cut -c1-16) == $(sha256sum < "$D/mix.out" | cut -c1-16)"
else
  echo "ROUND TRIP DIFFERS" >&2
  exit 1
fi
echo "original $(stat -c %s "$D/mix.bin") bytes, packed $(stat -c %s "$D/mix.lmp") bytes (the 2 KiB of random bytes cost 2 KiB plus frame headers)"

echo "== 2. bits per byte, 4 KiB of each sample (all coded in one batch)"
for f in prose.txt code.py page.html data.json; do
  head -c 4096 "$S/$f" > "$D/$f"
done
"$LLMPACK" eval --together --lanes 4 --min-lane 1KiB "$D/prose.txt" "$D/code.py" "$D/page.html" "$D/data.json"
echo "(full 64 KiB samples: see README, 'Results')"
