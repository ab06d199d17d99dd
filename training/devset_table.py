#!/usr/bin/env python3
"""Markdown tables from `llmpack eval --json` results on the development set (devset_eval.sh).

  devset_table.py A.json [B.json ...]

One column of bits/byte per result file (its model; named by the file), then zstd -19, xz -9e and
brotli -11 (from the first file: the same bytes in every run) and, per model, the change against
brotli -11 (negative = fewer bits than brotli).  Rows: each dev file (class from its name prefix),
then the mean per class and over all files (files are equal-sized, so means are byte-weighted).
Also: each run's coding speed (whole set, files coded together) and whether every round trip was
exact."""
import json, os, sys

CLASS = {"prose": "prose", "page": "html", "urls": "urls", "code": "code", "data": "data", "conf": "config",
         "log": "logs", "proto": "protocol", "nonen": "non-english"}
runs = [(os.path.splitext(os.path.basename(p))[0], {os.path.basename(r["file"]): r for r in json.load(open(p))})
        for p in sys.argv[1:]]
names = list(runs[0][1])
base = runs[0][1]
cols = [n for n, _ in runs]
print("| file | class | " + " | ".join(cols) + " | zstd -19 | xz -9e | brotli -11 | " +
      " | ".join(f"{c} vs brotli" for c in cols) + " |")
print("|---|---|" + "---:|" * (2 * len(cols) + 3))
acc = {}


def row(label, cls, vals, z, x, b):
    print(f"| {label} | {cls} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {z:.3f} | {x:.3f} | {b:.3f} | " +
          " | ".join(f"{100 * (v / b - 1):+.0f} %" for v in vals) + " |")


for f in names:
    cls = CLASS.get(f.split("-")[0], "?")
    vals = [r[f]["lm_bpb"] for _, r in runs if f in r]
    if len(vals) != len(runs):
        continue
    z, x, b = base[f]["zstd19_bpb"], base[f]["xz9e_bpb"], base[f]["brotli11_bpb"]
    row(f, cls, vals, z, x, b)
    for key in (cls, "all"):
        acc.setdefault(key, []).append((vals, z, x, b))
for key, items in sorted(acc.items(), key=lambda kv: kv[0] == "all"):
    n = len(items)
    mean = lambda k: sum(it[k] for it in items) / n
    vals = [sum(it[0][i] for it in items) / n for i in range(len(runs))]
    row(f"**mean {key}** ({n})", "", vals, mean(1), mean(2), mean(3))
print()
for name, r in runs:
    rs = list(r.values())
    ok = all(x["roundtrip_ok"] for x in rs)
    lm_frames = sum(x["frames_lm"] for x in rs)
    other = sum(x["frames_zstd"] + x["frames_raw"] for x in rs)
    print(f"- {name}: encode {rs[0]['encode_bytes_per_s'] / 1000:.2f} KB/s, decode {rs[0]['decode_bytes_per_s'] / 1000:.2f} KB/s "
          f"(whole set, together), frames lm {lm_frames} / zstd+raw {other}, round trips exact: {'all' if ok else 'NO'}")
