"""Writes GGUF files (version 3, little-endian) holding small random-weight
BitNet b1.58 language models, for testing ternd's GGUF import without
downloading anything.

numpy only; importable as ``ternd.gguf_writer`` and runnable as a script:

    python3 -m ternd.gguf_writer --arch bitnet-b1.58 --hidden 64 --ffn 128 \
        --layers 2 --heads 4 --kv-heads 2 --vocab 300 -o x.gguf
    python3 python/ternd/gguf_writer.py --types -o types.gguf --expected DIR

With ``--expected DIR`` it also writes, for every tensor NAME, the values a
correct decoder must produce: ``DIR/NAME.f32`` (raw little-endian float32,
row-major; ternary tensors as code * scale) and, for ternary tensors,
``DIR/NAME.codes`` (int8 in {-1, 0, 1}) and ``DIR/NAME.scale`` (one float32).

Block layouts written here (and read by runtime/gguf/gguf_decode.cc):
  I2_S   per 128 weights 32 bytes; byte j holds weights j, j+32, j+64, j+96
         in bits 7-6, 5-4, 3-2, 1-0 as code w+1; then one float32 scale,
         padded to 32 bytes, after the last block of the tensor.
  TQ2_0  per 256 weights: 64 bytes of codes (per half of 128: byte m holds
         weights m + 32n in bits 2n, 2n+1 as w+1), fp16 scale.
  TQ1_0  per 256 weights: 48 bytes of five base-3 digits each (weights
         32n+m in byte m < 32, 160+16n+m in byte 32+m, most significant
         digit first, stored as ceil(v*256/243)), 4 bytes of four digits
         (weights 240+4n+j in byte j, shifted one digit up), fp16 scale.
  Q8_0   per 32: fp16 d, 32 int8.  Q4_K, Q6_K: the k-quant layouts of 256.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys

import numpy as np

GGUF_VERSION = 3
ALIGNMENT = 32

# Metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
           F32: "<f", BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}

# Tensor types (ggml numbering; I2_S is bitnet.cpp's).
T_F32, T_F16, T_Q8_0, T_Q4_K, T_Q6_K, T_BF16 = 0, 1, 8, 12, 14, 30
T_TQ1_0, T_TQ2_0, T_I2_S = 34, 35, 36
TYPE_NAMES = {"f32": T_F32, "f16": T_F16, "bf16": T_BF16, "q8_0": T_Q8_0,
              "q4_k": T_Q4_K, "q6_k": T_Q6_K, "tq1_0": T_TQ1_0,
              "tq2_0": T_TQ2_0, "i2_s": T_I2_S}
TERNARY_TYPES = (T_I2_S, T_TQ2_0, T_TQ1_0)


def _string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _value(vtype: int, value) -> bytes:
    if vtype == STRING:
        return _string(value)
    if vtype == ARRAY:
        elem_type, items = value
        out = struct.pack("<IQ", elem_type, len(items))
        return out + b"".join(_value(elem_type, v) for v in items)
    return struct.pack(_SCALAR[vtype], value)


class GGUFWriter:
    """Collects metadata and tensors; to_bytes() lays out the file."""

    def __init__(self, alignment: int = ALIGNMENT):
        self.alignment = alignment
        self.kv: list[tuple[str, int, object]] = []
        self.tensors: list[tuple[str, tuple[int, ...], int, bytes]] = []

    def add(self, key: str, vtype: int, value) -> None:
        self.kv.append((key, vtype, value))

    def add_tensor(self, name: str, dims: tuple[int, ...], ttype: int,
                   data: bytes) -> None:
        """dims innermost first (GGUF order): [K, N] is N rows of K."""
        self.tensors.append((name, tuple(dims), ttype, data))

    def to_bytes(self) -> bytes:
        head = bytearray(b"GGUF")
        head += struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv))
        for key, vtype, value in self.kv:
            head += _string(key) + struct.pack("<I", vtype) + _value(vtype, value)
        offset = 0
        offsets = []
        for name, dims, ttype, data in self.tensors:
            offsets.append(offset)
            head += _string(name) + struct.pack("<I", len(dims))
            head += b"".join(struct.pack("<Q", d) for d in dims)
            head += struct.pack("<IQ", ttype, offset)
            offset = _align(offset + len(data), self.alignment)
        out = bytearray(head)
        out += bytes(_align(len(out), self.alignment) - len(out))
        for (name, dims, ttype, data), off in zip(self.tensors, offsets):
            out += data
            out += bytes(_align(len(data), self.alignment) - len(data))
        return bytes(out)


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# --- encoders: each returns (bytes, expected float32 values) ---------------

def _f16(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float16)


def encode_float(x: np.ndarray, ttype: int) -> tuple[bytes, np.ndarray]:
    x = x.astype(np.float32)
    if ttype == T_F32:
        return x.astype("<f4").tobytes(), x
    if ttype == T_F16:
        h = x.astype("<f2")
        return h.tobytes(), h.astype(np.float32)
    if ttype == T_BF16:
        bits = (x.view(np.uint32) >> 16).astype("<u2")  # truncation
        return bits.tobytes(), (bits.astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f"not a plain float type: {ttype}")


def encode_q8_0(x: np.ndarray) -> tuple[bytes, np.ndarray]:
    blocks = x.astype(np.float32).reshape(-1, 32)
    out = bytearray()
    expected = np.empty_like(blocks)
    for i, b in enumerate(blocks):
        amax = float(np.abs(b).max())
        d = _f16(amax / 127.0)
        dv = np.float32(d)
        q = np.zeros(32, np.int8) if dv == 0 else np.clip(
            np.round(b / dv), -127, 127).astype(np.int8)
        out += d.astype("<f2").tobytes() + q.tobytes()
        expected[i] = dv * q.astype(np.float32)
    return bytes(out), expected.reshape(-1)


def random_q4_k(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray]:
    out = bytearray()
    expected = []
    for _ in range(n // 256):
        d = _f16(rng.uniform(0.001, 0.05))
        dmin = _f16(rng.uniform(0.001, 0.05))
        s = rng.integers(0, 256, 12, dtype=np.uint8)
        qs = rng.integers(0, 256, 128, dtype=np.uint8)
        out += d.astype("<f2").tobytes() + dmin.astype("<f2").tobytes()
        out += s.tobytes() + qs.tobytes()
        df, mf = np.float32(d), np.float32(dmin)
        y = []
        for j in range(0, 8, 2):
            q = qs[16 * j:16 * j + 32]
            for sub, nib in ((j, q & 0xF), (j + 1, q >> 4)):
                if sub < 4:
                    sc, m = s[sub] & 63, s[sub + 4] & 63
                else:
                    sc = (s[sub + 4] & 0xF) | ((s[sub - 4] >> 6) << 4)
                    m = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4)
                d1 = df * np.float32(sc)
                m1 = mf * np.float32(m)
                y.append(d1 * nib.astype(np.float32) - m1)
        expected.append(np.concatenate(y))
    return bytes(out), np.concatenate(expected).astype(np.float32)


def random_q6_k(rng: np.random.Generator, n: int) -> tuple[bytes, np.ndarray]:
    out = bytearray()
    expected = []
    for _ in range(n // 256):
        ql = rng.integers(0, 256, 128, dtype=np.uint8)
        qh = rng.integers(0, 256, 64, dtype=np.uint8)
        sc = rng.integers(-128, 128, 16, dtype=np.int8)
        d = _f16(rng.uniform(0.0001, 0.01))
        out += ql.tobytes() + qh.tobytes() + sc.tobytes()
        out += d.astype("<f2").tobytes()
        df = np.float32(d)
        y = np.empty(256, np.float32)
        for h in range(2):
            l_ = ql[64 * h:64 * h + 64].astype(np.int32)
            hh = qh[32 * h:32 * h + 32].astype(np.int32)
            s = sc[8 * h:8 * h + 8].astype(np.float32)
            q = [(l_[:32] & 0xF) | (((hh >> 0) & 3) << 4),
                 (l_[32:] & 0xF) | (((hh >> 2) & 3) << 4),
                 (l_[:32] >> 4) | (((hh >> 4) & 3) << 4),
                 (l_[32:] >> 4) | (((hh >> 6) & 3) << 4)]
            for k in range(4):
                for l0 in range(32):
                    ds = df * s[l0 // 16 + 2 * k]
                    y[128 * h + 32 * k + l0] = ds * np.float32(q[k][l0] - 32)
        expected.append(y)
    return bytes(out), np.concatenate(expected)


def encode_i2s(w: np.ndarray, scale: float) -> bytes:
    c = (w.reshape(-1, 128) + 1).astype(np.uint8)
    packed = np.zeros((c.shape[0], 32), np.uint8)
    for g in range(4):
        packed |= c[:, 32 * g:32 * g + 32] << (6 - 2 * g)
    trailer = struct.pack("<f", scale) + bytes(28)
    return packed.tobytes() + trailer


def encode_tq2_0(w: np.ndarray, scale: float) -> bytes:
    c = (w.reshape(-1, 256) + 1).astype(np.uint8)
    d = _f16(scale).astype("<f2").tobytes()
    out = bytearray()
    for b in c:
        qs = np.zeros(64, np.uint8)
        for half in range(2):
            x = b[128 * half:128 * half + 128]
            for n in range(4):
                qs[32 * half:32 * half + 32] |= x[32 * n:32 * n + 32] << (2 * n)
        out += qs.tobytes() + d
    return bytes(out)


def _pack_trits(digits: list[np.ndarray], pad: int) -> np.ndarray:
    v = np.zeros_like(digits[0], dtype=np.int32)
    for x in digits:
        v = v * 3 + x
    v = v * (3 ** pad)
    return ((v * 256 + 242) // 243).astype(np.uint8)


def encode_tq1_0(w: np.ndarray, scale: float) -> bytes:
    c = (w.reshape(-1, 256) + 1).astype(np.int32)
    d = _f16(scale).astype("<f2").tobytes()
    out = bytearray()
    for b in c:
        qs = _pack_trits([b[32 * n:32 * n + 32] for n in range(5)], 0)
        qs2 = _pack_trits([b[160 + 16 * n:176 + 16 * n] for n in range(5)], 0)
        qh = _pack_trits([b[240 + 4 * n:244 + 4 * n] for n in range(4)], 1)
        out += qs.tobytes() + qs2.tobytes() + qh.tobytes() + d
    return bytes(out)


def encode_ternary(w: np.ndarray, ttype: int, scale: float):
    """Returns (bytes, the scale a decoder reads)."""
    if ttype == T_I2_S:
        return encode_i2s(w, scale), float(np.float32(scale))
    if ttype == T_TQ2_0:
        return encode_tq2_0(w, scale), float(np.float32(_f16(scale)))
    if ttype == T_TQ1_0:
        return encode_tq1_0(w, scale), float(np.float32(_f16(scale)))
    raise ValueError(f"not a ternary type: {ttype}")


class Builder:
    """A GGUFWriter plus the expected decoded values of each tensor."""

    def __init__(self, seed: int = 1):
        self.w = GGUFWriter()
        self.rng = np.random.default_rng(seed)
        self.expected: dict[str, dict] = {}

    def ternary(self, name: str, dims: tuple[int, ...], ttype: int,
                scale_range: tuple[float, float] = (0.01, 2.0),
                scale_mul: float = 1.0) -> None:
        """Random codes; the scale is uniform in scale_range, times scale_mul."""
        n = int(np.prod(dims))
        w = self.rng.integers(-1, 2, n).astype(np.int8)
        s = float(self.rng.uniform(*scale_range)) * scale_mul
        data, scale = encode_ternary(w, ttype, s)
        self.w.add_tensor(name, dims, ttype, data)
        self.expected[name] = {
            "f32": w.astype(np.float32) * np.float32(scale),
            "codes": w, "scale": np.float32(scale)}

    def floats(self, name: str, dims: tuple[int, ...], ttype: int,
               std: float = 0.5, mean: float = 0.0) -> None:
        """Normal(mean, std) values (Q4_K and Q6_K: random blocks, which
        ignore mean and std)."""
        n = int(np.prod(dims))
        if ttype == T_Q4_K:
            data, exp = random_q4_k(self.rng, n)
        elif ttype == T_Q6_K:
            data, exp = random_q6_k(self.rng, n)
        elif ttype == T_Q8_0:
            data, exp = encode_q8_0(self.rng.normal(mean, std, n))
        else:
            data, exp = encode_float(self.rng.normal(mean, std, n), ttype)
        self.w.add_tensor(name, dims, ttype, data)
        self.expected[name] = {"f32": exp}

    def write(self, path: str, expected_dir: str | None = None) -> None:
        with open(path, "wb") as f:
            f.write(self.w.to_bytes())
        if expected_dir:
            os.makedirs(expected_dir, exist_ok=True)
            for name, e in self.expected.items():
                base = os.path.join(expected_dir, name)
                e["f32"].astype("<f4").tofile(base + ".f32")
                if "codes" in e:
                    e["codes"].astype(np.int8).tofile(base + ".codes")
                    np.array([e["scale"]], "<f4").tofile(base + ".scale")


def add_test_metadata(w: GGUFWriter) -> None:
    """One key of every value type, with known values (ternd.test.*)."""
    w.add("ternd.test.u8", U8, 200)
    w.add("ternd.test.i8", I8, -100)
    w.add("ternd.test.u16", U16, 60000)
    w.add("ternd.test.i16", I16, -30000)
    w.add("ternd.test.u32", U32, 4000000000)
    w.add("ternd.test.i32", I32, -2000000000)
    w.add("ternd.test.f32", F32, 0.25)
    w.add("ternd.test.bool", BOOL, True)
    w.add("ternd.test.string", STRING, "héllo")
    w.add("ternd.test.u64", U64, 2 ** 63 + 5)
    w.add("ternd.test.i64", I64, -(2 ** 62))
    w.add("ternd.test.f64", F64, 1.5)
    w.add("ternd.test.strings", ARRAY, (STRING, ["a", "", "bc"]))
    w.add("ternd.test.floats", ARRAY, (F32, [0.5, -2.0]))
    w.add("ternd.test.nested", ARRAY, (ARRAY, [(I32, [1, 2]), (I32, [3])]))


def types_file(seed: int = 1) -> Builder:
    """One small tensor of every type the decoders support."""
    b = Builder(seed)
    b.w.add("general.architecture", STRING, "ternd-test")
    add_test_metadata(b.w)
    b.floats("f32", (8, 3), T_F32)
    b.floats("f16", (8, 3), T_F16)
    b.floats("bf16", (8, 3), T_BF16)
    b.floats("q8_0", (64, 2), T_Q8_0)
    b.floats("q4_k", (256, 2), T_Q4_K)
    b.floats("q6_k", (256, 2), T_Q6_K)
    b.ternary("i2_s", (128, 3), T_I2_S)
    b.ternary("tq2_0", (256, 2), T_TQ2_0)
    b.ternary("tq1_0", (256, 2), T_TQ1_0)
    return b


# Chat templates as the model families ship them in tokenizer.chat_template
# (Jinja; ternd recognises the family, it does not run the template).
CHAT_TEMPLATES = {
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
        "{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
        "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "bitnet": (
        "{% for message in messages %}{% if loop.first %}{{ bos_token }}"
        "{% endif %}{% if message['role'] == 'user' %}"
        "{{ 'User: ' + message['content'] | trim + '<|eot_id|>' }}"
        "{% elif message['role'] == 'system' %}"
        "{{ 'System: ' + message['content'] | trim + '<|eot_id|>' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ 'Assistant: ' + message['content'] | trim + '<|eot_id|>' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}"
        "{{ 'Assistant: ' }}{% endif %}"),
}


def well_scaled(hidden: int) -> dict:
    """model_file keyword arguments for a numerically useful random model of
    width `hidden`: norm gains ~ N(1, 0.2), ternary scales of 1..2 over
    sqrt(2K/3) (a BitLinear keeps about its input's RMS), embeddings and
    head ~ N(0, 3/sqrt(hidden)) (logits with a standard deviation near 3).
    The residual stream then stays at an RMS of a few units whatever the
    width and depth, and attention scores have a standard deviation near 2
    (soft, not one-hot, attention)."""
    std = 3.0 / float(np.sqrt(hidden))
    return {"norm_mean": 1.0, "norm_std": 0.2, "embd_std": std,
            "head_std": std, "scale_range": (1.0, 2.0), "scale_fan_in": True}


def model_file(arch: str, hidden: int, ffn: int, layers: int, heads: int,
               kv_heads: int, vocab: int, ternary: int, embd_type: int = T_F16,
               head_type: int | None = None, norm_type: int = T_F32,
               context: int = 256, seed: int = 1,
               rope_freqs: bool = False, *,
               norm_mean: float = 0.0, norm_std: float = 0.5,
               embd_std: float = 0.5, head_std: float = 0.5,
               scale_range: tuple[float, float] = (0.01, 2.0),
               scale_fan_in: bool = False,
               chat_template: str | None = None) -> Builder:
    """A random-weight model with the tensor naming of `arch`.
    head_type None: no output.weight (tied to the embeddings).

    The keyword-only arguments shape the random values; their defaults are
    the original distributions: norm gains ~ N(norm_mean, norm_std),
    token_embd ~ N(0, embd_std), output.weight ~ N(0, head_std), ternary
    scales uniform in scale_range and, with scale_fan_in, divided by
    sqrt(2K/3) (K the input width: the RMS gain of a row of random codes),
    so that a BitLinear keeps about its input's RMS. well_scaled() gives a
    set of them under which activations and logits stay in a useful range
    (the defaults let the residual stream grow and attention saturate)."""
    b = Builder(seed)
    w = b.w
    w.add("general.architecture", STRING, arch)
    w.add("general.name", STRING, f"random {arch}")
    w.add("general.alignment", U32, ALIGNMENT)
    w.add(f"{arch}.block_count", U32, layers)
    w.add(f"{arch}.context_length", U32, context)
    w.add(f"{arch}.embedding_length", U32, hidden)
    w.add(f"{arch}.feed_forward_length", U32, ffn)
    w.add(f"{arch}.attention.head_count", U32, heads)
    w.add(f"{arch}.attention.head_count_kv", U32, kv_heads)
    w.add(f"{arch}.rope.freq_base", F32, 500000.0)
    w.add(f"{arch}.attention.layer_norm_rms_epsilon", F32, 1e-5)
    add_tokenizer_metadata(w, **synthetic_vocabulary(vocab))
    if chat_template is not None:
        w.add("tokenizer.chat_template", STRING,
              CHAT_TEMPLATES.get(chat_template, chat_template))
    kv = hidden // heads * kv_heads

    def tern(name: str, dims: tuple[int, int]) -> None:
        mul = 1.0 / np.sqrt(dims[0] * 2.0 / 3.0) if scale_fan_in else 1.0
        b.ternary(name, dims, ternary, scale_range, mul)

    def norm(name: str, width: int) -> None:
        b.floats(name, (width,), norm_type, norm_std, norm_mean)

    b.floats("token_embd.weight", (hidden, vocab), embd_type, embd_std)
    for n in range(layers):
        p = f"blk.{n}."
        norm(p + "attn_norm.weight", hidden)
        tern(p + "attn_q.weight", (hidden, hidden))
        tern(p + "attn_k.weight", (hidden, kv))
        tern(p + "attn_v.weight", (hidden, kv))
        tern(p + "attn_output.weight", (hidden, hidden))
        norm(p + "ffn_norm.weight", hidden)
        tern(p + "ffn_gate.weight", (hidden, ffn))
        tern(p + "ffn_up.weight", (hidden, ffn))
        tern(p + "ffn_down.weight", (ffn, hidden))
        if arch != "llama":
            norm(p + "attn_sub_norm.weight", hidden)
            norm(p + "ffn_sub_norm.weight", ffn)
    norm("output_norm.weight", hidden)
    if head_type is not None:
        b.floats("output.weight", (hidden, vocab), head_type, head_std)
    if rope_freqs:
        # Frequency divisors as Llama 3 files have them: positive, 1 to 8.
        b.floats("rope_freqs.weight", (hidden // heads // 2,), T_F32,
                 std=1.0, mean=4.0)
    return b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--types", action="store_true",
                    help="one small tensor of every supported type instead "
                         "of a model")
    ap.add_argument("--arch", default="bitnet-b1.58",
                    choices=["bitnet-b1.58", "bitnet-25", "bitnet", "llama"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--ternary", choices=["i2_s", "tq2_0", "tq1_0"], default=None,
                    help="default: i2_s for bitnet-b1.58 and llama, tq2_0 "
                         "otherwise")
    ap.add_argument("--embd-type", choices=list(TYPE_NAMES), default="f16")
    ap.add_argument("--head-type", choices=["none"] + list(TYPE_NAMES),
                    default="none", help="none: tied to the embeddings")
    ap.add_argument("--norm-type", choices=list(TYPE_NAMES), default="f32")
    ap.add_argument("--rope-freqs", action="store_true",
                    help="add rope_freqs.weight (as Llama 3 files do)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chat-template", default=None, metavar="NAME|TEXT",
                    help="tokenizer.chat_template: 'llama3', 'bitnet' (the "
                    "families' templates as their models ship them) or the "
                    "template text itself; default: none")
    ap.add_argument("--well-scaled", action="store_true",
                    help="the distributions of well_scaled() instead of the "
                         "defaults")
    ap.add_argument("--expected", metavar="DIR",
                    help="also write the decoded values of every tensor")
    a = ap.parse_args(argv)
    if a.types:
        b = types_file(a.seed)
    else:
        ternary = a.ternary or ("i2_s" if a.arch in ("bitnet-b1.58", "llama")
                                else "tq2_0")
        b = model_file(a.arch, a.hidden, a.ffn, a.layers, a.heads,
                       a.kv_heads or a.heads, a.vocab, TYPE_NAMES[ternary],
                       TYPE_NAMES[a.embd_type],
                       None if a.head_type == "none" else TYPE_NAMES[a.head_type],
                       TYPE_NAMES[a.norm_type], a.context, a.seed,
                       a.rope_freqs,
                       **(well_scaled(a.hidden) if a.well_scaled else {}),
                       chat_template=a.chat_template)
    b.write(a.output, a.expected)
    return 0




def add_tokenizer_metadata(w: GGUFWriter, model: str, tokens: list,
                           token_types: list[int], merges: list | None = None,
                           scores: list[float] | None = None,
                           pre: str | None = None, bos: int | None = None,
                           eos: int | None = None, eot: int | None = None,
                           unk: int | None = None, pad: int | None = None,
                           add_bos: bool | None = None,
                           add_eos: bool | None = None,
                           add_space_prefix: bool | None = None) -> None:
    """The tokenizer.ggml.* keys as llama.cpp's converters write them:
    model ("gpt2" or "llama"), pre, tokens (str or bytes), token_type
    (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte),
    scores, merges ("a b"), the special token ids and the add_* flags.
    Keys whose value is None are left out."""
    p = "tokenizer.ggml."
    w.add(p + "model", STRING, model)
    if pre is not None:
        w.add(p + "pre", STRING, pre)
    w.add(p + "tokens", ARRAY, (STRING, list(tokens)))
    w.add(p + "token_type", ARRAY, (I32, list(token_types)))
    if scores is not None:
        w.add(p + "scores", ARRAY, (F32, list(scores)))
    if merges is not None:
        w.add(p + "merges", ARRAY, (STRING, list(merges)))
    for name, value in (("bos", bos), ("eos", eos), ("eot", eot),
                        ("unknown", unk), ("padding", pad)):
        if value is not None:
            w.add(f"{p}{name}_token_id", U32, value)
    for name, value in (("add_bos_token", add_bos), ("add_eos_token", add_eos),
                        ("add_space_prefix", add_space_prefix)):
        if value is not None:
            w.add(p + name, BOOL, value)


def _byte_chars() -> list[str]:
    """GPT-2's printable character for each byte value (0..255)."""
    bs = (list(range(ord("!"), ord("~") + 1)) +
          list(range(ord("\xa1"), ord("\xac") + 1)) +
          list(range(ord("\xae"), ord("\xff") + 1)))
    chars = {b: chr(b) for b in bs}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def synthetic_vocabulary(vocab: int) -> dict:
    """A valid llama-3-style byte-level BPE vocabulary of exactly `vocab`
    tokens (>= 259), for random-weight test models: the 256 byte tokens,
    merges of letter and digit pairs, then triples, and the special tokens
    <|begin_of_text|>, <|end_of_text|> and <|eot_id|> at the end. Arguments
    for add_tokenizer_metadata."""
    if vocab < 259:
        raise ValueError(f"vocabulary of {vocab} tokens: at least 259")
    byte = _byte_chars()
    tokens = list(byte)
    alnum = [chr(c) for c in range(ord("a"), ord("z") + 1)] + \
        [chr(c) for c in range(ord("A"), ord("Z") + 1)] + \
        [chr(c) for c in range(ord("0"), ord("9") + 1)] + [byte[32]]
    merges = []
    want = vocab - 256 - 3
    pairs = [a + b for a in alnum for b in alnum]
    for t in pairs:
        if len(merges) == want:
            break
        merges.append(f"{t[0]} {t[1]}")
        tokens.append(t)
    for left in pairs:
        if len(merges) == want:
            break
        for c in alnum:
            if len(merges) == want:
                break
            merges.append(f"{left} {c}")
            tokens.append(left + c)
    if len(merges) < want:
        raise ValueError(f"vocabulary of {vocab} tokens is too large")
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    bos = len(tokens)
    tokens += specials
    types = [1] * (len(tokens) - 3) + [3, 3, 3]
    return dict(model="gpt2", pre="llama-bpe", tokens=tokens,
                token_types=types, merges=merges, bos=bos, eos=bos + 1,
                eot=bos + 2, add_bos=True)


if __name__ == "__main__":
    sys.exit(main())
