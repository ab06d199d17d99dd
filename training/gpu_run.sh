#!/bin/sh
# The GPU step of the pipeline as one prepared run on a machine with no network (the `device`
# machine: one H100/H200, 16 cores, python3 with torch + tokenizers).  It trains several models at
# the same time on the one GPU, for the same MINUTES each.
#
# Prepared here (from the repository root):
#   python3 training/build_corpus.py                                # training/data/corpus.txt (~330 MB)
#   .cache/venv/bin/python training/train_tokenizer.py --data training/data --tokenize-only models/default/tokenizer.json
#   mkdir -p .gpu && cp models/default/tokenizer.json training/data/val.bin .gpu/ \
#     && xz -T1 -6 -c training/data/corpus.txt > .gpu/corpus.txt.xz   # must stay under the 64 MiB a run carries
# Run there (with .gpu carried):  OUT=$OUT MINUTES=7 sh training/gpu_run.sh     (run tool: carry [".gpu"])
#
# MODELS: the runs, "name:train.py arguments" separated by ";" (default: issue 17's comparison on
#   the broad corpus: today's transformer and recurrent minGRU models at three sizes).
# INIT=.gpu/weights.npz: instead, continue training the default transformer alone from those weights.
# Results: $OUT/weights_<k>.npz (fp16, every run's tensors, <= 15 MiB each) + $OUT/runs.tar (hparams,
#   logs) + $OUT/tokenize.log: at most 8 files of at most 16 MiB come back from the device machine.
#   Here: python3 training/pack_runs.py --unpack FILES_AT .cache/gpu-runs, then per run the export of
#   training/README.md ("CPU training": npz2onnx.py / npz2state.py, write_manifest.py), then
#   training/devset_eval.sh and `llmpack speed --lanes 1,16` per model folder.
set -eu
G=${G:-.gpu}              # the prepared corpus.txt.xz, tokenizer.json, val.bin
MINUTES=${MINUTES:-6.5}
DATA=${DATA:-/tmp/llmpack-data}
RUNS=${RUNS:-/tmp/llmpack-runs}
PY=${PY:-python3}          # with torch (CUDA)
TOK_PY=${TOK_PY:-python3}  # with tokenizers + numpy
MODELS=${MODELS:-"t6x256:--layers 6 --dim 256 --heads 4 --ffn 640 --ctx 512;\
r4x256:--arch mingru --layers 4 --dim 256 --ffn 640 --ctx 1024;\
r6x384:--arch mingru --layers 6 --dim 384 --ffn 1024 --ctx 1024 --lr 1.5e-3;\
r3x192:--arch mingru --layers 3 --dim 192 --ffn 512 --ctx 1024 --lr 3e-3"}
export PYTHONUNBUFFERED=1
mkdir -p "$DATA" "$RUNS" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; "$TOK_PY" -c "import tokenizers; print('tokenizers', tokenizers.__version__)"
xz -T0 -dc "$G"/corpus.txt.xz > "$DATA/corpus.txt"
RAYON_NUM_THREADS=16 "$TOK_PY" training/train_tokenizer.py --data "$DATA" --tokenize-only "$G"/tokenizer.json 2>&1 | tee "$OUT/tokenize.log"
if [ ! -f "$G"/val.bin ]; then echo "(no val.bin to compare with)"
elif cmp -s "$DATA/val.bin" "$G"/val.bin; then echo "val.bin identical to the one tokenized here" | tee -a "$OUT/tokenize.log"
else echo "WARNING: val.bin differs from the one tokenized here" | tee -a "$OUT/tokenize.log"; fi
T=$("$TOK_PY" -c "print(int($MINUTES * 60 + 60))")   # hard stop: budget + final evaluation and save
if [ -n "${INIT:-}" ]; then   # continue training the default model alone from INIT (a weights.npz)
    timeout "$T" "$PY" training/train.py --data "$DATA" --minutes "$MINUTES" --init "$INIT" --lr "${LR:-1e-3}" \
        --warmup 50 --out "$RUNS/default" 2>&1 | tee "$RUNS/default.out"
else
    while IFS=: read -r name margs; do   # not in a pipeline: the jobs must be this shell's, for `wait`
        [ -n "$name" ] || continue
        # shellcheck disable=SC2086
        timeout "$T" "$PY" training/train.py --data "$DATA" --minutes "$MINUTES" $margs --out "$RUNS/$name" \
            > "$RUNS/$name.out" 2>&1 &
    done <<LIST
$(echo "$MODELS" | tr ';' '\n')
LIST
    wait || true
fi
tail -n 3 "$RUNS"/*.out
"$TOK_PY" training/pack_runs.py "$RUNS" "$OUT"
ls -la "$OUT"
