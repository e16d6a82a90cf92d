#!/usr/bin/env python3
"""Trains the convolutional digits classifier and exports models/digits_cnn.tern.

    PYTHONPATH=python python3 models/train_digits_cnn.py [--out models/digits_cnn.tern]
        [--version N] [--epochs N] [--min-accuracy A]

Data: scikit-learn's bundled 8x8 digits (models/datasets.py), the same 80/20
split as models/digits.tern, so the two are compared on the same 360 images.
Input "pixels": the 64 intensities 0..16, row by row, as for digits.tern.
Model: unflatten to [1, 8, 8]; three ternary 3x3 convolutions (BitConv2d,
16, 32, 64 channels, same padding) each followed by batch norm (folded into
the convolution at export: per-output-channel scales) and ReLU, 2x2 max
pooling after the second and third; flatten; a ternary linear layer to the
10 classes. Outputs "probs" (softmax) and "class" (argmax). Reproducible:
fixed seeds, one thread; well under a minute on one core.
"""

import argparse
import os
import sys
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import datasets  # noqa: E402
import training  # noqa: E402
from ternd import BitConv2d, BitLinear, export  # noqa: E402

SEED = 11


def build() -> nn.Sequential:
    def block(cin, cout):
        return [BitConv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    layers = [("image", nn.Unflatten(1, (1, 8, 8)))]
    names = ("conv1", "bn1", "relu1", "conv2", "bn2", "relu2")
    layers += zip(names, block(1, 16) + block(16, 32))
    layers += [("pool2", nn.MaxPool2d(2))]
    layers += zip(("conv3", "bn3", "relu3"), block(32, 64))
    layers += [("pool3", nn.MaxPool2d(2)), ("flat", nn.Flatten()),
               ("fc", BitLinear(64 * 2 * 2, 10)), ("probs", nn.Softmax(dim=-1))]
    return nn.Sequential(OrderedDict(layers))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(HERE, "digits_cnn.tern"))
    p.add_argument("--min-accuracy", type=float, default=0.9778,
                   help="refuse to export below this held-out accuracy (the MLP's)")
    p.add_argument("--version", type=int, default=1,
                   help="the model's version (devices install only a higher one than they run)")
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()

    training.make_deterministic(SEED)
    data = datasets.digits()
    model = build()
    acc = training.fit_and_check(model, data, epochs=args.epochs, lr=3e-3, batch=32,
                                 seed=SEED, min_accuracy=args.min_accuracy)
    if acc is None:
        return 1
    export(model, args.out, torch.from_numpy(data.x_test[:16]), name="digits_cnn",
           version=args.version,
           description="8x8 handwritten digit classifier, ternary CNN (pixels 0..16, row by row)",
           input_name="pixels", output_name="probs", argmax_name="class", max_batch=64,
           metadata={"training": "models/train_digits_cnn.py", "dataset":
                     "sklearn load_digits, 20% stratified held-out split (models/datasets.py)",
                     "held_out_accuracy_pytorch": f"{acc:.4f}", "seed": str(SEED)})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
