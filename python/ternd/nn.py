"""PyTorch modules for models that ternd runs.

`BitLinear` is a drop-in for `torch.nn.Linear` with BitNet b1.58
quantization-aware training. In training mode it quantizes weights to
{-1, 0, +1} * absmean and activations to int8 per row, and lets gradients
through both roundings unchanged (straight-through estimator), so the float
"shadow" weights learn what survives ternarization. In eval mode its forward
is the runtime's integer arithmetic, bit for bit (see ternd.quant).

`BitConv2d` and `BitConv1d` are the same for `torch.nn.Conv2d`/`Conv1d`:
ternary weights (absmean, per tensor or per output channel) and int8
activations with one absmax per sample (all channels and positions of it,
docs/model-format.md "Numerics of convolutions"); eval mode is the
runtime's integer arithmetic, bit for bit.

`RMSNorm`, `ReLU2`, `Residual` and `Concat` are the runtime ops that torch
1.13 has no module for. Everything else the exporter accepts is a stock
torch module.
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



class ConvIntegerForward(NamedTuple):
    """What a BitConv computes in eval mode, step by step (torch layout)."""

    q: torch.Tensor  # int8 activation codes as float32, [B, C, ...]
    dequant: torch.Tensor  # [B] one factor per sample
    acc: torch.Tensor  # int64 accumulators, [B, C_out, ...] (fit int32)
    y: torch.Tensor  # float32 output, [B, C_out, ...]


class _BitConvMixin:
    """Quantization-aware training and the runtime's integer forward for
    nn.Conv1d / nn.Conv2d subclasses (groups = 1, zero padding)."""

    per_row_scale: bool

    def _check_supported(self):
        if self.groups != 1:
            raise ValueError(f"{type(self).__name__}: groups must be 1 (depthwise convolutions "
                             "are float: torch.nn.Conv2d with groups = channels)")
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(f"{type(self).__name__}: padding must be numbers with "
                             "padding_mode='zeros'")

    def _conv(self, x, w, bias):
        return self._conv_forward(x, w, bias)

    def _flat_weight(self) -> torch.Tensor:
        return self.weight.reshape(self.out_channels, -1)

    def quantized_weight(self):
        """(W_q [C_out, C_in, *kernel] in {-1, 0, 1}, scale [C_out, 1] or
        [1, 1]): what export writes and what the eval forward uses."""
        if getattr(self, "frozen_weight", None) is not None:
            return self.frozen_weight, self.frozen_scale
        w = self.weight.detach().to(torch.float32)
        flat = w.reshape(self.out_channels, -1)
        scale = quant.absmean_scale(flat, self.per_row_scale)
        return quant.ternarize(flat, scale).reshape(w.shape), scale

    @staticmethod
    def _quantize_samples(x: torch.Tensor) -> quant.QuantizedRows:
        b = x.shape[0]
        qr = quant.quantize_activations(x.reshape(b, -1))
        return quant.QuantizedRows(qr.q.reshape(x.shape), qr.dequant.reshape(b))

    def integer_forward(self, x: torch.Tensor) -> ConvIntegerForward:
        """The runtime's CONV2D / CONV1D on x [B, C, ...], exactly."""
        with torch.no_grad():
            wq, scale = self.quantized_weight()
            qr = self._quantize_samples(x.to(torch.float32))
            # Integer codes in float64: every partial sum (<= 2^29) is exact.
            acc = torch.round(self._conv_forward(qr.q.to(torch.float64), wq.to(torch.float64),
                                                 None)).to(torch.int64)
            spatial = (1,) * (acc.dim() - 2)
            s = (scale.reshape(1, -1, *spatial).to(torch.float32)
                 * qr.dequant.reshape(-1, 1, *spatial).to(torch.float32))
            y = acc.to(torch.int32).to(torch.float32) * s
            if self.bias is not None:
                y = y + self.bias.detach().to(torch.float32).reshape(1, -1, *spatial)
        return ConvIntegerForward(qr.q, qr.dequant, acc, y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.integer_forward(x).y
        if getattr(self, "frozen_weight", None) is not None:
            raise RuntimeError(f"a {type(self).__name__} made by from_ternary() is frozen: "
                               "eval mode only")
        w = self.weight
        flat = w.reshape(self.out_channels, -1)
        scale = quant.absmean_scale(flat, self.per_row_scale)
        w_q = (quant.ternarize(flat.detach(), scale) * scale).reshape(w.shape)
        w_ste = w + (w_q - w).detach()
        qr = self._quantize_samples(x.detach())
        xq = qr.q * qr.dequant.reshape(-1, *(1,) * (x.dim() - 1))
        x_ste = x + (xq - x).detach()
        return self._conv_forward(x_ste, w_ste, self.bias)

    @classmethod
    def from_ternary(cls, weights, scales, bias=None, **conv_args):
        """A frozen layer with codes [C_out, C_in, *kernel] in {-1, 0, 1} and
        scales (1 or C_out), as read from a .tern file; eval only."""
        w = torch.as_tensor(weights, dtype=torch.float32)
        s = torch.as_tensor(scales, dtype=torch.float32).reshape(-1, 1)
        layer = cls(w.shape[1], w.shape[0], tuple(w.shape[2:]), bias=bias is not None,
                    per_row_scale=s.shape[0] > 1, **conv_args)
        with torch.no_grad():
            layer.weight.copy_(w * s.reshape(-1, *(1,) * (w.dim() - 1)))
            if bias is not None:
                layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        layer.register_buffer("frozen_weight", w.clone())
        layer.register_buffer("frozen_scale", s if s.shape[0] > 1 else s.reshape(1, 1))
        return layer.eval()


class BitConv2d(_BitConvMixin, nn.Conv2d):
    """2-D convolution with ternary weights and int8 activations.

    Args: those of torch.nn.Conv2d (groups = 1, zero padding given as
    numbers), plus per_row_scale: one absmean scale per output channel.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, per_row_scale: bool = False, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, bias=bias, **kwargs)
        self.per_row_scale = per_row_scale
        self._check_supported()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", per_row_scale={self.per_row_scale}"


class BitConv1d(_BitConvMixin, nn.Conv1d):
    """1-D convolution with ternary weights and int8 activations (as
    BitConv2d, for signals [B, C, L])."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, per_row_scale: bool = False, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=padding, dilation=dilation, bias=bias, **kwargs)
        self.per_row_scale = per_row_scale
        self._check_supported()

    def extra_repr(self) -> str:
        return super().extra_repr() + f", per_row_scale={self.per_row_scale}"


class Concat(nn.Module):
    """y = cat([branch(x) for branch in branches], dim=1): the branches'
    channels (or features) one after another; exports as their ops then one
    CONCAT."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        if len(branches) < 2:
            raise ValueError("Concat needs at least two branches")
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class AudioFeatures(nn.Module):
    """The runtime's audio front end (AUDIO_FEATURES) as the first layer of
    a model: x [B, samples] -> log-mel [B, mel_bins, frames] (channels first,
    as nn.Conv1d / BitConv1d read it; the runtime holds it channels last).

    Computed in float32 with torch.fft from the definition in
    docs/model-format.md ("Audio features"); `params` is a
    ternd.audio.AudioParams. `gain` and `bias` (mel_bins values, optional)
    normalise each channel: y * gain + bias. No parameters are trained.
    """

    def __init__(self, params, gain=None, bias=None):
        super().__init__()
        from . import audio
        self.params = params
        p = params
        n = torch.arange(p.frame_length, dtype=torch.float64)
        self.register_buffer("window", (0.5 - 0.5 * torch.cos(2 * torch.pi * n / p.frame_length))
                             .to(torch.float32))
        self.register_buffer("filters", torch.as_tensor(audio.mel_filterbank(p),
                                                        dtype=torch.float32))
        self.register_buffer("gain", None if gain is None else
                             torch.as_tensor(gain, dtype=torch.float32))
        self.register_buffer("bias", None if bias is None else
                             torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        frames = x.to(torch.float32).unfold(1, p.frame_length, p.frame_step) * self.window
        spec = torch.fft.rfft(frames, n=p.fft_length, dim=-1)
        power = spec.real * spec.real + spec.imag * spec.imag
        y = torch.log(power @ self.filters.t() + p.log_offset)  # [B, frames, mel]
        if self.gain is not None:
            y = y * self.gain
        if self.bias is not None:
            y = y + self.bias
        return y.transpose(1, 2)
