#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer and tokenize the corpus.

All 256 single-byte tokens are in the vocabulary (initial_alphabet = ByteLevel.alphabet()),
<|endoftext|> is id 0 (BOS / document separator), <|escape|> id 1.
Writes models/default/tokenizer.json and training/data/tokens.bin (uint16, documents
separated by token 0) + training/data/val.bin (last 1% of documents).
"""
import argparse, os, sys
import numpy as np
from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VOCAB = int(os.environ.get("VOCAB", 4096))
EOT = "<|endoftext|>"


def train_bpe(docs, vocab):
    """The byte-level BPE of the default model, trained on `docs` with `vocab` tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=[EOT, "<|escape|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=tr)
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "models", "default"), help="folder for tokenizer.json")
    ap.add_argument("--data", default=os.path.join(HERE, "data"), help="folder with corpus.txt; tokens.bin/val.bin go here")
    ap.add_argument("--tokenize-only", metavar="TOKENIZER_JSON", help="no training: tokenize the corpus with this tokenizer")
    args = ap.parse_args()
    text = open(os.path.join(args.data, "corpus.txt"), encoding="utf-8").read()
    docs = text.split(EOT)
    if args.tokenize_only:
        return tokenize(Tokenizer.from_file(args.tokenize_only), docs, args.data)
    tok = train_bpe(docs, VOCAB)
    assert tok.token_to_id(EOT) == 0
    out = args.out
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    # every single-byte token must exist
    vocab = tok.get_vocab()
    assert all(c in vocab for c in pre_tokenizers.ByteLevel.alphabet()), "missing byte tokens"
    print("vocab", tok.get_vocab_size())
    tokenize(tok, docs, args.data)


def tokenize(tok, docs, data):
    n_val = max(1, len(docs) // 100)
    lens = []  # tokens per document (its separator included), in corpus order
    for name, part in (("tokens.bin", docs[:-n_val]), ("val.bin", docs[-n_val:])):
        chunks = []
        for i in range(0, len(part), 1000):  # in chunks: a whole corpus's Encodings at once need tens of GB
            for enc in tok.encode_batch(part[i:i + 1000], add_special_tokens=False):
                chunks.append(np.array([0] + enc.ids, dtype=np.uint16))
                lens.append(len(enc.ids) + 1)
        a = np.concatenate(chunks)
        a.tofile(os.path.join(data, name))
        nb = sum(len(d.encode()) for d in part)
        print(name, len(a), "tokens", nb, "bytes", f"{nb / len(a):.2f} bytes/token")
    per_class(docs, lens, data)


def per_class(docs, lens, data):
    """Bytes and tokens per class of the corpus (data/doc_classes.txt, written by build_corpus.py:
    one class per document) -> data/classes_tokens.tsv."""
    p = os.path.join(data, "doc_classes.txt")
    if not os.path.exists(p):
        return
    cls = open(p).read().split("\n")[:len(docs)]
    if len(cls) != len(docs):
        print("doc_classes.txt does not match corpus.txt; no per-class counts")
        return
    tot = {}
    for c, d, n in zip(cls, docs, lens):
        b, t = tot.get(c, (0, 0))
        tot[c] = (b + len(d.encode()), t + n)
    with open(os.path.join(data, "classes_tokens.tsv"), "w") as f:
        for c, (b, t) in sorted(tot.items()):
            f.write(f"{c}\t{b}\t{t}\n")
            print(f"class {c}: {b} bytes, {t} tokens, {b / t:.2f} bytes/token")


if __name__ == "__main__":
    main()
