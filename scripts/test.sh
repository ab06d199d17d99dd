#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the tests need
# (ONNX Runtime, the SmolLM2 model, evaluation samples; all cached; nginx
# and curl for the HTTP tunnel tests), then runs the checks and every test.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
scripts/setup.sh
. scripts/env.sh
if ! command -v curl >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }; then
  echo "== installing nginx and curl (HTTP tunnel tests)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nginx-light curl \
    || $SUDO apt-get install -y -qq --no-install-recommends nginx curl
fi

echo "== format"
cargo fmt --all --check
echo "== dependency direction: pure crates pull in no tokio, quinn or ort"
for crate in llmpack-frame llmpack-codec llmpack-fec; do
  if cargo tree -p "$crate" -e normal --prefix none | grep -E '^(tokio|quinn|ort|ort-sys) ' ; then
    echo "$crate must not depend on tokio, quinn or ort" >&2
    exit 1
  fi
done
if cargo tree -p llmpack-model -e normal --prefix none | grep -E '^(tokio|quinn) '; then
  echo "llmpack-model must not depend on tokio or quinn" >&2
  exit 1
fi
if cargo tree -p llmpack-transport -e normal --prefix none | grep -E '^(ort|ort-sys|llmpack-model) '; then
  echo "llmpack-transport must not depend on ort or the model crate" >&2
  exit 1
fi
echo "== clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== docs"
RUSTDOCFLAGS=-Dwarnings cargo doc --release --workspace --no-deps --quiet
echo "== tests"
cargo test --release --workspace
# The kernel-path benchmark where this machine allows it (root, network
# namespaces, veth, tc tbf): a short run that fails on any download that differs.
netns_ok() {
  [ "$(id -u)" -eq 0 ] && command -v tc >/dev/null || return 1
  ip netns add llmpack-probe 2>/dev/null || return 1
  local ok=0
  if ip -n llmpack-probe link add p0 type veth peer name p1 2>/dev/null &&
     tc -n llmpack-probe qdisc add dev p0 root tbf rate 1mbit burst 3028 limit 65536 2>/dev/null; then
    ok=1
  fi
  ip netns del llmpack-probe 2>/dev/null || true
  [ "$ok" = 1 ]
}
if netns_ok; then
  echo "== kernel-path benchmark (netns + tbf), short"
  cargo build --release -p llmpack --quiet
  RATE=4mbit DURATION=3 CLIENTS=2 MODES="direct raw zstd auto" scripts/bench-netns.sh
else
  echo "== kernel-path benchmark skipped (needs root, network namespaces, veth and tc tbf)"
fi
