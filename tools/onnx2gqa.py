#!/usr/bin/env python3
"""Rebuild a model folder's decoder graph (as tools/npz2onnx.py writes it) for in-place,
any-batch inference: the same weights, with every layer's attention as ONNX Runtime's
com.microsoft GroupQueryAttention over a preallocated KV buffer.

The graph it writes (the `gqa` contract of models/README.md):
  inputs   input_ids [B, S] int64
           seqlens_k [B] int32         (each row's past length + S - 1)
           total_sequence_length [] int32  (the longest row's past length + S)
           past_key_values.{i}.key/value [B, kv_heads, W, head_dim] float32  (W = window)
  outputs  logits [B, 1, V]             (after each row's last input token only)
           present.{i}.key/value        (same buffers: bound to the past inputs, written in place)

Each row attends over its own past length (seqlens_k), so rows of any context length
share one call and no row's bits depend on the others. RoPE is applied inside the
attention op (do_rotary, rotate_half order) from cos/sin tables of W positions.
Fused ops: SkipSimplifiedLayerNormalization (residual add + RMSNorm), one packed QKV
MatMul, one gate+up MatMul.

Usage: onnx2gqa.py IN.onnx OUT.onnx [--window W] [--check TOKENS_TEXT_FILE]

--check runs both graphs with onnxruntime (needs the `onnxruntime` module, e.g.
PYTHONPATH=.cache/onnxruntime-1.31.1) on the first 300 tokens of a text: the input graph in
one pass, the output graph as a prime of 100 tokens then one-token steps, and then rows of
different context lengths stepped together vs alone. It prints the largest logit difference
and both bits/token, and fails unless the steps agree to 1e-3 and batching changes no bit.
"""
import argparse, os, sys, time
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from npz2onnx import Graph  # noqa: E402

OPSET = 20


def weights_from_npz2onnx(model):
    """The weights of a graph written by tools/npz2onnx.py, keyed like GGUF tensors.

    npz2onnx emits per layer, in order: attn_norm (Mul), q, k, v, o (MatMul), ffn_norm (Mul),
    gate, up, down (MatMul); then output_norm (Mul) and the head MatMul on `lm_head_t`."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    hp = {p.key: p.value for p in model.metadata_props}
    seq = []
    for n in model.graph.node:
        big = [i for i in n.input if i in inits and inits[i].ndim >= 1 and max(inits[i].shape) >= 64]
        if n.op_type in ("Mul", "MatMul") and big:
            seq.append((n.op_type, big[0]))
    W = {"lm_head_t": inits["lm_head_t"]}
    layers = int(hp["layers"])
    names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    kinds = ["Mul", "MatMul", "MatMul", "MatMul", "MatMul", "Mul", "MatMul", "MatMul", "MatMul"]
    pos = 0
    for i in range(layers):
        for name, kind in zip(names, kinds):
            op, init = seq[pos]
            pos += 1
            if op != kind:
                raise SystemExit(f"layer {i} {name}: expected {kind}, found {op} (not an npz2onnx graph?)")
            # MatMul weights are stored [in, out] (transposed), as the graph uses them.
            W[f"blk.{i}.{name}"] = inits[init]
    op, init = seq[pos]
    if op != "Mul":
        raise SystemExit("no output norm after the last layer")
    W["output_norm"] = inits[init]
    return W, hp


def build(W, hp, window, out_path):
    t0 = time.time()
    L, H = int(hp["layers"]), int(hp["dim"])
    nh, nkv, hd = int(hp["heads"]), int(hp["kv_heads"]), int(hp["head_dim"])
    eps, base = float(hp["eps"]), float(hp["rope_base"])
    lm = W["lm_head_t"]  # [H, V]
    V = lm.shape[1]
    g = Graph()
    ms = "com.microsoft"
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, V])]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kv}", TensorProto.FLOAT, ["batch", nkv, window, hd]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kv}", TensorProto.FLOAT, ["batch", nkv, window, hd]))

    lm_name = g.const(np.ascontiguousarray(lm.astype(np.float32)), "lm_head_t")
    x = g.op("Transpose", [g.op("Gather", [lm_name, "input_ids"], axis=1)], perm=[1, 2, 0])  # [B,S,H]

    inv_freq = 1.0 / (base ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    ang = np.arange(window, dtype=np.float64)[:, None] * inv_freq[None, :]
    cos = g.const(np.cos(ang).astype(np.float32), "cos_cache")
    sin = g.const(np.sin(ang).astype(np.float32), "sin_cache")

    def mm(a, w):
        return g.op("MatMul", [a, g.const(np.ascontiguousarray(w.astype(np.float32)))])

    # First norm on its own; later ones fuse the residual add.
    h = g.op("SimplifiedLayerNormalization", [x, g.const(W["blk.0.attn_norm"].astype(np.float32))],
             axis=-1, epsilon=eps)
    for i in range(L):
        p = f"blk.{i}."
        qkv = mm(h, np.concatenate([W[p + "attn_q"], W[p + "attn_k"], W[p + "attn_v"]], axis=1))
        attn = g.op("GroupQueryAttention",
                    [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value",
                     "seqlens_k", "total_sequence_length", cos, sin],
                    n_out=3, outputs=[g.fresh("attn"), f"present.{i}.key", f"present.{i}.value"],
                    domain=ms, num_heads=nh, kv_num_heads=nkv, do_rotary=1, rotary_interleaved=0,
                    scale=float(hd ** -0.5))[0]
        o = mm(attn, W[p + "attn_output"])
        # x = x + o ; h = rmsnorm(x)
        h, _, _, x = g.op("SkipSimplifiedLayerNormalization", [o, x, g.const(W[p + "ffn_norm"].astype(np.float32))],
                          n_out=4, outputs=[g.fresh("h"), g.fresh("m"), g.fresh("iv"), g.fresh("x")],
                          domain=ms, epsilon=eps)
        gu = mm(h, np.concatenate([W[p + "ffn_gate"], W[p + "ffn_up"]], axis=1))
        ff = int(W[p + "ffn_gate"].shape[1])
        gate, up = g.op("Split", [gu, g.const(np.array([ff, ff], np.int64))], n_out=2, axis=-1)
        act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])
        d = mm(act, W[p + "ffn_down"])
        nxt = W[f"blk.{i + 1}.attn_norm"] if i + 1 < L else None
        if nxt is None:
            x = g.op("Add", [x, d])
        else:
            h, _, _, x = g.op("SkipSimplifiedLayerNormalization", [d, x, g.const(nxt.astype(np.float32))],
                              n_out=4, outputs=[g.fresh("h"), g.fresh("m"), g.fresh("iv"), g.fresh("x")],
                              domain=ms, epsilon=eps)
    # Only the last position's logits: a prime needs no others.
    last = g.op("Slice", [x, g.const(np.array([-1], np.int64)), g.const(np.array([2**62], np.int64)),
                          g.const(np.array([1], np.int64))])
    hn = g.op("SimplifiedLayerNormalization", [last, g.const(W["output_norm"].astype(np.float32))],
              axis=-1, epsilon=eps)
    g.op("MatMul", [hn, lm_name], outputs=["logits"])

    graph = helper.make_graph(g.nodes, "llmpack_gqa_decoder", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(ms, 1)],
                              producer_name="llmpack-onnx2gqa")
    model.ir_version = 9
    for k, v in dict(hp, window=window, contract="gqa").items():
        e = model.metadata_props.add()
        e.key, e.value = k, str(v)
    tmp = out_path + ".part"
    onnx.save_model(model, tmp)
    os.replace(tmp, out_path)
    print(f"onnx2gqa: wrote {out_path} ({len(g.nodes)} nodes, window {window}) in {time.time() - t0:.1f} s")


def check(src, dst, text_path, tokenizer_path, window):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    past = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    gqa = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(tokenizer_path)
    ids = ([0] + tok.encode(open(text_path, encoding="utf-8", errors="replace").read()).ids)[:300]
    n_past = [i for i in past.get_inputs() if i.name.startswith("past_key_values.")]
    kvh, hd = n_past[0].shape[1], n_past[0].shape[3]
    feed = {"input_ids": np.array([ids], np.int64),
            "position_ids": np.arange(len(ids), dtype=np.int64)[None],
            "attention_mask": np.ones((1, len(ids)), np.int64)}
    feed.update({i.name: np.zeros((1, kvh, 0, hd), np.float32) for i in n_past})
    ref = past.run(["logits"], feed)[0][0]
    names = [i.name for i in n_past]
    pres = [n.replace("past_key_values", "present") for n in names]
    rows = 4
    bufs = [np.zeros((rows, kvh, window, hd), np.float32) for _ in names]

    def run(first, tokens, lens):
        io = gqa.io_binding()
        io.bind_output("logits")
        t = np.array(tokens, np.int64)
        io.bind_cpu_input("input_ids", t)
        io.bind_cpu_input("seqlens_k", np.array([l + t.shape[1] - 1 for l in lens], np.int32))
        io.bind_cpu_input("total_sequence_length", np.array(max(lens) + t.shape[1], np.int32))
        for n, p_, b in zip(names, pres, bufs):
            v = ort.OrtValue.ortvalue_from_numpy(b[first:first + len(lens)])
            io.bind_ortvalue_input(n, v)
            io.bind_ortvalue_output(p_, v)
        gqa.run_with_iobinding(io)
        return io.copy_outputs_to_cpu()[0][:, 0, :]

    got = [run(0, [ids[:100]], [0])[0]]
    for t in range(100, len(ids) - 1):
        got.append(run(0, [[ids[t]]], [t])[0])
    got = np.array(got)
    diff = float(np.abs(got - ref[99:len(ids) - 1]).max())

    def bpt(lg, targets):
        lg = lg.astype(np.float64)
        lg = lg - lg.max(-1, keepdims=True)
        lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        return float(-lp[np.arange(len(targets)), targets].mean() / np.log(2))

    targets = ids[100:]
    print(f"onnx2gqa check: max |logit diff| {diff:.2e}; bits/token past graph {bpt(ref[99:-1], targets):.5f}, "
          f"gqa steps {bpt(got, targets):.5f}")
    # Rows 1..3 primed with other lengths; row 0 (context len(ids)-1) stepped alone and with them.
    for r, n in zip((1, 2, 3), (7, 40, 150)):
        run(r, [ids[:n]], [0])
    lens = [len(ids) - 1, 7, 40, 150]
    snap = [b.copy() for b in bufs]
    alone = run(0, [[ids[5]]], lens[:1])[0]
    for b, s_ in zip(bufs, snap):
        b[...] = s_
    together = run(0, [[ids[5]], [ids[6]], [ids[7]], [ids[8]]], lens)
    same = bool(np.array_equal(alone, together[0]))
    print(f"onnx2gqa check: a row stepped with three others of other lengths equals it alone: {same}")
    if diff > 1e-3 or not same:
        raise SystemExit("onnx2gqa check FAILED")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--window", type=int, default=None, help="KV buffer length (default: the model's ctx)")
    ap.add_argument("--check", metavar="TEXT", help="check the result against the input graph on this text")
    ap.add_argument("--tokenizer", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                         "models", "default", "tokenizer.json"))
    a = ap.parse_args()
    m = onnx.load(a.src)
    W, hp = weights_from_npz2onnx(m)
    window = a.window or int(hp["ctx"])
    build(W, hp, window, a.dst)
    if a.check:
        check(a.src, a.dst, a.check, a.tokenizer, window)
