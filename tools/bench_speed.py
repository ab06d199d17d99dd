#!/usr/bin/env python3
"""Speed of the converted model under onnxruntime CPU (intra_op threads = 2 by default).

  * prefill: one pass over 256 tokens at batch 1 (S = 256, P = 0)
  * cached one-token steps at batch B in {1, 8, 16, 32, 64} with a past of ~512 positions
    (the past is a real 512-token prefill, copied into every row; speed does not depend on
    the values).  tokens/s = B * steps / time.
  * as a side check, row 0 of each batch-B step is compared bit-for-bit with the batch-1 step.

Needs numpy, onnxruntime, tokenizers.
Usage: bench_speed.py MODEL_DIR [--threads 2] [--past 512] [--steps 8]
"""
import argparse
import os
import sys
import time

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ortutil import Decoder  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--past", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batches", default="1,8,16,32,64")
    a = ap.parse_args()
    dec = Decoder(os.path.join(a.model_dir, "model.onnx"), threads=a.threads)
    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    ids = np.array([0] + tok.encode(open(a.text, encoding="utf-8").read()).ids, np.int64)

    # prefill 256
    x = ids[None, :256]
    dec.run(x)  # warm-up
    ts = []
    for _ in range(3):
        t0 = time.perf_counter(); dec.run(x); ts.append(time.perf_counter() - t0)
    print(f"prefill 256 tokens, batch 1, threads {a.threads}: best {min(ts):.3f} s "
          f"({256 / min(ts):.0f} tokens/s), mean {np.mean(ts):.3f} s", flush=True)

    # past of a.past real positions
    _, past1 = dec.run(ids[None, :a.past])
    nxt = ids[a.past:a.past + a.steps]
    for B in [int(b) for b in a.batches.split(",")]:
        past = [np.repeat(p, B, axis=0) for p in past1]
        tokens = np.repeat(nxt[:, None], B, axis=1)  # [steps, B]
        lg, _ = dec.run(tokens[0][:, None], past=past)  # warm-up (also the batch-identity check)
        same = np.array_equal(lg[0, -1], dec.run(tokens[0][:1, None], past=past1)[0][0, -1])
        t0 = time.perf_counter()
        p = past
        for s in range(a.steps):
            _, p = dec.run(tokens[s][:, None], past=p)
        dt = time.perf_counter() - t0
        print(f"cached step, batch {B:3d}, past {a.past}..{a.past + a.steps - 1}: {dt / a.steps * 1000:7.1f} ms/step, "
              f"{B * a.steps / dt:7.1f} tokens/s   (row 0 == batch-1 step bit-for-bit: {same})", flush=True)


if __name__ == "__main__":
    main()
