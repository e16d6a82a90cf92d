"""Export of PyTorch models to .tern files.

What exports: a `torch.nn.Sequential` (nested freely) of the modules below,
with `ternd.nn.Residual` for skip connections. Each becomes one runtime op:

    ternd.nn.BitLinear      TERNARY_LINEAR (2-bit weights + absmean scales)
    torch.nn.Linear         LINEAR (float32 weights)
    ternd.nn.RMSNorm        RMS_NORM
    torch.nn.LayerNorm      LAYER_NORM (over the last dimension only)
    torch.nn.ReLU           RELU
    ternd.nn.ReLU2          RELU2
    torch.nn.SiLU           SILU
    torch.nn.GELU           GELU (approximate='none' only)
    torch.nn.Softmax        SOFTMAX (over the last dimension only)
    ternd.nn.Residual       the body's ops, then ADD(input, body output)
    Identity, Dropout       nothing
    ternd.nn.BitConv2d      CONV2D (ternary, weights reordered to (kh, kw, c))
    ternd.nn.BitConv1d      CONV1D
    torch.nn.Conv2d         DEPTHWISE_CONV2D (groups = channels only; float)
    MaxPool1d/2d, AvgPool1d/2d   MAX_POOL, AVG_POOL
    AdaptiveAvgPool1d/2d(1) GLOBAL_AVG_POOL
    BatchNorm1d/2d          folded into the BitLinear/BitConv right before it
    ternd.nn.Concat         the branches' ops, then CONCAT (channels)
    ternd.nn.AudioFeatures  AUDIO_FEATURES (PCM samples -> log-mel frames)
    Flatten                 RESHAPE of a spatial value (nothing for a flat one)
    Unflatten(1, [1, ...])  RESHAPE to one channel

Spatial values are channels last in the runtime ([H, W, C], [L, C]): a
convolutional model exported from a [B, C, H, W] example takes its input
channels last (`channels_last(x)`), and a linear layer after nn.Flatten gets
its weight columns reordered to match.

Anything else raises `ExportError` naming the module's path and type. The
golden pair is the example input and the output the runtime's numerics give
for it (ternd.reference); export checks that the PyTorch model agrees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import __version__, model_pb2, reference
from .nn import (AudioFeatures, BitConv1d, BitConv2d, BitLinear, Concat, ReLU2, Residual,
                 RMSNorm)
from .tern_format import MAX_BATCH, TernWriter, parse_tern, valid_name


class ExportError(ValueError):
    """The model cannot be written as a .tern file; the message says why."""


_NOOP = (nn.Identity, nn.Dropout)

SUPPORTED = ("BitLinear, Linear, RMSNorm, LayerNorm, ReLU, ReLU2, SiLU, GELU, "
             "Softmax, Residual, Sequential, Identity, Dropout, Flatten, "
             "BitConv2d, BitConv1d, depthwise Conv2d, MaxPool1d/2d, AvgPool1d/2d, "
             "AdaptiveAvgPool1d/2d(1), BatchNorm1d/2d after a Bit layer, Concat, "
             "Unflatten to one channel")

_CONV_MODULES = (BitConv2d, BitConv1d, nn.Conv2d, nn.Conv1d, nn.MaxPool1d, nn.MaxPool2d,
                 nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


@dataclass
class _Val:
    """What the exporter knows of a value: its PyTorch per-sample shape and
    how the runtime holds it.

    spatial: a [C, H, W] / [C, L] tensor in PyTorch, [H, W, C] / [L, C]
      (channels last) in the runtime.
    flat (spatial False): a row of features; `perm` (or None for the same
      order) maps runtime feature i to PyTorch feature perm[i] (a flattened
      channels-last tensor).
    """

    tshape: Tuple[int, ...]
    spatial: bool = False
    perm: Optional[np.ndarray] = None

    @property
    def features(self) -> int:
        return int(np.prod(self.tshape))

    @property
    def dims(self) -> List[int]:
        if self.spatial:
            return list(self.tshape[1:]) + [self.tshape[0]]
        return [self.features]


@dataclass
class _Graph:
    ops: List[model_pb2.Op] = field(default_factory=list)
    tensors: List[Tuple[str, str, object]] = field(default_factory=list)  # (kind, name, data)
    vals: Dict[str, _Val] = field(default_factory=dict)

    @property
    def features(self) -> Dict[str, int]:
        return {k: v.features for k, v in self.vals.items()}

    def add_op(self, type_: int, inputs, val: "_Val | int", weight: str = "", bias: str = "",
               eps: float = 0.0, **attrs) -> str:
        name = f"v{len(self.ops)}"
        self.vals[name] = val if isinstance(val, _Val) else _Val((int(val),))
        op = model_pb2.Op(type=type_, inputs=list(inputs), output=name, weight=weight,
                          bias=bias, eps=eps, **attrs)
        self.ops.append(op)
        return name


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().astype(np.float32)


def _tensor_name(path: str, what: str) -> str:
    name = f"{path}.{what}" if path else what
    if not valid_name(name):
        raise ExportError(f"module path '{path}' does not give a valid tensor name "
                          "(at most 63 characters of [A-Za-z0-9_.:/-])")
    return name


def _pair(v, rank: int) -> List[int]:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,) * rank
    return [int(a) for a in v]


def _fold_batch_norm(wq: torch.Tensor, scale: torch.Tensor, bias, bn: nn.Module, where: str):
    """(codes, per-channel scales, bias) of a ternary layer followed by `bn`
    (eval statistics): y = bn(acc * s * d + b) = acc * (s * |g|) * d + b'
    with g = gamma / sqrt(var + eps), the codes of channels with g < 0
    negated, b' = g * (b - mean) + beta."""
    if not bn.track_running_stats or bn.running_mean is None:
        raise ExportError(f"{where}: batch norm without running statistics cannot be folded")
    n = wq.shape[0]
    mean = bn.running_mean.detach().to(torch.float64)
    var = bn.running_var.detach().to(torch.float64)
    gamma = bn.weight.detach().to(torch.float64) if bn.affine else torch.ones(n, dtype=torch.float64)
    beta = bn.bias.detach().to(torch.float64) if bn.affine else torch.zeros(n, dtype=torch.float64)
    if mean.shape[0] != n:
        raise ExportError(f"{where}: batch norm over {mean.shape[0]} channels follows a layer "
                          f"with {n}")
    g = gamma / torch.sqrt(var + bn.eps)
    sign = torch.where(g < 0, -1.0, 1.0)
    codes = wq * sign.reshape(-1, *(1,) * (wq.dim() - 1)).to(wq.dtype)
    s = scale.reshape(-1).to(torch.float64).expand(n) * g.abs()
    b = torch.zeros(n, dtype=torch.float64) if bias is None else bias.detach().to(torch.float64)
    new_bias = g * (b - mean) + beta
    return codes, s.to(torch.float32), new_bias.to(torch.float32)


def _emit_ternary(g: _Graph, module: nn.Module, path: str, x: str, bn: Optional[nn.Module]) -> str:
    where = f"'{path or '<model>'}' ({type(module).__name__})"
    v = g.vals[x]
    wq, scale = module.quantized_weight()
    bias = module.bias
    if bn is not None:
        wq, scale, bias = _fold_batch_norm(wq, scale, bias, bn, where)
    w = _tensor_name(path, "weight")
    b = ""
    if bias is not None:
        b = _tensor_name(path, "bias")
        g.tensors.append(("f32", b, _f32(bias)))
    scales = _f32(scale).reshape(-1)
    if isinstance(module, BitLinear):
        if v.spatial:
            raise ExportError(f"{where} reads a [C, ...] tensor: flatten it first (nn.Flatten)")
        if v.features != module.in_features:
            raise ExportError(f"{where} expects {module.in_features} input features, but "
                              f"receives {v.features}")
        codes = wq if v.perm is None else wq[:, torch.as_tensor(v.perm)]
        g.tensors.append(("ternary", w, (codes.to(torch.int8).numpy(), scales)))
        return g.add_op(model_pb2.TERNARY_LINEAR, [x], module.out_features, w, b)
    one_d = isinstance(module, BitConv1d)
    rank = 1 if one_d else 2
    if not v.spatial or len(v.tshape) != rank + 1:
        raise ExportError(f"{where} expects a [C, {'L' if one_d else 'H, W'}] input per sample, "
                          f"but receives {list(v.tshape)}"
                          + ("" if v.spatial else " (flat: use nn.Unflatten first)"))
    if v.tshape[0] != module.in_channels:
        raise ExportError(f"{where} expects {module.in_channels} input channels, but receives "
                          f"{v.tshape[0]}")
    # [C_out, C, *k] -> [C_out, *k, C]: each row is one im2col window, (i, j, c).
    perm = (0, 2, 1) if one_d else (0, 2, 3, 1)
    codes = wq.permute(*perm).reshape(module.out_channels, -1)
    g.tensors.append(("ternary", w, (codes.to(torch.int8).numpy(), scales)))
    k, st = _pair(module.kernel_size, rank), _pair(module.stride, rank)
    p, d = _pair(module.padding, rank), _pair(module.dilation, rank)
    outs = [(v.tshape[1 + j] + 2 * p[j] - d[j] * (k[j] - 1) - 1) // st[j] + 1 for j in range(rank)]
    if min(outs) < 1:
        raise ExportError(f"{where}: the window does not fit the input {list(v.tshape)}")
    out = _Val((module.out_channels, *outs), spatial=True)
    return g.add_op(model_pb2.CONV1D if one_d else model_pb2.CONV2D, [x], out, w, b,
                    kernel=k, stride=st, padding=p, dilation=d)


def _emit_window(g: _Graph, module: nn.Module, where: str, x: str) -> str:
    """Depthwise convolution and pooling."""
    v = g.vals[x]
    is1d = isinstance(module, (nn.Conv1d, nn.MaxPool1d, nn.AvgPool1d))
    rank = 1 if is1d else 2
    if not v.spatial or len(v.tshape) != rank + 1:
        raise ExportError(f"{where} expects a [C, {'L' if is1d else 'H, W'}] input per sample, "
                          f"but receives {list(v.tshape)}")
    c = v.tshape[0]
    k = _pair(module.kernel_size, rank)
    st = _pair(module.stride if module.stride is not None else module.kernel_size, rank)
    p = _pair(module.padding, rank)
    attrs = dict(kernel=k, stride=st, padding=p)
    weight = bias = ""
    if isinstance(module, nn.Conv2d):
        if not (module.groups == c == module.in_channels == module.out_channels):
            raise ExportError(f"{where}: a float Conv2d must be depthwise (groups = in = out "
                              "channels); use ternd.BitConv2d for a full convolution")
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise ExportError(f"{where}: padding must be numbers with padding_mode='zeros'")
        d = _pair(module.dilation, rank)
        attrs["dilation"] = d
        path = where.split("'")[1]
        weight = _tensor_name(path, "weight")
        g.tensors.append(("f32", weight, _f32(module.weight[:, 0].permute(1, 2, 0))))
        if module.bias is not None:
            bias = _tensor_name(path, "bias")
            g.tensors.append(("f32", bias, _f32(module.bias)))
        op_type = model_pb2.DEPTHWISE_CONV2D
    else:
        d = [1] * rank
        if getattr(module, "ceil_mode", False):
            raise ExportError(f"{where}: ceil_mode=True is not supported (the runtime rounds "
                              "the output size down)")
        if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
            if module.return_indices or _pair(module.dilation, rank) != d:
                raise ExportError(f"{where}: max pooling with dilation or indices is not "
                                  "supported")
            op_type = model_pb2.MAX_POOL
        else:
            if not module.count_include_pad or getattr(module, "divisor_override", None):
                raise ExportError(f"{where}: average pooling divides by the window size "
                                  "(count_include_pad=True, no divisor_override)")
            op_type = model_pb2.AVG_POOL
        if any(2 * p[j] > k[j] for j in range(rank)):
            raise ExportError(f"{where}: padding {p} is more than half the kernel {k}")
    outs = [(v.tshape[1 + j] + 2 * p[j] - d[j] * (k[j] - 1) - 1) // st[j] + 1 for j in range(rank)]
    if min(outs) < 1:
        raise ExportError(f"{where}: the window does not fit the input {list(v.tshape)}")
    return g.add_op(op_type, [x], _Val((c, *outs), spatial=True), weight, bias, **attrs)


def _flat_perm(tshape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """For a [C, *S] tensor held channels last: perm[i] = the PyTorch (C-major)
    index of runtime feature i; None when the orders coincide."""
    c, rest = tshape[0], int(np.prod(tshape[1:]))
    if c == 1 or rest == 1:
        return None
    return np.arange(c * rest).reshape(c, rest).T.reshape(-1)


def _emit(g: _Graph, module: nn.Module, path: str, x: str) -> str:
    """Appends the ops of `module` reading value `x`; returns its output."""
    where = f"'{path or '<model>'}' ({type(module).__name__})"
    v = g.vals[x]
    k = v.features

    def need_flat(n: Optional[int] = None, order: bool = True):
        if v.spatial:
            raise ExportError(f"{where} reads a [C, ...] tensor per sample; the runtime's op "
                              "works on flat rows: flatten it first (nn.Flatten)")
        if order and v.perm is not None:
            raise ExportError(f"{where} reads a flattened convolution output, whose features "
                              "the runtime holds channels last; put a linear layer first")
        if n is not None and n != k:
            raise ExportError(f"{where} expects {n} input features, but receives {k}")

    if isinstance(module, nn.Sequential):
        children = list(module.named_children())
        i = 0
        while i < len(children):
            name, child = children[i]
            cpath = f"{path}.{name}" if path else name
            nxt = children[i + 1][1] if i + 1 < len(children) else None
            if isinstance(child, (BitLinear, BitConv2d, BitConv1d)):
                bn = nxt if isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)) else None
                x = _emit_ternary(g, child, cpath, x, bn)
                i += 2 if bn is not None else 1
                continue
            x = _emit(g, child, cpath, x)
            i += 1
        return x
    if isinstance(module, (BitLinear, BitConv2d, BitConv1d)):
        return _emit_ternary(g, module, path, x, None)
    if isinstance(module, AudioFeatures):
        need_flat()
        p = module.params
        if k < p.frame_length:
            raise ExportError(f"{where}: {k} samples are fewer than one frame ({p.frame_length})")
        frames = 1 + (k - p.frame_length) // p.frame_step
        weight = bias = ""
        if module.gain is not None:
            weight = _tensor_name(path, "gain")
            g.tensors.append(("f32", weight, _f32(module.gain)))
        if module.bias is not None:
            bias = _tensor_name(path, "bias")
            g.tensors.append(("f32", bias, _f32(module.bias)))
        audio = model_pb2.AudioFeatures(
            sample_rate=p.sample_rate, frame_length=p.frame_length, frame_step=p.frame_step,
            fft_length=p.fft_length, mel_bins=p.mel_bins, lower_hz=p.lower_hz,
            upper_hz=p.upper_hz, log_offset=p.log_offset)
        return g.add_op(model_pb2.AUDIO_FEATURES, [x], _Val((p.mel_bins, frames), spatial=True),
                        weight, bias, audio=audio)
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        raise ExportError(f"{where}: batch norm is folded into the BitLinear/BitConv right "
                          "before it in the same nn.Sequential; there is none here")
    if isinstance(module, Residual):
        body = _emit(g, module.body, f"{path}.body" if path else "body", x)
        b = g.vals[body]
        if b.tshape != v.tshape or b.spatial != v.spatial or (
                (b.perm is None) != (v.perm is None)) or (
                b.perm is not None and not np.array_equal(b.perm, v.perm)):
            raise ExportError(f"{where}: the body maps {list(v.tshape)} to {list(b.tshape)}; "
                              "a residual needs the same shape")
        return g.add_op(model_pb2.ADD, [x, body], v)
    if isinstance(module, Concat):
        outs = [_emit(g, br, f"{path}.branches.{i}" if path else f"branches.{i}", x)
                for i, br in enumerate(module.branches)]
        vs = [g.vals[o] for o in outs]
        if any(o.spatial != vs[0].spatial or o.tshape[1:] != vs[0].tshape[1:]
               or o.perm is not None for o in vs):
            raise ExportError(f"{where}: the branches give {[list(o.tshape) for o in vs]}; "
                              "they must agree in every dimension but the channels")
        shape = (sum(o.tshape[0] for o in vs), *vs[0].tshape[1:])
        return g.add_op(model_pb2.CONCAT, outs, _Val(shape, spatial=vs[0].spatial))
    if isinstance(module, (nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)) \
            and not isinstance(module, (BitConv2d,)):
        return _emit_window(g, module, where, x)
    if isinstance(module, nn.Conv1d):
        raise ExportError(f"{where}: use ternd.BitConv1d (the runtime's 1-D convolution is "
                          "ternary)")
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        rank = 1 if isinstance(module, nn.AdaptiveAvgPool1d) else 2
        if _pair(module.output_size, rank) != [1] * rank:
            raise ExportError(f"{where}: only global pooling (output_size 1) is supported")
        if not v.spatial or len(v.tshape) != rank + 1:
            raise ExportError(f"{where} expects a [C, {'L' if rank == 1 else 'H, W'}] input "
                              f"per sample, but receives {list(v.tshape)}")
        c = v.tshape[0]
        return g.add_op(model_pb2.GLOBAL_AVG_POOL, [x], _Val((c,) + (1,) * rank))
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ExportError(f"{where}: only nn.Flatten() (start_dim=1, end_dim=-1) is "
                              "supported")
        flat = _Val((k,), perm=_flat_perm(v.tshape) if v.spatial else v.perm)
        if v.spatial:
            # The data stays where it is; the op after it reads the same
            # buffer. A RESHAPE keeps the runtime's shapes honest.
            return g.add_op(model_pb2.RESHAPE, [x], flat, shape=[k])
        g.vals[x] = flat
        return x
    if isinstance(module, nn.Unflatten):
        if module.dim not in (1, -len(v.tshape)) or v.spatial or v.perm is not None:
            raise ExportError(f"{where}: only unflattening a flat row (dim=1) is supported")
        shape = tuple(int(d) for d in module.unflattened_size)
        if int(np.prod(shape)) != k or len(shape) not in (2, 3):
            raise ExportError(f"{where}: unflattens {k} features to {list(shape)}; expected "
                              "[C, L] or [C, H, W] of the same size")
        if shape[0] != 1:
            raise ExportError(f"{where}: unflattens to {shape[0]} channels; the runtime holds "
                              "spatial values channels last, so only one channel keeps "
                              "PyTorch's order (give the model a [C, H, W] input instead)")
        out = _Val(shape, spatial=True)
        return g.add_op(model_pb2.RESHAPE, [x], out, shape=out.dims)
    if isinstance(module, RMSNorm):
        need_flat(module.features)
        w = _tensor_name(path, "weight")
        g.tensors.append(("f32", w, _f32(module.weight)))
        return g.add_op(model_pb2.RMS_NORM, [x], k, w, eps=module.eps)
    if type(module) is nn.Linear:
        need_flat(module.in_features, order=False)
        w = _tensor_name(path, "weight")
        weight = _f32(module.weight)
        if v.perm is not None:
            weight = weight[:, v.perm]
        g.tensors.append(("f32", w, weight))
        b = ""
        if module.bias is not None:
            b = _tensor_name(path, "bias")
            g.tensors.append(("f32", b, _f32(module.bias)))
        return g.add_op(model_pb2.LINEAR, [x], module.out_features, w, b)
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ExportError(f"{where} normalizes over {tuple(module.normalized_shape)}; "
                              "the runtime normalizes over the last dimension only")
        need_flat(module.normalized_shape[0])
        if module.eps <= 0:
            raise ExportError(f"{where} has eps {module.eps}; the runtime needs eps > 0")
        w = _tensor_name(path, "weight")
        b = ""
        if module.elementwise_affine:
            g.tensors.append(("f32", w, _f32(module.weight)))
            b = _tensor_name(path, "bias")
            g.tensors.append(("f32", b, _f32(module.bias)))
        else:
            g.tensors.append(("f32", w, np.ones(k, dtype=np.float32)))
        return g.add_op(model_pb2.LAYER_NORM, [x], k, w, b, eps=module.eps)
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            raise ExportError(f"{where} uses approximate='{module.approximate}'; the runtime "
                              "has the exact (erf) GELU only: use nn.GELU()")
        return g.add_op(model_pb2.GELU, [x], v)
    if isinstance(module, nn.Softmax):
        if module.dim not in (-1, 1, None):
            raise ExportError(f"{where} runs over dim {module.dim}; the runtime's softmax runs "
                              "over the features of each row (dim=-1)")
        need_flat()
        return g.add_op(model_pb2.SOFTMAX, [x], k)
    simple = {nn.ReLU: model_pb2.RELU, ReLU2: model_pb2.RELU2, nn.SiLU: model_pb2.SILU}
    for cls, op_type in simple.items():
        if type(module) is cls:
            return g.add_op(op_type, [x], v)
    if isinstance(module, _NOOP):
        return x
    raise ExportError(f"cannot export module {where}: the runtime has no op for it "
                      f"(supported: {SUPPORTED})")


def build_graph(model: nn.Module, input_val: "_Val | int") -> _Graph:
    """The ops and tensors of `model` reading an input described by
    `input_val` (or a flat row of that many features)."""
    g = _Graph()
    g.vals["input"] = input_val if isinstance(input_val, _Val) else _Val((int(input_val),))
    out = _emit(g, model, "", "input")
    if out == "input" or not g.ops:
        raise ExportError("the model has no op the runtime would run")
    o = g.vals[out]
    if o.spatial or o.perm is not None:
        raise ExportError(f"the model's output is a {list(o.tshape)} tensor per sample; end "
                          "with a flat layer (global pooling, or nn.Flatten and a linear "
                          "layer) so that outputs are in PyTorch's order")
    return g


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H, W, C] and [B, C, L] -> [B, L, C]: how the
    runtime takes the input of a convolutional model exported from a
    [C, H, W] / [C, L] example."""
    x = torch.as_tensor(x)
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x.permute(0, 2, 1)


def export(model: nn.Module, path, example_input: torch.Tensor, *, name: str,
           version: int = 1, description: str = "", input_name: str = "input",
           output_name: str = "output", argmax_name: Optional[str] = None,
           max_batch: int = 64, tolerance: float = 1e-3,
           metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """Writes `model` to `path` as a .tern file and returns its bytes.

    Args:
      model: an nn.Sequential of supported modules (see the module doc).
      path: where to write; None writes nothing.
      example_input: float tensor [batch, ...]; becomes the golden input
        (batch <= max_batch). Its per-sample shape is the input's shape.
      name, version, description: the model's identity in the header.
      input_name, output_name: graph value names clients use.
      argmax_name: if set, also output the int32 index of the largest output
        feature under this name (a classifier's class).
      max_batch: largest batch one call may carry (1..256).
      tolerance: golden check tolerance for float outputs.
      metadata: free-form provenance written into the header.
    Raises:
      ExportError: unsupported module, bad shapes or names, or a model whose
        exported graph disagrees with its PyTorch forward.
    """
    for what, n in (("name", name), ("input_name", input_name), ("output_name", output_name)):
        if not valid_name(n):
            raise ExportError(f"{what} '{n}' must be 1 to 63 characters of [A-Za-z0-9_.:/-]")
    if argmax_name is not None and (not valid_name(argmax_name) or argmax_name == output_name):
        raise ExportError(f"argmax_name '{argmax_name}' must be a valid name other than "
                          "output_name")
    if not 1 <= max_batch <= MAX_BATCH:
        raise ExportError(f"max_batch is {max_batch}, expected 1..{MAX_BATCH}")
    x = torch.as_tensor(example_input, dtype=torch.float32)
    if x.dim() < 2 or x.shape[0] < 1 or x.shape[0] > max_batch:
        raise ExportError(f"example_input has shape {tuple(x.shape)}; expected [batch, ...] "
                          f"with 1 <= batch <= max_batch ({max_batch})")
    sample_shape = list(x.shape[1:])
    in_features = int(np.prod(sample_shape))
    # A convolutional model with a [C, H, W] or [C, L] input takes it channels
    # last ([H, W, C], [L, C]); every other input is a flat row as before.
    spatial = len(sample_shape) in (2, 3) and any(
        isinstance(m, _CONV_MODULES) for m in model.modules())
    input_val = _Val(tuple(sample_shape), spatial=True) if spatial else in_features

    was_training = model.training
    model.eval()
    try:
        g = build_graph(model, input_val)
        with torch.no_grad():
            torch_out = model(x).reshape(x.shape[0], -1).to(torch.float32).numpy()
    finally:
        model.train(was_training)

    # Rename value names to what clients see: the input, and the last op's output.
    last = g.ops[-1].output
    for op in g.ops:
        op.inputs[:] = [input_name if v == "input" else output_name if v == last else v
                        for v in op.inputs]
        if op.output == last:
            op.output = output_name
    out_features = g.features[last]
    if torch_out.shape[1] != out_features:
        raise ExportError(f"the model returns {torch_out.shape[1]} features per sample, but its "
                          f"exported ops give {out_features}: is its forward a plain sequence?")
    if argmax_name:
        g.ops.append(model_pb2.Op(type=model_pb2.ARGMAX, inputs=[output_name], output=argmax_name))

    header = model_pb2.ModelHeader(name=name, version=version, architecture="graph",
                                   description=description)
    graph = header.graph
    graph.max_batch = max_batch
    graph.inputs.add(name=input_name, dtype=model_pb2.F32,
                     shape=g.vals["input"].dims if spatial else sample_shape)
    graph.outputs.add(name=output_name, dtype=model_pb2.F32, shape=[out_features])
    if argmax_name:
        graph.outputs.add(name=argmax_name, dtype=model_pb2.I32, shape=[1])
    graph.ops.extend(g.ops)
    header.metadata["exporter"] = f"ternd-python {__version__}"
    for key, value in (metadata or {}).items():
        header.metadata[str(key)] = str(value)

    def write(golden) -> bytes:
        w = TernWriter(header)
        for kind, tname, data in g.tensors:
            if kind == "ternary":
                w.add_ternary(tname, *data)
            else:
                w.add_f32(tname, data)
        if golden is not None:
            ins, outs = golden
            w.header.golden.input_tensors.append("golden.input")
            w.add_f32("golden.input", ins)
            for i, (v, o) in enumerate(zip(graph.outputs, outs)):
                tname = f"golden.output.{i}"
                w.header.golden.output_tensors.append(tname)
                if v.dtype == model_pb2.I32:
                    w.add_i32(tname, o)
                else:
                    w.add_f32(tname, o)
            w.header.golden.tolerance = tolerance
        return w.finish()

    golden_in = channels_last(x).reshape(x.shape[0], -1).numpy().astype(np.float32) \
        if spatial else x.reshape(x.shape[0], -1).numpy().astype(np.float32)
    ref = reference.run(parse_tern(write(None), "exported model"), golden_in)
    ref_out = ref.outputs[output_name]
    diff = float(np.max(np.abs(ref_out - torch_out)))
    bound = 1e-2 * max(1.0, float(np.max(np.abs(torch_out))))
    if not diff <= bound:
        raise ExportError(
            f"the exported graph's output differs from the PyTorch model's by {diff:g} "
            f"(allowed {bound:g}): does the model's forward do more than run its modules in "
            "order?")
    if argmax_name and not np.array_equal(np.argmax(torch_out, axis=1),
                                          ref.outputs[argmax_name][:, 0]):
        raise ExportError("the exported graph and the PyTorch model predict different classes "
                          "on the example input")
    data = write((golden_in, [ref.outputs[v.name] for v in graph.outputs]))
    if path is not None:
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return data
