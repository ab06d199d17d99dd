#!/usr/bin/env python3
"""Model-only cross-entropy, bits per byte, of a `state`-contract model folder (a recurrent model
from tools/npz2state.py) on files: BOS + each file's tokens, fed one token per call from the zero
state to the end of the file (no window, no re-prime: a recurrent model's natural mode), all files
stepped together as rows of one batch (rows are independent: npz2state.py checks it), onnxruntime
CPU, 1 thread.  The counterpart of heldout_xent.py (transformers, sliding window).
Needs numpy, onnxruntime, tokenizers.   Usage: state_xent.py MODEL_DIR FILE...
"""
import os, sys, tomllib
import numpy as np
import onnxruntime as ort
import tokenizers

md, files = sys.argv[1], sys.argv[2:]
m = tomllib.load(open(os.path.join(md, "manifest.toml"), "rb"))
o = m["onnx"]
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
s = ort.InferenceSession(os.path.join(md, o["file"]), so, providers=["CPUExecutionProvider"])
tok = tokenizers.Tokenizer.from_file(os.path.join(md, "tokenizer.json"))
ins = [o["state_in"].format(i=i) for i in range(o["states"])]
outs = [o["state_out"].format(i=i) for i in range(o["states"])]
shapes = {i.name: i.shape[1:] for i in s.get_inputs()}
seqs, sizes = [], []
for f in files:
    b = open(f, "rb").read()
    seqs.append([m["model"]["bos_token_id"]] + tok.encode(b.decode("utf-8", "replace"), add_special_tokens=False).ids)
    sizes.append(len(b))
B, T = len(seqs), max(map(len, seqs))
state = [np.zeros((B, *shapes[n]), np.float32) for n in ins]
nll = np.zeros(B)
for t in range(T - 1):
    ids = np.array([[q[t] if t < len(q) else 0] for q in seqs], np.int64)
    r = s.run([o["logits"]] + outs, {o["input_ids"]: ids, **dict(zip(ins, state))})
    lg = r[0][:, 0].astype(np.float64)
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    for b_, q in enumerate(seqs):
        if t + 1 < len(q):
            nll[b_] += lse[b_] - lg[b_, q[t + 1]]
    state = r[1:]
for f, n, size, q in zip(files, nll, sizes, seqs):
    print(f"{os.path.basename(f)}\t{n / np.log(2) / size:.3f} bits/byte\t{len(q) - 1} tokens")
