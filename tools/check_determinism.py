#!/usr/bin/env python3
"""Measure the bit-exactness facts the Rust codec relies on (onnxruntime CPU, fp32 model).

The codec decodes by recomputing exactly the logits the encoder saw, so it matters which
ways of computing "the logits of this context" give bit-identical results:

  (i)   cached one-token step: row r of a batch-B step vs the same context at batch 1,
        all rows with the same past length P                             (B = 2, 5, 16)
  (ii)  same, but rows have different true lengths, left-padded to a common past length
        with attention_mask = 0 on the padding (positions stay the true ones).  Compared
        with (a) the unpadded context at batch 1 and (b) the same padded row at batch 1
  (iii) prefill of R tokens (S = R): batch 1 vs a row of batch 4
  (iv)  cached steps with intra_op threads 1 vs 2 (B = 1 and 16)
  plus  repeat runs, and cached steps vs one whole-sequence pass (expected to differ)

Contexts are real text (tokenized with the model's tokenizer.json).  Every comparison
prints bit-identical yes/no and the max |difference| of the logits (and the present KV).

Needs numpy, onnxruntime, tokenizers.   Usage: check_determinism.py MODEL_DIR [TEXT_FILE]
"""
import argparse
import os
import sys

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ortutil import Decoder  # noqa: E402

RESULTS = []


def report(label, a, b, extra_a=None, extra_b=None):
    same = np.array_equal(a, b)
    d = float(np.abs(a.astype(np.float64) - b).max())
    kv = ""
    if extra_a is not None:
        kv_same = all(np.array_equal(x, y) for x, y in zip(extra_a, extra_b))
        kv = f"; present KV bit-identical: {'yes' if kv_same else 'no'}"
    line = f"{label}: logits bit-identical: {'YES' if same else 'NO'} (max |diff| {d:.3g}){kv}"
    RESULTS.append(line)
    print(line, flush=True)
    return same


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("text", nargs="?", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--past", type=int, default=48, help="past length P for the step tests")
    a = ap.parse_args()
    onnx_path = os.path.join(a.model_dir, "model.onnx")
    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    ids = np.array(tok.encode(open(a.text, encoding="utf-8").read(), add_special_tokens=False).ids, np.int64)
    d2 = Decoder(onnx_path, threads=2)
    d1 = Decoder(onnx_path, threads=1)
    P = a.past

    def ctx(r, length):  # a different real-text context for each row r, preceded by BOS (0)
        start = 1 + 97 * r
        return np.concatenate([[0], ids[start:start + length - 1]]).astype(np.int64)

    def past_of(dec, c):  # batch-1 prefill of context c (all but its last token) -> KV
        return dec.run(c[None, :-1])[1]

    def step1(dec, c):  # batch-1 cached step predicting after c
        lg, pres = dec.run(c[None, -1:], past=past_of(dec, c))
        return lg[0, -1], [p[0] for p in pres]

    # (i) same past length
    for B in (2, 5, 16):
        cs = [ctx(r, P + 1) for r in range(B)]
        singles = [step1(d2, c) for c in cs]
        pasts = [past_of(d2, c) for c in cs]
        stacked = [np.concatenate([p[j] for p in pasts]) for j in range(len(pasts[0]))]
        lg, pres = d2.run(np.stack([c[-1:] for c in cs]), past=stacked)
        ok = all(np.array_equal(lg[r, -1], singles[r][0]) for r in range(B))
        d = max(float(np.abs(lg[r, -1] - singles[r][0]).max()) for r in range(B))
        kv_ok = all(np.array_equal(pres[j][r], singles[r][1][j]) for r in range(B) for j in range(len(pres)))
        line = (f"(i) step, same P={P}, batch {B} rows vs batch 1: logits bit-identical: "
                f"{'YES' if ok else 'NO'} (max |diff| {d:.3g}); present KV bit-identical: {'yes' if kv_ok else 'no'}")
        RESULTS.append(line)
        print(line, flush=True)

    # (ii) different true lengths, left padding with attention_mask = 0
    for B in (2, 5, 16):
        lens = [P + 1 - (7 * r) % 29 for r in range(B)]          # true lengths incl. the new token
        T = max(lens)
        cs = [ctx(r, n) for r, n in enumerate(lens)]
        singles = [step1(d2, c) for c in cs]
        # padded past: run each row's prefill left-padded at batch 1, then stack
        pasts, padded_single = [], []
        for c, n in zip(cs, lens):
            pad = T - n
            pid = np.concatenate([np.zeros(pad, np.int64), c[:-1]])[None]
            pos = np.concatenate([np.zeros(pad, np.int64), np.arange(n - 1)])[None]
            m = np.concatenate([np.zeros(pad, np.int64), np.ones(n - 1, np.int64)])[None]
            pst = d2.run(pid, positions=pos, mask=m)[1]
            pasts.append(pst)
            m1 = np.concatenate([m, [[1]]], axis=1)
            padded_single.append(d2.run(c[None, -1:], positions=[[n - 1]], mask=m1, past=pst)[0][0, -1])
        stacked = [np.concatenate([p[j] for p in pasts]) for j in range(len(pasts[0]))]
        mask = np.stack([np.concatenate([np.zeros(T - n, np.int64), np.ones(n, np.int64)]) for n in lens])
        pos = np.array([[n - 1] for n in lens], np.int64)
        lg = d2.run(np.stack([c[-1:] for c in cs]), positions=pos, mask=mask, past=stacked)[0]
        for label, ref in (("vs unpadded context at batch 1", [s[0] for s in singles]),
                           ("vs same padded row at batch 1", padded_single)):
            ok = all(np.array_equal(lg[r, -1], ref[r]) for r in range(B))
            d = max(float(np.abs(lg[r, -1] - ref[r]).max()) for r in range(B))
            line = (f"(ii) step, left-padded lengths {min(lens)}..{max(lens)}, batch {B} rows {label}: "
                    f"logits bit-identical: {'YES' if ok else 'NO'} (max |diff| {d:.3g})")
            RESULTS.append(line)
            print(line, flush=True)
    # padding alone, batch 1: padded context vs unpadded
    c = ctx(3, P - 10)
    pst = d2.run(np.concatenate([np.zeros(10, np.int64), c[:-1]])[None],
                 positions=np.concatenate([np.zeros(10, np.int64), np.arange(len(c) - 1)])[None],
                 mask=np.concatenate([np.zeros(10, np.int64), np.ones(len(c) - 1, np.int64)])[None])[1]
    lgp = d2.run(c[None, -1:], positions=[[len(c) - 1]],
                 mask=np.concatenate([np.zeros(10, np.int64), np.ones(len(c), np.int64)])[None], past=pst)[0][0, -1]
    report("(ii') batch 1 only: step after 10 left-padding positions vs no padding", lgp, step1(d2, c)[0])

    # (iii) prefill of R tokens, batch 1 vs a row of batch 4
    for R in (16, 128):
        cs = np.stack([ctx(r, R) for r in range(4)])
        b4, pres4 = d2.run(cs)
        for r in (0, 3):
            b1, pres1 = d2.run(cs[r:r + 1])
            report(f"(iii) prefill R={R}: batch 1 vs row {r} of batch 4", b1[0], b4[r],
                   [p[0] for p in pres1], [p[r] for p in pres4])

    # (iv) threads 1 vs 2, cached steps
    for B in (1, 16):
        cs = [ctx(r, P + 1) for r in range(B)]
        pasts = [past_of(d2, c) for c in cs]
        stacked = [np.concatenate([p[j] for p in pasts]) for j in range(len(pasts[0]))]
        x = np.stack([c[-1:] for c in cs])
        l2, p2 = d2.run(x, past=stacked)
        l1, p1 = d1.run(x, past=stacked)
        report(f"(iv) step B={B}: intra_op threads 1 vs 2", l1, l2, p1, p2)
        report(f"(iv) step B={B}: threads 2, run twice", l2, d2.run(x, past=stacked)[0])
    # past produced with 1 thread vs 2 threads (prefill), then stepped
    c = ctx(0, 257)
    report("(iv') prefill 256 tokens: threads 1 vs 2", d1.run(c[None, :-1])[0], d2.run(c[None, :-1])[0])

    # cached steps vs whole-sequence pass (not expected to be identical)
    c = ctx(1, P + 9)
    full = d2.run(c[None])[0][0, P:]
    lg, pst = d2.run(c[None, :P])
    inc = []
    for k in range(P, P + 9):
        lg, pst = d2.run(c[None, k:k + 1], past=pst)
        inc.append(lg[0, -1])
    report(f"(extra) 9 cached steps after a {P}-token prefill vs one {P + 9}-token pass", np.stack(inc), full)

    print("\nSUMMARY")
    for line in RESULTS:
        print(" ", line)


if __name__ == "__main__":
    main()
