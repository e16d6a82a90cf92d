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
    Identity, Dropout, Flatten   nothing (the runtime works on flat rows)

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
from .nn import BitLinear, ReLU2, Residual, RMSNorm
from .tern_format import MAX_BATCH, TernWriter, parse_tern, valid_name


class ExportError(ValueError):
    """The model cannot be written as a .tern file; the message says why."""


_NOOP = (nn.Identity, nn.Dropout, nn.Flatten)

SUPPORTED = ("BitLinear, Linear, RMSNorm, LayerNorm, ReLU, ReLU2, SiLU, GELU, "
             "Softmax, Residual, Sequential, Identity, Dropout, Flatten")


@dataclass
class _Graph:
    ops: List[model_pb2.Op] = field(default_factory=list)
    tensors: List[Tuple[str, str, object]] = field(default_factory=list)  # (kind, name, data)
    features: Dict[str, int] = field(default_factory=dict)

    def new_value(self, features: int) -> str:
        name = f"v{len(self.ops)}"
        self.features[name] = features
        return name

    def add_op(self, type_: int, inputs, features: int, weight: str = "", bias: str = "",
               eps: float = 0.0) -> str:
        out = self.new_value(features)
        op = model_pb2.Op(type=type_, inputs=list(inputs), output=out, weight=weight,
                          bias=bias, eps=eps)
        self.ops.append(op)
        return out


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().astype(np.float32)


def _tensor_name(path: str, what: str) -> str:
    name = f"{path}.{what}" if path else what
    if not valid_name(name):
        raise ExportError(f"module path '{path}' does not give a valid tensor name "
                          "(at most 63 characters of [A-Za-z0-9_.:/-])")
    return name


def _emit(g: _Graph, module: nn.Module, path: str, x: str) -> str:
    """Appends the ops of `module` reading value `x`; returns its output."""
    where = f"'{path or '<model>'}' ({type(module).__name__})"
    k = g.features[x]

    def need_features(n: int):
        if n != k:
            raise ExportError(f"{where} expects {n} input features, but receives {k}")

    if isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            x = _emit(g, child, f"{path}.{name}" if path else name, x)
        return x
    if isinstance(module, Residual):
        body = _emit(g, module.body, f"{path}.body" if path else "body", x)
        if g.features[body] != k:
            raise ExportError(f"{where}: the body maps {k} features to {g.features[body]}; "
                              "a residual needs the same number")
        return g.add_op(model_pb2.ADD, [x, body], k)
    if isinstance(module, BitLinear):
        need_features(module.in_features)
        wq, scale = module.quantized_weight()
        w = _tensor_name(path, "weight")
        g.tensors.append(("ternary", w, (wq.to(torch.int8).numpy(), _f32(scale).reshape(-1))))
        b = ""
        if module.bias is not None:
            b = _tensor_name(path, "bias")
            g.tensors.append(("f32", b, _f32(module.bias)))
        return g.add_op(model_pb2.TERNARY_LINEAR, [x], module.out_features, w, b)
    if type(module) is nn.Linear:
        need_features(module.in_features)
        w = _tensor_name(path, "weight")
        g.tensors.append(("f32", w, _f32(module.weight)))
        b = ""
        if module.bias is not None:
            b = _tensor_name(path, "bias")
            g.tensors.append(("f32", b, _f32(module.bias)))
        return g.add_op(model_pb2.LINEAR, [x], module.out_features, w, b)
    if isinstance(module, RMSNorm):
        need_features(module.features)
        w = _tensor_name(path, "weight")
        g.tensors.append(("f32", w, _f32(module.weight)))
        return g.add_op(model_pb2.RMS_NORM, [x], k, w, eps=module.eps)
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ExportError(f"{where} normalizes over {tuple(module.normalized_shape)}; "
                              "the runtime normalizes over the last dimension only")
        need_features(module.normalized_shape[0])
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
        return g.add_op(model_pb2.GELU, [x], k)
    if isinstance(module, nn.Softmax):
        if module.dim not in (-1, 1, None):
            raise ExportError(f"{where} runs over dim {module.dim}; the runtime's softmax runs "
                              "over the features of each row (dim=-1)")
        return g.add_op(model_pb2.SOFTMAX, [x], k)
    simple = {nn.ReLU: model_pb2.RELU, ReLU2: model_pb2.RELU2, nn.SiLU: model_pb2.SILU}
    for cls, op_type in simple.items():
        if type(module) is cls:
            return g.add_op(op_type, [x], k)
    if isinstance(module, _NOOP):
        return x
    raise ExportError(f"cannot export module {where}: the runtime has no op for it "
                      f"(supported: {SUPPORTED})")


def build_graph(model: nn.Module, in_features: int) -> _Graph:
    """The ops and tensors of `model` reading an input of `in_features`."""
    g = _Graph()
    g.features["input"] = in_features
    out = _emit(g, model, "", "input")
    if out == "input" or not g.ops:
        raise ExportError("the model has no op the runtime would run")
    return g


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

    was_training = model.training
    model.eval()
    try:
        g = build_graph(model, in_features)
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
    graph.inputs.add(name=input_name, dtype=model_pb2.F32, shape=sample_shape)
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

    golden_in = x.reshape(x.shape[0], -1).numpy().astype(np.float32)
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
