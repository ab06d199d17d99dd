#!/bin/sh
# A model on the development set (training/devset, fetch_devset.sh): `llmpack eval`, one lane per
# file (--lanes 1: each 48 KiB file is coded as one stream from an empty context), all files coded
# together (their steps batched), 1 thread, niced; the model's bits/byte (the whole pack file) next
# to zstd -19, xz -9e and brotli -11 of the same run, round trips checked.  Then a table per file
# and per class (devset_table.py).
#
#   sh training/devset_eval.sh [MODEL_DIR [OUT.json]]      # default models/default, .cache/devset-eval/NAME.json
#   LLMPACK=/path/to/llmpack CODEC=auto THREADS=2 sh training/devset_eval.sh ...
set -eu
MODEL=${1:-models/default}
NAME=$(basename "$MODEL")
OUT=${2:-.cache/devset-eval/$NAME.json}
BIN=${LLMPACK:-target/release/llmpack}
PY=${PY:-python3}
[ -f training/devset/SOURCES.txt ] && [ -f training/devset/urls-devpackages.txt ] || sh training/fetch_devset.sh
mkdir -p "$(dirname "$OUT")"
start=$(date +%s)
nice -n 19 "$BIN" eval --model "$MODEL" --threads "${THREADS:-1}" --together --lanes 1 --codec "${CODEC:-lm}" \
    --json training/devset/*-* > "$OUT"
echo "$NAME: $(( $(date +%s) - start )) s wall -> $OUT"
"$PY" training/devset_table.py "$OUT"
