#!/usr/bin/env python3
"""Vocabulary size, measured on the tokenizer side: trains the byte-level BPE of train_tokenizer.py at
several sizes on a quarter of the corpus's documents and reports bytes/token (model steps per byte)
on the held-out text files, plus what the tied embedding / lm head costs at d_model 256.

  .cache/venv/bin/python training/vocab_sweep.py [SIZES...]     (default 1024 2048 4096 8192 16384)

It does not train a model per size (that needs the GPU): bytes/token is the speed side of the choice,
the head's size the cost side; bits/token per size is the part left unmeasured.
"""
import glob, os, random, sys

from train_tokenizer import EOT, train_bpe

HERE = os.path.dirname(os.path.abspath(__file__))
sizes = [int(a) for a in sys.argv[1:]] or [1024, 2048, 4096, 8192, 16384]
docs = open(os.path.join(HERE, "data", "corpus.txt"), encoding="utf-8").read().split(EOT)
rng = random.Random(7)
sample = [d for d in docs[:-max(1, len(docs) // 100)] if rng.random() < 0.25]
held = {os.path.basename(f): open(f, "rb").read().decode("utf-8")
        for f in sorted(glob.glob(os.path.join(HERE, "heldout", "*-*"))) if not f.endswith(".bin")}
print(f"training sample: {len(sample)} documents, {sum(len(d.encode()) for d in sample)} bytes")
D, BODY = 256, 5_573_888 - 4096 * 256  # the default model's non-embedding parameters
print("vocab | " + " | ".join(n.split("-")[0] for n in held) + " | all held-out | head params (d 256) | model params")
for v in sizes:
    tok = train_bpe(sample, v)
    per = [len(t.encode()) / len(tok.encode(t, add_special_tokens=False).ids) for t in held.values()]
    allb = sum(len(t.encode()) for t in held.values())
    allt = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in held.values())
    print(f"{v} | " + " | ".join(f"{x:.2f}" for x in per) + f" | {allb / allt:.2f} | {v * D / 1e6:.2f}M | {(BODY + v * D) / 1e6:.2f}M",
          flush=True)
