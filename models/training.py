"""The training loop shared by the model scripts: deterministic (fixed seeds,
one thread, deterministic algorithms), Adam with a cosine learning rate."""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch
from torch import nn


def make_deterministic(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    # Float sums depend on how work is split over threads: one thread makes
    # the trained weights the same on every machine with the same libraries.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    model.train(was)
    return float(np.mean(pred == y))


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
        batch: int, seed: int, weight_decay: float = 0.0, log=print) -> None:
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loss_fn = nn.CrossEntropyLoss()
    start = time.monotonic()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            log(f"epoch {epoch + 1:3d}  loss {total / len(x):.4f}  "
                f"train acc {accuracy(model, x, y):.4f}  ({time.monotonic() - start:.0f} s)")


def fit_and_check(model: nn.Sequential, data, *, epochs: int, lr: float, batch: int,
                  seed: int, min_accuracy: float) -> float | None:
    """Trains `model` (whose last layer is the exported Softmax, so training
    runs on the logits before it), prints the held-out accuracy in eval mode
    (the runtime's arithmetic) and returns it, or None when it is below
    `min_accuracy`, in which case nothing should be exported."""
    fit(model[:-1], data.x_train, data.y_train, epochs=epochs, lr=lr, batch=batch,
        seed=seed)
    acc = accuracy(model, data.x_test, data.y_test)
    print(f"held-out accuracy (PyTorch, eval mode = runtime arithmetic): {acc:.4f} "
          f"({round(acc * len(data.y_test))}/{len(data.y_test)})")
    if acc < min_accuracy:
        print(f"accuracy below {min_accuracy}: not exporting", file=sys.stderr)
        return None
    return acc


def apply_in_batches(module: nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """module(x) in eval mode without gradients, `batch` rows at a time (a
    fixed front end computed once for a whole data set), as float32 NumPy."""
    module.eval()
    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(x[i:i + batch])).numpy()
                               for i in range(0, len(x), batch)]).astype(np.float32)
