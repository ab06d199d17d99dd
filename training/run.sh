#!/bin/sh
# LLMPack default model: the whole pipeline, one command (from the repository root):
#
#   sh training/run.sh            # corpus -> tokenizer -> train (GPU) -> ONNX -> manifest -> checks
#
# Needs: apt-get + dpkg-deb (Debian bookworm sources), nginx (real HTTP traffic for the corpus), the
# workspace's crates in CARGO_HOME (any `cargo build`), a Python with tokenizers + numpy (PY, default
# .cache/venv/bin/python), one with torch + CUDA (TORCH_PY, default python3), one with onnx + onnxruntime
# (ORT_PY, default .cache/venv-check/bin/python).  TRAIN_TOKENS (default 228e6, what the shipped model
# saw) is the training budget, TRAIN_MINUTES (default 30) a wall-clock cap; the LR schedule (warmup +
# cosine) follows whichever is further along.  The shipped model's step 3 ran as training/gpu_run.sh
# on an H200 with no network (it trains the two smaller curve points alongside; log in
# training/run/train.log); steps 1-2 and 4-6 ran on a 2-core CPU.
set -eu
PY=${PY:-.cache/venv/bin/python}
TORCH_PY=${TORCH_PY:-python3}
ORT_PY=${ORT_PY:-.cache/venv-check/bin/python}
OUT=${OUT:-training/run}
mkdir -p "$OUT" models/default
python3 training/build_corpus.py                         # 1. training/data/corpus.txt + training/packages.txt
"$PY" training/train_tokenizer.py                        # 2. models/default/tokenizer.json + training/data/{tokens,val}.bin
"$TORCH_PY" training/train.py --tokens "${TRAIN_TOKENS:-228e6}" --minutes "${TRAIN_MINUTES:-30}" --out "$OUT"   # 3. $OUT/weights_{a,b}.npz, hparams.json, train.log
"$PY" -c "import numpy as np,sys; W={}; [W.update(np.load(f'$OUT/weights_{s}.npz')) for s in 'ab']; np.savez('$OUT/weights.npz', **W)"
mkdir -p "$OUT/past" && cp models/default/tokenizer.json "$OUT/past/"
"$PY" tools/npz2onnx.py "$OUT/weights.npz" "$OUT/hparams.json" "$OUT/past/model.onnx"   # 4. ONNX, decoder-with-past contract
"$ORT_PY" training/check_onnx.py "$OUT/past"             # 5. cached vs full pass, val bits/token, step speed
PYTHONPATH=.cache/onnxruntime-1.31.1 "$PY" tools/onnx2gqa.py "$OUT/past/model.onnx" models/default/model.onnx \
    --check .cache/samples/prose.txt                     # 6. the shipped graph: in-place KV buffer (gqa contract), checked
[ "$OUT" = training/run ] || cp "$OUT/hparams.json" training/run/hparams.json
"$PY" training/write_manifest.py --contract gqa          # 7. models/default/manifest.toml (add --measured k=v ...)
# 8. evaluation (model trained on 512-token windows):
#    sh training/fetch_heldout.sh && sh training/curve.sh models/default
