"""A minimal in-tree PEP 517 build backend for the pure-Python ternd package.

Why not setuptools: pip builds in an isolated environment and would fetch
setuptools from an index; this backend needs nothing but the standard
library, so `pip install ./python` works with no network at all. It builds
a wheel (and an editable wheel) of the packages in python/.
"""

import base64
import hashlib
import os
import tomllib
import zipfile

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TAG = "py3-none-any"


def _project():
    with open(os.path.join(_ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _metadata(p) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {p['name']}", f"Version: {p['version']}",
             f"Summary: {p.get('description', '')}",
             f"Requires-Python: {p.get('requires-python', '>=3')}"]
    lines += [f"Requires-Dist: {d}" for d in p.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def _write_wheel(wheel_directory, files):
    p = _project()
    name = p["name"].replace("-", "_")
    dist_info = f"{name}-{p['version']}.dist-info"
    files = dict(files)
    files[f"{dist_info}/METADATA"] = _metadata(p).encode()
    files[f"{dist_info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: ternd_build\n"
                                   f"Root-Is-Purelib: true\nTag: {_TAG}\n").encode()
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    record += f"{dist_info}/RECORD,,\n"
    filename = f"{name}-{p['version']}-{_TAG}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w",
                         zipfile.ZIP_DEFLATED) as z:
        for path, data in sorted(files.items()):
            info = zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data, zipfile.ZIP_DEFLATED)
        z.writestr(zipfile.ZipInfo(f"{dist_info}/RECORD", date_time=(2020, 1, 1, 0, 0, 0)),
                   record)
    return filename


def _package_files():
    """Every Python package under python/ (a folder with __init__.py, and
    its sub-packages): `ternd` and any sibling such as a client package."""
    files = {}
    for top in sorted(os.listdir(_ROOT)):
        if top == "build_backend" or not os.path.isfile(os.path.join(_ROOT, top, "__init__.py")):
            continue
        for folder, dirs, names in os.walk(os.path.join(_ROOT, top)):
            dirs[:] = sorted(d for d in dirs
                             if os.path.isfile(os.path.join(folder, d, "__init__.py")))
            for f in sorted(names):
                if f.endswith(".py"):
                    path = os.path.join(folder, f)
                    with open(path, "rb") as fh:
                        files[os.path.relpath(path, _ROOT).replace(os.sep, "/")] = fh.read()
    return files


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, _package_files())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    return _write_wheel(wheel_directory, {"ternd_editable.pth": (_ROOT + "\n").encode()})
