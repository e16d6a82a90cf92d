"""BitNet b1.58 quantization, written to match the ternd runtime bit for bit.

The runtime's numerics (runtime/ops.h, docs/model-format.md) are:

  weights      scale = mean |W| (per tensor, or per output row)
               W_q   = clamp(round(W / (scale + eps)), -1, 1)
  activations  per row (token): amax = max |x|; inv = 127.0f / amax;
               q = clamp(round_half_even(x * inv), -128, 127);
               dequant = amax / 127.0f; a row whose amax is below 2^-100
               (zeros included) gives q = 0, dequant 0
  product      acc = sum_k W_q[n, k] * q[b, k] in int32
  output       y = float(acc) * (scale * dequant) + bias, in float32, in
               exactly that order

Every float step here is one IEEE-754 float32 operation (true division, not
a multiplication by a reciprocal), so the results equal the C++ ones exactly.
The integer product is done in float64, where every partial sum of at most
2^29 in magnitude is exact.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .reference import MIN_AMAX

# Added to the absmean scale before dividing (BitNet b1.58). Exported files
# store the scale itself; the runtime never sees eps.
WEIGHT_EPS = 1e-5


def absmean_scale(weight: torch.Tensor, per_row: bool) -> torch.Tensor:
    """The absmean scale of `weight` [N, K]: shape [N, 1] or [1, 1], float32."""
    a = weight.detach().to(torch.float32).abs()
    if per_row:
        return a.mean(dim=1, keepdim=True)
    return a.mean().reshape(1, 1)


def ternarize(weight: torch.Tensor, scale: torch.Tensor, eps: float = WEIGHT_EPS) -> torch.Tensor:
    """W_q = clamp(round(W / (scale + eps)), -1, 1), as float32 values."""
    return torch.clamp(torch.round(weight / (scale + eps)), -1.0, 1.0)


class QuantizedRows(NamedTuple):
    q: torch.Tensor  # float32 holding int8 values, [B, K]
    dequant: torch.Tensor  # float32 [B, 1]


def quantize_activations(x: torch.Tensor) -> QuantizedRows:
    """Per-row absmax int8 quantization of x [B, K], exactly as the runtime."""
    x = x.to(torch.float32)
    amax = x.abs().amax(dim=-1, keepdim=True)
    nonzero = amax >= MIN_AMAX
    safe = torch.where(nonzero, amax, torch.ones_like(amax))
    # Tensor / tensor: a true float32 division (scalar / tensor would be
    # computed as reciprocal * scalar, which rounds differently).
    inv = torch.full_like(safe, 127.0) / safe
    q = torch.clamp(torch.round(x * inv), -128.0, 127.0)
    q = torch.where(nonzero, q, torch.zeros_like(q))
    dequant = torch.where(nonzero, safe / torch.full_like(safe, 127.0), torch.zeros_like(safe))
    return QuantizedRows(q, dequant)


def ternary_accumulate(q: torch.Tensor, weight_q: torch.Tensor) -> torch.Tensor:
    """acc[b, n] = sum_k W_q[n, k] * q[b, k] as exact integers (int64)."""
    return torch.round(q.to(torch.float64) @ weight_q.to(torch.float64).t()).to(torch.int64)


def dequantize_rows(acc: torch.Tensor, scale: torch.Tensor, dequant: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """y = float(acc) * (scale * dequant) + bias, float32 step by step.

    `scale` is [1, 1] or [N, 1] (per row); `dequant` is [B, 1].
    """
    s = scale.reshape(1, -1).to(torch.float32) * dequant.to(torch.float32)  # [B, N] or [B, 1]
    y = acc.to(torch.int32).to(torch.float32) * s
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y
