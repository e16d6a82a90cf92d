"""The in-tree build backend makes an installable wheel of the whole package."""

import base64
import hashlib
import importlib.util
import os
import zipfile

from conftest import ROOT


def _backend():
    path = os.path.join(ROOT, "python", "build_backend", "ternd_build.py")
    spec = importlib.util.spec_from_file_location("ternd_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_wheel_holds_every_module_with_valid_record(tmp_path):
    backend = _backend()
    assert backend.get_requires_for_build_wheel() == []
    name = backend.build_wheel(str(tmp_path))
    assert name == "ternd-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / name) as z:
        names = set(z.namelist())
        sources = {f"ternd/{f}" for f in os.listdir(os.path.join(ROOT, "python", "ternd"))
                   if f.endswith(".py")}
        assert {"ternd/__init__.py", "ternd/model_pb2.py", "ternd/nn.py"} <= sources
        assert sources <= names
        record = z.read("ternd-0.1.0.dist-info/RECORD").decode().splitlines()
        for line in record:
            path, digest, size = line.split(",")
            if path.endswith("RECORD"):
                continue
            data = z.read(path)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert digest == f"sha256={want.decode()}" and int(size) == len(data)
        meta = z.read("ternd-0.1.0.dist-info/METADATA").decode()
        assert "Requires-Dist: torch" in meta
