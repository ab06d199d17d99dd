#!/usr/bin/env bash
# The project's main job (README): the tunnel over an emulated satellite link
# (64 kbit/s, 600 ms round trip), against plain TCP over the same link.
# Installs what it needs (ONNX Runtime, sample files from Debian packages; all
# cached; the default model ships in models/default), builds llmpack, then on
# this machine:
#   1. makes a certificate pair (config/keys, once);
#   2. starts a real web server (python3 -m http.server) on 127.0.0.1:8081
#      serving real files the project did not write;
#   3. starts two link emulators (`llmpack emulate`, 64 kbit/s each way,
#      600 ms RTT): a TCP one on 127.0.0.1:8082 in front of the web server,
#      and a UDP one on 127.0.0.1:4434 in front of the receiver's link port;
#   4. starts `llmpack receiver` (config/receiver.example.toml) and
#      `llmpack sender` (config/sender.example.toml, dialling the emulator);
#   5. fetches every file with curl twice: plain TCP through the TCP emulator,
#      then through the tunnel (127.0.0.1:8080); checks every SHA-256;
#   6. prints both times, and what crossed the link per codec (the model's
#      `lm` frames among them) from both ends' /metrics.
# The quick loopback version is scripts/demo-loopback.sh.
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
D="$REPO/.cache/demo-link"
RATE="${DEMO_RATE:-64kbit}"
RTT="${DEMO_RTT:-600ms}"
rm -rf "$D"; mkdir -p "$D/www" "$D/plain" "$D/tunnel"

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
# The sender dials the emulator instead of the receiver; the rest is the example.
sed -e 's#^connect = .*#connect = "127.0.0.1:4434"#' \
    -e "s#\"keys/#\"$REPO/config/keys/#" config/sender.example.toml > "$D/sender.toml"
"$LLMPACK" check-config config/receiver.example.toml >/dev/null
"$LLMPACK" check-config "$D/sender.toml" >/dev/null

echo "== 2. web server on 127.0.0.1:8081 with real files"
cp "$S"/prose.txt "$S"/code.py "$S"/page.html "$S"/data.json "$D/www/"
python3 -m http.server 8081 --bind 127.0.0.1 --directory "$D/www" > "$D/web.log" 2>&1 &
PIDS+=($!)

echo "== 3. link emulators: $RATE each way, $RTT round trip"
"$LLMPACK" emulate --tcp --listen 127.0.0.1:8082 --to 127.0.0.1:8081 --rate "$RATE" --rtt "$RTT" \
  --report 0s > "$D/emulate-tcp.log" 2>&1 &
PIDS+=($!)
"$LLMPACK" emulate --listen 127.0.0.1:4434 --to 127.0.0.1:4433 --rate "$RATE" --rtt "$RTT" \
  --report 0s > "$D/emulate-udp.log" 2>&1 &
PIDS+=($!)
head -3 "$D/emulate-udp.log" 2>/dev/null | sed -n 2,3p || true

echo "== 4. receiver and sender"
"$LLMPACK" receiver --config config/receiver.example.toml > "$D/receiver.log" 2>&1 &
PIDS+=($!)
"$LLMPACK" sender --config "$D/sender.toml" > "$D/sender.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do
  grep -q "link up" "$D/sender.log" 2>/dev/null && break
  sleep 0.5
done
grep -q "link up" "$D/sender.log" || { echo "the link did not come up; logs in $D" >&2; tail -5 "$D"/*.log >&2; exit 1; }
echo "link up through the emulator (logs: $D/*.log)"

# fetch NAME PORT DIR: every file, one curl each, checked; prints seconds.
fetch() {
  local name="$1" port="$2" dir="$3" t0 t1
  t0=$(date +%s.%N)
  for f in $(ls "$D/www"); do
    curl -sS --fail --max-time 300 -o "$D/$dir/$f" "http://127.0.0.1:$port/$f"
  done
  t1=$(date +%s.%N)
  for f in $(ls "$D/www"); do
    a=$(sha256sum < "$D/www/$f" | cut -c1-64); b=$(sha256sum < "$D/$dir/$f" | cut -c1-64)
    if [ "$a" != "$b" ]; then echo "  $name: $f DIFFERS: $a vs $b" >&2; exit 1; fi
  done
  python3 -c "print(f'{$t1 - $t0:.1f}')"
}
TOTAL=$(cat "$D"/www/* | wc -c)
echo "== 5. fetching $(ls "$D/www" | wc -l) files ($TOTAL bytes) twice, every SHA-256 checked"
echo "   plain TCP through the emulated link ..."
PLAIN=$(fetch "plain TCP" 8082 plain)
echo "   plain TCP: $PLAIN s, every file identical"
echo "   through the tunnel ..."
TUNNEL=$(fetch tunnel 8080 tunnel)
echo "   tunnel:    $TUNNEL s, every file identical"

echo "== 6. what crossed the link"
curl -sS http://127.0.0.1:9465/metrics > "$D/receiver.metrics"
curl -sS http://127.0.0.1:9464/metrics > "$D/sender.metrics"
python3 - "$D" "$TOTAL" "$PLAIN" "$TUNNEL" <<'PY'
import re, sys
d, total, plain, tunnel = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rows, model = {}, {}
for role in ("sender", "receiver"):
    for line in open(f"{d}/{role}.metrics"):
        m = re.match(r'(llmpack_\w+)\{(.*)\} (\S+)', line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2))), float(m.group(3))
        if labels.get("role") != role:
            continue
        if name in ("llmpack_model_coded_bytes_total", "llmpack_model_saved_bytes_total"):
            model[(role, labels["tunnel"], name)] = value
        if name in ("llmpack_frames_total", "llmpack_frame_bytes_in_total", "llmpack_frame_bytes_out_total") \
                and labels.get("direction") == "out":
            rows.setdefault((role, labels["tunnel"], labels["codec"]), {})[name] = value
print(f"{'sent by':9} {'tunnel':7} {'codec':5} {'frames':>7} {'bytes in':>10} {'on link':>10} {'ratio':>7}")
tin = tout = lm_frames = 0
for (role, tun, codec), v in sorted(rows.items()):
    fi, bi, bo = v.get("llmpack_frames_total", 0), v.get("llmpack_frame_bytes_in_total", 0), v.get("llmpack_frame_bytes_out_total", 0)
    if fi == 0:
        continue
    tin += bi; tout += bo
    if codec == "lm":
        lm_frames += fi
    print(f"{role:9} {tun:7} {codec:5} {fi:7.0f} {bi:10.0f} {bo:10.0f} {bi / max(bo, 1):6.2f}x")
print(f"{'all':23} {'':>7} {tin:10.0f} {tout:10.0f} {tin / max(tout, 1):6.2f}x")
coded = sum(v for (r, t, n), v in model.items() if n.endswith("coded_bytes_total"))
saved = sum(v for (r, t, n), v in model.items() if n.endswith("saved_bytes_total"))
print(f"the model coded {coded:.0f} of {tin:.0f} bytes ({100 * coded / max(tin, 1):.1f} %) in {lm_frames:.0f} lm frames, "
      f"saving ~{saved:.0f} link bytes against zstd on the same connections")
print(f"plain TCP {plain:.1f} s, tunnel {tunnel:.1f} s: {plain / max(tunnel, 1e-9):.2f}x faster "
      f"({total / plain / 1e3:.1f} vs {total / tunnel / 1e3:.1f} kB/s of files over the same emulated link)")
PY
echo "(the model codes what it can finish while the link is busy anyway; the rest goes zstd. How auto decides: config/README.md)"
