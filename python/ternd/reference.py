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
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import model_pb2
from .tern_format import TernaryTensor, TernFile

f32 = np.float32

# runtime kernels' kQuantizeMinAmax: a row whose absmax is below it quantizes
# to zeros with scale 0 (127 / amax would overflow float32 near 3.7e-37).
MIN_AMAX = 2.0**-100


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
    ternary: List[TernaryTrace] = field(default_factory=list)  # TERNARY_LINEAR ops
    # CONV2D / CONV1D ops: q [B, H*W*C] (one quantization per sample),
    # dequant [B], acc [B, positions * C_out].
    conv: List[TernaryTrace] = field(default_factory=list)


def quantize_rows(x: np.ndarray):
    """(q int8 [B, K], dequant float32 [B]) as runtime QuantizeActivations."""
    x = np.asarray(x, dtype=f32)
    amax = np.max(np.abs(x), axis=1) if x.shape[1] else np.zeros(x.shape[0], f32)
    q = np.zeros(x.shape, dtype=np.int8)
    dequant = np.zeros(x.shape[0], dtype=f32)
    nz = amax >= MIN_AMAX
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


# ------------------------------------------------ the convolutional family


@dataclass
class Window:
    """A convolution's or pool's windows, as runtime/format.h WindowGeometry:
    1-D ops have in_h = out_h = kh = sh = dh = 1 and ph = 0."""

    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int


WINDOW_OPS = (model_pb2.CONV2D, model_pb2.CONV1D, model_pb2.DEPTHWISE_CONV2D,
              model_pb2.MAX_POOL, model_pb2.AVG_POOL)
FLAT_OPS = (model_pb2.TERNARY_LINEAR, model_pb2.LINEAR, model_pb2.ARGMAX)


def window(op, in_dims) -> Window:
    """The window geometry of a (valid) op reading a value of `in_dims`."""
    rank = len(in_dims) - 1

    def attr(v, default):
        return list(v) if len(v) else [default] * rank

    k, s, p, d = (attr(op.kernel, 1), attr(op.stride, 1), attr(op.padding, 0),
                  attr(op.dilation, 1))
    outs = [(in_dims[j] + 2 * p[j] - d[j] * (k[j] - 1) - 1) // s[j] + 1 for j in range(rank)]
    if rank == 1:
        return Window(1, in_dims[0], in_dims[1], 1, outs[0], 1, k[0], 1, s[0], 0, p[0], 1, d[0])
    return Window(in_dims[0], in_dims[1], in_dims[2], outs[0], outs[1], k[0], k[1], s[0], s[1],
                  p[0], p[1], d[0], d[1])


def value_dims(model: TernFile) -> Dict[str, List[int]]:
    """Every value's per-sample shape (channels last for spatial values), as
    the C++ reader derives it."""
    g = model.header.graph
    dims: Dict[str, List[int]] = {v.name: list(v.shape) for v in g.inputs}
    for op in g.ops:
        d = dims[op.inputs[0]]
        t = op.type
        if t in FLAT_OPS:
            n = 1 if t == model_pb2.ARGMAX else model.tensor(op.weight).weights.shape[0] \
                if t == model_pb2.TERNARY_LINEAR else model.tensor(op.weight).shape[0]
            out = [int(n)]
        elif t in WINDOW_OPS:
            w = window(op, d)
            c = d[-1]
            if t in (model_pb2.CONV2D, model_pb2.CONV1D):
                c = model.tensor(op.weight).weights.shape[0]
            out = [w.out_h, w.out_w, c] if len(d) == 3 else [w.out_w, c]
        elif t == model_pb2.GLOBAL_AVG_POOL:
            out = [d[-1]]
        elif t == model_pb2.RESHAPE:
            out = list(op.shape)
        elif t == model_pb2.CONCAT:
            out = d[:-1] + [sum(dims[i][-1] for i in op.inputs)]
        elif t == model_pb2.AUDIO_FEATURES:
            a = op.audio
            out = [1 + (int(np.prod(d)) - a.frame_length) // a.frame_step, a.mel_bins]
        else:
            out = list(d)
        dims[op.output] = [int(v) for v in out]
    return dims


def _padded(x: np.ndarray, w: Window, fill) -> np.ndarray:
    """x [B, H, W, C] with ph/pw rows/columns of `fill` around it."""
    b, h, wd, c = x.shape
    out = np.full((b, h + 2 * w.ph, wd + 2 * w.pw, c), fill, dtype=x.dtype)
    out[:, w.ph:w.ph + h, w.pw:w.pw + wd, :] = x
    return out


def _taps(xp: np.ndarray, w: Window):
    """(i, j, tap) for every window tap: tap[b, oh, ow, c] is the input the
    tap reads for output (oh, ow), padding included."""
    for i in range(w.kh):
        for j in range(w.kw):
            r0, c0 = i * w.dh, j * w.dw
            yield i, j, xp[:, r0:r0 + (w.out_h - 1) * w.sh + 1:w.sh,
                           c0:c0 + (w.out_w - 1) * w.sw + 1:w.sw, :]


def _spatial(x: np.ndarray, w: Window) -> np.ndarray:
    return x.reshape(x.shape[0], w.in_h, w.in_w, w.in_c)


def ternary_conv(x: np.ndarray, w: Window, wt: TernaryTensor, bias):
    """CONV2D/CONV1D: one quantization per sample, im2col, exact int sums."""
    q, dequant = quantize_rows(x)
    qp = _padded(_spatial(q, w), w, 0)
    cols = np.concatenate([t for _, _, t in _taps(qp, w)], axis=-1)  # (i, j, c) order
    b = x.shape[0]
    cols = cols.reshape(b, w.out_h * w.out_w, -1).astype(np.int64)
    acc = (cols @ wt.weights.astype(np.int64).T).astype(np.int32)  # [B, P, N]
    n = wt.weights.shape[0]
    scale = wt.scales if wt.per_row else np.repeat(wt.scales, n)
    s = (scale[None, :] * dequant[:, None]).astype(f32)  # [B, N]
    y = (acc.astype(f32) * s[:, None, :]).astype(f32)
    if bias is not None:
        y = (y + bias[None, None, :]).astype(f32)
    return y.reshape(b, -1), q, dequant, acc.reshape(b, -1)


def depthwise_conv(x: np.ndarray, w: Window, weight: np.ndarray, bias):
    xp = _padded(_spatial(x, w), w, f32(0))
    inside = _padded(np.ones((1, w.in_h, w.in_w, 1), dtype=bool), w, False)
    y = np.zeros((x.shape[0], w.out_h, w.out_w, w.in_c), dtype=f32)
    for (i, j, t), (_, _, m) in zip(_taps(xp, w), _taps(inside, w)):
        y = np.where(m, (y + (weight[i, j][None, None, None, :] * t).astype(f32)).astype(f32), y)
    if bias is not None:
        y = (y + bias).astype(f32)
    return y.reshape(x.shape[0], -1)


def pool(x: np.ndarray, w: Window, kind: int):
    if kind == model_pb2.MAX_POOL:
        xp = _padded(_spatial(x, w), w, f32(-np.inf))
        y = None
        for _, _, t in _taps(xp, w):
            y = t if y is None else np.fmax(y, t)
        return y.astype(f32).reshape(x.shape[0], -1)
    xp = _padded(_spatial(x, w), w, f32(0))
    y = np.zeros((x.shape[0], w.out_h, w.out_w, w.in_c), dtype=f32)
    for _, _, t in _taps(xp, w):
        y = (y + t).astype(f32)
    return (y / f32(w.kh * w.kw)).astype(f32).reshape(x.shape[0], -1)


def global_avg_pool(x: np.ndarray, channels: int):
    xs = x.reshape(x.shape[0], -1, channels)
    s = _seq_sum(xs[:, p, :] for p in range(xs.shape[1]))
    return (s / f32(xs.shape[1])).astype(f32)


def concat(parts: Sequence[np.ndarray], channels: Sequence[int]):
    b = parts[0].shape[0]
    positions = parts[0].shape[1] // channels[0]
    return np.concatenate([p.reshape(b, positions, c) for p, c in zip(parts, channels)],
                          axis=-1).reshape(b, -1)


def run(model: TernFile, inputs: Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]],
        trace: bool = False, given: Optional[Mapping[str, np.ndarray]] = None) -> RunResult:
    """Runs `model` on a batch. `inputs`: one array (single-input models), a
    list in input order, or a dict by input name; each [batch, ...] and
    flattened to [batch, features]. With trace=True every value and every
    ternary op's codes and accumulators are kept. `given` maps op outputs to
    values to use instead of computing them (e.g. the runtime's audio
    features, so that the rest runs from exactly the runtime's input)."""
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

    dims = value_dims(model)

    for i, op in enumerate(g.ops):
        x = values[op.inputs[0]]
        t = op.type
        if given is not None and op.output in given:
            values[op.output] = np.asarray(given[op.output], dtype=f32).reshape(x.shape[0], -1)
            continue
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
        elif t in (model_pb2.CONV2D, model_pb2.CONV1D):
            w = window(op, dims[op.inputs[0]])
            y, q, dq, acc = ternary_conv(x, w, tensor(op.weight), tensor(op.bias))
            if trace:
                result.conv.append(TernaryTrace(i, op.output, q, dq, acc))
        elif t == model_pb2.DEPTHWISE_CONV2D:
            y = depthwise_conv(x, window(op, dims[op.inputs[0]]), tensor(op.weight),
                               tensor(op.bias))
        elif t in (model_pb2.MAX_POOL, model_pb2.AVG_POOL):
            y = pool(x, window(op, dims[op.inputs[0]]), t)
        elif t == model_pb2.GLOBAL_AVG_POOL:
            y = global_avg_pool(x, dims[op.inputs[0]][-1])
        elif t == model_pb2.RESHAPE:
            y = x.copy()
        elif t == model_pb2.CONCAT:
            y = concat([values[n] for n in op.inputs], [dims[n][-1] for n in op.inputs])
        elif t == model_pb2.AUDIO_FEATURES:
            # float64 (the runtime's float32 FFT agrees within the bound of
            # docs/model-format.md "Audio features").
            from . import audio
            y = audio.log_mel(x, audio.AudioParams.from_proto(op.audio), tensor(op.weight),
                              tensor(op.bias)).astype(f32).reshape(x.shape[0], -1)
        else:
            raise ValueError(f"op #{i} has unknown type {t}")
        values[op.output] = y
    result.outputs = {v.name: values[v.name] for v in g.outputs}
    if trace:
        result.values = values
    return result
