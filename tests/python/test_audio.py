"""The audio front end op (AUDIO_FEATURES): the C++ runtime against the
NumPy/SciPy reference of its definition (ternd.audio, float64), within the
bound docs/model-format.md states ("Audio features"):

    |y_runtime - y_reference| <= 2e-4 + 1e-5 |y_reference|  (log-mel units)

for every frame and mel channel whose reference mel energy is at least
1e-6 of the frame's largest; quieter channels are in float32's FFT rounding
floor, and both stay below that cut. The runtime computes in float32 with Eigen's FFT;
the reference in float64 with numpy.fft and SciPy's periodic Hann window.
"""

import json
import subprocess

import numpy as np
import pytest

from ternd import model_pb2
from ternd.audio import AudioParams, log_mel, mel_filterbank
from ternd.tern_format import TernWriter, parse_tern

SAMPLES = 16000


def _model(p: AudioParams, gain=None, bias=None) -> bytes:
    h = model_pb2.ModelHeader(name="audio", version=1, architecture="graph")
    h.graph.max_batch = 8
    h.graph.inputs.add(name="pcm", dtype=model_pb2.F32, shape=[SAMPLES])
    op = h.graph.ops.add(type=model_pb2.AUDIO_FEATURES, inputs=["pcm"], output="mel")
    op.audio.sample_rate = p.sample_rate
    op.audio.frame_length = p.frame_length
    op.audio.frame_step = p.frame_step
    op.audio.fft_length = p.fft_length
    op.audio.mel_bins = p.mel_bins
    op.audio.lower_hz = p.lower_hz
    op.audio.upper_hz = p.upper_hz
    op.audio.log_offset = p.log_offset
    if gain is not None:
        op.weight = "mel.gain"
    if bias is not None:
        op.bias = "mel.bias"
    h.graph.outputs.add(name="mel", dtype=model_pb2.F32,
                        shape=[p.frames(SAMPLES), p.mel_bins])
    w = TernWriter(h)
    if gain is not None:
        w.add_f32("mel.gain", gain)
    if bias is not None:
        w.add_f32("mel.bias", bias)
    return w.finish()


def _signals() -> np.ndarray:
    """Speech-like test signals in int16 scale: tones with harmonics and a
    moving pitch, noise bursts, a click, silence, a clipped square wave."""
    rng = np.random.default_rng(21)
    t = np.arange(SAMPLES) / 16000.0
    f0 = 120 + 80 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000.0
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12)) * 8000
    noise = rng.normal(0, 3000, SAMPLES) * (np.sin(2 * np.pi * 3 * t) > 0)
    click = np.zeros(SAMPLES)
    click[8000] = 30000
    silence = np.zeros(SAMPLES)
    square = np.clip(np.sign(np.sin(2 * np.pi * 440 * t)) * 40000, -32768, 32767)
    quiet = rng.normal(0, 1.0, SAMPLES)  # near the log offset
    return np.stack([voiced + noise, noise, click, silence, square, quiet]).astype(np.float32)


def _runtime(trace_cmd, path, tmp_path, x) -> np.ndarray:
    rows = tmp_path / "pcm.f32"
    x.astype("<f4").tofile(rows)
    proc = subprocess.run([*trace_cmd, str(path), str(rows), "ref"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    bits = np.asarray(json.loads(proc.stdout)["values"]["mel"], dtype=np.uint32)
    return bits.view(np.float32).reshape(len(x), -1)


@pytest.mark.parametrize("params", [
    AudioParams(),  # 25 ms / 10 ms frames, 512-point FFT, 40 mels, 20 Hz..8 kHz
    AudioParams(frame_length=480, frame_step=320, fft_length=1024, mel_bins=64,
                lower_hz=60, upper_hz=7600, log_offset=1e-3),
])
def test_runtime_matches_the_numpy_scipy_reference(params, trace_cmd, tmp_path):
    path = tmp_path / "audio.tern"
    path.write_bytes(_model(params))
    x = _signals()
    got = _runtime(trace_cmd, path, tmp_path, x).reshape(len(x), -1, params.mel_bins)
    want = log_mel(x, params)
    assert got.shape == want.shape == (len(x), params.frames(SAMPLES), params.mel_bins)
    # Energies, to tell loud channels from those near the log offset.
    energy = np.exp(want) - params.log_offset
    loud = energy >= 1e-6 * energy.max(axis=2, keepdims=True)
    diff = np.abs(got - want)
    bound = 2e-4 + 1e-5 * np.abs(want)
    assert np.all(diff[loud] <= bound[loud]), f"max {diff[loud].max()} in loud channels"
    # Quieter channels sit in float32's FFT rounding floor (about 1e-7 of
    # the frame's peak amplitude): both stay below the loudness cut.
    cut = np.log(1e-6 * energy.max(axis=2, keepdims=True) + params.log_offset) + 0.01
    cut = np.broadcast_to(cut, got.shape)
    assert np.all(got[~loud] <= cut[~loud]) and np.all(want[~loud] <= cut[~loud])
    # Silence is exactly ln(log_offset); the signals are not all alike.
    assert np.all(got[3] == np.float32(np.log(np.float32(params.log_offset))))
    assert np.abs(got[0] - got[1]).max() > 1.0


def test_gain_and_bias_normalise_each_channel(trace_cmd, tmp_path):
    p = AudioParams()
    rng = np.random.default_rng(3)
    gain = rng.uniform(0.5, 1.5, p.mel_bins).astype(np.float32)
    bias = rng.uniform(-1, 1, p.mel_bins).astype(np.float32)
    path = tmp_path / "norm.tern"
    path.write_bytes(_model(p, gain, bias))
    x = _signals()[:2]
    got = _runtime(trace_cmd, path, tmp_path, x).reshape(2, -1, p.mel_bins)
    want = log_mel(x, p, gain, bias)
    energy = np.exp((want - bias) / gain) - p.log_offset
    loud = energy >= 1e-6 * energy.max(axis=2, keepdims=True)
    assert np.abs(got - want)[loud].max() <= 2e-4 * 1.5 + 1e-5 * np.abs(want).max()


def test_filterbank_is_triangular_on_the_mel_scale():
    p = AudioParams()
    fb = mel_filterbank(p)
    assert fb.shape == (40, 257)
    assert np.all(fb >= 0) and np.all(fb <= 1)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)  # centres rise with the filter index
    assert np.all(fb.sum(axis=1) > 0)  # no empty filter at these settings


def test_golden_pair_and_reader(ternctl_cmd, tmp_path):
    tf = parse_tern(_model(AudioParams()))
    assert tf.header.graph.ops[0].audio.mel_bins == 40
    data = bytearray(_model(AudioParams()))
    assert int.from_bytes(data[4:8], "little") == 3


def test_torch_front_end_matches_the_reference():
    import torch
    from ternd import AudioFeatures
    p = AudioParams()
    x = _signals()
    got = AudioFeatures(p)(torch.from_numpy(x)).transpose(1, 2).numpy()
    want = log_mel(x, p)
    energy = np.exp(want) - p.log_offset
    loud = energy >= 1e-6 * energy.max(axis=2, keepdims=True)
    assert np.abs(got - want)[loud].max() <= 2e-4 + 1e-5 * np.abs(want).max()


def test_audio_model_exports_and_runs_in_the_runtime(ternctl_cmd, trace_cmd, tmp_path):
    # 1 s of 16 kHz audio -> log-mel -> a small ternary 1-D CNN: the shape of
    # a keyword spotter, exported with its front end.
    import torch
    from torch import nn
    from ternd import AudioFeatures, BitConv1d, BitLinear, export
    from ternd.torch_import import to_torch
    torch.manual_seed(2)
    p = AudioParams()
    model = nn.Sequential(
        AudioFeatures(p, np.full(p.mel_bins, 0.25, np.float32), np.zeros(p.mel_bins, np.float32)),
        BitConv1d(p.mel_bins, 16, 3, stride=2, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
        nn.MaxPool1d(2), BitConv1d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), BitLinear(16, 12), nn.Softmax(dim=-1)).eval()
    x = torch.from_numpy(_signals()[:4] / 32768)
    path = tmp_path / "kws.tern"
    tf = parse_tern(export(model, path, x, name="kws", argmax_name="keyword", tolerance=1e-3))
    types = [model_pb2.OpType.Name(op.type) for op in tf.header.graph.ops]
    assert types[:2] == ["AUDIO_FEATURES", "CONV1D"]
    assert list(tf.header.graph.inputs[0].shape) == [SAMPLES]
    golden = subprocess.run([*ternctl_cmd, "run", str(path), "--golden"], capture_output=True,
                            text=True)
    assert golden.returncode == 0, golden.stderr
    rows = tmp_path / "rows.f32"
    x.numpy().astype("<f4").tofile(rows)
    proc = subprocess.run([*trace_cmd, str(path), str(rows)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    want = to_torch(tf)(x)
    probs = np.asarray(trace["values"]["output"], dtype=np.uint32).view(np.float32)
    assert np.allclose(probs.reshape(4, 12), want["output"].numpy(), atol=1e-4)
    assert np.array_equal(np.asarray(trace["values"]["keyword"]),
                          want["keyword"].numpy().reshape(-1))
