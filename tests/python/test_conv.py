"""BitConv2d / BitConv1d, the export of convolutional models and their
cross-check with the C++ runtime.

- BitConv's eval forward against an independent integer computation written
  here with NumPy loops (one absmax per sample, exact sums, the float32
  expression of docs/model-format.md), bit for bit;
- training mode: the straight-through estimator lets gradients through;
- export: the graph (ops, channels-last input, reordered weights), batch
  norm folded (negative gains flip codes), every refusal named;
- a model with every convolutional op, run by the C++ runtime (tern_trace):
  every value equals PyTorch's, convolution outputs bit for bit.
"""

import json
import struct
import subprocess
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from ternd import BitConv1d, BitConv2d, BitLinear, Concat, ExportError, export, reference
from ternd.export import channels_last
from ternd.tern_format import TernFormatError, parse_tern
from ternd.torch_import import to_torch
from ternd import model_pb2

f32 = np.float32


def _independent_conv2d(x, codes, scales, bias, stride, pad, dil):
    """x [B, C, H, W] float32; codes [O, C, KH, KW]: the runtime's numbers."""
    b, c, h, w = x.shape
    o, _, kh, kw = codes.shape
    oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((b, o, oh, ow), dtype=f32)
    for s in range(b):
        amax = f32(np.max(np.abs(x[s])))
        if amax > 0:
            q = np.clip(np.rint(x[s] * (f32(127) / amax)), -128, 127).astype(np.int64)
            d = f32(amax / f32(127))
        else:
            q, d = np.zeros(x[s].shape, np.int64), f32(0)
        for n in range(o):
            for i in range(oh):
                for j in range(ow):
                    acc = 0
                    for a in range(kh):
                        for e in range(kw):
                            yy, xx = i * stride[0] - pad[0] + a * dil[0], j * stride[1] - pad[1] + e * dil[1]
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += int(np.dot(codes[n, :, a, e].astype(np.int64), q[:, yy, xx]))
                    sc = scales[n] if len(scales) > 1 else scales[0]
                    v = f32(f32(acc) * f32(f32(sc) * d))
                    y[s, n, i, j] = f32(v + bias[n]) if bias is not None else v
    return y


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("geom", [((3, 3), (1, 1), (1, 1), (1, 1)), ((2, 3), (2, 1), (0, 1), (2, 1))])
def test_bitconv2d_eval_is_the_runtime_arithmetic(per_row, geom):
    k, stride, pad, dil = geom
    torch.manual_seed(3)
    conv = BitConv2d(3, 5, k, stride=stride, padding=pad, dilation=dil, per_row_scale=per_row)
    conv.eval()
    x = torch.randn(3, 3, 7, 6) * 3
    x[1] = 0  # a zero sample: dequant 0
    wq, scale = conv.quantized_weight()
    assert set(np.unique(wq.numpy())) <= {-1.0, 0.0, 1.0}
    want = _independent_conv2d(x.numpy(), wq.numpy().astype(np.int64),
                               scale.numpy().reshape(-1), conv.bias.detach().numpy(),
                               stride, pad, dil)
    got = conv(x).detach().numpy()
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.all(got[1] == conv.bias.detach().numpy()[:, None, None])


def test_bitconv1d_eval_matches_2d_with_one_row():
    torch.manual_seed(4)
    c1 = BitConv1d(2, 4, 5, stride=2, padding=2, dilation=1).eval()
    c2 = BitConv2d(2, 4, (1, 5), stride=(1, 2), padding=(0, 2)).eval()
    with torch.no_grad():
        c2.weight.copy_(c1.weight[:, :, None, :])
        c2.bias.copy_(c1.bias)
    x = torch.randn(3, 2, 30)
    y1 = c1(x).numpy()
    y2 = c2(x[:, :, None, :])[:, :, 0, :].numpy()
    assert np.array_equal(y1.view(np.uint32), y2.view(np.uint32))


def test_training_quantizes_and_passes_gradients():
    torch.manual_seed(5)
    conv = BitConv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 5, 5, requires_grad=True)
    y = conv(x)
    y.square().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    # The training forward is the convolution of the dequantized weights and
    # per-sample quantized inputs: eval differs only by float rounding.
    conv.eval()
    assert torch.allclose(conv(x.detach()), y.detach(), rtol=1e-4, atol=1e-4)


def test_unsupported_bitconv_arguments():
    with pytest.raises(ValueError, match="groups must be 1"):
        BitConv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding must be numbers"):
        BitConv2d(4, 4, 3, padding="same")


def _all_ops_model():
    torch.manual_seed(6)
    m = nn.Sequential(OrderedDict(
        conv1=BitConv2d(2, 8, 3, padding=1, bias=False), bn1=nn.BatchNorm2d(8), act1=nn.ReLU(),
        split=Concat(nn.MaxPool2d(2), nn.AvgPool2d(3, stride=2, padding=1)),
        dw=nn.Conv2d(16, 16, 3, padding=1, groups=16),
        conv2=BitConv2d(16, 12, 3, stride=1, padding=2, dilation=2, per_row_scale=True),
        act2=nn.GELU(),
        gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
        fc=BitLinear(12, 4), probs=nn.Softmax(dim=-1)))
    with torch.no_grad():  # batch norm statistics and a negative gain
        m.bn1.running_mean.copy_(torch.linspace(-0.5, 0.5, 8))
        m.bn1.running_var.copy_(torch.linspace(0.5, 2.0, 8))
        m.bn1.weight.copy_(torch.linspace(-1.0, 1.5, 8))
        m.bn1.bias.copy_(torch.linspace(0.2, -0.2, 8))
    return m.eval()


def test_export_of_every_convolutional_op(tmp_path):
    m = _all_ops_model()
    x = torch.randn(5, 2, 8, 8) * 4
    data = export(m, tmp_path / "cnn.tern", x, name="cnn", argmax_name="cls",
                  output_name="probs")
    assert struct.unpack_from("<I", data, 4)[0] == 3
    tf = parse_tern(data)
    g = tf.header.graph
    assert list(g.inputs[0].shape) == [8, 8, 2]  # channels last
    types = [model_pb2.OpType.Name(op.type) for op in g.ops]
    assert types == ["CONV2D", "RELU", "MAX_POOL", "AVG_POOL", "CONCAT", "DEPTHWISE_CONV2D",
                     "CONV2D", "GELU", "GLOBAL_AVG_POOL", "TERNARY_LINEAR",
                     "SOFTMAX", "ARGMAX"]
    assert list(g.ops[6].dilation) == [2, 2] and list(g.ops[3].padding) == [1, 1]
    # Batch norm folded: per-channel scales s * |g|, codes negated where g < 0.
    w = tf.tensor("conv1.weight")
    wq, s = m.conv1.quantized_weight()
    gain = (m.bn1.weight / torch.sqrt(m.bn1.running_var + m.bn1.eps)).detach().numpy()
    codes = wq.permute(0, 2, 3, 1).reshape(8, -1).numpy()
    assert np.array_equal(w.weights, (codes * np.where(gain < 0, -1, 1)[:, None]).astype(np.int8))
    assert np.allclose(w.scales, float(s) * np.abs(gain), rtol=1e-6)
    assert "conv1.bias" in tf.tensors  # from the batch norm
    # The file computes what the model computes.
    ref = reference.run(tf, channels_last(x).reshape(5, -1).numpy())
    assert np.allclose(ref.outputs["probs"], m(x).detach().numpy(), atol=1e-5)
    imported = to_torch(tf)(channels_last(x).reshape(5, -1))
    assert np.allclose(imported["probs"].numpy(), ref.outputs["probs"], atol=1e-6)


def test_runtime_runs_every_convolutional_op(tmp_path, ternctl_cmd, trace_cmd):
    m = _all_ops_model()
    x = torch.randn(9, 2, 8, 8) * 4
    path = tmp_path / "cnn.tern"
    export(m, path, x[:4], name="cnn", argmax_name="cls", output_name="probs")
    golden = subprocess.run([*ternctl_cmd, "run", str(path), "--golden"], capture_output=True,
                            text=True)
    assert golden.returncode == 0, golden.stderr
    rows = tmp_path / "rows.f32"
    xl = channels_last(x).reshape(9, -1).numpy().astype("<f4")
    xl.tofile(rows)
    proc = subprocess.run([*trace_cmd, str(path), str(rows), "ref"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    tf = parse_tern(path.read_bytes())
    module = to_torch(tf)
    values = module(torch.from_numpy(xl), trace=True)
    for name, bits in trace["values"].items():
        got = np.asarray(bits)
        want = values[name].numpy()
        if want.dtype == np.int32:
            assert np.array_equal(got, want.reshape(-1)), name
        else:
            cpp = got.astype(np.uint32).view(np.float32).reshape(want.shape)
            assert np.allclose(cpp, want, rtol=1e-5, atol=1e-5), name
    # Convolutions bit for bit on the runtime's own input.
    for i, inp, layer in module.conv_layers():
        cpp_in = np.asarray(trace["values"][inp], dtype=np.uint32).view(np.float32)
        cpp_out = np.asarray(trace["values"][tf.header.graph.ops[i].output], dtype=np.uint32)
        y = layer(torch.from_numpy(cpp_in.reshape(9, -1))).numpy()
        assert np.array_equal(y.reshape(-1).view(np.uint32), cpp_out), f"op {i}"


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten()), "must be depthwise"),
    (nn.Sequential(BitConv2d(2, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten()),
     "batch norm is folded into the BitLinear/BitConv right before it"),
    (nn.Sequential(BitConv2d(2, 4, 3)), "output is a [4, 3, 3] tensor"),
    (nn.Sequential(BitConv2d(2, 4, 3), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten()),
     "ceil_mode=True"),
    (nn.Sequential(BitConv2d(2, 4, 3), nn.AvgPool2d(2, count_include_pad=False), nn.Flatten()),
     "count_include_pad=True"),
    (nn.Sequential(BitConv2d(2, 4, 3), nn.Flatten(), nn.LayerNorm(36)),
     "reads a flattened convolution output"),
    (nn.Sequential(BitConv2d(2, 4, 3), BitLinear(36, 3)), "flatten it first"),
    (nn.Sequential(BitConv2d(3, 4, 3), nn.Flatten()), "expects 3 input channels"),
    (nn.Sequential(nn.Flatten(), nn.Unflatten(1, (2, 5, 5)), BitConv2d(2, 4, 3), nn.Flatten()),
     "only unflattening a flat row"),
    (nn.Sequential(nn.Unflatten(1, (2, 5, 5)), BitConv2d(2, 4, 3), nn.Flatten()),
     "unflattens to 2 channels"),
    (nn.Sequential(nn.Conv1d(2, 2, 3), nn.Flatten()), "use ternd.BitConv1d"),
    (nn.Sequential(BitConv2d(2, 4, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten()),
     "only global pooling"),
])
def test_export_refusals_name_the_module(model, message):
    flat = isinstance(model[0], nn.Unflatten)
    with pytest.raises(ExportError) as e:
        export(model, None, torch.randn(2, 50) if flat else torch.randn(2, 2, 5, 5), name="bad")
    assert message in str(e.value)


def test_flatten_reorders_the_next_linear_layer():
    # Three channels: the runtime's flat order (h, w, c) is not PyTorch's
    # (c, h, w); the exported linear weights are permuted to match.
    torch.manual_seed(8)
    m = nn.Sequential(BitConv2d(2, 3, 3, padding=1), nn.Flatten(), nn.Linear(75, 4)).eval()
    x = torch.randn(6, 2, 5, 5)
    tf = parse_tern(export(m, None, x, name="perm"))
    got = reference.run(tf, channels_last(x).reshape(6, -1).numpy()).outputs["output"]
    assert np.allclose(got, m(x).detach().numpy(), atol=1e-5)
    assert not np.allclose(tf.tensor("2.weight"), m[2].weight.detach().numpy())


def test_conv1d_model_from_a_flat_signal(ternctl_cmd, tmp_path):
    torch.manual_seed(9)
    m = nn.Sequential(nn.Unflatten(1, (1, 64)), BitConv1d(1, 6, 7, stride=2, padding=3),
                      nn.ReLU(), nn.MaxPool1d(2), BitConv1d(6, 8, 3, dilation=2),
                      nn.AdaptiveAvgPool1d(1), nn.Flatten(), BitLinear(8, 3)).eval()
    x = torch.randn(4, 64)
    path = tmp_path / "sig.tern"
    tf = parse_tern(export(m, path, x, name="sig"))
    assert list(tf.header.graph.inputs[0].shape) == [64]  # a flat row, as sent
    assert [op.type for op in tf.header.graph.ops][:2] == [model_pb2.RESHAPE, model_pb2.CONV1D]
    out = subprocess.run([*ternctl_cmd, "run", str(path), "--golden"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_reader_refuses_convolutions_in_an_old_version():
    m = nn.Sequential(nn.Unflatten(1, (1, 4, 4)), BitConv2d(1, 2, 3), nn.Flatten(),
                      BitLinear(8, 2)).eval()
    data = bytearray(export(m, None, torch.randn(2, 16), name="old"))
    data[4:8] = struct.pack("<I", 1)
    with pytest.raises(TernFormatError, match=r"op #0 \(RESHAPE\) needs format version 3"):
        parse_tern(bytes(data))
