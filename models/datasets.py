"""The data sets of the shipped models, shared by training, evaluation and
the cross-check tests, so that all of them see exactly the same split.

digits     scikit-learn's bundled 8x8 handwritten digits (1797 images, no
           download). Input: the 64 pixel intensities 0..16 as given, row by
           row. Held-out split: 20 %, stratified, random_state 20261123.

vibration  a synthetic machine-vibration data set made here (see
           `vibration()`): windows of 64 accelerometer samples at 1 kHz from
           a rotating machine in one of four states. Held-out split: 20 %.

keywords   1 s clips of 16 kHz audio (int16 values as float32): the ten spoken
           digits, "unknown" words and "silence", synthesised with espeak-ng
           by models/make_keywords_data.py into a cache directory
           ($TERND_KEYWORDS_DATA, default ~/.cache/ternd/keywords), split by
           voice: the test voices are never heard in training. `keywords()`
           holds train and test, `keywords_small()` only the small test set
           (a subset of the full one) that CI regenerates.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

import numpy as np

SPLIT_SEED = 20261123


class Split(NamedTuple):
    x_train: np.ndarray  # float32 [n, features]
    y_train: np.ndarray  # int64 [n]
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple


def digits() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y,
                                          random_state=SPLIT_SEED)
    return Split(xtr, ytr, xte, yte, tuple(str(i) for i in range(10)))


VIBRATION_CLASSES = ("normal", "imbalance", "misalignment", "bearing_fault")
VIBRATION_WINDOW = 64
VIBRATION_RATE_HZ = 1000.0


def vibration_windows(n: int, seed: int) -> tuple:
    """n windows of 64 samples (1 kHz) and their labels, deterministic in seed.

    Every window: shaft speed f0 uniform in 20..45 Hz, random phase, a 1x
    running component of amplitude 1 (+-20 %), a small 2x harmonic (0.1),
    white sensor noise (sigma 0.3) and a random DC offset (+-0.5). Then by
    class (equal shares):
      normal         nothing more
      imbalance      the 1x amplitude is 2.2 to 3.5 times larger
      misalignment   strong 2x (0.8..1.4) and 3x (0.3..0.6) harmonics
      bearing_fault  decaying 180..300 Hz bursts (amplitude 1.5..3) repeating
                     at 3.1..4.6 times the shaft speed
    Finally the window is scaled by a random sensor gain 0.5..2, so a model
    must look at shape, not level.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(VIBRATION_WINDOW) / VIBRATION_RATE_HZ
    x = np.zeros((n, VIBRATION_WINDOW), dtype=np.float64)
    y = np.arange(n) % len(VIBRATION_CLASSES)
    rng.shuffle(y)
    for i in range(n):
        f0 = rng.uniform(20.0, 45.0)
        ph = rng.uniform(0, 2 * np.pi, size=3)
        a1 = rng.uniform(0.8, 1.2)
        a2, a3 = 0.1, 0.0
        if y[i] == 1:
            a1 *= rng.uniform(2.2, 3.5)
        elif y[i] == 2:
            a2 = rng.uniform(0.8, 1.4)
            a3 = rng.uniform(0.3, 0.6)
        s = (a1 * np.sin(2 * np.pi * f0 * t + ph[0]) + a2 * np.sin(4 * np.pi * f0 * t + ph[1])
             + a3 * np.sin(6 * np.pi * f0 * t + ph[2]))
        if y[i] == 3:
            fr = rng.uniform(180.0, 300.0)
            period = 1.0 / (f0 * rng.uniform(3.1, 4.6))
            start = rng.uniform(0, period)
            amp = rng.uniform(1.5, 3.0)
            for t0 in np.arange(start, t[-1], period):
                dt = t - t0
                m = dt >= 0
                s[m] += amp * np.exp(-dt[m] * 150.0) * np.sin(2 * np.pi * fr * dt[m])
        s += rng.normal(0.0, 0.3, size=VIBRATION_WINDOW) + rng.uniform(-0.5, 0.5)
        x[i] = s * rng.uniform(0.5, 2.0)
    return x.astype(np.float32), y.astype(np.int64)


def vibration() -> Split:
    x, y = vibration_windows(5000, SPLIT_SEED)
    n_test = len(x) // 5
    return Split(x[n_test:], y[n_test:], x[:n_test], y[:n_test], VIBRATION_CLASSES)


def keywords_dir(directory=None) -> str:
    return directory or os.environ.get("TERND_KEYWORDS_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "ternd", "keywords")


def _keywords_split(directory, name: str, small: bool = False):
    import make_keywords_data as mk

    directory = keywords_dir(directory)
    got = mk.load(directory, name)
    if got is None:
        mk.generate(directory, (name.replace("-small", ""),), small=small,
                    log=lambda m: print(m, file=sys.stderr))
        got = mk.load(directory, name)
    return got[0].astype(np.float32), got[1]


def keywords(directory=None, validation: bool = False) -> Split:
    """Training voices against the unseen test voices (or, with
    `validation`, the validation voices: what training may look at)."""
    import make_keywords_data as mk

    xtr, ytr = _keywords_split(directory, "train")
    xte, yte = _keywords_split(directory, "val" if validation else "test")
    return Split(xtr, ytr, xte, yte, mk.CLASSES)


def keywords_small(directory=None) -> Split:
    import make_keywords_data as mk

    xte, yte = _keywords_split(directory, "test-small", small=True)
    return Split(xte[:0], yte[:0], xte, yte, mk.CLASSES)


DATASETS = {"digits": digits, "vibration": vibration, "keywords": keywords,
            "keywords_small": keywords_small}

# Shipped model files (in models/) trained on these data sets: file name ->
# (data set, name of the int32 class output).
SHIPPED = {
    "digits.tern": ("digits", "class"),
    "digits_cnn.tern": ("digits", "class"),
    "vibration.tern": ("vibration", "state"),
    "keywords.tern": ("keywords", "class"),
}
# The data set CI checks a shipped model on, where it is not the full one.
CI_DATASET = {"keywords.tern": "keywords_small"}
