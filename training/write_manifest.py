#!/usr/bin/env python3
"""Write models/default/manifest.toml (same schema as models/smollm2-135m/manifest.toml)
from training/run/hparams.json and the sha256 of model.onnx and tokenizer.json.
Optional: --measured KEY=VALUE ... adds a [measured] table (numbers or strings).
Other model directories (e.g. CPU-trained points of the trade-off curve):
  write_manifest.py --model-dir DIR --hparams RUN/hparams.json --name NAME [--measured ...]
reads DIR/model.onnx + DIR/tokenizer.json and writes DIR/manifest.toml.
--contract gqa: DIR/model.onnx was rebuilt by tools/onnx2gqa.py (in-place KV buffer of
--kv-len positions, default the model's context); the default is the past contract of
tools/npz2onnx.py.  --contract state: a recurrent model (train.py --arch mingru) exported by
tools/npz2state.py (2 state tensors per layer); --context N sets its context_length (the
codec's window; default the training sequence length)."""
import hashlib, json, os, sys, tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MD = os.path.join(ROOT, "models", "default")
HP = os.path.join(ROOT, "training", "run", "hparams.json")
NAME = "default"
argv = sys.argv[1:]
CONTRACT = "past"
KV_LEN = None
CONTEXT = None
for flag in ("--model-dir", "--hparams", "--name", "--contract", "--kv-len", "--context"):
    if flag in argv:
        i = argv.index(flag)
        val = argv[i + 1]
        del argv[i:i + 2]
        if flag == "--model-dir":
            MD = os.path.abspath(val)
        elif flag == "--hparams":
            HP = os.path.abspath(val)
        elif flag == "--contract":
            CONTRACT = val
        elif flag == "--kv-len":
            KV_LEN = int(val)
        elif flag == "--context":
            CONTEXT = int(val)
        else:
            NAME = val


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def q(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


hp = json.load(open(HP))
tok = json.load(open(os.path.join(MD, "tokenizer.json")))
bos = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
REC = hp.get("arch") == "mingru"
DESC = (f"LLMPack {NAME}: {hp['params'] / 1e6:.1f}M-parameter recurrent byte-level-BPE LM ({hp['layers']} layers, "
        f"d={hp['dim']}, minGRU state {hp['hidden']} + token shift, SwiGLU {hp['ffn']}, tied head), trained from scratch by "
        f"training/train.py --arch mingru; fp32 ONNX, state contract") if REC else (f"LLMPack {NAME}: {hp['params'] / 1e6:.1f}M-parameter llama-style byte-level-BPE LM ({hp['layers']} layers, "
        f"d={hp['dim']}, {hp['heads']} heads, SwiGLU {hp['ffn']}, tied head), trained from scratch by "
        f"{'training/run.sh' if NAME == 'default' else 'training/train.py'}; fp32 ONNX")
lines = [
    "# LLMPack model manifest",
    "[model]",
    f"name = {q(NAME)}",
    f"description = {q(DESC)}",
    'license = "MIT"',
    f"training_data = {q(os.environ.get('TRAINING_DATA', '~133 MB: text from 50 Debian bookworm packages (docs, man pages, HTML manuals, C/C++ headers, Python/Perl/JS sources), crates.io sources of Cargo.lock, real nginx HTTP/1.1 exchanges and logs (training/traffic.py), ~4 MB synthetic HTTP/log/JSON; list in training/packages.txt; no compression benchmarks, no evaluation-sample or held-out packages'))}",
    f"vocab_size = {hp['vocab']}",
    f"context_length = {CONTEXT or hp['ctx']}",
    f"bos_token_id = {bos}",
    "",
    "[onnx]",
    'file = "model.onnx"',
]
if CONTRACT == "state":
    lines += ['contract = "state"', 'input_ids = "input_ids"', 'logits = "logits"', 'state_in = "state.{i}"',
              'state_out = "next_state.{i}"', f"states = {2 * hp['layers']}"]
else:
    lines += [
    f"layers = {hp['layers']}",
    f"kv_heads = {hp['kv_heads']}",
    f"head_dim = {hp['head_dim']}",
    'input_ids = "input_ids"',
    *(['position_ids = "position_ids"', 'attention_mask = "attention_mask"'] if CONTRACT == "past" else
      ['contract = "gqa"', 'seqlens_k = "seqlens_k"', 'total_sequence_length = "total_sequence_length"',
       f"kv_len = {KV_LEN or hp['ctx']}"]),
    'past_key = "past_key_values.{i}.key"',
    'past_value = "past_key_values.{i}.value"',
    'logits = "logits"',
    'present_key = "present.{i}.key"',
    'present_value = "present.{i}.value"',
    ]
lines += [
    "",
    "[tokenizer]",
    'file = "tokenizer.json"',
    "",
    "[files]",
    f'"model.onnx" = {q(sha(os.path.join(MD, "model.onnx")))}',
    f'"tokenizer.json" = {q(sha(os.path.join(MD, "tokenizer.json")))}',
    "",
]
meas = [a.split("=", 1) for a in argv if a != "--measured"]
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
