#!/usr/bin/env bash
# Kernel-path benchmark (root only): the two sites in two network namespaces
# joined by a veth pair whose both ends are shaped by `tc tbf` (this kernel has
# no netem, so the link has a rate and a drop-tail queue, no added delay or
# loss: use `llmpack bench` for those). Real processes at both ends:
#
#   ns llmpack-a: curl clients -> llmpack sender (127.0.0.1:900x)
#        | veth va 10.77.0.1  ==tbf RATE==  veth vb 10.77.0.2 |
#   ns llmpack-b: llmpack receiver (10.77.0.2:4433) -> nginx (127.0.0.1:8081)
#   direct: curl in a -> nginx in b at 10.77.0.2:8080, same veth, same tbf
#
# Every download is checked against the served file's SHA-256. Link bytes
# are the veth's own counters (whole frames: IP, UDP/TCP and QUIC headers
# included).
#
#   sudo scripts/bench-netns.sh                  # RATE=1mbit DURATION=20 CLIENTS=4
#   RATE=64kbit MODES="direct zstd auto" sudo -E scripts/bench-netns.sh
#
# Env: RATE (tc syntax, default 1mbit), QUEUE (tbf queue limit in bytes;
# default as the user-space emulator: 100 ms of the rate, at least 64 KiB), DURATION (s per mode, 20), CLIENTS (4), MODES
# ("direct raw zstd auto"; lm works too but the model is slow on a CPU),
# FILES (files to serve, default the evaluation samples + 64 KiB random),
# LLMPACK (binary, default $CARGO_TARGET_DIR or target, /release/llmpack).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RATE="${RATE:-1mbit}"
DURATION="${DURATION:-20}"
CLIENTS="${CLIENTS:-4}"
MODES="${MODES:-direct raw zstd auto}"
LLMPACK="${LLMPACK:-${CARGO_TARGET_DIR:-$REPO/target}/release/llmpack}"
A=llmpack-a
B=llmpack-b

die() { echo "bench-netns.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, tc)"
for t in ip tc curl sha256sum timeout; do command -v "$t" >/dev/null || die "$t not found"; done
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || die "nginx not found (apt-get install nginx-light)"
[ -x "$LLMPACK" ] || die "$LLMPACK not built (cargo build --release -p llmpack)"

WORK="$(mktemp -d /tmp/llmpack-netns.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns del "$A" 2>/dev/null || true
ip netns del "$B" 2>/dev/null || true

# --- the link -------------------------------------------------------------------
ip netns add "$A"
ip netns add "$B"
ip link add va netns "$A" type veth peer name vb netns "$B"
ip -n "$A" addr add 10.77.0.1/24 dev va
ip -n "$B" addr add 10.77.0.2/24 dev vb
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set va up
ip -n "$B" link set vb up
# Segmentation offloads off where ethtool exists, so tbf shapes wire-sized
# packets (tbf also splits GSO packets itself when it must).
if command -v ethtool >/dev/null; then
  ip netns exec "$A" ethtool -K va tso off gso off gro off >/dev/null 2>&1 || true
  ip netns exec "$B" ethtool -K vb tso off gso off gro off >/dev/null 2>&1 || true
fi
# Bucket: 10 ms of the rate, at least 2 full-size packets.
RATE_BPS="$(python3 -c "
import re,sys
m=re.fullmatch(r'([0-9.]+)([kmg]?)(bit|bps)', '$RATE'.lower()) or sys.exit('bad RATE $RATE')
v=float(m[1])*{'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]]*(8 if m[3]=='bps' else 1)
print(int(v))")"
BURST=$(( RATE_BPS / 8 / 100 > 3028 ? RATE_BPS / 8 / 100 : 3028 ))
QUEUE="${QUEUE:-$(( RATE_BPS / 80 > 65536 ? RATE_BPS / 80 : 65536 ))}"
for pair in "$A va" "$B vb"; do
  set -- $pair
  tc -n "$1" qdisc add dev "$2" root tbf rate "$RATE" burst "$BURST" limit "$QUEUE"
done

# --- the files -------------------------------------------------------------------
WWW="$WORK/www"
mkdir -p "$WWW"
if [ -n "${FILES:-}" ]; then
  for f in $FILES; do cp "$f" "$WWW/"; done
else
  S="$REPO/.cache/samples"
  [ -f "$S/prose.txt" ] || "$REPO/scripts/fetch-samples.sh"
  cp "$S/prose.txt" "$S/code.py" "$S/page.html" "$S/data.json" "$WWW/"
  python3 -c "import random,sys; sys.stdout.buffer.write(random.Random(7).randbytes(64*1024))" > "$WWW/random.bin"
fi
(cd "$WWW" && sha256sum -- * > "$WORK/sums")
NAMES=($(cd "$WWW" && ls))

# nginx in b: 0.0.0.0:8080 for direct runs, 127.0.0.1:8081 behind the receiver.
"$REPO/scripts/nginx-conf.sh" "$WORK/nginx" "$WWW" 10.77.0.2:8080 127.0.0.1:8081 > "$WORK/nginx.conf"
ip netns exec "$B" "$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" \
  </dev/null >/dev/null 2>"$WORK/nginx/stderr.log" &
PIDS+=($!)

# --- the tunnel: one receiver, one sender, a tunnel per codec --------------------
"$LLMPACK" keygen --out "$WORK/keys" >/dev/null
tunnels_r="" tunnels_s="" port=9000
for m in $MODES; do
  [ "$m" = direct ] && continue
  tunnels_r+=$'\n'"[[tunnel]]"$'\n'"name = \"$m\""$'\n'"target = \"127.0.0.1:8081\""$'\n'"codec = \"$m\""$'\n'
  tunnels_s+=$'\n'"[[tunnel]]"$'\n'"name = \"$m\""$'\n'"listen = \"127.0.0.1:$port\""$'\n'"codec = \"$m\""$'\n'
  eval "PORT_$m=$port"
  port=$((port + 1))
done
if [ -n "$tunnels_r" ]; then
  cat > "$WORK/receiver.toml" <<EOF
role = "receiver"
[link]
listen = "10.77.0.2:4433"
certificate = "keys/receiver.crt"
key = "keys/receiver.key"
peer_certificate = "keys/sender.crt"
[metrics]
listen = "127.0.0.1:9465"
$tunnels_r
EOF
  cat > "$WORK/sender.toml" <<EOF
role = "sender"
[link]
connect = "10.77.0.2:4433"
certificate = "keys/sender.crt"
key = "keys/sender.key"
peer_certificate = "keys/receiver.crt"
reconnect_min = "100ms"
[metrics]
listen = "127.0.0.1:9464"
$tunnels_s
EOF
  ip netns exec "$B" "$LLMPACK" receiver --config "$WORK/receiver.toml" 2>"$WORK/receiver.log" &
  PIDS+=($!)
  sleep 0.5
  ip netns exec "$A" "$LLMPACK" sender --config "$WORK/sender.toml" 2>"$WORK/sender.log" &
  PIDS+=($!)
fi
# Wait until nginx (and the tunnel, when there is one) answer.
for i in $(seq 1 100); do
  ok=1
  ip netns exec "$A" curl -s -o /dev/null -r 0-0 --max-time 5 "http://10.77.0.2:8080/${NAMES[0]}" || ok=0
  for m in $MODES; do
    [ "$m" = direct ] && continue
    p="PORT_$m"
    ip netns exec "$A" curl -s -o /dev/null -r 0-0 --max-time 5 "http://127.0.0.1:${!p}/${NAMES[0]}" || ok=0
  done
  [ "$ok" = 1 ] && break
  [ "$i" = 100 ] && die "the servers or the tunnel did not come up; logs in $WORK (kept)"
  sleep 0.2
done

link_bytes() {  # both directions of the veth, as counted in namespace a
  local s=/sys/class/net/va/statistics
  ip netns exec "$A" sh -c "echo \$((\$(cat $s/tx_bytes) + \$(cat $s/rx_bytes)))"
}

# One client: fetches the files in turn (a new connection each) until the
# deadline; appends "ok|bad size seconds" lines.
client() {  # client BASE_URL DEADLINE OUT BODY START
  local base="$1" deadline="$2" out="$3" body="$4" i="$5" name got
  while [ "$(date +%s%N)" -lt "$deadline" ]; do
    name="${NAMES[$((i % ${#NAMES[@]}))]}"
    i=$((i + 1))
    if got="$(ip netns exec "$A" curl -sS --max-time 120 -o "$body" \
          -w '%{size_download} %{time_total} %{size_request} %{size_header}' "$base/$name")" \
       && [ "$(sha256sum < "$body" | cut -d' ' -f1)" = "$(grep "  $name\$" "$WORK/sums" | cut -d' ' -f1)" ]; then
      echo "ok $got" >> "$out"
    else
      echo "bad 0 0 0 0" >> "$out"
    fi
  done
}

BAD=0
printf '%-7s %9s %6s %12s %14s %12s %7s %9s\n' mode fetches bad "body bytes" goodput "link bytes" ratio "p50 ms"
for m in $MODES; do
  if [ "$m" = direct ]; then base="http://10.77.0.2:8080"; else p="PORT_$m"; base="http://127.0.0.1:${!p}"; fi
  rm -f "$WORK"/res.* "$WORK"/body.*
  l0="$(link_bytes)"
  t0="$(date +%s%N)"
  deadline=$((t0 + DURATION * 1000000000))
  cpids=()
  for c in $(seq 1 "$CLIENTS"); do client "$base" "$deadline" "$WORK/res.$c" "$WORK/body.$c" "$c" & cpids+=($!); done
  wait "${cpids[@]}"
  t1="$(date +%s%N)"
  l1="$(link_bytes)"
  p50="$(cat "$WORK"/res.* | awk '$1 == "ok" { print $3 * 1000 }' | sort -n \
        | awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : 0 }')"
  bad="$(cat "$WORK"/res.* | awk '$1 != "ok" { n++ } END { print n + 0 }')"
  good="$(cat "$WORK"/res.* | awk '$1 == "ok" { n++ } END { print n + 0 }')"
  [ "$bad" = 0 ] && [ "$good" -gt 0 ] || BAD=1
  cat "$WORK"/res.* | awk -v m="$m" -v secs="$(( (t1 - t0) / 1000000 ))" -v link="$((l1 - l0))" -v p50="$p50" '
    { n++ } $1 != "ok" { bad++; next }
    { body += $2; app += $2 + $4 + $5 }
    END {
      gp = body * 8 / (secs / 1000)
      unit = gp >= 1e6 ? sprintf("%.2f Mbit/s", gp / 1e6) : sprintf("%.1f kbit/s", gp / 1e3)
      printf "%-7s %9d %6d %12d %14s %12d %7.2f %9.0f\n", m, n, bad, body, unit, link, link ? app / link : 0, p50
    }'
done
echo "link: veth + tbf rate $RATE, queue $QUEUE bytes, no added delay; $CLIENTS clients x ${DURATION}s per mode;"
echo "files: ${NAMES[*]} (one curl and one TCP connection per fetch, each checked by SHA-256);"
echo "ratio = application bytes (bodies + HTTP headers) / link bytes (veth frames, both ways)"
if [ "$BAD" != 0 ]; then
  echo "bench-netns.sh: some downloads failed or differed from the served files (or a mode fetched nothing)" >&2
  exit 1
fi
