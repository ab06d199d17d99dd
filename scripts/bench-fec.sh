#!/usr/bin/env bash
# Stream mode vs datagram-fec mode on an emulated long-delay link (issue 6):
# one `llmpack bench` run per loss rate, each comparing the tunnel's link
# modes on the same link in the same run: stream (QUIC streams, CUBIC),
# stream-bbr (QUIC streams, BBR) and datagram-fec (RaptorQ over QUIC
# datagrams, BBR). zstd frames, real text responses (.cache/samples).
#
# Settings (environment): RATE (default 1mbit), RTT (600ms), LOSSES
# ("0 1 5 10", percent per datagram and direction), WORKLOAD (prose),
# DURATION (30s), CLIENTS (4), OUT (target/bench-fec: JSON and SVG per loss).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup.sh
. scripts/env.sh
cargo build --release -p llmpack --quiet
LLMPACK="${CARGO_TARGET_DIR:-$REPO/target}/release/llmpack"
OUT="${OUT:-${CARGO_TARGET_DIR:-$REPO/target}/bench-fec}"
mkdir -p "$OUT"
for loss in ${LOSSES:-0 1 5 10}; do
  echo "== ${RATE:-1mbit}, RTT ${RTT:-600ms}, loss ${loss}%"
  "$LLMPACK" bench --rate "${RATE:-1mbit}" --rtt "${RTT:-600ms}" --loss "${loss}%" \
    --modes zstd --link-mode stream,stream-bbr,datagram-fec \
    --workload "${WORKLOAD:-prose}" --duration "${DURATION:-30s}" --clients "${CLIENTS:-4}" \
    --json "$OUT/loss-$loss.json" --plot "$OUT/loss-$loss.svg" 2>/dev/null \
    | grep -v '^note:'
done
echo "JSON and plots: $OUT"
