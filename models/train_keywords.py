#!/usr/bin/env python3
"""Trains the keyword spotter and exports models/keywords.tern.

    PYTHONPATH=python python3 models/train_keywords.py [--data DIR] [--out models/keywords.tern]
        [--version N] [--epochs N] [--min-accuracy A]

Data: models/make_keywords_data.py's espeak-ng clips (generated into DIR,
default $TERND_KEYWORDS_DATA or ~/.cache/ternd/keywords, if not there yet),
twelve classes: "zero" .. "nine", "unknown", "silence". Training uses the
training voices only; export is gated on the validation voices; the test
voices (never heard in training) give the accuracy reported.
Input "audio": 16000 samples, 1 s of 16 kHz mono audio as int16 values
(-32768..32767) in float32.
Model: AUDIO_FEATURES (40 log-mel channels, 25 ms frames every 10 ms: 98
frames; each channel normalised by the training set's mean and standard
deviation, folded into the op's gain and bias); four ternary 1-D
convolutions over time (BitConv1d, 64, 64, 96, 128 channels, kernels 5, 5,
3, 3, same padding), each with batch norm (folded at export) and ReLU, max
pooling by 2 after the first three; global average pooling over time; a
ternary linear layer to the 12 classes. Outputs "probs" (softmax) and
"class" (argmax). Quantization-aware (BitConv1d/BitLinear train through
their ternary weights and int8 activations), fixed seeds, one thread. The
front end is computed once per clip (it has no trained parameters), the
rest trains on the log-mel features.
"""

import argparse
import os
import sys
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import datasets  # noqa: E402
import training  # noqa: E402
from ternd import AudioFeatures, BitConv1d, BitLinear, export  # noqa: E402
from ternd.audio import AudioParams  # noqa: E402

SEED = 21
PARAMS = AudioParams()  # 16 kHz, 25 ms / 10 ms frames, 512-point FFT, 40 mel bins


def build_body(classes: int) -> nn.Sequential:
    def block(i, cin, cout, k):
        return [(f"conv{i}", BitConv1d(cin, cout, k, padding=k // 2, bias=False)),
                (f"bn{i}", nn.BatchNorm1d(cout)), (f"relu{i}", nn.ReLU())]

    layers = block(1, PARAMS.mel_bins, 64, 5) + [("pool1", nn.MaxPool1d(2))]
    layers += block(2, 64, 64, 5) + [("pool2", nn.MaxPool1d(2))]
    layers += block(3, 64, 96, 3) + [("pool3", nn.MaxPool1d(2))]
    layers += block(4, 96, 128, 3)
    layers += [("gap", nn.AdaptiveAvgPool1d(1)), ("flat", nn.Flatten()),
               ("fc", BitLinear(128, classes)), ("probs", nn.Softmax(dim=-1))]
    return nn.Sequential(OrderedDict(layers))


def front_end(x_train: np.ndarray) -> AudioFeatures:
    """AUDIO_FEATURES with each mel channel scaled to zero mean, unit
    variance over the training clips."""
    raw = training.apply_in_batches(AudioFeatures(PARAMS), x_train)  # [n, mel, frames]
    mean = raw.mean(axis=(0, 2))
    std = raw.std(axis=(0, 2))
    return AudioFeatures(PARAMS, gain=1.0 / std, bias=-mean / std)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="data set cache directory (make_keywords_data.py)")
    p.add_argument("--out", default=os.path.join(HERE, "keywords.tern"))
    p.add_argument("--min-accuracy", type=float, default=0.9,
                   help="refuse to export below this accuracy on the validation voices")
    p.add_argument("--version", type=int, default=1,
                   help="the model's version (devices install only a higher one than they run)")
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()

    training.make_deterministic(SEED)
    data = datasets.keywords(args.data, validation=True)
    test = datasets.keywords(args.data)
    fe = front_end(data.x_train)
    feats = [training.apply_in_batches(fe, x) for x in (data.x_train, data.x_test, test.x_test)]
    body = build_body(len(data.classes))
    val = datasets.Split(feats[0], data.y_train, feats[1], data.y_test, data.classes)
    print(f"{len(data.y_train)} training clips, {len(data.y_test)} validation clips, "
          f"{len(test.y_test)} test clips (unseen voices)")
    acc = training.fit_and_check(body, val, epochs=args.epochs, lr=3e-3, batch=64,
                                 seed=SEED, min_accuracy=args.min_accuracy)
    if acc is None:
        return 1
    test_acc = training.accuracy(body, feats[2], test.y_test)
    print(f"test accuracy, unseen voices (PyTorch): {test_acc:.4f}")
    model = nn.Sequential(OrderedDict([("features", fe), *body.named_children()]))
    # One clip as the golden pair: 64 kB of samples, most of the file.
    export(model, args.out, torch.from_numpy(test.x_test[:1]), name="keywords",
           version=args.version,
           description="keyword spotter: the spoken digits zero..nine, unknown, silence "
                       "(1 s of 16 kHz mono audio, int16 values)",
           input_name="audio", output_name="probs", argmax_name="class", max_batch=16,
           metadata={"training": "models/train_keywords.py",
                     "dataset": "espeak-ng synthetic speech, split by voice "
                                "(models/make_keywords_data.py)",
                     "classes": ",".join(data.classes),
                     "validation_accuracy_pytorch": f"{acc:.4f}",
                     "test_accuracy_pytorch": f"{test_acc:.4f}", "seed": str(SEED)})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
