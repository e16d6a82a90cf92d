"""Writes random-weight GGUF files with the exact shapes of released BitNet
b1.58 models, streaming the tensors to disk (memory stays near the size of
one chunk, not the file):

    python3 -m ternd.make_2b4t 2b4t -o bitnet-2b4t-random.gguf
    python3 -m ternd.make_2b4t 0.7b -o bitnet-0.7b-random.gguf [--ternary tq1_0]

Shapes:
  2b4t  BitNet b1.58 2B4T (bitnet.cpp): bitnet-b1.58, hidden 2560, FFN 6912,
        30 layers, 20 heads, 5 KV heads, vocab 128256, context 4096,
        rope base 500000, tied embeddings (F16), I2_S ternary, ~1.2 GB.
  0.7b  1bitLLM bitnet_b1_58-large (the llama.cpp `bitnet` architecture):
        hidden 1536, FFN 4096, 24 layers, 16 heads, 16 KV heads, vocab
        32002, context 2048, rope base 10000, tied embeddings (F16),
        TQ2_0 ternary by default.

The weights follow gguf_writer.well_scaled(hidden) (norm gains ~ N(1, 0.2),
ternary scales 1..2 over sqrt(2K/3), embeddings ~ N(0, 3/sqrt(hidden))), so
activations and logits stay in a useful range through all the layers. The
tensor names, metadata and block layouts are gguf_writer's.
"""

from __future__ import annotations

import argparse
import os
import resource
import struct
import sys
import time

import numpy as np

from . import gguf_writer as gw

SHAPES = {
    "2b4t": dict(arch="bitnet-b1.58", hidden=2560, ffn=6912, layers=30,
                 heads=20, kv_heads=5, vocab=128256, context=4096,
                 rope_base=500000.0, ternary="i2_s"),
    "0.7b": dict(arch="bitnet", hidden=1536, ffn=4096, layers=24, heads=16,
                 kv_heads=16, vocab=32002, context=2048, rope_base=10000.0,
                 ternary="tq2_0"),
}
CHUNK = 1 << 22  # elements generated at once


# --- vectorised block encoders (gguf_writer's layouts) -------------------------

def pack_i2s(c: np.ndarray) -> bytes:
    """Codes in {-1, 0, 1} (a multiple of 128) to I2_S blocks, no trailer."""
    c = (c.reshape(-1, 128) + 1).astype(np.uint8)
    packed = np.zeros((c.shape[0], 32), np.uint8)
    for g in range(4):
        packed |= c[:, 32 * g:32 * g + 32] << (6 - 2 * g)
    return packed.tobytes()


def pack_tq2_0(c: np.ndarray, scale: float) -> bytes:
    c = (c.reshape(-1, 256) + 1).astype(np.uint8)
    out = np.zeros((c.shape[0], 66), np.uint8)
    for half in range(2):
        for n in range(4):
            o = 128 * half + 32 * n
            out[:, 32 * half:32 * half + 32] |= c[:, o:o + 32] << (2 * n)
    out[:, 64:66] = np.frombuffer(np.float16(scale).astype("<f2").tobytes(), np.uint8)
    return out.tobytes()


def pack_tq1_0(c: np.ndarray, scale: float) -> bytes:
    c = (c.reshape(-1, 256) + 1).astype(np.int32)
    out = np.zeros((c.shape[0], 54), np.uint8)
    out[:, :32] = gw._pack_trits([c[:, 32 * n:32 * n + 32] for n in range(5)], 0)
    out[:, 32:48] = gw._pack_trits([c[:, 160 + 16 * n:176 + 16 * n] for n in range(5)], 0)
    out[:, 48:52] = gw._pack_trits([c[:, 240 + 4 * n:244 + 4 * n] for n in range(4)], 1)
    out[:, 52:54] = np.frombuffer(np.float16(scale).astype("<f2").tobytes(), np.uint8)
    return out.tobytes()


TERNARY = {"i2_s": gw.T_I2_S, "tq2_0": gw.T_TQ2_0, "tq1_0": gw.T_TQ1_0}


def nbytes(n: int, ttype: int) -> int:
    return {gw.T_I2_S: n // 4 + 32, gw.T_TQ2_0: n // 256 * 66,
            gw.T_TQ1_0: n // 256 * 54, gw.T_F16: 2 * n, gw.T_F32: 4 * n}[ttype]


# --- the tensors, as generators of byte chunks -----------------------------------

def ternary_chunks(rng, n_rows: int, k: int, ttype: int, scale: float):
    rows = max(1, CHUNK // k)
    for r in range(0, n_rows, rows):
        c = rng.integers(-1, 2, (min(rows, n_rows - r), k), dtype=np.int8)
        if ttype == gw.T_I2_S:
            yield pack_i2s(c)
        elif ttype == gw.T_TQ2_0:
            yield pack_tq2_0(c, scale)
        else:
            yield pack_tq1_0(c, scale)
    if ttype == gw.T_I2_S:
        yield struct.pack("<f", scale) + bytes(28)


def normal_chunks(rng, n: int, ttype: int, mean: float, std: float):
    for i in range(0, n, CHUNK):
        x = rng.standard_normal(min(CHUNK, n - i), dtype=np.float32) * np.float32(std)
        x += np.float32(mean)
        yield x.astype("<f2" if ttype == gw.T_F16 else "<f4").tobytes()


def plan(shape: dict, ternary: int, seed: int):
    """[(name, dims, type, chunk generator factory)] in file order."""
    e, f, hkv = shape["hidden"], shape["ffn"], shape["kv_heads"]
    kv = e // shape["heads"] * hkv
    ws = gw.well_scaled(e)
    rng = np.random.default_rng(seed)
    lo, hi = ws["scale_range"]
    out = []

    def tern(name, k, n):
        s = float(rng.uniform(lo, hi)) / float(np.sqrt(k * 2.0 / 3.0))
        if ternary != gw.T_I2_S:
            s = float(np.float16(s))
        else:
            s = float(np.float32(s))
        sub = np.random.default_rng([seed, len(out)])
        out.append((name, (k, n), ternary,
                    lambda: ternary_chunks(sub, n, k, ternary, s)))

    def floats(name, dims, mean, std, ttype):
        sub = np.random.default_rng([seed, len(out)])
        n = int(np.prod(dims))
        out.append((name, dims, ttype,
                    lambda: normal_chunks(sub, n, ttype, mean, std)))

    def norm(name, width):
        floats(name, (width,), ws["norm_mean"], ws["norm_std"], gw.T_F32)

    floats("token_embd.weight", (e, shape["vocab"]), 0.0, ws["embd_std"], gw.T_F16)
    for b in range(shape["layers"]):
        p = f"blk.{b}."
        norm(p + "attn_norm.weight", e)
        tern(p + "attn_q.weight", e, e)
        tern(p + "attn_k.weight", e, kv)
        tern(p + "attn_v.weight", e, kv)
        tern(p + "attn_output.weight", e, e)
        norm(p + "ffn_norm.weight", e)
        tern(p + "ffn_gate.weight", e, f)
        tern(p + "ffn_up.weight", e, f)
        tern(p + "ffn_down.weight", f, e)
        norm(p + "attn_sub_norm.weight", e)
        norm(p + "ffn_sub_norm.weight", f)
    norm("output_norm.weight", e)
    return out


def write(path: str, shape: dict, ternary: int, seed: int = 1) -> None:
    arch = shape["arch"]
    w = gw.GGUFWriter()
    w.add("general.architecture", gw.STRING, arch)
    w.add("general.name", gw.STRING, f"random {arch} with released shapes")
    w.add("general.alignment", gw.U32, gw.ALIGNMENT)
    for key, vt, val in (("block_count", gw.U32, shape["layers"]),
                         ("context_length", gw.U32, shape["context"]),
                         ("embedding_length", gw.U32, shape["hidden"]),
                         ("feed_forward_length", gw.U32, shape["ffn"]),
                         ("attention.head_count", gw.U32, shape["heads"]),
                         ("attention.head_count_kv", gw.U32, shape["kv_heads"]),
                         ("rope.freq_base", gw.F32, shape["rope_base"]),
                         ("attention.layer_norm_rms_epsilon", gw.F32, 1e-5),
                         ("vocab_size", gw.U32, shape["vocab"])):
        w.add(f"{arch}.{key}", vt, val)
    gw.add_tokenizer_metadata(w, **gw.synthetic_vocabulary(shape["vocab"]))
    tensors = plan(shape, ternary, seed)
    head = bytearray(b"GGUF")
    head += struct.pack("<IQQ", gw.GGUF_VERSION, len(tensors), len(w.kv))
    for key, vtype, value in w.kv:
        head += gw._string(key) + struct.pack("<I", vtype) + gw._value(vtype, value)
    offset = 0
    for name, dims, ttype, _ in tensors:
        head += gw._string(name) + struct.pack("<I", len(dims))
        head += b"".join(struct.pack("<Q", d) for d in dims)
        head += struct.pack("<IQ", ttype, offset)
        offset = gw._align(offset + nbytes(int(np.prod(dims)), ttype), gw.ALIGNMENT)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.write(bytes(gw._align(len(head), gw.ALIGNMENT) - len(head)))
        for name, dims, ttype, chunks in tensors:
            size = 0
            for c in chunks():
                fh.write(c)
                size += len(c)
            want = nbytes(int(np.prod(dims)), ttype)
            if size != want:
                raise AssertionError(f"{name}: wrote {size} bytes, expected {want}")
            fh.write(bytes(gw._align(size, gw.ALIGNMENT) - size))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m ternd.make_2b4t",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--ternary", choices=sorted(TERNARY), default=None,
                    help="default: i2_s for 2b4t, tq2_0 for 0.7b")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    shape = SHAPES[a.shape]
    t0 = time.monotonic()
    write(a.output, shape, TERNARY[a.ternary or shape["ternary"]], a.seed)
    dt = time.monotonic() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.output}: {os.path.getsize(a.output) / 1e9:.3f} GB in {dt:.1f} s, "
          f"peak RSS {rss:.0f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
