"""Reads GGUF files (versions 2 and 3, little-endian) and decodes the tensor
types ternd imports, for the PyTorch reference (``ternd.bitnet_ref``).

numpy only. Written from the format (docs/llm.md, "Tensor types"), not from
the C++ reader, so that the two are independent:

    f = GGUFFile("model.gguf")           # memory-mapped, read-only
    f.kv["bitnet-b1.58.block_count"]     # metadata values
    codes, scale = f.ternary("blk.0.attn_q.weight")  # int8 [N, K], float
    w = f.floats("token_embd.weight")                # float32 [N, K]

``ternary`` decodes I2_S, TQ2_0 and TQ1_0 to codes in {-1, 0, 1} and the
tensor's single scale (TQ blocks must agree, all-zero blocks excepted);
``floats`` decodes F32, F16, BF16, Q8_0, Q4_K and Q6_K to float32 with the
same float32 operations as ggml's dequantizers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

# Metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
           F32: "<f", BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}

T_F32, T_F16, T_Q8_0, T_Q4_K, T_Q6_K, T_BF16 = 0, 1, 8, 12, 14, 30
T_TQ1_0, T_TQ2_0, T_I2_S = 34, 35, 36
TYPE_NAMES = {T_F32: "F32", T_F16: "F16", T_Q8_0: "Q8_0", T_Q4_K: "Q4_K",
              T_Q6_K: "Q6_K", T_BF16: "BF16", T_TQ1_0: "TQ1_0",
              T_TQ2_0: "TQ2_0", T_I2_S: "I2_S"}
TERNARY_TYPES = (T_I2_S, T_TQ2_0, T_TQ1_0)
# (elements per block, bytes per block) of the types decoded here.
_BLOCK = {T_F32: (1, 4), T_F16: (1, 2), T_BF16: (1, 2), T_Q8_0: (32, 34),
          T_Q4_K: (256, 144), T_Q6_K: (256, 210), T_TQ2_0: (256, 66),
          T_TQ1_0: (256, 54)}


class GGUFError(ValueError):
    pass


@dataclass
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # innermost first, as in the file
    type: int
    offset: int  # absolute, in the file

    @property
    def n(self) -> int:
        return int(np.prod(self.dims))

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy shape (outermost first): dims [K, N] are N rows of K."""
        return tuple(reversed(self.dims))

    def nbytes(self) -> int:
        if self.type == T_I2_S:
            return self.n // 4 + 32
        if self.type not in _BLOCK:
            raise GGUFError(f"tensor '{self.name}': type {self.type} is not "
                            "decoded by this reader")
        per, size = _BLOCK[self.type]
        if self.n % per:
            raise GGUFError(f"tensor '{self.name}': {self.n} elements are not "
                            f"a whole number of {per}-element blocks")
        return self.n // per * size


class GGUFFile:
    def __init__(self, path: str):
        self.path = path
        self.data = np.memmap(path, dtype=np.uint8, mode="r")
        self._pos = 0
        if self._take(4).tobytes() != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file")
        self.version = self._unpack("<I")
        if self.version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {self.version} (2 and 3 "
                            "are read)")
        n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
        self.kv: dict[str, object] = {}
        for _ in range(n_kv):
            key = self._string()
            self.kv[key] = self._value(self._unpack("<I"))
        self.alignment = int(self.kv.get("general.alignment", 32))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            nd = self._unpack("<I")
            dims = tuple(self._unpack("<Q") for _ in range(nd))
            ttype, off = self._unpack("<I"), self._unpack("<Q")
            infos.append((name, dims, ttype, off))
        start = (self._pos + self.alignment - 1) // self.alignment * self.alignment
        self.tensors: dict[str, TensorInfo] = {}
        for name, dims, ttype, off in infos:
            self.tensors[name] = TensorInfo(name, dims, ttype, start + off)

    # --- container --------------------------------------------------------
    def _take(self, n: int) -> np.ndarray:
        if self._pos + n > len(self.data):
            raise GGUFError(f"{self.path}: truncated at offset {self._pos}")
        b = self.data[self._pos:self._pos + n]
        self._pos += n
        return b

    def _unpack(self, fmt: str):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt)).tobytes())[0]

    def _string(self) -> str:
        return self._take(self._unpack("<Q")).tobytes().decode("utf-8")

    def _value(self, vtype: int):
        if vtype == STRING:
            return self._string()
        if vtype == ARRAY:
            et, n = self._unpack("<I"), self._unpack("<Q")
            if et in _SCALAR and et != BOOL:
                size = struct.calcsize(_SCALAR[et])
                return np.frombuffer(self._take(n * size).tobytes(),
                                     dtype=_SCALAR[et]).tolist()
            return [self._value(et) for _ in range(n)]
        if vtype == BOOL:
            return bool(self._unpack("<B"))
        if vtype in _SCALAR:
            return self._unpack(_SCALAR[vtype])
        raise GGUFError(f"{self.path}: metadata value type {vtype} at offset "
                        f"{self._pos}")

    def raw(self, name: str) -> np.ndarray:
        t = self.info(name)
        end = t.offset + t.nbytes()
        if end > len(self.data):
            raise GGUFError(f"{self.path}: tensor '{name}' runs past the end")
        return self.data[t.offset:end]

    def info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.path}: no tensor '{name}'") from None

    # --- decoding ---------------------------------------------------------
    def ternary(self, name: str) -> tuple[np.ndarray, float]:
        """(codes int8 in numpy shape, the single scale as a float32 value)."""
        t = self.info(name)
        raw = np.asarray(self.raw(name))
        if t.type == T_I2_S:
            codes, scale = decode_i2s(raw, t.n)
        elif t.type == T_TQ2_0:
            codes, scales = decode_tq2_0(raw)
            scale = _one_scale(name, codes, scales)
        elif t.type == T_TQ1_0:
            codes, scales = decode_tq1_0(raw)
            scale = _one_scale(name, codes, scales)
        else:
            raise GGUFError(f"tensor '{name}' is {TYPE_NAMES.get(t.type, t.type)}, "
                            "not ternary")
        if not np.isfinite(scale) or scale < 0:
            raise GGUFError(f"tensor '{name}': scale {scale}")
        return codes.reshape(t.shape), scale

    def floats(self, name: str) -> np.ndarray:
        t = self.info(name)
        raw = np.asarray(self.raw(name))
        if t.type == T_F32:
            x = raw.view("<f4").astype(np.float32)
        elif t.type == T_F16:
            x = raw.view("<f2").astype(np.float32)
        elif t.type == T_BF16:
            x = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif t.type == T_Q8_0:
            x = decode_q8_0(raw)
        elif t.type == T_Q4_K:
            x = decode_q4_k(raw)
        elif t.type == T_Q6_K:
            x = decode_q6_k(raw)
        else:
            raise GGUFError(f"tensor '{name}' is {TYPE_NAMES.get(t.type, t.type)}, "
                            "not a float type")
        if not np.all(np.isfinite(x)):
            raise GGUFError(f"tensor '{name}' has non-finite values")
        return x.reshape(t.shape)


def _one_scale(name: str, codes: np.ndarray, scales: np.ndarray) -> float:
    """The tensor's scale from per-block scales: blocks with a nonzero code
    must all carry the same one."""
    used = np.any(codes.reshape(len(scales), -1) != 0, axis=1)
    s = scales[used]
    if len(s) == 0:
        return float(scales[0]) if len(scales) else 0.0
    if np.any(s != s[0]):
        i = int(np.argmax(s != s[0]))
        raise GGUFError(f"tensor '{name}': block scales differ ({s[0]} and {s[i]})")
    return float(s[0])


def decode_i2s(raw: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """Per 128 weights 32 bytes; byte j holds weights j, j+32, j+64, j+96 in
    bits 7-6, 5-4, 3-2, 1-0 as w+1; then a float32 scale."""
    if n % 128:
        raise GGUFError(f"I2_S tensor of {n} elements (a multiple of 128 is read)")
    b = raw[:n // 4].reshape(-1, 32)
    c = np.empty((b.shape[0], 128), np.int8)
    for g in range(4):
        c[:, 32 * g:32 * g + 32] = (b >> (6 - 2 * g)) & 3
    if np.any(c == 3):
        raise GGUFError(f"I2_S code 3 at element {int(np.argmax(c.reshape(-1) == 3))}")
    scale = float(raw[n // 4:n // 4 + 4].view("<f4")[0])
    return (c - 1).reshape(-1), scale


def decode_tq2_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blk = raw.reshape(-1, 66)
    qs = blk[:, :64]
    d = blk[:, 64:66].copy().view("<f2").astype(np.float32).reshape(-1)
    c = np.empty((blk.shape[0], 256), np.int8)
    for half in range(2):
        q = qs[:, 32 * half:32 * half + 32]
        for l in range(4):
            o = 128 * half + 32 * l
            c[:, o:o + 32] = (q >> (2 * l)) & 3
    if np.any(c == 3):
        raise GGUFError(f"TQ2_0 code 3 at element {int(np.argmax(c.reshape(-1) == 3))}")
    return (c - 1).reshape(-1), d


_POW3 = np.array([1, 3, 9, 27, 81, 243], np.uint16)


def _trits(q: np.ndarray, n: int) -> np.ndarray:
    """The n-th base-3 digit (most significant first) of packed bytes q."""
    v = (q.astype(np.uint16) * _POW3[n]) & 0xFF
    return ((v * 3) >> 8).astype(np.int8)


def decode_tq1_0(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    blk = raw.reshape(-1, 54)
    qs, qh = blk[:, :48], blk[:, 48:52]
    d = blk[:, 52:54].copy().view("<f2").astype(np.float32).reshape(-1)
    c = np.empty((blk.shape[0], 256), np.int8)
    for n in range(5):
        c[:, 32 * n:32 * n + 32] = _trits(qs[:, :32], n)
        c[:, 160 + 16 * n:176 + 16 * n] = _trits(qs[:, 32:48], n)
    for n in range(4):
        c[:, 240 + 4 * n:244 + 4 * n] = _trits(qh, n)
    return (c - 1).reshape(-1), d


def decode_q8_0(raw: np.ndarray) -> np.ndarray:
    blk = raw.reshape(-1, 34)
    d = blk[:, :2].copy().view("<f2").astype(np.float32)
    q = blk[:, 2:].copy().view(np.int8).astype(np.float32)
    return (d * q).astype(np.float32).reshape(-1)


def decode_q4_k(raw: np.ndarray) -> np.ndarray:
    blk = raw.reshape(-1, 144)
    d = blk[:, 0:2].copy().view("<f2").astype(np.float32)
    dmin = blk[:, 2:4].copy().view("<f2").astype(np.float32)
    s = blk[:, 4:16].astype(np.uint8)
    qs = blk[:, 16:144]
    sc = np.empty((blk.shape[0], 8), np.float32)
    mn = np.empty((blk.shape[0], 8), np.float32)
    for j in range(8):
        if j < 4:
            sc[:, j], mn[:, j] = s[:, j] & 63, s[:, j + 4] & 63
        else:
            sc[:, j] = (s[:, j + 4] & 0xF) | ((s[:, j - 4] >> 6) << 4)
            mn[:, j] = (s[:, j + 4] >> 4) | ((s[:, j] >> 6) << 4)
    y = np.empty((blk.shape[0], 256), np.float32)
    for j in range(0, 8, 2):
        q = qs[:, 16 * j:16 * j + 32]
        for sub, nib in ((j, q & 0xF), (j + 1, q >> 4)):
            d1 = (d * sc[:, sub:sub + 1]).astype(np.float32)
            m1 = (dmin * mn[:, sub:sub + 1]).astype(np.float32)
            y[:, 32 * sub:32 * sub + 32] = (d1 * nib.astype(np.float32)).astype(np.float32) - m1
    return y.reshape(-1)


def decode_q6_k(raw: np.ndarray) -> np.ndarray:
    blk = raw.reshape(-1, 210)
    ql = blk[:, :128].astype(np.int32)
    qh = blk[:, 128:192].astype(np.int32)
    sc = blk[:, 192:208].copy().view(np.int8).astype(np.float32)
    d = blk[:, 208:210].copy().view("<f2").astype(np.float32)
    y = np.empty((blk.shape[0], 256), np.float32)
    for h in range(2):
        l_ = ql[:, 64 * h:64 * h + 64]
        hh = qh[:, 32 * h:32 * h + 32]
        q = [(l_[:, :32] & 0xF) | (((hh >> 0) & 3) << 4),
             (l_[:, 32:] & 0xF) | (((hh >> 2) & 3) << 4),
             (l_[:, :32] >> 4) | (((hh >> 4) & 3) << 4),
             (l_[:, 32:] >> 4) | (((hh >> 6) & 3) << 4)]
        for k in range(4):
            for half in range(2):
                ds = (d * sc[:, 8 * h + half + 2 * k:8 * h + half + 2 * k + 1]).astype(np.float32)
                qq = (q[k][:, 16 * half:16 * half + 16] - 32).astype(np.float32)
                o = 128 * h + 32 * k + 16 * half
                y[:, o:o + 16] = (ds * qq).astype(np.float32)
    return y.reshape(-1)
