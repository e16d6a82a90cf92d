"""Reading and writing ternd model files (.tern) in Python.

The byte layout and the rules are those of the C++ reader (runtime/format.h,
docs/model-format.md):

    [0, 16)       preamble: b"TERN", u32 format version (1..3), u32 header
                  length, u32 flags (0), all little-endian
    [16, 16+H)    ModelHeader (protobuf, runtime/model.proto)
    zero padding up to the next multiple of 64: the data section starts there
    data          tensors, each at a 64-byte aligned offset from the data start;
                  the file ends exactly at data start + header.data_length

`read_tern` checks what a tool needs to trust the file (preamble, lengths,
offsets, alignment, names, ternary codes) and raises `TernFormatError` with
a message naming the tensor or field; the C++ reader stays the authority on
graph validation. `TernWriter` lays tensors out exactly as the C++
`ModelWriter` does, so the same model gives the same bytes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from typing import Dict, Iterable, Sequence, Union

import numpy as np

from . import model_pb2

MAGIC = b"TERN"
FORMAT_VERSION = 1
# Graphs with an op of the convolutional family (CONV2D = 12 and up) are
# format version 3; others stay version 1, as the C++ writer does.
CONV_FORMAT_VERSION = 3
FIRST_CONV_OP = 12
PREAMBLE_SIZE = 16
TENSOR_ALIGNMENT = 64
MAX_HEADER_BYTES = 64 << 20
MAX_NAME_LENGTH = 63
MAX_BATCH = 256

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,63}$")


class TernFormatError(ValueError):
    """A .tern file (or a model about to be written) breaks a format rule."""


def _op_name(op_type: int) -> str:
    return model_pb2.OpType.Name(op_type) if op_type in model_pb2.OpType.values() else str(op_type)


def valid_name(name: str) -> bool:
    """True when `name` is a legal tensor/value/model name."""
    return bool(_NAME_RE.match(name))


def _align_up(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


# --------------------------------------------------------------- packing


def ternary_row_bytes(k: int) -> int:
    return (k + 3) // 4


def pack_ternary(weights: np.ndarray) -> bytes:
    """Packs an [N, K] array of -1/0/+1 into the canonical 2-bit layout.

    Weight (n, k) is stored as code w + 1 in byte k // 4 of row n, bits
    2 * (k % 4); rows are padded to whole bytes with code 1 (zero).
    """
    w = np.asarray(weights)
    if w.ndim != 2:
        raise TernFormatError(f"ternary weights must be 2-D, got shape {w.shape}")
    if w.size and (w.min() < -1 or w.max() > 1):
        raise TernFormatError("ternary weights must be -1, 0 or +1")
    n, k = w.shape
    kp = ternary_row_bytes(k) * 4
    codes = np.ones((n, kp), dtype=np.uint8)
    codes[:, :k] = (w.astype(np.int16) + 1).astype(np.uint8)
    codes = codes.reshape(n, kp // 4, 4)
    packed = (codes[:, :, 0] | (codes[:, :, 1] << 2) | (codes[:, :, 2] << 4)
              | (codes[:, :, 3] << 6)).astype(np.uint8)
    return packed.tobytes()


def unpack_ternary(data: bytes, n: int, k: int, name: str = "tensor") -> np.ndarray:
    """Unpacks canonical 2-bit codes into an int8 [N, K] array.

    Raises TernFormatError at the first invalid code (3) or a padding code
    that is not 1, naming the row and column.
    """
    rb = ternary_row_bytes(k)
    raw = np.frombuffer(data, dtype=np.uint8, count=n * rb).reshape(n, rb)
    codes = np.stack([(raw >> s) & 3 for s in (0, 2, 4, 6)], axis=-1).reshape(n, rb * 4)
    bad = np.argwhere(codes[:, :k] == 3)
    if bad.size:
        r, c = bad[0]
        raise TernFormatError(f"tensor '{name}': invalid ternary code 3 at row {r} column {c}")
    pad = np.argwhere(codes[:, k:] != 1)
    if pad.size:
        r, c = pad[0]
        raise TernFormatError(
            f"tensor '{name}': padding code at row {r} column {k + c} is "
            f"{codes[r, k + c]}, expected 1")
    return (codes[:, :k].astype(np.int8) - 1).astype(np.int8)


# ----------------------------------------------------------------- reader


@dataclass
class TernaryTensor:
    """A TERNARY2 tensor: weights in {-1, 0, +1} and their absmean scales."""

    weights: np.ndarray  # int8 [N, K]
    scales: np.ndarray  # float32 [1] (per tensor) or [N] (per row)

    @property
    def per_row(self) -> bool:
        return self.scales.shape[0] != 1

    def dequantized(self) -> np.ndarray:
        s = self.scales.reshape(-1, 1) if self.per_row else self.scales[0]
        return self.weights.astype(np.float32) * s


Tensor = Union[np.ndarray, TernaryTensor]


@dataclass
class TernFile:
    """A parsed .tern file: the protobuf header and every tensor decoded."""

    header: model_pb2.ModelHeader
    tensors: Dict[str, Tensor] = field(default_factory=dict)
    file_size: int = 0

    def tensor(self, name: str) -> Tensor:
        try:
            return self.tensors[name]
        except KeyError:
            raise TernFormatError(f"model '{self.header.name}' has no tensor '{name}'") from None

    def golden(self):
        """(inputs, outputs): lists of arrays, or None when there is none."""
        if not self.header.HasField("golden"):
            return None
        g = self.header.golden
        return ([self.tensors[n] for n in g.input_tensors],
                [self.tensors[n] for n in g.output_tensors])


def tensor_byte_length(dtype: int, shape: Sequence[int]) -> int:
    if not 1 <= len(shape) <= 4 or any(d <= 0 for d in shape):
        raise TernFormatError(f"shape {list(shape)} must have 1 to 4 positive dimensions")
    count = int(np.prod(shape, dtype=np.uint64))
    if dtype in (model_pb2.F32, model_pb2.I32):
        return count * 4
    if dtype == model_pb2.TERNARY2:
        if len(shape) != 2:
            raise TernFormatError(f"TERNARY2 tensor has shape {list(shape)}, expected [N, K]")
        return shape[0] * ternary_row_bytes(shape[1])
    raise TernFormatError(f"unknown dtype {dtype}")


def parse_tern(data: bytes, origin: str = "model") -> TernFile:
    """Parses and checks the bytes of a .tern file."""
    data = bytes(data)
    size = len(data)

    def fail(msg: str) -> TernFormatError:
        return TernFormatError(f"{origin}: {msg}")

    if size < PREAMBLE_SIZE:
        raise fail(f"file is {size} bytes, shorter than the {PREAMBLE_SIZE}-byte preamble")
    if data[:4] != MAGIC:
        raise fail(f"not a ternd model: bytes 0..3 are {data[:4].hex(' ')}, expected \"TERN\"")
    version, header_len, flags = struct.unpack_from("<III", data, 4)
    if version not in (1, 2, 3):
        raise fail(f"format version {version} is not supported (expected 1 to 3)")
    if flags != 0:
        raise fail(f"flags at offset 12 are 0x{flags:08x}, expected 0")
    if header_len == 0 or header_len > MAX_HEADER_BYTES:
        raise fail(f"header length {header_len} is outside 1..{MAX_HEADER_BYTES}")
    if PREAMBLE_SIZE + header_len > size:
        raise fail(f"header length {header_len} runs past the end of the {size}-byte file")
    header = model_pb2.ModelHeader()
    try:
        header.ParseFromString(data[PREAMBLE_SIZE:PREAMBLE_SIZE + header_len])
    except Exception as e:  # protobuf raises DecodeError or RuntimeWarning types
        raise fail(f"header is not a valid ModelHeader protobuf ({e})") from None
    if header.architecture == "bitnet-lm":
        raise fail("is a language model (architecture 'bitnet-lm'); this "
                   "module reads graph models only: inspect it with "
                   "`ternctl info`")
    if header.architecture != "graph":
        raise fail(f"architecture is '{header.architecture}', expected 'graph'")
    if not valid_name(header.name):
        raise fail(f"model name '{header.name}' is not a valid name")
    for i, op in enumerate(header.graph.ops):
        if op.type >= FIRST_CONV_OP and version < CONV_FORMAT_VERSION:
            raise fail(f"graph: op #{i} ({_op_name(op.type)}) needs format "
                       f"version {CONV_FORMAT_VERSION}, the preamble says {version}")
    data_offset = _align_up(PREAMBLE_SIZE + header_len, TENSOR_ALIGNMENT)
    if any(data[PREAMBLE_SIZE + header_len:min(data_offset, size)]):
        raise fail("padding after the header is not zero")
    data_length = header.data_length
    if data_offset + data_length > size:
        raise fail(f"file is {size} bytes but the data section ends at "
                   f"{data_offset + data_length} (truncated?)")
    if data_offset + data_length != size:
        raise fail(f"file has {size - data_offset - data_length} bytes after the data section")

    tf = TernFile(header=header, file_size=size)
    spans = []
    for i, t in enumerate(header.tensors):
        if not valid_name(t.name):
            raise fail(f"tensor #{i}: name '{t.name}' is not a valid name")
        if t.name in tf.tensors:
            raise fail(f"tensor #{i}: name '{t.name}' is used twice")
        shape = list(t.shape)
        try:
            length = tensor_byte_length(t.dtype, shape)
        except TernFormatError as e:
            raise fail(f"tensor '{t.name}' (#{i}): {e}") from None
        if t.length != length:
            raise fail(f"tensor '{t.name}' (#{i}): length is {t.length} bytes, expected {length}")
        if t.offset % TENSOR_ALIGNMENT:
            raise fail(f"tensor '{t.name}' (#{i}): offset {t.offset} is not a multiple of 64")
        if t.offset + t.length > data_length:
            raise fail(f"tensor '{t.name}' (#{i}): bytes {t.offset}..{t.offset + t.length} "
                       f"lie outside the {data_length}-byte data section")
        spans.append((t.offset, t.offset + t.length, t.name))
        raw = data[data_offset + t.offset:data_offset + t.offset + t.length]
        if t.dtype == model_pb2.F32:
            if len(t.scale):
                raise fail(f"tensor '{t.name}' (#{i}): only TERNARY2 tensors have scales")
            tf.tensors[t.name] = np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
        elif t.dtype == model_pb2.I32:
            if len(t.scale):
                raise fail(f"tensor '{t.name}' (#{i}): only TERNARY2 tensors have scales")
            tf.tensors[t.name] = np.frombuffer(raw, dtype="<i4").reshape(shape).astype(np.int32)
        else:
            n, k = shape
            if len(t.scale) not in (1, n):
                raise fail(f"tensor '{t.name}' (#{i}): has {len(t.scale)} scales, "
                           f"expected 1 or {n}")
            scales = np.asarray(t.scale, dtype=np.float32)
            if not np.all(np.isfinite(scales)) or np.any(scales < 0):
                raise fail(f"tensor '{t.name}' (#{i}): scales must be finite and >= 0")
            tf.tensors[t.name] = TernaryTensor(unpack_ternary(raw, n, k, t.name), scales)
    spans.sort()
    for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
        if a1 > b0:
            raise fail(f"tensors '{an}' and '{bn}' overlap")
    return tf


def read_tern(path) -> TernFile:
    """Reads and checks a .tern file."""
    with open(path, "rb") as f:
        return parse_tern(f.read(), str(path))


# ----------------------------------------------------------------- writer


class TernWriter:
    """Builds a .tern file; tensors are laid out in the order they are added.

    `header` gives everything except the tensor table and data_length, which
    the writer fills in.
    """

    def __init__(self, header: model_pb2.ModelHeader):
        self.header = model_pb2.ModelHeader()
        self.header.CopyFrom(header)
        del self.header.tensors[:]
        if not self.header.architecture:
            self.header.architecture = "graph"
        self._data = bytearray()

    def _add_raw(self, name: str, dtype: int, shape: Iterable[int], raw: bytes,
                 scales: Sequence[float] = ()) -> None:
        if not valid_name(name):
            raise TernFormatError(
                f"tensor name '{name}' is empty, longer than {MAX_NAME_LENGTH} characters "
                "or has characters outside [A-Za-z0-9_.:/-]")
        if any(t.name == name for t in self.header.tensors):
            raise TernFormatError(f"tensor name '{name}' is used twice")
        self._data.extend(b"\0" * (_align_up(len(self._data), TENSOR_ALIGNMENT) - len(self._data)))
        t = self.header.tensors.add()
        t.name = name
        t.dtype = dtype
        t.shape.extend(int(d) for d in shape)
        t.offset = len(self._data)
        t.length = len(raw)
        t.scale.extend(float(s) for s in scales)
        self._data.extend(raw)

    def add_f32(self, name: str, values) -> None:
        a = np.ascontiguousarray(values, dtype="<f4")
        self._add_raw(name, model_pb2.F32, a.shape, a.tobytes())

    def add_i32(self, name: str, values) -> None:
        a = np.ascontiguousarray(values, dtype="<i4")
        self._add_raw(name, model_pb2.I32, a.shape, a.tobytes())

    def add_ternary(self, name: str, weights, scales) -> None:
        w = np.asarray(weights)
        s = np.asarray(scales, dtype=np.float32).reshape(-1)
        if w.ndim != 2 or s.shape[0] not in (1, w.shape[0]):
            raise TernFormatError(
                f"tensor '{name}': ternary weights {w.shape} need 1 or {w.shape[0]} scales, "
                f"got {s.shape[0]}")
        self._add_raw(name, model_pb2.TERNARY2, w.shape, pack_ternary(w), s.tolist())

    def finish(self) -> bytes:
        """Serializes and re-parses the result, so it never returns a file
        the reader refuses."""
        self._data.extend(b"\0" * (_align_up(len(self._data), TENSOR_ALIGNMENT) - len(self._data)))
        self.header.data_length = len(self._data)
        hb = self.header.SerializeToString(deterministic=True)
        if len(hb) > MAX_HEADER_BYTES:
            raise TernFormatError(f"model header is {len(hb)} bytes, over {MAX_HEADER_BYTES}")
        data_offset = _align_up(PREAMBLE_SIZE + len(hb), TENSOR_ALIGNMENT)
        version = FORMAT_VERSION
        if any(op.type >= FIRST_CONV_OP for op in self.header.graph.ops):
            version = CONV_FORMAT_VERSION
        out = bytearray(MAGIC + struct.pack("<III", version, len(hb), 0))
        out.extend(hb)
        out.extend(b"\0" * (data_offset - len(out)))
        out.extend(self._data)
        out = bytes(out)
        parse_tern(out, "model being written")
        return out
