#!/usr/bin/env python3
"""Trains the digits classifier and exports models/digits.tern.

    PYTHONPATH=python python3 models/train_digits.py [--out models/digits.tern]
        [--version N] [--epochs N] [--min-accuracy A]

Data: scikit-learn's bundled 8x8 digits (models/datasets.py), 80/20 split.
Model: 64 -> 256 -> 128 -> 10, ternary (BitLinear) layers with ReLU between;
outputs "probs" (softmax) and "class" (argmax). Reproducible: fixed seeds,
one thread; well under a minute on one core.
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
from ternd import BitLinear, export  # noqa: E402

SEED = 7


def build() -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        fc1=BitLinear(64, 256), relu1=nn.ReLU(),
        fc2=BitLinear(256, 128), relu2=nn.ReLU(),
        fc3=BitLinear(128, 10),
        probs=nn.Softmax(dim=-1),
    ))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(HERE, "digits.tern"))
    p.add_argument("--min-accuracy", type=float, default=0.95,
                   help="refuse to export below this held-out accuracy")
    p.add_argument("--version", type=int, default=1,
                   help="the model's version (devices install only a higher one than they run)")
    p.add_argument("--epochs", type=int, default=60)
    args = p.parse_args()

    training.make_deterministic(SEED)
    data = datasets.digits()
    model = build()
    acc = training.fit_and_check(model, data, epochs=args.epochs, lr=3e-3, batch=32,
                                 seed=SEED, min_accuracy=args.min_accuracy)
    if acc is None:
        return 1
    export(model, args.out, torch.from_numpy(data.x_test[:16]), name="digits",
           version=args.version,
           description="8x8 handwritten digit classifier (pixels 0..16, row by row)",
           input_name="pixels", output_name="probs", argmax_name="class", max_batch=64,
           metadata={"training": "models/train_digits.py", "dataset":
                     "sklearn load_digits, 20% stratified held-out split (models/datasets.py)",
                     "held_out_accuracy_pytorch": f"{acc:.4f}", "seed": str(SEED)})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
