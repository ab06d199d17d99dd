#!/usr/bin/env python3
"""Check a converted ONNX model against an independent numpy forward pass of the GGUF.

The reference is written from the llama.cpp side, so it shares as little as possible with
gguf2onnx.py: it keeps the GGUF's q/k row order as stored and applies RoPE the llama.cpp
way (rotating adjacent pairs (x0,x1),(x2,x3),...) instead of un-permuting the weights and
using HF's rotate_half; it runs in float64; it attends with an explicit causal loop-free
mask and plain numpy softmax.  Weights are dequantized with gguf's reference dequantizer
(the one thing both sides share).

Reports max |logit difference|, top-token (argmax) agreement and the bits/token each
model gives to the text.  Optionally also checks our tokenizer.json against transformers'
GGUF tokenizer, when transformers is importable.

Needs numpy, gguf, onnxruntime, tokenizers.
Usage: refcheck_numpy.py MODEL.gguf MODEL_DIR [TEXT_FILE] [--tokens N]
"""
import argparse
import os
import sys
import time

import numpy as np
import gguf
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ortutil import Decoder, bits_per_token  # noqa: E402


def field(r, key, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


def reference_logits(gguf_path, ids):
    r = gguf.GGUFReader(gguf_path)
    arch = field(r, "general.architecture")
    get = lambda k, d=None: field(r, f"{arch}.{k}", d)
    L, H = int(get("block_count")), int(get("embedding_length"))
    nh, nkv = int(get("attention.head_count")), int(get("attention.head_count_kv"))
    hd, eps, base = H // nh, float(get("attention.layer_norm_rms_epsilon")), float(get("rope.freq_base"))
    W = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        W[t.name] = np.asarray(a, np.float64).reshape([int(x) for x in reversed(t.shape)])

    S = len(ids)
    pos = np.arange(S, dtype=np.float64)
    theta = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)      # [hd/2]
    ang = pos[:, None] * theta[None, :]                                  # [S,hd/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]         # [S,1,hd/2]

    def rope_pairs(x):  # x [S,heads,hd]; llama.cpp "normal" RoPE: rotate (x[2j], x[2j+1])
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    def norm(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    x = W["token_embd.weight"][ids]                                      # [S,H]
    causal = np.tril(np.ones((S, S), bool))
    for i in range(L):
        p = f"blk.{i}."
        h = norm(x, W[p + "attn_norm.weight"])
        q = rope_pairs((h @ W[p + "attn_q.weight"].T).reshape(S, nh, hd))
        k = rope_pairs((h @ W[p + "attn_k.weight"].T).reshape(S, nkv, hd))
        v = (h @ W[p + "attn_v.weight"].T).reshape(S, nkv, hd)
        out = np.empty((S, nh, hd))
        for j in range(nh):
            kj = j // (nh // nkv)
            sc = (q[:, j] @ k[:, kj].T) / np.sqrt(hd)
            sc = np.where(causal, sc, -np.inf)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            out[:, j] = (sc / sc.sum(-1, keepdims=True)) @ v[:, kj]
        x = x + out.reshape(S, H) @ W[p + "attn_output.weight"].T
        h = norm(x, W[p + "ffn_norm.weight"])
        g = h @ W[p + "ffn_gate.weight"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    x = norm(x, W["output_norm.weight"])
    head = W.get("output.weight", W["token_embd.weight"])
    return x @ head.T


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("model_dir")
    ap.add_argument("text", nargs="?", default="/usr/share/common-licenses/Apache-2.0")
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--bos", type=int, default=0)
    a = ap.parse_args()

    tok = Tokenizer.from_file(os.path.join(a.model_dir, "tokenizer.json"))
    text = open(a.text, encoding="utf-8").read()
    ids_all = tok.encode(text, add_special_tokens=False).ids
    print(f"text: {a.text} ({len(text)} chars, {len(ids_all)} tokens); using BOS + first {a.tokens}")
    assert tok.decode(ids_all) == text, "tokenizer round trip failed"
    print("tokenizer round trip (decode(encode(text)) == text): True")
    try:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from transformers import AutoTokenizer
        d, f = os.path.split(os.path.abspath(a.gguf))
        hf_ids = AutoTokenizer.from_pretrained(d, gguf_file=f)(text, add_special_tokens=False)["input_ids"]
        print(f"tokenizer ids identical to transformers' GGUF tokenizer: {hf_ids == ids_all}")
    except Exception as e:  # transformers is optional
        print(f"(transformers tokenizer comparison skipped: {type(e).__name__}: {str(e)[:120]})")

    ids = np.array([a.bos] + ids_all[: a.tokens], np.int64)
    t0 = time.time()
    ref = reference_logits(a.gguf, ids)
    print(f"numpy float64 reference forward: {time.time() - t0:.1f} s")
    dec = Decoder(os.path.join(a.model_dir, "model.onnx"), threads=2)
    t0 = time.time()
    out = dec.run(ids[None])[0][0]
    print(f"onnxruntime forward (1 x {len(ids)}): {time.time() - t0:.2f} s")

    diff = np.abs(out.astype(np.float64) - ref)
    agree = (out.argmax(-1) == ref.argmax(-1)).mean()
    print(f"max |logit diff| = {diff.max():.3e} (mean {diff.mean():.3e}; reference |logit| max {np.abs(ref).max():.2f})")
    print(f"argmax agreement = {agree * 100:.2f}% of {len(ids)} positions")
    tgt = ids[1:]
    print(f"bits/token: onnx {bits_per_token(out[:-1], tgt):.4f}  numpy-reference {bits_per_token(ref[:-1], tgt):.4f}")


if __name__ == "__main__":
    main()
