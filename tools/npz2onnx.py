#!/usr/bin/env python3
"""Build the project's ONNX decoder graph (contract: models/README.md) from a dict of fp32
numpy weights named like GGUF tensors (training/train.py writes such a weights.npz).

Same graph as tools/gguf2onnx.py (RMSNorm, RoPE rotate_half from position_ids, folded GQA/MHA,
SwiGLU) with two differences: no q/k un-permutation (the weights are already in HF
rotate_half order), and a tied lm head is stored ONCE, as the transposed table [H, V]
used by the final MatMul; the token embedding is a Gather on axis 1 of that table followed
by a small Transpose of the gathered [H, B, S] rows (no per-run transpose of the table).

Usage: npz2onnx.py weights.npz hparams.json OUT.onnx
"""
import json, os, sys, time
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20


class Graph:
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

    def op(self, op_type, inputs, n_out=1, outputs=None, domain=None, **attrs):
        outs = outputs or [self.fresh(op_type) for _ in range(n_out)]
        kw = {"domain": domain} if domain else {}
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=self.fresh("n_" + op_type), **kw, **attrs))
        return outs[0] if n_out == 1 else outs


def build(W, hp, out_path):
    t0 = time.time()
    n_layer, H, n_head, n_kv, hd = hp["layers"], hp["dim"], hp["heads"], hp["kv_heads"], hp["head_dim"]
    eps, rope_base = hp["eps"], hp["rope_base"]
    vocab = W["token_embd.weight"].shape[0]
    g = Graph()

    def linear(x, wname):
        return g.op("MatMul", [x, g.const(np.ascontiguousarray(W[wname].T.astype(np.float32)))])

    def rmsnorm(x, wname):
        ms = g.op("ReduceMean", [g.op("Mul", [x, x]), g.i64(-1)], keepdims=1)
        d = g.op("Sqrt", [g.op("Add", [ms, g.const(np.array(eps, np.float32))])])
        return g.op("Mul", [g.op("Div", [x, d]), g.const(W[wname].astype(np.float32))])

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

    tied = "output.weight" not in W
    if tied:
        lm = g.const(np.ascontiguousarray(W["token_embd.weight"].T.astype(np.float32)), "lm_head_t")  # [H,V]
        x = g.op("Transpose", [g.op("Gather", [lm, "input_ids"], axis=1)], perm=[1, 2, 0])          # [B,S,H]
    else:
        lm = g.const(np.ascontiguousarray(W["output.weight"].T.astype(np.float32)), "lm_head_t")
        x = g.op("Gather", [g.const(W["token_embd.weight"].astype(np.float32), "embed_tokens"), "input_ids"], axis=0)

    S = g.op("Slice", [g.op("Shape", ["input_ids"]), g.i64(1), g.i64(2)])
    P = g.op("Slice", [g.op("Shape", ["past_key_values.0.key"]), g.i64(2), g.i64(3)])
    T = g.op("Add", [P, S])
    P0, T0 = g.op("Squeeze", [P, g.i64(0)]), g.op("Squeeze", [T, g.i64(0)])
    one, zero = g.const(np.array(1, np.int64)), g.const(np.array(0, np.int64))
    q_col = g.op("Unsqueeze", [g.op("Range", [P0, T0, one]), g.i64(1)])
    k_row = g.op("Unsqueeze", [g.op("Range", [zero, T0, one]), g.i64(0)])
    causal = g.op("LessOrEqual", [k_row, q_col])
    am = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), g.i64(1, 2)])
    allowed = g.op("And", [causal, am])
    bias = g.op("Where", [allowed, g.const(np.array(0.0, np.float32)), g.const(np.array(-1e9, np.float32))])

    inv_freq = (1.0 / (rope_base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))).astype(np.float32)
    pos = g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=TensorProto.FLOAT), g.i64(2)])
    freqs = g.op("Mul", [pos, g.const(inv_freq[None, None, :])])
    ang = g.op("Concat", [freqs, freqs], axis=-1)
    cos = g.op("Unsqueeze", [g.op("Cos", [ang]), g.i64(1)])
    sin = g.op("Unsqueeze", [g.op("Sin", [ang]), g.i64(1)])
    halves = g.i64(hd // 2, hd // 2)

    def rope(t):
        a, b = g.op("Split", [t, halves], n_out=2, axis=-1)
        rot = g.op("Concat", [g.op("Neg", [b]), a], axis=-1)
        return g.op("Add", [g.op("Mul", [t, cos]), g.op("Mul", [rot, sin])])

    def heads(t, nh):
        return g.op("Transpose", [g.op("Reshape", [t, g.i64(0, 0, nh, hd)])], perm=[0, 2, 1, 3])

    scale = g.const(np.array(hd ** -0.5, np.float32))
    for i in range(n_layer):
        p = f"blk.{i}."
        h = rmsnorm(x, p + "attn_norm.weight")
        q = rope(heads(linear(h, p + "attn_q.weight"), n_head))
        k = rope(heads(linear(h, p + "attn_k.weight"), n_kv))
        v = heads(linear(h, p + "attn_v.weight"), n_kv)
        k_all = g.op("Concat", [f"past_key_values.{i}.key", k], axis=2, outputs=[f"present.{i}.key"])
        v_all = g.op("Concat", [f"past_key_values.{i}.value", v], axis=2, outputs=[f"present.{i}.value"])
        qg = g.op("Reshape", [g.op("Mul", [q, scale]), g.i64(0, n_kv, -1, hd)])
        scores = g.op("MatMul", [qg, g.op("Transpose", [k_all], perm=[0, 1, 3, 2])])
        scores = g.op("Reshape", [scores, g.i64(0, n_head, -1, 0)])
        probs = g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1)
        o = g.op("MatMul", [g.op("Reshape", [probs, g.i64(0, n_kv, -1, 0)]), v_all])
        o = g.op("Reshape", [o, g.i64(0, n_head, -1, hd)])
        o = g.op("Reshape", [g.op("Transpose", [o], perm=[0, 2, 1, 3]), g.i64(0, 0, n_head * hd)])
        x = g.op("Add", [x, linear(o, p + "attn_output.weight")])
        h = rmsnorm(x, p + "ffn_norm.weight")
        gate = linear(h, p + "ffn_gate.weight")
        act = g.op("Mul", [gate, g.op("Sigmoid", [gate])])
        x = g.op("Add", [x, linear(g.op("Mul", [act, linear(h, p + "ffn_up.weight")]), p + "ffn_down.weight")])

    x = rmsnorm(x, "output_norm.weight")
    g.op("MatMul", [x, lm], outputs=["logits"])

    graph = helper.make_graph(g.nodes, "llmpack_default_decoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="llmpack-npz2onnx")
    model.ir_version = 9
    for k, v in dict(hp, vocab=vocab, tied_lm_head=tied).items():
        e = model.metadata_props.add()
        e.key, e.value = k, str(v)
    onnx.checker.check_model(model)
    tmp = out_path + ".part"
    onnx.save_model(model, tmp)
    os.replace(tmp, out_path)
    size = sum(t.ByteSize() for t in g.inits)
    print(f"npz2onnx: wrote {out_path} ({size / 1e6:.1f} MB of weights, {len(g.nodes)} nodes) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    W = dict(np.load(sys.argv[1]))
    hp = json.load(open(sys.argv[2]))
    build(W, hp, sys.argv[3])
