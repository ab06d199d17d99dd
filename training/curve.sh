#!/bin/sh
# The trade-off curve's measurements for model folders (bits/byte on the held-out set, single-stream and
# batched speed), one model after another so they do not share the CPU.  From the repository root, after
# `sh training/fetch_heldout.sh` and `cargo build --release -p llmpack`:
#
#   sh training/curve.sh models/default .cache/gpu/mid/model ...
#
# The window is the model's trained context (manifest context_length), keeping a quarter of it.
# LLMPACK (default target/release/llmpack) and THREADS (ORT intra-op threads, default 1) override.
set -eu
LLMPACK=${LLMPACK:-${CARGO_TARGET_DIR:-target}/release/llmpack}
THREADS=${THREADS:-1}
H=training/heldout
for m in "$@"; do
    ctx=$(sed -n 's/^context_length = //p' "$m/manifest.toml")
    set -- --model "$m" --threads "$THREADS" --window "$ctx" --keep $((ctx / 4))
    echo "== $m (window $ctx)"
    echo "-- all 8 held-out files together, one lane each (bits/byte; batched speed)"
    "$LLMPACK" eval --together "$@" --lanes 1 "$H"/*-*
    echo "-- single stream: prose, lm frames only"
    "$LLMPACK" eval --codec lm "$@" --lanes 1 "$H/prose-mpl2.txt"
    echo "-- batched: prose + Python + HTML together, 4 lanes each (12 lanes), lm frames only"
    "$LLMPACK" eval --together --codec lm "$@" --lanes 4 --min-lane 2KiB "$H/prose-mpl2.txt" "$H/code-json-decoder.py" "$H/page-rustdoc.html"
done
