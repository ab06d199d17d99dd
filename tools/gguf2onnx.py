#!/usr/bin/env python3
"""Convert a llama-architecture GGUF checkpoint (e.g. SmolLM2) into one fp32 ONNX decoder graph.

Only numpy, gguf and onnx are needed (no torch).  Quantized GGUF tensors (Q4_1 for the
SmolLM2 weights we ship) are dequantized to fp32 with gguf's reference dequantizer.

The graph serves both prefill (past length P = 0) and cached steps (S = 1 or more new
tokens on top of a KV cache of P positions).  Its interface is a contract with the Rust
side (see models/README.md and the manifest's [onnx] table):

  inputs   input_ids                    int64   [B, S]
           position_ids                 int64   [B, S]        absolute RoPE positions
           attention_mask               int64   [B, P+S]      1 = attend, 0 = padding
           past_key_values.{i}.key      float32 [B, kv_heads, P, head_dim]
           past_key_values.{i}.value    float32 [B, kv_heads, P, head_dim]
  outputs  logits                       float32 [B, S, vocab]
           present.{i}.key / .value     float32 [B, kv_heads, P+S, head_dim]

Attention: query s (absolute cache index P+s) may attend to cache index t iff t <= P+s
and attention_mask[b, t] == 1.  Masked scores get -1e9 before the softmax, so a padded
row (left padding) contributes exactly 0 weight.  RoPE uses position_ids, not the cache
index, so left-padded rows keep correct positions.

Only plain opset-20 ONNX operators are used, so any onnxruntime CPU build runs it.

Usage: gguf2onnx.py MODEL.gguf OUT.onnx [--tied-lm-head] [--max-layers N]
"""
import argparse
import os
import sys
import time

import numpy as np
import gguf
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20


# --------------------------------------------------------------------------- GGUF
def field(reader, key, default=None):
    """A GGUF metadata value (decoded to a Python value), or default."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def load_tensors(reader):
    """All tensors, dequantized to fp32, in numpy (row-major, [out, in]) layout."""
    out = {}
    for t in reader.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type)
        # GGUF lists dims fastest-first; numpy wants them slowest-first.
        shape = [int(x) for x in reversed(t.shape)]
        out[t.name] = np.asarray(a, dtype=np.float32).reshape(shape)
    return out


def unpermute_qk(w, n_head):
    """Undo llama.cpp's q/k row permutation.

    convert_hf_to_gguf.py reorders the rows of q_proj/k_proj of llama models so that
    RoPE acts on interleaved pairs (x0,x1),(x2,x3)...; we undo it to get the HF layout,
    where RoPE rotates the two halves of each head ("rotate_half").
    """
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hparams(reader):
    """Architecture hyper-parameters from the GGUF metadata."""
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"gguf2onnx: architecture {arch!r} not supported (llama only)")
    get = lambda k, d=None: field(reader, f"{arch}.{k}", d)
    n_head = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    hp = dict(
        arch=arch,
        n_layer=int(get("block_count")),
        hidden=hidden,
        n_head=n_head,
        n_kv=int(get("attention.head_count_kv", n_head)),
        head_dim=int(get("attention.key_length", hidden // n_head)),
        eps=float(get("attention.layer_norm_rms_epsilon")),
        rope_base=float(get("rope.freq_base", 10000.0)),
        context_length=int(get("context_length")),
    )
    if get("rope.scaling.type") not in (None, "none"):
        sys.exit("gguf2onnx: RoPE scaling is not implemented")
    return hp


# ----------------------------------------------------------------- graph builder
class Graph:
    """Tiny helper collecting nodes and initializers with unique names."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def fresh(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, arr, name=None):
        name = name or self.fresh("c")
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def i64(self, *vals):
        return self.const(np.array(vals, np.int64))

    def op(self, op_type, inputs, n_out=1, outputs=None, **attrs):
        outs = outputs or [self.fresh(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type), **attrs))
        return outs[0] if n_out == 1 else outs


def build(gguf_path, out_path, untie=True, max_layers=None):
    t0 = time.time()
    reader = gguf.GGUFReader(gguf_path)
    hp = hparams(reader)
    n_layer = min(hp["n_layer"], max_layers or hp["n_layer"])
    H, n_head, n_kv, hd, eps = hp["hidden"], hp["n_head"], hp["n_kv"], hp["head_dim"], hp["eps"]
    W = load_tensors(reader)
    vocab = W["token_embd.weight"].shape[0]
    print(f"gguf2onnx: {os.path.basename(gguf_path)} arch={hp['arch']} layers={n_layer} hidden={H} "
          f"heads={n_head} kv_heads={n_kv} head_dim={hd} vocab={vocab} eps={eps} rope_base={hp['rope_base']} "
          f"(dequantized in {time.time() - t0:.1f} s)")

    g = Graph()

    def linear(x, wname):  # x @ W^T (GGUF/HF weights are [out, in])
        return g.op("MatMul", [x, g.const(np.ascontiguousarray(W[wname].T))])

    def rmsnorm(x, wname):  # x / sqrt(mean(x^2) + eps) * w
        ms = g.op("ReduceMean", [g.op("Mul", [x, x]), g.i64(-1)], keepdims=1)
        d = g.op("Sqrt", [g.op("Add", [ms, g.const(np.array(eps, np.float32))])])
        return g.op("Mul", [g.op("Div", [x, d]), g.const(W[wname])])

    # ---- interface
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])]
    for i in range(n_layer):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kv}", TensorProto.FLOAT, ["batch", n_kv, "past", hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kv}", TensorProto.FLOAT, ["batch", n_kv, "total", hd]))

    # ---- token embedding
    emb = g.const(W["token_embd.weight"], "embed_tokens")
    x = g.op("Gather", [emb, "input_ids"], axis=0)  # [B,S,H]

    # ---- attention bias [B,1,S,T]: 0 where allowed, -1e9 where not
    S = g.op("Slice", [g.op("Shape", ["input_ids"]), g.i64(1), g.i64(2)])
    P = g.op("Slice", [g.op("Shape", ["past_key_values.0.key"]), g.i64(2), g.i64(3)])
    T = g.op("Add", [P, S])
    P0, T0 = g.op("Squeeze", [P, g.i64(0)]), g.op("Squeeze", [T, g.i64(0)])
    one, zero = g.const(np.array(1, np.int64)), g.const(np.array(0, np.int64))
    q_col = g.op("Unsqueeze", [g.op("Range", [P0, T0, one]), g.i64(1)])    # [S,1] cache index of each query
    k_row = g.op("Unsqueeze", [g.op("Range", [zero, T0, one]), g.i64(0)])  # [1,T]
    causal = g.op("LessOrEqual", [k_row, q_col])                           # [S,T]
    am = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), g.i64(1, 2)])  # [B,1,1,T]
    allowed = g.op("And", [causal, am])
    bias = g.op("Where", [allowed, g.const(np.array(0.0, np.float32)), g.const(np.array(-1e9, np.float32))])

    # ---- RoPE tables from position_ids (HF rotate_half convention)
    inv_freq = (1.0 / (hp["rope_base"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))).astype(np.float32)
    pos = g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=TensorProto.FLOAT), g.i64(2)])  # [B,S,1]
    freqs = g.op("Mul", [pos, g.const(inv_freq[None, None, :])])                              # [B,S,hd/2]
    ang = g.op("Concat", [freqs, freqs], axis=-1)                                               # [B,S,hd]
    cos = g.op("Unsqueeze", [g.op("Cos", [ang]), g.i64(1)])                                     # [B,1,S,hd]
    sin = g.op("Unsqueeze", [g.op("Sin", [ang]), g.i64(1)])
    halves = g.i64(hd // 2, hd // 2)

    def rope(t):  # t*cos + rotate_half(t)*sin, rotate_half(a,b) = (-b,a)
        a, b = g.op("Split", [t, halves], n_out=2, axis=-1)
        rot = g.op("Concat", [g.op("Neg", [b]), a], axis=-1)
        return g.op("Add", [g.op("Mul", [t, cos]), g.op("Mul", [rot, sin])])

    def heads(t, nh):  # [B,S,nh*hd] -> [B,nh,S,hd]
        return g.op("Transpose", [g.op("Reshape", [t, g.i64(0, 0, nh, hd)])], perm=[0, 2, 1, 3])

    group = n_head // n_kv
    scale = g.const(np.array(hd ** -0.5, np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."
        W[p + "attn_q.weight"] = unpermute_qk(W[p + "attn_q.weight"], n_head)
        W[p + "attn_k.weight"] = unpermute_qk(W[p + "attn_k.weight"], n_kv)
        h = rmsnorm(x, p + "attn_norm.weight")
        q = rope(heads(linear(h, p + "attn_q.weight"), n_head))
        k = rope(heads(linear(h, p + "attn_k.weight"), n_kv))
        v = heads(linear(h, p + "attn_v.weight"), n_kv)
        k_all = g.op("Concat", [f"past_key_values.{i}.key", k], axis=2, outputs=[f"present.{i}.key"])
        v_all = g.op("Concat", [f"past_key_values.{i}.value", v], axis=2, outputs=[f"present.{i}.value"])
        # Grouped-query attention without broadcasting the cache: the query heads of one kv
        # group are stacked along the row axis, q [B,n_head,S,hd] -> [B,kv,group*S,hd] (a
        # Reshape: query head h = kv*group + j is row block j of kv head kv), so each kv
        # head's K and V are read once, in place.  K^T is a Transpose of the last two axes
        # feeding MatMul, which onnxruntime fuses into FusedMatMul(transB=1): no copy of K.
        qg = g.op("Reshape", [g.op("Mul", [q, scale]), g.i64(0, n_kv, -1, hd)])           # [B,kv,group*S,hd]
        scores = g.op("MatMul", [qg, g.op("Transpose", [k_all], perm=[0, 1, 3, 2])])     # [B,kv,group*S,T]
        scores = g.op("Reshape", [scores, g.i64(0, n_head, -1, 0)])                   # [B,n_head,S,T]
        probs = g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1)
        o = g.op("MatMul", [g.op("Reshape", [probs, g.i64(0, n_kv, -1, 0)]),
                            v_all])                                                         # [B,kv,group*S,hd]
        o = g.op("Reshape", [o, g.i64(0, n_head, -1, hd)])                                  # [B,n_head,S,hd]
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3]), g.i64(0, 0, n_head * hd)])
        x = g.op("Add", [x, linear(o, p + "attn_output.weight")])
        # SwiGLU MLP
        h = rmsnorm(x, p + "ffn_norm.weight")
        gate = linear(h, p + "ffn_gate.weight")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        x = g.op("Add", [x, linear(g.op("Mul", [act, linear(h, p + "ffn_up.weight")]), p + "ffn_down.weight")])

    x = rmsnorm(x, "output_norm.weight")
    if "output.weight" in W:           # separate lm head
        lm = g.const(np.ascontiguousarray(W["output.weight"].T))
    elif untie:                         # tied, stored as an explicit transposed copy (default)
        lm = g.const(np.ascontiguousarray(W["token_embd.weight"].T))
    else:                               # tied: reuse the embedding table via a Transpose node.
        # 113 MB smaller file, but onnxruntime then transposes the 49152x576 table on
        # every run: cached steps measured 2x slower (127 vs 60 ms at batch 1).
        lm = g.op("Transpose", [emb], perm=[1, 0])
    g.op("MatMul", [x, lm], outputs=["logits"])

    graph = helper.make_graph(g.nodes, f"{hp['arch']}_decoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="llmpack-gguf2onnx")
    model.ir_version = 9
    meta = dict(hp, n_layer=n_layer, vocab=vocab, source=os.path.basename(gguf_path))
    for k, v in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, str(v)
    size = sum(t.ByteSize() for t in g.inits)
    tmp = out_path + ".part"
    onnx.save_model(model, tmp)  # < 2 GB for the models we convert: no external data
    os.replace(tmp, out_path)
    print(f"gguf2onnx: wrote {out_path} ({size / 1e6:.0f} MB of weights, {len(g.nodes)} nodes) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--tied-lm-head", action="store_true",
                    help="for tied embeddings, emit a Transpose of the embedding table instead of a "
                         "transposed copy (smaller file, ~2x slower cached steps)")
    ap.add_argument("--max-layers", type=int, help="debug: keep only the first N layers")
    a = ap.parse_args()
    build(a.gguf, a.out, not a.tied_lm_head, a.max_layers)
