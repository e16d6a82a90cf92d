#!/usr/bin/env python3
"""Float PyTorch baselines for docs/performance.md, "Convolutional models":
the same networks and layers as build/bench/runtime_invoke_bench (digits_cnn,
keywords) and build/bench/conv_bench (single convolutions), in float32
PyTorch (eval, no_grad, one thread, NCHW), timed per call.

    PYTHONPATH=python /usr/bin/python3 bench/torch_cnn_baseline.py [--seconds S]

digits_cnn: the network of models/digits_cnn.tern with its float weights
(ternary codes x scales, batch norm folded into the convolutions' biases),
i.e. what the model would cost in float on the same machine. keywords: the
same for models/keywords.tern, whose front end (AUDIO_FEATURES) is
ternd.nn.AudioFeatures (torch.fft, float32) on 1 s of audio. Prints the
median of 5 runs of S seconds each (default 0.5), in microseconds per call.
"""

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

from ternd import AudioFeatures, model_pb2, read_tern  # noqa: E402
from ternd.audio import AudioParams  # noqa: E402
from ternd.reference import value_dims, window  # noqa: E402


def float_cnn(path: str) -> nn.Sequential:
    """The graph of a shipped CNN (digits_cnn.tern, keywords.tern) as float
    PyTorch layers (NCHW / NCL): its ternary weights as float (codes x
    scales), its audio front end as ternd.nn.AudioFeatures."""
    tf = read_tern(path)
    dims = value_dims(tf)
    layers = []
    for op in tf.header.graph.ops:
        t = op.type
        if t == model_pb2.RESHAPE and not layers:
            layers.append(nn.Unflatten(1, (1, 8, 8)))  # digits_cnn's pixels
        elif t == model_pb2.AUDIO_FEATURES:
            gain = tf.tensor(op.weight) if op.weight else None
            bias = tf.tensor(op.bias) if op.bias else None
            layers.append(AudioFeatures(AudioParams.from_proto(op.audio), gain, bias))
        elif t == model_pb2.CONV1D:
            w = tf.tensor(op.weight)
            win = window(op, dims[op.inputs[0]])
            c_out = w.weights.shape[0]
            conv = nn.Conv1d(win.in_c, c_out, win.kw, win.sw, win.pw, bias=bool(op.bias))
            with torch.no_grad():
                wf = torch.from_numpy(w.dequantized()).reshape(c_out, win.kw, win.in_c)
                conv.weight.copy_(wf.permute(0, 2, 1))
                if op.bias:
                    conv.bias.copy_(torch.from_numpy(tf.tensor(op.bias)))
            layers.append(conv)
        elif t == model_pb2.GLOBAL_AVG_POOL:
            layers += [nn.AdaptiveAvgPool1d(1) if len(dims[op.inputs[0]]) == 2
                       else nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        elif t == model_pb2.CONV2D:
            w = tf.tensor(op.weight)
            win = window(op, dims[op.inputs[0]])
            c_out = w.weights.shape[0]
            conv = nn.Conv2d(win.in_c, c_out, (win.kh, win.kw), (win.sh, win.sw),
                             (win.ph, win.pw), bias=bool(op.bias))
            with torch.no_grad():
                wf = torch.from_numpy(w.dequantized()).reshape(c_out, win.kh, win.kw, win.in_c)
                conv.weight.copy_(wf.permute(0, 3, 1, 2))
                if op.bias:
                    conv.bias.copy_(torch.from_numpy(tf.tensor(op.bias)))
            layers.append(conv)
        elif t == model_pb2.RELU:
            layers.append(nn.ReLU())
        elif t == model_pb2.MAX_POOL:
            if len(op.kernel) == 1:
                layers.append(nn.MaxPool1d(op.kernel[0], op.stride[0]))
            else:
                layers.append(nn.MaxPool2d(list(op.kernel), list(op.stride)))
        elif t == model_pb2.TERNARY_LINEAR:
            w = tf.tensor(op.weight)
            lin = nn.Linear(w.weights.shape[1], w.weights.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.dequantized()))
                lin.bias.copy_(torch.from_numpy(tf.tensor(op.bias)))
            if not isinstance(layers[-1], nn.Flatten):
                layers.append(nn.Flatten())
            layers.append(lin)
        elif t == model_pb2.SOFTMAX:
            layers.append(nn.Softmax(dim=-1))
    return nn.Sequential(*layers).eval()


def time_call(fn, seconds: float) -> float:
    """Median over 5 runs of the mean time per call, in microseconds."""
    for _ in range(50):
        fn()
    runs = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(1)
    models = os.path.join(HERE, "..", "models")
    with torch.no_grad():
        for name, features, scale in (("digits_cnn", 64, 1.0), ("keywords", 16000, 8000.0)):
            model = float_cnn(os.path.join(models, f"{name}.tern")).eval()
            for batch in (1, 8):
                x = (torch.rand(batch, features) * 2 - 1) * scale
                us = time_call(lambda: model(x), args.seconds)
                print(f"torch_float/{name}/batch:{batch}  {us:8.2f} us per call")
        # conv_bench's shapes, one float convolution each (batch 1).
        shapes = [("digits_conv1/8x8x1->16", 2, 1, 8, 8, 16), ("digits_conv2/8x8x16->32", 2, 16, 8, 8, 32),
                  ("digits_conv3/4x4x32->64", 2, 32, 4, 4, 64), ("vision/32x32x32->64", 2, 32, 32, 32, 64),
                  ("audio1d/98x40->64", 1, 40, 1, 98, 64), ("audio1d/49x64->64", 1, 64, 1, 49, 64)]
        shapes = [s + (3,) for s in shapes] + [
            ("keywords_conv1/98x40->64/k5", 1, 40, 1, 98, 64, 5),
            ("keywords_conv2/49x64->64/k5", 1, 64, 1, 49, 64, 5),
            ("keywords_conv3/24x64->96/k3", 1, 64, 1, 24, 96, 3),
            ("keywords_conv4/12x96->128/k3", 1, 96, 1, 12, 128, 3)]
        for name, rank, c, h, w, c_out, k in shapes:
            if rank == 2:
                conv, x = nn.Conv2d(c, c_out, k, padding=k // 2), torch.randn(1, c, h, w)
                positions = h * w
            else:
                conv, x = nn.Conv1d(c, c_out, k, padding=k // 2), torch.randn(1, c, w)
                positions = w
            us = time_call(lambda: conv(x), args.seconds)
            flops = 2.0 * positions * c_out * c * k ** rank
            print(f"torch_float/conv/{name}  {us:8.2f} us per call  {flops / us * 1e-3:7.2f} GFLOPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
