#!/usr/bin/env python3
"""Pack several train.py runs for the way back from the device machine (at most 8 files of at
most 16 MiB each come back), and unpack them here.

  pack_runs.py RUNS_DIR OUT_DIR             # RUNS_DIR/<name>/{weights_a,weights_b}.npz, hparams.json, train.log
      -> OUT_DIR/weights_<k>.npz (fp16 tensors, keys "<name>/<tensor>", each file <= 15 MiB)
         + OUT_DIR/runs.tar (every run's hparams.json and train.log)
  pack_runs.py --unpack FILES_DIR RUNS_DIR  # -> RUNS_DIR/<name>/{weights.npz (fp32), hparams.json, train.log}

fp16 halves the bytes; the round trip changes each weight by at most 2^-11 relative, far below
what training moves them (the exporters' checks compare against the saved logits, so they run
with a looser tolerance or not at all on unpacked weights: the `check.*` arrays are dropped).
Needs numpy."""
import io, os, sys, tarfile
import numpy as np

LIMIT = 15 * 2 ** 20


def pack(runs, out):
    os.makedirs(out, exist_ok=True)
    tensors = []
    with tarfile.open(os.path.join(out, "runs.tar"), "w") as tar:
        for name in sorted(os.listdir(runs)):
            d = os.path.join(runs, name)
            if not os.path.isfile(os.path.join(d, "hparams.json")):
                continue
            for f in ("hparams.json", "train.log"):
                if os.path.exists(os.path.join(d, f)):
                    tar.add(os.path.join(d, f), arcname=f"{name}/{f}")
            for part in ("weights_a.npz", "weights_b.npz"):
                if os.path.exists(os.path.join(d, part)):
                    for k, v in np.load(os.path.join(d, part)).items():
                        if not k.startswith("check."):
                            tensors.append((f"{name}/{k}", v.astype(np.float16)))
    chunk, size, k = {}, 0, 0
    for key, v in tensors:
        if chunk and size + v.nbytes > LIMIT:
            np.savez(os.path.join(out, f"weights_{k}.npz"), **chunk); k += 1; chunk, size = {}, 0
        chunk[key] = v; size += v.nbytes
    if chunk:
        np.savez(os.path.join(out, f"weights_{k}.npz"), **chunk); k += 1
    print(f"packed {len(tensors)} tensors into {k} files + runs.tar in {out}")


def unpack(src, runs):
    W = {}
    for f in sorted(os.listdir(src)):
        if f.startswith("weights_") and f.endswith(".npz"):
            for key, v in np.load(os.path.join(src, f)).items():
                name, t = key.split("/", 1)
                W.setdefault(name, {})[t] = v.astype(np.float32)
    with tarfile.open(os.path.join(src, "runs.tar")) as tar:
        tar.extractall(runs)
    for name, w in W.items():
        os.makedirs(os.path.join(runs, name), exist_ok=True)
        np.savez(os.path.join(runs, name, "weights.npz"), **w)
        print(f"{runs}/{name}/weights.npz: {len(w)} tensors")


if __name__ == "__main__":
    if sys.argv[1] == "--unpack":
        unpack(sys.argv[2], sys.argv[3])
    else:
        pack(sys.argv[1], sys.argv[2])
