#!/usr/bin/env python3
"""Model-only cross-entropy, bits per byte, of a model folder on files (no pack container, no range
coder): BOS + the file's tokens, predicted with a sliding window of W tokens that keeps the last K
when full (the CLI's --window/--keep), one full ONNX pass per window, onnxruntime CPU, 1 thread.
Non-UTF-8 files are skipped.  Needs numpy, onnxruntime, tokenizers (e.g. .cache/venv-check).
Usage: heldout_xent.py MODEL_DIR W K FILE...
"""
import os, sys
import numpy as np
import onnxruntime as ort
import tokenizers

md, W, K = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(os.path.join(md, "model.onnx"), so, providers=["CPUExecutionProvider"])
ins = [i for i in s.get_inputs() if i.name.startswith("past")]
L = len(ins) // 2; kvh, hd = ins[0].shape[1], ins[0].shape[3]
tok = tokenizers.Tokenizer.from_file(os.path.join(md, "tokenizer.json"))


def logp(seq):
    n = len(seq)
    feed = {"input_ids": np.array([seq], np.int64), "position_ids": np.arange(n)[None],
            "attention_mask": np.ones((1, n), np.int64)}
    for i in range(L):
        feed[f"past_key_values.{i}.key"] = feed[f"past_key_values.{i}.value"] = np.zeros((1, kvh, 0, hd), np.float32)
    lg = s.run(["logits"], feed)[0][0].astype(np.float64)
    lg -= lg.max(-1, keepdims=True)
    return lg - np.log(np.exp(lg).sum(-1, keepdims=True))


for f in sys.argv[4:]:
    data = open(f, "rb").read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        print(f"{os.path.basename(f):24s} not UTF-8, skipped")
        continue
    ids = [0] + tok.encode(text).ids          # 0 = <|endoftext|> (BOS)
    bits, start, pos = 0.0, 0, 1               # predict ids[pos] from ids[start:pos]
    while pos < len(ids):
        end = min(start + W, len(ids))
        lp = logp(ids[start:end])
        for t in range(pos, end):
            bits -= lp[t - 1 - start, ids[t]] / np.log(2)
        pos = end
        start = max(0, end - K)
    print(f"{os.path.basename(f):24s} {len(ids) - 1:6d} tokens {len(data) / (len(ids) - 1):.2f} B/token  "
          f"{bits / len(data):.3f} bits/byte")
