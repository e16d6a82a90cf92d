"""Shared fixtures of the Python tests: paths, and the commands that run the
ternctl and tern_trace binaries (TERND_TERNCTL / TERND_TRACE, set by CTest;
TERND_EXEC_PREFIX, e.g. "qemu-aarch64 -L /", runs
binaries of a cross build)."""

import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = os.path.join(ROOT, "models")
for p in (os.path.join(ROOT, "python"), MODELS):
    if p not in sys.path:
        sys.path.insert(0, p)


def _command(var: str, what: str) -> list:
    path = os.environ.get(var)
    if not path:
        pytest.skip(f"{var} is not set (CTest sets it to the built {what})")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{var}={path} is not an executable {what}")
    return os.environ.get("TERND_EXEC_PREFIX", "").split() + [path]


@pytest.fixture(scope="session")
def ternctl_cmd() -> list:
    return _command("TERND_TERNCTL", "ternctl")


@pytest.fixture(scope="session")
def trace_cmd() -> list:
    return _command("TERND_TRACE", "tern_trace helper")
