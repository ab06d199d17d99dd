#!/usr/bin/env python3
"""Build a Hugging Face tokenizer.json from the vocabulary and merges embedded in a GGUF.

Supports GGUF files with tokenizer.ggml.model == "gpt2" (byte-level BPE), which is what
SmolLM2 uses (tokenizer.ggml.pre == "smollm").  The result reproduces the upstream
tokenizer: digits are split into single-digit pre-tokens (smollm / starcoder / refact
pre-tokenizers), then GPT-2 byte-level pre-tokenization and BPE with the GGUF merges.
Tokens of GGUF type 3 (CONTROL, e.g. <|endoftext|>, <|im_start|>) are registered as special
tokens so they are matched whole and never produced from ordinary text by the BPE.

Needs only the `gguf` and `tokenizers` packages (no network, no transformers).
Usage: gguf2tokenizer.py MODEL.gguf OUT/tokenizer.json
"""
import argparse
import os
import sys

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

TOKEN_TYPE_CONTROL = 3  # gguf.TokenType.CONTROL
DIGIT_SPLITTING_PRE = ("smollm", "starcoder", "refact")
SUPPORTED_PRE = DIGIT_SPLITTING_PRE + ("gpt-2", "default")


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def build(gguf_path, out_path):
    r = gguf.GGUFReader(gguf_path)
    kind = field(r, "tokenizer.ggml.model")
    pre = field(r, "tokenizer.ggml.pre", "default")
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    if kind != "gpt2" or pre not in SUPPORTED_PRE:
        sys.exit(f"gguf2tokenizer: unsupported tokenizer model={kind!r} pre={pre!r}")

    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        sys.exit("gguf2tokenizer: duplicate tokens in the GGUF vocabulary")
    merges = [tuple(m.split(" ", 1)) for m in merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))

    steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    if pre in DIGIT_SPLITTING_PRE:
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence(steps) if len(steps) > 1 else steps[0]
    tk.decoder = decoders.ByteLevel()

    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, types) if ty == TOKEN_TYPE_CONTROL]
    tk.add_special_tokens(special)
    tk.save(out_path + ".part")
    os.replace(out_path + ".part", out_path)
    print(f"gguf2tokenizer: wrote {out_path} (model={kind} pre={pre} vocab={len(tokens)} "
          f"merges={len(merges)} special={len(special)})")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf")
    ap.add_argument("out", help="path of the tokenizer.json to write")
    a = ap.parse_args()
    build(a.gguf, a.out)
