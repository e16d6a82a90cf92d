"""BitLinear and the quantization functions against hand-worked examples,
an independent integer computation, and the NumPy interpreter."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ternd import BitLinear, quant, reference
from ternd.tern_format import TernaryTensor


def test_activation_rounding_is_half_to_even():
    # amax 127 makes inv exactly 1, so x * inv is x itself.
    x = torch.tensor([[127.0, 2.5, 3.5, -2.5, 0.5, -0.5, 1.5]])
    q, dequant = quant.quantize_activations(x)
    assert q.tolist() == [[127, 2, 4, -2, 0, -0, 2]]
    assert dequant.item() == 1.0


def test_activation_scale_is_float32_division():
    x = torch.tensor([[0.3, -0.1, 0.05]], dtype=torch.float32)
    q, dequant = quant.quantize_activations(x)
    inv = np.float32(127.0) / np.float32(0.3)
    want = np.clip(np.rint(x.numpy() * inv), -128, 127)
    assert np.array_equal(q.numpy(), want)
    assert dequant.item() == np.float32(np.float32(0.3) / np.float32(127.0))


def test_activation_scale_is_a_division_not_a_reciprocal():
    # Rows (amax, x) where round(x * (127 / amax)) and
    # round(x * ((1 / amax) * 127)) differ in float32.
    x = np.array([[1.4554425477981567, 0.7048008441925049],
                  [1.3154374361038208, 0.34698542952537537],
                  [1.7237802743911743, 1.0926324129104614]], dtype=np.float32)
    inv = np.float32(127.0) / x[:, :1]
    recip = (np.float32(1.0) / x[:, :1]) * np.float32(127.0)
    assert not np.array_equal(np.rint(x * inv), np.rint(x * recip))
    q, _ = quant.quantize_activations(torch.from_numpy(x))
    assert np.array_equal(q.numpy(), np.rint(x * inv))


def test_activation_codes_match_float32_numpy_on_many_rows():
    # A reciprocal-multiply instead of the division, or a fused rounding,
    # changes a few codes in a million; this catches it.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4000, 256, generator=g) * torch.rand(4000, 1, generator=g) * 50
    q, dequant = quant.quantize_activations(x)
    xn = x.numpy()
    amax = np.max(np.abs(xn), axis=1, keepdims=True)
    inv = (np.float32(127.0) / amax).astype(np.float32)
    want = np.clip(np.rint((xn * inv).astype(np.float32)), -128, 127)
    assert np.array_equal(q.numpy(), want)
    assert np.array_equal(dequant.numpy(), (amax / np.float32(127.0)).astype(np.float32))


def test_zero_row_gives_zero_codes_and_bias_only():
    layer = BitLinear(5, 3).eval()
    x = torch.zeros(2, 5)
    r = layer.integer_forward(x)
    assert r.q.abs().sum() == 0 and r.dequant.abs().sum() == 0 and r.acc.abs().sum() == 0
    assert torch.equal(r.y, layer.bias.detach().expand(2, 3))


def test_weight_ternarization_by_hand():
    w = torch.tensor([[0.1, -0.5, 0.02, 0.3]])
    scale = quant.absmean_scale(w, per_row=False)
    assert scale.item() == pytest.approx(0.23)
    assert quant.ternarize(w, scale).tolist() == [[0.0, -1.0, 0.0, 1.0]]


def test_per_row_scales():
    w = torch.tensor([[1.0, -1.0], [0.1, 0.0]])
    assert quant.absmean_scale(w, per_row=True).flatten().tolist() == pytest.approx([1.0, 0.05])
    assert quant.ternarize(w, quant.absmean_scale(w, True)).tolist() == [[1, -1], [1, 0]]


def _integer_reference(x, wq, scale, bias):
    """The runtime's arithmetic with Python integers and NumPy float32."""
    x = x.astype(np.float32)
    out = np.zeros((x.shape[0], wq.shape[0]), np.float32)
    accs = np.zeros((x.shape[0], wq.shape[0]), np.int64)
    for b, row in enumerate(x):
        amax = np.float32(np.max(np.abs(row)))
        if amax > 0:
            inv = np.float32(127.0) / amax
            q = [int(min(127, max(-128, np.rint(np.float32(v * inv))))) for v in row]
            dq = np.float32(amax / np.float32(127.0))
        else:
            q, dq = [0] * len(row), np.float32(0)
        for n in range(wq.shape[0]):
            acc = sum(int(wq[n, k]) * q[k] for k in range(len(q)))
            s = np.float32(np.float32(scale[n if len(scale) > 1 else 0]) * dq)
            accs[b, n] = acc
            out[b, n] = np.float32(np.float32(np.float32(acc) * s) + bias[n])
    return accs, out


@pytest.mark.parametrize("k", [1, 3, 5, 17, 64, 129])
@pytest.mark.parametrize("per_row", [False, True])
def test_eval_forward_matches_integer_arithmetic(k, per_row):
    torch.manual_seed(k)
    layer = BitLinear(k, 7, per_row_scale=per_row).eval()
    x = torch.randn(9, k) * torch.logspace(-3, 3, 9)[:, None]
    x[4] = 0
    r = layer.integer_forward(x)
    wq, scale = layer.quantized_weight()
    accs, y = _integer_reference(x.numpy(), wq.numpy().astype(np.int64),
                                 scale.numpy().reshape(-1), layer.bias.detach().numpy())
    assert np.array_equal(r.acc.numpy(), accs)
    assert np.array_equal(r.y.numpy().view(np.uint32), y.view(np.uint32))
    assert torch.equal(layer(x), r.y)


def test_eval_forward_matches_numpy_interpreter():
    torch.manual_seed(1)
    layer = BitLinear(200, 33, per_row_scale=True).eval()
    x = torch.randn(64, 200) * 5
    r = layer.integer_forward(x)
    wq, scale = layer.quantized_weight()
    t = TernaryTensor(wq.to(torch.int8).numpy(), scale.numpy().reshape(-1))
    y, q, dq, acc = reference.ternary_linear(x.numpy(), t, layer.bias.detach().numpy())
    assert np.array_equal(q, r.q.numpy().astype(np.int8))
    assert np.array_equal(acc, r.acc.numpy())
    assert np.array_equal(dq, r.dequant.numpy()[:, 0])
    assert np.array_equal(y.view(np.uint32), r.y.numpy().view(np.uint32))


def test_training_forward_simulates_the_integer_forward():
    torch.manual_seed(2)
    layer = BitLinear(48, 12)
    x = torch.randn(10, 48)
    y_train = layer(x)
    layer.eval()
    y_eval = layer(x)
    assert torch.allclose(y_train, y_eval, rtol=1e-5, atol=1e-5)


def test_straight_through_gradients():
    torch.manual_seed(3)
    layer = BitLinear(6, 4)
    x = torch.randn(5, 6, requires_grad=True)
    g = torch.randn(5, 4)
    layer(x).backward(g)
    # STE: the gradients are those of a float linear layer evaluated at the
    # quantized weights and activations.
    wq, scale = layer.quantized_weight()
    qr = quant.quantize_activations(x.detach())
    x_q = qr.q * qr.dequant
    assert torch.allclose(layer.weight.grad, g.t() @ x_q, atol=1e-5)
    assert torch.allclose(x.grad, g @ (wq * scale), atol=1e-5)
    assert torch.allclose(layer.bias.grad, g.sum(0))


def test_training_reduces_loss():
    torch.manual_seed(4)
    x = torch.randn(256, 16)
    y = (x[:, :4].sum(1) > 0).long()
    model = torch.nn.Sequential(BitLinear(16, 32), torch.nn.ReLU(), BitLinear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        first = first if first is not None else float(loss)
        loss.backward()
        opt.step()
    model.eval()
    assert float(F.cross_entropy(model(x), y)) < 0.5 * first
    assert (model(x).argmax(1) == y).float().mean() > 0.9


def test_frozen_layer_uses_given_codes():
    w = np.array([[1, 0, -1], [0, 1, 1]], dtype=np.int8)
    layer = BitLinear.from_ternary(w, [0.5, 0.25], bias=[1.0, -1.0])
    r = layer.integer_forward(torch.tensor([[127.0, 0.0, -127.0]]))
    assert r.acc.tolist() == [[254, -127]]
    assert r.y.tolist() == [[254 * 0.5 + 1.0, -127 * 0.25 - 1.0]]
    layer.train()
    with pytest.raises(RuntimeError, match="frozen"):
        layer(torch.ones(1, 3))
