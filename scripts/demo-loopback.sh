#!/usr/bin/env bash
# The quick tunnel demo, on plain loopback (scripts/demo.sh is the main job:
# the same over an emulated 64 kbit/s satellite link). Installs what it needs
# (ONNX Runtime, sample files from Debian packages; all cached; the default
# model ships in models/default), builds llmpack, then on this machine:
#   1. makes a certificate pair (config/keys, once);
#   2. starts a real web server (python3 -m http.server) on 127.0.0.1:8081
#      serving real files the project did not write;
#   3. starts `llmpack receiver` and `llmpack sender` from the example configs
#      in config/ (link on 127.0.0.1:4433, tunnel `web` on 127.0.0.1:8080);
#   4. fetches every file through the tunnel with curl, checks each SHA-256;
#   5. prints what crossed the link per codec, from both ends' /metrics.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup.sh
. scripts/env.sh
command -v curl >/dev/null || { echo "the demo needs curl (apt-get install curl)" >&2; exit 1; }
echo "== building llmpack (release)"
cargo build --release -p llmpack --quiet
LLMPACK="${CARGO_TARGET_DIR:-$REPO/target}/release/llmpack"
S="$REPO/.cache/samples"
D="$REPO/.cache/demo-tunnel"
rm -rf "$D"; mkdir -p "$D/www" "$D/got"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "== 1. certificates"
if [ ! -f config/keys/sender.crt ] || [ ! -f config/keys/receiver.crt ]; then
  rm -f config/keys/sender.* config/keys/receiver.*
  "$LLMPACK" keygen --out config/keys
else
  echo "config/keys has them"
fi
"$LLMPACK" check-config config/receiver.example.toml >/dev/null
"$LLMPACK" check-config config/sender.example.toml >/dev/null

echo "== 2. web server on 127.0.0.1:8081 with real files"
cp "$S"/prose.txt "$S"/code.py "$S"/page.html "$S"/data.json "$S"/mixed-1MiB.bin "$D/www/"
for f in prose.txt code.py page.html data.json; do
  head -c 1200 "$S/$f" > "$D/www/small-$f"      # interactive-sized responses
done
python3 -m http.server 8081 --bind 127.0.0.1 --directory "$D/www" > "$D/web.log" 2>&1 &
PIDS+=($!)

echo "== 3. receiver and sender from config/*.example.toml"
"$LLMPACK" receiver --config config/receiver.example.toml > "$D/receiver.log" 2>&1 &
PIDS+=($!)
"$LLMPACK" sender --config config/sender.example.toml > "$D/sender.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do
  grep -q "link up" "$D/sender.log" 2>/dev/null && break
  sleep 0.5
done
grep -q "link up" "$D/sender.log" || { echo "the link did not come up; logs in $D" >&2; tail -5 "$D"/*.log >&2; exit 1; }
echo "link up (logs: $D/sender.log, $D/receiver.log)"

echo "== 4. fetch through the tunnel (curl -> 127.0.0.1:8080 -> QUIC -> 127.0.0.1:8081)"
START=$(date +%s.%N)
TOTAL=0
for f in $(ls "$D/www"); do
  curl -sS --fail -o "$D/got/$f" "http://127.0.0.1:8080/$f"
  a=$(sha256sum < "$D/www/$f" | cut -c1-64); b=$(sha256sum < "$D/got/$f" | cut -c1-64)
  n=$(stat -c %s "$D/www/$f"); TOTAL=$((TOTAL + n))
  if [ "$a" = "$b" ]; then
    printf '  %-22s %8d bytes  sha256 %s  identical\n' "$f" "$n" "${a:0:16}"
  else
    echo "  $f DIFFERS: $a vs $b" >&2; exit 1
  fi
done
END=$(date +%s.%N)

echo "== 5. what crossed the link"
curl -sS http://127.0.0.1:9465/metrics > "$D/receiver.metrics"
curl -sS http://127.0.0.1:9464/metrics > "$D/sender.metrics"
python3 - "$D" "$TOTAL" "$START" "$END" <<'PY'
import re, sys
d, total, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rows = {}
for role in ("sender", "receiver"):
    for line in open(f"{d}/{role}.metrics"):
        m = re.match(r'(llmpack_frame(?:s|_bytes_in|_bytes_out)_total)\{(.*)\} (\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if labels.get("role") != role or labels.get("direction") != "out":
            continue
        key = (role, labels["tunnel"], labels["codec"])
        rows.setdefault(key, {})[m.group(1)] = float(m.group(3))
print(f"{'sent by':9} {'tunnel':7} {'codec':5} {'frames':>7} {'bytes in':>10} {'on link':>10} {'ratio':>7}")
tin = tout = 0
for (role, tunnel, codec), v in sorted(rows.items()):
    fi, bi, bo = v.get("llmpack_frames_total", 0), v.get("llmpack_frame_bytes_in_total", 0), v.get("llmpack_frame_bytes_out_total", 0)
    if fi == 0:
        continue
    tin += bi; tout += bo
    print(f"{role:9} {tunnel:7} {codec:5} {fi:7.0f} {bi:10.0f} {bo:10.0f} {bi / max(bo, 1):6.2f}x")
print(f"{'all':23} {'':>7} {tin:10.0f} {tout:10.0f} {tin / max(tout, 1):6.2f}x")
secs = t1 - t0
print(f"fetched {total} bytes in {secs:.1f} s: {total / secs / 1e3:.0f} kB/s application throughput on loopback")
PY
echo "(on a fast link the model-free codecs carry bulk data: the model codes a frame only when it can finish within model.max_delay; see README)"
