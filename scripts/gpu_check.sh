#!/usr/bin/env bash
# The GPU checks of issue 16, prepared for a session that is lent a GPU machine
# (no network there, a 64 MiB limit on what travels per call, 15 minutes of
# device time in all).  Three steps:
#
#   here:   scripts/gpu_check.sh stage [--no-smollm2]
#           Needs `cargo build --release -p llmpack` and `scripts/setup.sh --gpu`.
#           Packs the evaluation samples with `--codec lm` (default model) on this
#           CPU, then puts what the GPU machine lacks into one xz tarball cut into
#           parts of at most 56 MiB, one folder each: .gpu-stage/1, .gpu-stage/2, ...
#           (git-ignored through .git/info/exclude): the stripped release binary,
#           the CUDA build of ONNX Runtime (libonnxruntime + its CUDA provider; the
#           CUDA 13 libraries themselves are on the GPU machine already, in its
#           Python's nvidia-* packages), the packed files, the SmolLM2 GGUF and the
#           `gguf` wheel to convert it there (--no-smollm2 leaves those out: about
#           two parts fewer).  It prints how many parts it made.  Sizes seen: the
#           CUDA provider is 284 MB (219 MB of it GPU code for sm_75..sm_120, 77 MB
#           of that for sm_90), about 190 MB compressed; the GGUF is 98 MB.
#   there:  one `run` per part, back to back so that the machine stays warm:
#             carry [".gpu-stage/N"], command "scripts/gpu_check.sh receive"
#           then a last one (any part carried, or none):
#             command "scripts/gpu_check.sh run", timeout_s 540
#   here:   scripts/gpu_check.sh --dry-run   (LLMPACK_BIN=target/debug/llmpack for a debug build)
#           the same checks on this CPU with --device cpu and small sizes, no
#           staging: proves the script's own logic before device time is spent.
#
# `run` writes into $OUT: nvidia-smi.txt, speed-default.json,
# speed-smollm2.json (the `llmpack speed --device cuda` reports: decode KB/s per
# lane count, bits/byte, probe), cross.txt (per packed file and device: byte-exact
# or the error, e.g. a numeric-probe mismatch), and log.txt.  The whole `run`
# is budgeted to about 8 minutes; each step has its own timeout.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
ORT_VERSION=1.31.1
STAGE="$REPO/.gpu-stage"
PART_MIB=56
WORK="${LLMPACK_GPU_WORK:-/tmp/llmpack-gpu}"   # survives between calls while the machine is warm
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_WHEEL_PIN="gguf==0.19.0"
SAMPLES=(prose.txt code.py page.html data.json)

log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }
die() { echo "gpu_check: $*" >&2; exit 1; }

cmd_stage() {
  local bin="${LLMPACK_BIN:-$REPO/target/release/llmpack}"
  local gpu="$REPO/.cache/onnxruntime-gpu-$ORT_VERSION/lib"
  [ -x "$bin" ] || die "$bin missing: cargo build --release -p llmpack"
  [ -f "$gpu/libonnxruntime_providers_cuda.so" ] || die "$gpu missing: scripts/setup.sh --gpu"
  grep -qx '/.gpu-stage/' .git/info/exclude 2>/dev/null || echo '/.gpu-stage/' >> "$(git rev-parse --git-path info/exclude)"
  rm -rf "$STAGE"
  local tree="$STAGE/tree"
  mkdir -p "$tree/bin" "$tree/ort" "$tree/ort-cpu" "$tree/packed" "$tree/smollm2" "$tree/wheels"
  strip -o "$tree/bin/llmpack" "$bin"
  cp "$gpu/libonnxruntime.so.$ORT_VERSION" "$gpu/libonnxruntime_providers_cuda.so" \
     "$gpu/libonnxruntime_providers_shared.so" "$tree/ort/"
  # The CPU build too: "the GPU machine's CPU" is then the same library as here.
  cp ".cache/onnxruntime-$ORT_VERSION/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$tree/ort-cpu/"
  local s
  for s in "${SAMPLES[@]}"; do
    cp ".cache/samples/$s" "$tree/packed/$s"
    "$bin" pack ".cache/samples/$s" -o "$tree/packed/$s.llmp" --codec lm --device cpu \
      || die "packing $s"
  done
  if ls training/heldout/*-* >/dev/null 2>&1; then
    for s in training/heldout/*-*; do
      cp "$s" "$tree/packed/heldout-$(basename "$s")"
      "$bin" pack "$s" -o "$tree/packed/heldout-$(basename "$s").llmp" --codec lm --device cpu || die "packing $s"
    done
  fi
  "$bin" speed --device cpu --lanes 1 --bytes 1KiB --json "$tree/packed/probe-here.json" >/dev/null \
    || die "probe on this CPU"
  lscpu | grep -E 'Model name|Flags' | cut -c1-400 > "$tree/packed/cpu-here.txt"
  if [ "${1:-}" != --no-smollm2 ]; then
    cp ".cache/smollm2/$GGUF_NAME" ".cache/smollm2/LICENSE" "$tree/smollm2/"
    .cache/venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$tree/wheels" "$GGUF_WHEEL_PIN" \
      || die "downloading the gguf wheel"
  fi
  log "compressing $(du -sh "$tree" | cut -f1) (xz)..."
  tar -C "$tree" -cf - . | xz -T0 -6 > "$STAGE/all.tar.xz"
  rm -rf "$tree"
  split -b "${PART_MIB}M" -d -a 2 "$STAGE/all.tar.xz" "$STAGE/part-"
  rm "$STAGE/all.tar.xz"
  local n=0 p
  for p in "$STAGE"/part-*; do
    n=$((n + 1)); mkdir "$STAGE/$n"; mv "$p" "$STAGE/$n/"
  done
  (cd "$STAGE" && sha256sum */part-* > SHA256SUMS && cp SHA256SUMS "$STAGE/$n/")
  log "$n parts in .gpu-stage/1..$n ($(du -sh "$STAGE" | cut -f1)); carry one per 'receive' call, the last holds SHA256SUMS"
}

cmd_receive() {
  mkdir -p "$WORK/parts"
  local p found=0
  for p in "$STAGE"/*/part-* "$STAGE"/*/SHA256SUMS; do
    [ -f "$p" ] || continue
    cp "$p" "$WORK/parts/"; found=1
    log "received $(basename "$p") ($(du -h "$p" | cut -f1))"
  done
  [ "$found" = 1 ] || die "no part under .gpu-stage/: carry one"
  ls -la "$WORK/parts"
}

# Unpacks the staged tree into $WORK/tree once; sets BIN, ORT_LIB.
unstage() {
  if [ ! -f "$WORK/tree/.complete" ]; then
    [ -f "$WORK/parts/SHA256SUMS" ] || die "parts missing in $WORK/parts: run 'receive' with each part first"
    (cd "$WORK/parts" && sed 's#^\([0-9a-f]*\)  [0-9]*/#\1  #' SHA256SUMS | sha256sum -c --quiet) || die "a part is damaged or missing"
    rm -rf "$WORK/tree"; mkdir -p "$WORK/tree"
    cat "$WORK/parts"/part-* | xz -d | tar -C "$WORK/tree" -xf - || die "unpacking the parts"
    touch "$WORK/tree/.complete"
  fi
  BIN="$WORK/tree/bin/llmpack"
  ORT_LIB="$WORK/tree/ort/libonnxruntime.so.$ORT_VERSION"
}

# The CUDA 13 libraries of the machine's own Python packages (nvidia-*), for
# the CUDA provider, which loads them by name.
cuda_lib_path() {
  local py dirs=""
  for py in python3 /opt/torch/.venv/bin/python3; do
    command -v "$py" >/dev/null || continue
    dirs="$("$py" - <<'EOF' 2>/dev/null
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
out = []
for r in roots:
    out += sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib")))
    out += sorted(glob.glob(os.path.join(r, "nvidia", "cu13", "lib")))
print(":".join(dict.fromkeys(out)))
EOF
)"
    [ -n "$dirs" ] && break
  done
  echo "$dirs"
}

cmd_run() {
  local dry=$1
  OUT="${OUT:-$WORK/out}"; mkdir -p "$OUT"
  exec > >(tee -a "$OUT/log.txt") 2>&1
  local device lanes bytes
  if [ "$dry" = 1 ]; then
    BIN="${LLMPACK_BIN:-$REPO/target/release/llmpack}"
    [ -x "$BIN" ] || die "$BIN missing: cargo build --release -p llmpack (or set LLMPACK_BIN)"
    ORT_LIB=""; device=cpu; lanes="1,2"; bytes=1KiB
    local packed="$OUT/packed"; mkdir -p "$packed"
    local s
    for s in "${SAMPLES[@]}"; do
      head -c 4096 ".cache/samples/$s" > "$packed/$s"
      "$BIN" pack "$packed/$s" -o "$packed/$s.llmp" --codec lm --device cpu || die "packing $s"
    done
    # SmolLM2 codes ~20x slower than the default model on a CPU: not in a dry run.
    local smol="$REPO/models/smollm2-135m-not-in-dry-run"
  else
    unstage
    device=cuda; lanes="1,4,16,64,256,1024"; bytes=4KiB
    local packed="$WORK/tree/packed"
    export LD_LIBRARY_PATH="$(cuda_lib_path)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "CUDA libraries from: ${LD_LIBRARY_PATH:-nowhere (the provider will say what is missing)}"
    export ORT_DYLIB_PATH="$ORT_LIB"
    (nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv) > "$OUT/nvidia-smi.txt" 2>&1
    lscpu | grep -E 'Model name|Flags' | cut -c1-400 > "$OUT/cpu-there.txt"
    cp "$packed/cpu-here.txt" "$packed/probe-here.json" "$OUT/" 2>/dev/null
    local smol="$WORK/smollm2-135m"
    if [ ! -f "$smol/manifest.toml" ] && [ -f "$WORK/tree/smollm2/$GGUF_NAME" ]; then
      log "converting SmolLM2 (GGUF -> ONNX) with this machine's Python..."
      python3 -m pip install -q --no-index --no-deps --target "$WORK/site" "$WORK"/tree/wheels/*.whl \
        && mkdir -p "$smol" \
        && PYTHONPATH="$WORK/site" timeout 180 python3 tools/gguf2onnx.py "$WORK/tree/smollm2/$GGUF_NAME" "$smol/model.onnx" \
        && PYTHONPATH="$WORK/site" timeout 60 python3 tools/gguf2tokenizer.py "$WORK/tree/smollm2/$GGUF_NAME" "$smol/tokenizer.json" \
        && cp "$WORK/tree/smollm2/LICENSE" "$smol/" \
        && PYTHONPATH="$WORK/site" timeout 60 python3 tools/write_manifest.py --gguf "$WORK/tree/smollm2/$GGUF_NAME" "$smol" \
        || log "SmolLM2 conversion failed; its speed run is skipped"
    fi
  fi
  log "llmpack: $("$BIN" --version)  device: $device"

  # 1. Speed, default model then SmolLM2.  The first also shows whether CUDA starts.
  log "speed, default model, lanes $lanes"
  timeout 200 "$BIN" speed --device "$device" --lanes "$lanes" --bytes "$bytes" \
    --json "$OUT/speed-default.json" 2>&1 | grep -v '^\s*$' | tail -40
  log "speed exit: ${PIPESTATUS[0]}"
  if [ -f "$smol/manifest.toml" ]; then
    log "speed, SmolLM2-135M, lanes $lanes"
    timeout 200 "$BIN" speed --model "$smol" --device "$device" --lanes "$lanes" --bytes "$bytes" \
      --json "$OUT/speed-smollm2.json" 2>&1 | grep -v '^\s*$' | tail -40
    log "speed exit: ${PIPESTATUS[0]}"
  fi

  # 2. Across machines: files packed with --codec lm on the developer's CPU,
  #    unpacked here on the CPU and on the GPU.
  local devs="cpu"; [ "$dry" = 1 ] || devs="cpu cuda"
  : > "$OUT/cross.txt"
  local f d r
  for d in $devs; do
    for f in "$packed"/*.llmp; do
      local orig="${f%.llmp}"
      local got="$WORK/out-$d-$(basename "$orig")"
      mkdir -p "$WORK"
      if [ "$d" = cpu ] && [ "$dry" = 0 ]; then
        # This machine's CPU through the CPU build the repository's tests use,
        # if the machine's Python has it; else the CUDA build's CPU provider.
        r="$(ORT_DYLIB_PATH="$(cpu_ort_lib)" timeout 120 "$BIN" unpack "$f" -o "$got" --device cpu 2>&1 | tail -2 | tr '\n' ' ')"
      else
        r="$(timeout 120 "$BIN" unpack "$f" -o "$got" --device "$d" 2>&1 | tail -2 | tr '\n' ' ')"
      fi
      if [ -f "$got" ] && cmp -s "$got" "$orig"; then
        echo "$d $(basename "$f"): byte-exact" >> "$OUT/cross.txt"
      else
        echo "$d $(basename "$f"): NOT restored: $r" >> "$OUT/cross.txt"
      fi
      rm -f "$got"
    done
  done
  cat "$OUT/cross.txt"
  for d in $devs; do
    local lib=""
    [ "$d" = cpu ] && [ "$dry" = 0 ] && lib="ORT_DYLIB_PATH=$(cpu_ort_lib)"
    env $lib timeout 60 "$BIN" speed --device "$d" --lanes 1 --bytes 1KiB --input "$packed/prose.txt" \
      --json "$OUT/probe-$d.json" >/dev/null 2>&1 || log "probe on $d failed"
  done
  grep -h '"probe"\|"device"' "$OUT"/probe-*.json 2>/dev/null
  log "done"
}

# The CPU build of ONNX Runtime 1.31.1 that was staged (else the CUDA build,
# whose CPU provider gave the same probe as the CPU build on the development
# machine).
cpu_ort_lib() {
  local l
  for l in "$WORK/tree/ort-cpu/libonnxruntime.so.$ORT_VERSION" \
           "$REPO/.cache/onnxruntime-$ORT_VERSION/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"; do
    [ -f "$l" ] && { echo "$l"; return; }
  done
  echo "$ORT_LIB"
}

case "${1:-}" in
  stage) cmd_stage "${2:-}" ;;
  receive) cmd_receive ;;
  run) cmd_run 0 ;;
  --dry-run|dry-run) cmd_run 1 ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
