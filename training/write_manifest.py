#!/usr/bin/env python3
"""Write models/default/manifest.toml (same schema as models/smollm2-135m/manifest.toml)
from training/run/hparams.json and the sha256 of model.onnx and tokenizer.json.
Optional: --measured KEY=VALUE ... adds a [measured] table (numbers or strings)."""
import hashlib, json, os, sys, tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MD = os.path.join(ROOT, "models", "default")


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def q(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


hp = json.load(open(os.path.join(ROOT, "training", "run", "hparams.json")))
tok = json.load(open(os.path.join(MD, "tokenizer.json")))
bos = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
DESC = (f"LLMPack default: {hp['params'] / 1e6:.1f}M-parameter llama-style byte-level-BPE LM ({hp['layers']} layers, "
        f"d={hp['dim']}, {hp['heads']} heads, SwiGLU {hp['ffn']}, tied head), trained from scratch by training/run.sh; fp32 ONNX")
lines = [
    "# LLMPack model manifest",
    "[model]",
    'name = "default"',
    f"description = {q(DESC)}",
    'license = "MIT"',
    f"training_data = {q('~53 MB of text from Debian bookworm packages (docs, man pages, Python/JS sources; list in training/packages.txt) + ~4 MB synthetic HTTP/log/JSON traffic; no compression benchmarks, no evaluation-sample packages')}",
    f"vocab_size = {hp['vocab']}",
    f"context_length = {hp['ctx']}",
    f"bos_token_id = {bos}",
    "",
    "[onnx]",
    'file = "model.onnx"',
    f"layers = {hp['layers']}",
    f"kv_heads = {hp['kv_heads']}",
    f"head_dim = {hp['head_dim']}",
    'input_ids = "input_ids"',
    'position_ids = "position_ids"',
    'attention_mask = "attention_mask"',
    'past_key = "past_key_values.{i}.key"',
    'past_value = "past_key_values.{i}.value"',
    'logits = "logits"',
    'present_key = "present.{i}.key"',
    'present_value = "present.{i}.value"',
    "",
    "[tokenizer]",
    'file = "tokenizer.json"',
    "",
    "[files]",
    f'"model.onnx" = {q(sha(os.path.join(MD, "model.onnx")))}',
    f'"tokenizer.json" = {q(sha(os.path.join(MD, "tokenizer.json")))}',
    "",
]
meas = [a.split("=", 1) for a in sys.argv[1:] if a != "--measured"]
if meas:
    lines.append("[measured]")
    for k, v in meas:
        try:
            float(v); lines.append(f"{k} = {v}")
        except ValueError:
            lines.append(f"{k} = {q(v)}")
    lines.append("")
text = "\n".join(lines)
tomllib.loads(text)
open(os.path.join(MD, "manifest.toml"), "w").write(text)
print("wrote", os.path.join(MD, "manifest.toml"))
