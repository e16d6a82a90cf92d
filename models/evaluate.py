#!/usr/bin/env python3
"""Prints the C++ runtime's accuracy on the held-out split of each shipped
model, running the test samples through `ternctl run`.

    python3 models/evaluate.py --ternctl build/tools/ternctl/ternctl [--small] [MODEL.tern ...]

With no MODEL, every model of models/datasets.py SHIPPED. keywords.tern is
evaluated on the unseen-voice test split of its generated data set
(models/make_keywords_data.py; generated into $TERND_KEYWORDS_DATA, default
~/.cache/ternd/keywords, the first time: about a minute), or with --small on
the small test set CI uses (a few seconds). Exits 1 if a model cannot be run.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import numpy as np  # noqa: E402

import datasets  # noqa: E402
from ternd import read_tern, ternctl  # noqa: E402


def evaluate(path: str, exe: str, small: bool = False) -> float:
    base = os.path.basename(path)
    if base not in datasets.SHIPPED:
        raise SystemExit(f"{path}: no data set known for it (models/datasets.py SHIPPED)")
    dataset, class_output = datasets.SHIPPED[base]
    if small:
        dataset = datasets.CI_DATASET.get(base, dataset)
    split = datasets.DATASETS[dataset]()
    header = read_tern(path).header
    out = ternctl.run(path, split.x_test, ternctl=exe, max_batch=header.graph.max_batch)
    pred = out[class_output][:, 0]
    correct = int(np.sum(pred == split.y_test))
    acc = correct / len(split.y_test)
    print(f"{header.name} v{header.version}: C++ runtime accuracy {acc * 100:.2f}% "
          f"({correct}/{len(split.y_test)}) on the held-out split of '{dataset}'")
    return acc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*")
    p.add_argument("--ternctl", help="ternctl binary (default: $TERND_TERNCTL, then PATH)")
    p.add_argument("--small", action="store_true",
                   help="keywords.tern on the small test set (datasets.CI_DATASET)")
    args = p.parse_args()
    exe = ternctl.find_ternctl(args.ternctl)
    paths = args.models or [os.path.join(HERE, m) for m in datasets.SHIPPED]
    for path in paths:
        evaluate(path, exe, args.small)
    return 0


if __name__ == "__main__":
    sys.exit(main())
