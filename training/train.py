#!/usr/bin/env python3
"""Train the small llama-style causal LM on training/data/tokens.bin (GPU, bf16 autocast;
or CPU, fp32, --threads N torch threads: see training/README.md "CPU training").

Architecture, --arch transformer (default; names of the saved tensors follow GGUF/llama.cpp so
tools/npz2onnx.py can build the project's ONNX graph): RMSNorm, RoPE (HF rotate_half, base
10000), MHA, SwiGLU, tied embedding / lm head.

--arch mingru: a recurrent model with a constant-size state per lane (tools/npz2state.py exports
it to the `state` ONNX contract).  Each layer: u = RMSNorm(x); token shift
um = u + mix * (u_prev - u) (per-channel mix, RWKV-style); minGRU (Feng et al. 2024) on um:
z = sigmoid(um Wz), c = g(um Wc) with g(v) = v + 0.5 (v >= 0), sigmoid(v) (v < 0),
h = (1 - z) * h_prev + z * c (width --hidden); x += h Wo; then a SwiGLU FFN.  Trained in
parallel over the sequence with the log-space scan (logcumsumexp), run one token at a time at
inference; state per layer: u_prev [dim] and h [hidden].  Training stops after --minutes; the LR schedule is a
function of elapsed time.  Writes OUT/weights.npz (fp32, best validation loss) and OUT/train.log.
"""
import argparse, math, os, sys, time, json
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
ap.add_argument("--out", default=os.environ.get("OUT", "out"))
ap.add_argument("--minutes", type=float, default=6.5)
ap.add_argument("--tokens", type=float, default=None,
                help="token budget: training ends after this many tokens (or --minutes, whichever comes first); "
                     "the LR schedule follows whichever is further along")
ap.add_argument("--vocab", type=int, default=4096)
ap.add_argument("--dim", type=int, default=256)
ap.add_argument("--layers", type=int, default=6)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--ffn", type=int, default=640)
ap.add_argument("--arch", choices=["transformer", "mingru"], default="transformer")
ap.add_argument("--hidden", type=int, default=None, help="mingru: recurrent state width (default --dim)")
ap.add_argument("--ctx", type=int, default=512)
ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 128 on GPU, 16 on CPU)")
ap.add_argument("--lr", type=float, default=2e-3)
ap.add_argument("--eval-every", type=float, default=None, help="seconds (default 30 on GPU, 120 on CPU)")
ap.add_argument("--eval-batches", type=int, default=None, help="validation batches of 32 sequences (default 8 on GPU, 2 on CPU)")
ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch.set_num_threads); default: torch's")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--warmup", type=int, default=200, help="linear warmup steps")
ap.add_argument("--init", help="start from these weights (a weights.npz this script wrote, same architecture)")
args = ap.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
os.makedirs(args.out, exist_ok=True)
logf = open(os.path.join(args.out, "train.log"), "a")


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    logf.write(s + "\n"); logf.flush()


dev = "cuda" if torch.cuda.is_available() else "cpu"
gpu = dev == "cuda"
if args.batch is None:
    args.batch = 128 if gpu else 16
if args.eval_every is None:
    args.eval_every = 30.0 if gpu else 120.0
if args.eval_batches is None:
    args.eval_batches = 8 if gpu else 2
torch.manual_seed(args.seed)
train = np.fromfile(os.path.join(args.data, "tokens.bin"), dtype=np.uint16)
val = np.fromfile(os.path.join(args.data, "val.bin"), dtype=np.uint16)
train_t = torch.from_numpy(train.astype(np.int64)).to(dev)
val_t = torch.from_numpy(val.astype(np.int64)).to(dev)
log(f"device {dev} torch {torch.__version__} threads {torch.get_num_threads()} train tokens {len(train)} val tokens {len(val)} args {vars(args)}")

HD = args.dim // args.heads
if args.hidden is None:
    args.hidden = args.dim


def rope_tables(T):
    inv = 1.0 / (10000.0 ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD))
    f = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    ang = torch.cat([f, f], -1)
    return ang.cos().float().to(dev), ang.sin().float().to(dev)


COS, SIN = rope_tables(args.ctx)


def rope(x):  # x [B,h,S,hd]
    S = x.shape[2]
    a, b = x[..., :HD // 2], x[..., HD // 2:]
    rot = torch.cat([-b, a], -1)
    return (x * COS[:S] + rot * SIN[:S]).to(x.dtype)


if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
    def attention(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
else:  # older torch (e.g. the CPU-usable 1.12 wheel): the same causal softmax attention, spelled out
    CAUSAL = torch.ones(args.ctx, args.ctx, dtype=torch.bool, device=dev).triu(1)

    def attention(q, k, v):
        S = q.shape[2]
        a = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(HD))
        return a.masked_fill(CAUSAL[:S, :S], float("-inf")).softmax(-1) @ v


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__(); self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(x.dtype) * self.weight.to(x.dtype)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        d = args.dim
        self.attn_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(d, args.ffn, bias=False), nn.Linear(d, args.ffn, bias=False)
        self.down = nn.Linear(args.ffn, d, bias=False)

    def forward(self, x):
        B, S, D = x.shape
        h = self.attn_norm(x)
        sh = lambda t: t.view(B, S, args.heads, HD).transpose(1, 2)
        q, k, v = rope(sh(self.q(h))), rope(sh(self.k(h))), sh(self.v(h))
        o = attention(q, k, v)
        x = x + self.o(o.transpose(1, 2).reshape(B, S, D))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def log_g(v):  # log of minGRU's positive candidate g(v)
    return torch.where(v >= 0, torch.log(F.relu(v) + 0.5), -F.softplus(-v))


class RecBlock(nn.Module):
    def __init__(self):
        super().__init__()
        d, hd = args.dim, args.hidden
        self.attn_norm, self.ffn_norm = RMSNorm(d), RMSNorm(d)
        self.mix = nn.Parameter(torch.full((d,), 0.5))
        self.zc = nn.Linear(d, 2 * hd, bias=False)  # rows 0..hd: gate z, hd..2hd: candidate
        self.o = nn.Linear(hd, d, bias=False)
        self.gate, self.up = nn.Linear(d, args.ffn, bias=False), nn.Linear(d, args.ffn, bias=False)
        self.down = nn.Linear(args.ffn, d, bias=False)

    def forward(self, x):
        u = self.attn_norm(x)
        prev = F.pad(u, (0, 0, 1, 0))[:, :-1]  # u of the previous token, zero before the first
        um = u + self.mix * (prev - u)
        k, c = self.zc(um).float().chunk(2, -1)
        log_a = -F.softplus(k)  # log(1 - z)
        log_b = -F.softplus(-k) + log_g(c)  # log(z * g(c))
        a_star = torch.cumsum(log_a, 1)
        h = torch.exp(a_star + torch.logcumsumexp(log_b - a_star, 1))  # h_t = (1-z_t) h_{t-1} + z_t g(c_t), h_0 = 0
        x = x + self.o(h.to(x.dtype))
        hn = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(hn)) * self.up(hn))


class LM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(args.vocab, args.dim)
        self.blocks = nn.ModuleList((RecBlock() if args.arch == "mingru" else Block()) for _ in range(args.layers))
        self.norm = RMSNorm(args.dim)
        nn.init.normal_(self.emb.weight, std=0.02)
        for b in self.blocks:
            for m in ((b.zc, b.gate, b.up) if args.arch == "mingru" else (b.q, b.k, b.v, b.gate, b.up)):
                nn.init.normal_(m.weight, std=0.02)
            for m in (b.o, b.down):
                nn.init.normal_(m.weight, std=0.02 / math.sqrt(2 * args.layers))

    def forward(self, idx):
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x)
        return self.norm(x) @ self.emb.weight.t().to(x.dtype)


model = LM()


def named_weights(m):
    """Our tensors under their GGUF/llama.cpp names (the names of the saved weights)."""
    W = {"token_embd.weight": m.emb.weight, "output_norm.weight": m.norm.weight}
    for i, b in enumerate(m.blocks):
        p = f"blk.{i}."
        if args.arch == "mingru":
            W.update({p + "attn_norm.weight": b.attn_norm.weight, p + "ffn_norm.weight": b.ffn_norm.weight,
                      p + "rec_mix": b.mix, p + "rec_zc.weight": b.zc.weight, p + "rec_out.weight": b.o.weight,
                      p + "ffn_gate.weight": b.gate.weight, p + "ffn_up.weight": b.up.weight,
                      p + "ffn_down.weight": b.down.weight})
            continue
        W.update({p + "attn_norm.weight": b.attn_norm.weight, p + "ffn_norm.weight": b.ffn_norm.weight,
                  p + "attn_q.weight": b.q.weight, p + "attn_k.weight": b.k.weight, p + "attn_v.weight": b.v.weight,
                  p + "attn_output.weight": b.o.weight, p + "ffn_gate.weight": b.gate.weight,
                  p + "ffn_up.weight": b.up.weight, p + "ffn_down.weight": b.down.weight})
    return W


if args.init:
    init = np.load(args.init)
    with torch.no_grad():
        for k, t in named_weights(model).items():
            t.copy_(torch.from_numpy(init[k]))
    log(f"initialised from {args.init}")
model = model.to(dev)
nparams = sum(p.numel() for p in model.parameters())
log(f"params {nparams}")
decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
nodecay = [p for n, p in model.named_parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if gpu else {}))


def batch(src, B, gen=None):
    ix = torch.randint(0, len(src) - args.ctx - 1, (B,), device=dev, generator=gen)
    off = ix[:, None] + torch.arange(args.ctx + 1, device=dev)[None, :]
    t = src[off]
    return t[:, :-1], t[:, 1:]


@torch.no_grad()
def evaluate():
    model.eval()
    g = torch.Generator(device=dev); g.manual_seed(123)
    tot = 0.0; n = 0
    for _ in range(args.eval_batches):
        x, y = batch(val_t, 32, g)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=gpu):
            lg = model(x)
        tot += F.cross_entropy(lg.float().view(-1, args.vocab), y.reshape(-1), reduction="sum").item()
        n += y.numel()
    model.train()
    return tot / n


CHECK_IDS = val_t[:64][None, :]


def save(path):
    W = {k: v.detach().float().cpu().numpy() for k, v in named_weights(model).items()}
    with torch.no_grad():  # the exporters compare their graph's logits with these
        was = model.training; model.eval()
        W["check.ids"] = CHECK_IDS.cpu().numpy(); W["check.logits"] = model(CHECK_IDS).float().cpu().numpy()
        model.train(was)
    # two files (the device returns files of at most 16 MiB each): blocks of the first half + embedding/norm, rest
    half = args.layers // 2
    first = lambda k: not k.startswith("blk.") or int(k.split(".")[1]) < half
    if args.layers == 1:
        first = lambda k: True
    for suffix, keep in (("a", first), ("b", lambda k: not first(k))):
        np.savez(path + ".tmp.npz", **{k: v for k, v in W.items() if keep(k)})
        os.replace(path + ".tmp.npz", path.replace(".npz", f"_{suffix}.npz"))


hp = dict(vocab=args.vocab, dim=args.dim, layers=args.layers, heads=args.heads, kv_heads=args.heads,
          head_dim=HD, ffn=args.ffn, ctx=args.ctx, eps=1e-5, rope_base=10000.0, params=nparams, arch=args.arch)
if args.arch == "mingru":
    hp.update(hidden=args.hidden, heads=0, kv_heads=0, head_dim=0, rope_base=0.0)
json.dump(hp, open(os.path.join(args.out, "hparams.json"), "w"), indent=1)

budget = args.minutes * 60
best = 1e9
if args.init:  # the starting point is the one to beat
    best = evaluate()
    log(f"step 0 val {best:.4f} ({best / math.log(2):.3f} bits/token)")
    save(os.path.join(args.out, "weights.npz"))
t0 = time.time(); last_eval = t0; step = 0; tokens = 0; warm = args.warmup
while True:
    el = time.time() - t0
    frac = max(el / budget, tokens / args.tokens if args.tokens else 0.0)
    if frac >= 1:
        break
    lr = args.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
    for g_ in opt.param_groups:
        g_["lr"] = lr
    x, y = batch(train_t, args.batch)
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=gpu):
        lg = model(x)
    loss = F.cross_entropy(lg.float().view(-1, args.vocab), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    step += 1; tokens += x.numel()
    if step == 20 or time.time() - last_eval > args.eval_every:
        vl = evaluate()
        last_eval = time.time()
        log(f"step {step} t {last_eval - t0:.0f}s tokens {tokens} lr {lr:.2e} train {loss.item():.4f} "
            f"val {vl:.4f} ({vl / math.log(2):.3f} bits/token) tok/s {tokens / (last_eval - t0):.0f}")
        if vl < best:
            best = vl; save(os.path.join(args.out, "weights.npz"))
vl = evaluate()
log(f"final step {step} tokens {tokens} time {time.time() - t0:.0f}s val {vl:.4f} ({vl / math.log(2):.3f} bits/token) best {best:.4f}")
if vl <= best:
    save(os.path.join(args.out, "weights.npz")); best = vl
json.dump(dict(hp, steps=step, tokens=tokens, seconds=time.time() - t0, best_val_nats=best,
               best_val_bits_per_token=best / math.log(2)), open(os.path.join(args.out, "hparams.json"), "w"), indent=1)
log("done")
