#!/usr/bin/env bash
# A real interactive program through the tunnel: Debian's redis-server behind
# a receiver, redis-benchmark in front of a sender (separate processes, stream
# mode, default [limits]), against redis-benchmark straight to the server and
# through a socat relay, in the same run. Then a random 48 KiB value is
# written through the tunnel and read back on all three paths: one SHA-256
# expected.
#
#   scripts/bench-redis.sh                 # CODECS="raw zstd auto", N=5000
#   C32=1 scripts/bench-redis.sh           # also 32 concurrent clients
#
# Needs redis-server, redis-tools and socat (apt-get install redis-server
# redis-tools socat). Prints redis-benchmark's CSV GET lines: requests/s,
# then avg, min, p50, p95, p99, max latency in ms.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
. scripts/env.sh
cargo build --release -p llmpack --quiet
B="${CARGO_TARGET_DIR:-$REPO/target}/release/llmpack"
for t in redis-server redis-benchmark redis-cli socat; do
  command -v "$t" >/dev/null || { echo "needs $t (apt-get install redis-server redis-tools socat)" >&2; exit 1; }
done
W="$(mktemp -d)"
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
"$B" keygen --out "$W/keys" >/dev/null
redis-server --port 6390 --save '' --appendonly no > "$W/redis.log" 2>&1 & PIDS+=($!)
socat TCP-LISTEN:16391,fork,reuseaddr,nodelay TCP:127.0.0.1:6390,nodelay & PIDS+=($!)
sleep 0.5
bench() { redis-benchmark -p "$1" -t set,get -n "$2" -c "$3" -d 1000 --csv 2>&1 | grep '^"GET"'; }
N=${N:-5000}
for codec in ${CODECS:-raw zstd auto}; do
  for role in receiver sender; do
    {
      echo "role = \"$role\""
      echo "[model]"
      echo "dir = \"$REPO/models/default\""
      echo "[link]"
      if [ "$role" = receiver ]; then echo 'listen = "127.0.0.1:4490"'; else echo 'connect = "127.0.0.1:4490"'; fi
      echo "certificate = \"$W/keys/$role.crt\""
      echo "key = \"$W/keys/$role.key\""
      other=sender; [ "$role" = sender ] && other=receiver
      echo "peer_certificate = \"$W/keys/$other.crt\""
      echo "[[tunnel]]"
      echo 'name = "kv"'
      if [ "$role" = receiver ]; then echo 'target = "127.0.0.1:6390"'; else echo 'listen = "127.0.0.1:16390"'; fi
      echo "codec = \"$codec\""
    } > "$W/$role.toml"
  done
  "$B" receiver --config "$W/receiver.toml" > "$W/receiver.log" 2>&1 & RP=$!
  sleep 0.5
  "$B" sender --config "$W/sender.toml" > "$W/sender.log" 2>&1 & SP=$!
  PIDS+=("$RP" "$SP")
  for _ in $(seq 100); do redis-cli -p 16390 PING >/dev/null 2>&1 && break; sleep 0.1; done
  kill -0 "$RP" "$SP" || { echo "a proxy did not start (ports 4490, 16390 in use?):" >&2; for f in "$W"/*.log; do tail -n 3 "$f"; done >&2; exit 1; }
  echo "== codec $codec, 1 client"
  echo "direct: $(bench 6390 "$N" 1)"
  echo "socat:  $(bench 16391 "$N" 1)"
  echo "tunnel: $(bench 16390 "$N" 1)"
  if [ -n "${C32:-}" ]; then
    echo "== codec $codec, 32 clients"
    echo "direct: $(bench 6390 $((N * 10)) 32)"
    echo "socat:  $(bench 16391 $((N * 10)) 32)"
    echo "tunnel: $(bench 16390 $((N * 10)) 32)"
  fi
  head -c 36864 /dev/urandom | base64 -w0 > "$W/val.txt"
  redis-cli -p 16390 -x SET checkkey < "$W/val.txt" >/dev/null
  want=$(sha256sum < "$W/val.txt" | cut -c1-64)
  for p in 6390 16390 16391; do
    got=$(redis-cli -p "$p" --raw GET checkkey | head -c -1 | sha256sum | cut -c1-64)
    [ "$got" = "$want" ] || { echo "MISMATCH on port $p" >&2; exit 1; }
  done
  echo "value check: 3 paths, SHA-256 ${want:0:16}... identical"
  kill "$SP" "$RP" 2>/dev/null || { echo "a proxy had exited:" >&2; for f in "$W"/*.log; do tail -n 3 "$f"; done >&2; }
  wait "$SP" "$RP" 2>/dev/null || true
done
