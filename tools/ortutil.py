"""Small helpers shared by the onnxruntime check / benchmark tools (not needed for conversion).

Needs numpy and onnxruntime (install them in a throwaway venv, e.g. .cache/venv-check; see
models/README.md).
"""
import numpy as np
import onnxruntime as ort


def session(path, threads=2):
    """A CPU session with a fixed intra-op thread count and sequential execution."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


class Decoder:
    """Thin wrapper around the gguf2onnx graph contract."""

    def __init__(self, path, threads=2):
        self.s = session(path, threads)
        self.past_names = [i.name for i in self.s.get_inputs() if i.name.startswith("past_key_values.")]
        p0 = next(i for i in self.s.get_inputs() if i.name == self.past_names[0])
        self.kv_heads, self.head_dim = int(p0.shape[1]), int(p0.shape[3])
        self.out_names = [o.name for o in self.s.get_outputs()]
        self.vocab = int(self.s.get_outputs()[0].shape[2])

    def empty_past(self, batch):
        return [np.zeros((batch, self.kv_heads, 0, self.head_dim), np.float32) for _ in self.past_names]

    def run(self, ids, positions=None, mask=None, past=None):
        """ids [B,S] -> (logits [B,S,V], present list).  Defaults: no padding, positions P..P+S-1."""
        ids = np.asarray(ids, np.int64)
        B, S = ids.shape
        past = self.empty_past(B) if past is None else past
        P = past[0].shape[2]
        if positions is None:
            positions = np.tile(np.arange(P, P + S, dtype=np.int64), (B, 1))
        if mask is None:
            mask = np.ones((B, P + S), np.int64)
        feed = {"input_ids": ids, "position_ids": np.asarray(positions, np.int64),
                "attention_mask": np.asarray(mask, np.int64)}
        feed.update(zip(self.past_names, past))
        out = self.s.run(self.out_names, feed)
        return out[0], out[1:]


def bits_per_token(logits, targets):
    """Mean -log2 p(target) from logits [N,V] (float64 log-softmax)."""
    lg = logits.astype(np.float64)
    lg = lg - lg.max(-1, keepdims=True)
    lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    return float(-lp[np.arange(len(targets)), targets].mean() / np.log(2))
