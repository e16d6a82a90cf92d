#!/usr/bin/env python3
"""Float PyTorch baselines for docs/performance.md, "Convolutional models":
the same networks and layers as build/bench/runtime_invoke_bench (digits_cnn)
and build/bench/conv_bench (single convolutions), in float32 PyTorch (eval,
no_grad, one thread, NCHW), timed per call.

    PYTHONPATH=python /usr/bin/python3 bench/torch_cnn_baseline.py [--seconds S]

digits_cnn: the network of models/digits_cnn.tern with its float weights
(ternary codes x scales, batch norm folded into the convolutions' biases),
i.e. what the model would cost in float on the same machine. Prints the
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

from ternd import model_pb2, read_tern  # noqa: E402
from ternd.reference import value_dims, window  # noqa: E402


def float_digits_cnn(path: str) -> nn.Sequential:
    """The graph of digits_cnn.tern as float PyTorch layers (NCHW)."""
    tf = read_tern(path)
    dims = value_dims(tf)
    layers = [nn.Unflatten(1, (1, 8, 8))]
    for op in tf.header.graph.ops:
        t = op.type
        if t == model_pb2.CONV2D:
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
            layers.append(nn.MaxPool2d(list(op.kernel), list(op.stride)))
        elif t == model_pb2.TERNARY_LINEAR:
            w = tf.tensor(op.weight)
            lin = nn.Linear(w.weights.shape[1], w.weights.shape[0])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.dequantized()))
                lin.bias.copy_(torch.from_numpy(tf.tensor(op.bias)))
            layers += [nn.Flatten(), lin]
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
    model = float_digits_cnn(os.path.join(HERE, "..", "models", "digits_cnn.tern"))
    with torch.no_grad():
        for batch in (1, 8):
            x = torch.rand(batch, 64) * 2 - 1
            us = time_call(lambda: model(x), args.seconds)
            print(f"torch_float/digits_cnn/batch:{batch}  {us:8.2f} us per call")
        # conv_bench's shapes, one float convolution each (batch 1).
        shapes = [("digits_conv1/8x8x1->16", 2, 1, 8, 8, 16), ("digits_conv2/8x8x16->32", 2, 16, 8, 8, 32),
                  ("digits_conv3/4x4x32->64", 2, 32, 4, 4, 64), ("vision/32x32x32->64", 2, 32, 32, 32, 64),
                  ("audio1d/98x40->64", 1, 40, 1, 98, 64), ("audio1d/49x64->64", 1, 64, 1, 49, 64)]
        for name, rank, c, h, w, c_out in shapes:
            if rank == 2:
                conv, x = nn.Conv2d(c, c_out, 3, padding=1), torch.randn(1, c, h, w)
                positions = h * w
            else:
                conv, x = nn.Conv1d(c, c_out, 3, padding=1), torch.randn(1, c, w)
                positions = w
            us = time_call(lambda: conv(x), args.seconds)
            flops = 2.0 * positions * c_out * c * 3 ** rank
            print(f"torch_float/conv/{name}  {us:8.2f} us per call  {flops / us * 1e-3:7.2f} GFLOPS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
