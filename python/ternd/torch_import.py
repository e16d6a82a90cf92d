"""Turning a .tern file back into a PyTorch module.

`to_torch(read_tern(path))` builds a module that runs the file's graph with
the package's PyTorch modules (frozen `BitLinear`s holding the file's codes
and scales, `torch.nn.LayerNorm`, `RMSNorm`, ...). In eval mode it computes
what the exported model computed: the ternary layers bit for bit, so tests
can compare the C++ runtime with PyTorch for any shipped file.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from . import model_pb2
from .nn import BitConv1d, BitConv2d, BitLinear, ReLU2, RMSNorm
from .reference import value_dims, window
from .tern_format import TernFile


class _AudioFlat(nn.Module):
    """AudioFeatures on flat sample rows, giving the runtime's flat
    [frames, mel_bins] rows."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x.reshape(x.shape[0], -1))  # [B, mel, frames]
        return y.transpose(1, 2).reshape(x.shape[0], -1)


class ChannelsLast(nn.Module):
    """Runs a PyTorch (channels-first) module on the runtime's flat
    channels-last rows: [B, H*W*C] -> [B, C, H, W] -> inner -> flat [B, ...]
    channels last again. `in_dims` is the runtime's [H, W, C] or [L, C]."""

    def __init__(self, inner: nn.Module, in_dims):
        super().__init__()
        self.inner = inner
        self.in_dims = [int(d) for d in in_dims]

    def to_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.in_dims)
        return x.permute(0, 3, 1, 2) if x.dim() == 4 else x.permute(0, 2, 1)

    @staticmethod
    def to_flat(y: torch.Tensor) -> torch.Tensor:
        y = y.permute(0, 2, 3, 1) if y.dim() == 4 else y.permute(0, 2, 1)
        return y.reshape(y.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_flat(self.inner(self.to_channels_first(x)))


def _param(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float32).clone()


class TernModule(nn.Module):
    """The graph of a .tern file as a PyTorch module (eval only).

    forward(*inputs) returns {output name: tensor}; with trace=True, every
    graph value by name.
    """

    def __init__(self, tf: TernFile):
        super().__init__()
        g = tf.header.graph
        self.input_names = [v.name for v in g.inputs]
        self.output_names = [v.name for v in g.outputs]
        self.ops = []  # (type, inputs, output, module index or -1)
        self.layers = nn.ModuleList()
        self.dims = value_dims(tf)
        for op in g.ops:
            m = self._module(tf, op, self.dims[op.inputs[0]])
            idx = -1
            if m is not None:
                idx = len(self.layers)
                self.layers.append(m)
            self.ops.append((op.type, list(op.inputs), op.output, idx))
        self.eval()

    @staticmethod
    def _module(tf: TernFile, op: model_pb2.Op, in_dims):
        t = op.type
        bias = tf.tensor(op.bias) if op.bias else None
        if t in (model_pb2.CONV2D, model_pb2.CONV1D):
            w = tf.tensor(op.weight)
            win = window(op, in_dims)
            c_out = w.weights.shape[0]
            if t == model_pb2.CONV2D:
                codes = w.weights.reshape(c_out, win.kh, win.kw, win.in_c).transpose(0, 3, 1, 2)
                conv = BitConv2d.from_ternary(codes, w.scales, bias, stride=(win.sh, win.sw),
                                              padding=(win.ph, win.pw),
                                              dilation=(win.dh, win.dw))
            else:
                codes = w.weights.reshape(c_out, win.kw, win.in_c).transpose(0, 2, 1)
                conv = BitConv1d.from_ternary(codes, w.scales, bias, stride=win.sw,
                                              padding=win.pw, dilation=win.dw)
            return ChannelsLast(conv, in_dims)
        if t == model_pb2.DEPTHWISE_CONV2D:
            win = window(op, in_dims)
            w = tf.tensor(op.weight)
            m = nn.Conv2d(win.in_c, win.in_c, (win.kh, win.kw), stride=(win.sh, win.sw),
                          padding=(win.ph, win.pw), dilation=(win.dh, win.dw),
                          groups=win.in_c, bias=bias is not None)
            with torch.no_grad():
                m.weight.copy_(_param(w).permute(2, 0, 1)[:, None])
                if bias is not None:
                    m.bias.copy_(_param(bias))
            return ChannelsLast(m, in_dims)
        if t in (model_pb2.MAX_POOL, model_pb2.AVG_POOL):
            win = window(op, in_dims)
            one_d = len(in_dims) == 2
            k = win.kw if one_d else (win.kh, win.kw)
            s = win.sw if one_d else (win.sh, win.sw)
            p = win.pw if one_d else (win.ph, win.pw)
            cls = {(model_pb2.MAX_POOL, True): nn.MaxPool1d, (model_pb2.MAX_POOL, False): nn.MaxPool2d,
                   (model_pb2.AVG_POOL, True): nn.AvgPool1d,
                   (model_pb2.AVG_POOL, False): nn.AvgPool2d}[(t, one_d)]
            return ChannelsLast(cls(k, s, p), in_dims)
        if t == model_pb2.AUDIO_FEATURES:
            from .audio import AudioParams
            from .nn import AudioFeatures
            gain = tf.tensor(op.weight) if op.weight else None
            return _AudioFlat(AudioFeatures(AudioParams.from_proto(op.audio), gain, bias))
        if t == model_pb2.GLOBAL_AVG_POOL:
            pool = nn.AdaptiveAvgPool1d(1) if len(in_dims) == 2 else nn.AdaptiveAvgPool2d(1)
            return ChannelsLast(pool, in_dims)
        if t == model_pb2.TERNARY_LINEAR:
            w = tf.tensor(op.weight)
            return BitLinear.from_ternary(w.weights, w.scales, bias)
        if t == model_pb2.LINEAR:
            w = tf.tensor(op.weight)
            m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
            with torch.no_grad():
                m.weight.copy_(_param(w))
                if bias is not None:
                    m.bias.copy_(_param(bias))
            return m
        if t == model_pb2.RMS_NORM:
            w = tf.tensor(op.weight)
            m = RMSNorm(w.shape[0], eps=op.eps)
            with torch.no_grad():
                m.weight.copy_(_param(w))
            return m
        if t == model_pb2.LAYER_NORM:
            w = tf.tensor(op.weight)
            m = nn.LayerNorm(w.shape[0], eps=op.eps)
            with torch.no_grad():
                m.weight.copy_(_param(w))
                m.bias.copy_(_param(bias) if bias is not None else torch.zeros(w.shape[0]))
            return m
        simple = {model_pb2.RELU: nn.ReLU, model_pb2.RELU2: ReLU2, model_pb2.SILU: nn.SiLU,
                  model_pb2.GELU: nn.GELU}
        if t in simple:
            return simple[t]()
        if t == model_pb2.SOFTMAX:
            return nn.Softmax(dim=-1)
        if t in (model_pb2.ADD, model_pb2.ARGMAX, model_pb2.RESHAPE, model_pb2.CONCAT):
            return None
        raise ValueError(f"op type {t} has no PyTorch equivalent here")

    def forward(self, *inputs: torch.Tensor, trace: bool = False,
                given: Optional[Mapping[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """`given` maps op outputs to values used instead of computing them
        (as in ternd.reference.run)."""
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected {len(self.input_names)} inputs, got {len(inputs)}")
        values = {n: x.reshape(x.shape[0], -1).to(torch.float32)
                  for n, x in zip(self.input_names, inputs)}
        with torch.no_grad():
            for type_, ins, out, idx in self.ops:
                x = values[ins[0]]
                if given is not None and out in given:
                    values[out] = torch.as_tensor(given[out], dtype=torch.float32).reshape(
                        x.shape[0], -1)
                elif type_ == model_pb2.ADD:
                    values[out] = x + values[ins[1]]
                elif type_ == model_pb2.ARGMAX:
                    values[out] = torch.argmax(x, dim=1, keepdim=True).to(torch.int32)
                elif type_ == model_pb2.RESHAPE:
                    values[out] = x.clone()
                elif type_ == model_pb2.CONCAT:
                    b = x.shape[0]
                    chans = [self.dims[n][-1] for n in ins]
                    positions = x.shape[1] // chans[0]
                    values[out] = torch.cat([values[n].reshape(b, positions, c)
                                             for n, c in zip(ins, chans)], dim=2).reshape(b, -1)
                else:
                    values[out] = self.layers[idx](x)
        if trace:
            return values
        return {n: values[n] for n in self.output_names}

    def conv_layers(self):
        """(op index, input value name, ChannelsLast(BitConv)) for every
        CONV2D / CONV1D op."""
        for i, (type_, ins, _, idx) in enumerate(self.ops):
            if type_ in (model_pb2.CONV2D, model_pb2.CONV1D):
                yield i, ins[0], self.layers[idx]

    def ternary_layers(self):
        """(op index, input value name, BitLinear) for every ternary op."""
        for i, (type_, ins, _, idx) in enumerate(self.ops):
            if type_ == model_pb2.TERNARY_LINEAR:
                yield i, ins[0], self.layers[idx]


def to_torch(tf: TernFile) -> TernModule:
    return TernModule(tf)
