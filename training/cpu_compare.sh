#!/bin/sh
# Issue 17's CPU comparison: a small transformer and a small recurrent (minGRU) model of the same
# shape, trained for the same wall-clock MINUTES at the same time (one torch thread each, niced, so
# both see the same machine load), on the same tokens (training/data/tokens.bin, models/default's
# tokenizer), then exported (npz2onnx.py + onnx2gqa.py / npz2state.py, each checked) into model
# folders .cache/cpu17/{t2x128,r2x128}/model with manifests.  Measure them afterwards with
# training/devset_eval.sh and `llmpack speed --lanes 1,16`.
#
#   sh training/cpu_compare.sh            # MINUTES=22 (default), OUT=.cache/cpu17
# Needs .cache/venv-torch (torch 1.12.1 CPU, training/README.md) and .cache/venv + onnxruntime.
set -eu
MINUTES=${MINUTES:-22}
OUT=${OUT:-.cache/cpu17}
TPY=${TPY:-.cache/venv-torch/bin/python}
PY=${PY:-.cache/venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
common="--threads 1 --minutes $MINUTES --layers 2 --dim 128 --ffn 384 --warmup 100 --eval-every 180"
# same tokens per step (2048): the transformer on 256-token windows (batch 8), the recurrent model on
# 512-token sequences (batch 4; the scan's cost is linear in the length)
nice -n 19 "$TPY" training/train.py $common --heads 2 --ctx 256 --batch 8 --out "$OUT/t2x128" > "$OUT/t2x128.out" 2>&1 &
nice -n 19 "$TPY" training/train.py $common --arch mingru --ctx 512 --batch 4 --out "$OUT/r2x128" > "$OUT/r2x128.out" 2>&1 &
wait
for r in t2x128 r2x128; do
    R=$OUT/$r; M=$R/model; mkdir -p "$M"; cp models/default/tokenizer.json "$M/"
    "$PY" -c "import numpy as np; W={}; [W.update(np.load(f'$R/weights_{s}.npz')) for s in 'ab']; np.savez('$R/weights.npz', **W)"
done
TD="training/build_corpus.py corpus of issue 17 (320 MB, training/packages.txt); CPU run of training/cpu_compare.sh"
R=$OUT/t2x128
"$PY" tools/npz2onnx.py "$R/weights.npz" "$R/hparams.json" "$R/past.onnx"
PYTHONPATH=.cache/onnxruntime-1.31.1 "$PY" tools/onnx2gqa.py "$R/past.onnx" "$R/model/model.onnx" --window 512 --check training/devset/prose-puzzles-manual.txt
TRAINING_DATA=$TD "$PY" training/write_manifest.py --model-dir "$R/model" --hparams "$R/hparams.json" --name cpu17-t2x128 --contract gqa --kv-len 512
R=$OUT/r2x128
PYTHONPATH=.cache/onnxruntime-1.31.1 "$PY" tools/npz2state.py "$R/weights.npz" "$R/hparams.json" "$R/model/model.onnx"
TRAINING_DATA=$TD "$PY" training/write_manifest.py --model-dir "$R/model" --hparams "$R/hparams.json" --name cpu17-r2x128 --contract state
tail -n 2 "$OUT"/*.out
