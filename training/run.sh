#!/bin/sh
# LLMPack default model: the whole pipeline, one command (from the repository root):
#
#   sh training/run.sh            # corpus -> tokenizer -> train (GPU) -> ONNX -> manifest -> checks
#
# Needs: apt-get + dpkg-deb (Debian bookworm sources), a Python with tokenizers + numpy (PY, default
# .cache/venv/bin/python), one with torch + CUDA (TORCH_PY, default python3), one with onnx + onnxruntime
# (ORT_PY, default .cache/venv-check/bin/python).  TRAIN_MINUTES (default 2.8; H200 ~ 1.8M tokens/s)
# is the wall-clock training budget: the LR schedule (warmup + cosine) is a function of elapsed time.
# Our run trained on an H200 (see training/run/train.log); steps 1-3 and 5-6 ran on a 2-core CPU.
set -eu
PY=${PY:-.cache/venv/bin/python}
TORCH_PY=${TORCH_PY:-python3}
ORT_PY=${ORT_PY:-.cache/venv-check/bin/python}
OUT=${OUT:-training/run}
mkdir -p "$OUT" models/default
python3 training/build_corpus.py                         # 1. training/data/corpus.txt + training/packages.txt
"$PY" training/train_tokenizer.py                        # 2. models/default/tokenizer.json + training/data/{tokens,val}.bin
"$TORCH_PY" training/train.py --minutes "${TRAIN_MINUTES:-2.8}" --out "$OUT"   # 3. $OUT/weights_{a,b}.npz, hparams.json, train.log
"$PY" -c "import numpy as np,sys; W={}; [W.update(np.load(f'$OUT/weights_{s}.npz')) for s in 'ab']; np.savez('$OUT/weights.npz', **W)"
"$PY" tools/npz2onnx.py "$OUT/weights.npz" "$OUT/hparams.json" models/default/model.onnx   # 4. ONNX (project contract)
[ "$OUT" = training/run ] || cp "$OUT/hparams.json" training/run/hparams.json
"$PY" training/write_manifest.py                         # 5. models/default/manifest.toml (add --measured k=v ...)
"$ORT_PY" training/check_onnx.py                         # 6. cached vs full pass, val bits/token, step speed
# 7. evaluation (model trained on 512-token windows):
#    target/release/llmpack eval --together --model models/default --window 512 --keep 128 --lanes 4 --min-lane 2KiB training/heldout/*
