#!/usr/bin/env bash
# Real interactive programs from Debian through the tunnel, each with its own
# benchmark client, against the same client straight to the server and
# through a socat relay (a minimal user-space TCP copy), in the same run. The
# sender and the receiver are separate `llmpack` processes on loopback
# (stream mode, default [limits]), one tunnel per program and codec.
#
#   redis   redis-server + redis-benchmark (-t set,get -d 1000): GET rate and
#           mean latency, 1 client and C clients
#   pgbench postgres + pgbench (TPC-B-like, 7 statements per transaction,
#           scale 2): mean transaction latency with 1 client, tps with C/2
#   http    nginx + wrk, one 150 KiB body (the HTML, prose and JSON
#           evaluation samples, then the Python one, cut at 150 KiB): mean
#           latency with 1 connection, requests/s with C
#
# Every run ends with a check on every path, one SHA-256 expected: redis, a
# random 48 KiB value written through the tunnel and read back; pgbench, the
# whole pgbench_accounts table as COPY text (~20 MB, after all runs); http,
# the body fetched with curl.
#
#   scripts/bench-apps.sh                        # APPS="redis pgbench http"
#   APPS=pgbench CODECS=raw C=16 DURATION=10 scripts/bench-apps.sh
#
# Env: APPS, CODECS ("raw zstd auto"), C (32), DURATION (s per run, 5),
# LLMPACK (binary; default: built here). TOKIO_WORKER_THREADS, when set,
# reaches the proxies (their runtime's worker threads; default one per core).
# Needs socat, curl and the programs' packages: redis-server redis-tools,
# postgresql (pgbench; run as the postgres user when root), nginx-light wrk.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
APPS="${APPS:-redis pgbench http}"
CODECS="${CODECS:-raw zstd auto}"
C="${C:-32}"
DURATION="${DURATION:-5}"
die() { echo "bench-apps.sh: $*" >&2; exit 1; }
if [ -z "${LLMPACK:-}" ]; then
  . scripts/env.sh
  cargo build --release -p llmpack --quiet
  LLMPACK="${CARGO_TARGET_DIR:-$REPO/target}/release/llmpack"
fi
need() { for t in "$@"; do command -v "$t" >/dev/null || die "needs $t ($HINT)"; done; }
HINT="apt-get install socat curl"; need socat curl sha256sum
PGBIN=""
for app in $APPS; do
  case "$app" in
    redis) HINT="apt-get install redis-server redis-tools"; need redis-server redis-benchmark redis-cli ;;
    pgbench)
      HINT="apt-get install postgresql"; need pgbench psql
      PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
      [ -x "$PGBIN/initdb" ] || die "needs initdb and pg_ctl ($HINT)" ;;
    http)
      HINT="apt-get install nginx-light wrk"; need wrk
      NGINX="$(command -v nginx || echo /usr/sbin/nginx)"; [ -x "$NGINX" ] || die "needs nginx ($HINT)" ;;
    *) die "unknown app $app (redis, pgbench, http)" ;;
  esac
done

W="$(mktemp -d)"
chmod 755 "$W"
PIDS=()
PG_CTL=()
cleanup() {
  [ ${#PG_CTL[@]} -eq 0 ] || "${PG_CTL[@]}" stop -m immediate >/dev/null 2>&1 || true
  kill "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
# Ports: the server, its socat relay at +1000, its tunnels at +2000 + codec index.
declare -A SERVER=([redis]=16379 [pgbench]=15439 [http]=18090)
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; die "nothing listens on port $1"; }

# --- servers --------------------------------------------------------------------
for app in $APPS; do
  p=${SERVER[$app]}
  case "$app" in
    redis)
      redis-server --port "$p" --save '' --appendonly no > "$W/redis.log" 2>&1 & PIDS+=($!) ;;
    pgbench)
      mkdir -p "$W/pg"
      AS=(); [ "$(id -u)" -eq 0 ] && { chown postgres "$W/pg"; AS=(runuser -u postgres --); }
      "${AS[@]}" "$PGBIN/initdb" -D "$W/pg/data" -A trust -U postgres > "$W/pg/initdb.log" 2>&1 \
        || die "initdb failed: $(tail -n 3 "$W/pg/initdb.log")"
      PG_CTL=("${AS[@]}" "$PGBIN/pg_ctl" -D "$W/pg/data")
      # A benchmark of the path, not of the disk: no fsync.
      "${PG_CTL[@]}" -l "$W/pg/log" -o "-p $p -k $W/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start > /dev/null
      pgbench -h 127.0.0.1 -p "$p" -U postgres -i -s 2 -q postgres > "$W/pg/init.log" 2>&1 \
        || die "pgbench -i failed: $(tail -n 3 "$W/pg/init.log")" ;;
    http)
      [ -s .cache/samples/page.html ] || scripts/fetch-samples.sh >/dev/null
      mkdir -p "$W/www"
      cat .cache/samples/page.html .cache/samples/prose.txt .cache/samples/data.json .cache/samples/code.py > "$W/all"
      head -c 153600 "$W/all" > "$W/www/body.html"
      scripts/nginx-conf.sh "$W/nginx" "$W/www" "127.0.0.1:$p" > "$W/nginx.conf"
      "$NGINX" -p "$W/nginx" -c "$W/nginx.conf" -e "$W/nginx/error.log" > "$W/nginx/stderr.log" 2>&1 & PIDS+=($!) ;;
  esac
  wait_port "$p"
  socat TCP-LISTEN:$((p + 1000)),fork,reuseaddr,nodelay TCP:127.0.0.1:$p,nodelay 2>>"$W/socat.log" & PIDS+=($!)
done

# --- the tunnel: one receiver, one sender, a tunnel per program and codec ------
"$LLMPACK" keygen --out "$W/keys" >/dev/null
for role in receiver sender; do
  other=sender; [ "$role" = sender ] && other=receiver
  {
    echo "role = \"$role\""
    echo "[model]"
    echo "dir = \"$REPO/models/default\""
    echo "[link]"
    if [ "$role" = receiver ]; then echo 'listen = "127.0.0.1:4490"'; else echo 'connect = "127.0.0.1:4490"'; fi
    echo "certificate = \"$W/keys/$role.crt\""
    echo "key = \"$W/keys/$role.key\""
    echo "peer_certificate = \"$W/keys/$other.crt\""
    echo "[metrics]"
    if [ "$role" = receiver ]; then echo 'listen = "127.0.0.1:9491"'; else echo 'listen = "127.0.0.1:9490"'; fi
    for app in $APPS; do
      i=0
      for codec in $CODECS; do
        echo "[[tunnel]]"
        echo "name = \"$app-$codec\""
        if [ "$role" = receiver ]; then echo "target = \"127.0.0.1:${SERVER[$app]}\""
        else echo "listen = \"127.0.0.1:$((SERVER[$app] + 2000 + i))\""; fi
        echo "codec = \"$codec\""
        i=$((i + 1))
      done
    done
  } > "$W/$role.toml"
done
"$LLMPACK" receiver --config "$W/receiver.toml" > "$W/receiver.log" 2>&1 & RP=$!
sleep 0.5
"$LLMPACK" sender --config "$W/sender.toml" > "$W/sender.log" 2>&1 & SP=$!
PIDS+=("$RP" "$SP")
for app in $APPS; do wait_port $((SERVER[$app] + 2000)); done
kill -0 "$RP" "$SP" 2>/dev/null || { tail -n 3 "$W"/*.log >&2; die "a proxy did not start (port 4490 in use?)"; }
echo "proxies: worker threads ${TOKIO_WORKER_THREADS:-one per core ($(nproc))}; $DURATION s per run"

# PATHS: "name port" per path, direct first.
paths() {
  local p=${SERVER[$1]} i=0
  echo "direct $p"
  echo "socat $((p + 1000))"
  for codec in $CODECS; do echo "tunnel-$codec $((p + 2000 + i))"; i=$((i + 1)); done
}
row() { printf '%-8s %-13s %s\n' "$@"; }
# Frames both proxies sent on tunnel $1 so far, by codec (their /metrics).
frames() {
  local all; all=$(curl -sf http://127.0.0.1:9490/metrics http://127.0.0.1:9491/metrics | grep '^llmpack_frames_total{' | grep "tunnel=\"$1\"" | grep 'direction="out"')
  for c in raw zstd lm; do
    printf '%s:%s ' "$c" "$(echo "$all" | grep "codec=\"$c\"" | awk '{n += $NF} END {print n + 0}')"
  done
}

# --- the benchmarks ---------------------------------------------------------------
for app in $APPS; do
  echo
  case "$app" in
    redis)
      echo "== redis: redis-benchmark -t set,get -d 1000; GET requests/s, mean latency"
      n1=$((DURATION * 1000)); nc=$((DURATION * 10000))
      while read -r name port; do
        one=$(redis-benchmark -p "$port" -t get -n "$n1" -c 1 -d 1000 --csv | grep '^"GET"' | tr -d '"' | cut -d, -f2,3)
        many=$(redis-benchmark -p "$port" -t get -n "$nc" -c "$C" -d 1000 --csv | grep '^"GET"' | tr -d '"' | cut -d, -f2,3)
        row redis "$name" "1 client ${one#*,} ms (${one%,*} req/s); $C clients ${many%,*} req/s (${many#*,} ms)"
      done < <(paths redis)
      head -c 36864 /dev/urandom | base64 -w0 > "$W/val.txt"
      redis-cli -p $((SERVER[redis] + 2000)) -x SET checkkey < "$W/val.txt" >/dev/null
      want=$(sha256sum < "$W/val.txt" | cut -c1-64)
      while read -r name port; do
        got=$(redis-cli -p "$port" --raw GET checkkey | head -c -1 | sha256sum | cut -c1-64)
        [ "$got" = "$want" ] || die "redis: the value read through $name differs"
      done < <(paths redis)
      echo "redis    check: a 48 KiB value, SHA-256 ${want:0:16}..., identical on every path" ;;
    pgbench)
      echo "== pgbench (TPC-B-like, scale 2): mean transaction latency, tps"
      while read -r name port; do
        pg() { pgbench -h 127.0.0.1 -p "$port" -U postgres -T "$DURATION" "$@" postgres 2>&1; }
        one=$(pg -c 1 -j 1); many=$(pg -c $((C / 2)) -j 2)
        for out in "$one" "$many"; do
          echo "$out" | grep -q "number of failed transactions: 0 " || { echo "$out" >&2; die "pgbench through $name failed"; }
        done
        lat() { echo "$1" | sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p'; }
        tps() { echo "$1" | sed -n 's/^tps = \([0-9]*\)\..*/\1/p'; }
        row pgbench "$name" "1 client $(lat "$one") ms ($(tps "$one") tps); $((C / 2)) clients $(tps "$many") tps ($(lat "$many") ms)"
      done < <(paths pgbench)
      want=""
      while read -r name port; do
        got=$(psql -h 127.0.0.1 -p "$port" -U postgres -q -c "COPY (SELECT * FROM pgbench_accounts ORDER BY aid) TO STDOUT" postgres | sha256sum | cut -c1-64)
        [ -n "$want" ] || want=$got
        [ "$got" = "$want" ] || die "pgbench: pgbench_accounts read through $name differs from direct"
      done < <(paths pgbench)
      echo "pgbench  check: pgbench_accounts (200 000 rows as COPY text), SHA-256 ${want:0:16}..., identical on every path" ;;
    http)
      echo "== http: nginx + wrk, one 150 KiB body; mean latency, requests/s"
      want=$(sha256sum < "$W/www/body.html" | cut -c1-64)
      while read -r name port; do
        url="http://127.0.0.1:$port/body.html"
        one=$(wrk -t 1 -c 1 -d "${DURATION}s" "$url")
        many=$(wrk -t 2 -c "$C" -d "${DURATION}s" "$url")
        for out in "$one" "$many"; do
          ! echo "$out" | grep -qE "Socket errors|Non-2xx" || { echo "$out" >&2; die "wrk through $name saw errors"; }
        done
        lat() { echo "$1" | awk '/^ +Latency/ {print $2}'; }
        rps() { echo "$1" | awk '/^Requests\/sec/ {print $2}'; }
        row http "$name" "1 connection $(lat "$one") ($(rps "$one") req/s); $C connections $(rps "$many") req/s ($(lat "$many"))"
        got=$(curl -sf "$url" | sha256sum | cut -c1-64)
        [ "$got" = "$want" ] || die "http: the body fetched through $name differs"
      done < <(paths http)
      echo "http     check: the 150 KiB body, SHA-256 ${want:0:16}..., identical on every path" ;;
  esac
done
echo
echo "== frames sent by both proxies, by codec (runs and checks together)"
for app in $APPS; do
  for codec in $CODECS; do row "$app" "tunnel-$codec" "$(frames "$app-$codec")"; done
done
kill -0 "$RP" "$SP" 2>/dev/null || { tail -n 3 "$W"/*.log >&2; die "a proxy exited during the runs"; }
