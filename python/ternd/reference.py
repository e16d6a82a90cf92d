"""A NumPy interpreter of .tern graphs that follows the runtime's numerics.

It performs the same float32 operations in the same order as the C++
reference (runtime/ops.cc): sums run over features in index order, divisions
are true float32 divisions. The integer part (int8 codes, int32
accumulators) is therefore identical to the runtime's; float results can
differ only where libm and NumPy round exp/erf differently (a few ulp),
which is why golden pairs carry a tolerance.

Used by `export` to compute golden outputs and by tests and tools.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np

from . import model_pb2
from .tern_format import TernaryTensor, TernFile

f32 = np.float32


@dataclass
class TernaryTrace:
    """What one TERNARY_LINEAR op computed, per row."""

    op_index: int
    output: str
    q: np.ndarray  # int8 [B, K]
    dequant: np.ndarray  # float32 [B]
    acc: np.ndarray  # int32 [B, N]


@dataclass
class RunResult:
    outputs: Dict[str, np.ndarray]
    values: Dict[str, np.ndarray] = field(default_factory=dict)
    ternary: List[TernaryTrace] = field(default_factory=list)


def quantize_rows(x: np.ndarray):
    """(q int8 [B, K], dequant float32 [B]) as runtime QuantizeActivations."""
    x = np.asarray(x, dtype=f32)
    amax = np.max(np.abs(x), axis=1) if x.shape[1] else np.zeros(x.shape[0], f32)
    q = np.zeros(x.shape, dtype=np.int8)
    dequant = np.zeros(x.shape[0], dtype=f32)
    nz = amax > 0
    if np.any(nz):
        inv = (f32(127.0) / amax[nz]).astype(f32)
        v = np.rint((x[nz] * inv[:, None]).astype(f32))
        q[nz] = np.clip(v, -128, 127).astype(np.int8)
        dequant[nz] = (amax[nz] / f32(127.0)).astype(f32)
    return q, dequant


def ternary_linear(x: np.ndarray, w: TernaryTensor, bias):
    q, dequant = quantize_rows(x)
    acc = q.astype(np.int64) @ w.weights.astype(np.int64).T
    acc = acc.astype(np.int32)
    scale = w.scales if w.per_row else np.repeat(w.scales, w.weights.shape[0])
    s = (scale[None, :] * dequant[:, None]).astype(f32)
    y = (acc.astype(f32) * s).astype(f32)
    if bias is not None:
        y = (y + bias[None, :]).astype(f32)
    return y, q, dequant, acc


def _seq_sum(columns):
    """Sum of float32 columns in index order (the C++ loop order)."""
    acc = None
    for c in columns:
        acc = c if acc is None else (acc + c).astype(f32)
    return acc


def linear_f32(x, w, bias):
    b, k = x.shape
    n = w.shape[0]
    acc = np.zeros((b, n), dtype=f32)
    for c in range(k):
        acc = (acc + (w[None, :, c] * x[:, c, None]).astype(f32)).astype(f32)
    return (acc + bias[None, :]).astype(f32) if bias is not None else acc


def rms_norm(x, gain, eps):
    f = x.shape[1]
    ss = _seq_sum((x[:, i] * x[:, i]).astype(f32) for i in range(f))
    inv = (f32(1.0) / np.sqrt((ss / f32(f)).astype(f32) + f32(eps)).astype(f32)).astype(f32)
    return ((x * inv[:, None]).astype(f32) * gain[None, :]).astype(f32)


def layer_norm(x, gain, bias, eps):
    f = x.shape[1]
    mean = (_seq_sum(x[:, i] for i in range(f)) / f32(f)).astype(f32)
    d = (x - mean[:, None]).astype(f32)
    var = (_seq_sum((d[:, i] * d[:, i]).astype(f32) for i in range(f)) / f32(f)).astype(f32)
    inv = (f32(1.0) / np.sqrt((var + f32(eps)).astype(f32)).astype(f32)).astype(f32)
    y = ((d * inv[:, None]).astype(f32) * gain[None, :]).astype(f32)
    return (y + bias[None, :]).astype(f32) if bias is not None else y


def silu(x):
    with np.errstate(over="ignore"):
        return (x / (f32(1.0) + np.exp(-x).astype(f32))).astype(f32)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    e = _erf((x * f32(0.70710678118654752)).astype(f32).astype(np.float64)).astype(f32)
    return ((f32(0.5) * x).astype(f32) * (f32(1.0) + e).astype(f32)).astype(f32)


def softmax(x):
    mx = np.max(x, axis=1)
    e = np.exp((x - mx[:, None]).astype(f32)).astype(f32)
    s = _seq_sum(e[:, i] for i in range(x.shape[1]))
    inv = (f32(1.0) / s).astype(f32)
    return (e * inv[:, None]).astype(f32)


def run(model: TernFile, inputs: Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]],
        trace: bool = False) -> RunResult:
    """Runs `model` on a batch. `inputs`: one array (single-input models), a
    list in input order, or a dict by input name; each [batch, ...] and
    flattened to [batch, features]. With trace=True every value and every
    ternary op's codes and accumulators are kept."""
    g = model.header.graph
    if isinstance(inputs, Mapping):
        arrays = [inputs[v.name] for v in g.inputs]
    elif isinstance(inputs, np.ndarray) or hasattr(inputs, "shape"):
        arrays = [inputs]
    else:
        arrays = list(inputs)
    if len(arrays) != len(g.inputs):
        raise ValueError(f"model '{model.header.name}' has {len(g.inputs)} inputs, got {len(arrays)}")
    values: Dict[str, np.ndarray] = {}
    for v, a in zip(g.inputs, arrays):
        a = np.asarray(a, dtype=f32)
        values[v.name] = a.reshape(a.shape[0], -1)
    result = RunResult(outputs={})

    def tensor(name):
        return model.tensor(name) if name else None

    for i, op in enumerate(g.ops):
        x = values[op.inputs[0]]
        t = op.type
        if t == model_pb2.TERNARY_LINEAR:
            y, q, dq, acc = ternary_linear(x, tensor(op.weight), tensor(op.bias))
            if trace:
                result.ternary.append(TernaryTrace(i, op.output, q, dq, acc))
        elif t == model_pb2.LINEAR:
            y = linear_f32(x, tensor(op.weight), tensor(op.bias))
        elif t == model_pb2.RMS_NORM:
            y = rms_norm(x, tensor(op.weight), op.eps)
        elif t == model_pb2.LAYER_NORM:
            y = layer_norm(x, tensor(op.weight), tensor(op.bias), op.eps)
        elif t == model_pb2.RELU:
            y = np.where(x > 0, x, f32(0)).astype(f32)
        elif t == model_pb2.RELU2:
            r = np.where(x > 0, x, f32(0)).astype(f32)
            y = (r * r).astype(f32)
        elif t == model_pb2.SILU:
            y = silu(x)
        elif t == model_pb2.GELU:
            y = gelu(x)
        elif t == model_pb2.ADD:
            y = (x + values[op.inputs[1]]).astype(f32)
        elif t == model_pb2.SOFTMAX:
            y = softmax(x)
        elif t == model_pb2.ARGMAX:
            y = np.argmax(x, axis=1).astype(np.int32)[:, None]
        else:
            raise ValueError(f"op #{i} has unknown type {t}")
        values[op.output] = y
    result.outputs = {v.name: values[v.name] for v in g.outputs}
    if trace:
        result.values = values
    return result
