"""The PyTorch reference of the BitNet b1.58 language-model computation that
docs/llm.md ("The computation") specifies and ternd's runtime implements.

It reads a GGUF file (``ternd.gguf_reader``) and computes the logits at every
position of a token sequence, either for the whole sequence at once (causal
attention over all positions) or one token at a time with a KV cache, and
greedy generations.

Numerics. Every value the spec names is a float32, and each float32
operation of the spec (products, sums of two, divisions, sqrt, the
quantization's x * (127 / amax) and rint) is done in float32 exactly as
written. The integer parts are exact: a ternary dot product is an integer
sum computed in float64 (|sum| <= 128 K, far below 2^53). Reductions
(sums of squares, dot products, softmax sums, the attention-weighted sum of
V, the head) and the transcendental functions (exp, cos, sin, pow) are
evaluated in float64 and rounded once to float32: the reference is the
spec's computation with its reductions correctly rounded, so a float32
implementation that accumulates in another order differs from it by its
own rounding only. Divisions are tensor / tensor (PyTorch computes some
tensor / scalar divisions as a multiplication by the reciprocal, which
rounds differently).

CLI:

    python3 -m ternd.bitnet_ref logits MODEL.gguf --tokens 1,2,3 [--head int8] -o out.f32
    python3 -m ternd.bitnet_ref greedy MODEL.gguf --tokens 1,2,3 -n 16
    python3 -m ternd.bitnet_ref head-error MODEL.gguf [--tokens ...]
    python3 -m ternd.bitnet_ref make MODEL.gguf --arch bitnet-b1.58 --ternary tq1_0 ...
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch

from .gguf_reader import GGUFFile
from .reference import MIN_AMAX

f32, f64 = torch.float32, torch.float64

ARCHES = ("bitnet-b1.58", "bitnet-25", "bitnet", "llama")
RELU2_ARCHES = ("bitnet-b1.58", "bitnet-25")
HEADS = ("int8", "f16", "f32")


# --- the float32 building blocks -------------------------------------------

def fdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b in float32 with b materialised to a's shape, so that PyTorch
    never turns it into a multiplication by 1/b."""
    return torch.div(a, b.expand_as(a).contiguous())


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q [B, K] float32 integer values in [-128, 127], dequant [B] = amax /
    127) as the runtime's QuantizeActivations: q = clamp(rint(x * (127 /
    amax))), round half to even; a zero row gives q = 0 and dequant 0."""
    x = x.to(f32)
    amax = x.abs().amax(dim=1)
    nz = amax >= MIN_AMAX
    safe = torch.where(nz, amax, torch.ones_like(amax))
    inv = fdiv(torch.full_like(safe, 127.0), safe)
    q = torch.clamp(torch.round(x * inv[:, None]), -128.0, 127.0)
    q = torch.where(nz[:, None], q, torch.zeros_like(q))
    dequant = torch.where(nz, fdiv(safe, torch.full_like(safe, 127.0)),
                          torch.zeros_like(safe))
    return q, dequant


class Ternary:
    """A BitLinear: codes [N, K] and the tensor's scale s (float32). The
    codes are held (or, lazily, decoded on each use) as float32: with
    |q| <= 128 every partial sum of q . w is an integer below 128 K <= 2^24,
    so the float32 product is exact in any summation order."""

    def __init__(self, scale: float, codes: torch.Tensor | None = None,
                 loader=None):
        self.scale = torch.tensor(float(scale), dtype=f32)  # 0-d
        self._codes, self._loader = codes, loader
        if codes is not None and codes.shape[1] > 1 << 17:
            raise ValueError("ternary rows longer than 131072 are not exact in float32")

    @property
    def codes(self) -> torch.Tensor:
        if self._codes is not None:
            return self._codes
        return self._loader()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        q, dequant = quantize_rows(x)
        acc = q @ self.codes.T  # exact integers
        s = self.scale * dequant  # float32: s * (amax / 127)
        return acc * s[:, None]


def rms_norm(x: torch.Tensor, g: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x * (1 / sqrt(mean(x^2) + eps)) * g (mean rounded once to float32),
    the reciprocal once as the runtime computes it."""
    x64 = x.to(f64)
    mean = ((x64 * x64).sum(dim=1) / x.shape[1]).to(f32)
    inv = fdiv(torch.ones_like(mean), torch.sqrt(mean + eps))
    return x * inv[:, None] * g


def exp32(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x.to(f64)).to(f32)


def relu2(g: torch.Tensor) -> torch.Tensor:
    r = torch.clamp(g, min=0.0)
    return r * r


def silu(g: torch.Tensor) -> torch.Tensor:
    return fdiv(g, 1.0 + exp32(-g))


def rope_tables(positions: torch.Tensor, d: int, base: float,
                freqs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [P, D/2] of theta = p * base^(-2i/D) (/ rope_freqs[i]),
    evaluated in float64 and rounded to float32."""
    i = torch.arange(d // 2, dtype=f64)
    inv = torch.tensor(float(base), dtype=f64) ** (-2.0 * i / d)
    if freqs is not None:
        inv = inv / freqs.to(f64)
    theta = positions.to(f64)[:, None] * inv[None, :]
    return torch.cos(theta).to(f32), torch.sin(theta).to(f32)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               mode: str = "norm") -> torch.Tensor:
    """x [P, heads, D]. mode "norm" (the spec): adjacent pairs (2i, 2i+1);
    "neox": pairs (i, i + D/2)."""
    d = x.shape[-1]
    c, s = cos[:, None, :], sin[:, None, :]
    if mode == "norm":
        a, b = x[..., 0::2], x[..., 1::2]
    elif mode == "neox":
        a, b = x[..., :d // 2], x[..., d // 2:]
    else:
        raise ValueError(f"rope mode {mode!r}")
    ra, rb = a * c - b * s, a * s + b * c
    if mode == "norm":
        return torch.stack((ra, rb), dim=-1).reshape(x.shape)
    return torch.cat((ra, rb), dim=-1)


def attention(q: torch.Tensor, qpos: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> torch.Tensor:
    """q [P, H, D] at positions qpos; k, v [T, Hkv, D] for positions 0..T-1
    (already float16-rounded). Head j uses KV head j / (H / Hkv); causal.
    Returns o [P, H*D]."""
    p_, h, d = q.shape
    t, hkv, _ = k.shape
    group = h // hkv
    kk = k.repeat_interleave(group, dim=1)  # [T, H, D]
    vv = v.repeat_interleave(group, dim=1)
    dots = torch.einsum("phd,thd->hpt", q.to(f64), kk.to(f64)).to(f32)
    sqrt_d = torch.sqrt(torch.tensor(float(d), dtype=f32))
    s = fdiv(dots, sqrt_d.reshape(1, 1, 1))
    mask = torch.arange(t)[None, :] > qpos[:, None]  # [P, T]
    s = s.masked_fill(mask[None], float("-inf"))
    mx = s.amax(dim=2, keepdim=True)
    e = exp32(s - mx)
    tot = e.to(f64).sum(dim=2, keepdim=True).to(f32)
    w = fdiv(e, tot)
    o = torch.einsum("hpt,thd->phd", w.to(f64), vv.to(f64)).to(f32)
    return o.reshape(p_, h * d)


def to_f16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(f32)


# --- the model --------------------------------------------------------------

@dataclass
class Layer:
    attn_norm: torch.Tensor
    q: Ternary
    k: Ternary
    v: Ternary
    o: Ternary
    ffn_norm: torch.Tensor
    gate: Ternary
    up: Ternary
    down: Ternary
    attn_sub_norm: torch.Tensor | None
    ffn_sub_norm: torch.Tensor | None


class BitNetRef:
    """The reference model. head: "int8" (ternctl convert's default),
    "f16" (the spec's two storages) or "f32" (the decoded head as is: not a
    runtime option, for measuring the others). rope: None (the spec: "neox"
    for the bitnet architectures, "norm" for llama) or "norm" / "neox";
    activation: None (the spec: relu^2 for bitnet-b1.58 and
    bitnet-25, SiLU otherwise) or "relu2" / "silu". lazy: decode each
    ternary tensor from the (memory-mapped) file on every use instead of
    holding all of them, for models too large to hold (the 2B4T shapes:
    about 1.5 GB instead of 9 GB, and some seconds per layer)."""

    def __init__(self, model: str | GGUFFile, head: str = "int8",
                 rope: str | None = None, activation: str | None = None,
                 lazy: bool = False):
        f = model if isinstance(model, GGUFFile) else GGUFFile(model)
        if head not in HEADS:
            raise ValueError(f"head {head!r}: one of {HEADS}")
        self.file, self.head_mode, self.rope_mode = f, head, rope
        arch = f.kv.get("general.architecture")
        if arch not in ARCHES:
            raise ValueError(f"{f.path}: architecture {arch!r} (one of {ARCHES})")
        self.arch = arch
        if self.rope_mode is None:
            self.rope_mode = "norm" if arch == "llama" else "neox"

        def hp(key, default=None):
            v = f.kv.get(f"{arch}.{key}", default)
            if v is None:
                raise ValueError(f"{f.path}: no {arch}.{key}")
            return v

        self.n_layers = int(hp("block_count"))
        self.hidden = int(hp("embedding_length"))
        self.ffn = int(hp("feed_forward_length"))
        self.n_heads = int(hp("attention.head_count"))
        self.n_kv_heads = int(hp("attention.head_count_kv", self.n_heads))
        self.context = int(hp("context_length"))
        self.rope_base = float(np.float32(hp("rope.freq_base", 10000.0)))
        self.eps = torch.tensor(float(np.float32(hp("attention.layer_norm_rms_epsilon"))),
                                dtype=f32)
        self.head_dim = self.hidden // self.n_heads
        self.activation = activation or ("relu2" if arch in RELU2_ARCHES else "silu")
        self.act = {"relu2": relu2, "silu": silu}[self.activation]
        sub = arch != "llama"

        def floats(name):
            return torch.from_numpy(f.floats(name))  # a fresh float32 array

        def tern(name):
            codes, scale = f.ternary(name)
            s = np.float32(scale)
            extra = name[:-len(".weight")] + ".scale"
            if extra in f.tensors:  # llama.cpp's optional per-tensor factor
                s = np.float32(s * np.float32(f.floats(extra).reshape(-1)[0]))
            if lazy:
                return Ternary(s, loader=lambda: torch.from_numpy(
                    f.ternary(name)[0].astype(np.float32)))
            return Ternary(s, codes=torch.from_numpy(codes.astype(np.float32)))

        self.layers = []
        for n in range(self.n_layers):
            p = f"blk.{n}."
            self.layers.append(Layer(
                floats(p + "attn_norm.weight"), tern(p + "attn_q.weight"),
                tern(p + "attn_k.weight"), tern(p + "attn_v.weight"),
                tern(p + "attn_output.weight"), floats(p + "ffn_norm.weight"),
                tern(p + "ffn_gate.weight"), tern(p + "ffn_up.weight"),
                tern(p + "ffn_down.weight"),
                floats(p + "attn_sub_norm.weight") if sub else None,
                floats(p + "ffn_sub_norm.weight") if sub else None))
        self.output_norm = floats("output_norm.weight")
        self.rope_freqs = (floats("rope_freqs.weight")
                           if "rope_freqs.weight" in f.tensors else None)
        self.tied = "output.weight" not in f.tensors
        head = floats("token_embd.weight" if self.tied else "output.weight")
        self.vocab = head.shape[0]
        # The head as stored: int8 codes (float32 values) and a scale per
        # row, or f16 values (as float32), or the decoded values.
        self.head_scale = None
        if self.head_mode == "int8":
            self.head_scale = torch.empty(self.vocab, dtype=f32)
        for r in range(0, self.vocab, 1 << 14):  # in place, row chunks
            rows = head[r:r + (1 << 14)]
            if self.head_mode == "int8":
                q, sc = quantize_rows(rows)
                rows.copy_(q)
                self.head_scale[r:r + len(q)] = sc
            elif self.head_mode == "f16":
                rows.copy_(to_f16(rows))
        self.head_w = head
        self.embd = None if self.tied else floats("token_embd.weight")

    # --- pieces -----------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embedding rows: token_embd decoded, or when tied the head's
        rows as stored (int8 rows dequantized: float(q) * scale)."""
        if not self.tied:
            return self.embd[tokens].clone()
        rows = self.head_w[tokens].clone()
        if self.head_scale is not None:
            rows = rows * self.head_scale[tokens][:, None]
        return rows

    def logits_of(self, h: torch.Tensor) -> torch.Tensor:
        z = rms_norm(h, self.output_norm, self.eps).to(f64)
        out = torch.empty(h.shape[0], self.vocab, dtype=f32)
        for r in range(0, self.vocab, 1 << 14):
            w = self.head_w[r:r + (1 << 14)]
            out[:, r:r + len(w)] = (z @ w.to(f64).T).to(f32)
        if self.head_scale is not None:
            out = out * self.head_scale[None, :]
        return out

    def _qkv(self, layer: Layer, h: torch.Tensor, pos: torch.Tensor):
        a = rms_norm(h, layer.attn_norm, self.eps)
        n = h.shape[0]
        q = layer.q(a).reshape(n, self.n_heads, self.head_dim)
        k = layer.k(a).reshape(n, self.n_kv_heads, self.head_dim)
        v = layer.v(a).reshape(n, self.n_kv_heads, self.head_dim)
        cos, sin = rope_tables(pos, self.head_dim, self.rope_base, self.rope_freqs)
        q = apply_rope(q, cos, sin, self.rope_mode)
        k = apply_rope(k, cos, sin, self.rope_mode)
        return q, to_f16(k), to_f16(v)

    def _after_attention(self, layer: Layer, h: torch.Tensor, o: torch.Tensor):
        if layer.attn_sub_norm is not None:
            o = rms_norm(o, layer.attn_sub_norm, self.eps)
        h = h + layer.o(o)
        x = rms_norm(h, layer.ffn_norm, self.eps)
        m = self.act(layer.gate(x)) * layer.up(x)
        if layer.ffn_sub_norm is not None:
            m = rms_norm(m, layer.ffn_sub_norm, self.eps)
        return h + layer.down(m)

    def _check_tokens(self, tokens) -> torch.Tensor:
        t = torch.as_tensor(list(tokens), dtype=torch.int64)
        if len(t) and (t.min() < 0 or t.max() >= self.vocab):
            raise ValueError(f"token ids must be in 0..{self.vocab - 1}")
        return t

    # --- forward ----------------------------------------------------------
    def forward(self, tokens, trace: dict | None = None) -> torch.Tensor:
        """Logits [P, V] at every position, the whole sequence at once.
        trace, if given, receives the residual stream after each layer."""
        t = self._check_tokens(tokens)
        if len(t) > self.context:
            raise ValueError(f"{len(t)} tokens, context_length {self.context}")
        pos = torch.arange(len(t))
        h = self.embed(t)
        for i, layer in enumerate(self.layers):
            q, k, v = self._qkv(layer, h, pos)
            h = self._after_attention(layer, h, attention(q, pos, k, v))
            if trace is not None:
                trace[f"blk.{i}"] = h.clone()
        return self.logits_of(h)

    def session(self) -> "KVSession":
        return KVSession(self)

    def forward_incremental(self, tokens) -> torch.Tensor:
        """Logits [P, V], one token at a time through the KV cache."""
        s = self.session()
        return torch.stack([s.step(int(tok)) for tok in self._check_tokens(tokens)])

    def greedy(self, prompt, n: int) -> list[int]:
        """n tokens after prompt, each the arg max of the logits (the lowest
        id among equal maxima), through the KV cache."""
        if not len(prompt):
            raise ValueError("greedy needs a prompt of at least one token")
        s = self.session()
        logits = None
        for tok in self._check_tokens(prompt):
            logits = s.step(int(tok))
        out = []
        for i in range(n):
            nxt = argmax_lowest(logits)
            out.append(nxt)
            if i + 1 < n:
                logits = s.step(nxt)
        return out


def argmax_lowest(logits: torch.Tensor) -> int:
    m = logits.max()
    return int(torch.nonzero(logits == m)[0, 0])


class KVSession:
    """One sequence decoded token by token; K and V kept as float16 values."""

    def __init__(self, model: BitNetRef):
        self.m = model
        hd = (0, model.n_kv_heads, model.head_dim)
        self.k = [torch.zeros(hd) for _ in model.layers]
        self.v = [torch.zeros(hd) for _ in model.layers]
        self.pos = 0

    def step(self, token: int) -> torch.Tensor:
        m = self.m
        if self.pos >= m.context:
            raise ValueError(f"position {self.pos}: context_length {m.context}")
        pos = torch.tensor([self.pos])
        h = m.embed(torch.tensor([token]))
        for i, layer in enumerate(m.layers):
            q, k, v = m._qkv(layer, h, pos)
            self.k[i] = torch.cat((self.k[i], k))
            self.v[i] = torch.cat((self.v[i], v))
            h = m._after_attention(layer, h, attention(q, pos, self.k[i], self.v[i]))
        self.pos += 1
        return m.logits_of(h)[0]


# --- measurements -----------------------------------------------------------

def default_tokens(vocab: int, n: int = 64, seed: int = 7) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def head_error(model: str | GGUFFile, tokens=None, lazy: bool = False) -> dict:
    """How far the int8 head's logits are from the f16 head's (and both from
    the decoded head's) on one token sequence: max abs error, that over the
    largest |logit| (relative), the RMS error, and the fraction of
    positions where the arg max agrees.

    int8_vs_f16 compares the two models as the spec defines them: with a
    tied head the int8 model's embeddings are int8 too, so the difference
    also carries that change through every layer. head_only_int8_vs_f16
    applies both heads to the same final hidden states (the f16 model's):
    the error of the head's storage alone."""
    f = model if isinstance(model, GGUFFile) else GGUFFile(model)
    refs = {h: BitNetRef(f, head=h, lazy=lazy) for h in HEADS}
    if tokens is None:
        tokens = default_tokens(refs["f16"].vocab)
    trace: dict = {}
    lg = {h: r.forward(tokens, trace=trace if h == "f16" else None)
          for h, r in refs.items()}
    last = trace[f"blk.{refs['f16'].n_layers - 1}"]
    lg["int8_head_only"] = refs["int8"].logits_of(last)

    def cmp(a, b):
        d = (lg[a] - lg[b]).abs()
        return {"max_abs": float(d.max()),
                "rel": float(d.max() / lg[b].abs().max()),
                "rms": float(d.pow(2).mean().sqrt()),
                "argmax_agree": float((lg[a].argmax(1) == lg[b].argmax(1)).float().mean())}

    return {"tokens": len(tokens), "vocab": refs["f16"].vocab,
            "tied": refs["f16"].tied,
            "logit_max_abs": float(lg["f16"].abs().max()),
            "logit_std": float(lg["f16"].std()),
            "int8_vs_f16": cmp("int8", "f16"),
            "head_only_int8_vs_f16": cmp("int8_head_only", "f16"),
            "int8_vs_f32": cmp("int8", "f32"), "f16_vs_f32": cmp("f16", "f32")}


# --- CLI --------------------------------------------------------------------

def _tokens(s: str) -> list[int]:
    return [int(x) for x in s.replace(" ", ",").split(",") if x]


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(prog="python3 -m ternd.bitnet_ref",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def model_args(p, tokens_required=True):
        p.add_argument("model")
        p.add_argument("--tokens", type=_tokens, required=tokens_required,
                       help="comma-separated token ids")
        p.add_argument("--head", choices=HEADS, default="int8")
        p.add_argument("--rope", choices=("norm", "neox"), default=None,
                       help="default: by architecture (docs/llm.md)")
        p.add_argument("--activation", choices=("relu2", "silu"), default=None)
        p.add_argument("--lazy", action="store_true",
                       help="decode ternary tensors on each use (large models)")

    p = sub.add_parser("logits", help="raw little-endian float32 [positions, vocab]")
    model_args(p)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--incremental", action="store_true",
                   help="one token at a time through the KV cache")
    p = sub.add_parser("greedy", help="print the ids of n greedy tokens")
    model_args(p)
    p.add_argument("-n", type=int, required=True)
    p = sub.add_parser("head-error", help="int8 vs f16 head logit error")
    model_args(p, tokens_required=False)
    p = sub.add_parser("make", help="write a random-weight model (gguf_writer)")
    p.add_argument("output")
    p.add_argument("--arch", choices=ARCHES, default="bitnet-b1.58")
    p.add_argument("--ternary", choices=("i2_s", "tq2_0", "tq1_0"), default="i2_s")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--ffn", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--head-type", default="none",
                   help="none (tied) or a gguf_writer type name")
    p.add_argument("--embd-type", default="f16")
    p.add_argument("--rope-freqs", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--raw-scales", action="store_true",
                   help="gguf_writer's default distributions instead of "
                        "well_scaled()")
    a = ap.parse_args(argv)

    if a.cmd == "make":
        from . import gguf_writer as gw
        kw = {} if a.raw_scales else gw.well_scaled(a.hidden)
        b = gw.model_file(a.arch, a.hidden, a.ffn, a.layers, a.heads, a.kv_heads,
                          a.vocab, gw.TYPE_NAMES[a.ternary],
                          gw.TYPE_NAMES[a.embd_type],
                          None if a.head_type == "none" else gw.TYPE_NAMES[a.head_type],
                          gw.T_F32, a.context, a.seed, a.rope_freqs, **kw)
        b.write(a.output)
        return 0
    if a.cmd == "head-error":
        r = head_error(a.model, a.tokens, lazy=a.lazy)
        for k, v in r.items():
            print(f"{k:14} {v}")
        return 0
    m = BitNetRef(a.model, head=a.head, rope=a.rope, activation=a.activation,
                  lazy=a.lazy)
    if a.cmd == "logits":
        lg = m.forward_incremental(a.tokens) if a.incremental else m.forward(a.tokens)
        lg.numpy().astype("<f4").tofile(a.output)
        print(f"{lg.shape[0]} positions x {lg.shape[1]} logits -> {a.output}",
              file=sys.stderr)
        return 0
    print(",".join(str(t) for t in m.greedy(a.tokens, a.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
