"""Turning a .tern file back into a PyTorch module.

`to_torch(read_tern(path))` builds a module that runs the file's graph with
the package's PyTorch modules (frozen `BitLinear`s holding the file's codes
and scales, `torch.nn.LayerNorm`, `RMSNorm`, ...). In eval mode it computes
what the exported model computed: the ternary layers bit for bit, so tests
can compare the C++ runtime with PyTorch for any shipped file.
"""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn

from . import model_pb2
from .nn import BitLinear, ReLU2, RMSNorm
from .tern_format import TernFile


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
        for op in g.ops:
            m = self._module(tf, op)
            idx = -1
            if m is not None:
                idx = len(self.layers)
                self.layers.append(m)
            self.ops.append((op.type, list(op.inputs), op.output, idx))
        self.eval()

    @staticmethod
    def _module(tf: TernFile, op: model_pb2.Op):
        t = op.type
        bias = tf.tensor(op.bias) if op.bias else None
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
        if t in (model_pb2.ADD, model_pb2.ARGMAX):
            return None
        raise ValueError(f"op type {t} has no PyTorch equivalent here")

    def forward(self, *inputs: torch.Tensor, trace: bool = False) -> Dict[str, torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected {len(self.input_names)} inputs, got {len(inputs)}")
        values = {n: x.reshape(x.shape[0], -1).to(torch.float32)
                  for n, x in zip(self.input_names, inputs)}
        with torch.no_grad():
            for type_, ins, out, idx in self.ops:
                x = values[ins[0]]
                if type_ == model_pb2.ADD:
                    values[out] = x + values[ins[1]]
                elif type_ == model_pb2.ARGMAX:
                    values[out] = torch.argmax(x, dim=1, keepdim=True).to(torch.int32)
                else:
                    values[out] = self.layers[idx](x)
        if trace:
            return values
        return {n: values[n] for n in self.output_names}

    def ternary_layers(self):
        """(op index, input value name, BitLinear) for every ternary op."""
        for i, (type_, ins, _, idx) in enumerate(self.ops):
            if type_ == model_pb2.TERNARY_LINEAR:
                yield i, ins[0], self.layers[idx]


def to_torch(tf: TernFile) -> TernModule:
    return TernModule(tf)
