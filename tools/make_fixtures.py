#!/usr/bin/env python3
"""Write the small ONNX fixtures the Rust side uses, then check them with onnxruntime.

  crates/model/assets/matmul.onnx
      No weights: a [m,k] x b [k,n] -> c [m,n], one MatMul (opset 20, IR 9).  Used to
      measure the machine's fp32 matmul peak through ONNX Runtime.

  integration-tests/fixtures/recurrent/
      A tiny random-weight model under the "state" contract (state in, state out, one
      token per row), to test the state-in/state-out predictor path:
        model.onnx      input_ids i64[B,1], state.0 f32[B,32], state.1 f32[B,2,16]
                        -> logits f32[B,1,4096], next_state.0 [B,32], next_state.1 [B,2,16]
        tokenizer.json  byte-identical copy of models/default/tokenizer.json
        manifest.toml   [model], [onnx] contract = "state", [tokenizer], [files] (sha256)

      The graph is a gated linear recurrence, every op row-wise (no op mixes batch rows):
        x   = E[input_ids]                                  (Gather, E: 4096 x 32)
        z   = sigmoid(x Wz + h Uz + bz),  c = tanh(x Wc + h Uc + bc)
        h'  = (1 - z) * h + z * c                           (state.0, 32)
        s'  = the same cell fed with h' instead of x, on flatten(state.1) (32 = 2 x 16)
        logits = concat(h', s') Wout                        (Wout: 64 x 4096, scaled by 3
                                                             at build time so the
                                                             distribution is not flat)
      Weights ~ N(0, 1/sqrt(fan_in)), float32, drawn from a fixed numpy seed, so a rerun
      writes byte-identical files.

Checks (onnxruntime CPU, intra_op threads 1): matmul.onnx against numpy on random
256 x 256 inputs; for the recurrent model, 20 steps of a batch of 3 rows with different
token and state histories, each row bit-identical to the same row run alone at batch 1.

Needs numpy, onnx and onnxruntime.   Usage (from the repository root):
  PYTHONPATH=.cache/onnxruntime-1.31.1 .cache/venv/bin/python tools/make_fixtures.py
"""
import os
import shutil
import sys
import tomllib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ortutil import session  # noqa: E402
from write_manifest import q, sha256  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATMUL_PATH = os.path.join(ROOT, "crates", "model", "assets", "matmul.onnx")
RECURRENT_DIR = os.path.join(ROOT, "integration-tests", "fixtures", "recurrent")
DEFAULT_TOKENIZER = os.path.join(ROOT, "models", "default", "tokenizer.json")

OPSET = 20
IR_VERSION = 9
SEED = 20261130

VOCAB = 4096
DIM = 32  # embedding and state.0 width
S1_SHAPE = (2, 16)  # state.1, flattened to DIM inside the graph
LOGIT_SCALE = 3.0
BOS = 0


def make_model(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="llmpack tools/make_fixtures.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save_model(model, path)


# ---------------------------------------------------------------------------- matmul.onnx

def matmul_graph():
    f32 = TensorProto.FLOAT
    return helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"], name="matmul")],
        "matmul",
        [helper.make_tensor_value_info("a", f32, ["m", "k"]),
         helper.make_tensor_value_info("b", f32, ["k", "n"])],
        [helper.make_tensor_value_info("c", f32, ["m", "n"])],
    )


def check_matmul(path):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((256, 256), dtype=np.float32)
    b = rng.standard_normal((256, 256), dtype=np.float32)
    (c,) = session(path, threads=1).run(["c"], {"a": a, "b": b})
    want = a.astype(np.float64) @ b.astype(np.float64)
    ok = c.shape == (256, 256) and c.dtype == np.float32 and np.allclose(c, want, rtol=1e-4, atol=1e-4)
    print(f"matmul.onnx: 256x256 x 256x256 vs numpy: max |diff| {np.abs(c - want).max():.2e}, "
          f"allclose {'passed' if ok else 'FAILED'}")
    return ok


# ------------------------------------------------------------------- recurrent model.onnx

class Builder:
    """Collects nodes and initializers; every intermediate gets a fresh name."""

    def __init__(self, rng):
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, arr, prefix):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def weight(self, fan_in, fan_out, prefix, scale=1.0):
        w = self.rng.standard_normal((fan_in, fan_out)) * (scale / np.sqrt(fan_in))
        return self.const(w.astype(np.float32), prefix)

    def op(self, op_type, inputs, output=None, **attrs):
        out = output or self.name(op_type)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name("n_" + op_type), **attrs))
        return out

    def cell(self, x, h, tag, output=None):
        """h' = (1 - z) h + z c, z = sigmoid(x Wz + h Uz + bz), c = tanh(x Wc + h Uc + bc)."""
        def pre(gate, bias):
            xw = self.op("MatMul", [x, self.weight(DIM, DIM, f"{tag}.W{gate}")])
            hu = self.op("MatMul", [h, self.weight(DIM, DIM, f"{tag}.U{gate}")])
            b = self.const(np.full(DIM, bias, np.float32) + 0.1 * self.rng.standard_normal(DIM).astype(np.float32),
                           f"{tag}.b{gate}")
            return self.op("Add", [self.op("Add", [xw, hu]), b])

        z = self.op("Sigmoid", [pre("z", -1.0)])  # bias -1: keep most of the old state
        c = self.op("Tanh", [pre("c", 0.0)])
        keep = self.op("Mul", [self.op("Sub", [self.const(np.float32(1.0), "one"), z]), h])
        return self.op("Add", [keep, self.op("Mul", [z, c])], output)


def recurrent_graph(rng):
    g = Builder(rng)
    emb = g.const(rng.standard_normal((VOCAB, DIM)).astype(np.float32), "embedding")
    x = g.op("Gather", [emb, g.op("Squeeze", ["input_ids", g.const(np.array([1], np.int64), "axis1")])],
             axis=0)  # [B, DIM]
    h = g.cell(x, "state.0", "cell0", output="next_state.0")
    s = g.op("Reshape", ["state.1", g.const(np.array([0, DIM], np.int64), "flat")])
    s = g.cell(h, s, "cell1")
    g.op("Reshape", [s, g.const(np.array([0, *S1_SHAPE], np.int64), "s1_shape")], output="next_state.1")
    feat = g.op("Concat", [h, s], axis=1)  # [B, 2 DIM]
    logits = g.op("MatMul", [feat, g.weight(2 * DIM, VOCAB, "lm_head", scale=LOGIT_SCALE)])
    g.op("Unsqueeze", [logits, g.const(np.array([1], np.int64), "axis1")], output="logits")

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    return helper.make_graph(
        g.nodes, "recurrent_fixture",
        [helper.make_tensor_value_info("input_ids", i64, ["batch", 1]),
         helper.make_tensor_value_info("state.0", f32, ["batch", DIM]),
         helper.make_tensor_value_info("state.1", f32, ["batch", *S1_SHAPE])],
        [helper.make_tensor_value_info("logits", f32, ["batch", 1, VOCAB]),
         helper.make_tensor_value_info("next_state.0", f32, ["batch", DIM]),
         helper.make_tensor_value_info("next_state.1", f32, ["batch", *S1_SHAPE])],
        initializer=g.inits,
    )


def manifest_text(model_dir):
    hashes = {name: sha256(os.path.join(model_dir, name)) for name in ("model.onnx", "tokenizer.json")}
    text = "\n".join([
        "# LLMPack model manifest",
        "[model]",
        'name = "recurrent-fixture"',
        "description = " + q("Random-weight test fixture (not a trained model): a gated linear recurrence "
                             "with two state tensors, made by tools/make_fixtures.py"),
        'license = "MIT"',
        'training_data = "none (random weights, seeded)"',
        f"vocab_size = {VOCAB}",
        "context_length = 4096",
        f"bos_token_id = {BOS}",
        "",
        "[onnx]",
        'contract = "state"',
        'file = "model.onnx"',
        'input_ids = "input_ids"',
        'logits = "logits"',
        'state_in = "state.{i}"',
        'state_out = "next_state.{i}"',
        "states = 2",
        "",
        "[tokenizer]",
        'file = "tokenizer.json"',
        "",
        "[files]",
        *[f"{q(name)} = {q(h)}" for name, h in hashes.items()],
        "",
    ])
    tomllib.loads(text)  # self-check: valid TOML
    return text


def check_recurrent(model_dir, steps=20, rows=3):
    with open(os.path.join(model_dir, "manifest.toml"), "rb") as fh:
        m = tomllib.load(fh)
    ok = all(sha256(os.path.join(model_dir, n)) == h for n, h in m["files"].items())
    print(f"manifest.toml: [files] hashes {'match' if ok else 'DO NOT MATCH'}")

    s = session(os.path.join(model_dir, m["onnx"]["file"]), threads=1)
    n_states = m["onnx"]["states"]
    ins = [m["onnx"]["state_in"].format(i=i) for i in range(n_states)]
    outs = [m["onnx"]["logits"]] + [m["onnx"]["state_out"].format(i=i) for i in range(n_states)]
    rng = np.random.default_rng(2)
    # Different histories: row 0 starts from zero state at BOS, rows 1.. from random states.
    states = [np.zeros((rows, DIM), np.float32), np.zeros((rows, *S1_SHAPE), np.float32)]
    for st in states:
        st[1:] = rng.standard_normal(st[1:].shape).astype(np.float32)
    ids = rng.integers(0, VOCAB, (steps, rows)).astype(np.int64)
    ids[0, 0] = BOS
    max_logit, same = -np.inf, True
    for t in range(steps):
        feed = {m["onnx"]["input_ids"]: ids[t][:, None], **dict(zip(ins, states))}
        got = s.run(outs, feed)
        assert got[0].shape == (rows, 1, VOCAB) and all(g.shape == st.shape for g, st in zip(got[1:], states))
        for r in range(rows):
            alone = s.run(outs, {k: v[r:r + 1] for k, v in feed.items()})
            same &= all(np.array_equal(g[r:r + 1], a) for g, a in zip(got, alone))
        max_logit = max(max_logit, float(got[0].max()))
        states = got[1:]
    lg = got[0][:, 0].astype(np.float64)
    p = np.exp(lg - lg.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    entropy = float(-(p * np.log2(p)).sum(-1).mean())
    print(f"recurrent model.onnx: {steps} steps, batch {rows}: max logit {max_logit:.3f}, "
          f"entropy of the last step {entropy:.2f} bits (flat: {np.log2(VOCAB):.0f}); "
          f"each row bit-identical to batch 1 (logits and both states): {'passed' if same else 'FAILED'}")
    return ok and same


# ------------------------------------------------------------------------------------ main

def main():
    save(make_model(matmul_graph()), MATMUL_PATH)

    os.makedirs(RECURRENT_DIR, exist_ok=True)
    rng = np.random.default_rng(SEED)
    save(make_model(recurrent_graph(rng)), os.path.join(RECURRENT_DIR, "model.onnx"))
    shutil.copyfile(DEFAULT_TOKENIZER, os.path.join(RECURRENT_DIR, "tokenizer.json"))
    with open(os.path.join(RECURRENT_DIR, "manifest.toml"), "w") as fh:
        fh.write(manifest_text(RECURRENT_DIR))

    for p in (MATMUL_PATH, *(os.path.join(RECURRENT_DIR, n) for n in ("model.onnx", "tokenizer.json", "manifest.toml"))):
        print(f"wrote {os.path.relpath(p, ROOT)} ({os.path.getsize(p)} bytes)")
    ok = check_matmul(MATMUL_PATH)
    ok &= check_recurrent(RECURRENT_DIR)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
