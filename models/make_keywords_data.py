#!/usr/bin/env python3
"""Generates the keyword-spotting data set of models/keywords.tern with
espeak-ng, deterministically, into a cache directory (not committed).

    python3 models/make_keywords_data.py DIR [--small] [--jobs N]

Writes DIR/keywords-{train,val,test}.npz (or DIR/keywords-test-small.npz
with --small): "x" int16 [n, 16000] (1 s of 16 kHz mono audio), "y" int64
class indices into CLASSES, "voice" the index into voices() of the speaker.
A file that exists with the same GENERATOR_VERSION is reused.

Classes: the ten digits "zero" .. "nine", "unknown" (other English words,
UNKNOWN_WORDS) and "silence" (noise or near silence, no speech).

Voices: a voice is one (language voice, variant) pair, `espeak-ng -v
BASE+VARIANT`: the BASE_VOICES English accents crossed with the VARIANTS
(espeak-ng's voice variants change the formants, pitch range and voice
quality). Split by voice, on the variant: the sorted VARIANTS are numbered
0, 1, 2, ...; variant i goes to the test split when i % 6 == 0, to the
validation split when i % 6 == 3, to training otherwise. So a test voice is
never heard in training, and neither is its variant with any other accent.

Each utterance: speaking rate (-s) uniform 120..220 words/min, pitch (-p)
20..80, rendered at espeak-ng's 22050 Hz and resampled to 16 kHz
(scipy.signal.resample_poly 320/441); leading and trailing silence trimmed;
peak level 0.05..0.8 of full scale (log-uniform); placed at a random offset
inside the 1 s window; white, pink or brown noise added at an SNR of 5..30 dB
over the speech, plus a noise floor. Silence clips: the same noise kinds at
an RMS of 1..500 (int16 units), without speech. Per voice: DIGIT_RENDITIONS
utterances of every digit, UNKNOWN_PER_VOICE unknown words, SILENCE_PER_VOICE
silence clips; training voices get TRAIN_COPIES placements (shift, noise) of
each rendering.

Every clip's random numbers come from its own generator, seeded with
SEED and a CRC of (voice, word, rendition, copy): the output does not depend
on the number of jobs or the order they finish in, and --small is a subset
of the full test split (the first SMALL_BASES accents of the test voices,
one rendition of each digit, one unknown word, one silence clip).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import zlib
from multiprocessing import Pool

import numpy as np
from scipy import signal

GENERATOR_VERSION = 1
SEED = 20261207
RATE = 16000
SAMPLES = RATE  # 1 s

CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
           "unknown", "silence")
UNKNOWN = CLASSES.index("unknown")
SILENCE = CLASSES.index("silence")
UNKNOWN_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
                 "house", "bird", "cat", "dog", "tree", "happy", "bed", "wow", "learn",
                 "follow", "forward", "backward", "visual", "green", "table", "water",
                 "morning", "hello", "robot", "light")

BASE_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
               "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
VARIANTS = tuple(sorted((
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Alex", "Andy", "Annie", "Denis", "Gene", "Hugo", "Jacky", "Lee", "Mike", "adam",
    "aunty", "belinda", "benjamin", "david", "edward", "grandma", "grandpa", "john",
    "linda", "max", "paul", "robert", "steph")))

DIGIT_RENDITIONS = 2
UNKNOWN_PER_VOICE = 5
SILENCE_PER_VOICE = 3
TRAIN_COPIES = 2
SMALL_BASES = 4


def split_of_variant(i: int) -> str:
    return "test" if i % 6 == 0 else "val" if i % 6 == 3 else "train"


def voices() -> list:
    """[(base, variant, split)] in a fixed order; the index is the voice id."""
    return [(b, v, split_of_variant(i)) for i, v in enumerate(VARIANTS) for b in BASE_VOICES]


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([SEED, zlib.crc32(repr(key).encode())])


def speak(voice: str, word: str, rate: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of `word`, float64 at 16 kHz, silence trimmed."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch),
                          "--stdout", word], capture_output=True, check=True).stdout
    # Written to a pipe, the WAV header's sizes are placeholders: read the
    # format from the header and take everything after the "data" tag.
    data = wav.find(b"data", 12)
    if wav[:4] != b"RIFF" or data < 0:
        raise RuntimeError(f"espeak-ng -v {voice} {word!r}: no WAV on stdout")
    sr = int.from_bytes(wav[24:28], "little")
    if sr != 22050:
        raise RuntimeError(f"espeak-ng -v {voice}: {sr} Hz, expected 22050")
    x = np.frombuffer(wav[data + 8:len(wav) - (len(wav) - data - 8) % 2], dtype="<i2")
    x = signal.resample_poly(x.astype(np.float64), 320, 441)
    loud = np.flatnonzero(np.abs(x) > 0.02 * np.abs(x).max())
    x = x[max(0, loud[0] - 160):loud[-1] + 160]
    if len(x) > SAMPLES:  # a slow, long word: keep its middle second
        start = (len(x) - SAMPLES) // 2
        x = x[start:start + SAMPLES]
    return x


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS white, pink or brown noise."""
    kind = rng.integers(3)
    w = rng.standard_normal(n)
    if kind > 0:
        f = np.fft.rfftfreq(n)
        f[0] = f[1]
        w = np.fft.irfft(np.fft.rfft(w) / f ** (0.5 * kind), n)
    return w / np.sqrt(np.mean(w * w))


def place(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    peak = 32767.0 * 10.0 ** rng.uniform(np.log10(0.05), np.log10(0.8))
    s = speech * (peak / np.abs(speech).max())
    clip = np.zeros(SAMPLES)
    offset = rng.integers(0, SAMPLES - len(s) + 1)
    clip[offset:offset + len(s)] = s
    rms = np.sqrt(np.mean(s * s))
    snr_db = rng.uniform(5.0, 30.0)
    clip += noise(rng, SAMPLES) * rms * 10.0 ** (-snr_db / 20.0)
    clip += rng.standard_normal(SAMPLES) * rng.uniform(0.5, 4.0)
    return clip


def silence(rng: np.random.Generator) -> np.ndarray:
    level = 10.0 ** rng.uniform(0.0, np.log10(500.0))
    return noise(rng, SAMPLES) * level


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def voice_clips(job) -> tuple:
    """All clips of one voice: (x int16 [n, 16000], y [n])."""
    vid, small = job
    base, variant, split = voices()[vid]
    voice = f"{base}+{variant}"
    copies = TRAIN_COPIES if split == "train" else 1
    renditions = 1 if small else DIGIT_RENDITIONS
    xs, ys = [], []

    def utter(word, label, rendition):
        r = _rng(vid, word, rendition)
        speech = speak(voice, word, int(r.integers(120, 221)), int(r.integers(20, 81)))
        for c in range(copies):
            xs.append(to_int16(place(speech, _rng(vid, word, rendition, c))))
            ys.append(label)

    for d in range(10):
        for k in range(renditions):
            utter(CLASSES[d], d, k)
    words = _rng(vid, "unknown").choice(len(UNKNOWN_WORDS), UNKNOWN_PER_VOICE, replace=False)
    for k, w in enumerate(words[:1] if small else words):
        utter(UNKNOWN_WORDS[w], UNKNOWN, k)
    for k in range(1 if small else SILENCE_PER_VOICE):
        for c in range(copies):
            xs.append(to_int16(silence(_rng(vid, "silence", k, c))))
            ys.append(SILENCE)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def path_of(directory: str, split: str) -> str:
    return os.path.join(directory, f"keywords-{split}.npz")


def load(directory: str, split: str):
    """(x, y, voice) of a generated split, or None if it is missing or stale."""
    path = path_of(directory, split)
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        if int(f["version"]) != GENERATOR_VERSION:
            return None
        return f["x"], f["y"], f["voice"]


def generate(directory: str, splits=("train", "val", "test"), small: bool = False,
             jobs: int = 2, log=print) -> None:
    os.makedirs(directory, exist_ok=True)
    vs = voices()
    for split in splits:
        name = "test-small" if small else split
        if load(directory, name) is not None:
            log(f"{path_of(directory, name)}: up to date")
            continue
        ids = [i for i, (b, _, s) in enumerate(vs) if s == split
               and (not small or BASE_VOICES.index(b) < SMALL_BASES)]
        with Pool(jobs) as pool:
            parts = pool.map(voice_clips, [(i, small) for i in ids], chunksize=1)
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        voice = np.concatenate([np.full(len(p[1]), i) for i, p in zip(ids, parts)])
        tmp = path_of(directory, name) + ".tmp.npz"
        np.savez(tmp, x=x, y=y, voice=voice, version=GENERATOR_VERSION)
        os.replace(tmp, path_of(directory, name))
        log(f"{path_of(directory, name)}: {len(y)} clips from {len(ids)} voices")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", help="cache directory for the generated .npz files")
    p.add_argument("--small", action="store_true",
                   help="only a small test split (a subset of the full one), for CI")
    p.add_argument("--jobs", type=int, default=2, help="parallel espeak-ng workers")
    args = p.parse_args()
    if small := args.small:
        generate(args.dir, ("test",), small=small, jobs=args.jobs)
    else:
        generate(args.dir, jobs=args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
