"""The Python .tern reader/writer: canonical packing, layout, every refusal,
agreement with the C++ reader, and that model_pb2.py matches model.proto."""

import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import pytest

from conftest import MODELS, ROOT
from ternd import model_pb2
from ternd.tern_format import (TernFormatError, TernWriter, pack_ternary, parse_tern,
                               read_tern, unpack_ternary)


def test_packing_by_hand():
    # codes w+1: [0, 1, 2, 2 | 1, pad 1, 1, 1]
    packed = pack_ternary(np.array([[-1, 0, 1, 1, 0]]))
    assert packed == bytes([0 | 1 << 2 | 2 << 4 | 2 << 6, 0x55])
    # The example of docs/model-format.md.
    assert pack_ternary(np.array([[-1, 0, 1, 1, -1]])) == bytes([0xA4, 0x54])


@pytest.mark.parametrize("n,k", [(1, 1), (2, 3), (3, 4), (5, 7), (4, 129)])
def test_packing_round_trip(n, k):
    w = np.random.default_rng(n * k).integers(-1, 2, size=(n, k)).astype(np.int8)
    packed = pack_ternary(w)
    assert len(packed) == n * ((k + 3) // 4)
    assert np.array_equal(unpack_ternary(packed, n, k), w)


def test_unpack_refuses_invalid_codes():
    with pytest.raises(TernFormatError, match="code 3 at row 0 column 1"):
        unpack_ternary(bytes([0b1101]), 1, 2)
    with pytest.raises(TernFormatError, match="padding code at row 1 column 3"):
        unpack_ternary(bytes([0x55, 0x15 | 0 << 6 | 0b00 << 4]), 2, 3)


def _header(name="m"):
    h = model_pb2.ModelHeader(name=name, version=3)
    g = h.graph
    g.max_batch = 4
    g.inputs.add(name="x", dtype=model_pb2.F32, shape=[5])
    g.outputs.add(name="y", dtype=model_pb2.F32, shape=[3])
    g.ops.add(type=model_pb2.TERNARY_LINEAR, inputs=["x"], output="y", weight="w", bias="b")
    return h


def _file():
    w = TernWriter(_header())
    w.add_ternary("w", np.array([[1, 0, -1, 1, 0], [0, 0, 0, 0, 0], [-1, -1, -1, 1, 1]]), [0.5])
    w.add_f32("b", np.array([1.0, 2.0, 3.0]))
    return w.finish()


def test_writer_layout():
    data = _file()
    assert data[:4] == b"TERN"
    version, hlen, flags = struct.unpack_from("<III", data, 4)
    assert (version, flags) == (1, 0)
    start = (16 + hlen + 63) // 64 * 64
    tf = parse_tern(data)
    assert start + tf.header.data_length == len(data)
    for t in tf.header.tensors:
        assert t.offset % 64 == 0
    w = tf.tensor("w")
    assert w.weights.tolist() == [[1, 0, -1, 1, 0], [0, 0, 0, 0, 0], [-1, -1, -1, 1, 1]]
    assert w.scales.tolist() == [0.5] and not w.per_row
    assert tf.tensor("b").tolist() == [1.0, 2.0, 3.0]
    raw = tf.header.tensors[0]
    assert data[start + raw.offset:start + raw.offset + raw.length] == pack_ternary(w.weights)


def _corrupt(data, offset, value):
    b = bytearray(data)
    b[offset:offset + len(value)] = value
    return bytes(b)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d[:10], "shorter than the 16-byte preamble"),
    (lambda d: _corrupt(d, 0, b"TERM"), "not a ternd model"),
    (lambda d: _corrupt(d, 4, struct.pack("<I", 4)), "format version 4"),
    (lambda d: _corrupt(d, 12, struct.pack("<I", 1)), "flags"),
    (lambda d: _corrupt(d, 8, struct.pack("<I", 1 << 30)), "header length"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d + b"\0", "after the data section"),
])
def test_reader_refuses_broken_files(mutate, message):
    with pytest.raises(TernFormatError, match=message):
        parse_tern(mutate(_file()))


def test_reader_refuses_every_truncation():
    data = _file()
    for cut in range(0, len(data), 7):
        with pytest.raises(TernFormatError):
            parse_tern(data[:cut])


def test_reader_refuses_bad_tensor_entries():
    h = _header()
    w = TernWriter(h)
    w.add_ternary("w", np.zeros((3, 5), dtype=np.int8), [0.5])
    w.add_f32("b", np.zeros(3))
    good = parse_tern(w.finish()).header

    def rewrite(edit):
        hh = model_pb2.ModelHeader()
        hh.CopyFrom(good)
        edit(hh)
        hb = hh.SerializeToString()
        start = (16 + len(hb) + 63) // 64 * 64
        out = b"TERN" + struct.pack("<III", 1, len(hb), 0) + hb
        return out + b"\0" * (start - len(out)) + b"\x55" * hh.data_length

    parse_tern(rewrite(lambda hh: None))
    cases = [
        (lambda hh: setattr(hh.tensors[0], "offset", 1), "not a multiple of 64"),
        (lambda hh: setattr(hh.tensors[0], "length", 99), "length is 99 bytes"),
        (lambda hh: setattr(hh.tensors[1], "offset", 1 << 20), "outside"),
        (lambda hh: setattr(hh.tensors[1], "name", "bad name"), "not a valid name"),
        (lambda hh: hh.tensors[0].scale.append(1.0), "has 2 scales"),
        (lambda hh: hh.tensors[0].scale.__setitem__(0, -1.0), "finite and >= 0"),
        (lambda hh: setattr(hh, "architecture", "llm"), "architecture"),
    ]
    for edit, message in cases:
        with pytest.raises(TernFormatError, match=message):
            parse_tern(rewrite(edit))


def test_writer_refuses_bad_names_and_weights():
    w = TernWriter(_header())
    with pytest.raises(TernFormatError, match="tensor name"):
        w.add_f32("a b", np.zeros(2))
    with pytest.raises(TernFormatError, match="-1, 0 or \\+1"):
        w.add_ternary("w", np.array([[2, 0]]), [1.0])
    w.add_f32("b", np.zeros(3))
    with pytest.raises(TernFormatError, match="used twice"):
        w.add_f32("b", np.zeros(3))


def test_cpp_reader_accepts_python_file(ternctl_cmd, tmp_path):
    path = tmp_path / "m.tern"
    path.write_bytes(_file())
    out = subprocess.run([*ternctl_cmd, "run", str(path), "--json", "--values",
                          "127", "0", "-127", "1", "0"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # acc = [127 + 127 + 1, 0, -127 + 127 + 1] with dequant 1, scale 0.5, bias 1,2,3
    assert '"y":[[128.5,2,3.5]]' in out.stdout


def test_cpp_reader_refuses_what_python_refuses(ternctl_cmd, tmp_path):
    path = tmp_path / "m.tern"
    path.write_bytes(_file()[:-1])
    out = subprocess.run([*ternctl_cmd, "inspect", str(path)], capture_output=True, text=True)
    assert out.returncode != 0 and "truncated" in out.stderr


def test_python_reader_reads_cpp_files():
    files = [f for f in os.listdir(MODELS) if f.endswith(".tern")]
    assert files, "models/ has no .tern file"
    for f in files:
        tf = read_tern(os.path.join(MODELS, f))
        assert tf.header.graph.ops


@pytest.mark.skipif(shutil.which("protoc") is None, reason="protoc is not installed")
def test_model_pb2_is_generated_from_model_proto():
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["protoc", f"-I{ROOT}", f"--python_out={d}",
                        os.path.join(ROOT, "runtime", "model.proto")], check=True)
        with open(os.path.join(d, "runtime", "model_pb2.py"), "rb") as f:
            fresh = f.read()
    with open(os.path.join(ROOT, "python", "ternd", "model_pb2.py"), "rb") as f:
        shipped = f.read()
    assert fresh == shipped, ("python/ternd/model_pb2.py is stale: regenerate it with "
                              "python/regen_model_pb2.sh")
