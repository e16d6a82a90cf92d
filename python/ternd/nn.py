"""PyTorch modules for models that ternd runs.

`BitLinear` is a drop-in for `torch.nn.Linear` with BitNet b1.58
quantization-aware training. In training mode it quantizes weights to
{-1, 0, +1} * absmean and activations to int8 per row, and lets gradients
through both roundings unchanged (straight-through estimator), so the float
"shadow" weights learn what survives ternarization. In eval mode its forward
is the runtime's integer arithmetic, bit for bit (see ternd.quant).

`RMSNorm`, `ReLU2` and `Residual` are the runtime ops that torch 1.13 has no
module for. Everything else the exporter accepts is a stock torch module.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import quant


class IntegerForward(NamedTuple):
    """What a BitLinear computes in eval mode, step by step."""

    q: torch.Tensor  # int8 activation codes as float32, [B, K]
    dequant: torch.Tensor  # [B, 1]
    acc: torch.Tensor  # int64 accumulators, [B, N] (fit int32)
    y: torch.Tensor  # float32 output, [B, N]


class BitLinear(nn.Linear):
    """Linear layer with ternary weights and int8 activations.

    Args:
      in_features, out_features, bias: as torch.nn.Linear.
      per_row_scale: one absmean scale per output row instead of one per
        tensor (the file stores either).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 per_row_scale: bool = False, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.per_row_scale = per_row_scale

    def extra_repr(self) -> str:
        return super().extra_repr() + f", per_row_scale={self.per_row_scale}"

    @classmethod
    def from_ternary(cls, weights, scales, bias=None) -> "BitLinear":
        """A frozen layer with the given codes [N, K] in {-1, 0, 1} and
        scales (1 or N), as read from a .tern file; eval only."""
        w = torch.as_tensor(weights, dtype=torch.float32)
        s = torch.as_tensor(scales, dtype=torch.float32).reshape(-1, 1)
        n, k = w.shape
        layer = cls(k, n, bias=bias is not None, per_row_scale=s.shape[0] > 1)
        with torch.no_grad():
            layer.weight.copy_(w * s)
            if bias is not None:
                layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        layer.register_buffer("frozen_weight", w.clone())
        layer.register_buffer("frozen_scale", s if s.shape[0] > 1 else s.reshape(1, 1))
        return layer.eval()

    @property
    def frozen(self) -> bool:
        return getattr(self, "frozen_weight", None) is not None

    def quantized_weight(self):
        """(W_q float32 [N, K] in {-1, 0, 1}, scale [N, 1] or [1, 1]): what
        export writes and what the eval forward uses."""
        if self.frozen:
            return self.frozen_weight, self.frozen_scale
        w = self.weight.detach().to(torch.float32)
        scale = quant.absmean_scale(w, self.per_row_scale)
        return quant.ternarize(w, scale), scale

    def integer_forward(self, x: torch.Tensor) -> IntegerForward:
        """The runtime's TERNARY_LINEAR on x [B, K], exactly."""
        with torch.no_grad():
            wq, scale = self.quantized_weight()
            qr = quant.quantize_activations(x.reshape(-1, self.in_features))
            acc = quant.ternary_accumulate(qr.q, wq)
            bias = None if self.bias is None else self.bias.detach()
            y = quant.dequantize_rows(acc, scale, qr.dequant, bias)
        return IntegerForward(qr.q, qr.dequant, acc, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            shape = x.shape[:-1] + (self.out_features,)
            return self.integer_forward(x).y.reshape(shape)
        if self.frozen:
            raise RuntimeError("a BitLinear made by from_ternary() is frozen: eval mode only")
        w = self.weight
        scale = quant.absmean_scale(w, self.per_row_scale)
        w_q = quant.ternarize(w.detach(), scale) * scale
        w_ste = w + (w_q - w).detach()
        flat = x.reshape(-1, self.in_features)
        qr = quant.quantize_activations(flat.detach())
        x_ste = flat + (qr.q * qr.dequant - flat).detach()
        y = F.linear(x_ste, w_ste, self.bias)
        return y.reshape(x.shape[:-1] + (self.out_features,))


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last dimension.

    In eval mode the sum of squares is taken in the runtime's order, so the
    result is the runtime's to the last bit.
    """

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.features = features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))

    def extra_repr(self) -> str:
        return f"{self.features}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            inv = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
            return x * inv * self.weight
        flat = x.reshape(-1, self.features).to(torch.float32)
        ss = torch.zeros(flat.shape[0], dtype=torch.float32)
        for i in range(self.features):
            ss = ss + flat[:, i] * flat[:, i]
        var = ss / torch.full_like(ss, float(self.features))
        inv = torch.ones_like(ss) / torch.sqrt(var + torch.full_like(ss, self.eps))
        y = flat * inv[:, None] * self.weight.detach()[None, :]
        return y.reshape(x.shape)


class ReLU2(nn.Module):
    """Squared ReLU: relu(x)^2 (the runtime's RELU2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = F.relu(x)
        return r * r


class Residual(nn.Module):
    """y = x + body(x): exports as the body's ops then one ADD."""

    def __init__(self, *body: nn.Module):
        super().__init__()
        self.body = body[0] if len(body) == 1 else nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

