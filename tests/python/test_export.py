"""export(): the graph it writes, its golden pair, its errors, and that the
C++ runtime runs what it writes."""

import json
import subprocess
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from ternd import BitLinear, ExportError, ReLU2, Residual, RMSNorm, export, model_pb2, read_tern
from ternd import reference
from ternd.torch_import import to_torch


def _every_op_model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        flat=nn.Flatten(),
        inp=BitLinear(12, 16, per_row_scale=True),
        ln=nn.LayerNorm(16),
        gelu=nn.GELU(),
        res=Residual(RMSNorm(16), BitLinear(16, 24), nn.SiLU(), BitLinear(24, 16, bias=False)),
        relu2=ReLU2(),
        drop=nn.Dropout(0.1),
        dense=nn.Linear(16, 8),
        relu=nn.ReLU(),
        out=BitLinear(8, 5),
        softmax=nn.Softmax(dim=-1),
    ))


def test_export_writes_the_expected_graph(tmp_path):
    model = _every_op_model()
    x = torch.randn(6, 3, 4)
    path = tmp_path / "m.tern"
    data = export(model, path, x, name="every-op", version=7, argmax_name="class",
                  metadata={"k": "v"})
    assert path.read_bytes() == data
    tf = read_tern(path)
    h = tf.header
    assert (h.name, h.version, h.metadata["k"]) == ("every-op", 7, "v")
    ops = [(model_pb2.OpType.Name(o.type), list(o.inputs), o.output) for o in h.graph.ops]
    assert [o[0] for o in ops] == [
        "TERNARY_LINEAR", "LAYER_NORM", "GELU", "RMS_NORM", "TERNARY_LINEAR", "SILU",
        "TERNARY_LINEAR", "ADD", "RELU2", "LINEAR", "RELU", "TERNARY_LINEAR", "SOFTMAX",
        "ARGMAX"]
    assert ops[0][1] == ["input"]
    assert ops[7][1] == [ops[2][2], ops[6][2]]  # residual: block input + body output
    assert ops[-2][2] == "output" and ops[-1] == ("ARGMAX", ["output"], "class")
    assert list(h.graph.inputs[0].shape) == [3, 4]
    assert [o.name for o in h.graph.outputs] == ["output", "class"]
    assert len(tf.tensor("inp.weight").scales) == 16
    assert h.graph.ops[6].bias == ""
    # The ternary codes are the layers' own.
    wq, scale = model.res.body[1].quantized_weight()
    assert np.array_equal(tf.tensor("res.body.1.weight").weights, wq.numpy())
    assert tf.tensor("res.body.1.weight").scales[0] == scale.item()
    # The golden pair is the example input and the runtime numerics' output.
    gin, gout = tf.golden()
    assert np.array_equal(gin[0], x.reshape(6, 12).numpy())
    ref = reference.run(tf, x.numpy())
    assert np.array_equal(gout[0], ref.outputs["output"])
    assert np.array_equal(gout[1], ref.outputs["class"])


def test_imported_module_reproduces_the_model():
    model = _every_op_model().eval()
    x = torch.randn(20, 12) * 3
    tf = read_tern_bytes(export(model, None, x[:4], name="m"))
    got = to_torch(tf)(x)["output"]
    want = model(x)
    assert torch.allclose(got, want, atol=1e-6)
    # Ternary-only graphs are reproduced bit for bit.
    seq = nn.Sequential(BitLinear(12, 9), nn.ReLU(), BitLinear(9, 4)).eval()
    tf = read_tern_bytes(export(seq, None, x[:2], name="m"))
    assert torch.equal(to_torch(tf)(x)["output"], seq(x))


def read_tern_bytes(data):
    from ternd.tern_format import parse_tern
    return parse_tern(data)


def test_export_keeps_training_mode():
    model = _every_op_model().train()
    export(model, None, torch.randn(2, 12), name="m")
    assert model.training


def test_cpp_runtime_runs_the_export(ternctl_cmd, tmp_path):
    model = _every_op_model()
    x = torch.randn(8, 12)
    path = tmp_path / "m.tern"
    export(model, path, x, name="every-op", argmax_name="class")
    golden = subprocess.run([*ternctl_cmd, "run", str(path), "--golden"],
                            capture_output=True, text=True)
    assert golden.returncode == 0, golden.stderr
    rows = torch.randn(5, 12) * 2
    values = [f"{v:.9g}" for v in rows.flatten().tolist()]
    out = subprocess.run([*ternctl_cmd, "run", str(path), "--json", "--values", *values],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)["outputs"]
    want = model.eval()(rows)
    assert np.allclose(np.array(got["output"]), want.numpy(), atol=1e-4)
    assert [r[0] for r in got["class"]] == want.argmax(1).tolist()


@pytest.mark.parametrize("bad,where", [
    (nn.Conv1d(1, 1, 3), "'1' (Conv1d)"),
    (nn.Sequential(nn.ReLU(), nn.Tanh()), "'1.1' (Tanh)"),
    (nn.GELU(approximate="tanh"), "approximate='tanh'"),
    (nn.Softmax(dim=0), "runs over dim 0"),
    (nn.LayerNorm([2, 4]), "normalizes over (2, 4)"),
    (nn.ModuleList([nn.ReLU()]), "'1' (ModuleList)"),
])
def test_unsupported_layers_are_named(bad, where):
    model = nn.Sequential(BitLinear(8, 8), bad)
    with pytest.raises(ExportError) as e:
        export(model, None, torch.randn(1, 8), name="m")
    assert where in str(e.value)


def test_custom_module_is_refused_by_name():
    class Gate(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    with pytest.raises(ExportError, match=r"'gate' \(Gate\).*supported: BitLinear"):
        export(nn.Sequential(OrderedDict(fc=BitLinear(4, 4), gate=Gate())), None,
               torch.randn(1, 4), name="m")


def test_shape_errors():
    with pytest.raises(ExportError, match="expects 5 input features, but receives 4"):
        export(nn.Sequential(BitLinear(4, 4), BitLinear(5, 2)), None, torch.randn(1, 4),
               name="m")
    with pytest.raises(ExportError, match="residual needs the same shape"):
        export(nn.Sequential(Residual(BitLinear(4, 3))), None, torch.randn(1, 4), name="m")
    with pytest.raises(ExportError, match="batch <= max_batch"):
        export(nn.Sequential(BitLinear(4, 4)), None, torch.randn(9, 4), name="m", max_batch=8)
    with pytest.raises(ExportError, match="name 'a b'"):
        export(nn.Sequential(BitLinear(4, 4)), None, torch.randn(1, 4), name="a b")


def test_forward_that_is_not_the_module_sequence_is_caught():
    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    torch.manual_seed(0)
    with pytest.raises(ExportError, match="differs from the PyTorch model"):
        export(Doubled(BitLinear(4, 4)), None, torch.randn(3, 4) * 10, name="m")
