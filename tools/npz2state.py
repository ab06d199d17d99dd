#!/usr/bin/env python3
"""Build the `state`-contract ONNX graph (models/README.md) of a recurrent model that
training/train.py --arch mingru trained, from its weights.npz + hparams.json, and check it.

Graph: input_ids i64[B,1], state.{2l} f32[B,dim] (the layer's previous normalised input, for the
token shift) and state.{2l+1} f32[B,hidden] (its minGRU state), l = 0..layers-1  ->  logits
f32[B,1,V], next_state.{i} of the same shapes.  Every op is row-wise: no op mixes batch rows, so
a row's result does not depend on the others (the predictor batches any set of lanes).
The lm head is tied to the embedding and stored once, as the transposed table [dim, V]; the
embedding is a Gather on axis 1 of it.

Check (onnxruntime, 1 thread): the graph stepped one token at a time from the zero state gives the
logits train.py saved with the weights (`check.ids` / `check.logits`, a full-sequence pass
through the parallel scan), and a batch of 3 rows with different histories gives each row the
same bits as alone.

Usage: npz2state.py weights.npz hparams.json OUT.onnx
Needs numpy, onnx, onnxruntime (PYTHONPATH=.cache/onnxruntime-1.31.1 .cache/venv/bin/python).
"""
import json, sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# One graph builder for the tools that write ONNX graphs (this script runs
# from tools/, so its sibling imports).
from npz2onnx import OPSET, Graph


def states_of(hp):
    """[(name_in, name_out, per-row shape)] in state index order."""
    out = []
    for l in range(hp["layers"]):
        out.append((f"state.{2 * l}", f"next_state.{2 * l}", [hp["dim"]]))
        out.append((f"state.{2 * l + 1}", f"next_state.{2 * l + 1}", [hp["hidden"]]))
    return out


def build(W, hp):
    g = Graph()
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))
    eps, hd = hp["eps"], hp["hidden"]

    def linear(x, w):
        return g.op("MatMul", [x, g.const(f32(W[w].T))])

    def rmsnorm(x, w):
        ms = g.op("ReduceMean", [g.op("Mul", [x, x]), g.const(np.array([-1], np.int64))], keepdims=1)
        return g.op("Mul", [g.op("Div", [x, g.op("Sqrt", [g.op("Add", [ms, g.const(np.array(eps, np.float32))])])]),
                            g.const(f32(W[w]))])

    table = g.const(f32(W["token_embd.weight"].T))  # [dim, V]
    ids = g.op("Reshape", ["input_ids", g.const(np.array([-1], np.int64))])  # [B]
    x = g.op("Transpose", [g.op("Gather", [table, ids], axis=1)], perm=[1, 0])  # [B, dim]
    one, half = g.const(np.array(1.0, np.float32)), g.const(np.array(0.5, np.float32))
    zero = g.const(np.array(0.0, np.float32))
    for l in range(hp["layers"]):
        p = f"blk.{l}."
        u = rmsnorm(x, p + "attn_norm.weight")
        g.op("Identity", [u], outputs=[f"next_state.{2 * l}"])
        um = g.op("Add", [u, g.op("Mul", [g.const(f32(W[p + "rec_mix"])), g.op("Sub", [f"state.{2 * l}", u])])])
        kc = linear(um, p + "rec_zc.weight")  # [B, 2 hidden]
        k, c = g.op("Split", [kc, g.const(np.array([hd, hd], np.int64))], n_out=2, axis=1)
        z = g.op("Sigmoid", [k])
        cand = g.op("Where", [g.op("GreaterOrEqual", [c, zero]), g.op("Add", [c, half]), g.op("Sigmoid", [c])])
        h = g.op("Add", [g.op("Mul", [g.op("Sub", [one, z]), f"state.{2 * l + 1}"]), g.op("Mul", [z, cand])],
                 outputs=[f"next_state.{2 * l + 1}"])
        x = g.op("Add", [x, linear(h, p + "rec_out.weight")])
        hn = rmsnorm(x, p + "ffn_norm.weight")
        ff = g.op("Mul", [g.op("Mul", [linear(hn, p + "ffn_gate.weight"),
                                        g.op("Sigmoid", [linear(hn, p + "ffn_gate.weight")])]),
                          linear(hn, p + "ffn_up.weight")])
        x = g.op("Add", [x, linear(ff, p + "ffn_down.weight")])
    logits = g.op("MatMul", [rmsnorm(x, "output_norm.weight"), table])  # [B, V]
    g.op("Unsqueeze", [logits, g.const(np.array([1], np.int64))], outputs=["logits"])
    V = W["token_embd.weight"].shape[0]
    ins = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 1])]
    outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, V])]
    for si, so, shape in states_of(hp):
        ins.append(helper.make_tensor_value_info(si, TensorProto.FLOAT, ["batch", *shape]))
        outs.append(helper.make_tensor_value_info(so, TensorProto.FLOAT, ["batch", *shape]))
    graph = helper.make_graph(g.nodes, "llmpack_mingru", ins, outs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="llmpack-npz2state")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def check(path, W, hp):
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = states_of(hp)

    def run(ids_rows, states):
        feed = {"input_ids": np.asarray(ids_rows, np.int64)[:, None], **{si: st for (si, _, _), st in zip(names, states)}}
        r = s.run(["logits"] + [so_ for _, so_, _ in names], feed)
        return r[0][:, 0], r[1:]

    zero = lambda b: [np.zeros((b, *shape), np.float32) for _, _, shape in names]
    if "check.ids" in W:  # weights straight from train.py (pack_runs.py drops these)
        ids, want = W["check.ids"][0], W["check.logits"][0]
        st, got = zero(1), []
        for t in ids:
            lg, st = run([t], st)
            got.append(lg[0])
        got = np.array(got)
        lsm = lambda a: a - np.log(np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)) - a.max(-1, keepdims=True)
        bits = lambda lg: -lsm(lg)[np.arange(len(ids) - 1), ids[1:]].mean() / np.log(2)
        diff = np.abs(got - want).max()
        print(f"check: {len(ids)} steps vs train.py's parallel pass: max |logit diff| {diff:.2e}, "
              f"bits/token {bits(got):.4f} vs {bits(want):.4f}")
        assert diff < 2e-3, diff
    # batch independence: 3 rows with different histories, then each row alone
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, hp["vocab"], 12 + 5 * r) for r in range(3)]
    rows = []
    for q in seqs:
        st = zero(1)
        for t in q[:-1]:
            _, st = run([t], st)
        rows.append(st)
    batch = [np.concatenate([r[i] for r in rows]) for i in range(len(names))]
    lb, _ = run([q[-1] for q in seqs], batch)
    for r, q in enumerate(seqs):
        la, _ = run([q[-1]], rows[r])
        assert np.array_equal(la[0], lb[r]), f"row {r} differs in a batch"
    print("check: rows in a batch of 3 bit-identical to alone")


def main():
    wpath, hpath, out = sys.argv[1:4]
    W = dict(np.load(wpath))
    hp = json.load(open(hpath))
    assert hp.get("arch") == "mingru", "npz2state.py exports train.py --arch mingru models; transformers: npz2onnx.py"
    onnx.save_model(build(W, hp), out)
    print("wrote", out, f"({len(names) if (names := states_of(hp)) else 0} state tensors)")
    check(out, W, hp)


if __name__ == "__main__":
    main()
