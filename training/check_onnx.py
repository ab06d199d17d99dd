#!/usr/bin/env python3
"""Sanity checks of models/default/model.onnx with onnxruntime (CPU):
(1) a full pass over BOS + 256 tokens vs prefill 200 + 56 cached one-token steps (max |diff|);
(2) bits/token on held-out validation tokens (training/data/val.bin), windows of 512 (or the
model's context_length from DIR/manifest.toml when that is shorter).  Usage: check_onnx.py [DIR]"""
import os, sys, time, tomllib
import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
md = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "models", "default")
W = 512
if os.path.exists(os.path.join(md, "manifest.toml")):
    W = min(W, tomllib.load(open(os.path.join(md, "manifest.toml"), "rb"))["model"]["context_length"])
so = ort.SessionOptions(); so.intra_op_num_threads = 1
s = ort.InferenceSession(os.path.join(md, "model.onnx"), so, providers=["CPUExecutionProvider"])
ins = [i for i in s.get_inputs() if i.name.startswith("past")]
L = len(ins) // 2; kvh, hd = ins[0].shape[1], ins[0].shape[3]


def run(ids, pos, mask, past):
    feed = {"input_ids": ids, "position_ids": pos, "attention_mask": mask}
    for i in range(L):
        feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = past[i]
    out = s.run(None, feed)
    return out[0], [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(L)]


empty = lambda B: [(np.zeros((B, kvh, 0, hd), np.float32),) * 2 for _ in range(L)]
val = np.fromfile(os.path.join(ROOT, "training", "data", "val.bin"), dtype=np.uint16).astype(np.int64)
seq = np.concatenate([[0], val[1000:1000 + min(256, W - 1)]])[None, :]
n = seq.shape[1]
full, _ = run(seq, np.arange(n)[None], np.ones((1, n), np.int64), empty(1))
P = 200
lg, past = run(seq[:, :P], np.arange(P)[None], np.ones((1, P), np.int64), empty(1))
steps = [lg]
for t in range(P, n):
    lg, past = run(seq[:, t:t + 1], np.array([[t]]), np.ones((1, t + 1), np.int64), past)
    steps.append(lg)
inc = np.concatenate(steps, 1)
print(f"cached vs full: max |logit diff| {np.abs(inc - full).max():.2e}, max |logit| {np.abs(full).max():.1f}, "
      f"argmax agree {(inc.argmax(-1) == full.argmax(-1)).mean() * 100:.1f}%")

tot, cnt = 0.0, 0
for start in np.linspace(0, len(val) - W - 1, 24).astype(int):
    w = val[start:start + W + 1][None, :]
    lg, _ = run(w[:, :-1], np.arange(W)[None], np.ones((1, W), np.int64), empty(1))
    lg = lg[0].astype(np.float64); lg -= lg.max(-1, keepdims=True)
    lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    tot -= lp[np.arange(W), w[0, 1:]].sum(); cnt += W
print(f"val bits/token (ONNX, {cnt} tokens, windows of {W}): {tot / cnt / np.log(2):.3f}")

# speed: cached one-token step at past 512, batch 1 and 16
for B in (1, 16):
    past = [(np.random.randn(B, kvh, 512, hd).astype(np.float32),) * 2 for _ in range(L)]
    ids = np.ones((B, 1), np.int64); pos = np.full((B, 1), 512); m = np.ones((B, 513), np.int64)
    run(ids, pos, m, past)
    t0 = time.time(); k = 20
    for _ in range(k):
        run(ids, pos, m, past)
    dt = (time.time() - t0) / k
    print(f"cached step past=512 batch {B}: {dt * 1e3:.2f} ms ({B / dt:.0f} tokens/s, 1 thread)")
