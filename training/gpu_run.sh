#!/bin/sh
# The GPU step of the pipeline as one prepared run on a machine with no network (the `device`
# machine: one H100/H200, 16 cores, python3 with torch + tokenizers).  It trains the default
# model and the trade-off curve's smaller points at the same time on the one GPU.
#
# Prepared here (from the repository root):
#   python3 training/build_corpus.py
#   .cache/venv/bin/python training/train_tokenizer.py --out .cache/newtok
#   mkdir -p .gpu && cp .cache/newtok/tokenizer.json training/data/val.bin .gpu/ && xz -T2 -9 -c training/data/corpus.txt > .gpu/corpus.txt.xz
# Run there (with .gpu carried):  OUT=/some/dir sh training/gpu_run.sh
# INIT=.gpu/weights.npz: instead, continue training the default model from those weights (LR, MINUTES).
# Results: $OUT/{default_a.npz,default_b.npz,mid.tar,tiny.tar,default.tar,tokenize.log}
#   (at most 8 files of at most 16 MiB come back from the device machine, hence the packing).
set -eu
G=${G:-.gpu}              # the prepared corpus.txt.xz, tokenizer.json, val.bin
MINUTES=${MINUTES:-6.5}
DATA=${DATA:-/tmp/llmpack-data}
RUNS=${RUNS:-/tmp/llmpack-runs}
PY=${PY:-python3}          # with torch (CUDA)
TOK_PY=${TOK_PY:-python3}  # with tokenizers + numpy
export PYTHONUNBUFFERED=1
mkdir -p "$DATA" "$RUNS" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; "$TOK_PY" -c "import tokenizers; print('tokenizers', tokenizers.__version__)"
xz -dc "$G"/corpus.txt.xz > "$DATA/corpus.txt"
"$TOK_PY" training/train_tokenizer.py --data "$DATA" --tokenize-only "$G"/tokenizer.json 2>&1 | tee "$OUT/tokenize.log"
if [ ! -f "$G"/val.bin ]; then echo "(no val.bin to compare with)"
elif cmp -s "$DATA/val.bin" "$G"/val.bin; then echo "val.bin identical to the one tokenized here" | tee -a "$OUT/tokenize.log"
else echo "WARNING: val.bin differs from the one tokenized here" | tee -a "$OUT/tokenize.log"; fi
T=$("$TOK_PY" -c "print(int($MINUTES * 60 + 45))")   # hard stop: budget + final evaluation and save
pack_default() {   # the default's weights (two files: each at most 16 MiB) and its log
    cp "$RUNS/default/weights_a.npz" "$OUT/default_a.npz"; cp "$RUNS/default/weights_b.npz" "$OUT/default_b.npz"
    tar -C "$RUNS/default" -cf "$OUT/default.tar" hparams.json train.log
}
if [ -n "${INIT:-}" ]; then   # continue training the default model alone from INIT (a weights.npz)
    timeout "$T" "$PY" training/train.py --data "$DATA" --minutes "$MINUTES" --init "$INIT" --lr "${LR:-1e-3}" \
        --warmup 50 --out "$RUNS/default" 2>&1 | tee "$RUNS/default.out"
    pack_default
    exit 0
fi
timeout "$T" "$PY" training/train.py --data "$DATA" --minutes "$MINUTES" --out "$RUNS/default" > "$RUNS/default.out" 2>&1 &
timeout "$T" "$PY" training/train.py --data "$DATA" --minutes "$MINUTES" --layers 4 --dim 192 --heads 3 --ffn 512 \
    --out "$RUNS/mid" > "$RUNS/mid.out" 2>&1 &
timeout "$T" "$PY" training/train.py --data "$DATA" --minutes "$MINUTES" --layers 2 --dim 128 --heads 2 --ffn 384 \
    --ctx 256 --lr 3e-3 --out "$RUNS/tiny" > "$RUNS/tiny.out" 2>&1 &
wait || true
tail -n 4 "$RUNS"/*.out
pack_default
tar -C "$RUNS/mid" -cf "$OUT/mid.tar" .
tar -C "$RUNS/tiny" -cf "$OUT/tiny.tar" .
ls -la "$OUT"
