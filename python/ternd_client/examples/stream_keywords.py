#!/usr/bin/env python3
"""Keyword spotting on a stream of audio with ternd and models/keywords.tern.

    python3 stream_keywords.py FILE.wav [--socket PATH] [--hop 0.5]
        [--threshold 0.7] [--labels zero,one,...]

Reads a 16-bit PCM mono WAV as if it came from a microphone, cuts it into
windows of the model's input length (1 s for keywords.tern) every `--hop`
seconds, sends each window to the daemon as a NumPy int16 array and prints
every keyword detected, once per utterance:

    1.50 s  seven  0.98

A window "detects" a label other than "unknown" and "silence" when its
probability is at least `--threshold`; consecutive windows with the same
label are one utterance (the best window's time and confidence are
printed). The sample rate must be the one the model takes (ModelInfo says
it: `inputs[0].sample_rate`); this example does not resample. Needs numpy.
"""

import argparse
import sys
import wave

import numpy as np

from ternd_client import Client

KEYWORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "unknown", "silence")
NOT_KEYWORDS = ("unknown", "silence")


def read_wav(path: str) -> tuple:
    """(samples int16, sample rate) of a 16-bit mono PCM WAV."""
    with wave.open(path, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: {w.getnchannels()} channel(s) of {8 * w.getsampwidth()} "
                             "bits; expected 16-bit mono PCM")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


def detect(client: Client, samples: np.ndarray, rate: int, hop_s: float, threshold: float,
           labels) -> list:
    """[(time s, label, confidence)]: one entry per detected utterance."""
    info = client.model_info()
    spec = info.inputs[0]
    if spec.sample_rate != rate:
        raise SystemExit(f"the audio is {rate} Hz; model '{info.name}' takes "
                         f"{spec.sample_rate or 'no audio'} Hz")
    window, hop = spec.features, int(round(hop_s * rate))
    starts = list(range(0, max(len(samples) - window, 0) + 1, hop))
    if len(samples) < window:
        raise SystemExit(f"{len(samples)} samples: shorter than one window ({window})")
    probs = []
    for i in range(0, len(starts), info.max_batch):  # several windows per call
        batch = np.stack([samples[s:s + window] for s in starts[i:i + info.max_batch]])
        probs.append(client.infer({spec.name: batch}, outputs=["probs"])["probs"].numpy())
    probs = np.concatenate(probs)
    found, current = [], None
    for start, p in zip(starts, probs):
        k = int(np.argmax(p))
        label = labels[k] if k < len(labels) else str(k)
        hit = label not in NOT_KEYWORDS and p[k] >= threshold
        if not hit:
            current = None
            continue
        event = (start / rate, label, float(p[k]))
        if current is not None and found[current][1] == label:
            if event[2] > found[current][2]:
                found[current] = event
        else:
            found.append(event)
            current = len(found) - 1
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wav")
    p.add_argument("--socket", help="the daemon's socket (default: $TERND_SOCKET, then "
                                    "/run/ternd/ternd.sock)")
    p.add_argument("--hop", type=float, default=0.5, help="seconds between windows")
    p.add_argument("--threshold", type=float, default=0.7)
    p.add_argument("--labels", default=",".join(KEYWORDS),
                   help="the model's class names in order, comma-separated")
    args = p.parse_args()
    samples, rate = read_wav(args.wav)
    with Client(args.socket) as c:
        for t, label, conf in detect(c, samples, rate, args.hop, args.threshold,
                                     args.labels.split(",")):
            print(f"{t:.2f} s  {label}  {conf:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
