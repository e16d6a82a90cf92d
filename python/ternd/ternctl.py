"""Running models in the C++ runtime through the `ternctl run` command.

Used by tests and tools to compare the runtime with PyTorch; the binary is
found from the TERND_TERNCTL environment variable, then PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Dict, List, Optional, Sequence, Union

import numpy as np


def find_ternctl(explicit: Optional[str] = None) -> str:
    """Path of the ternctl binary: `explicit`, $TERND_TERNCTL, or PATH."""
    for candidate in (explicit, os.environ.get("TERND_TERNCTL"), shutil.which("ternctl")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("ternctl not found: build it (ninja -C build ternctl) and pass "
                            "--ternctl PATH or set TERND_TERNCTL")


def _command(ternctl: Union[None, str, Sequence[str]]) -> List[str]:
    if ternctl is not None and not isinstance(ternctl, str):
        return list(ternctl)  # a full command prefix, e.g. an emulator + binary
    return [find_ternctl(ternctl)]


def format_rows(rows: np.ndarray) -> str:
    """One line per row; 9 significant digits give back the same float32."""
    rows = np.asarray(rows, dtype=np.float32).reshape(rows.shape[0], -1)
    return "".join(" ".join(f"{v:.9g}" for v in row.tolist()) + "\n" for row in rows)


def run(model_path: str, rows: np.ndarray, ternctl: Union[None, str, Sequence[str]] = None,
        max_batch: int = 64, kernel: str = "auto") -> Dict[str, np.ndarray]:
    """Runs `rows` [batch, features] through `ternctl run --json` in chunks of
    `max_batch` and returns every output, rows concatenated: I32 outputs as
    int32 arrays, F32 outputs as float32 (printed with 6 digits by ternctl).
    `ternctl` is the binary's path, or a command list (emulator + binary)."""
    cmd = _command(ternctl)
    rows = np.asarray(rows, dtype=np.float32)
    outputs: Dict[str, list] = {}
    for start in range(0, rows.shape[0], max_batch):
        chunk = rows[start:start + max_batch]
        proc = subprocess.run([*cmd, "run", model_path, "--json", "--kernel", kernel, "-i", "-"],
                              input=format_rows(chunk), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"ternctl run {model_path} failed: {proc.stderr.strip()}")
        for name, values in json.loads(proc.stdout)["outputs"].items():
            outputs.setdefault(name, []).extend(values)
    result = {}
    for name, values in outputs.items():
        a = np.asarray(values)
        result[name] = a.astype(np.int32) if a.dtype.kind == "i" else a.astype(np.float32)
    return result
