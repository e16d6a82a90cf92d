"""The audio front end (AUDIO_FEATURES) in NumPy/SciPy, from its definition
in docs/model-format.md ("Audio features"), in float64.

The C++ op computes the same steps in float32 with Eigen's FFT; tests
compare the two within the bound stated there. Use `log_mel` to compute a
model's features for training exactly as the runtime will see them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import signal


@dataclass
class AudioParams:
    sample_rate: int = 16000
    frame_length: int = 400  # 25 ms
    frame_step: int = 160  # 10 ms
    fft_length: int = 512
    mel_bins: int = 40
    lower_hz: float = 20.0
    upper_hz: float = 8000.0
    log_offset: float = 1e-6

    @classmethod
    def from_proto(cls, a) -> "AudioParams":
        return cls(a.sample_rate, a.frame_length, a.frame_step, a.fft_length, a.mel_bins,
                   a.lower_hz, a.upper_hz, a.log_offset)

    def frames(self, samples: int) -> int:
        return 1 + (samples - self.frame_length) // self.frame_step


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(p: AudioParams) -> np.ndarray:
    """[mel_bins, fft_length / 2 + 1] triangular weights (HTK mel scale)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(p.lower_hz), hz_to_mel(p.upper_hz), p.mel_bins + 2))
    f = np.arange(p.fft_length // 2 + 1) * p.sample_rate / p.fft_length
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (f[None, :] - left) / (center - left)
    down = (right - f[None, :]) / (right - center)
    return np.maximum(0.0, np.minimum(up, down))


def log_mel(x: np.ndarray, p: AudioParams, gain: Optional[np.ndarray] = None,
            bias: Optional[np.ndarray] = None) -> np.ndarray:
    """x [B, samples] -> [B, frames, mel_bins], float64."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    n = p.frames(x.shape[1])
    idx = np.arange(n)[:, None] * p.frame_step + np.arange(p.frame_length)[None, :]
    window = signal.get_window("hann", p.frame_length, fftbins=True)  # periodic
    spec = np.fft.rfft(x[:, idx] * window, n=p.fft_length, axis=-1)
    power = spec.real ** 2 + spec.imag ** 2
    y = np.log(power @ mel_filterbank(p).T + p.log_offset)
    if gain is not None:
        y = y * gain
    if bias is not None:
        y = y + bias
    return y
